"""Figures of representations: PCA probes, spectra, seed variability, two-sample views."""

import numpy as np

from .._results import as_columns
from ._axes import _STYLES, _new_axes


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
        The Figure drawn on (that of ``ax`` when given).
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
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).
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
        Axes to draw on; by default, those of a new Figure.
    fit : PowerLawFit, default=None
        With ``kind="density"`` and a single spectrum, overlay the fitted power law
        ``p(x) ∝ x^(−alpha)`` above its ``xmin``, scaled to the tail's share of values.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).
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


def plot_ensemble_convergence(convergence, ax=None):
    """The α-trimming level of held-out seeds against the size of the reference ensemble.

    Parameters
    ----------
    convergence : Bunch
        Output of :func:`~sknn_kernels.analysis.variability.ensemble_convergence`, or of
        :func:`~sknn_kernels.analysis.variability.compare_networks` (its ``convergence``).
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.variability import ensemble_convergence
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
        Output of :func:`~sknn_kernels.analysis.shift.pca_view`.
    mmd : MMDResult, default=None
        Adds a panel with the permutation null distribution and the observed ``MMD²``.
    classifier : ClassifierTestResult, default=None
        Its AUC and p-value go in the scatter's title.
    names : tuple of str, default=("X", "Y")
        Legend labels of the two samples.
    ax : matplotlib Axes, default=None
        Draw only the scatter on this axes.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.shift import mmd_test, pca_view
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
        Output(s) of :func:`~sknn_kernels.analysis.spectral_evolution.spectral_evolution`, one
        colour per run.
    matrix : str, default=None
        Weight matrix shown (the largest by default).
    kernel : {"ntk", "ck"}, default=None
        Kernel of the last panel (the first one computed by default; no panel if none).

    Returns
    -------
    fig : matplotlib.figure.Figure
        A new Figure.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.analysis.spectral_evolution import spectral_evolution
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
