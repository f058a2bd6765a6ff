"""The ``compare`` report: surrogates of a network, their faithfulness, and a report folder.

:class:`SurrogateReport` composes the public API step by step (network scores,
:func:`~sknn_kernels.compare_surrogates`, the best surrogate on held-out data with its
attributions, :class:`~sknn_kernels.PCAProbe` per layer) and writes ``results.csv``,
``results.json``, PNG figures and an ``index.html``. The CLI is a thin shell around it.
"""

import json
from pathlib import Path

import numpy as np

from ._html import render_report_html

__all__ = ["SurrogateReport"]

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

    def __init__(self, network, X, y, X_test, y_test, *, input_shape=None, image_shape=None,
                 device="auto", seed=0, progress=True, task="classification"):
        self.network = network
        self.task = task
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
            self.summary["network_test_mse"] = float(mean_squared_error(self.y_test, self.output_network_))
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
            best_test_tau=float(kendall_faithfulness(self.y_test, self.proba_network_, proba, labels=self.labels_)),
            best_test_tad=float(accuracy_difference(self.y_test, network_pred, pipe.predict(self.X_test))),
            best_test_accuracy=float(np.mean(pipe.predict(self.X_test) == self.y_test)),
        )
        # Attributions need a kernel GLM (label-trained or distilled): the most faithful one.
        kglm = [i for i, r in enumerate(rows) if str(r["estimator"]).startswith("kglm")]
        if kglm and self.image_shape is not None:
            i = max(kglm, key=lambda j: _finite(rows[j][f"{score}_mean"]))
            glm = pipe if i == best else self._fit(self._pipeline(rows[i]["kernel"], rows[i]["estimator"]))
            n_show = min(6, len(self.X_test))
            K = glm[:-1].transform(self.X_test[:n_show])
            self.explanation_ = glm[-1].explain(K, top_k=5)
            self.explained_kernel_ = f'{rows[i]["kernel"]} {rows[i]["estimator"]}'
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
            best_test_relative_loss=relative_test_loss(self.y_test, self.output_surrogate_, self.output_network_),
        )
        # Qadeer et al.'s comparison: each kernel's label-trained regression, relative to the
        # network and to the NTK regression (pntk, or pntk0 for unnormalised kernels)
        kernels = list(dict.fromkeys(r["kernel"] for r in rows if r["estimator"] == "krr"))
        mse = {k: mean_squared_error(self.y_test, self._fit(self._pipeline(k, "krr")).predict(self.X_test))
               for k in kernels}
        self.kernel_losses_ = []
        for k in kernels:
            ntk = "pntk0" if k.endswith("0") else "pntk"
            self.kernel_losses_.append({
                "kernel": k, "test_mse": float(mse[k]),
                "relative_to_network": float(mse[k] / self.summary["network_test_mse"]),
                "relative_to_ntk": float(mse[k] / mse[ntk]) if ntk in mse else float("nan"),
            })
        return self

    def _fit(self, pipe):
        """Fit a surrogate pipeline on the training data (distilled ones on the network's outputs)."""
        from .compare import _distilled, _network_X

        params = {"estimator__network_X": _network_X(self.X, self.input_shape)} if _distilled(pipe[-1]) else {}
        return pipe.fit(self.X, self.y, **params)

    def probe_layers(self, layers="all"):
        """PCA probes per layer and NC1 (see :class:`~sknn_kernels.PCAProbe`)."""
        from .metrics import collapse_onset
        from .probe import PCAProbe

        self.probe = PCAProbe(
            self.network,
            layers=layers,
            pooling="avg",
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
            self.network, kernel, estimator, projection_dim=self.projection_dim,
            random_state=self.seed, **self._featurizer_params(),
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
        payload = {"summary": self.summary, "results": [{k: _json(v) for k, v in r.items()} for r in rows]}
        if hasattr(self, "kernel_losses_"):
            payload["kernel_losses"] = [{k: _json(v) for k, v in r.items()} for r in self.kernel_losses_]
        if self.probe is not None:
            payload["probe_results"] = [{k: _json(v) for k, v in r.items()} for r in _records(self.probe.probe_results_)]
        written[1].write_text(json.dumps(payload, indent=2))

        score = _SCORE[self.task]
        figures = [("faithfulness.png", f"{score} (cross-validated, mean ± std) per kernel and estimator",
                    lambda: plotting.plot_faithfulness(self.results, metric=score))]
        if hasattr(self, "output_surrogate_"):
            figures.append((
                "scatter.png",
                f"Output on the test set: network vs best surrogate "
                f"({self.summary['best_kernel']} + {self.summary['best_estimator']})",
                lambda: plotting.plot_output_scatter(self.output_network_, self.output_surrogate_),
            ))
        if getattr(self, "kernel_losses_", None):
            figures.append((
                "relative_loss.png",
                "Test loss of each kernel's regression (krr, trained on the targets) relative to the "
                "network's; the relative_to_ntk column of results.json is Qadeer et al.'s L(kernel) / L(NTK)",
                lambda: plotting.plot_relative_loss(
                    [r["kernel"] for r in self.kernel_losses_],
                    [r["relative_to_network"] for r in self.kernel_losses_],
                ),
            ))
        if hasattr(self, "proba_surrogate_"):
            figures.append((
                "scatter.png",
                f"True-class probability on the test set: network vs best surrogate "
                f"({self.summary['best_kernel']} + {self.summary['best_estimator']})",
                lambda: plotting.plot_probability_scatter(
                    self.y_test, self.proba_network_, self.proba_surrogate_, labels=self.labels_
                ),
            ))
        if hasattr(self, "explanation_"):
            figures.append((
                "attributions.png",
                f"Test images with their top-5 proponents (green) and opponents (red) from the "
                f"{self.explained_kernel_} surrogate; share = part of the total attribution mass",
                lambda: plotting.plot_attribution_grid(
                    self.X_test, self.X, self.explanation_, image_shape=self.image_shape
                ),
            ))
        if self.probe is not None:
            figures.append(("probes.png", "Probe accuracy vs number of principal components, per layer",
                            lambda: plotting.plot_probe_curves(self.probe)))
            figures.append(("explained_variance.png", "Cumulative explained variance per layer",
                            lambda: plotting.plot_explained_variance(self.probe)))
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
        )
        (out / "index.html").write_text(page)
        written.append(out / "index.html")
        return written


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
                first += " Relative test loss per kernel (test set): " + "; ".join(
                    f"{r['kernel']}: {r['relative_to_network']:.3f} of the network's, "
                    f"{r['relative_to_ntk']:.3f} of the NTK's" for r in self.kernel_losses_
                ) + "."
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


_SHOWN = [("accuracy", "accuracy"), ("r2", "R²"), ("faithfulness_r2", "R² vs network"), ("tau", "tau"),
          ("tad", "TAD"), ("relative_loss", "loss / network loss"), ("network_accuracy", "network acc."),
          ("fit_time", "fit s"), ("score_time", "score s")]


def _display_table(rows):
    """Header and text cells: kernel, estimator, then ``mean ± std`` per metric."""
    present = [(key, label) for key, label in _SHOWN if f"{key}_mean" in rows[0]]
    cols = ["kernel", "estimator"] + [label for _, label in present]
    cells = []
    for r in rows:
        digits = [2 if key.endswith("time") else 3 for key, _ in present]
        cells.append([str(r["kernel"]), str(r["estimator"])] + [
            f"{r[key + '_mean']:.{d}f} ± {r[key + '_std']:.{d}f}" for (key, _), d in zip(present, digits)
        ])
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
