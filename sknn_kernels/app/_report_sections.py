"""Parts of the ``compare`` report: refit surrogates, display table, explanations, forensics."""

import html
from dataclasses import dataclass
from functools import partial

import numpy as np

from .._results import from_rows
from ._html import _table
from ._surrogate_specs import featurizer_kwargs, fit_surrogate
from .compare import FoldKernels

# what each built-in surrogate is for (shown under the report's table)
ESTIMATOR_NOTES = {
    "kglm": "kglm: kernel GLM trained on the true labels (the paper's protocol), a test of how much of "
    "the network's behaviour the kernel carries on its own.",
    "kglm-network": "kglm-network: the same kGLM fitted to the network's predicted probabilities.",
    "kglm-logits": "kglm-logits: kernel ridge regression of the network's logits, a faithful explanation "
    "of this network: its attributions decompose the network's own logit over training points.",
    "krr": "krr: kernel ridge regression of the true targets (Qadeer et al.'s kernel regression), a test "
    "of the kernel.",
    "krr-network": "krr-network: kernel ridge regression of the network's outputs, a faithful "
    "explanation of this network.",
}

_SHOWN = [
    ("accuracy", "accuracy"),
    ("r2", "R²"),
    ("faithfulness_r2", "R² vs network"),
    ("tau", "tau"),
    ("tad", "TAD"),
    ("relative_loss", "loss / network loss"),
    ("network_accuracy", "network acc."),
    ("kernel_time", "kernel s"),
    ("fit_time", "fit s"),
    ("score_time", "score s"),
]

FORENSICS_COLUMNS = [
    ("attack_success", "attack success"),
    ("poison_precision_at_10", "precision@10"),
    ("poison_recall_at_10", "recall@10"),
    ("poison_auc", "poison AUC"),
]


@dataclass
class Surrogate:
    """A surrogate refit on all training data ``X``."""

    estimator: object  # fitted on K(X, X)
    K_test: np.ndarray  # K(X_test, X)
    transform: object  # new inputs -> their kernel against X
    K_train: np.ndarray = None  # K(X, X)


@dataclass
class Refit:
    """Surrogates refit on all training data, each kernel computed at most once per report.

    A kernel's ``(K(X, X), K(X_test, X))`` serves every estimator on that kernel, and each
    ``(kernel, estimator)`` is fitted once. With a ``memory`` that stores, the kernels go
    through ``compare_surrogates``' fold-kernel cache (:class:`~sknn_kernels.app.compare.FoldKernels`),
    so a rerun reads them back.
    """

    network: object
    X: object
    y: np.ndarray
    X_test: object
    input_shape: tuple
    specs: dict  # kernel name -> its own featurizer parameters
    estimators: dict  # name -> (estimator, featurizer output)
    params: dict  # featurizer parameters of every kernel
    projection_dim: int
    random_state: object
    memory: object

    def __post_init__(self):
        self.params = dict(self.params)
        verbose = bool(self.params.pop("verbose", False))
        self.kernels = FoldKernels(self.network, self.memory, verbose)
        self._matrices, self._fitted, self._featurizers = {}, {}, {}

    def __call__(self, kernel, estimator):
        """The surrogate ``(kernel, estimator)`` (a row of the table) fitted on all of ``X``."""
        if (kernel, estimator) not in self._fitted:
            unfitted, output = self.estimators[estimator]
            K_train, K_test = self._kernels((kernel, output))
            fitted = fit_surrogate(
                unfitted, self.network, K_train, self.y, self.X, self.input_shape
            )
            self._fitted[kernel, estimator] = Surrogate(
                fitted, K_test, partial(self._transform, (kernel, output)), K_train
            )
        return self._fitted[kernel, estimator]

    def _params(self, kernel, output):
        return featurizer_kwargs(
            kernel,
            output,
            projection_dim=self.projection_dim,
            random_state=self.random_state,
            params={**self.params, **self.specs.get(kernel, {})},
        )

    def _kernels(self, key):
        """``(K(X, X), K(X_test, X))`` of a ``(kernel, output)``, computed once."""
        if key not in self._matrices:
            params = self._params(*key)
            if self.kernels.stores:  # compare's cache: a rerun reads them back
                self._matrices[key] = self.kernels(params, self.X, self.y, self.X_test)
            else:  # computed here, the featurizer kept for other inputs (_transform)
                featurizer = self._featurizers[key] = self.kernels.featurizer(params)
                K_train = featurizer.fit_transform(self.X, self.y)  # y: for loss_grad only
                self._matrices[key] = K_train, featurizer.transform(self.X_test)
        return self._matrices[key]

    def _transform(self, key, X):
        """``K(X, self.X)`` for inputs other than ``X_test`` (the backdoor's triggered ones)."""
        if key not in self._featurizers:  # the kernels were read from the cache
            featurizer = self.kernels.featurizer(self._params(*key))
            self._featurizers[key] = featurizer.fit(self.X, self.y)
        return self._featurizers[key].transform(X)


def display_table(table):
    """Header and text cells: kernel, estimator, ``mean ± std`` per metric, warnings."""
    present = [(key, label) for key, label in _SHOWN if f"{key}_mean" in table]
    cols = ["kernel", "estimator"] + [label for _, label in present]
    lds = "lds" in table  # --lds: the LDS of each kGLM's attributions (NaN for the others)
    if lds:
        cols.append("LDS ± s.e.")
    warnings = table.get("convergence_warnings")
    if warnings is not None:
        cols.append("conv. warnings")
    cells = []
    for i in range(len(table["kernel"])):
        row = [str(table["kernel"][i]), str(table["estimator"][i])]
        for key, _ in present:
            d = 2 if key.endswith("time") else 3
            row.append(f"{table[key + '_mean'][i]:.{d}f} ± {table[key + '_std'][i]:.{d}f}")
        if lds:
            value = table["lds"][i]
            row.append(f"{value:.3f} ± {table['lds_se'][i]:.3f}" if np.isfinite(value) else "")
        if warnings is not None:
            row.append(str(int(warnings[i])))
        cells.append(row)
    return cols, cells


def explanations_section(r, out):
    """HTML: each method's explanations of the same test samples, and how much they repeat.

    Images are drawn into ``out`` (``attributions.png`` for the surrogate,
    ``influence*.png`` for influence); texts and feature vectors are tables. Returns the
    HTML and the files written.
    """
    from .. import plotting
    from ._explanations import LIST_K, MEANINGS, N_SHOWN, TOP_K

    what = "texts" if r.texts else "samples"
    parts = [
        f"<h2>Which training {what} drive a prediction</h2>",
        '<p class="muted">'
        + html.escape(
            " ".join(MEANINGS[kind] for kind in dict.fromkeys(m.kind for m in r.methods))
            + f" Repetition: the mean share of the top-{LIST_K} proponents two test samples "
            f"have in common, and the largest share of the {N_SHOWN} shown samples whose "
            f"top-{LIST_K} holds one same training sample (lists that do not depend on the "
            "sample explained say nothing about it); neighbours: the share of the top-"
            f"{LIST_K} among the sample's {LIST_K} nearest training samples in the "
            f"{r.explained_row[0]} kernel. When the raw lists repeat (one training sample in "
            f"the top-{LIST_K} of more than a third of the shown samples) the panel shows "
            "relative attributions: each training sample's attribution divided by its typical "
            "size over the test samples. LDS: Spearman correlation between the summed "
            "attributions and the outputs of networks retrained on random halves (1 = "
            "retraining predicted)."
        )
        + "</p>",
    ]
    table = r.method_table
    columns = [
        ("method", "method", "{}"),
        ("panel", "panel", "{}"),
        ("raw_pairwise_overlap", "repetition (raw)", "{:.3f}"),
        ("relative_pairwise_overlap", "repetition (relative)", "{:.3f}"),
        ("raw_shown_max_share", "max share shown (raw)", "{:.2f}"),
        ("relative_shown_max_share", "max share shown (relative)", "{:.2f}"),
        ("raw_neighbour_overlap", "neighbours (raw)", "{:.3f}"),
        ("relative_neighbour_overlap", "neighbours (relative)", "{:.3f}"),
        ("seconds", "seconds", "{:.1f}"),
    ]
    cells = [
        [fmt.format(table[key][i]) for key, _, fmt in columns]
        + ([f"{table['lds'][i]:.3f} ± {table['lds_se'][i]:.3f}"] if "lds" in table else [])
        for i in range(len(table["method"]))
    ]
    labels = [label for _, label, _ in columns] + (["LDS ± s.e."] if "lds" in table else [])
    parts.append(_table(cells, labels))
    written = []
    for m, method in enumerate(r.methods):
        ex = method.measured[method.panel]
        caption = (
            f"{method.name}: top-{TOP_K} proponents and opponents of the network's predicted "
            f"class for the first test {what} ({method.panel} attributions)"
        )
        parts.append(f"<h3>{html.escape(method.name)}</h3>")
        if r.image_shape is not None:
            name = "attributions.png" if m == 0 else f"influence{m}.png"
            fig = plotting.plot_attribution_grid(
                r.X_test, r.X, ex, image_shape=r.image_shape, n_rows=N_SHOWN
            )
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            written.append(out / name)
            parts.append(
                f'<figure><img src="{name}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption + '; green: proponents, red: opponents')}"
                "</figcaption></figure>"
            )
        else:
            parts.append(f'<p class="muted">{html.escape(caption)}</p>')
            parts.append(_listing(r, ex))
    return "\n".join(parts), written


def _listing(r, ex):
    """A table of test samples with their top-3 proponents (+) and opponents (-)."""
    if r.texts:
        train, test = r.texts
    else:  # feature vectors: training index and label
        train = [f"#{i} (label {label})" for i, label in enumerate(r.y)]
        test = [f"test #{i}" for i in range(len(r.y_test))]
    rows = []
    for i in range(min(6, len(ex.target))):
        rows.append([test[i], str(ex.target[i]), "", f"{ex.proponent_share[i]:.1%}"])
        rows += [
            ["", "", "+ " + train[j], f"{score:+.3g}"]
            for j, score in zip(ex.proponents[i][:3], ex.proponent_scores[i][:3])
        ]
        rows += [
            ["", "", "- " + train[j], f"{score:+.3g}"]
            for j, score in zip(ex.opponents[i][:3], ex.opponent_scores[i][:3])
        ]
    what = "text" if r.texts else "sample"
    return _table(rows, [f"test {what}", "class", f"training {what}", "attribution / share"])


def poison_forensics(
    r,
    network,
    refit,
    X_trigger,
    y_trigger,
    poison_mask,
    target_class,
    *,
    device="auto",
    input_shape=None,
    k=10,
    n_show=6,
):
    """Backdoor forensics of report results whose training data carry a planted backdoor.

    For the network and every kGLM row of ``r.table`` (refit on all training data by
    ``refit(kernel, "kglm")``, a :class:`Surrogate`): attack success on the triggered test
    samples and, on those the network sends to ``target_class``, precision@k, recall@k and AUC of the poisoned
    training samples among the kGLM's attributions of ``target_class``
    (:func:`~sknn_kernels.attribution.evaluation.poison_recall`). Adds the values to ``r.summary`` and as
    columns of ``r.table`` (NaN for other estimators).

    Returns
    -------
    forensics : dict
        ``rows`` (a dict of arrays, one entry per kGLM), ``explanation`` and ``X_shown`` for
        the figure (the kGLM with the best poison AUC), ``kernel``, ``poison_mask`` and ``k``.
    """
    from ..attribution.evaluation import attack_success, poison_recall
    from ..metrics import network_proba

    proba = network_proba(network, X_trigger, device=device, input_shape=input_shape)
    net_pred = r.labels[proba.argmax(axis=1)]
    r.summary["poisoned_training_samples"] = int(np.sum(poison_mask))
    r.summary["network_attack_success"] = attack_success(net_pred, target_class, y_trigger)
    n_rows = len(r.table["kernel"])
    columns = {key: np.full(n_rows, np.nan) for key, _ in FORENSICS_COLUMNS}
    rows, best = [], None
    target = np.full(len(X_trigger), target_class)
    for i in range(n_rows):
        if r.table["estimator"][i] != "kglm":
            continue
        surrogate = refit(r.table["kernel"][i], "kglm")
        K = surrogate.transform(X_trigger)
        glm = surrogate.estimator
        found = poison_recall(
            glm.attribute(K, target=target),
            poison_mask,
            k=k,
            y_pred=net_pred,
            target_class=target_class,
        )
        values = {
            "attack_success": attack_success(glm.predict(K), target_class, y_trigger),
            "poison_precision_at_10": found.precision_at_k,
            "poison_recall_at_10": found.recall_at_k,
            "poison_auc": found.auc,
        }
        for key, value in values.items():
            columns[key][i] = value
        rows.append({"kernel": r.table["kernel"][i], **values})
        auc = found.auc if np.isfinite(found.auc) else -np.inf
        if len(found.rows) and (best is None or auc > best[0]):
            shown = found.rows[:n_show]
            best = (
                auc,
                r.table["kernel"][i],
                X_trigger[shown],
                glm.explain(K[shown], top_k=5, target=target[shown]),
            )
    for method in r.get("methods", ()):  # the network's own influence, same triggered samples
        if method.kind != "influence":
            continue
        found = poison_recall(
            method.attributor.attribute(X_trigger, target=target),
            poison_mask,
            k=k,
            y_pred=net_pred,
            target_class=target_class,
        )
        rows.append(
            {
                "kernel": method.name,
                "attack_success": r.summary["network_attack_success"],
                "poison_precision_at_10": found.precision_at_k,
                "poison_recall_at_10": found.recall_at_k,
                "poison_auc": found.auc,
            }
        )
    r.table.update(columns)
    out = {
        "rows": from_rows(rows, ["kernel"] + [key for key, _ in FORENSICS_COLUMNS]),
        "poison_mask": np.asarray(poison_mask, dtype=bool),
        "k": k,
    }
    if best is not None:
        out.update(kernel=best[1], X_shown=best[2], explanation=best[3])
    return out


def forensics_section(r, out):
    """HTML of the forensics section, and the figure it writes into ``out``."""
    from .. import plotting

    forensics, summary = r.forensics, r.summary
    parts = [
        "<h2>Backdoor forensics</h2>",
        '<p class="muted">'
        + html.escape(
            f"{summary['poisoned_training_samples']} poisoned training samples. Network attack "
            f"success on triggered test samples: {summary['network_attack_success']:.3f}. "
            f"Per kGLM surrogate (and for the network's influence): its own attack success, and "
            f"among its attributions for the triggered "
            f"samples the network sends to the target class, the share of poisoned samples in the top "
            f"{forensics['k']} (precision), the share of all poisoned samples found there (recall) and "
            "the AUC of poisoned vs clean samples. Kernel attributions are not sparse: read the AUC, "
            "not only the top images."
        )
        + "</p>",
    ]
    rows = forensics["rows"]
    cells = [
        [rows["kernel"][i]] + [f"{rows[key][i]:.4f}" for key, _ in FORENSICS_COLUMNS]
        for i in range(len(rows["kernel"]))
    ]
    parts.append(_table(cells, ["method"] + [label for _, label in FORENSICS_COLUMNS]))
    written = []
    if "explanation" in forensics and r.image_shape is not None:
        fig = plotting.plot_poison_grid(
            forensics["X_shown"],
            r.X,
            forensics["explanation"],
            forensics["poison_mask"],
            r.image_shape,
        )
        fig.savefig(out / "forensics.png", dpi=110, bbox_inches="tight")
        written.append(out / "forensics.png")
        caption = (
            f"Triggered test images with their top-5 proponents from the "
            f"{forensics['kernel']} kGLM; poisoned training images framed in red"
        )
        parts.append(
            f'<figure><img src="forensics.png" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "\n".join(parts), written
