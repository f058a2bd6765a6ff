"""Linear datamodeling score (LDS): do summed attributions predict retraining?

Park et al., "TRAK: Attributing Model Behavior at Scale" (ICML 2023), Sec. 2: draw random
subsets ``S_j`` of the training set, retrain on each, and compare, for every test sample
``x``, the retrained output ``f(x; S_j)`` with the attribution-based prediction
``sum_{i in S_j} A(x, i)`` by Spearman correlation over ``j``; the LDS is the mean over test
samples.
"""

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_memory


def retrain_on_subsets(
    train_fn,
    X,
    y,
    X_test,
    y_test=None,
    *,
    n_subsets=50,
    subset_fraction=0.5,
    n_seeds=1,
    output="margin",
    input_shape=None,
    random_state=0,
    n_jobs=None,
    memory=None,
):
    """Retrain a model on random subsets of the training set and record its test outputs.

    The result is the ground truth of :func:`linear_datamodeling_score`: compute it once
    and score every attribution method against it (``memory`` also caches it on disk).

    Parameters
    ----------
    train_fn : callable
        ``train_fn(X_subset, y_subset, seed) -> model``: trains from scratch with the given
        seed. The model is a torch module (its output ``j`` scoring the ``j``-th sorted label
        of ``y``) or a classifier with ``predict_proba`` and ``classes_``. With ``n_jobs``
        or ``memory`` it must be picklable (a module-level function or a
        :func:`functools.partial` of one).
    X : array-like of shape (n_train, ...)
        Training inputs.
    y : array-like of shape (n_train,)
        Training labels; every subset holds every class (subsets that miss one are redrawn).
    X_test : array-like of shape (n_test, ...)
        Inputs whose outputs are recorded.
    y_test : array-like of shape (n_test,), default=None
        Labels of the test samples, needed by ``output="margin"``.
    n_subsets : int, default=50
        Number of random subsets.
    subset_fraction : float in (0, 1), default=0.5
        Size of each subset as a fraction of ``n_train``, drawn without replacement.
    n_seeds : int, default=1
        Models trained per subset (different seeds); their outputs are averaged, which
        removes part of the training noise from the ground truth.
    output : "margin" or callable, default="margin"
        What is recorded per test sample. ``"margin"``: the correct-class margin
        ``log p_y - log(1 - p_y)`` (TRAK's output for classifiers); a callable is called
        as ``output(model, X_test, y_test)`` and returns ``(n_test,)`` values.
    input_shape : tuple of int, default=None
        Per-sample shape fed to a torch model when ``X_test`` is 2-D.
    random_state : int, default=0
        Seeds the subsets and the training seeds.
    n_jobs : int, default=None
        Models trained in parallel by joblib.
    memory : str, joblib.Memory or None, default=None
        Cache the whole retraining on disk (as sklearn's ``Pipeline(memory=...)``): the same
        call returns the stored outputs.

    Returns
    -------
    retrained : :class:`~sklearn.utils.Bunch`
        ``masks`` (n_subsets, n_train) bool, ``outputs`` (n_subsets, n_test) the mean over
        seeds, ``outputs_per_seed`` (n_subsets, n_seeds, n_test), ``seeds``
        (n_subsets, n_seeds) and ``subset_fraction``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sknn_kernels.attribution.evaluation import retrain_on_subsets
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    >>> def train(X, y, seed):
    ...     return LogisticRegression().fit(X, y)
    >>> r = retrain_on_subsets(train, X, y, X[:5], y[:5], n_subsets=4)
    >>> r.masks.shape, r.outputs.shape, int(r.masks[0].sum())
    ((4, 40), (4, 5), 20)
    """
    if not callable(train_fn):
        raise TypeError("train_fn must be a callable train_fn(X_subset, y_subset, seed) -> model.")
    if not isinstance(n_subsets, Integral) or n_subsets < 2:
        raise ValueError(f"n_subsets must be an integer >= 2; got {n_subsets!r}.")
    if not isinstance(n_seeds, Integral) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a positive integer; got {n_seeds!r}.")
    if not isinstance(subset_fraction, Real) or not 0 < subset_fraction < 1:
        raise ValueError(f"subset_fraction must be in (0, 1); got {subset_fraction!r}.")
    if output == "margin" and y_test is None:
        raise ValueError("output='margin' needs the test labels: pass y_test.")
    if not (output == "margin" or callable(output)):
        raise ValueError(f"output must be 'margin' or a callable; got {output!r}.")
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}.")
    retrain = check_memory(memory).cache(_retrain)
    return retrain(
        train_fn,
        X,
        y,
        np.asarray(X_test),
        None if y_test is None else np.asarray(y_test),
        int(n_subsets),
        float(subset_fraction),
        int(n_seeds),
        output,
        None if input_shape is None else tuple(input_shape),
        random_state,
        n_jobs,
    )


def _retrain(
    train_fn,
    X,
    y,
    X_test,
    y_test,
    n_subsets,
    fraction,
    n_seeds,
    output,
    input_shape,
    random_state,
    n_jobs,
):
    rng = check_random_state(random_state)
    n, size = len(y), int(round(fraction * len(y)))  # noqa: RUF046
    classes = np.unique(y)
    masks = np.zeros((n_subsets, n), dtype=bool)
    for j in range(n_subsets):
        for _ in range(100):
            idx = rng.choice(n, size=size, replace=False)
            if len(np.unique(y[idx])) == len(classes):
                break
        else:
            raise ValueError(
                f"Subsets of {size} samples keep missing a class; increase subset_fraction."
            )
        masks[j, idx] = True
    seeds = rng.randint(0, 2**31 - 1, size=(n_subsets, n_seeds))
    jobs = [(j, s) for j in range(n_subsets) for s in range(n_seeds)]
    values = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_output)(
            train_fn,
            X[masks[j]],
            y[masks[j]],
            int(seeds[j, s]),
            X_test,
            y_test,
            classes,
            output,
            input_shape,
        )
        for j, s in jobs
    )
    per_seed = np.asarray(values, dtype=np.float64).reshape(n_subsets, n_seeds, len(X_test))
    return Bunch(
        masks=masks,
        outputs=per_seed.mean(axis=1),
        outputs_per_seed=per_seed,
        seeds=seeds,
        subset_fraction=fraction,
    )


def _fit_and_output(train_fn, X, y, seed, X_test, y_test, classes, output, input_shape):
    model = train_fn(X, y, seed)
    if callable(output):
        values = np.asarray(output(model, X_test, y_test), dtype=np.float64).ravel()
        if values.shape != (len(X_test),):
            raise ValueError(f"output() returned shape {values.shape}; expected ({len(X_test)},).")
        return values
    if hasattr(model, "predict_proba"):
        P = np.asarray(model.predict_proba(X_test), dtype=np.float64)
        columns = np.searchsorted(model.classes_, y_test)
    else:
        from ...metrics import network_proba

        P = network_proba(model, X_test, device="cpu", input_shape=input_shape)
        columns = np.searchsorted(classes, y_test)
    p = np.clip(P[np.arange(len(y_test)), columns], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def linear_datamodeling_score(attributions, retrained):
    """Spearman correlation between summed attributions and retrained outputs, per test sample.

    For test sample ``x`` and subset ``S_j``, the attribution-based prediction is
    ``g_j(x) = sum_{i in S_j} A(x, i)``; the score of ``x`` is the Spearman correlation of
    ``g_j(x)`` with the retrained output ``f(x; S_j)`` over the subsets, and the LDS is its
    mean over test samples. It depends on the retraining protocol (subset size, training
    noise, the recorded output): compare methods on one :func:`retrain_on_subsets` result.

    Parameters
    ----------
    attributions : array-like of shape (n_test, n_train)
        ``A(x, i)`` for the recorded output (e.g. the true class) of each test sample.
    retrained : Bunch
        The result of :func:`retrain_on_subsets` (``masks`` and ``outputs``).

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``lds`` (mean over test samples whose correlation is defined), ``per_sample``
        (n_test,) Spearman correlations (NaN where the prediction or the output is
        constant over subsets), and ``predictions`` (n_subsets, n_test).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from sknn_kernels.attribution.evaluation import linear_datamodeling_score
    >>> masks = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)
    >>> A = np.array([[1.0, 2.0, 4.0]])          # predictions 3, 6, 5
    >>> outputs = np.array([[0.1], [0.9], [0.4]])  # same order: rho = 1
    >>> float(linear_datamodeling_score(A, Bunch(masks=masks, outputs=outputs)).lds)
    1.0
    """
    A = np.asarray(attributions, dtype=np.float64)
    masks = np.asarray(retrained.masks, dtype=np.float64)
    outputs = np.asarray(retrained.outputs, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] != masks.shape[1] or outputs.shape != (masks.shape[0], A.shape[0]):
        raise ValueError(
            f"Shapes do not match: attributions {A.shape} must be (n_test, n_train) with "
            f"masks {masks.shape} = (n_subsets, n_train) and outputs {outputs.shape} = "
            "(n_subsets, n_test)."
        )
    predictions = masks @ A.T
    per_sample = _columnwise_spearman(predictions, outputs)
    finite = per_sample[np.isfinite(per_sample)]
    return Bunch(
        lds=float(finite.mean()) if finite.size else float("nan"),
        per_sample=per_sample,
        predictions=predictions,
    )


def _columnwise_spearman(a, b):
    """Spearman correlation of each column of ``a`` with the same column of ``b``."""
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    denom = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=0) / np.where(denom > 0, denom, 1), np.nan)
