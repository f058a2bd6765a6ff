"""Mislabelled-sample detection by self-attribution."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._poison import rank_auc


def flip_labels(y, fraction, *, random_state=None):
    """Give exactly ``round(fraction * n)`` samples a wrong label, uniform over the other classes.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Clean labels (at least two classes).
    fraction : float in (0, 1]
        Fraction of samples to flip.
    random_state : int, RandomState instance or None, default=None
        Which samples are flipped and their new labels; an int makes it reproducible.

    Returns
    -------
    y_noisy : ndarray of shape (n_samples,)
        A copy of ``y`` with the chosen samples relabelled.
    flipped : ndarray of bool, shape (n_samples,)
        True for the samples whose label was changed.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import flip_labels
    >>> y = np.arange(20) % 4
    >>> y_noisy, flipped = flip_labels(y, 0.1, random_state=0)
    >>> int(flipped.sum()), bool(np.all(y_noisy[flipped] != y[flipped]))
    (2, True)
    """
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError("flip_labels needs at least two classes.")
    if not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1]; got {fraction!r}.")
    n_flip = int(round(fraction * len(y)))  # noqa: RUF046 - numpy floats
    if n_flip < 1:
        raise ValueError(f"fraction={fraction} of {len(y)} samples flips none; increase it.")
    rng = check_random_state(random_state)
    chosen = rng.choice(len(y), size=n_flip, replace=False)
    # shift each chosen label by 1..C-1 places: uniform over the other classes
    idx = np.searchsorted(classes, y[chosen])
    shift = rng.randint(1, len(classes), size=n_flip)
    y_noisy = y.copy()
    y_noisy[chosen] = classes[(idx + shift) % len(classes)]
    flipped = np.zeros(len(y), dtype=bool)
    flipped[chosen] = True
    return y_noisy, flipped


def self_attribution(estimator, X, y, *, batch_size=256):
    """Attribution of each training sample to the logit of its own label at itself.

    ``score[i] = estimator.attribute(X[i:i+1], target=y[i:i+1])[0, i]``, computed in row
    blocks, for any fitted estimator with the ``attribute(X, target=...)`` interface of
    :class:`~sknn_kernels.KernelSurrogateClassifier` (pass the square training kernel as
    ``X``) or :class:`~sknn_kernels.attribution.influence.InfluenceAttributor` (pass the training
    inputs). A sample whose label disagrees with what the rest of the data say needs a large
    weight of its own to be fitted, so mislabelled samples rank high (the self-influence
    score used by TracIn and TRAK for the same task). For a kGLM this holds with
    ``penalty="rkhs"``: by the representer theorem its weight ``coef_[c, i]`` is then
    proportional to the loss gradient of sample ``i``; the default ``"l2"`` penalty smooths
    the weights over neighbours, and an underfitted mislabelled sample can even get a
    negative score.

    Parameters
    ----------
    estimator : fitted estimator with ``attribute``
        E.g. a fitted :class:`~sknn_kernels.KernelSurrogateClassifier` or
        :class:`~sknn_kernels.attribution.influence.InfluenceAttributor`.
    X : array-like of shape (n_train, ...)
        The estimator's input for its own training samples, in training order.
    y : array-like of shape (n_train,)
        The (possibly noisy) training labels it was fitted on.
    batch_size : int, default=256
        Rows attributed at once (memory ``batch_size * n_train``).

    Returns
    -------
    scores : ndarray of shape (n_train,)
        Self-attribution of each training sample; larger means more suspicious.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from sknn_kernels import KernelSurrogateClassifier
    >>> from sknn_kernels.attribution.evaluation import self_attribution
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 0.3, (6, 2)), rng.normal(2, 0.3, (6, 2))]
    >>> y = np.repeat([0, 1], 6)
    >>> y[2] = 1  # a mislabelled sample
    >>> K = rbf_kernel(X, X)
    >>> clf = KernelSurrogateClassifier(alpha=1e-2, penalty="rkhs", device="cpu").fit(K, y)
    >>> int(np.argmax(self_attribution(clf, K, y)))
    2
    """
    y = np.asarray(y)
    n = len(y)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows but y has {n} labels.")
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    scores = np.empty(n)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        A = np.asarray(estimator.attribute(X[rows], target=y[rows]))
        if A.shape != (len(rows), n):
            raise ValueError(
                f"attribute() returned shape {A.shape}; expected ({len(rows)}, {n}): X must be "
                "the estimator's own training data."
            )
        scores[rows] = A[np.arange(len(rows)), rows]
    return scores


def mislabel_detection(scores, flipped, *, inspect_fraction=0.1):
    """How well a score ranks the mislabelled training samples first.

    Parameters
    ----------
    scores : array-like of shape (n_train,)
        Larger means more suspicious, e.g. :func:`self_attribution`.
    flipped : array-like of bool, shape (n_train,)
        True for the mislabelled samples (from :func:`flip_labels`).
    inspect_fraction : float in (0, 1], default=0.1
        Fraction of the training set inspected, highest scores first.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``auc`` (ROC AUC of the score as a detector of flipped labels),
        ``found_fraction`` (share of the flipped samples among the ``n_inspected``
        highest scores, the "fraction detected" of dattri and kronfluence),
        ``precision`` (share of flipped samples among those inspected) and
        ``n_inspected = ceil(inspect_fraction * n_train)``. Ties are broken by index.

    Examples
    --------
    >>> from sknn_kernels.attribution.evaluation import mislabel_detection
    >>> r = mislabel_detection([5, 1, 4, 2, 3], [True, False, False, True, False],
    ...                        inspect_fraction=0.4)
    >>> float(r.auc), float(r.found_fraction), r.n_inspected
    (0.6666666666666666, 0.5, 2)
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    flipped = np.asarray(flipped, dtype=bool).ravel()
    if scores.shape != flipped.shape:
        raise ValueError(f"scores {scores.shape} and flipped {flipped.shape} differ in shape.")
    if not 0 < flipped.sum() < len(flipped):
        raise ValueError("flipped must mark some, but not all, samples.")
    if not isinstance(inspect_fraction, Real) or not 0 < inspect_fraction <= 1:
        raise ValueError(f"inspect_fraction must be in (0, 1]; got {inspect_fraction!r}.")
    n_inspected = int(np.ceil(inspect_fraction * len(scores) - 1e-9))
    top = np.argsort(-scores, kind="stable")[:n_inspected]
    hits = flipped[top].sum()
    return Bunch(
        auc=float(rank_auc(scores, flipped)[0]),
        found_fraction=float(hits / flipped.sum()),
        precision=float(hits / n_inspected),
        n_inspected=n_inspected,
    )
