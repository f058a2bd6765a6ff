"""Cross-validated comparison of kernel surrogates of one network (classifier or regressor)."""

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils.multiclass import type_of_target

from ._base import is_named
from .featurizer import NTKFeaturizer
from .metrics import make_faithfulness_scorer, make_regression_faithfulness_scorer
from .neighbors import KernelKNeighborsClassifier, KernelNearestCentroid
from .regression import KernelSurrogateRegressor
from .surrogate import KernelSurrogateClassifier

__all__ = ["compare_surrogates", "detect_task", "make_surrogate_pipeline"]

_METRICS = ("accuracy", "tau", "tad", "network_accuracy", "fit_time", "score_time")
_REGRESSION_METRICS = ("r2", "faithfulness_r2", "tau", "relative_loss", "fit_time", "score_time")
REGRESSORS = ("krr", "krr-network")  # built-in names for regression networks
DEFAULT_ESTIMATORS = {
    "classification": ("kglm", "kglm-logits", "ncc", "knn", "svc"),
    "regression": REGRESSORS,
}


def _default_estimators(random_state):
    """Name -> (estimator, featurizer output) for the built-in surrogate kinds.

    Names ending in ``-network``/``-logits`` are distilled: fitted to the network's
    outputs instead of the labels (their ``network`` is set by the pipeline).
    """
    return {
        "kglm": (KernelSurrogateClassifier(), "kernel"),
        "kglm-network": (KernelSurrogateClassifier(target="network"), "kernel"),
        "kglm-logits": (KernelSurrogateClassifier(target="logits", penalty="rkhs"), "kernel"),
        "ncc": (KernelNearestCentroid(), "kernel"),
        "knn": (KernelKNeighborsClassifier(metric="precomputed"), "distance"),
        "svc": (SVC(kernel="precomputed", probability=True, random_state=random_state), "kernel"),
        # alpha well below KernelRidge's 1.0: kernels here are cosine- or std-normalised
        "krr": (KernelSurrogateRegressor(alpha=1e-3), "kernel"),
        "krr-network": (KernelSurrogateRegressor(alpha=1e-3, target="network"), "kernel"),
    }


def _resolve_estimators(estimators, random_state, task=None):
    """Name -> (estimator, featurizer output) for the requested surrogates."""
    if isinstance(estimators, dict):
        return dict(estimators)
    if isinstance(estimators, str):
        estimators = (estimators,)
    builtin = _default_estimators(random_state)
    unknown = [name for name in estimators if name not in builtin]
    if unknown:
        raise ValueError(
            f"Unknown estimators {unknown}; choose from {sorted(builtin)} or pass a dict."
        )
    if task is not None:
        wrong = [name for name in estimators if (name in REGRESSORS) != (task == "regression")]
        if wrong:
            raise ValueError(
                f"Estimators {wrong} do not fit a {task} task; use {list(DEFAULT_ESTIMATORS[task])} "
                "(or pass task= when the targets are detected wrongly)."
            )
    return {name: builtin[name] for name in estimators}


def _distilled(estimator):
    """Whether ``estimator`` is fitted to the network's outputs (needs ``network_X`` at fit)."""
    return getattr(estimator, "target", "labels") in ("network", "logits")


def detect_task(y):
    """``"regression"`` for continuous targets (sklearn's ``type_of_target``), else ``"classification"``.

    Integer-valued float targets (e.g. sklearn's diabetes data) count as classes: pass
    ``task="regression"`` for them.
    """
    return "regression" if type_of_target(y).startswith("continuous") else "classification"


def _featurizer_kwargs(kernel, projection_dim, random_state, featurizer_params):
    """``"proj-pntk"``/``"proj-trntk"`` are the JL-projected kernels (paper's proj-* names)."""
    params = dict(featurizer_params)
    if kernel.startswith("proj-"):
        params.setdefault("projection_dim", projection_dim)
        params.setdefault("random_state", random_state)
        kernel = kernel.removeprefix("proj-")
    return dict(kernel=kernel, **params)


def make_surrogate_pipeline(
    network,
    kernel="pntk",
    estimator="kglm",
    *,
    normalize="cosine",
    projection_dim=512,
    random_state=None,
    memory=None,
    **featurizer_params,
):
    """``Pipeline([("featurizer", NTKFeaturizer(...)), ("estimator", ...)])`` for one surrogate.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
    kernel : str, default="pntk"
        An ``NTKFeaturizer`` kernel, ``"proj-pntk"``/``"proj-trntk"`` for its
        Johnson–Lindenstrauss-projected form with ``projection_dim``, or a name ending in
        ``0`` (``"pntk0"``, ``"ck0"``...) for the paper's unnormalised kernel: then
        ``normalize="std"`` (a global scale, so that ``alpha`` keeps its meaning).
    estimator : str or (estimator, output) tuple, default="kglm"
        A built-in name (see :func:`compare_surrogates`), or an estimator with the
        featurizer output it takes (``"kernel"`` or ``"distance"``). A distilled estimator
        (``target="network"``/``"logits"``) gets ``network`` set, and its ``fit`` needs
        ``estimator__network_X`` (the network's inputs, in the shape it takes).
    normalize : {None, "cosine", "std"}, default="cosine"
    projection_dim : int, default=512
        Dimension of the projection for ``proj-*`` kernels.
    random_state : int, default=None
        Seed of projections and of ``SVC``'s probability calibration.
    memory : str or joblib.Memory, default=None
    **featurizer_params
        Further ``NTKFeaturizer`` parameters (``input_shape``, ``device``, ``layers``...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.compare import make_surrogate_pipeline
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> make_surrogate_pipeline(net, "proj-trntk", "svc").named_steps["featurizer"].projection_dim
    512
    """
    if isinstance(estimator, str):
        estimator, output = _resolve_estimators((estimator,), random_state)[estimator]
    else:
        estimator, output = estimator
    estimator = clone(estimator)
    if _distilled(estimator):  # the one path by which an estimator holds the network
        estimator.set_params(network=network)
    if kernel.endswith("0"):
        kernel, normalize = kernel[:-1], "std"
    featurizer = NTKFeaturizer(
        network,
        normalize=normalize,
        output=output,
        **_featurizer_kwargs(kernel, projection_dim, random_state, featurizer_params),
    )
    return Pipeline([("featurizer", featurizer), ("estimator", estimator)], memory=memory)


def compare_surrogates(
    network,
    X,
    y,
    *,
    kernels=("pntk", "trntk", "ck", "embedding"),
    estimators=None,
    task="auto",
    cv=5,
    n_jobs=None,
    featurizer_params=None,
    kernel_params=None,
    projection_dim=512,
    memory=None,
    random_state=None,
    verbose=False,
):
    """Cross-validate every kernel x surrogate pair and tabulate faithfulness.

    Each pair is ``Pipeline([("featurizer", NTKFeaturizer(network, kernel=k,
    normalize="cosine", output=...)), ("estimator", est)])`` scored by
    :func:`sklearn.model_selection.cross_validate`, so folds, parallelism and timing
    are sklearn's. For a classifier, every test fold records the surrogate's accuracy,
    Kendall tau with the network (:func:`~sknn_kernels.metrics.kendall_faithfulness`)
    and TAD (:func:`~sknn_kernels.metrics.accuracy_difference`). For a regression network
    it records the surrogate's R² on ``y``, its R² against the network's outputs
    (:func:`~sknn_kernels.metrics.output_r2`), Kendall tau with the network's outputs
    (:func:`~sknn_kernels.metrics.kendall_outputs`) and its test loss relative to the
    network's (:func:`~sknn_kernels.metrics.relative_test_loss`).

    Distilled surrogates (``"kglm-logits"``, ``"kglm-network"``, ``"krr-network"``) are
    fitted on each training fold to the network's outputs on that fold, so their
    faithfulness is measured on points they were not fitted to.

    The network is a fixed hyperparameter: if it was trained on rows of ``X``, those
    rows' folds measure faithfulness on its training data (pass held-out data to
    measure it on unseen points).

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The trained network; its output column ``j`` must score the ``j``-th sorted
        label of ``y``.
    X : array-like of shape (n_samples, ...)
        Network inputs.
    y : array-like of shape (n_samples,)
        True labels.
    kernels : sequence of str, default=("pntk", "trntk", "ck", "embedding")
        ``NTKFeaturizer`` kernel names (cosine-normalised), ``"proj-pntk"``/``"proj-trntk"``
        for the projected kernels (dimension ``projection_dim``), or ``"pntk0"``, ``"ck0"``...
        for the unnormalised kernels (see :func:`make_surrogate_pipeline`).
    estimators : sequence of str or dict, default=None
        Built-in surrogates of a classifier, trained on the labels (the paper's test of a
        kernel): ``"kglm"`` (:class:`KernelSurrogateClassifier`), ``"ncc"``
        (:class:`KernelNearestCentroid`), ``"knn"`` (:class:`KernelKNeighborsClassifier`
        on featurizer distances), ``"svc"`` (``SVC(kernel="precomputed",
        probability=True)``); or distilled from the network (a faithful explanation of
        it): ``"kglm-logits"`` (kernel ridge regression of its logits,
        ``target="logits"``), ``"kglm-network"`` (the kGLM on its probabilities). Of a
        regression network: ``"krr"`` (:class:`KernelSurrogateRegressor` on ``y``, Qadeer
        et al.'s kernel regression) and ``"krr-network"`` (on the network's outputs).
        ``None``: ``("kglm", "kglm-logits", "ncc", "knn", "svc")`` or ``("krr",
        "krr-network")`` by task. A dict maps names to ``(estimator, output)`` pairs,
        ``output`` being ``"kernel"`` or ``"distance"`` (what the estimator takes).
    task : {"auto", "classification", "regression"}, default="auto"
        ``"auto"``: regression for continuous ``y`` (:func:`detect_task`).
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`~sklearn.model_selection.cross_validate`.
    n_jobs : int, default=None
        Folds run in parallel through joblib (prefer 1 with a GPU network).
    featurizer_params : dict, default=None
        Extra ``NTKFeaturizer`` parameters (``layers``, ``projection_dim``,
        ``batch_size``, ``device``, ``input_shape``...). ``input_shape`` and
        ``device`` are also used by the faithfulness scorers.
    kernel_params : dict of str to dict, default=None
        Parameters for one kernel only, over ``featurizer_params``: e.g.
        ``{"pntk": {"layers": ["head", "encoder.layer.5"]}}`` restricts θ of the pNTK while
        ``"ck"`` keeps its default layer (``layers`` means θ for gradient kernels and
        activations for ``"ck"``/``"embedding"``).
    projection_dim : int, default=512
        Dimension of the ``proj-*`` kernels.
    memory : str or joblib.Memory, default=None
        ``Pipeline`` cache for the fitted featurizers.
    random_state : int, default=None
        Seed of the projections and of ``SVC``'s probability calibration.
    verbose : bool, default=False
        A progress bar over the kernel x estimator pairs (tqdm when installed).

    Returns
    -------
    table : pandas.DataFrame or numpy structured array
        One row per (kernel, estimator), columns ``kernel``, ``estimator`` and
        ``<metric>_mean``/``<metric>_std`` over folds. Regression: ``r2``,
        ``faithfulness_r2``, ``tau``, ``relative_loss``, ``fit_time``, ``score_time``.
        Classification: ``accuracy``, ``tau``,
        ``tad``, ``network_accuracy`` (``accuracy - tad``), ``fit_time`` (featurizer
        fit + train kernel + surrogate fit, seconds) and ``score_time`` (test
        kernel, predictions and network forward passes, seconds), and ``tau_folds``, the
        number of folds on which tau is defined (it needs probabilities strictly between 0
        and 1: k-NN votes are often saturated; the mean and std are over those folds). A
        DataFrame when pandas is importable.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels import compare_surrogates
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> X = np.random.default_rng(0).normal(size=(40, 4))
    >>> y = net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    >>> table = compare_surrogates(net, X, y, kernels=("pntk", "ck"), estimators=("kglm", "ncc"),
    ...                            cv=2, featurizer_params={"device": "cpu"})
    >>> table[["kernel", "estimator"]].values.tolist()
    [['pntk', 'kglm'], ['pntk', 'ncc'], ['ck', 'kglm'], ['ck', 'ncc']]
    """
    featurizer_params = dict(featurizer_params or {})
    task = detect_task(y) if task == "auto" else task
    if task not in DEFAULT_ESTIMATORS:
        raise ValueError(f"task must be 'auto', 'classification' or 'regression'; got {task!r}.")
    chosen = _resolve_estimators(
        DEFAULT_ESTIMATORS[task] if estimators is None else estimators, random_state, task
    )
    scorer_params = {
        k: featurizer_params[k]
        for k in ("device", "input_shape", "network_output")
        if k in featurizer_params
    }
    scoring, metrics = _scoring(network, task, scorer_params)
    input_shape = featurizer_params.get("input_shape")
    kernel_params = dict(kernel_params or {})
    pairs = [(kernel, name) for kernel in kernels for name in chosen]
    rows = []
    for kernel, name in _progress(pairs, verbose):
        pipe = make_surrogate_pipeline(
            network,
            kernel,
            chosen[name],
            projection_dim=projection_dim,
            random_state=random_state,
            memory=memory,
            **{**featurizer_params, **kernel_params.get(kernel, {})},
        )
        # distilled surrogates run the network on each training fold (sliced like y)
        params = (
            {"estimator__network_X": _network_X(X, input_shape)} if _distilled(pipe[-1]) else None
        )
        with warnings.catch_warnings():
            # SVC(probability=True) is deprecated in sklearn 1.9, but its replacement
            # (CalibratedClassifierCV) does not forward the precomputed-kernel tag.
            warnings.filterwarnings(
                "ignore", message="The `probability` parameter", category=FutureWarning
            )
            res = cross_validate(
                pipe,
                X,
                y,
                cv=cv,
                n_jobs=n_jobs,
                scoring=scoring,
                error_score="raise",
                params=params,
            )
        res = {key.removeprefix("test_"): value for key, value in res.items()}
        if task == "classification":
            res["network_accuracy"] = res["accuracy"] - res["tad"]
        rows.append({"kernel": kernel, "estimator": name, **_summarise(res, metrics)})
    return _table(rows)


def _network_X(X, input_shape):
    """The network's training inputs in the shape it takes (sliced per fold by ``cross_validate``)."""
    # named inputs (a SliceDict) and N-D arrays go to the network as they are
    return X if input_shape is None or is_named(X) else np.asarray(X).reshape(len(X), *input_shape)


def _scoring(network, task, scorer_params):
    """The ``cross_validate`` scorers of a task and the metrics summarised per row."""
    if task == "regression":
        scorer = make_regression_faithfulness_scorer
        return {
            "r2": "r2",
            "faithfulness_r2": scorer(network, "r2", **scorer_params),
            "tau": scorer(network, "kendall", **scorer_params),
            "relative_loss": scorer(network, "relative_loss", **scorer_params),
        }, _REGRESSION_METRICS
    return {
        "accuracy": "accuracy",
        "tau": make_faithfulness_scorer(network, "kendall", **scorer_params),
        "tad": make_faithfulness_scorer(network, "accuracy_difference", **scorer_params),
    }, _METRICS


def _summarise(res, metrics=_METRICS):
    """Mean and std over folds of each metric, and ``tau_folds``.

    Tau is NaN on a fold where too few probabilities are unsaturated (k-NN votes are often
    exactly 0 or 1): it is averaged over the folds where it is defined.
    """
    row = {}
    for metric in metrics:
        values = np.asarray(res[metric], dtype=float)
        finite = values[np.isfinite(values)]
        row[f"{metric}_mean"] = float(finite.mean()) if finite.size else float("nan")
        row[f"{metric}_std"] = float(finite.std()) if finite.size else float("nan")
    row["tau_folds"] = int(np.isfinite(np.asarray(res["tau"], dtype=float)).sum())
    return row


def _progress(items, verbose):
    if not verbose:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return items
    return tqdm(items, desc="surrogates", unit="pair")


def _table(rows):
    try:
        import pandas as pd
    except ImportError:
        names = list(rows[0])
        kinds = {"kernel": "U32", "estimator": "U32", "tau_folds": "i8"}
        dtypes = [(n, kinds.get(n, "f8")) for n in names]
        return np.array([tuple(row[n] for n in names) for row in rows], dtype=dtypes)
    return pd.DataFrame(rows)
