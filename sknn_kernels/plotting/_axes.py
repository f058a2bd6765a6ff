"""Axes and image helpers shared by the figures."""

import numpy as np

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
