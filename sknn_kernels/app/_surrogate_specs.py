"""Names of kernels and surrogates, and how a surrogate is fitted on a precomputed kernel.

Package-internal: the one home of what :mod:`~sknn_kernels.app.compare` (cross-validation) and
:mod:`~sknn_kernels.app.report` (the refit on all training data) share. The public names live on in
:mod:`sknn_kernels.app.compare`.
"""

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.svm import SVC

from ..network._base import is_named
from ..surrogates.neighbors import KernelKNeighborsClassifier, KernelNearestCentroid
from ..surrogates.regression import KernelSurrogateRegressor
from ..surrogates.surrogate import KernelSurrogateClassifier

_BASE_KERNELS = ("pntk", "trntk", "ck", "embedding", "loss_grad")
#: Kernel names ``compare_surrogates`` and the CLI accept: ``NTKFeaturizer`` kernels
#: (cosine-normalised), ``proj-*`` (projected gradients) and ``*0`` (unnormalised).
KERNELS = (
    *_BASE_KERNELS,
    "proj-pntk",
    "proj-trntk",
    "proj-loss_grad",
    *(f"{k}0" for k in _BASE_KERNELS),
)
#: The report's kernels for a classifier: the papers' cosine-normalised kernels, and the
#: unnormalised CK on which the distilled ``kglm-logits`` is faithful (test τ 0.996 on digits,
#: where the normalised kernels stop at 0.88-0.89: normalising drops the feature norm the
#: network's logit scales with; docs/user_guide/which_surrogate.rst). ``ck0`` is the cheapest
#: kernel; ``pntk0`` (τ 0.992) costs a gradient kernel more and a slow label-trained kGLM.
DEFAULT_KERNELS = ("pntk", "trntk", "ck", "ck0", "embedding", "proj-pntk")
#: The report and the CLI use the papers' names; ``NTKFeaturizer`` uses ``empirical_ntk``'s kinds.
_FEATURIZER_KERNEL = {"trntk": "trace"}
REGRESSORS = ("krr", "krr-network")  # built-in names for regression networks
DEFAULT_ESTIMATORS = {
    "classification": ("kglm", "kglm-logits", "ncc", "knn", "svc"),
    "regression": REGRESSORS,
}


def default_estimators(random_state):
    """Name -> (estimator, featurizer output) for the built-in surrogate kinds.

    Names ending in ``-network``/``-logits`` are distilled: fitted to the network's
    outputs instead of the labels (their ``network`` is set by :func:`with_network`).
    """
    return {
        "kglm": (KernelSurrogateClassifier(), "kernel"),
        "kglm-network": (KernelSurrogateClassifier(target="network"), "kernel"),
        "kglm-logits": (KernelSurrogateClassifier(target="logits", penalty="rkhs"), "kernel"),
        "ncc": (KernelNearestCentroid(), "kernel"),
        # uniform votes need only the kernel's ranks, so k-NN shares the fold's kernel
        "knn": (KernelKNeighborsClassifier(), "kernel"),
        "svc": (SVC(kernel="precomputed", probability=True, random_state=random_state), "kernel"),
        # alpha well below KernelRidge's 1.0: kernels here are cosine- or std-normalised
        "krr": (KernelSurrogateRegressor(alpha=1e-3), "kernel"),
        "krr-network": (KernelSurrogateRegressor(alpha=1e-3, target="network"), "kernel"),
    }


def resolve_estimators(estimators, random_state, task=None):
    """Name -> (estimator, featurizer output) for the requested surrogates."""
    if isinstance(estimators, dict):
        return dict(estimators)
    if isinstance(estimators, str):
        estimators = (estimators,)
    builtin = default_estimators(random_state)
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


def kernel_specs(kernels, kernel_params):
    """Kernel name -> its own ``NTKFeaturizer`` parameters; unknown names rejected."""
    if isinstance(kernels, str):
        kernels = (kernels,)
    if isinstance(kernels, dict):
        specs = {name: dict(params or {}) for name, params in kernels.items()}
    else:
        specs = {name: {} for name in kernels}
    if kernel_params is not None:
        warnings.warn(
            "kernel_params is deprecated: pass kernels={name: params} instead.",
            FutureWarning,
            stacklevel=3,  # the caller of compare_surrogates
        )
        for name, params in kernel_params.items():
            if name in specs:
                specs[name] = {**params, **specs[name]}
    unknown = [name for name in specs if name not in KERNELS]
    if unknown or not specs:
        raise ValueError(
            f"Unknown kernels {unknown}; choose from {', '.join(KERNELS)}."
            if unknown
            else "`kernels` is empty: name at least one kernel."
        )
    return specs


def featurizer_kwargs(kernel, output, *, projection_dim, random_state, params, normalize="cosine"):
    """``NTKFeaturizer`` parameters for a kernel name: the one place names are read.

    ``"proj-*"`` are the JL-projected kernels (the paper's names), ``"*0"`` the unnormalised
    ones (``normalize="std"``, a global scale, so that ``alpha`` keeps its meaning).
    """
    params = dict(params)
    if kernel.endswith("0"):
        kernel, normalize = kernel[:-1], "std"
    if kernel.startswith("proj-"):
        params.setdefault("projection_dim", projection_dim)
        params.setdefault("random_state", random_state)
        kernel = kernel.removeprefix("proj-")
    kernel = _FEATURIZER_KERNEL.get(kernel, kernel)
    return {"normalize": normalize, **params, "kernel": kernel, "output": output}


def distilled(estimator):
    """Whether ``estimator`` is fitted to the network's outputs (needs ``network_X`` at fit)."""
    return getattr(estimator, "target", "labels") in ("network", "logits")


def network_X(X, input_shape):
    """The network's training inputs in the shape it takes."""
    # named inputs (a SliceDict) and N-D arrays go to the network as they are
    return X if input_shape is None or is_named(X) else np.asarray(X).reshape(len(X), *input_shape)


def with_network(estimator, network):
    """An unfitted clone of ``estimator``; a distilled one holds ``network``.

    The one path by which an estimator gets the network it is distilled from.
    """
    estimator = clone(estimator)
    if distilled(estimator):
        estimator.set_params(network=network)
    return estimator


def fit_surrogate(estimator, network, K_train, y_train, X_train, input_shape):
    """A clone of ``estimator`` fitted on the precomputed training kernel ``K_train``.

    A distilled one is fitted to ``network``'s outputs on ``X_train`` (``input_shape``: the
    per-sample shape the network takes, or None).
    """
    estimator = with_network(estimator, network)
    params = {"network_X": network_X(X_train, input_shape)} if distilled(estimator) else {}
    estimator.fit(K_train, y_train, **params)
    return estimator
