"""Cross-validated comparison of kernel surrogates of one network (classifier or regressor).

Each kernel's train and test matrices are computed once per fold (optionally cached on disk,
keyed by the network's fingerprint, the data and the featurizer options) and every estimator
is fitted on them, so the cost is one kernel per fold, not one per estimator.
"""

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils.multiclass import type_of_target

from .._progress import ProgressBar
from .._results import from_rows
from ..features.featurizer import NTKFeaturizer
from ..metrics import (
    accuracy_difference,
    kendall_faithfulness,
    kendall_outputs,
    network_outputs,
    network_proba,
    output_r2,
    relative_test_loss,
)
from ..network._base import is_named, n_samples
from ._fold_kernels import FoldKernels
from ._surrogate_specs import (
    DEFAULT_ESTIMATORS,
    KERNELS,
    featurizer_kwargs,
    fit_surrogate,
    kernel_specs,
    resolve_estimators,
    with_network,
)

__all__ = ["KERNELS", "compare_surrogates", "detect_task", "make_surrogate_pipeline"]

_TIMES = ("kernel_time", "fit_time", "score_time")
_METRICS = ("accuracy", "tau", "tad", "network_accuracy", *_TIMES)
_REGRESSION_METRICS = ("r2", "faithfulness_r2", "tau", "relative_loss", *_TIMES)


def detect_task(y):
    """Guess the task of a network from its targets.

    ``"regression"`` for continuous targets (sklearn's ``type_of_target``), else
    ``"classification"``. Integer-valued float targets (e.g. sklearn's diabetes data) count
    as classes: pass ``task="regression"`` for them.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Targets.

    Returns
    -------
    task : {"classification", "regression"}
        The task ``compare_surrogates`` and ``run_report`` use for these targets.
    """
    return "regression" if type_of_target(y).startswith("continuous") else "classification"


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
    """Build the featurizer + estimator pipeline of one surrogate.

    The pipeline is ``Pipeline([("featurizer", NTKFeaturizer(...)), ("estimator", ...)])``.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The trained network the surrogate explains.
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
        Normalisation of the kernel (see ``NTKFeaturizer``); names ending in ``0`` use
        ``"std"``.
    projection_dim : int, default=512
        Dimension of the projection for ``proj-*`` kernels.
    random_state : int, default=None
        Seed of projections and of ``SVC``'s probability calibration.
    memory : str or joblib.Memory, default=None
        Cache of the pipeline's fitted featurizer (``Pipeline``'s ``memory``).
    **featurizer_params
        Further ``NTKFeaturizer`` parameters (``input_shape``, ``device``, ``layers``...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted pipeline with steps ``"featurizer"`` and ``"estimator"``.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.app.compare import make_surrogate_pipeline
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> make_surrogate_pipeline(net, "proj-trntk", "svc").named_steps["featurizer"].projection_dim
    512
    """
    if isinstance(estimator, str):
        estimator, output = resolve_estimators((estimator,), random_state)[estimator]
    else:
        estimator, output = estimator
    featurizer = NTKFeaturizer(
        network,
        **featurizer_kwargs(
            kernel,
            output,
            projection_dim=projection_dim,
            random_state=random_state,
            params=featurizer_params,
            normalize=normalize,
        ),
    )
    steps = [("featurizer", featurizer), ("estimator", with_network(estimator, network))]
    return Pipeline(steps, memory=memory)


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
    projection_dim=512,
    memory=None,
    random_state=None,
    verbose=0,
    kernel_params=None,
):
    """Cross-validate every kernel x surrogate pair and tabulate faithfulness.

    On each fold, each kernel's ``NTKFeaturizer(network, kernel=k, normalize="cosine")`` is
    fitted on the training part once; its train and test kernels feed every estimator
    (``kernel="precomputed"``), so the cost is one kernel per fold and kernel, not one per
    estimator. With ``memory`` the fold kernels persist on disk, keyed by the network's
    fingerprint, the fold's data and the featurizer options: a rerun computes none of them.
    The results equal those of ``cross_validate`` on each
    ``Pipeline([("featurizer", ...), ("estimator", est)])`` (see
    :func:`make_surrogate_pipeline`) with the same folds.

    For a classifier, every test fold records the surrogate's accuracy, Kendall tau with
    the network (:func:`~sknn_kernels.metrics.kendall_faithfulness`) and TAD
    (:func:`~sknn_kernels.metrics.accuracy_difference`). For a regression network it records
    the surrogate's R² on ``y``, its R² against the network's outputs
    (:func:`~sknn_kernels.metrics.output_r2`), Kendall tau with the network's outputs
    (:func:`~sknn_kernels.metrics.kendall_outputs`) and its test loss relative to the
    network's (:func:`~sknn_kernels.metrics.relative_test_loss`).

    Distilled surrogates (``"kglm-logits"``, ``"kglm-network"``, ``"krr-network"``) are
    fitted on each training fold to the network's outputs on that fold, so their
    faithfulness is measured on points they were not fitted to. The network is a fixed
    hyperparameter: if it was trained on rows of ``X``, those rows' folds measure
    faithfulness on its training data (pass held-out data to measure it on unseen points).

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The trained network; its output column ``j`` must score the ``j``-th sorted
        label of ``y``.
    X : array-like of shape (n_samples, ...)
        Network inputs.
    y : array-like of shape (n_samples,)
        True labels (or targets of a regression network): of any kind (strings,
        non-contiguous integers...); the kernels that read labels (``"loss_grad"``) get
        their index in the sorted labels, the network's output column.
    kernels : sequence of str or dict of str to dict, default=("pntk", "trntk", "ck", "embedding")
        Names from :data:`KERNELS`: ``NTKFeaturizer`` kernels (cosine-normalised),
        ``"proj-pntk"``/``"proj-trntk"`` for the projected kernels (dimension
        ``projection_dim``), ``"pntk0"``, ``"ck0"``... for the unnormalised kernels. A dict
        maps each name to the ``NTKFeaturizer`` parameters of that kernel only, over
        ``featurizer_params``: ``{"pntk": {"layers": ["head"]}, "ck": {}}`` restricts θ of
        the pNTK while ``"ck"`` keeps its default layer.
    estimators : sequence of str or dict, default=None
        Built-in surrogates of a classifier, trained on the labels (the paper's test of a
        kernel): ``"kglm"`` (:class:`KernelSurrogateClassifier`), ``"ncc"``
        (:class:`KernelNearestCentroid`), ``"knn"`` (:class:`KernelKNeighborsClassifier`),
        ``"svc"`` (``SVC(kernel="precomputed", probability=True)``); or distilled from the
        network (a faithful explanation of it): ``"kglm-logits"`` (kernel ridge regression
        of its logits, ``target="logits"``), ``"kglm-network"`` (the kGLM on its
        probabilities). Of a regression network: ``"krr"`` (:class:`KernelSurrogateRegressor`
        on ``y``) and ``"krr-network"`` (on the network's outputs). ``None``: ``("kglm",
        "kglm-logits", "ncc", "knn", "svc")`` or ``("krr", "krr-network")`` by task. A dict
        maps names to ``(estimator, output)`` pairs, ``output`` being ``"kernel"`` or
        ``"distance"`` (what the estimator takes).
    task : {"auto", "classification", "regression"}, default="auto"
        ``"auto"``: regression for continuous ``y`` (:func:`detect_task`).
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`~sklearn.model_selection.cross_validate` (an int means stratified
        folds for a classifier).
    n_jobs : int, default=None
        (fold, kernel) tasks run in parallel through joblib (prefer 1 with a GPU network).
    featurizer_params : dict, default=None
        ``NTKFeaturizer`` parameters for every kernel (``layers``, ``batch_size``,
        ``device``, ``input_shape``...); ``device``, ``batch_size``, ``input_shape`` and
        ``network_output`` also serve the network's own forward passes.
    projection_dim : int, default=512
        Dimension of the ``proj-*`` kernels.
    memory : str, pathlib.Path or joblib.Memory, default=None
        Where the fold kernels are cached, as ``Pipeline(memory=)``. ``None``: no cache.
    random_state : int, default=None
        Seed of the projections and of ``SVC``'s probability calibration.
    verbose : int or bool, default=0
        ``1``: a progress bar over the (fold, kernel) tasks (plain lines in a log);
        ``2``: also over each exact kernel's tiles.
    kernel_params : dict of str to dict, default=None
        Deprecated: pass ``kernels={name: params}``.

    Returns
    -------
    results : dict of str to ndarray
        One entry per (kernel, estimator), like sklearn's ``cv_results_``
        (``pandas.DataFrame(results)`` makes a table): ``kernel``, ``estimator``,
        ``<metric>_mean``/``<metric>_std`` over folds, ``tau_folds`` and
        ``convergence_warnings``. Metrics of a classifier: ``accuracy``, ``tau``, ``tad``,
        ``network_accuracy`` (``accuracy - tad``); of a regression network: ``r2``,
        ``faithfulness_r2``, ``tau``, ``relative_loss``. Times in seconds: ``kernel_time``
        (the fold's train and test kernels, shared by the kernel's estimators; near 0 when
        read from ``memory``), ``fit_time`` (the surrogate's fit) and ``score_time`` (its
        predictions). ``tau_folds`` counts the folds on which tau is defined (it needs
        probabilities strictly between 0 and 1: k-NN votes are often saturated; the mean
        and std are over those folds). ``convergence_warnings`` counts the
        :class:`~sklearn.exceptions.ConvergenceWarning` raised by the surrogate's fits,
        over all folds (they are counted here instead of being shown).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels import compare_surrogates
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> X = np.random.default_rng(0).normal(size=(40, 4))
    >>> y = net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy()
    >>> results = compare_surrogates(net, X, y, kernels=("pntk", "ck"), estimators=("kglm", "ncc"),
    ...                              cv=2, featurizer_params={"device": "cpu"})
    >>> list(zip(results["kernel"], results["estimator"]))
    [('pntk', 'kglm'), ('pntk', 'ncc'), ('ck', 'kglm'), ('ck', 'ncc')]
    """
    options = _resolve_options(
        X, y, kernels, estimators, task, featurizer_params, kernel_params, verbose, random_state
    )
    reference = _network_reference(network, X, options)  # once, not once per fold
    splits = list(
        check_cv(cv, options.y, classifier=options.task == "classification").split(
            np.zeros((len(options.y), 1)), options.y
        )
    )
    job = _FoldJob(
        network=network,
        X=X,
        y=options.y,
        reference=reference,
        task=options.task,
        estimators=options.estimators,
        input_shape=options.featurizer_params.get("input_shape"),
        kernels=FoldKernels(network, memory, options.tile_verbose, options.classes),
    )
    tasks = [
        (kernel, fold, _kernel_options(kernel, own, options, projection_dim, random_state))
        for fold in range(len(splits))
        for kernel, own in options.kernels.items()
    ]
    scores = _run_folds(job, tasks, splits, options, n_jobs, verbose)  # kernels once per task
    return _table(scores, options.task)


# The featurizer parameters that also serve the network's own forward passes.
_FORWARD_PARAMS = ("device", "batch_size", "input_shape", "network_output")


@dataclass
class _Options:
    """``compare_surrogates``' arguments, checked and resolved."""

    task: str  # "classification" or "regression"
    y: np.ndarray
    classes: np.ndarray  # the labels, in the order of the network's outputs (None: regression)
    estimators: dict  # name -> (estimator, featurizer output)
    kernels: dict  # name -> its own featurizer parameters
    featurizer_params: dict  # every kernel's featurizer parameters
    tile_verbose: bool  # progress bars over each kernel's tiles


def _resolve_options(
    X, y, kernels, estimators, task, featurizer_params, kernel_params, verbose, random_state
):
    """Check the arguments and resolve names and defaults, before any network call."""
    featurizer_params = dict(featurizer_params or {})
    # tile bars are the inner level: verbose >= 2 (or the featurizer's own verbose=True)
    tile_verbose = bool(featurizer_params.pop("verbose", False)) or int(verbose) >= 2
    task = detect_task(y) if task == "auto" else task
    if task not in DEFAULT_ESTIMATORS:
        raise ValueError(f"task must be 'auto', 'classification' or 'regression'; got {task!r}.")
    chosen = resolve_estimators(
        DEFAULT_ESTIMATORS[task] if estimators is None else estimators, random_state, task
    )
    specs = kernel_specs(kernels, kernel_params)
    if task == "regression" and any("loss_grad" in k for k in specs):
        raise ValueError(
            "The loss_grad kernels are gradients of a classifier's cross-entropy on the "
            "labels; a regression network has none."
        )
    y = np.asarray(y)
    if n_samples(X) != len(y):
        raise ValueError(f"X has {n_samples(X)} samples but y has {len(y)}.")
    classes = np.unique(y) if task == "classification" else None
    return _Options(task, y, classes, chosen, specs, featurizer_params, tile_verbose)


def _network_reference(network, X, options):
    """The network's probabilities (or regression outputs) on every sample, computed once.

    A classifier must have one output per label of ``y``: output column ``j`` scores the
    ``j``-th sorted label (checked here, before any kernel is computed).
    """
    params = options.featurizer_params
    forward = {k: params[k] for k in _FORWARD_PARAMS if k in params}
    if options.task == "regression":
        return network_outputs(network, X, "logits", **forward)
    reference = network_proba(network, X, **forward)
    if reference.shape[1] != len(options.classes):
        raise ValueError(
            f"The network has {reference.shape[1]} outputs but y has {len(options.classes)} "
            f"labels {options.classes.tolist()[:10]}: output column j must score the j-th "
            "sorted label, so pass data of every class the network scores (or a network "
            "with one output per label)."
        )
    return reference


def _run_folds(job, tasks, splits, options, n_jobs, verbose):
    """Run every (kernel, fold) task; the fold rows of each (kernel, estimator), in order."""
    scores = {(kernel, name): [] for kernel in options.kernels for name in options.estimators}
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(job)(kernel, *splits[fold], kernel_options)
        for kernel, fold, kernel_options in tasks
    )
    with ProgressBar(len(tasks), "surrogates", unit="fold x kernel", verbose=verbose) as bar:
        for (kernel, fold, _), rows in zip(tasks, runs):
            for name, row in rows.items():
                scores[kernel, name].append(row)
            bar.update(kernel=kernel, fold=fold)
    return scores


def _table(scores, task):
    """One row per (kernel, estimator): each metric's mean and std over folds."""
    metrics = _REGRESSION_METRICS if task == "regression" else _METRICS
    return from_rows(
        {"kernel": kernel, "estimator": name, **_summarise(from_rows(folds), metrics)}
        for (kernel, name), folds in scores.items()
    )


def _kernel_options(kernel, own, options, projection_dim, random_state):
    """Featurizer parameters of ``kernel`` per output (``"kernel"``/``"distance"``) needed."""
    return {
        output: featurizer_kwargs(
            kernel,
            output,
            projection_dim=projection_dim,
            random_state=random_state,
            params={**options.featurizer_params, **own},
        )
        for _, output in options.estimators.values()
    }


@dataclass
class _FoldJob:
    """One (kernel, fold): its kernels once, then every estimator fitted and scored on them."""

    network: object
    X: object
    y: np.ndarray
    reference: np.ndarray  # the network's probabilities (or outputs) on every sample
    task: str
    estimators: dict
    input_shape: tuple
    kernels: FoldKernels

    def __call__(self, kernel, train, test, options):
        X_train, X_test = _rows(self.X, train), _rows(self.X, test)
        y_train, y_test = self.y[train], self.y[test]
        start = time.perf_counter()
        matrices = {
            out: self.kernels(params, X_train, y_train, X_test) for out, params in options.items()
        }
        kernel_time = time.perf_counter() - start
        rows = {}
        for name, (estimator, output) in self.estimators.items():
            K_train, K_test = matrices[output]
            start = time.perf_counter()
            with count_convergence_warnings() as caught:
                # distilled ones are fitted to the network's outputs on this training fold
                estimator = fit_surrogate(
                    estimator, self.network, K_train, y_train, X_train, self.input_shape
                )
            fit_time = time.perf_counter() - start
            start = time.perf_counter()
            row = _scores(estimator, K_test, y_test, self.reference[test], self.task)
            rows[name] = {
                **row,
                "kernel_time": kernel_time,
                "fit_time": fit_time,
                "score_time": time.perf_counter() - start,
                "convergence_warnings": caught[0],
            }
        return rows


def _scores(estimator, K_test, y_test, reference, task):
    """The fold's metrics of a fitted surrogate; ``reference``: the network's outputs."""
    if task == "regression":
        pred = estimator.predict(K_test)
        return {
            "r2": r2_score(y_test, pred),
            "faithfulness_r2": float(output_r2(reference, pred)),
            "tau": kendall_outputs(reference, pred),
            "relative_loss": relative_test_loss(y_test, pred, reference),
        }
    labels = estimator.classes_
    if reference.shape[1] != len(labels):
        raise ValueError(
            f"The network scores {reference.shape[1]} classes but the estimator has "
            f"{len(labels)}: network output column j must score classes_[j]."
        )
    with warnings.catch_warnings():
        # SVC(probability=True) is deprecated in sklearn 1.9, but its replacement
        # (CalibratedClassifierCV) does not forward the precomputed-kernel tag.
        warnings.filterwarnings(
            "ignore", message="The `probability` parameter", category=FutureWarning
        )
        proba = estimator.predict_proba(K_test)
    pred = estimator.predict(K_test)
    accuracy = float(np.mean(pred == y_test))
    tad = accuracy_difference(y_test, labels[reference.argmax(axis=1)], pred)
    return {
        "accuracy": accuracy,
        "tau": kendall_faithfulness(y_test, reference, proba, labels=labels),
        "tad": tad,
        "network_accuracy": accuracy - tad,
    }


@contextmanager
def count_convergence_warnings():
    """Count the ``ConvergenceWarning`` raised inside; other warnings pass through.

    Yields a one-element list holding the count once the block is done.
    """
    count = [0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield count
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            count[0] += 1
        else:  # re-raised under the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _rows(X, idx):
    """Rows ``idx`` of an array or a dict of named arrays (a ``SliceDict`` slices itself)."""
    if is_named(X) and not hasattr(X, "shape"):
        return {key: np.asarray(value)[idx] for key, value in X.items()}
    return X[idx] if hasattr(X, "shape") else np.asarray(X)[idx]


def _summarise(res, metrics=_METRICS):
    """Mean and std over folds of each metric, ``tau_folds`` and ``convergence_warnings``.

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
    row["convergence_warnings"] = int(np.sum(res.get("convergence_warnings", 0)))
    return row
