"""Calibration and accuracy of binned regression: a network that outputs a distribution over target bins.

Photometric-redshift networks (and any regression cast as classification over ``C`` bins with
edges ``e_0 < ... < e_C``) predict ``p(x) ∈ Δ^C``. Read as a density that is uniform inside each
bin, it has a CDF ``F_x``; the probability integral transform ``PIT = F_x(y)`` of the true target
is uniform on [0, 1] when the predicted distributions are calibrated (a U-shaped histogram: too
narrow; a hump: too wide; a slope: biased). :func:`pit_values`, :func:`pit_histogram` and
:func:`pit_ks_distance` measure it (the classification counterpart is the top-label ECE,
:func:`sknn_kernels.analysis.variability.expected_calibration_error`);
:func:`binned_point_estimates` gives the mode, mean and median of each distribution and
:func:`photoz_metrics` / :func:`binned_regression_metrics` the usual bias, NMAD and outlier
rate of ``Δ = (ŷ - y) / (1 + y)``.
"""

import numpy as np
from sklearn.utils.validation import check_consistent_length, column_or_1d

from .._results import from_rows

__all__ = [
    "binned_point_estimates",
    "binned_regression_metrics",
    "photoz_metrics",
    "pit_histogram",
    "pit_ks_distance",
    "pit_values",
]

_ESTIMATES = ("mode", "mean", "median")


def _check_binned(proba, bin_edges):
    proba = np.asarray(proba, dtype=np.float64)
    edges = np.asarray(bin_edges, dtype=np.float64).ravel()
    if proba.ndim != 2:
        raise ValueError(f"proba must be 2-D (n_samples, n_bins); got shape {proba.shape}.")
    if len(edges) != proba.shape[1] + 1 or np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"bin_edges must be {proba.shape[1] + 1} increasing values (one more than the "
            f"columns of proba); got {len(edges)}."
        )
    if np.any(proba < 0) or not np.allclose(proba.sum(1), 1, atol=1e-4):
        raise ValueError(
            "proba must hold probabilities (non-negative rows summing to 1): apply a softmax "
            "to the network's logits first."
        )
    return proba, edges


def _cdf_at(proba, edges, y):
    """``F_x(y)`` of each row's piecewise-uniform density (0 below the first edge, 1 above)."""
    cum = np.concatenate([np.zeros((len(proba), 1)), np.cumsum(proba, 1)], 1)
    k = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, len(edges) - 2)
    frac = np.clip((y - edges[k]) / (edges[k + 1] - edges[k]), 0, 1)
    rows = np.arange(len(proba))
    return np.clip(cum[rows, k] + frac * proba[rows, k], 0, 1)


def pit_values(y_true, proba, bin_edges):
    """Probability integral transform of the true targets under binned predictive distributions.

    ``PIT_i = Σ_{c < k} p_ic + p_ik (y_i - e_k) / (e_{k+1} - e_k)`` for ``y_i`` in bin ``k``:
    the predicted CDF at the truth, the density taken uniform inside each bin.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True targets (values outside the edges give 0 or 1).
    proba : array-like of shape (n_samples, n_bins)
        Predicted probabilities of the bins (softmax of the network's outputs).
    bin_edges : array-like of shape (n_bins + 1,)
        Increasing bin edges.

    Returns
    -------
    pit : ndarray of shape (n_samples,)
        Values in [0, 1]; uniform for calibrated predictions.

    Examples
    --------
    >>> from sknn_kernels.metrics import pit_values
    >>> pit_values([0.25, 0.9], [[0.5, 0.5], [0.2, 0.8]], [0.0, 0.5, 1.0])
    array([0.25, 0.84])
    """
    proba, edges = _check_binned(proba, bin_edges)
    y = column_or_1d(y_true).astype(np.float64)
    check_consistent_length(y, proba)
    return _cdf_at(proba, edges, y)


def pit_histogram(pit, *, n_bins=10):
    """Histogram of PIT values on [0, 1], as density (1 everywhere when calibrated).

    Parameters
    ----------
    pit : array-like of shape (n_samples,)
        PIT values (:func:`pit_values`).
    n_bins : int, default=10
        Equal-width bins on [0, 1].

    Returns
    -------
    results : dict of str to ndarray
        One row per bin: ``bin_low``, ``bin_high``, ``count``, ``density`` (count divided by
        the count a uniform PIT would give).

    Examples
    --------
    >>> from sknn_kernels.metrics import pit_histogram
    >>> pit_histogram([0.1, 0.2, 0.7, 0.9], n_bins=2)["density"]
    array([1., 1.])
    """
    pit = column_or_1d(pit).astype(np.float64)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    edges = np.linspace(0, 1, int(n_bins) + 1)
    count, _ = np.histogram(np.clip(pit, 0, 1), bins=edges)
    density = count * n_bins / max(len(pit), 1)
    return {
        "bin_low": edges[:-1],
        "bin_high": edges[1:],
        "count": count.astype(np.int64),
        "density": density,
    }


def pit_ks_distance(pit):
    """Kolmogorov–Smirnov distance of the PIT values to the uniform distribution.

    ``sup_u |F̂(u) - u|``; :func:`scipy.stats.kstest` ``(pit, "uniform")`` gives the same
    statistic with a p-value.

    Parameters
    ----------
    pit : array-like of shape (n_samples,)
        PIT values.

    Returns
    -------
    distance : float
        0 for a perfectly uniform sample, 1 at worst.

    Examples
    --------
    >>> from sknn_kernels.metrics import pit_ks_distance
    >>> pit_ks_distance([0.5, 0.5])
    0.5
    """
    u = np.sort(np.clip(column_or_1d(pit).astype(np.float64), 0, 1))
    n = len(u)
    if n == 0:
        raise ValueError("pit is empty.")
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def binned_point_estimates(proba, bin_edges):
    """Mode, mean and median of each binned predictive distribution.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_bins)
        Predicted probabilities of the bins.
    bin_edges : array-like of shape (n_bins + 1,)
        Increasing bin edges.

    Returns
    -------
    estimates : dict of str to ndarray
        ``"mode"`` (centre of the most probable bin), ``"mean"`` (``Σ_c p_c t_c`` with bin
        centres ``t_c``) and ``"median"`` (where the piecewise-uniform CDF reaches 1/2), each
        of shape (n_samples,).

    Examples
    --------
    >>> from sknn_kernels.metrics import binned_point_estimates
    >>> est = binned_point_estimates([[0.2, 0.5, 0.3]], [0.0, 1.0, 2.0, 3.0])
    >>> {k: round(float(v[0]), 3) for k, v in est.items()}
    {'mode': 1.5, 'mean': 1.6, 'median': 1.6}
    """
    proba, edges = _check_binned(proba, bin_edges)
    centres = (edges[:-1] + edges[1:]) / 2
    cum = np.cumsum(proba, 1)
    k = np.minimum((cum < 0.5).sum(1), proba.shape[1] - 1)  # first bin whose CDF reaches 1/2
    rows = np.arange(len(proba))
    below = cum[rows, k] - proba[rows, k]
    inside = np.divide(
        0.5 - below, proba[rows, k], out=np.full(len(k), 0.5), where=proba[rows, k] > 0
    )
    median = edges[k] + np.clip(inside, 0, 1) * (edges[k + 1] - edges[k])
    return {"mode": centres[proba.argmax(1)], "mean": proba @ centres, "median": median}


def photoz_metrics(y_true, y_pred, *, outlier_threshold=0.15, relative=True):
    """Bias, NMAD and outlier rate of point predictions (the photometric-redshift metrics).

    With ``Δ = (ŷ - y) / (1 + y)`` (``relative=False``: ``ŷ - y``): ``bias`` the mean of
    ``Δ``, ``nmad = 1.4826 median(|Δ - median(Δ)|)`` (a robust standard deviation),
    ``outlier_rate`` the fraction with ``|Δ| > outlier_threshold``, and ``rmse`` of ``Δ``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted targets.
    outlier_threshold : float, default=0.15
        The catastrophic-outlier cut on ``|Δ|``.
    relative : bool, default=True
        Divide the errors by ``1 + y`` (redshifts).

    Returns
    -------
    metrics : dict of str to float
        ``bias``, ``nmad``, ``outlier_rate``, ``rmse``.

    Examples
    --------
    >>> from sknn_kernels.metrics import photoz_metrics
    >>> m = photoz_metrics([0.0, 0.0, 0.0, 1.0], [0.1, -0.1, 0.0, 2.0])
    >>> {k: round(v, 4) for k, v in m.items()}
    {'bias': 0.125, 'nmad': 0.1483, 'outlier_rate': 0.25, 'rmse': 0.2598}
    """
    y = column_or_1d(y_true).astype(np.float64)
    p = column_or_1d(y_pred).astype(np.float64)
    check_consistent_length(y, p)
    delta = (p - y) / (1 + y) if relative else p - y
    return {
        "bias": float(delta.mean()),
        "nmad": float(1.4826 * np.median(np.abs(delta - np.median(delta)))),
        "outlier_rate": float(np.mean(np.abs(delta) > outlier_threshold)),
        "rmse": float(np.sqrt(np.mean(delta**2))),
    }


def binned_regression_metrics(
    y_true, proba, bin_edges, *, outlier_threshold=0.15, relative=True, n_pit_bins=10
):
    """Point-estimate accuracy and PIT calibration of binned predictions, as a results dict.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True targets.
    proba : array-like of shape (n_samples, n_bins)
        Predicted probabilities of the bins.
    bin_edges : array-like of shape (n_bins + 1,)
        Increasing bin edges.
    outlier_threshold : float, default=0.15
        As in :func:`photoz_metrics`.
    relative : bool, default=True
        As in :func:`photoz_metrics`.
    n_pit_bins : int, default=10
        Bins of the PIT histogram whose largest deviation is reported.

    Returns
    -------
    results : dict of str to ndarray
        One row per point estimate (``estimate``: mode, mean, median) with
        :func:`photoz_metrics`' columns, plus the same PIT columns on every row:
        ``pit_ks`` (:func:`pit_ks_distance`) and ``pit_max_density_gap``
        (``max |density - 1|`` of :func:`pit_histogram`).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.metrics import binned_regression_metrics
    >>> proba = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    >>> res = binned_regression_metrics([0.5, 0.2], proba, [0.0, 0.33, 0.67, 1.0])
    >>> list(res["estimate"]), res["outlier_rate"].tolist()
    (['mode', 'mean', 'median'], [0.0, 0.0, 0.0])
    """
    estimates = binned_point_estimates(proba, bin_edges)
    pit = pit_values(y_true, proba, bin_edges)
    ks = pit_ks_distance(pit)
    gap = float(np.abs(pit_histogram(pit, n_bins=n_pit_bins)["density"] - 1).max())
    rows = [
        {
            "estimate": name,
            **photoz_metrics(
                y_true,
                estimates[name],
                outlier_threshold=outlier_threshold,
                relative=relative,
            ),
            "pit_ks": ks,
            "pit_max_density_gap": gap,
        }
        for name in _ESTIMATES
    ]
    return from_rows(rows)
