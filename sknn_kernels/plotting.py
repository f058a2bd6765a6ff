"""Figures: PCAProbe results, spectra and surrogate reports (matplotlib, optional extra ``plot``).

Every function draws on a given ``ax`` or on a new ``matplotlib.figure.Figure``
(created without pyplot, so no window ever opens and no backend is needed) and
returns the Figure; save it with ``fig.savefig(path)``.
"""

import numpy as np

from ._results import as_columns

__all__ = [
    "plot_attribution_grid",
    "plot_ensemble_convergence",
    "plot_explained_variance",
    "plot_faithfulness",
    "plot_output_scatter",
    "plot_poison_grid",
    "plot_probability_scatter",
    "plot_probe_curves",
    "plot_relative_loss",
    "plot_spectral_evolution",
    "plot_spectrum",
    "plot_two_sample",
]

_STYLES = ["-", "--", ":", "-."]


def _new_axes(ax, ncols=1, width=4.5, height=3.5):
    """``(figure, list of axes)``: the given axes, or a new row of ``ncols`` axes."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "Plotting needs matplotlib: pip install 'sknn-kernels[plot]' (or matplotlib)."
        ) from exc
    if ax is not None:
        return ax.figure, [ax] * ncols
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _probe_results(probe_or_results):
    return as_columns(
        getattr(probe_or_results, "probe_results_", probe_or_results),
        required=("layer", "probe", "n_components", "score_mean", "score_std"),
        what="a PCAProbe fitted with y, or its probe_results_",
    )


def plot_probe_curves(probe_or_results, probes=None, layers=None, ax=None):
    """Cross-validated probe accuracy against the number of principal components, per layer.

    Parameters
    ----------
    probe_or_results : PCAProbe or dict of str to ndarray
        A ``PCAProbe`` fitted with ``y``, or its ``probe_results_``.
    probes : list of str, default=None
        Probes to draw (all by default), one panel each.
    layers : list of str, default=None
        Layers to draw (all by default), one line each.
    ax : matplotlib Axes, default=None
        Draw every probe on this axes (line style tells probes apart) instead of
        one new panel per probe.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    cols = _probe_results(probe_or_results)
    probes = list(dict.fromkeys(cols["probe"])) if probes is None else list(probes)
    layers = list(dict.fromkeys(cols["layer"])) if layers is None else list(layers)
    fig, axes = _new_axes(ax, len(probes))
    shared = ax is not None  # all probes on one axes: line style tells them apart
    for i, (name, axis) in enumerate(zip(probes, axes)):
        for j, layer in enumerate(layers):
            mask = (cols["layer"] == layer) & (cols["probe"] == name)
            if not mask.any():
                raise ValueError(f"No results for layer {layer!r} and probe {name!r}.")
            order = np.argsort(cols["n_components"][mask])
            k = cols["n_components"][mask][order]
            mean, std = cols["score_mean"][mask][order], cols["score_std"][mask][order]
            axis.plot(
                k,
                mean,
                _STYLES[i % len(_STYLES)] if shared else "-",
                marker="o",
                ms=3,
                color=f"C{j % 10}",
                label=f"{layer} / {name}" if shared else layer,
            )
            axis.fill_between(k, mean - std, mean + std, color=f"C{j % 10}", alpha=0.15)
        axis.set_xscale("log")
        axis.set_xlabel("principal components k")
        axis.set_ylabel("CV accuracy")
        axis.set_title("probe accuracy" if shared else f"{name} probe")
        axis.legend(title="layer", fontsize="small")
    return fig


def plot_explained_variance(probe_or_curves, layers=None, ax=None):
    """Cumulative explained-variance ratio against the number of components, per layer.

    Parameters
    ----------
    probe_or_curves : PCAProbe or dict of str to array
        A fitted ``PCAProbe`` (its ``explained_variance_``) or a dict layer ->
        cumulative ratios.
    layers : list of str, default=None
        Layers to draw (all by default).
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    curves = getattr(probe_or_curves, "explained_variance_", probe_or_curves)
    if not isinstance(curves, dict):
        raise TypeError(
            "Pass a fitted PCAProbe or a dict layer -> cumulative explained-variance ratios."
        )
    layers = list(curves) if layers is None else list(layers)
    fig, (axis,) = _new_axes(ax)
    for j, layer in enumerate(layers):
        ratio = np.asarray(curves[layer])
        axis.plot(np.arange(1, ratio.size + 1), ratio, color=f"C{j % 10}", label=str(layer))
    axis.set_xscale("log")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("principal components k")
    axis.set_ylabel("cumulative explained variance")
    axis.legend(title="layer", fontsize="small")
    return fig


def plot_spectrum(spectra, kind="rank", ax=None, fit=None):
    """Eigenvalue (or singular-value) spectra on log axes.

    Parameters
    ----------
    spectra : array-like, KernelSpectrum, WeightSpectrum or dict of str to those
        One spectrum or several named ones (e.g. ``weight_spectra(net)``). A
        ``WeightSpectrum`` contributes the eigenvalues of ``WᵀW``.
    kind : {"rank", "density"}, default="rank"
        ``"rank"``: eigenvalue against its rank (log–log); ``"density"``: empirical
        spectral density on logarithmic bins (log–log).
    ax : matplotlib Axes, default=None
    fit : PowerLawFit, default=None
        With ``kind="density"`` and a single spectrum, overlay the fitted power law
        ``p(x) ∝ x^(−alpha)`` above its ``xmin``, scaled to the tail's share of values.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    if kind not in ("rank", "density"):
        raise ValueError(f"kind must be 'rank' or 'density'; got {kind!r}.")
    named = spectra if isinstance(spectra, dict) else {None: spectra}
    fig, (axis,) = _new_axes(ax)
    for j, (name, spectrum) in enumerate(named.items()):
        values = np.sort(_eigenvalues(spectrum))[::-1]
        values = values[values > 0]
        if kind == "rank":
            axis.plot(np.arange(1, values.size + 1), values, color=f"C{j % 10}", label=name)
        else:
            edges = np.geomspace(values.min(), values.max(), max(10, min(60, values.size // 5)) + 1)
            density, _ = np.histogram(values, bins=edges, density=True)
            centres = np.sqrt(edges[1:] * edges[:-1])
            axis.plot(
                centres[density > 0],
                density[density > 0],
                marker="o",
                ms=3,
                color=f"C{j % 10}",
                label=name,
            )
            if fit is not None and len(named) == 1:
                x = centres[centres >= fit.xmin]
                share = np.mean(values >= fit.xmin)  # the law describes only the tail
                pdf = share * (fit.alpha - 1) / fit.xmin * (x / fit.xmin) ** (-fit.alpha)
                axis.plot(x, pdf, "k--", label=f"power law, alpha={fit.alpha:.2f}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("rank" if kind == "rank" else "eigenvalue")
    axis.set_ylabel("eigenvalue" if kind == "rank" else "density")
    if len(named) > 1 or fit is not None:
        axis.legend(fontsize="small")
    return fig


def _eigenvalues(spectrum):
    """Eigenvalues of a KernelSpectrum or WeightSpectrum; arrays are taken as they are."""
    return np.asarray(getattr(spectrum, "eigenvalues", spectrum), dtype=float).ravel()


# ------------------------------------------------------------ surrogate report figures
def plot_faithfulness(results, metric="tau", ax=None):
    """Bars of a cross-validated faithfulness metric per kernel, one colour per estimator.

    Parameters
    ----------
    results : dict of str to ndarray
        The results of :func:`~sknn_kernels.compare_surrogates` (columns ``kernel``,
        ``estimator``, ``<metric>_mean``, ``<metric>_std``); a DataFrame of them works too.
    metric : str, default="tau"
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from sknn_kernels.plotting import plot_faithfulness
    >>> results = {"kernel": ["pntk", "ck"], "estimator": ["kglm", "kglm"],
    ...            "tau_mean": [0.7, 0.6], "tau_std": [0.02, 0.03]}
    >>> fig = plot_faithfulness(results)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['pntk', 'ck']
    """
    cols = as_columns(
        results,
        required=("kernel", "estimator", f"{metric}_mean", f"{metric}_std"),
        what="compare_surrogates results",
    )
    kernels = list(dict.fromkeys(cols["kernel"]))
    estimators = list(dict.fromkeys(cols["estimator"]))
    fig, (ax,) = _new_axes(ax, width=max(5.0, 1.1 * len(kernels) * max(1, len(estimators)) / 2 + 2))
    width = 0.8 / len(estimators)
    for j, est in enumerate(estimators):
        mean, std = np.full(len(kernels), np.nan), np.full(len(kernels), np.nan)
        for i in np.flatnonzero(cols["estimator"] == est):
            k = kernels.index(cols["kernel"][i])
            mean[k], std[k] = cols[f"{metric}_mean"][i], cols[f"{metric}_std"][i]
        ax.bar(
            np.arange(len(kernels)) + (j - (len(estimators) - 1) / 2) * width,
            mean,
            width,
            yerr=std,
            capsize=2,
            label=est,
        )
    ax.set_xticks(np.arange(len(kernels)), kernels)
    ax.set_ylabel(f"{metric} (mean ± std over folds)")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.legend(title="estimator", fontsize="small")
    ax.set_title("Faithfulness of kernel surrogates")
    return fig


def plot_probability_scatter(y_true, proba_network, proba_surrogate, labels=None, ax=None):
    """Network vs surrogate probability of the true class, one point per sample.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba_network, proba_surrogate : array-like of shape (n_samples, n_classes)
    labels : array-like, default=None
        Class label of each probability column (``np.unique(y_true)`` by default).
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from sknn_kernels.plotting import plot_probability_scatter
    >>> fig = plot_probability_scatter([0, 1], [[0.9, 0.1], [0.3, 0.7]], [[0.8, 0.2], [0.4, 0.6]])
    >>> fig.axes[0].collections[0].get_offsets().tolist()
    [[0.9, 0.8], [0.7, 0.6]]
    """
    y_true = np.asarray(y_true)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    col = np.searchsorted(labels, y_true)
    rows = np.arange(len(y_true))
    p_net = np.asarray(proba_network)[rows, col]
    p_sur = np.asarray(proba_surrogate)[rows, col]
    fig, (ax,) = _new_axes(ax, width=4.2, height=4.0)
    ax.scatter(p_net, p_sur, s=8, alpha=0.5)
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("network: p(true class)")
    ax.set_ylabel("surrogate: p(true class)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    return fig


def plot_attribution_grid(X_test, X_train, explanation, image_shape, n_rows=None):
    """Test images with their top proponent and opponent training images.

    Parameters
    ----------
    X_test : array-like of shape (n_test, n_features)
        The explained points (row ``i`` of ``explanation`` explains ``X_test[i]``).
    X_train : array-like of shape (n_train, n_features)
    explanation : Bunch
        Output of :meth:`KernelSurrogateClassifier.explain`.
    image_shape : tuple of int
        ``(C, H, W)`` or ``(H, W)`` of one image; C = 1 or 3.
    n_rows : int, default=None
        Number of test points shown (all explained ones by default).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    n_rows = (
        len(explanation.proponents) if n_rows is None else min(n_rows, len(explanation.proponents))
    )
    k = explanation.proponents.shape[1]
    fig, _ = _new_axes(None)
    fig.clear()
    fig.set_size_inches(1.1 * (2 * k + 1.4), 1.25 * n_rows + 0.4)
    axes = fig.subplots(n_rows, 2 * k + 1, squeeze=False)

    def show(ax, x, title, colour):
        _show_image(ax, x, image_shape, title, colour)

    for i in range(n_rows):
        show(axes[i, 0], X_test[i], f"test → {explanation.target[i]}", "black")
        for j in range(k):
            p, o = explanation.proponents[i, j], explanation.opponents[i, j]
            show(
                axes[i, 1 + j],
                X_train[p],
                f"+{explanation.proponent_scores[i, j]:.2g}",
                "tab:green",
            )
            show(
                axes[i, 1 + k + j],
                X_train[o],
                f"{explanation.opponent_scores[i, j]:.2g}",
                "tab:red",
            )
        axes[i, k].set_xlabel(f"share {explanation.proponent_share[i]:.1%}", fontsize=6)
        axes[i, 2 * k].set_xlabel(f"share {explanation.opponent_share[i]:.1%}", fontsize=6)
    return fig


def plot_poison_grid(X_trigger, X_train, explanation, poison_mask, image_shape, n_rows=None):
    """Triggered test images with their top proponents; poisoned training images framed in red.

    Parameters
    ----------
    X_trigger : array-like of shape (n_shown, n_features)
        The explained (triggered) test images; row ``i`` of ``explanation`` explains row ``i``.
    X_train : array-like of shape (n_train, n_features)
    explanation : Bunch
        Output of an ``explain`` method (``proponents``, ``proponent_scores``, ``target``).
    poison_mask : array-like of bool, shape (n_train,)
        The poisoned training samples (see :func:`sknn_kernels.evaluation.poison`).
    image_shape : tuple of int
        ``(C, H, W)`` or ``(H, W)`` of one image; C = 1 or 3.
    n_rows : int, default=None
        Number of test images shown (all explained ones by default).

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from sknn_kernels.plotting import plot_poison_grid
    >>> ex = Bunch(proponents=np.array([[0, 1]]), proponent_scores=np.array([[0.5, 0.2]]),
    ...            target=np.array([3]))
    >>> fig = plot_poison_grid(np.zeros((1, 4)), np.ones((2, 4)), ex, [True, False], (2, 2))
    >>> len(fig.axes)
    3
    """
    mask = np.asarray(poison_mask, dtype=bool)
    n_rows = (
        len(explanation.proponents) if n_rows is None else min(n_rows, len(explanation.proponents))
    )
    k = explanation.proponents.shape[1]
    fig, _ = _new_axes(None)
    fig.clear()
    fig.set_size_inches(1.1 * (k + 1.4), 1.25 * n_rows + 0.4)
    axes = fig.subplots(n_rows, k + 1, squeeze=False)
    for i in range(n_rows):
        _show_image(
            axes[i, 0], X_trigger[i], image_shape, f"triggered → {explanation.target[i]}", "black"
        )
        for j in range(k):
            p = explanation.proponents[i, j]
            poisoned = bool(mask[p])
            _show_image(
                axes[i, 1 + j],
                X_train[p],
                image_shape,
                f"{'POISON ' if poisoned else ''}+{explanation.proponent_scores[i, j]:.2g}",
                "tab:red" if poisoned else "tab:green",
            )
    return fig


def _show_image(ax, x, image_shape, title, colour):
    img = np.asarray(x, dtype=float).reshape(image_shape)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    ax.set_title(title, fontsize=6, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(1.5)


# ------------------------------------------- seed variability, shift and spectral evolution
def plot_ensemble_convergence(convergence, ax=None):
    """The α-trimming level of held-out seeds against the size of the reference ensemble.

    Parameters
    ----------
    convergence : Bunch
        Output of :func:`~sknn_kernels.variability.ensemble_convergence`, or of
        :func:`~sknn_kernels.variability.compare_networks` (its ``convergence``).
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.variability import ensemble_convergence
    >>> from sknn_kernels.plotting import plot_ensemble_convergence
    >>> res = ensemble_convergence(np.random.default_rng(0).normal(size=(4, 200)), n_repeats=3)
    >>> fig = plot_ensemble_convergence(res)
    >>> fig.axes[0].get_xlabel()
    'models in the reference ensemble'
    """
    res = getattr(convergence, "convergence", convergence)
    fig, (axis,) = _new_axes(ax)
    axis.errorbar(
        res.sizes,
        res.mean,
        yerr=res.std,
        marker="o",
        ms=4,
        capsize=2,
        label="mean ± std over draws",
    )
    axis.axhline(res.mean[-1], color="0.5", lw=0.8, ls="--")
    axis.axvline(
        res.stable_size, color="C3", lw=0.8, ls=":", label=f"stable from {res.stable_size} models"
    )
    axis.set_xlabel("models in the reference ensemble")
    axis.set_ylabel(f"α-trimming level (tol={res.tol:.3f})")
    axis.legend(fontsize="small")
    return fig


def plot_two_sample(view, mmd=None, classifier=None, names=("X", "Y"), ax=None):
    """Two samples on their joint principal axes, with the tests' outcome.

    Parameters
    ----------
    view : Bunch
        Output of :func:`~sknn_kernels.shift.pca_view`.
    mmd : MMDResult, default=None
        Adds a panel with the permutation null distribution and the observed ``MMD²``.
    classifier : ClassifierTestResult, default=None
        Its AUC and p-value go in the scatter's title.
    names : tuple of str, default=("X", "Y")
    ax : matplotlib Axes, default=None
        Draw only the scatter on this axes.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.shift import mmd_test, pca_view
    >>> from sknn_kernels.plotting import plot_two_sample
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) + 1
    >>> fig = plot_two_sample(pca_view(X, Y), mmd_test(X, Y, n_permutations=50, random_state=0))
    >>> len(fig.axes)
    2
    """
    fig, axes = _new_axes(ax, 1 if ax is not None or mmd is None else 2)
    scatter = axes[0]
    for j, (name, scores) in enumerate(zip(names, (view.X, view.Y))):
        scatter.scatter(scores[:, 0], scores[:, 1], s=8, alpha=0.5, color=f"C{j}", label=name)
    ratio = view.explained_variance_ratio
    scatter.set_xlabel(f"PC 1 ({ratio[0]:.0%})")
    scatter.set_ylabel(f"PC 2 ({ratio[1]:.0%})" if ratio.size > 1 else "")
    scatter.legend(fontsize="small")
    if classifier is not None:
        scatter.set_title(
            f"probe AUC {classifier.roc_auc:.2f}, p = {classifier.pvalue:.3g}", fontsize="medium"
        )
    if mmd is not None and ax is None:
        axis = axes[1]
        axis.hist(mmd.null_distribution, bins=30, color="0.6", label="permutations")
        axis.axvline(mmd.statistic, color="C3", label=f"observed, p = {mmd.pvalue:.3g}")
        axis.set_xlabel("unbiased MMD²")
        axis.set_ylabel("count")
        axis.legend(fontsize="small")
    return fig


def plot_spectral_evolution(evolutions, matrix=None, kernel=None):
    """Weight and kernel spectra across training, for one run or several (e.g. optimisers).

    Four panels: the eigenvalues of ``WᵀW`` at the first (dashed) and last (solid)
    checkpoint with the last Marchenko–Pastur edge (dotted), the number of outliers
    above the edge, the power-law exponent of the eigenvalues' tail, and the kernel's
    relative Frobenius distance from its initial value, against the training step.

    Parameters
    ----------
    evolutions : SpectralEvolution or dict of str to SpectralEvolution
        Output(s) of :func:`~sknn_kernels.spectral_evolution.spectral_evolution`, one
        colour per run.
    matrix : str, default=None
        Weight matrix shown (the largest by default).
    kernel : {"ntk", "ck"}, default=None
        Kernel of the last panel (the first one computed by default; no panel if none).

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.spectral_evolution import spectral_evolution
    >>> from sknn_kernels.plotting import plot_spectral_evolution
    >>> net = torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.ReLU(), torch.nn.Linear(40, 2))
    >>> fig = plot_spectral_evolution(spectral_evolution([net, net], kernels=()))
    >>> len(fig.axes)
    3
    """
    runs = evolutions if isinstance(evolutions, dict) else {None: evolutions}
    first = next(iter(runs.values()))
    if matrix is None:
        matrix = max(first.weights, key=lambda name: np.prod(first.weights[name].shape))
    if kernel is None and first.kernels:
        kernel = next(iter(first.kernels))
    fig, axes = _new_axes(None, 3 if kernel is None else 4, width=3.6, height=3.2)
    for j, (name, evo) in enumerate(runs.items()):
        rec, colour = evo.weights[matrix], f"C{j % 10}"
        ranks = np.arange(1, rec.eigenvalues.shape[1] + 1)
        axes[0].plot(ranks, rec.eigenvalues[0], color=colour, ls="--", lw=0.8)
        axes[0].plot(ranks, rec.eigenvalues[-1], color=colour, label=name)
        axes[0].axhline(rec.bulk_edge[-1], color=colour, ls=":", lw=0.8)
        axes[1].plot(evo.steps, rec.n_outliers, color=colour, marker="o", ms=3, label=name)
        axes[2].plot(evo.steps, rec.alpha, color=colour, marker="o", ms=3, label=name)
        if kernel is not None:
            axes[3].plot(
                evo.steps, evo.kernels[kernel].distance, color=colour, marker="o", ms=3, label=name
            )
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    # a square matrix's smallest eigenvalues approach 0: keep the axis on the bulk and edge
    edges = [evo.weights[matrix].bulk_edge.min() for evo in runs.values()]
    axes[0].set_ylim(bottom=1e-3 * min(edges))
    axes[0].set_xlabel("rank")
    axes[0].set_ylabel(f"eigenvalue of WᵀW ({matrix})")
    axes[0].set_title("first (--), last (—), MP edge (:)", fontsize="small")
    axes[1].set_ylabel("eigenvalues above the MP edge")
    axes[2].set_ylabel("power-law exponent of the tail")
    if kernel is not None:
        axes[3].set_ylabel(f"‖K_t − K_0‖_F / ‖K_0‖_F ({kernel})")
    for axis in axes[1:]:
        axis.set_xlabel("step")
    if len(runs) > 1:
        axes[0].legend(fontsize="small")
    return fig


def plot_output_scatter(y_network, y_surrogate, ax=None):
    """Network vs surrogate output of a regression network, one point per sample and output.

    Parameters
    ----------
    y_network, y_surrogate : array-like of shape (n_samples,) or (n_samples, n_outputs)
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from sknn_kernels.plotting import plot_output_scatter
    >>> fig = plot_output_scatter([0.5, 1.0], [0.4, 1.1])
    >>> fig.axes[0].collections[0].get_offsets().tolist()
    [[0.5, 0.4], [1.0, 1.1]]
    """
    a = np.asarray(y_network, dtype=float).reshape(len(y_network), -1)
    b = np.asarray(y_surrogate, dtype=float).reshape(len(y_surrogate), -1)
    fig, (ax,) = _new_axes(ax, width=4.2, height=4.0)
    for j in range(a.shape[1]):
        ax.scatter(
            a[:, j], b[:, j], s=8, alpha=0.5, label=f"output {j}" if a.shape[1] > 1 else None
        )
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("network output")
    ax.set_ylabel("surrogate output")
    if a.shape[1] > 1:
        ax.legend(fontsize="small")
    return fig


def plot_relative_loss(kernels, ratios, reference="network", ax=None):
    """Bars of each kernel regression's test loss relative to a reference (1 = equal).

    Parameters
    ----------
    kernels : sequence of str
    ratios : sequence of float
        ``L(kernel) / L(reference)``, e.g. from :func:`~sknn_kernels.metrics.relative_test_loss`.
    reference : str, default="network"
        Name of the reference in the axis label.
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from sknn_kernels.plotting import plot_relative_loss
    >>> fig = plot_relative_loss(["pntk", "ck"], [1.1, 1.2])
    >>> [round(float(p.get_height()), 2) for p in fig.axes[0].patches]
    [1.1, 1.2]
    """
    fig, (ax,) = _new_axes(ax, width=max(4.0, 0.9 * len(kernels) + 2))
    ax.bar(np.arange(len(kernels)), ratios, 0.6)
    ax.set_xticks(np.arange(len(kernels)), list(kernels))
    ax.axhline(1, color="0.5", lw=0.8, ls="--")
    ax.set_ylabel(f"test loss / test loss of the {reference}")
    ax.set_title("Relative test loss of kernel regression")
    return fig
