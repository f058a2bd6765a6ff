"""Figures of which input drives a prediction, of binned-regression calibration and of concepts."""

import numpy as np

from .._results import as_columns
from ._axes import _new_axes


def plot_input_shares(results, ax=None, *, value="share"):
    """Each player's share (MM-SHAP) per bin of the target or prediction, as stacked bars.

    Parameters
    ----------
    results : dict of str to ndarray
        Output of :meth:`sknn_kernels.InputShares.share_results`,
        :func:`~sknn_kernels.attribution.input_shares.input_shares` or
        :func:`~sknn_kernels.attribution.branches.kernel_shares` with ``y``; an optional
        ``bin_label`` column names the bars (e.g. the classes of a classifier).
    ax : matplotlib Axes, default=None
        Draw on this axes.
    value : {"share", "abs_attribution"}, default="share"
        Stack the mean shares (bars of height 1) or the mean absolute attributions.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.input_shares import input_shares
    >>> from sknn_kernels.plotting import plot_input_shares
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> res = input_shares(torch.nn.Linear(3, 1), X, X[:, 0], bins=3, device="cpu")
    >>> len(plot_input_shares(res).axes)
    1
    """
    res = as_columns(
        results,
        required=("bin", "bin_low", "bin_high", "player", value),
        what="the results of InputShares.share_results",
    )
    fig, (axis,) = _new_axes(ax, 1, width=5.5)
    binned = res["bin"] >= 0
    if not binned.any():  # overall rows only: one bar
        binned = res["bin"] == -1
    players = list(dict.fromkeys(res["player"].tolist()))
    bins = sorted(set(res["bin"][binned].tolist()))
    lows = np.array([res["bin_low"][binned & (res["bin"] == b)][0] for b in bins])
    highs = np.array([res["bin_high"][binned & (res["bin"] == b)][0] for b in bins])
    centres, widths = (lows + highs) / 2, (highs - lows) * 0.9
    if np.any(widths <= 0):
        centres, widths = np.arange(len(bins)), np.full(len(bins), 0.8)
    bottom = np.zeros(len(bins))
    for j, player in enumerate(players):
        heights = np.array(
            [
                np.nan_to_num(res[value][binned & (res["bin"] == b) & (res["player"] == player)][0])
                for b in bins
            ]
        )
        axis.bar(centres, heights, widths, bottom=bottom, color=f"C{j}", label=player)
        bottom += heights
    if "bin_label" in results:  # named bins (the report's classes): label each bar
        first = [int(np.flatnonzero(binned & (res["bin"] == b))[0]) for b in bins]
        axis.set_xticks(centres, [str(results["bin_label"][i]) for i in first])
        axis.set_xlabel("class" if len(bins) > 1 else "all samples")
    else:
        axis.set_xlabel("bin of the target" if len(bins) > 1 else "all samples")
    axis.set_ylabel("share of |attribution|" if value == "share" else "mean |attribution|")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_pit_histogram(pit, n_bins=10, ax=None):
    """Histogram of PIT values with the uniform density of calibrated predictions.

    Parameters
    ----------
    pit : array-like of shape (n_samples,)
        Output of :func:`sknn_kernels.metrics.pit_values`.
    n_bins : int, default=10
        Equal-width bins on [0, 1].
    ax : matplotlib Axes, default=None
        Draw on this axes.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.plotting import plot_pit_histogram
    >>> fig = plot_pit_histogram(np.random.default_rng(0).uniform(size=100))
    >>> len(fig.axes)
    1
    """
    from ..metrics import pit_histogram, pit_ks_distance

    hist = pit_histogram(pit, n_bins=n_bins)
    fig, (axis,) = _new_axes(ax, 1)
    width = hist["bin_high"] - hist["bin_low"]
    axis.bar(hist["bin_low"], hist["density"], width, align="edge", color="C0", alpha=0.7)
    axis.axhline(1.0, color="k", ls="--", lw=1, label="calibrated")
    axis.set_xlim(0, 1)
    axis.set_xlabel("PIT")
    axis.set_ylabel("density")
    axis.set_title(f"KS distance to uniform {pit_ks_distance(pit):.3f}", fontsize="medium")
    axis.legend(fontsize="small")
    return fig


def plot_concepts(results, ax=None):
    """Association of each concept (direction or cluster) with each metadata column, as a heat map.

    Parameters
    ----------
    results : dict of str to ndarray
        Output of :func:`sknn_kernels.analysis.concepts.embedding_concepts` with metadata.
    ax : matplotlib Axes, default=None
        Draw on this axes.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The Figure drawn on (that of ``ax`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.concepts import embedding_concepts
    >>> from sknn_kernels.plotting import plot_concepts
    >>> rng = np.random.default_rng(0)
    >>> res = embedding_concepts(rng.normal(size=(50, 4)), {"size": rng.normal(size=50)},
    ...                          n_components=2, n_clusters=2, random_state=0)
    >>> len(plot_concepts(res).axes)
    2
    """
    res = as_columns(results, required=("concept", "weight"), what="embedding_concepts results")
    names = [c[len("assoc_") :] for c in res if c.startswith("assoc_")]
    if not names:
        raise ValueError("The results hold no metadata association: pass metadata= first.")
    values = np.stack([res[f"assoc_{m}"].astype(float) for m in names], 1)
    fig, (axis,) = _new_axes(ax, 1, width=2.8 + 1.1 * len(names), height=1.0 + 0.35 * len(values))
    image = axis.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_yticks(
        range(len(values)), [f"{c} ({w:.0%})" for c, w in zip(res["concept"], res["weight"])]
    )
    for i in range(values.shape[0]):
        for j, name in enumerate(names):
            text = f"{values[i, j]:.2f}"
            favours = res.get(f"favours_{name}")
            if favours is not None:
                text += f"\n{favours[i]}"
            axis.text(j, i, text, ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=axis, label="r (numeric) / η (categorical)")
    return fig
