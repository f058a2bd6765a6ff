"""Two-sample tests for distribution shift and separability, on samples or embeddings.

Vargas et al. find that the embeddings of foundation models expose distribution shift
(a curated test set that does not come from the training distribution, arXiv 2310.13836)
and separate real from AI-generated content (arXiv 2408.10437). Three views of two sets
``X ~ P`` and ``Y ~ Q``, as raw features, as features of a fitted transformer (e.g.
:class:`~sknn_kernels.EmbeddingExtractor`) or through a kernel of the network
(:class:`~sknn_kernels.NTKFeaturizer`):

* :func:`mmd_test`: the unbiased kernel maximum mean discrepancy with a permutation
  p-value (Gretton et al. 2012);
* :func:`classifier_two_sample_test`: how well a probe tells the two sets apart
  (cross-validated accuracy and ROC AUC), with a permutation p-value (Lopez-Paz & Oquab
  2017);
* :func:`pca_view`: both sets on the principal axes of their union.

Permutation p-values are ``(1 + #{T_b ≥ T}) / (1 + B)``: exactly valid (uniform or
conservative under ``P = Q``) for any sample size.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances, pairwise_kernels
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_array

__all__ = [
    "ClassifierTestResult",
    "MMDResult",
    "classifier_two_sample_test",
    "mmd_test",
    "mmd_test_precomputed",
    "pca_view",
]


@dataclass(frozen=True)
class MMDResult:
    """Outcome of a kernel two-sample test.

    Returned by :func:`mmd_test` and :func:`mmd_test_precomputed`. Each parameter is
    also a read-only attribute of the same name.

    Parameters
    ----------
    statistic : float
        Unbiased estimate of ``MMD²`` (can be slightly negative when ``P = Q``).
    pvalue : float
        Permutation p-value.
    null_distribution : ndarray of shape (n_permutations,)
        The statistic on each permutation of the pooled samples.
    gamma : float or None
        The RBF bandwidth used (``None`` for other kernels).
    """

    statistic: float
    pvalue: float
    null_distribution: np.ndarray
    gamma: float = None


@dataclass(frozen=True)
class ClassifierTestResult:
    """Outcome of a classifier two-sample test.

    Returned by :func:`classifier_two_sample_test`.
    Each parameter is also a read-only attribute of the same name.

    Parameters
    ----------
    accuracy : float
        Cross-validated accuracy of the probe telling ``X`` (label 0) from ``Y`` (1).
    roc_auc : float
        Cross-validated ROC AUC of its out-of-fold scores (0.5: no separation).
    pvalue : float
        Permutation p-value of ``metric``.
    metric : str
        ``"roc_auc"`` or ``"accuracy"``: the statistic the p-value is for.
    null_distribution : ndarray of shape (n_permutations,)
        ``metric`` with the set labels permuted.
    """

    accuracy: float
    roc_auc: float
    pvalue: float
    metric: str
    null_distribution: np.ndarray


def _pooled(X, Y, features):
    X = check_array(X, allow_nd=True)
    Y = check_array(Y, allow_nd=True)
    if X.shape[1:] != Y.shape[1:]:
        raise ValueError(
            f"X and Y must have the same per-sample shape; got {X.shape} and {Y.shape}."
        )
    if len(X) < 2 or len(Y) < 2:
        raise ValueError("Each sample needs at least two points.")
    Z = np.concatenate([X, Y])
    if features is not None:  # e.g. an EmbeddingExtractor: fitted on the pooled samples
        Z = clone(features).fit_transform(Z)
    return check_array(Z, allow_nd=True).reshape(len(Z), -1), len(X)


def _pvalue(observed, null):
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def _mmd2(K, S, diag):
    """Unbiased MMD² for each row of the 0/1 indicator matrix ``S`` (rows: X members)."""
    n = S.sum(axis=1)
    m = K.shape[0] - n
    row, total = K.sum(axis=1), K.sum()
    xx = np.einsum("bi,bi->b", S @ K, S)  # sᵀKs
    xr, xd = S @ row, S @ diag
    s_xx = xx - xd
    s_yy = total - 2 * xr + xx - (diag.sum() - xd)
    s_xy = xr - xx
    return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / (n * m)


def mmd_test_precomputed(K, n_x, *, n_permutations=500, random_state=None, batch_size=64):
    """Kernel two-sample test on a precomputed kernel of the pooled samples.

    Parameters
    ----------
    K : array-like of shape (n_x + n_y, n_x + n_y)
        Symmetric kernel of ``[X; Y]`` (the first ``n_x`` rows are ``X``), e.g.
        ``NTKFeaturizer(net).fit_transform(np.vstack([X, Y]))``.
    n_x : int
        Number of points of the first sample.
    n_permutations : int, default=500
        Number of random relabellings of the pooled points in the null distribution.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations; an int makes the p-value reproducible.
    batch_size : int, default=64
        Permutations evaluated together (memory ``batch_size × (n_x + n_y)``).

    Returns
    -------
    MMDResult
        ``statistic = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)
        − 2/(nm) Σ_{i,j} k(x_i, y_j)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.shift import mmd_test_precomputed
    >>> Z = np.r_[np.zeros((5, 1)), np.ones((5, 1))]
    >>> res = mmd_test_precomputed(Z @ Z.T + 1, 5, n_permutations=99, random_state=0)
    >>> float(res.statistic), res.pvalue < 0.05
    (1.0, True)
    """
    K = check_array(K, dtype=np.float64)
    N = K.shape[0]
    if K.shape != (N, N):
        raise ValueError(f"K must be the square kernel of the pooled samples; got shape {K.shape}.")
    n_x = int(n_x)
    if not 2 <= n_x <= N - 2:
        raise ValueError(
            f"n_x must leave at least two points in each sample; got n_x={n_x}, N={N}."
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive; got {n_permutations}.")
    K = (K + K.T) / 2
    diag = np.diag(K).copy()
    observed = np.zeros((1, N))
    observed[0, :n_x] = 1
    statistic = float(_mmd2(K, observed, diag)[0])
    rng = check_random_state(random_state)
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, batch_size):
        b = min(batch_size, n_permutations - start)
        S = np.zeros((b, N))
        picks = np.argsort(rng.random_sample((b, N)), axis=1)[:, :n_x]
        np.put_along_axis(S, picks, 1.0, axis=1)
        null[start : start + b] = _mmd2(K, S, diag)
    return MMDResult(statistic, _pvalue(statistic, null), null)


def mmd_test(
    X,
    Y,
    *,
    kernel="rbf",
    gamma=None,
    features=None,
    n_permutations=500,
    random_state=None,
    batch_size=64,
):
    """Kernel maximum mean discrepancy test of ``X ~ P`` against ``Y ~ Q``.

    Parameters
    ----------
    X : array-like of shape (n_x, ...)
        Sample from the first distribution ``P``.
    Y : array-like of shape (n_y, ...)
        Sample from the second distribution ``Q``, with the per-sample shape of ``X``.
    kernel : str, callable or transformer, default="rbf"
        * a name of :func:`sklearn.metrics.pairwise_kernels` (``"rbf"``, ``"linear"``,
          ``"cosine"``, ...) applied to the (flattened) samples or their ``features``;
        * a callable ``kernel(A, B) -> (len(A), len(B))`` array;
        * a transformer whose ``fit_transform(Z)`` is the square kernel of ``Z``, such
          as ``NTKFeaturizer(net, kernel="pntk")`` (cloned and fitted on ``[X; Y]``).
    gamma : float, default=None
        RBF bandwidth; ``None`` is the median heuristic ``1 / (2 median ‖z_i − z_j‖²)``
        over the pooled points.
    features : transformer, default=None
        Applied first (cloned, fitted on ``[X; Y]``), e.g.
        ``EmbeddingExtractor(net)`` for a test in a network's embedding space.
    n_permutations : int, default=500
        Number of random relabellings of the pooled points in the null distribution.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations; an int makes the p-value reproducible.
    batch_size : int, default=64
        Permutations evaluated together.

    Returns
    -------
    MMDResult
        The unbiased ``MMD²`` statistic, its permutation p-value, the null
        distribution and the RBF bandwidth used (if any).

    See Also
    --------
    mmd_test_precomputed : The same test from a kernel matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.shift import mmd_test
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 1.0
    >>> mmd_test(X, Y, n_permutations=199, random_state=0).pvalue
    0.005
    """
    Z, n_x = _pooled(X, Y, features if not hasattr(kernel, "fit_transform") else None)
    if features is not None and hasattr(kernel, "fit_transform"):
        raise ValueError("Pass either features= or a kernel transformer, not both.")
    used_gamma = None
    if hasattr(kernel, "fit_transform"):
        K = clone(kernel).fit_transform(np.concatenate([np.asarray(X), np.asarray(Y)]))
    elif callable(kernel):
        K = np.asarray(kernel(Z, Z), dtype=np.float64)
    elif kernel == "rbf":
        if gamma is None:
            sq = pairwise_distances(Z, metric="sqeuclidean")
            median = np.median(sq[np.triu_indices(len(Z), 1)])
            gamma = 1.0 / (2 * median) if median > 0 else 1.0
        used_gamma = float(gamma)
        K = pairwise_kernels(Z, metric="rbf", gamma=used_gamma)
    else:
        params = {} if gamma is None else {"gamma": gamma}
        K = pairwise_kernels(Z, metric=kernel, **params)
    res = mmd_test_precomputed(
        K, n_x, n_permutations=n_permutations, random_state=random_state, batch_size=batch_size
    )
    return MMDResult(res.statistic, res.pvalue, res.null_distribution, used_gamma)


def _oof_scores(estimator, Z, labels, folds):
    """Out-of-fold scores of class 1 and the threshold that turns them into predictions.

    A plain loop rather than ``cross_val_predict``: the permutation test refits the probe
    ``n_permutations × cv`` times and the per-call overhead would dominate.
    """
    method = next(
        (m for m in ("predict_proba", "decision_function") if hasattr(estimator, m)), None
    )
    if method is None:
        raise TypeError("The estimator needs predict_proba or decision_function.")
    scores = np.empty(len(labels))
    for train, test in folds:
        out = getattr(clone(estimator).fit(Z[train], labels[train]), method)(Z[test])
        scores[test] = out[:, 1] if out.ndim == 2 else out
    return scores, 0.5 if method == "predict_proba" else 0.0


def _auc(y, scores):
    """ROC AUC as the Mann–Whitney statistic (ties count one half), without the overhead of
    ``roc_auc_score`` in the permutation loop."""
    positive = y == 1
    n1 = positive.sum()
    n0 = y.size - n1
    return float((rankdata(scores)[positive].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def classifier_two_sample_test(
    X,
    Y,
    *,
    estimator=None,
    features=None,
    cv=5,
    metric="roc_auc",
    n_permutations=100,
    random_state=None,
):
    """Classifier two-sample test: test whether a probe can tell ``X`` from ``Y``.

    The probe is cross-validated on ``[X; Y]`` with labels 0/1 (stratified folds); its
    out-of-fold scores give the accuracy (scores thresholded) and the ROC AUC. The same
    is repeated with the labels permuted for the p-value. Under ``P = Q`` the AUC is
    near 0.5 and the accuracy near the majority share.

    Parameters
    ----------
    X : array-like of shape (n_x, ...)
        First sample (label 0 for the probe).
    Y : array-like of shape (n_y, ...)
        Second sample (label 1), with the per-sample shape of ``X``.
    estimator : classifier, default=None
        ``StandardScaler`` + ``LogisticRegression``: a linear probe.
    features : transformer, default=None
        Applied first (cloned, fitted on ``[X; Y]``), e.g. ``EmbeddingExtractor(net)``.
    cv : int, default=5
        Number of stratified folds.
    metric : {"roc_auc", "accuracy"}, default="roc_auc"
        Statistic of the permutation test.
    n_permutations : int, default=100
        Each one refits the probe ``cv`` times.
    random_state : int, RandomState instance or None, default=None
        Folds and permutations.

    Returns
    -------
    ClassifierTestResult
        Cross-validated accuracy and ROC AUC of the probe, and the permutation p-value
        of ``metric`` with its null distribution.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.shift import classifier_two_sample_test
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 1.5
    >>> res = classifier_two_sample_test(X, Y, cv=3, n_permutations=9, random_state=0)
    >>> res.roc_auc > 0.8, res.pvalue
    (True, 0.1)
    """
    if metric not in ("roc_auc", "accuracy"):
        raise ValueError(f"metric must be 'roc_auc' or 'accuracy'; got {metric!r}.")
    Z, n_x = _pooled(X, Y, features)
    labels = np.r_[np.zeros(n_x, dtype=int), np.ones(len(Z) - n_x, dtype=int)]
    if min(n_x, len(Z) - n_x) < cv:
        raise ValueError(f"Each sample needs at least cv={cv} points.")
    estimator = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        if estimator is None
        else estimator
    )
    rng = check_random_state(random_state)
    # folds stratified for each labelling (permuted ones included), so that observed and
    # permuted statistics come from the same procedure
    splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=rng.randint(2**31 - 1))

    def evaluate(y):
        scores, threshold = _oof_scores(estimator, Z, y, splitter.split(Z, y))
        return float(np.mean((scores > threshold) == y)), _auc(y, scores)

    accuracy, auc = evaluate(labels)
    pick = 1 if metric == "roc_auc" else 0
    null = np.array([evaluate(rng.permutation(labels))[pick] for _ in range(n_permutations)])
    observed = auc if metric == "roc_auc" else accuracy
    return ClassifierTestResult(accuracy, auc, _pvalue(observed, null), metric, null)


def pca_view(X, Y, *, n_components=2, features=None):
    """Both samples projected on the principal axes of their union.

    Parameters
    ----------
    X : array-like of shape (n_x, ...)
        First sample.
    Y : array-like of shape (n_y, ...)
        Second sample, with the per-sample shape of ``X``.
    n_components : int, default=2
        Number of principal axes kept.
    features : transformer, default=None
        Applied first (cloned, fitted on ``[X; Y]``), e.g. ``EmbeddingExtractor(net)``.

    Returns
    -------
    view : Bunch
        ``X`` (n_x, n_components) and ``Y`` (n_y, n_components) scores,
        ``explained_variance_ratio`` and the fitted ``pca``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.shift import pca_view
    >>> rng = np.random.default_rng(0)
    >>> view = pca_view(rng.normal(size=(30, 5)), rng.normal(size=(20, 5)) + 3)
    >>> view.X.shape, view.Y.shape, bool(view.explained_variance_ratio[0] > 0.5)
    ((30, 2), (20, 2), True)
    """
    Z, n_x = _pooled(X, Y, features)
    pca = PCA(n_components=n_components).fit(Z)
    scores = pca.transform(Z)
    return Bunch(
        X=scores[:n_x],
        Y=scores[n_x:],
        explained_variance_ratio=pca.explained_variance_ratio_,
        pca=pca,
    )
