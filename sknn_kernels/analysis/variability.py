"""Seed variability of trained networks: the α-trimming level and ensemble comparisons.

Banerjee, Marrinan, Cannon, Chiang & Sarwate ("Measuring training variability from
stochastic optimization using robust nonparametric testing", arXiv 2406.08307) compare
the distribution ``P`` of a model's per-sample scores with a reference ``G`` (the
expected score distribution of independently trained models) through the trimmed
Kolmogorov distance of del Barrio, Inouzhe & Matrán (arXiv 1903.08687):

* ``R_α(P) = {P̃ ≪ P : dP̃/dP ≤ 1/(1−α)}``, the α-trimmings of ``P`` (remove a fraction
  ``α`` of its mass, renormalise);
* ``d_K(G, R_α(P))``, the Kolmogorov distance from ``G`` to the closest trimming;
* the α-trimming level ``min{α : d_K(G, R_α(P)) ≤ ε}``: how much of the model's
  distribution must be trimmed away before it matches the reference up to ``ε``
  (``G ∈ R_α(P)`` exactly when ``P = (1−α) G + α Q`` for some ``Q``).

Both are computed exactly for empirical distributions (see :func:`trimming_level`).
"""

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import column_or_1d

from ..metrics._faithfulness import _true_class_proba, network_proba

__all__ = [
    "compare_networks",
    "dkw_tolerance",
    "ensemble_convergence",
    "expected_calibration_error",
    "trimmed_kolmogorov_distance",
    "trimming_level",
]

_SCORES = ("true_class", "confidence", "margin")


# ----------------------------------------------------------------- the trimming level
def _as_rows(values, what):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"{what} must be a non-empty 1-D or 2-D array; got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values.")
    return arr.reshape(-1, arr.shape[-1])


def _tube(scores, reference):
    """Per sorted sample position of each row of ``scores`` (the distribution ``P``):

    ``F`` = P(X ≤ z), ``lo`` = G(z) and ``hi`` = G(z'−) with ``z'`` the next distinct
    value of the row (``1`` after the last), ``head`` = G(z_1−), ``last`` (the mask of
    the positions holding the largest value). Ties share identical entries, so tied
    positions add no constraint beyond ``hi ≤ lo + 2ε``.
    """
    P = _as_rows(scores, "scores")
    R = _as_rows(reference, "reference")
    if R.shape[0] not in (1, P.shape[0]):
        raise ValueError(
            f"reference must be one sample or one per row of scores ({P.shape[0]}); "
            f"got {R.shape[0]} rows."
        )
    n, n_ref = P.shape[1], R.shape[1]
    F, lo, hi = (np.empty_like(P) for _ in range(3))
    head = np.empty(P.shape[0])
    last = np.empty(P.shape, dtype=bool)
    for r, row in enumerate(np.sort(P, axis=1)):
        ref = np.sort(R[r if R.shape[0] > 1 else 0])
        right = np.searchsorted(row, row, side="right")  # first position of a larger value
        F[r] = right / n
        lo[r] = np.searchsorted(ref, row, side="right") / n_ref
        nxt = row[np.minimum(right, n - 1)]
        hi[r] = np.where(right < n, np.searchsorted(ref, nxt, side="left") / n_ref, 1.0)
        head[r] = np.searchsorted(ref, row[0], side="left") / n_ref
        last[r] = right == n
    return F, lo, hi, head, last


def _exclusive_prefix(values, op, fill):
    out = np.full_like(values, fill)
    out[:, 1:] = op.accumulate(values[:, :-1], axis=1)
    return out


def trimmed_kolmogorov_distance(scores, reference, alpha):
    """Kolmogorov distance from a reference to the α-trimmings of a score distribution.

    ``d_K(G, R_α(P)) = min over P̃ ∈ R_α(P) of sup_x |G(x) − P̃(x)|`` (del Barrio,
    Inouzhe & Matrán 2019), for the empirical distributions ``P`` of ``scores`` and
    ``G`` of ``reference``. A trimming puts weight ``w_j ≤ p_j / (1−α)`` on each atom of
    ``P``; between two atoms its CDF is constant, so the distance is the smallest ``ε``
    for which a non-decreasing path with increments ``≤ p_j/(1−α)`` fits in the tube
    ``[G(z_{j+1}−) − ε, G(z_j) + ε]``. Writing ``L = 1/(1−α)`` and ``F`` the CDF of
    ``P``, that ``ε`` is the largest of ``G(z_1−)``, ``1 − G(z_m)``, half the ``G``-mass
    between consecutive atoms, ``G(z_i'−) − L F(z_i)``, ``1 − G(z_k) − L(1 − F(z_k))``
    and ``(G(z_i'−) − G(z_k) − L(F(z_i) − F(z_k))) / 2`` over atoms ``z_k < z_i``
    (``z_i'`` the atom after ``z_i``): an exact ``O(n log n)`` computation.

    Parameters
    ----------
    scores : array-like of shape (n_samples,) or (n_models, n_samples)
        Samples of ``P``, one row per model.
    reference : array-like of shape (n_ref,) or (n_models, n_ref)
        Samples of ``G``: one for every row, or one per row.
    alpha : float or array-like of shape (n_models,)
        Trimming level(s) in ``[0, 1)``.

    Returns
    -------
    distance : float or ndarray of shape (n_models,)
        A float for 1-D ``scores``. ``alpha=0`` gives the two-sample Kolmogorov–Smirnov
        statistic.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.variability import trimmed_kolmogorov_distance
    >>> ref = np.arange(8.0)
    >>> contaminated = np.r_[ref, [100.0, 101.0]]  # 20% of the mass is foreign
    >>> round(float(trimmed_kolmogorov_distance(contaminated, ref, 0.0)), 12)
    0.2
    >>> round(float(trimmed_kolmogorov_distance(contaminated, ref, 0.2)), 12)
    0.0
    """
    F, lo, hi, head, _ = _tube(scores, reference)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (F.shape[0],))
    if np.any((alpha < 0) | (alpha >= 1)):
        raise ValueError(f"alpha must be in [0, 1); got {alpha}.")
    L = (1.0 / (1.0 - alpha))[:, None]
    terms = [
        head,
        (1.0 - lo[:, -1]),  # the largest atom: the trimmed CDF is 1 after it
        ((hi - lo) / 2).max(axis=1),
        (hi - L * F).max(axis=1),  # from H = 0 before the first atom
        (1.0 - lo - L * (1.0 - F)).max(axis=1),  # to H = 1 at the last atom
        ((hi - L * F + _exclusive_prefix(L * F - lo, np.maximum, -np.inf)) / 2).max(axis=1),
    ]
    out = np.maximum.reduce([np.zeros(F.shape[0]), *terms])
    return float(out[0]) if np.ndim(scores) == 1 else out


def trimming_level(scores, reference, *, tol=0.0, max_iter=200):
    """The α-trimming level of a score distribution against a reference.

    ``α̂ = min{α ∈ [0, 1) : d_K(G, R_α(P)) ≤ tol}`` (Banerjee et al. 2024, after del
    Barrio et al. 2019), with ``P`` the empirical distribution of ``scores`` and ``G``
    that of ``reference``: the smallest fraction of ``P``'s mass whose removal leaves a
    distribution within Kolmogorov distance ``tol`` of ``G``. With ``tol=0`` it is
    ``1 − min_x p(x)/g(x)`` when every atom of ``G`` is an atom of ``P`` (so for
    ``P = (1−a) G + a Q`` with ``Q`` off the support of ``G`` it is ``a``), and ``1``
    otherwise. The level is invariant under any strictly increasing transform of the
    scores (probabilities or logits give the same answer).

    Computed exactly: with ``L = 1/(1−α)`` and the notation of
    :func:`trimmed_kolmogorov_distance`, the tube is feasible iff
    ``L ≥ (a_i − b_k) / (F(z_i) − F(z_k))`` for all atoms ``z_k < z_i`` (``a_i =
    G(z_i'−) − tol``, or ``1`` at the last atom; ``b_k = G(z_k) + tol``, or ``0`` before
    the first atom), plus conditions free of ``α``. The largest such ratio is found by
    Dinkelbach's method: each step is an ``O(n)`` prefix minimum over all models at
    once, and the result is the ratio of one pair of atoms, not a bisection estimate.

    Parameters
    ----------
    scores : array-like of shape (n_samples,) or (n_models, n_samples)
        Per-sample scores of the model(s) (one row per model).
    reference : array-like of shape (n_ref,) or (n_models, n_ref)
        Samples of the reference distribution, shared or one per row.
    tol : float, default=0.0
        Kolmogorov tolerance ``ε ≥ 0``; see :func:`dkw_tolerance` for the sampling-noise
        level used by the paper's code.
    max_iter : int, default=200
        Cap on Dinkelbach steps (it converges in a handful).

    Returns
    -------
    level : float or ndarray of shape (n_models,)
        In ``[0, 1]``; ``1`` means no trimming reaches the tolerance (e.g. ``G`` puts
        more than ``2·tol`` mass where ``P`` has none).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.variability import trimming_level
    >>> ref = np.arange(8.0)
    >>> round(trimming_level(np.r_[ref, [100.0, 101.0]], ref), 12)  # 2 foreign points in 10
    0.2
    >>> trimming_level(ref + 0.5, ref)  # disjoint atoms: only a tolerance helps
    1.0
    >>> trimming_level(ref + 0.5, ref, tol=0.125)
    0.0
    """
    if not np.isscalar(tol) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number; got {tol!r}.")
    F, lo, hi, head, last = _tube(scores, reference)
    m = F.shape[0]
    a = np.where(last, 1.0, hi - tol)
    b = lo + tol
    # conditions that no trimming can fix: G mass before P's first atom, after its
    # last one, or between two consecutive atoms beyond the tolerance
    possible = (head <= tol) & ((a - b).max(axis=1) <= 0)
    # position 0 is the empty prefix: the trimmed CDF starts at 0 exactly
    F0 = np.hstack([np.zeros((m, 1)), F])
    a0 = np.hstack([np.full((m, 1), -np.inf), a])
    b0 = np.hstack([np.zeros((m, 1)), b])
    L = np.ones(m)
    rows = np.arange(m)
    index = np.arange(F0.shape[1])
    done = ~possible
    for _ in range(int(max_iter)):
        c = b0 - L[:, None] * F0
        gain = a0 - L[:, None] * F0 - _exclusive_prefix(c, np.minimum, np.inf)
        i = gain.argmax(axis=1)
        done |= gain[rows, i] <= 1e-12
        if done.all():
            break
        k = np.where(index[None, :] < i[:, None], c, np.inf).argmin(axis=1)
        # a positive gain needs F_i > F_k (tied atoms give a_i − b_k ≤ 0 once possible)
        ratio = (a0[rows, i] - b0[rows, k]) / np.maximum(F0[rows, i] - F0[rows, k], 1e-300)
        L = np.where(done, L, np.maximum(L, ratio))
    else:
        raise RuntimeError(f"The trimming level did not converge in max_iter={max_iter} steps.")
    level = np.where(possible, 1.0 - 1.0 / L, 1.0)
    return float(level[0]) if np.ndim(scores) == 1 else level


def dkw_tolerance(n, confidence=0.99):
    """Sampling-noise tolerance ``sqrt(log(2/δ)/n) + 1/n``, ``δ = 1 − confidence``.

    The Kolmogorov threshold of the authors' code (Sinjini77/RobustKSTest): a
    Dvoretzky–Kiefer–Wolfowitz-type bound on the distance between two empirical CDFs of
    ``n`` points, plus one atom, below which a trimmed distance counts as a match.

    Parameters
    ----------
    n : int
        Sample size of each empirical distribution.
    confidence : float, default=0.99
        Probability, in (0, 1), that sampling noise alone stays below the tolerance.

    Returns
    -------
    tol : float
        The tolerance, in units of CDF distance.

    Examples
    --------
    >>> from sknn_kernels.analysis.variability import dkw_tolerance
    >>> round(dkw_tolerance(1000), 4)
    0.0738
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    if n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    return float(np.sqrt(np.log(2.0 / (1.0 - confidence)) / n) + 1.0 / n)


# ------------------------------------------------------------------ per-model metrics
def expected_calibration_error(y_true, proba, *, labels=None, n_bins=15):
    """Top-label expected calibration error (Guo et al. 2017).

    ``ECE = Σ_b (|B_b|/n) |acc(B_b) − conf(B_b)|`` over ``n_bins`` equal-width bins of
    the confidence ``max_c p_c(x)``, where ``acc`` is the fraction of points in the bin
    whose predicted class is right.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    proba : array-like of shape (n_samples, n_classes)
        Predicted class probabilities, columns in the order of ``labels``.
    labels : array-like of shape (n_classes,), default=None
        Classes scored by the columns (``np.unique(y_true)`` by default).
    n_bins : int, default=15
        Number of equal-width confidence bins on [0, 1].

    Returns
    -------
    ece : float
        The calibration error, between 0 (calibrated) and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.variability import expected_calibration_error
    >>> proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    >>> round(expected_calibration_error([0, 1, 1, 1], proba, n_bins=5), 4)
    0.25
    """
    y_true = column_or_1d(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    _true_class_proba(y_true, proba, labels)  # validates shapes and labels
    confidence = proba.max(axis=1)
    correct = labels[proba.argmax(axis=1)] == y_true
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y_true))


def _scores(proba, y, labels, score):
    if score == "true_class":
        return _true_class_proba(y, proba, labels)
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] if score == "confidence" else top2[:, 1] - top2[:, 0]


def _check_score(score):
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}; got {score!r}.")


def _resolve_tol(tol, n, confidence):
    return dkw_tolerance(n, confidence) if isinstance(tol, str) and tol == "dkw" else float(tol)


def _levels_against_others(S, halves, tol):
    """Level of each row of ``S`` (its first half) against the pooled other rows (second)."""
    m = S.shape[0]
    first, second = halves
    refs = np.stack([np.delete(S[:, second], j, axis=0).ravel() for j in range(m)])
    return trimming_level(S[:, first], refs, tol=tol)


def _halves(n, split, rng):
    if not split:
        idx = np.arange(n)
        return idx, idx
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def ensemble_convergence(
    scores,
    *,
    sizes=None,
    n_repeats=20,
    tol="dkw",
    confidence=0.99,
    split=True,
    atol=0.01,
    random_state=None,
):
    """How the α-trimming level settles as the reference ensemble grows ("how many seeds").

    For each ensemble size ``k`` and each of ``n_repeats`` random draws, ``k`` models
    form the reference (their pooled scores: the average of their score CDFs, the
    paper's reference ``Ĝ``) and every remaining model is compared with it by
    :func:`trimming_level`. While the reference is a few seeds it carries their
    idiosyncrasies and held-out models need trimming; once it represents the expected
    distribution the level stops changing.

    Parameters
    ----------
    scores : array-like of shape (n_models, n_samples)
        Per-sample scores of each model on the same points.
    sizes : array-like of int, default=None
        Ensemble sizes, each in ``[1, n_models − 1]``. By default ``1 … n_models // 2``,
        so that at least as many models are held out as form the reference (with one
        or two held-out models the mean level is too noisy to read convergence from).
    n_repeats : int, default=20
        Random draws of the ensemble (and of the point split) per size.
    tol : float or "dkw", default="dkw"
        Kolmogorov tolerance; ``"dkw"`` is :func:`dkw_tolerance` of the sample size.
    confidence : float, default=0.99
        Confidence of the ``"dkw"`` tolerance.
    split : bool, default=True
        Candidate scores on one random half of the points and reference scores on the
        other (as the paper does, so the two samples are independent).
    atol : float, default=0.01
        ``stable_size`` is the smallest size from which the mean levels of all larger
        sizes lie within a band of width ``atol`` (the curve has flattened).
    random_state : int, RandomState instance or None, default=None
        Seeds the ensemble draws and the point splits; an int makes results reproducible.

    Returns
    -------
    result : Bunch
        ``sizes`` (n_sizes,), ``mean`` and ``std`` of the level over draws and held-out
        models (n_sizes,), ``levels`` (n_sizes, n_repeats) per-draw means, ``tol`` and
        ``stable_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.variability import ensemble_convergence
    >>> scores = np.random.default_rng(0).normal(size=(6, 400))
    >>> res = ensemble_convergence(scores, n_repeats=5, random_state=0)
    >>> res.sizes
    array([1, 2, 3])
    >>> bool(res.mean[0] >= res.mean[-1])
    True
    """
    S = _as_rows(scores, "scores")
    m, n = S.shape
    if m < 2:
        raise ValueError("ensemble_convergence needs at least two models.")
    sizes = np.arange(1, m // 2 + 1) if sizes is None else np.unique(np.asarray(sizes, dtype=int))
    if sizes.min() < 1 or sizes.max() > m - 1:
        raise ValueError(f"sizes must lie in [1, {m - 1}] (one model is held out); got {sizes}.")
    rng = check_random_state(random_state)
    tol = _resolve_tol(tol, n // 2 if split else n, confidence)
    levels = np.empty((sizes.size, n_repeats))
    spread = np.empty((sizes.size, n_repeats))
    for r in range(n_repeats):
        order = rng.permutation(m)
        first, second = _halves(n, split, rng)
        for s, k in enumerate(sizes):
            ensemble, held_out = order[:k], order[k:]
            ref = S[np.ix_(ensemble, second)].ravel()
            lv = trimming_level(S[np.ix_(held_out, first)], ref, tol=tol)
            levels[s, r], spread[s, r] = lv.mean(), lv.std()
    mean = levels.mean(axis=1)
    # total variance = between-draw variance of the means + mean within-draw variance
    std = np.sqrt(levels.var(axis=1) + (spread**2).mean(axis=1))
    # the smallest size from which every later mean lies in a band of width atol
    later_max = np.maximum.accumulate(mean[::-1])[::-1]
    later_min = np.minimum.accumulate(mean[::-1])[::-1]
    stable = sizes[np.flatnonzero(later_max - later_min <= atol)[0]]
    return Bunch(sizes=sizes, mean=mean, std=std, levels=levels, tol=tol, stable_size=int(stable))


def compare_networks(
    networks,
    X,
    y,
    *,
    labels=None,
    score="true_class",
    tol="dkw",
    confidence=0.99,
    split=True,
    n_bins=15,
    sizes=None,
    n_repeats=20,
    atol=0.01,
    random_state=None,
    device="auto",
    batch_size=256,
    input_shape=None,
):
    """Compare networks trained with different seeds on one test set.

    Parameters
    ----------
    networks : list of torch.nn.Module, fitted skorch nets or FrozenEstimator
        At least two networks; their outputs are read with
        :func:`~sknn_kernels.metrics.network_proba` (softmax, sigmoid for one output).
    X : array-like of shape (n_samples, ...)
        Test inputs, fed to every network.
    y : array-like of shape (n_samples,)
        Test labels.
    labels : array-like of shape (n_classes,), default=None
        Classes of the output columns (``np.unique(y)`` by default).
    score : {"true_class", "confidence", "margin"}, default="true_class"
        The per-sample score whose distribution is compared: the probability of the
        true class, the top probability, or the gap between the two top probabilities.
        (The paper uses the logit gap of a binary model, a monotone function of the
        true-class probability up to the label; the level is invariant to such maps.)
    tol : float or "dkw", default="dkw"
        Kolmogorov tolerance of the trimming levels: see :func:`ensemble_convergence`.
    confidence : float, default=0.99
        Confidence of the ``"dkw"`` tolerance: see :func:`ensemble_convergence`.
    split : bool, default=True
        Compare scores on disjoint halves of the points: see :func:`ensemble_convergence`.
    n_bins : int, default=15
        Bins of the expected calibration error.
    sizes : array-like of int, default=None
        Ensemble sizes of the convergence study: see :func:`ensemble_convergence`.
    n_repeats : int, default=20
        Random draws per ensemble size: see :func:`ensemble_convergence`.
    atol : float, default=0.01
        Band width defining ``stable_size``: see :func:`ensemble_convergence`.
    random_state : int, RandomState instance or None, default=None
        Seeds the point split and the convergence study; an int makes results reproducible.
    device : str, default="auto"
        Where the forward passes run: see :func:`~sknn_kernels.metrics.network_proba`.
    batch_size : int, default=256
        Samples per forward pass.
    input_shape : tuple of int, default=None
        Per-sample shape to reshape a 2-D ``X`` into.

    Returns
    -------
    result : Bunch
        Per model: ``accuracy``, ``ece``, ``churn`` (mean disagreement with the other
        models) and ``trimming_level`` (against the pooled scores of all the others),
        arrays of shape (n_models,). ``disagreement`` (n_models, n_models): fraction of
        points whose predicted classes differ. ``ensemble_accuracy``: accuracy of the
        averaged probabilities. ``scores`` (n_models, n_samples), ``tol``, and
        ``convergence``: the Bunch of :func:`ensemble_convergence`.

    Examples
    --------
    >>> from sknn_kernels.datasets import load_digits_images, make_mlp
    >>> from sknn_kernels.analysis.variability import compare_networks
    >>> data = load_digits_images()
    >>> nets = [make_mlp(64, 10, hidden=(16,), seed=s) for s in range(3)]  # trained ones in practice
    >>> res = compare_networks(nets, data.X_test, data.y_test, n_repeats=2, random_state=0,
    ...                        device="cpu")
    >>> res.disagreement.shape, res.trimming_level.shape, res.convergence.sizes.tolist()
    ((3, 3), (3,), [1])
    """
    _check_score(score)
    networks = list(networks)
    if len(networks) < 2:
        raise ValueError("compare_networks needs at least two networks.")
    y = column_or_1d(y)
    labels = np.unique(y) if labels is None else np.asarray(labels)
    probas = np.stack(
        [
            network_proba(net, X, device=device, batch_size=batch_size, input_shape=input_shape)
            for net in networks
        ]
    )
    pred = labels[probas.argmax(axis=2)]
    disagreement = (pred[:, None, :] != pred[None, :, :]).mean(axis=2)
    m = len(networks)
    S = np.stack([_scores(p, y, labels, score) for p in probas])
    rng = check_random_state(random_state)
    halves = _halves(len(y), split, rng)
    tol_value = _resolve_tol(tol, halves[0].size, confidence)
    convergence = ensemble_convergence(
        S,
        sizes=sizes,
        n_repeats=n_repeats,
        tol=tol_value,
        split=split,
        atol=atol,
        random_state=rng,
    )
    return Bunch(
        accuracy=(pred == y).mean(axis=1),
        ece=np.array(
            [expected_calibration_error(y, p, labels=labels, n_bins=n_bins) for p in probas]
        ),
        churn=disagreement.sum(axis=1) / (m - 1),
        disagreement=disagreement,
        trimming_level=_levels_against_others(S, halves, tol_value),
        ensemble_accuracy=float((labels[probas.mean(axis=0).argmax(axis=1)] == y).mean()),
        scores=S,
        tol=tol_value,
        convergence=convergence,
    )
