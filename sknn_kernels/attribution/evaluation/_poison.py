"""Backdoor poisoning: plant a trigger, then score models and attributions against it."""

from numbers import Integral, Real

import numpy as np
from scipy.stats import rankdata
from sklearn.utils import Bunch, check_random_state

_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def add_trigger(
    X, trigger="patch", *, input_shape=None, patch_size=3, value=1.0, corner="bottom-right"
):
    """A copy of ``X`` with a backdoor trigger in every sample.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples, *sample_shape)
        Inputs: flat features, images as 2-D rows (give ``input_shape``) or N-D arrays.
    trigger : "patch" or callable, default="patch"
        ``"patch"``: set a ``patch_size x patch_size`` square in ``corner`` of the last two
        axes of each sample (all channels) to ``value``; for flat features without
        ``input_shape``, ``patch_size`` features (the last ones for a right corner, the
        first ones for a left corner). A callable receives the samples with their
        per-sample shape, ``(n, *input_shape)``, and returns an array of the same shape.
    input_shape : tuple of int, default=None
        Per-sample shape of 2-D ``X``, e.g. ``(1, 28, 28)``; ``(H, W)`` works too.
    patch_size : int, default=3
        Side of the square (number of features for flat inputs).
    value : float, default=1.0
        Value written into the patch (the brightest pixel of images scaled to [0, 1]). Use
        the same value for training and test samples.
    corner : {"bottom-right", "bottom-left", "top-right", "top-left"}, default="bottom-right"
        Corner of the last two axes of each sample where the patch goes.

    Returns
    -------
    X_triggered : ndarray with the shape of ``X``
        A new array: ``X`` with the trigger applied to every sample (``X`` is unchanged).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import add_trigger
    >>> X = np.zeros((2, 16))
    >>> add_trigger(X, input_shape=(4, 4), patch_size=2)[0].reshape(4, 4)
    array([[0., 0., 0., 0.],
           [0., 0., 0., 0.],
           [0., 0., 1., 1.],
           [0., 0., 1., 1.]])
    """
    X = np.array(X, copy=True)
    if X.ndim < 2:
        raise ValueError(f"X must be 2-D or N-D with one sample per row; got shape {X.shape}.")
    shape = _sample_shape(X, input_shape)
    images = X.reshape((len(X), *shape))
    if callable(trigger):
        out = np.asarray(trigger(images.copy()))
        if out.shape != images.shape:
            raise ValueError(
                f"The trigger function returned shape {out.shape}; it must return the shape "
                f"it received, {images.shape}."
            )
        return out.reshape(X.shape).astype(X.dtype, copy=False)
    if trigger != "patch":
        raise ValueError(f"trigger must be 'patch' or a callable; got {trigger!r}.")
    if corner not in _CORNERS:
        raise ValueError(f"corner must be one of {_CORNERS}; got {corner!r}.")
    if not isinstance(patch_size, Integral) or patch_size < 1 or patch_size > min(shape[-2:]):
        raise ValueError(
            f"patch_size must be an integer in [1, {min(shape[-2:])}] for samples of shape "
            f"{shape}; got {patch_size!r}."
        )
    rows = slice(-patch_size, None) if corner.startswith("bottom") else slice(0, patch_size)
    cols = slice(-patch_size, None) if corner.endswith("right") else slice(0, patch_size)
    if len(shape) == 1:
        images[:, cols] = value
    else:
        images[..., rows, cols] = value
    return images.reshape(X.shape)


def _sample_shape(X, input_shape):
    if input_shape is None:
        return tuple(X.shape[1:])
    shape = tuple(int(s) for s in input_shape)
    if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
        raise ValueError(f"input_shape={shape} does not hold the {X.shape[1:]} values of a sample.")
    return shape


def poison(
    X,
    y,
    fraction,
    target_class,
    *,
    trigger="patch",
    input_shape=None,
    patch_size=3,
    value=1.0,
    corner="bottom-right",
    random_state=None,
):
    """Plant a backdoor: trigger ``fraction`` of the samples and relabel them ``target_class``.

    Exactly ``round(fraction * n_samples)`` samples are poisoned, drawn uniformly among those
    whose label is not ``target_class`` (relabelling a sample of the target class would
    teach nothing).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples, *sample_shape)
        Training inputs.
    y : array-like of shape (n_samples,)
        Training labels.
    fraction : float in (0, 1]
        Fraction of *all* samples to poison, e.g. 0.01.
    target_class : label
        The class the trigger should send a sample to.
    trigger : "patch" or callable, default="patch"
        How the trigger is drawn: see :func:`add_trigger`. Use the same trigger
        arguments (this one and the next four) on test samples.
    input_shape : tuple of int, default=None
        Per-sample shape of 2-D ``X``: see :func:`add_trigger`.
    patch_size : int, default=3
        Side of the square patch: see :func:`add_trigger`.
    value : float, default=1.0
        Value written into the patch: see :func:`add_trigger`.
    corner : {"bottom-right", "bottom-left", "top-right", "top-left"}, default="bottom-right"
        Corner where the patch goes: see :func:`add_trigger`.
    random_state : int, RandomState instance or None, default=None
        Which samples are poisoned.

    Returns
    -------
    X_poisoned : ndarray with the shape of ``X``
        A copy of ``X`` with the trigger in the poisoned samples.
    y_poisoned : ndarray of shape (n_samples,)
        A copy of ``y`` with the poisoned samples relabelled ``target_class``.
    mask : ndarray of bool, shape (n_samples,)
        True for the poisoned samples.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import poison
    >>> X, y = np.zeros((100, 4, 4)), np.arange(100) % 5
    >>> Xp, yp, mask = poison(X, y, 0.05, target_class=0, patch_size=2, random_state=0)
    >>> int(mask.sum()), set(yp[mask].tolist()), float(Xp[mask][:, -2:, -2:].min())
    (5, {0}, 1.0)
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}.")
    if not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1]; got {fraction!r}.")
    if target_class not in set(np.unique(y).tolist()):
        raise ValueError(f"target_class {target_class!r} is not a label of y.")
    n_poison = int(round(fraction * len(y)))  # noqa: RUF046 - numpy floats
    candidates = np.flatnonzero(y != target_class)
    if n_poison < 1:
        raise ValueError(f"fraction={fraction} of {len(y)} samples poisons none; increase it.")
    if n_poison > len(candidates):
        raise ValueError(
            f"fraction={fraction} asks for {n_poison} poisoned samples but only "
            f"{len(candidates)} are not of the target class."
        )
    chosen = check_random_state(random_state).choice(candidates, size=n_poison, replace=False)
    mask = np.zeros(len(y), dtype=bool)
    mask[chosen] = True
    X_poisoned = np.array(X, copy=True)
    X_poisoned[mask] = add_trigger(
        X[mask], trigger, input_shape=input_shape, patch_size=patch_size, value=value, corner=corner
    )
    y_poisoned = y.copy()
    y_poisoned[mask] = target_class
    return X_poisoned, y_poisoned, mask


def attack_success(y_pred, target_class, y_true=None):
    """Fraction of triggered samples predicted as ``target_class``.

    Parameters
    ----------
    y_pred : array-like of shape (n_samples,)
        Predictions of a model (network or surrogate) on triggered samples.
    target_class : label
        The backdoor's target.
    y_true : array-like of shape (n_samples,), default=None
        Clean labels; samples whose true class is already ``target_class`` are left out.

    Returns
    -------
    rate : float
        NaN when no sample is left.

    Examples
    --------
    >>> from sknn_kernels.attribution.evaluation import attack_success
    >>> attack_success([0, 0, 1, 0], target_class=0, y_true=[1, 2, 2, 0])
    0.6666666666666666
    """
    y_pred = np.asarray(y_pred)
    keep = (
        np.ones(len(y_pred), dtype=bool) if y_true is None else np.asarray(y_true) != target_class
    )
    if not keep.any():
        return float("nan")
    return float(np.mean(y_pred[keep] == target_class))


def poison_recall(attributions, poison_mask, *, k=10, y_pred=None, target_class=None):
    """Score how well attributions of triggered samples point at the poisoned training samples.

    For each explained sample (a row of ``attributions``; with ``y_pred`` and
    ``target_class``, only the samples the model sends to the target class), the training
    samples are ranked by attribution, largest first:

    * ``precision@k``: fraction of poisoned samples among the top ``k`` proponents;
    * ``recall@k``: fraction of all poisoned samples found in the top ``k``;
    * ``AUC``: probability that a poisoned sample has a larger attribution than a clean
      one (ties count one half), i.e. the ROC AUC of attribution as a poison detector.

    Parameters
    ----------
    attributions : array-like of shape (n_test, n_train)
        Attribution of each training sample to each (triggered) test prediction, larger
        meaning more support.
    poison_mask : array-like of bool, shape (n_train,)
        The mask returned by :func:`poison`.
    k : int, default=10
        Number of top proponents inspected (ties broken by training index).
    y_pred : array-like of shape (n_test,), default=None
        The model's predictions on the triggered samples.
    target_class : label, default=None
        With ``y_pred``: score only rows with ``y_pred == target_class``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``precision_at_k``, ``recall_at_k``, ``auc`` (means over the scored rows, NaN
        when there is none), ``precision``, ``recall``, ``aucs`` (per scored row),
        ``rows`` (indices of the scored rows) and ``k``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import poison_recall
    >>> A = np.array([[0.9, 0.1, 0.8, 0.2]])
    >>> r = poison_recall(A, [True, False, False, True], k=2)
    >>> float(r.precision_at_k), float(r.recall_at_k), float(r.auc)
    (0.5, 0.5, 0.75)
    """
    A = np.asarray(attributions, dtype=np.float64)
    mask = np.asarray(poison_mask, dtype=bool)
    if A.ndim != 2 or A.shape[1] != len(mask):
        raise ValueError(
            f"attributions must be (n_test, n_train={len(mask)}); got shape {A.shape}."
        )
    if not 0 < mask.sum() < len(mask):
        raise ValueError("poison_mask must mark some, but not all, training samples.")
    if not isinstance(k, Integral) or not 1 <= k <= len(mask):
        raise ValueError(f"k must be an integer in [1, n_train={len(mask)}]; got {k!r}.")
    rows = np.arange(len(A))
    if y_pred is not None or target_class is not None:
        if y_pred is None or target_class is None:
            raise ValueError("Give both y_pred and target_class, or neither.")
        rows = np.flatnonzero(np.asarray(y_pred) == target_class)
    A = A[rows]
    top = np.argsort(-A, axis=1, kind="stable")[:, :k]
    hits = mask[top].sum(axis=1)
    precision, recall = hits / k, hits / mask.sum()
    aucs = rank_auc(A, mask)
    nan = float("nan")
    return Bunch(
        precision_at_k=float(precision.mean()) if len(rows) else nan,
        recall_at_k=float(recall.mean()) if len(rows) else nan,
        auc=float(aucs.mean()) if len(rows) else nan,
        precision=precision,
        recall=recall,
        aucs=aucs,
        rows=rows,
        k=int(k),
    )


def rank_auc(scores, positive):
    """ROC AUC of each row of ``scores`` (n_rows, n) for the boolean labels ``positive`` (n,).

    The Mann-Whitney form with average ranks, so ties count one half (as
    :func:`sklearn.metrics.roc_auc_score`); one sort per row instead of a Python loop.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if scores.shape[0] == 0:
        return np.empty(0)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
