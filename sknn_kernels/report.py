"""The ``compare`` report: surrogates of a network, their faithfulness, and a report folder.

:class:`SurrogateReport` composes the public API step by step (network scores,
:func:`~sknn_kernels.compare_surrogates`, the best surrogate on held-out data with its
attributions, :class:`~sknn_kernels.PCAProbe` per layer) and writes ``results.csv``,
``results.json``, PNG figures and an ``index.html``. The CLI is a thin shell around it.
"""

import json
from pathlib import Path

import numpy as np

from ._base import first_rows
from ._html import render_report_html

__all__ = ["SurrogateReport", "poison_forensics", "write_forensics"]

# the headline faithfulness column used to pick the best surrogate, per task
_SCORE = {"classification": "tau", "regression": "faithfulness_r2"}
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


class SurrogateReport:
    """Build and write a surrogate comparison for one network and one data set.

    Parameters
    ----------
    network : torch.nn.Module
        The trained network (never modified).
    X, y : ndarray
        Training data: surrogates are cross-validated on it and the best one is refit
        on all of it.
    X_test, y_test : ndarray
        Held-out data for the final faithfulness numbers and the attribution grid.
    input_shape : tuple of int or None
        Per-sample shape the network expects (2-D ``X`` is reshaped to it).
    image_shape : tuple of int or None
        Shape to draw a sample as an image (``(C, H, W)``), when the data are images.
    device : str, default="auto"
    seed : int, default=0
    progress : bool, default=True
        Progress messages and bars on stderr.
    task : {"classification", "regression"}, default="classification"
        A regression report scores the network's outputs (no probabilities, no probes),
        picks the surrogate with the best R² against the network, and adds the relative
        test loss of each kernel's regression.
    """

    def __init__(
        self,
        network,
        X,
        y,
        X_test,
        y_test,
        *,
        input_shape=None,
        image_shape=None,
        device="auto",
        seed=0,
        progress=True,
        task="classification",
        texts=None,
        featurizer_params=None,
        kernel_params=None,
    ):
        self.network = network
        self.task = task
        self.texts = texts  # (train texts, test texts) when X are their token ids
        self.extra_featurizer_params = dict(featurizer_params or {})
        self.kernel_params = dict(kernel_params or {})
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self.input_shape = input_shape
        self.image_shape = image_shape
        self.device = device
        self.seed = seed
        self.progress = progress
        self.summary = {}
        self.results = None
        self.probe = None
        self._figures = []

    # ------------------------------------------------------------------ steps
    def network_scores(self):
        """Network probabilities and accuracy (regression: outputs and R²) on the test set."""
        from .metrics import network_outputs, network_proba

        if self.task == "regression":
            from sklearn.metrics import mean_squared_error, r2_score

            self.output_network_ = network_outputs(
                self.network, self.X_test, device=self.device, input_shape=self.input_shape
            ).reshape(np.shape(self.y_test))
            self.summary["network_test_mse"] = float(
                mean_squared_error(self.y_test, self.output_network_)
            )
            self.summary["network_test_r2"] = float(r2_score(self.y_test, self.output_network_))
            return self
        self.labels_ = np.unique(self.y)
        self.proba_network_ = network_proba(
            self.network, self.X_test, device=self.device, input_shape=self.input_shape
        )
        pred = self.labels_[self.proba_network_.argmax(axis=1)]
        self.summary["network_test_accuracy"] = float(np.mean(pred == self.y_test))
        return self

    def compare(self, kernels, estimators, cv=5, n_jobs=None, projection_dim=512):
        """Cross-validated table of every kernel x estimator (see ``compare_surrogates``)."""
        from .compare import compare_surrogates

        self.projection_dim = projection_dim
        self.results = compare_surrogates(
            self.network,
            self.X,
            self.y,
            kernels=tuple(kernels),
            estimators=None if estimators is None else tuple(estimators),
            task=self.task,
            cv=cv,
            n_jobs=n_jobs,
            featurizer_params=self._featurizer_params(),
            kernel_params=self.kernel_params,
            projection_dim=projection_dim,
            random_state=self.seed,
            verbose=self.progress,
        )
        return self

    def evaluate_best(self):
        """Refit the most faithful surrogate on all training data; score it on the test set."""
        from .metrics import accuracy_difference, kendall_faithfulness

        rows = _records(self.results)
        score = _SCORE[self.task]
        best = max(range(len(rows)), key=lambda i: _finite(rows[i][f"{score}_mean"]))
        self.best_row_ = best
        kernel, estimator = rows[best]["kernel"], rows[best]["estimator"]
        pipe = self._fit(self._pipeline(kernel, estimator))
        if self.task == "regression":
            return self._evaluate_regression(pipe, kernel, estimator, rows)
        proba = pipe.predict_proba(self.X_test)
        network_pred = self.labels_[self.proba_network_.argmax(axis=1)]
        self.proba_surrogate_ = proba
        self.summary.update(
            best_kernel=kernel,
            best_estimator=estimator,
            best_test_tau=float(
                kendall_faithfulness(self.y_test, self.proba_network_, proba, labels=self.labels_)
            ),
            best_test_tad=float(
                accuracy_difference(self.y_test, network_pred, pipe.predict(self.X_test))
            ),
            best_test_accuracy=float(np.mean(pipe.predict(self.X_test) == self.y_test)),
        )
        # Attributions need a kernel GLM (label-trained or distilled): the most faithful one.
        kglm = [i for i, r in enumerate(rows) if str(r["estimator"]).startswith("kglm")]
        if kglm and (self.image_shape is not None or self.texts is not None):
            i = max(kglm, key=lambda j: _finite(rows[j][f"{score}_mean"]))
            glm = (
                pipe
                if i == best
                else self._fit(self._pipeline(rows[i]["kernel"], rows[i]["estimator"]))
            )
            n_show = min(6, len(self.y_test))
            K = glm[:-1].transform(first_rows(self.X_test, n_show))
            self.explanation_ = glm[-1].explain(K, top_k=5)
            self.explained_kernel_ = f"{rows[i]['kernel']} {rows[i]['estimator']}"
        return self

    def _evaluate_regression(self, pipe, kernel, estimator, rows):
        """Test faithfulness of the best surrogate, and each kernel's relative test loss."""
        from sklearn.metrics import mean_squared_error

        from .metrics import kendall_outputs, output_r2, relative_test_loss

        self.output_surrogate_ = pipe.predict(self.X_test)
        self.summary.update(
            best_kernel=kernel,
            best_estimator=estimator,
            best_test_r2_network=float(output_r2(self.output_network_, self.output_surrogate_)),
            best_test_tau=float(kendall_outputs(self.output_network_, self.output_surrogate_)),
            best_test_relative_loss=relative_test_loss(
                self.y_test, self.output_surrogate_, self.output_network_
            ),
        )
        # Qadeer et al.'s comparison: each kernel's label-trained regression, relative to the
        # network and to the NTK regression (pntk, or pntk0 for unnormalised kernels)
        kernels = list(dict.fromkeys(r["kernel"] for r in rows if r["estimator"] == "krr"))
        mse = {
            k: mean_squared_error(
                self.y_test, self._fit(self._pipeline(k, "krr")).predict(self.X_test)
            )
            for k in kernels
        }
        self.kernel_losses_ = []
        for k in kernels:
            ntk = "pntk0" if k.endswith("0") else "pntk"
            self.kernel_losses_.append(
                {
                    "kernel": k,
                    "test_mse": float(mse[k]),
                    "relative_to_network": float(mse[k] / self.summary["network_test_mse"]),
                    "relative_to_ntk": float(mse[k] / mse[ntk]) if ntk in mse else float("nan"),
                }
            )
        return self

    def _fit(self, pipe):
        """Fit a surrogate pipeline on the training data (distilled ones on the network's outputs)."""
        from .compare import _distilled, _network_X

        params = (
            {"estimator__network_X": _network_X(self.X, self.input_shape)}
            if _distilled(pipe[-1])
            else {}
        )
        return pipe.fit(self.X, self.y, **params)

    def probe_layers(self, layers="all", pooling="avg"):
        """PCA probes per layer and NC1 (see :class:`~sknn_kernels.PCAProbe`)."""
        from .metrics import collapse_onset
        from .probe import PCAProbe

        self.probe = PCAProbe(
            self.network,
            layers=layers,
            pooling=pooling,
            cv=3,
            device=self.device,
            input_shape=self.input_shape,
            random_state=self.seed,
        ).fit(self.X, self.y)
        try:
            self.summary["collapse_onset"] = collapse_onset(self.probe)
        except ValueError:
            self.summary["collapse_onset"] = "n/a"
        return self

    def _pipeline(self, kernel, estimator):
        from .compare import make_surrogate_pipeline

        return make_surrogate_pipeline(
            self.network,
            kernel,
            estimator,
            projection_dim=self.projection_dim,
            random_state=self.seed,
            **self._featurizer_params(),
            **self.kernel_params.get(kernel, {}),
        )

    def _featurizer_params(self):
        return {"input_shape": self.input_shape, "device": self.device, "verbose": self.progress}

    # ----------------------------------------------------------------- output
    def table_text(self):
        """The results as an aligned text table (mean ± std over folds)."""
        cols, cells = _display_table(_records(self.results))
        widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def write(self, out):
        """Write results.csv, results.json, the figures and index.html into ``out``."""
        from . import plotting

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        rows = _records(self.results)
        cols = list(rows[0].keys())
        written = [out / "results.csv", out / "results.json"]
        with open(written[0], "w") as fh:
            fh.write(",".join(cols) + "\n")
            for r in rows:
                fh.write(",".join(_csv(r[c]) for c in cols) + "\n")
        payload = {
            "summary": self.summary,
            "results": [{k: _json(v) for k, v in r.items()} for r in rows],
        }
        if hasattr(self, "kernel_losses_"):
            payload["kernel_losses"] = [
                {k: _json(v) for k, v in r.items()} for r in self.kernel_losses_
            ]
        if self.probe is not None:
            payload["probe_results"] = [
                {k: _json(v) for k, v in r.items()} for r in _records(self.probe.probe_results_)
            ]
        written[1].write_text(json.dumps(payload, indent=2))

        score = _SCORE[self.task]
        figures = [
            (
                "faithfulness.png",
                f"{score} (cross-validated, mean ± std) per kernel and estimator",
                lambda: plotting.plot_faithfulness(self.results, metric=score),
            )
        ]
        if hasattr(self, "output_surrogate_"):
            figures.append(
                (
                    "scatter.png",
                    f"Output on the test set: network vs best surrogate "
                    f"({self.summary['best_kernel']} + {self.summary['best_estimator']})",
                    lambda: plotting.plot_output_scatter(
                        self.output_network_, self.output_surrogate_
                    ),
                )
            )
        if getattr(self, "kernel_losses_", None):
            figures.append(
                (
                    "relative_loss.png",
                    "Test loss of each kernel's regression (krr, trained on the targets) relative to the "
                    "network's; the relative_to_ntk column of results.json is Qadeer et al.'s L(kernel) / L(NTK)",
                    lambda: plotting.plot_relative_loss(
                        [r["kernel"] for r in self.kernel_losses_],
                        [r["relative_to_network"] for r in self.kernel_losses_],
                    ),
                )
            )
        if hasattr(self, "proba_surrogate_"):
            figures.append(
                (
                    "scatter.png",
                    f"True-class probability on the test set: network vs best surrogate "
                    f"({self.summary['best_kernel']} + {self.summary['best_estimator']})",
                    lambda: plotting.plot_probability_scatter(
                        self.y_test, self.proba_network_, self.proba_surrogate_, labels=self.labels_
                    ),
                )
            )
        if hasattr(self, "explanation_") and self.image_shape is not None:
            figures.append(
                (
                    "attributions.png",
                    f"Test images with their top-5 proponents (green) and opponents (red) from the "
                    f"{self.explained_kernel_} surrogate; share = part of the total attribution mass",
                    lambda: plotting.plot_attribution_grid(
                        self.X_test, self.X, self.explanation_, image_shape=self.image_shape
                    ),
                )
            )
        if self.probe is not None:
            figures.append(
                (
                    "probes.png",
                    "Probe accuracy vs number of principal components, per layer",
                    lambda: plotting.plot_probe_curves(self.probe),
                )
            )
            figures.append(
                (
                    "explained_variance.png",
                    "Cumulative explained variance per layer",
                    lambda: plotting.plot_explained_variance(self.probe),
                )
            )
        shown = []
        for name, caption, draw in figures:
            draw().savefig(out / name, dpi=110, bbox_inches="tight")
            written.append(out / name)
            shown.append((name, caption))

        cols_shown, cells = _display_table(rows)
        page = render_report_html(
            "sknn-kernels surrogate report",
            [(k.replace("_", " "), v) for k, v in self.summary.items()],
            cols_shown,
            cells,
            shown,
            best_row=getattr(self, "best_row_", None),
            notes=self._notes(rows),
            sections=[self._text_explanations()]
            if self.texts and hasattr(self, "explanation_")
            else (),
        )
        (out / "index.html").write_text(page)
        written.append(out / "index.html")
        return written

    def _text_explanations(self):
        """HTML: test texts with their top proponent and opponent training texts."""
        import html

        from ._html import _table

        texts_train, texts_test = self.texts
        ex, rows = self.explanation_, []
        for i in range(len(ex.target)):
            rows.append([texts_test[i], str(ex.target[i]), "", f"{ex.proponent_share[i]:.1%}"])
            rows += [
                ["", "", "+ " + texts_train[j], f"{score:+.3g}"]
                for j, score in zip(ex.proponents[i][:3], ex.proponent_scores[i][:3])
            ]
            rows += [
                ["", "", "- " + texts_train[j], f"{score:+.3g}"]
                for j, score in zip(ex.opponents[i][:3], ex.opponent_scores[i][:3])
            ]
        return (
            f"<h2>Which training texts drive a prediction ({html.escape(self.explained_kernel_)} "
            'surrogate)</h2><p class="muted">Each test text, the class explained, then its top-3 '
            "proponents (+) and opponents (-) with their attributions; the share is the part of "
            "the total attribution mass the top-5 proponents hold (kernel attributions are not "
            "sparse).</p>" + _table(rows, ["test text", "class", "training text", "attribution"])
        )

    def _notes(self, rows):
        """How to read the table, and one sentence per built-in surrogate shown."""
        if self.task == "regression":
            first = (
                "R²: surrogate vs the true targets; R² vs network: surrogate vs the network's "
                "outputs (1 = the network reproduced); tau: Kendall rank correlation with the "
                "network's outputs; loss / network loss: the surrogate's test MSE over the "
                "network's. Means ± std over cross-validation folds."
            )
            if getattr(self, "kernel_losses_", None):
                first += (
                    " Relative test loss per kernel (test set): "
                    + "; ".join(
                        f"{r['kernel']}: {r['relative_to_network']:.3f} of the network's, "
                        f"{r['relative_to_ntk']:.3f} of the NTK's"
                        for r in self.kernel_losses_
                    )
                    + "."
                )
        else:
            first = (
                "tau: Kendall rank correlation between the network's and the surrogate's "
                "probability of the true class (1 = perfectly faithful ranking). TAD: surrogate "
                "accuracy minus network accuracy. Means ± std over cross-validation folds."
            )
        shown = dict.fromkeys(str(r["estimator"]) for r in rows)
        return [first] + [ESTIMATOR_NOTES[name] for name in shown if name in ESTIMATOR_NOTES]


def _records(table):
    """Rows of a DataFrame or structured array as a list of dicts."""
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    return [dict(zip(table.dtype.names, row.tolist())) for row in table]


_SHOWN = [
    ("accuracy", "accuracy"),
    ("r2", "R²"),
    ("faithfulness_r2", "R² vs network"),
    ("tau", "tau"),
    ("tad", "TAD"),
    ("relative_loss", "loss / network loss"),
    ("network_accuracy", "network acc."),
    ("fit_time", "fit s"),
    ("score_time", "score s"),
]


def _display_table(rows):
    """Header and text cells: kernel, estimator, then ``mean ± std`` per metric."""
    present = [(key, label) for key, label in _SHOWN if f"{key}_mean" in rows[0]]
    cols = ["kernel", "estimator"] + [label for _, label in present]
    cells = []
    for r in rows:
        digits = [2 if key.endswith("time") else 3 for key, _ in present]
        cells.append(
            [str(r["kernel"]), str(r["estimator"])]
            + [
                f"{r[key + '_mean']:.{d}f} ± {r[key + '_std']:.{d}f}"
                for (key, _), d in zip(present, digits)
            ]
        )
    return cols, cells


def _finite(value):
    return value if np.isfinite(value) else -np.inf


def _text(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _csv(value):
    text = _text(value) if not isinstance(value, float) else repr(value)
    return f'"{text}"' if "," in text else text


def _json(value):
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------- forensics
_FORENSICS = [
    ("attack_success", "kGLM attack success"),
    ("poison_precision_at_10", "precision@10"),
    ("poison_recall_at_10", "recall@10"),
    ("poison_auc", "poison AUC"),
]


def poison_forensics(report, X_trigger, y_trigger, poison_mask, target_class, *, k=10, n_show=6):
    """Backdoor forensics of a report whose training data carry a planted backdoor.

    For the network and every kGLM row of ``report.results`` (refit on all training data):
    attack success on the triggered test samples, and, on those the network sends to
    ``target_class``, precision@k, recall@k and AUC of the poisoned training samples among
    the kGLM's attributions of ``target_class`` (:func:`~sknn_kernels.evaluation.poison_recall`).
    The values are added to ``report.summary`` and as columns of ``report.results`` (NaN for
    other estimators), so ``report.write`` puts them in ``results.csv``; call
    :func:`write_forensics` after it for the report section.

    Parameters
    ----------
    report : SurrogateReport
        With ``network_scores`` and ``compare`` done; ``report.X``/``report.y`` are the
        poisoned training data.
    X_trigger : ndarray of shape (n_trigger, n_features)
        Test samples with the trigger.
    y_trigger : ndarray of shape (n_trigger,)
        Their clean labels.
    poison_mask : ndarray of bool, shape (n_train,)
        The poisoned training samples.
    target_class : label
        The backdoor's target.
    k : int, default=10
        Top proponents inspected.
    n_show : int, default=6
        Triggered samples explained in the figure (by the kGLM with the best poison AUC).

    Returns
    -------
    forensics : dict
        ``rows`` (one dict per kGLM row), ``explanation`` and ``X_shown`` for the figure,
        ``kernel`` (the one explained), ``poison_mask`` and ``k``.
    """
    from .evaluation import attack_success, poison_recall
    from .metrics import network_proba

    labels = report.labels_
    net_pred = labels[
        network_proba(
            report.network, X_trigger, device=report.device, input_shape=report.input_shape
        ).argmax(axis=1)
    ]
    report.summary["poisoned_training_samples"] = int(np.sum(poison_mask))
    report.summary["network_attack_success"] = attack_success(net_pred, target_class, y_trigger)
    records = _records(report.results)
    columns = {key: np.full(len(records), np.nan) for key, _ in _FORENSICS}
    rows, best = [], None
    target = np.full(len(X_trigger), target_class)
    for i, r in enumerate(records):
        if r["estimator"] != "kglm":
            continue
        pipe = report._pipeline(r["kernel"], "kglm").fit(report.X, report.y)
        K = pipe[:-1].transform(X_trigger)
        glm = pipe[-1]
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
        rows.append({"kernel": r["kernel"], **values})
        if len(found.rows) and (best is None or _finite(found.auc) > best[0]):
            shown = found.rows[:n_show]
            best = (
                _finite(found.auc),
                r["kernel"],
                X_trigger[shown],
                glm.explain(K[shown], top_k=5, target=target[shown]),
            )
    for key, values in columns.items():
        if hasattr(report.results, "columns"):
            report.results[key] = values
        else:  # structured array without pandas: rebuild with the new field
            from numpy.lib import recfunctions

            report.results = recfunctions.append_fields(report.results, key, values, usemask=False)
    out = {"rows": rows, "poison_mask": np.asarray(poison_mask, dtype=bool), "k": k}
    if best is not None:
        out.update(kernel=best[1], X_shown=best[2], explanation=best[3])
    return out


def write_forensics(report, forensics, out):
    """Add the forensics section (table and proponent grid) to a written report folder.

    Parameters
    ----------
    report : SurrogateReport
        The report, already written to ``out`` by ``report.write``.
    forensics : dict
        The result of :func:`poison_forensics`.
    out : str or Path
        The report folder.

    Returns
    -------
    written : list of Path
        The files added (``index.html`` is changed in place).
    """
    import html

    from . import plotting
    from ._html import _table

    out = Path(out)
    parts = [
        "<h2>Backdoor forensics</h2>",
        '<p class="muted">'
        + html.escape(
            f"{report.summary['poisoned_training_samples']} poisoned training samples. Network attack "
            f"success on triggered test samples: {report.summary['network_attack_success']:.3f}. "
            f"Per kGLM surrogate: its own attack success, and among its attributions for the triggered "
            f"samples the network sends to the target class, the share of poisoned samples in the top "
            f"{forensics['k']} (precision), the share of all poisoned samples found there (recall) and "
            "the AUC of poisoned vs clean samples. Kernel attributions are not sparse: read the AUC, "
            "not only the top images."
        )
        + "</p>",
    ]
    cells = [
        [row["kernel"]] + [_text(row[key]) for key, _ in _FORENSICS] for row in forensics["rows"]
    ]
    parts.append(_table(cells, ["kernel"] + [label for _, label in _FORENSICS]))
    written = []
    if "explanation" in forensics and report.image_shape is not None:
        fig = plotting.plot_poison_grid(
            forensics["X_shown"],
            report.X,
            forensics["explanation"],
            forensics["poison_mask"],
            report.image_shape,
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
    page = (out / "index.html").read_text()
    anchor = "<h2>Figures</h2>" if "<h2>Figures</h2>" in page else "<script>"
    (out / "index.html").write_text(page.replace(anchor, "\n".join(parts) + "\n" + anchor, 1))
    return written
