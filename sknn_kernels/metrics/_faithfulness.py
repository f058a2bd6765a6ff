"""How faithfully a surrogate reproduces a network (Engel et al. 2024, section "faithfulness").

Probability-based metrics compare the two models' probabilities of the *true* class of
each test point; label-based ones compare their predictions. Arguments always come in
the order ``(y_true, network, surrogate)``.
"""

import warnings
from collections import namedtuple

import numpy as np
import torch
from scipy.stats import binom, kendalltau
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.validation import (
    _check_sample_weight,
    check_consistent_length,
    column_or_1d,
)

from ..network._base import check_network_inputs, make_adapter

__all__ = [
    "accuracy_difference",
    "kendall_faithfulness",
    "logit_r2",
    "make_faithfulness_scorer",
    "misclassification_overlap",
    "network_outputs",
    "network_proba",
]

OverlapResult = namedtuple("OverlapResult", ["jaccard", "pvalue"])


def network_outputs(
    network,
    X,
    kind="logits",
    *,
    device="auto",
    batch_size=256,
    input_shape=None,
    network_output=None,
):
    """Outputs of a network on ``X``: raw outputs (logits) or class probabilities.

    The one place where the package runs a network forward for its *outputs*: the
    faithfulness metrics and scorers, and the kernel estimators' distillation targets
    (``target="network"``/``"logits"``) all call it.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The network; a private eval-mode copy is used.
    X : array-like of shape (n_samples, ...), or dict of them
        Network inputs: float arrays, integer arrays (token ids, kept integer), or a dict /
        skorch ``SliceDict`` of named inputs passed as keyword arguments.
    kind : {"logits", "proba"}, default="logits"
        ``"logits"``: the raw outputs as a 2-D array (the logits of a classifier, the
        predictions of a regression network). ``"proba"``: softmax of the logits, or
        ``[1 - p, p]`` with ``p = sigmoid(output)`` for a single-output network.
    device : str, default="auto"
        Where the forward passes run.
    batch_size : int, default=256
        Samples per forward pass.
    input_shape : tuple of int, default=None
        Per-sample shape to reshape a 2-D ``X`` into.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits (see
        :class:`~sknn_kernels.EmbeddingExtractor`): default the tensor, the first of a tuple or
        the ``"logits"`` entry of a dict / ``ModelOutput``.

    Returns
    -------
    outputs : ndarray of shape (n_samples, n_outputs)
        Float64; for ``kind="proba"``, ``n_outputs`` is the number of classes (2 for a
        single-output network).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.metrics import network_outputs
    >>> net = torch.nn.Linear(3, 1)
    >>> network_outputs(net, np.ones((5, 3)), device="cpu").shape
    (5, 1)
    >>> network_outputs(net, np.ones((5, 3)), kind="proba", device="cpu").shape
    (5, 2)
    """
    if kind not in ("logits", "proba"):
        raise ValueError(f"kind must be 'logits' or 'proba'; got {kind!r}.")
    adapter = make_adapter(
        network,
        device=device,
        batch_size=batch_size,
        input_shape=input_shape,
        output=network_output,
    )
    logits = adapter.predict(check_network_inputs(X)).double()
    logits = logits.reshape(len(logits), -1)
    if kind == "logits":
        return logits.numpy()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1).numpy()
    return torch.softmax(logits, dim=1).numpy()


def network_proba(
    network, X, *, device="auto", batch_size=256, input_shape=None, network_output=None
):
    """Class probabilities of a network: ``network_outputs(..., kind="proba")``.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The network, run as by :func:`network_outputs`.
    X : array-like of shape (n_samples, ...), or dict of them
        Network inputs (see :func:`network_outputs`).
    device : str, default="auto"
        Where the forward passes run.
    batch_size : int, default=256
        Samples per forward pass.
    input_shape : tuple of int, default=None
        Per-sample shape to reshape a 2-D ``X`` into.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits (see :func:`network_outputs`).

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)
        Float64 probabilities; a single-output network gives two columns
        ``[1 - p, p]``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.metrics import network_proba
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    >>> P = network_proba(net, np.ones((5, 3)), device="cpu")
    >>> P.shape, bool(np.allclose(P.sum(axis=1), 1))
    ((5, 3), True)
    """
    return network_outputs(
        network,
        X,
        "proba",
        device=device,
        batch_size=batch_size,
        input_shape=input_shape,
        network_output=network_output,
    )


def _check_proba(proba, name):
    """Probabilities: finite, in [0, 1], rows summing to 1 (2-D); float32 rounding allowed."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be (n_samples, n_classes) probabilities or a 1-D array of P(labels[1]); "
            f"got shape {proba.shape}."
        )
    if not np.isfinite(proba).all():
        raise ValueError(f"{name} contains NaN or infinity: pass class probabilities.")
    if proba.size and (proba.min() < 0 or proba.max() > 1):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {proba.min():.3g}, max {proba.max():.3g}): "
            "pass probabilities (predict_proba, or network_proba), not logits or scores."
        )
    if proba.ndim == 2:
        sums = proba.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > 1e-3)
        if off.size:
            raise ValueError(
                f"The rows of {name} must sum to 1; {off.size} do not (first at index "
                f"{off[0]}, sum {sums[off[0]]:.4g}): pass every class's probability, or a 1-D "
                "array of P(labels[1]) for a binary problem."
            )
    return proba


def _true_class_proba(y_true, proba, labels, name="proba"):
    """Probability of each point's true class; ``proba`` (n,) is P(labels[1])."""
    y_true = column_or_1d(y_true)
    proba = _check_proba(proba, name)
    if proba.ndim == 1:
        proba = np.column_stack([1 - proba, proba])
    check_consistent_length(y_true, proba)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    if labels.shape != (proba.shape[1],):
        raise ValueError(
            f"The probabilities have {proba.shape[1]} columns but there are {labels.size} "
            "labels: pass labels= (the classes scored by the columns, e.g. clf.classes_)."
        )
    sorter = np.argsort(labels)
    pos = np.clip(np.searchsorted(labels, y_true, sorter=sorter), 0, labels.size - 1)
    col = sorter[pos]
    if not np.array_equal(labels[col], y_true):
        raise ValueError("y_true contains labels that are not in `labels`.")
    return proba[np.arange(len(y_true)), col]


def _positive_proba(y_true, proba, labels, name="proba"):
    """Probability of the positive class ``labels[1]`` of a binary problem."""
    y_true = column_or_1d(y_true)
    proba = _check_proba(proba, name)
    proba = proba if proba.ndim == 1 else proba[:, -1] if proba.shape[1] == 2 else None
    if proba is None or (labels is not None and len(labels) != 2):
        raise ValueError("target='positive' is defined for binary problems only.")
    check_consistent_length(y_true, proba)
    return proba


def _paired_true_class(
    y_true, proba_network, proba_surrogate, labels, drop_saturated, target="true_class"
):
    if target not in ("true_class", "positive"):
        raise ValueError(f"target must be 'true_class' or 'positive'; got {target!r}.")
    scored = _true_class_proba if target == "true_class" else _positive_proba
    p_net = scored(y_true, proba_network, labels, "proba_network")
    p_sur = scored(y_true, proba_surrogate, labels, "proba_surrogate")
    n_given = p_net.size
    if drop_saturated:  # exactly 0 or 1 in either model carries no rank information
        keep = (p_net > 0) & (p_net < 1) & (p_sur > 0) & (p_sur < 1)
        p_net, p_sur = p_net[keep], p_sur[keep]
    reason = None
    if p_net.size < 2:
        reason = (
            f"{p_net.size} point(s) left of {n_given}"
            + (
                f" after dropping {n_given - p_net.size} saturated one(s) (a probability of "
                "exactly 0 or 1 in either model; pass drop_saturated=False to keep them)"
                if n_given > p_net.size
                else ""
            )
            + "; it needs at least 2"
        )
    elif np.ptp(p_net) == 0 or np.ptp(p_sur) == 0:
        reason = "one model gives every point the same probability, so there is no order"
    return p_net, p_sur, reason


def _undefined(metric, reason):
    """Warn that ``metric`` is NaN and why; return NaN."""
    warnings.warn(f"{metric} is undefined (NaN): {reason}.", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def kendall_faithfulness(
    y_true, proba_network, proba_surrogate, *, labels=None, drop_saturated=True, target="true_class"
):
    """Kendall tau between the network's and the surrogate's true-class probabilities.

    The paper's headline faithfulness metric: tau = 1 when a monotone map takes one
    model's confidence in the correct class to the other's. One tau per test set,
    not flattened over classes (scipy's tau-b, which handles ties).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    proba_network, proba_surrogate : array-like of shape (n_samples, n_classes) or (n_samples,)
        Class probabilities, columns ordered as ``labels``; a 1-D array is the
        probability of ``labels[1]`` (binary problems).
    labels : array-like of shape (n_classes,), default=None
        Classes of the columns; default ``np.unique(y_true)`` (pass ``clf.classes_``
        when a test set may miss a class).
    drop_saturated : bool, default=True
        Drop points where either probability is exactly 0 or 1, as the paper does.
    target : {"true_class", "positive"}, default="true_class"
        Which probability is ranked: each point's true class (the metric the paper
        describes), or, for binary problems, the positive class ``labels[1]`` pooled over
        both classes — what the authors' table code computes for their binary models.
        The positive-class tau also counts the agreement on *which* class a point is in,
        so it is much higher; use it only to compare with those tables.

    Returns
    -------
    tau : float
        Kendall tau-b; NaN, with an ``UndefinedMetricWarning`` saying why, if fewer than
        two points remain or one model's probabilities are all equal.

    Examples
    --------
    >>> from sknn_kernels.metrics import kendall_faithfulness
    >>> y = [0, 1, 1, 0]
    >>> p_net = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]
    >>> p_sur = [[0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.55, 0.45]]
    >>> float(kendall_faithfulness(y, p_net, p_sur))
    1.0
    """
    p_net, p_sur, reason = _paired_true_class(
        y_true, proba_network, proba_surrogate, labels, drop_saturated, target
    )
    if reason is not None:
        return _undefined("Kendall tau", reason)
    return float(kendalltau(p_net, p_sur).statistic)


def logit_r2(y_true, proba_network, proba_surrogate, *, labels=None):
    """R^2 of a linear fit of the network's true-class logits on the surrogate's.

    Both true-class probabilities are mapped through ``log(p / (1 - p))`` (points
    saturated at exactly 0 or 1 are dropped), the network's logit is regressed on the
    surrogate's by least squares with an intercept, and :func:`sklearn.metrics.r2_score`
    scores the fit. A secondary metric: outlying "anchor" points inflate it.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    proba_network, proba_surrogate : array-like of shape (n_samples, n_classes) or (n_samples,)
        As in :func:`kendall_faithfulness`.
    labels : array-like of shape (n_classes,), default=None
        As in :func:`kendall_faithfulness`.

    Returns
    -------
    r2 : float
        Coefficient of determination; NaN, with an ``UndefinedMetricWarning`` saying why,
        if fewer than two points remain or one model's probabilities are all equal.

    Examples
    --------
    >>> from sknn_kernels.metrics import logit_r2
    >>> y = [0, 1, 1]
    >>> p = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]
    >>> round(logit_r2(y, p, p), 6)
    1.0
    """
    p_net, p_sur, reason = _paired_true_class(y_true, proba_network, proba_surrogate, labels, True)
    if reason is not None:
        return _undefined("The logit R^2", reason)
    z_net, z_sur = np.log(p_net / (1 - p_net)), np.log(p_sur / (1 - p_sur))
    slope, offset = np.polyfit(z_sur, z_net, deg=1)
    return float(r2_score(z_net, slope * z_sur + offset))


def accuracy_difference(y_true, pred_network, pred_surrogate, *, sample_weight=None):
    """Test accuracy differential: ``accuracy(surrogate) - accuracy(network)`` (TAD).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    pred_network, pred_surrogate : array-like of shape (n_samples,)
        Predicted labels.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    tad : float
        Positive when the surrogate is more accurate than the network.

    Examples
    --------
    >>> from sknn_kernels.metrics import accuracy_difference
    >>> accuracy_difference([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0])
    0.25
    """
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, column_or_1d(y_true), ensure_non_negative=True
        )
    acc_sur = accuracy_score(y_true, pred_surrogate, sample_weight=sample_weight)
    acc_net = accuracy_score(y_true, pred_network, sample_weight=sample_weight)
    return float(acc_sur - acc_net)


def misclassification_overlap(y_true, pred_network, pred_surrogate):
    """Jaccard index of the two models' errors and its p-value under independence.

    ``jaccard = |E_net & E_sur| / |E_net | E_sur|`` with ``E`` the misclassified points.
    The p-value follows the paper's code: with ``W = |E_net|``, ``Omega = |E_sur|``
    and ``N`` points, ``P_both = Omega * W / N**2`` and
    ``pvalue = 1 - BinomCDF(W * jaccard; W, P_both)`` (the CDF at the floor of
    ``W * jaccard``); small values mean the errors overlap more than chance.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    pred_network, pred_surrogate : array-like of shape (n_samples,)
        Predicted labels.

    Returns
    -------
    result : OverlapResult
        Named tuple ``(jaccard, pvalue)``; both NaN, with an ``UndefinedMetricWarning``,
        when neither model errs.

    Examples
    --------
    >>> from sknn_kernels.metrics import misclassification_overlap
    >>> res = misclassification_overlap([0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0])
    >>> float(res.jaccard)
    0.5
    """
    y_true, pred_network, pred_surrogate = (
        column_or_1d(a) for a in (y_true, pred_network, pred_surrogate)
    )
    check_consistent_length(y_true, pred_network, pred_surrogate)
    wrong_net, wrong_sur = pred_network != y_true, pred_surrogate != y_true
    n_either = np.sum(wrong_net | wrong_sur)
    if n_either == 0:
        nan = _undefined("The misclassification overlap", "neither model misclassifies a point")
        return OverlapResult(nan, nan)
    jaccard = np.sum(wrong_net & wrong_sur) / n_either
    W, Omega, N = wrong_net.sum(), wrong_sur.sum(), y_true.size
    p_both = Omega * W / N**2
    pvalue = 1.0 - binom.cdf(W * jaccard, W, p_both)
    return OverlapResult(float(jaccard), float(pvalue))


_METRICS = {"kendall", "accuracy_difference", "logit_r2", "overlap"}


class _NetworkScorer:
    """Scorer ``(estimator, X, y) -> float`` that runs the network on the scored ``X``.

    A NaN score is never silent: one ``UndefinedMetricWarning`` says why (the metric's
    reason) and what it does to a cross-validation mean.
    """

    def __init__(self, network, metric, network_options, **params):
        self.network = network
        self.metric = metric
        self.network_options = network_options  # network_outputs' device, batch_size, ...
        self.params = params

    def __repr__(self):
        return f"{self._factory}(<network>, metric={self.metric!r})"

    def __call__(self, estimator, X, y, sample_weight=None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            score = self._score(estimator, X, y, sample_weight)
        reasons = []
        for w in caught:  # the metric's reason goes into one warning; others pass through
            if issubclass(w.category, UndefinedMetricWarning):
                reasons.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if np.isnan(score):
            warnings.warn(
                f"The {self._factory} score (metric={self.metric!r}) is NaN on these "
                f"{len(y)} samples ({' '.join(reasons) or 'undefined metric'}) A "
                "cross-validation mean over it is NaN too, and GridSearchCV ranks the "
                "candidate last: use folds with more samples.",
                UndefinedMetricWarning,
                stacklevel=2,
            )
        return score


def network_options(device, batch_size, input_shape, network_output):
    """The keyword arguments a scorer passes to :func:`network_outputs`."""
    return {
        "device": device,
        "batch_size": batch_size,
        "input_shape": input_shape,
        "network_output": network_output,
    }


class _FaithfulnessScorer(_NetworkScorer):
    _factory = "make_faithfulness_scorer"

    def _score(self, estimator, X, y, sample_weight):
        P_net = network_proba(self.network, X, **self.network_options)
        labels = estimator.classes_
        if P_net.shape[1] != len(labels):
            raise ValueError(
                f"The network scores {P_net.shape[1]} classes but the estimator has "
                f"{len(labels)}: network output column j must score classes_[j]."
            )
        if self.metric == "kendall":
            P_sur = estimator.predict_proba(X)
            return kendall_faithfulness(y, P_net, P_sur, labels=labels, **self.params)
        if self.metric == "logit_r2":
            return logit_r2(y, P_net, estimator.predict_proba(X), labels=labels)
        pred_net, pred_sur = labels[P_net.argmax(axis=1)], estimator.predict(X)
        if self.metric == "accuracy_difference":
            return accuracy_difference(y, pred_net, pred_sur, sample_weight=sample_weight)
        return misclassification_overlap(y, pred_net, pred_sur).jaccard


def make_faithfulness_scorer(
    network,
    metric="kendall",
    *,
    drop_saturated=True,
    device="auto",
    batch_size=256,
    input_shape=None,
    network_output=None,
):
    """An sklearn scorer measuring a surrogate's faithfulness to ``network``.

    The scorer is called as ``scorer(estimator, X, y)`` with the *network's* inputs
    ``X`` (typically ``estimator`` is a ``Pipeline(NTKFeaturizer, surrogate)``); it
    computes the network's probabilities on that fold itself, so it works in
    ``cross_validate(pipe, X, y, scoring={"acc": "accuracy", "tau": scorer})`` and
    ``GridSearchCV(pipe, grid, scoring=scorer)``. Network output column ``j`` must
    score ``estimator.classes_[j]``.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The network the surrogate imitates.
    metric : {"kendall", "accuracy_difference", "logit_r2", "overlap"}, default="kendall"
        :func:`kendall_faithfulness` (greater is better),
        :func:`accuracy_difference` (TAD; its sign says which model is more accurate,
        so select on it with care), :func:`logit_r2`, or the Jaccard index of
        :func:`misclassification_overlap`.
    drop_saturated : bool, default=True
        Passed to :func:`kendall_faithfulness`.
    device : str, default="auto"
        Where the network runs.
    batch_size : int, default=256
        Samples per forward pass.
    input_shape : tuple of int, default=None
        Per-sample shape to reshape a 2-D ``X`` for the network.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits (see :func:`network_proba`).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None) -> float``.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sknn_kernels.metrics import make_faithfulness_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(4, 3)
    >>> scorer = make_faithfulness_scorer(net, device="cpu")
    >>> tau = scorer(LogisticRegression().fit(X, y), X, y)
    >>> -1.0 <= tau <= 1.0
    True
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
    options = network_options(device, batch_size, input_shape, network_output)
    return _FaithfulnessScorer(network, metric, options, drop_saturated=drop_saturated)
