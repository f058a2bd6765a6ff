"""The ``compare`` report: surrogates of a network, their faithfulness, and a report folder.

:func:`run_report` composes the public API (the network's test scores,
:func:`~sknn_kernels.compare_surrogates`, the most faithful surrogate refit and scored on
held-out data with its attributions, :class:`~sknn_kernels.PCAProbe` per layer, and optional
backdoor forensics) and returns everything as one ``results`` dict; :func:`write_report`
writes it as ``results.csv``, ``results.json``, PNG figures and an ``index.html``. The CLI is
a thin shell around the two.
"""

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .._results import from_rows
from ..network._base import is_named
from ._explanations import explain_report
from ._html import render_report_html
from ._input_section import input_section, input_share_results
from ._report_sections import (
    ESTIMATOR_NOTES,
    Refit,
    display_table,
    explanations_section,
    forensics_section,
    poison_forensics,
)
from ._surrogate_specs import (
    DEFAULT_ESTIMATORS,
    DEFAULT_KERNELS,
    kernel_specs,
    resolve_estimators,
)
from .compare import compare_surrogates, count_convergence_warnings

__all__ = ["format_table", "run_report", "write_report"]

# the headline faithfulness column used to pick the best surrogate, per task
_SCORE = {"classification": "tau", "regression": "faithfulness_r2"}


def run_report(
    network,
    X,
    y,
    X_test,
    y_test,
    *,
    task="classification",
    kernels=DEFAULT_KERNELS,
    estimators=None,
    cv=5,
    n_jobs=None,
    featurizer_params=None,
    projection_dim=512,
    probe=True,
    backdoor=None,
    input_shape=None,
    image_shape=None,
    texts=None,
    device="auto",
    memory=None,
    random_state=0,
    verbose=1,
    influence=True,
    influence_members=1,
    train_fn=None,
    lds=None,
    input_groups=None,
):
    """Compare kernel surrogates of ``network`` and evaluate the best one on held-out data.

    Parameters
    ----------
    network : torch.nn.Module
        The trained network (never modified).
    X, y : array-like
        Training data: surrogates are cross-validated on it and the best one is refit on
        all of it.
    X_test, y_test : array-like
        Held-out data for the final faithfulness numbers and the attributions.
    task : {"classification", "regression"}, default="classification"
        A regression report scores the network's outputs (no probabilities, no probes),
        picks the surrogate with the best R² against the network, and adds the relative
        test loss of each kernel's regression.
    kernels, estimators, cv, n_jobs, featurizer_params, projection_dim : object
        As in :func:`~sknn_kernels.compare_surrogates` (``kernels`` may map names to
        per-kernel ``NTKFeaturizer`` parameters).
    probe : bool or dict, default=True
        Fit a :class:`~sknn_kernels.PCAProbe` per layer (classification only); a dict holds
        its parameters (``layers``, ``pooling``...).
    backdoor : tuple, default=None
        ``(X_trigger, y_trigger, poison_mask, target_class)`` when the training data carry
        a planted backdoor: adds forensics per kGLM (attack success, precision/recall@10
        and AUC of the poisoned samples among its attributions) as columns of the table.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects (2-D ``X`` is reshaped to it).
    image_shape : tuple of int, default=None
        Shape to draw a sample as an image (``(C, H, W)``), when the data are images.
    texts : tuple of (list of str, list of str), default=None
        Training and test texts when ``X`` holds their token ids (for the explanations).
    device : str, default="auto"
        Where the network runs, as in :class:`~sknn_kernels.NTKFeaturizer`.
    memory : str, pathlib.Path or joblib.Memory, default=None
        Cache of the fold kernels, as in :func:`~sknn_kernels.compare_surrogates`, and of
        the kernels on all training data the refit surrogates use: a rerun computes none.
    random_state : int, default=0
        Seed of the projections, of ``SVC``'s probability calibration and of the probes.
    verbose : int, default=1
        Progress on stderr (see :func:`~sknn_kernels.compare_surrogates`).
    influence : bool, default=True
        Classification: explain the same test samples with
        :class:`~sknn_kernels.attribution.influence.InfluenceAttributor` next to the
        surrogate's decomposition, and measure for each method whether its lists depend on
        the sample explained (``method_table``).
    influence_members : int, default=1
        ``1``: influence of the network alone. ``N > 1``: also an ensemble of ``N`` networks
        trained by ``train_fn`` on random halves of ``X`` (better predictions of retraining).
    train_fn : callable, default=None
        ``train_fn(X, y, seed) -> network``, the network's training recipe (from scratch);
        needed by ``influence_members > 1`` and ``lds``.
    lds : int, default=None
        Retrain with ``train_fn`` on ``lds`` random halves of ``X`` (cached in ``memory``,
        parallel with ``n_jobs``) and add the linear datamodeling score of every attribution
        method (kGLM rows of the table, influence) as ``lds``/``lds_se`` columns.
    input_groups : dict of str to list of int, default=None
        Groups of channels (of ``input_shape``'s first axis, or features of flat rows) whose
        shares of the prediction the report measures ("which input drives the prediction");
        named inputs (a dict ``X``) are the players by themselves.

    Returns
    -------
    results : sklearn.utils.Bunch
        ``table`` (the comparison, a dict of arrays, with the forensics columns when
        ``backdoor`` is given), ``best`` (its row of the best surrogate), ``summary`` (a dict
        of headline numbers, including ``convergence_warnings``, the fits that did not
        converge), ``task``, ``network_test`` and ``surrogate_test`` (probabilities or
        outputs on the test set), ``probe_results`` and ``explained_variance`` (or None),
        ``kernel_losses`` (regression), ``explanation``/``explained`` (attributions of test
        samples), ``methods``/``method_table``/``explanations`` (each attribution method,
        its overlap measures and LDS, and the shown explanations as JSON-ready rows),
        ``forensics`` (or None), ``input_shares`` (each input's share of the prediction,
        overall and per class or target bin, or None), and the data the figures draw.
    """
    if (influence_members > 1 or lds) and train_fn is None:
        raise ValueError(
            "influence_members > 1 and lds retrain the network: pass its recipe as "
            "train_fn(X, y, seed) -> network."
        )
    featurizer_params = {
        "input_shape": input_shape,
        "device": device,
        **dict(featurizer_params or {}),
    }
    specs = kernel_specs(kernels, None)
    chosen = resolve_estimators(
        DEFAULT_ESTIMATORS[task] if estimators is None else estimators, random_state, task
    )
    r = Bunch(
        task=task,
        summary={},
        X=X,
        y=np.asarray(y),
        X_test=X_test,
        y_test=np.asarray(y_test),
        image_shape=image_shape,
        texts=texts,
        probe_results=None,
        explained_variance=None,
        explanation=None,
        explained_row=None,
        methods=(),
        method_table=None,
        explanations=None,
        lds_methods=None,
        forensics=None,
        input_shares=None,
    )
    refit = Refit(
        network=network,
        X=X,
        y=r.y,
        X_test=X_test,
        input_shape=input_shape,
        specs=specs,
        estimators=chosen,
        params=featurizer_params,
        projection_dim=projection_dim,
        random_state=random_state,
        memory=memory,
    )
    _network_scores(r, network, device, input_shape)
    r.table = compare_surrogates(
        network,
        X,
        r.y,
        kernels=specs,
        estimators=chosen,
        task=task,
        cv=cv,
        n_jobs=n_jobs,
        featurizer_params=featurizer_params,
        projection_dim=projection_dim,
        memory=memory,
        random_state=random_state,
        verbose=verbose,
    )
    with count_convergence_warnings() as caught:
        _evaluate_best(r, refit)
        if r.explained_row is not None:
            explain_report(
                r,
                refit,
                network,
                influence=influence,
                train_fn=train_fn,
                influence_members=influence_members,
                lds=lds,
                input_shape=input_shape,
                device=device,
                batch_size=featurizer_params.get("batch_size", 256),
                layers=specs[r.explained_row[0]].get("layers"),
                n_jobs=n_jobs,
                memory=memory,
                random_state=random_state,
            )
            r.explanation = r.methods[0].measured[r.methods[0].panel]
        if probe and task == "classification":  # the probes classify
            _probe_layers(
                r,
                network,
                dict(probe) if isinstance(probe, dict) else {},
                device,
                input_shape,
                random_state,
            )
        if backdoor is not None:
            r.forensics = poison_forensics(
                r, network, refit, *backdoor, device=device, input_shape=input_shape
            )
        if is_named(X) or input_groups:
            r.input_shares = input_share_results(
                network,
                X,
                X_test,
                r.y_test,
                task=task,
                groups=input_groups,
                input_shape=input_shape,
                device=device,
            )
    r.summary["convergence_warnings"] = int(np.sum(r.table["convergence_warnings"]) + caught[0])
    return r


def _network_scores(r, network, device, input_shape):
    """Network probabilities and accuracy (regression: outputs, MSE and R²) on the test set."""
    from ..metrics import network_outputs, network_proba

    options = {"device": device, "input_shape": input_shape}
    if r.task == "regression":
        from sklearn.metrics import mean_squared_error, r2_score

        r.network_test = network_outputs(network, r.X_test, **options).reshape(r.y_test.shape)
        r.summary["network_test_mse"] = float(mean_squared_error(r.y_test, r.network_test))
        r.summary["network_test_r2"] = float(r2_score(r.y_test, r.network_test))
        return
    r.labels = np.unique(r.y)
    r.network_test = network_proba(network, r.X_test, **options)
    pred = r.labels[r.network_test.argmax(axis=1)]
    r.summary["network_test_accuracy"] = float(np.mean(pred == r.y_test))


def _best(table, score, rows=None):
    """Index of the most faithful row (among ``rows``), NaN scores last."""
    values = np.asarray(table[f"{score}_mean"], dtype=float)
    values = np.where(np.isfinite(values), values, -np.inf)
    rows = np.arange(len(values)) if rows is None else np.asarray(rows)
    return int(rows[np.argmax(values[rows])])


def _evaluate_best(r, refit):
    """Refit the most faithful surrogate on all training data; score it on the test set."""
    from ..metrics import accuracy_difference, kendall_faithfulness

    table, score = r.table, _SCORE[r.task]
    r.best = _best(table, score)
    kernel, estimator = table["kernel"][r.best], table["estimator"][r.best]
    best = refit(kernel, estimator)
    r.summary.update(best_kernel=kernel, best_estimator=estimator)
    if r.task == "regression":
        return _evaluate_regression(r, refit, best)
    r.surrogate_test = best.estimator.predict_proba(best.K_test)
    pred = best.estimator.predict(best.K_test)
    network_pred = r.labels[r.network_test.argmax(axis=1)]
    r.summary.update(
        best_test_tau=float(
            kendall_faithfulness(r.y_test, r.network_test, r.surrogate_test, labels=r.labels)
        ),
        best_test_tad=float(accuracy_difference(r.y_test, network_pred, pred)),
        best_test_accuracy=float(np.mean(pred == r.y_test)),
    )
    # Attributions need a kernel GLM (label-trained or distilled): the most faithful one.
    kglm = [i for i, name in enumerate(table["estimator"]) if str(name).startswith("kglm")]
    if kglm:
        i = _best(table, score, kglm)
        r.explained_row = (str(table["kernel"][i]), str(table["estimator"][i]))
        r.explained = " ".join(r.explained_row)


def _evaluate_regression(r, refit, best):
    """Test faithfulness of the best surrogate, and each kernel's relative test loss."""
    from sklearn.metrics import mean_squared_error

    from ..metrics import kendall_outputs, output_r2, relative_test_loss

    r.surrogate_test = best.estimator.predict(best.K_test)
    r.summary.update(
        best_test_r2_network=float(output_r2(r.network_test, r.surrogate_test)),
        best_test_tau=float(kendall_outputs(r.network_test, r.surrogate_test)),
        best_test_relative_loss=relative_test_loss(r.y_test, r.surrogate_test, r.network_test),
    )
    # Qadeer et al.'s comparison: each kernel's label-trained regression, relative to the
    # network and to the NTK regression (pntk, or pntk0 for unnormalised kernels)
    kernels = list(
        dict.fromkeys(k for k, e in zip(r.table["kernel"], r.table["estimator"]) if e == "krr")
    )
    mse = {}
    for k in kernels:
        krr = refit(k, "krr")
        mse[k] = mean_squared_error(r.y_test, krr.estimator.predict(krr.K_test))
    rows = []
    for k in kernels:
        ntk = "pntk0" if k.endswith("0") else "pntk"
        rows.append(
            {
                "kernel": k,
                "test_mse": float(mse[k]),
                "relative_to_network": float(mse[k] / r.summary["network_test_mse"]),
                "relative_to_ntk": float(mse[k] / mse[ntk]) if ntk in mse else float("nan"),
            }
        )
    r.kernel_losses = from_rows(
        rows, ("kernel", "test_mse", "relative_to_network", "relative_to_ntk")
    )


def _probe_layers(r, network, params, device, input_shape, random_state):
    """PCA probes per layer and the collapse onset (see :class:`~sknn_kernels.PCAProbe`)."""
    from ..features.probe import PCAProbe
    from ..metrics import collapse_onset

    params = {"layers": "all", "pooling": "avg", "cv": 3, **params}
    probe = PCAProbe(
        network, device=device, input_shape=input_shape, random_state=random_state, **params
    ).fit(r.X, r.y)
    r.probe_results, r.explained_variance = probe.probe_results_, probe.explained_variance_
    try:
        r.summary["collapse_onset"] = collapse_onset(probe)
    except ValueError:  # the probes asked for lack "ncc" or "linear"
        r.summary["collapse_onset"] = "n/a"


# ----------------------------------------------------------------------- output
def format_table(results):
    """Format the comparison as an aligned text table (mean ± std over folds).

    Parameters
    ----------
    results : Bunch or dict of str to ndarray
        :func:`run_report`'s results, or :func:`~sknn_kernels.compare_surrogates`'s.

    Returns
    -------
    text : str
        The table, a header line, a rule and one line per surrogate.
    """
    cols, cells = display_table(results.get("table", results))
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_report(results, out):
    """Write ``results.csv``, ``results.json``, the figures and ``index.html`` into ``out``.

    Parameters
    ----------
    results : Bunch
        The result of :func:`run_report`.
    out : str or Path
        The report folder (created when missing).

    Returns
    -------
    written : list of Path
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results.table
    columns = list(table)
    written = [out / "results.csv", out / "results.json"]
    with open(written[0], "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(zip(*(map(_csv_value, table[c]) for c in columns)))
    payload = {"summary": results.summary, "results": _json_rows(table)}
    for key in ("kernel_losses", "probe_results", "method_table", "input_shares"):
        if results.get(key) is not None:
            payload[key] = _json_rows(results[key])
    if results.get("explanations") is not None:
        payload["explanations"] = results.explanations
    if results.forensics is not None:
        payload["forensics"] = _json_rows(results.forensics["rows"])
    written[1].write_text(json.dumps(payload, indent=2, default=_json_value))

    shown = []
    for name, caption, draw in _figures(results):
        draw().savefig(out / name, dpi=110, bbox_inches="tight")
        written.append(out / name)
        shown.append((name, caption))
    sections = []
    if results.get("method_table") is not None:
        html_part, extra = explanations_section(results, out)
        sections.append(html_part)
        written += extra
    if results.forensics is not None:
        html_part, extra = forensics_section(results, out)
        sections.append(html_part)
        written += extra
    if results.get("input_shares") is not None:
        html_part, extra = input_section(results, out)
        sections.append(html_part)
        written += extra
    cols_shown, cells = display_table(table)
    page = render_report_html(
        "sknn-kernels surrogate report",
        [(k.replace("_", " "), v) for k, v in results.summary.items()],
        cols_shown,
        cells,
        shown,
        best_row=results.get("best"),
        notes=_notes(results),
        sections=sections,
    )
    (out / "index.html").write_text(page)
    written.append(out / "index.html")
    return written


def _figures(r):
    """``(file name, caption, draw)`` per figure the results support."""
    from .. import plotting

    score, summary = _SCORE[r.task], r.summary
    best = f"({summary['best_kernel']} + {summary['best_estimator']})"
    figures = [
        (
            "faithfulness.png",
            f"{score} (cross-validated, mean ± std) per kernel and estimator",
            lambda: plotting.plot_faithfulness(r.table, metric=score),
        )
    ]
    if r.task == "regression":
        figures.append(
            (
                "scatter.png",
                f"Output on the test set: network vs best surrogate {best}",
                lambda: plotting.plot_output_scatter(r.network_test, r.surrogate_test),
            )
        )
        if len(r.kernel_losses["kernel"]):
            figures.append(
                (
                    "relative_loss.png",
                    "Test loss of each kernel's regression (krr, trained on the targets) "
                    "relative to the network's; the relative_to_ntk column of results.json "
                    "is Qadeer et al.'s L(kernel) / L(NTK)",
                    lambda: plotting.plot_relative_loss(
                        r.kernel_losses["kernel"], r.kernel_losses["relative_to_network"]
                    ),
                )
            )
    else:
        figures.append(
            (
                "scatter.png",
                f"True-class probability on the test set: network vs best surrogate {best}",
                lambda: plotting.plot_probability_scatter(
                    r.y_test, r.network_test, r.surrogate_test, labels=r.labels
                ),
            )
        )
    if r.get("lds_methods") is not None:
        from ..plotting import plot_attribution_lds

        figures.append(
            (
                "lds.png",
                f"Linear datamodeling score of each attribution method on "
                f"{summary['lds_subsets']} retrainings on random halves (± s.e. over test samples)",
                lambda: plot_attribution_lds(
                    *(r.lds_methods[c] for c in ("method", "lds", "lds_se"))
                ),
            )
        )
    if r.probe_results is not None:
        figures += [
            (
                "probes.png",
                "Probe accuracy vs number of principal components, per layer",
                lambda: plotting.plot_probe_curves(r.probe_results),
            ),
            (
                "explained_variance.png",
                "Cumulative explained variance per layer",
                lambda: plotting.plot_explained_variance(r.explained_variance),
            ),
        ]
    return figures


def _notes(r):
    """How to read the table, and one sentence per built-in surrogate shown."""
    if r.task == "regression":
        first = (
            "R²: surrogate vs the true targets; R² vs network: surrogate vs the network's "
            "outputs (1 = the network reproduced); tau: Kendall rank correlation with the "
            "network's outputs; loss / network loss: the surrogate's test MSE over the "
            "network's. Means ± std over cross-validation folds."
        )
        losses = r.kernel_losses
        if len(losses["kernel"]):
            first += (
                " Relative test loss per kernel (test set): "
                + "; ".join(
                    f"{k}: {net:.3f} of the network's, {ntk:.3f} of the NTK's"
                    for k, net, ntk in zip(
                        losses["kernel"], losses["relative_to_network"], losses["relative_to_ntk"]
                    )
                )
                + "."
            )
    else:
        first = (
            "tau: Kendall rank correlation between the network's and the surrogate's "
            "probability of the true class (1 = perfectly faithful ranking). TAD: surrogate "
            "accuracy minus network accuracy. Means ± std over cross-validation folds."
        )
    notes = [first]
    warned = int(np.sum(r.table["convergence_warnings"]))
    if warned:
        notes.append(
            f"conv. warnings: {warned} surrogate fits stopped before converging (sklearn's "
            "ConvergenceWarning, counted per kernel and estimator over the folds); their "
            "rows may understate what the kernel can do."
        )
    shown = dict.fromkeys(str(name) for name in r.table["estimator"])
    return notes + [ESTIMATOR_NOTES[name] for name in shown if name in ESTIMATOR_NOTES]


def _csv_value(value):
    """Floats in full precision (``repr``), everything else as text."""
    value = _json_value(value) if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, float) else value


def _json_value(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _json_rows(table):
    """A dict of arrays as a list of JSON-ready row dicts (NaN as null)."""
    columns = list(table)
    rows = []
    for values in zip(*(table[c] for c in columns)):
        row = {}
        for c, v in zip(columns, values):
            v = _json_value(v)
            row[c] = None if isinstance(v, float) and not np.isfinite(v) else v
        rows.append(row)
    return rows
