"""Figures of kernel surrogates: faithfulness, outputs, attributions, backdoor forensics."""

import numpy as np

from .._results import as_columns
from ._axes import _new_axes, _show_image


def plot_faithfulness(results, metric="tau", ax=None):
    """Bars of a cross-validated faithfulness metric per kernel, one colour per estimator.

    Parameters
    ----------
    results : dict of str to ndarray
        The results of :func:`~sknn_kernels.compare_surrogates` (columns ``kernel``,
        ``estimator``, ``<metric>_mean``, ``<metric>_std``); a DataFrame of them works too.
    metric : str, default="tau"
        Metric plotted: ``results`` must hold its ``_mean`` and ``_std`` columns.
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

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
        True labels.
    proba_network, proba_surrogate : array-like of shape (n_samples, n_classes)
        Class probabilities of the network and of the surrogate.
    labels : array-like, default=None
        Class label of each probability column (``np.unique(y_true)`` by default).
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

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
        The training images the explanation indexes.
    explanation : Bunch
        Output of :meth:`KernelSurrogateClassifier.explain`.
    image_shape : tuple of int
        ``(C, H, W)`` or ``(H, W)`` of one image; C = 1 or 3.
    n_rows : int, default=None
        Number of test points shown (all explained ones by default).

    Returns
    -------
    fig : matplotlib.figure.Figure
        A new Figure.
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
        The training images the explanation indexes.
    explanation : Bunch
        Output of an ``explain`` method (``proponents``, ``proponent_scores``, ``target``).
    poison_mask : array-like of bool, shape (n_train,)
        The poisoned training samples (see :func:`sknn_kernels.attribution.evaluation.poison`).
    image_shape : tuple of int
        ``(C, H, W)`` or ``(H, W)`` of one image; C = 1 or 3.
    n_rows : int, default=None
        Number of test images shown (all explained ones by default).

    Returns
    -------
    fig : matplotlib.figure.Figure
        A new Figure.

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


def plot_output_scatter(y_network, y_surrogate, ax=None):
    """Network vs surrogate output of a regression network, one point per sample and output.

    Parameters
    ----------
    y_network, y_surrogate : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of the network and of the surrogate.
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

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
        Kernel names, one bar each.
    ratios : sequence of float
        ``L(kernel) / L(reference)``, e.g. from :func:`~sknn_kernels.metrics.relative_test_loss`.
    reference : str, default="network"
        Name of the reference in the axis label.
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

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


def plot_attribution_lds(methods, lds, lds_se=None, ax=None):
    """Bars of the linear datamodeling score (LDS) of attribution methods, with error bars.

    Parameters
    ----------
    methods : sequence of str
        Method names (one bar each).
    lds : array-like of shape (n_methods,)
        Their LDS (see :func:`~sknn_kernels.attribution.evaluation.linear_datamodeling_score`).
    lds_se : array-like of shape (n_methods,), default=None
        Standard errors over test samples (error bars).
    ax : matplotlib Axes, default=None
        Axes to draw on; by default, those of a new Figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> from sknn_kernels.plotting import plot_attribution_lds
    >>> fig = plot_attribution_lds(["pntk0 kglm-logits", "influence"], [0.2, 0.5], [0.03, 0.04])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['pntk0 kglm-logits', 'influence']
    """
    methods = [str(m) for m in methods]
    lds = np.asarray(lds, dtype=float)
    fig, (ax,) = _new_axes(ax, width=6.0, height=0.45 * len(methods) + 1.2)
    ax.barh(np.arange(len(methods)), lds, xerr=lds_se, capsize=2, color="tab:blue")
    ax.set_yticks(np.arange(len(methods)), methods)
    ax.invert_yaxis()
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_xlabel("LDS (Spearman, retrained outputs vs summed attributions; ± s.e.)")
    ax.set_title("Do the attributions predict retraining?")
    return fig
