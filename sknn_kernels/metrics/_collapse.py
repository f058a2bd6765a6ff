"""Neural-collapse measures of a representation (Papyan, Han & Donoho 2020)."""

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import pairwise_distances_argmin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, column_or_1d

from .._results import as_columns

__all__ = ["NeuralCollapse", "collapse_onset", "neural_collapse"]


@dataclass(frozen=True)
class NeuralCollapse:
    """Neural-collapse statistics of one representation; all tend to 0 under collapse.

    Attributes
    ----------
    nc1 : float
        Within-class variability relative to between-class: ``tr(Σ_W Σ_B⁺) / C``.
    equinorm : float
        NC2, coefficient of variation (std / mean) of the norms of the centred
        class means ``μ_c − μ_G``.
    equiangularity : float
        NC2, standard deviation of the cosines between distinct centred class means.
    simplex_deviation : float
        NC2, mean over class pairs of ``|cos(μ_c − μ_G, μ_c' − μ_G) + 1/(C − 1)|``,
        the distance from a simplex equiangular tight frame.
    nc4 : float or None
        Fraction of samples whose given network prediction *disagrees* with the
        nearest class mean (``None`` without ``predictions``).
    n_classes : int
    """

    nc1: float
    equinorm: float
    equiangularity: float
    simplex_deviation: float
    nc4: float | None
    n_classes: int

    def as_dict(self):
        """The statistics as a plain dict."""
        return asdict(self)


def neural_collapse(Z, y, predictions=None):
    """Neural-collapse measures NC1, NC2 and NC4 of features ``Z`` with labels ``y``.

    With ``μ_c`` the mean of class ``c``, ``μ_G`` the mean of all samples and ``N``
    samples in ``C`` classes (Papyan, Han & Donoho, PNAS 2020):

    * ``Σ_W = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ`` and
      ``Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ``; **NC1** ``= tr(Σ_W Σ_B⁺) / C``.
      ``Σ_B`` has rank at most ``C − 1``, so the trace is computed in its range
      (eigen-directions with eigenvalue above ``max(d, C) · eps`` times the largest)
      without forming any ``d × d`` matrix: memory and time are ``O(N d C)``.
    * **NC2**: equinorm (coefficient of variation of ``‖μ_c − μ_G‖``) and
      equiangularity (std of the pairwise cosines, and their mean distance from
      the simplex value ``−1/(C − 1)``).
    * **NC4**: disagreement between ``predictions`` and the nearest class mean.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
        Representation, e.g. a layer's activations (``EmbeddingExtractor``).
    y : array-like of shape (n_samples,)
        Class labels; at least two classes.
    predictions : array-like of shape (n_samples,) or (n_samples, n_classes), default=None
        The network's predicted labels, or its scores/logits (column ``j`` is the
        ``j``-th class of ``np.unique(y)``; the argmax is taken).

    Returns
    -------
    NeuralCollapse
        Frozen dataclass; ``.as_dict()`` gives a dict.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.metrics import neural_collapse
    >>> means = np.array([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]])  # a 2-D simplex
    >>> y = np.repeat([0, 1, 2], 20)
    >>> Z = means[y] + 1e-3 * np.random.default_rng(0).normal(size=(60, 2))
    >>> nc = neural_collapse(Z, y)
    >>> nc.nc1 < 1e-5, round(nc.simplex_deviation, 2)
    (True, 0.0)
    """
    Z = check_array(Z, dtype=np.float64)
    y = column_or_1d(y)
    check_consistent_length(Z, y)
    check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    C = len(classes)
    if C < 2:
        raise ValueError(
            f"Neural collapse needs at least two classes in y; got 1 class ({classes[0]!r})."
        )

    means = np.stack([Z[y_idx == c].mean(0) for c in range(C)])  # (C, d)
    centred = means - Z.mean(0)  # μ_c − μ_G, rows
    within = Z - means[y_idx]  # z_i − μ_{y_i}

    # Σ_B = Mᵀ M / C with M = centred: its eigenpairs come from the SVD of M.
    _, s, Vt = np.linalg.svd(centred, full_matrices=False)
    eig_b = s**2 / C
    keep = eig_b > eig_b.max() * max(Z.shape[1], C) * np.finfo(np.float64).eps
    # tr(Σ_W Σ_B⁺) = Σ_k (v_kᵀ Σ_W v_k) / λ_k
    projected = within @ Vt[keep].T  # (N, r)
    nc1 = float(((projected**2).mean(0) / eig_b[keep]).sum() / C)

    norms = np.linalg.norm(centred, axis=1)
    equinorm = float(norms.std() / norms.mean())
    unit = centred / norms[:, None]
    cosines = (unit @ unit.T)[np.triu_indices(C, k=1)]
    equiangularity = float(cosines.std())
    simplex_deviation = float(np.abs(cosines + 1.0 / (C - 1)).mean())

    nc4 = None
    if predictions is not None:
        predicted = _predicted_labels(predictions, classes)
        check_consistent_length(Z, predicted)
        nearest = classes[pairwise_distances_argmin(Z, means)]
        nc4 = float(np.mean(nearest != predicted))
    return NeuralCollapse(nc1, equinorm, equiangularity, simplex_deviation, nc4, C)


def _predicted_labels(predictions, classes):
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        if predictions.shape[1] != len(classes):
            raise ValueError(
                f"predictions has {predictions.shape[1]} columns but y has {len(classes)} classes."
            )
        return classes[predictions.argmax(1)]
    return column_or_1d(predictions)


def collapse_onset(probe_or_results, tolerance=0.01, probe="ncc", reference="linear"):
    """The first layer from which the NCC probe is as good as the linear probe, and stays so.

    For each layer the best cross-validated accuracy of ``probe`` and of
    ``reference`` over all probed component counts is taken; the onset is the
    first layer ``l`` such that ``best_reference − best_probe ≤ tolerance`` holds
    at ``l`` **and every later layer**, so a single lucky early layer does not count.
    When nearest class means classify as well as the best affine classifier, the
    class means carry the representation's class information: the "intermediate
    neural collapse" of Harlev et al. (2023).

    Parameters
    ----------
    probe_or_results : PCAProbe or dict of str to ndarray
        A ``PCAProbe`` fitted with ``y``, or its ``probe_results_`` (columns ``layer``,
        ``probe``, ``score_mean``; layers in the order of first appearance). A
        ``pandas.DataFrame`` of it works too.
    tolerance : float, default=0.01
        Largest accuracy gap (absolute) counted as "matching".
    probe, reference : str, default="ncc", "linear"
        Probe names in the results.

    Returns
    -------
    layer : str or None
        The onset layer, or ``None`` when the last layer does not match.

    Examples
    --------
    >>> from sknn_kernels.metrics import collapse_onset
    >>> results = {
    ...     "layer": ["a", "a", "b", "b", "c", "c"],
    ...     "probe": ["ncc", "linear"] * 3,
    ...     "score_mean": [0.70, 0.90, 0.89, 0.90, 0.95, 0.95]}
    >>> collapse_onset(results)
    'b'
    """
    results = as_columns(
        getattr(probe_or_results, "probe_results_", probe_or_results),
        required=("layer", "probe", "score_mean"),
        what="a PCAProbe fitted with y, or its probe_results_",
    )
    layers_col, probe_col = results["layer"], results["probe"]
    scores = results["score_mean"].astype(float)
    for name in (probe, reference):
        if not np.any(probe_col == name):
            raise ValueError(
                f"No {name!r} probe in the results; probes are {sorted(set(probe_col))}."
            )
    layers = list(dict.fromkeys(layers_col))
    gaps = [
        scores[(layers_col == layer) & (probe_col == reference)].max()
        - scores[(layers_col == layer) & (probe_col == probe)].max()
        for layer in layers
    ]
    onset = None
    for layer, gap in zip(reversed(layers), reversed(gaps)):
        if gap > tolerance + 1e-12:  # accuracies are ratios: ignore round-off at the boundary
            break
        onset = layer
    return onset
