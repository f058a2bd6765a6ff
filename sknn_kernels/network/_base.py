"""The sklearn side of holding a network: validation, fitted state, a cached adapter, pickling.

:class:`NetworkEstimatorMixin` gives every estimator with ``network``/``device``/``dtype``/...
parameters the same ``fit``/``transform`` plumbing on top of :mod:`sknn_kernels.network._adapter`:

* ``X`` is an array (float, or integer token ids / category codes, whose dtype is kept) or a
  dict / skorch ``SliceDict`` of equal-length arrays passed to the network as keyword arguments;
* the adapter (a private copy of the network) built at fit is reused by ``transform`` as long
  as the network is unchanged, so a call copies and hashes nothing it does not need to;
* fitted state is numpy, and a network on a GPU pickles so that it loads on a CPU-only machine.
"""

import io
import sys
import threading
import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ..exceptions import DeviceWarning, NetworkChangedWarning
from ._adapter import NetworkAdapter, _NotInitialized, fingerprint, state_token, unwrap_network

__all__ = [
    "DEVICE_CONSTRAINT",
    "NETWORK_CONSTRAINT",
    "NetworkEstimatorMixin",
    "check_network_inputs",
    "first_rows",
    "is_named",
    "make_adapter",
    "n_samples",
    "user_stacklevel",
]

#: ``_parameter_constraints`` of every ``network`` parameter: a ``torch.nn.Module``
#: (``forward``), a fitted skorch net or ``FrozenEstimator`` (``predict``), or None (fails
#: at fit with a message saying what to pass). What is inside is checked by the adapter.
NETWORK_CONSTRAINT = [HasMethods(["forward"]), HasMethods(["predict"]), None]
#: ... and of every ``device``: ``"auto"``/``"cpu"``/``"cuda:N"`` or a ``torch.device``.
DEVICE_CONSTRAINT = [str, torch.device]
#: ... and of the parameters by which every network estimator calls its network.
CALL_CONSTRAINTS = {
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "dtype": [StrOptions({"float32", "float64"})],
    "input_shape": [None, tuple, list],
    "network_output": [None, str, callable],
}


def user_stacklevel():
    """``stacklevel`` that makes a warning point at the user's line.

    The first frame outside sknn_kernels and sklearn, counted from the caller of
    ``warnings.warn``: sklearn's ``_fit_context`` and ``set_output`` wrappers add frames
    whose number depends on the method called.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "sknn_kernels",
        "sklearn",
    ):
        frame, level = frame.f_back, level + 1
    return level


def make_adapter(network, **options):
    """A :class:`NetworkAdapter`; an unfitted skorch net raises sklearn's NotFittedError."""
    try:
        return NetworkAdapter(network, **options)
    except _NotInitialized as exc:
        raise NotFittedError(str(exc)) from None


def is_named(X):
    """Whether ``X`` is a dict of named inputs (scipy's dict-based sparse matrices are not)."""
    return isinstance(X, Mapping) and not sp.issparse(X)


def check_network_inputs(X, dtype="float32"):
    """Validate network inputs without an estimator (functions such as ``network_proba``).

    Arrays: numeric, finite if floating (cast to ``dtype``), integer/bool kept. Dicts /
    ``SliceDict``: the same per entry, equal lengths. Returns arrays or a dict of arrays.
    """
    if is_named(X):
        return _check_named(X, dtype)
    return _check_array(np.asarray(X) if not hasattr(X, "__array__") else X, dtype, "X")


def _check_array(a, dtype, name):
    a = np.asarray(a)
    if a.dtype.kind == "O":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must hold numbers; got dtype object ({exc}).") from None
    if a.dtype.kind == "f":
        a = a.astype(dtype, copy=False)
        if not np.isfinite(a).all():
            kind = "NaN" if np.isnan(a).any() else "infinity"
            raise ValueError(f"Input {name} contains {kind}.")
    elif a.dtype.kind in "iu":
        a = a.astype(np.int64, copy=False)
    elif a.dtype.kind != "b":
        raise ValueError(f"{name} must hold numbers (float, or integer ids); got dtype {a.dtype}.")
    if a.ndim < 1 or (a.ndim == 1 and name == "X"):
        raise ValueError(
            f"Expected a 2-D (or N-D) array for {name}, got {a.ndim}-D: reshape a "
            "single sample with X.reshape(1, -1)."
        )
    return a


def _check_named(X, dtype):
    if not X:
        raise ValueError("The dict of named inputs is empty.")
    bad = [k for k in X if not isinstance(k, str)]
    if bad:
        raise ValueError(
            f"Named inputs need string keys (the network's keyword arguments); got {bad}."
        )
    out = {}
    for key, value in X.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        out[key] = _check_array(value, dtype, f"X[{key!r}]")
    lengths = {k: v.shape[0] for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"The named inputs must have one row per sample each; got lengths {lengths}."
        )
    if next(iter(lengths.values())) == 0:
        raise ValueError(
            "Found array with 0 sample(s) in the named inputs; at least 1 is required."
        )
    return out


class _AdapterCache:
    """The adapter built at fit and the network state it was built from (never pickled).

    Holding it in one mutable object keeps ``transform`` from changing the estimator's
    ``__dict__`` (sklearn's ``check_dict_unchanged``).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.clear()

    def clear(self):
        self.adapter, self.token, self.fingerprint, self.network_id = None, None, None, None


class NetworkEstimatorMixin:
    """Shared plumbing for estimators with ``network``/``device``/``dtype``/... params.

    Subclasses call :meth:`_fit_network` at the start of ``fit`` and
    :meth:`_transform_network` at the start of ``transform``; both validate ``X`` and
    return ``(X, adapter)``. Fitted state it sets: ``device_``, ``network_fingerprint_``,
    ``input_shape_`` (the per-sample shape fed to the network), and for named (dict) inputs
    ``input_keys_`` and ``input_shapes_`` (per-sample shape of each entry) instead of
    ``n_features_in_``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # what _validate_network_X takes: N-D arrays (images, token ids) and dicts of named
        # inputs, besides 2-D X; never NaN (a network would propagate it)
        tags.input_tags.three_d_array = True
        tags.input_tags.dict = True
        tags.input_tags.allow_nan = False
        return tags

    # ----------------------------------------------------------------- inputs
    def _validate_network_X(self, X, reset):
        dtype = getattr(self, "dtype", "float32")
        if is_named(X):
            X = _check_named(X, dtype)
            shapes = {k: tuple(v.shape[1:]) for k, v in X.items()}
            if reset:
                for stale in ("n_features_in_", "feature_names_in_"):
                    self.__dict__.pop(stale, None)
                self.input_keys_ = tuple(X)
                self.input_shapes_ = shapes
            else:
                self._check_named_like_fit(shapes)
            return X
        if not reset and hasattr(self, "input_keys_"):
            raise ValueError(
                f"This estimator was fitted on named inputs {list(self.input_keys_)}; "
                "pass a dict with the same keys, not an array."
            )
        X = validate_data(
            self, X, reset=reset, allow_nd=True, dtype="numeric", ensure_all_finite=True
        )
        if reset:
            for stale in ("input_keys_", "input_shapes_"):
                self.__dict__.pop(stale, None)
        return _check_array(X, dtype, "X")

    def _check_named_like_fit(self, shapes):
        if not hasattr(self, "input_keys_"):
            raise ValueError(
                "This estimator was fitted on an array; pass an array, not a dict of named inputs."
            )
        if set(shapes) != set(self.input_keys_):
            raise ValueError(
                f"X has the named inputs {sorted(shapes)}; the estimator was fitted on "
                f"{sorted(self.input_keys_)}."
            )
        wrong = {
            k: (s, self.input_shapes_[k]) for k, s in shapes.items() if s != self.input_shapes_[k]
        }
        if wrong:
            detail = ", ".join(f"{k}: {got} (fit: {want})" for k, (got, want) in wrong.items())
            raise ValueError(
                f"Per-sample shapes differ from those seen at fit: {detail}. Pad token "
                "sequences to the same length (tokenizer(..., padding='max_length', "
                "max_length=L))."
            )

    # ----------------------------------------------------------------- adapter
    def _adapter_options(self, device):
        return {
            "device": device,
            "dtype": getattr(self, "dtype", "float32"),
            "batch_size": getattr(self, "batch_size", 256),
            "input_shape": getattr(self, "input_shape", None),
            "output": getattr(self, "network_output", None),
        }

    def _cache(self):
        cache = self.__dict__.get("_adapter_cache")
        if cache is None:  # unpickled, or set up before the first fit
            cache = self.__dict__["_adapter_cache"] = _AdapterCache()
        return cache

    def _fit_network(self, X):
        X = self._validate_network_X(X, reset=True)
        network = self._unwrapped()
        adapter = make_adapter(self.network, **self._adapter_options(self.device))
        self.device_ = str(adapter.device)
        self.network_fingerprint_ = fingerprint(network)
        first = adapter.inputs(first_rows(X))
        self.input_shape_ = None if first.named else tuple(first.data.shape[1:])
        cache = self._cache()
        with cache.lock:
            cache.adapter, cache.token = adapter, state_token(network)
            cache.fingerprint, cache.network_id = self.network_fingerprint_, id(network)
        return X, adapter

    def _transform_network(self, X):
        check_is_fitted(self)
        X = self._validate_network_X(X, reset=False)
        if not is_named(X):
            shape = tuple(X.shape[1:]) if X.ndim > 2 else None
            if shape is not None and self.input_shape_ is not None and shape != self.input_shape_:
                raise ValueError(
                    f"X has per-sample shape {shape}; the estimator was fitted on "
                    f"{self.input_shape_}."
                )
        return X, self._current_adapter()

    def _current_adapter(self):
        """The cached adapter if the network is unchanged (checked cheaply), else a new one."""
        device = self.device_
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This estimator was fitted on {device!r}, which is not available here; "
                "computing on the CPU instead.",
                DeviceWarning,
                stacklevel=4,
            )
            device = "cpu"
        network = self._unwrapped()
        cache = self._cache()
        with cache.lock:
            token, same_object = state_token(network), cache.network_id == id(network)
            stale = cache.adapter is None or not same_object
            if stale or token != cache.token:
                current = fingerprint(network)  # at most one hash per call
                stale = stale or current != cache.fingerprint
                cache.token, cache.fingerprint, cache.network_id = token, current, id(network)
            if cache.fingerprint != self.network_fingerprint_:
                warnings.warn(
                    "The network's parameters or buffers differ from those seen at fit (was it "
                    "trained further, or replaced?). Results mix the two states: refit the "
                    "estimator.",
                    NetworkChangedWarning,
                    stacklevel=4,
                )
            if stale or str(cache.adapter.device) != str(torch.device(device)):
                cache.adapter = make_adapter(self.network, **self._adapter_options(device))
            return cache.adapter

    def _unwrapped(self):
        try:
            return unwrap_network(self.network)
        except _NotInitialized as exc:
            raise NotFittedError(str(exc)) from None

    # Pickling: the cached adapter is dropped, and a network parameter that lives on a GPU is
    # stored as torch bytes and restored onto the CPU when CUDA is missing, so fitted models
    # load anywhere.
    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_adapter_cache", None)
        network = state.get("network")
        if isinstance(network, nn.Module) and _on_cuda(network):
            buffer = io.BytesIO()
            torch.save(network, buffer)
            state["network"] = _CudaModuleBytes(buffer.getvalue())
        return state

    def __setstate__(self, state):
        network = state.get("network")
        if isinstance(network, _CudaModuleBytes):
            map_location = None if torch.cuda.is_available() else "cpu"
            if map_location == "cpu":
                warnings.warn(
                    "The network was saved on a CUDA device that is not available here; it "
                    "was loaded onto the CPU.",
                    DeviceWarning,
                    stacklevel=2,
                )
            state["network"] = torch.load(
                io.BytesIO(network.payload), map_location=map_location, weights_only=False
            )
        super().__setstate__(state)


def n_samples(X):
    """Number of samples in an array or a dict of named arrays."""
    return len(next(iter(X.values()))) if is_named(X) else X.shape[0]


def first_rows(X, n=1):
    """The first ``n`` samples of an array or a dict of arrays."""
    if is_named(X):
        return {k: v[:n] for k, v in X.items()}
    return X[:n]


class _CudaModuleBytes:
    """Pickle-time stand-in for a CUDA-resident network parameter."""

    def __init__(self, payload):
        self.payload = payload


def _on_cuda(module):
    return any(t.is_cuda for t in module.state_dict().values() if isinstance(t, torch.Tensor))
