"""How sknn_kernels holds a user's torch network.

Every estimator that takes a ``network`` parameter goes through this module:

* :func:`unwrap_network` accepts an ``nn.Module``, a fitted skorch ``NeuralNet`` or
  ``sklearn.frozen.FrozenEstimator(net)`` and returns the underlying module;
* :class:`NetworkAdapter` owns a *private* eval-mode copy of that module on the
  requested device and dtype, turns arrays into batches of the right shape, and
  names layers;
* :class:`NetworkEstimatorMixin` gives estimators the shared ``fit``/``transform``
  plumbing: input validation, device resolution, the parameter fingerprint and
  CPU-only pickling.

The user's object is never touched: no ``.eval()``, ``.to()`` or ``requires_grad_``
on it (sklearn's ``check_estimators_overwrite_params`` and ``clone`` rely on this).
"""

import contextlib
import copy
import hashlib
import io
import warnings

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .exceptions import DeviceWarning, NetworkChangedWarning

__all__ = [
    "NetworkAdapter",
    "NetworkEstimatorMixin",
    "resolve_device",
    "resolve_dtype",
    "unwrap_network",
    "fingerprint",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def unwrap_network(network):
    """Return the ``nn.Module`` behind ``network``.

    Accepts a ``torch.nn.Module``, a fitted (initialised) skorch ``NeuralNet`` or a
    ``sklearn.frozen.FrozenEstimator`` wrapping either.
    """
    inner = getattr(network, "estimator", None)
    if inner is not None and type(network).__name__ == "FrozenEstimator":
        network = inner
    if isinstance(network, nn.Module):
        return network
    try:  # skorch is a declared dependency, but keep the import local and cheap
        from skorch import NeuralNet
    except ImportError:  # pragma: no cover
        NeuralNet = ()
    if NeuralNet and isinstance(network, NeuralNet):
        module = getattr(network, "module_", None)
        if not isinstance(module, nn.Module):
            raise NotFittedError(
                f"The skorch net {type(network).__name__} is not initialized: fit it (or "
                "call .initialize()) before passing it as `network`. Inside a Pipeline or "
                "GridSearchCV, wrap it as sklearn.frozen.FrozenEstimator(net) so clone() "
                "keeps the fitted weights."
            )
        return module
    if network is None:
        raise ValueError(
            "`network` is None: pass a trained torch.nn.Module, a fitted skorch net or "
            "FrozenEstimator(net)."
        )
    raise TypeError(
        "`network` must be a torch.nn.Module, a fitted skorch NeuralNet or "
        f"sklearn.frozen.FrozenEstimator(net); got {type(network).__name__}."
    )


def resolve_device(device):
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | torch.device`` into a device."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or a torch.device."
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but CUDA is not available.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r} does not exist: {torch.cuda.device_count()} CUDA "
                "device(s) visible."
            )
    return device


def resolve_dtype(dtype):
    """``"float32" | "float64"`` (or the torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")


def fingerprint(module):
    """A hash of a module's parameters and buffers (names, shapes, dtypes, values).

    Identical for the same weights on any device, so a model fitted on a GPU and
    reloaded on a CPU-only machine still matches.
    """
    digest = hashlib.blake2b(digest_size=16)
    state = module.state_dict(keep_vars=False)
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.view(torch.int16)
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _layer_names(module):
    return [name for name, _ in module.named_modules() if name]


def parse_layer(spec):
    """Split a layer spec ``"name"`` or ``"name:input"`` into ``(name, "output"|"input")``."""
    if not isinstance(spec, str):
        raise TypeError(f"Layer names must be strings; got {spec!r}.")
    name, sep, where = spec.partition(":")
    if sep and where != "input":
        raise ValueError(f"Layer spec {spec!r}: only the suffix ':input' is understood.")
    return name, ("input" if sep else "output")


class NetworkAdapter:
    """A private, eval-mode copy of a network, ready to be called on arrays.

    Parameters
    ----------
    network : nn.Module, fitted skorch NeuralNet or FrozenEstimator
        The user's network. It is deep-copied; the original is never modified.
    device : str or torch.device, default="auto"
    dtype : {"float32", "float64"}, default="float32"
    batch_size : int, default=256
    input_shape : tuple of int or None
        Shape of one sample; a 2-D ``X`` of shape ``(n, prod(input_shape))`` is
        reshaped to ``(n, *input_shape)`` before the forward pass.
    """

    def __init__(self, network, *, device="auto", dtype="float32", batch_size=256, input_shape=None):
        source = unwrap_network(network)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.module = _private_copy(source, self.device, self.dtype)

    # ----------------------------------------------------------------- inputs
    def as_tensor(self, X):
        """A CPU tensor of ``dtype`` shaped ``(n, *input_shape)``.

        ``X`` must already be validated (finite, numeric); it is copied, so read-only
        memmaps are fine.
        """
        X = np.asarray(X)
        if self.input_shape is not None:
            per_sample = int(np.prod(X.shape[1:]))
            if per_sample != int(np.prod(self.input_shape)):
                raise ValueError(
                    f"input_shape={self.input_shape} needs {int(np.prod(self.input_shape))} "
                    f"values per sample, but X has shape {X.shape} ({per_sample} per sample)."
                )
            X = X.reshape((X.shape[0],) + self.input_shape)
        return torch.tensor(X, dtype=self.dtype)

    def batches(self, X):
        """Yield consecutive device batches of ``as_tensor(X)`` (or of a tensor)."""
        X = X if isinstance(X, torch.Tensor) else self.as_tensor(X)
        for start in range(0, X.shape[0], self.batch_size):
            yield X[start : start + self.batch_size].to(self.device, non_blocking=True)

    def call(self, batch, module=None):
        """Forward ``batch`` through ``module`` (default: the private copy).

        A shape mismatch raised by torch becomes a ValueError that names the input shape.
        """
        module = self.module if module is None else module
        try:
            return module(batch)
        except RuntimeError as exc:
            if not _looks_like_shape_error(exc):
                raise
            hint = (
                " Pass input_shape=(C, H, W) (or the per-sample shape your network expects) "
                "to reshape 2-D X."
                if self.input_shape is None
                else ""
            )
            raise ValueError(
                f"The network cannot process inputs of per-sample shape {tuple(batch.shape[1:])}: "
                f"{exc}.{hint}"
            ) from exc

    @torch.no_grad()
    def predict(self, X):
        """Network outputs for all of ``X`` as a CPU tensor (batched, no grad)."""
        outs = [_first_tensor(self.call(b)).detach().cpu() for b in self.batches(X)]
        return torch.cat(outs) if outs else torch.empty(0)

    # ----------------------------------------------------------------- layers
    def get_layer(self, name):
        """The submodule called ``name`` (as in ``named_modules()``), with a clear error."""
        modules = dict(self.module.named_modules())
        if name not in modules or name == "":
            valid = _layer_names(self.module)
            shown = ", ".join(repr(n) for n in valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise ValueError(f"Layer {name!r} does not exist in the network. Valid names: {shown}.")
        return modules[name]

    def last_linear(self):
        """Name of the last ``nn.Linear`` in module order (the readout layer)."""
        names = [n for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]
        if not names:
            raise ValueError(
                "The network has no nn.Linear layer, so there is no default penultimate "
                "representation: pass `layers` explicitly."
            )
        return names[-1]

    def leaf_layers(self):
        """Names of every module without children (the "all" layer set)."""
        return [n for n, m in self.module.named_modules() if n and not any(True for _ in m.children())]

    @contextlib.contextmanager
    def capture(self, specs):
        """Record the activations named by ``specs`` during the forward passes run inside.

        ``specs`` are ``"name"`` (the module's output) or ``"name:input"`` (its first
        positional input). Yields a dict spec -> list of tensors, one per call of the
        module (a module called twice, as with weight sharing, records twice). Hooks
        exist only inside the ``with`` block.
        """
        records = {spec: [] for spec in specs}
        handles = []
        try:
            for spec in specs:
                name, where = parse_layer(spec)
                layer = self.get_layer(name)
                store = records[spec]
                if where == "input":
                    hook = _make_pre_hook(store)
                    handles.append(layer.register_forward_pre_hook(hook))
                else:
                    hook = _make_hook(store)
                    handles.append(layer.register_forward_hook(hook))
            yield records
        finally:
            for handle in handles:
                handle.remove()


def _make_hook(store):
    def hook(module, args, output):
        store.append(_first_tensor(output))

    return hook


def _make_pre_hook(store):
    def hook(module, args):
        store.append(_first_tensor(args))

    return hook


def _first_tensor(value):
    """The first tensor in a module output (``(out, weights)`` tuples, LSTM states...)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _looks_like_shape_error(exc):
    text = str(exc)
    return any(
        key in text
        for key in ("shape", "size", "dimension", "Expected", "expected", "mat1", "channels")
    )


def _check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _private_copy(module, device, dtype):
    """Deep copy on the target device in eval mode; the source keeps its state."""
    clone = copy.deepcopy(module)
    clone = clone.to(device=device, dtype=dtype)
    clone.eval()
    return clone


class NetworkEstimatorMixin:
    """Shared plumbing for estimators with ``network``/``device``/``dtype``/... params.

    Subclasses call :meth:`_fit_network` at the start of ``fit`` and
    :meth:`_transform_network` at the start of ``transform``; both validate ``X`` and
    return ``(X, adapter)``. Fitted state it sets: ``device_``, ``network_fingerprint_``,
    ``input_shape_`` (the per-sample shape fed to the network).
    """

    def _validate_network_X(self, X, reset):
        X = validate_data(
            self,
            X,
            reset=reset,
            allow_nd=True,
            dtype=[np.float64, np.float32],
            ensure_all_finite=True,
        )
        if X.ndim == 1:  # validate_data's ensure_2d catches this; keep the guard explicit
            raise ValueError("Expected a 2-D (or N-D) array, got a 1-D one.")
        return X

    def _make_adapter(self, device):
        return NetworkAdapter(
            self.network,
            device=device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            input_shape=getattr(self, "input_shape", None),
        )

    def _fit_network(self, X):
        X = self._validate_network_X(X, reset=True)
        adapter = self._make_adapter(self.device)
        self.device_ = str(adapter.device)
        self.network_fingerprint_ = fingerprint(unwrap_network(self.network))
        self.input_shape_ = tuple(adapter.as_tensor(X[:1]).shape[1:])
        return X, adapter

    def _transform_network(self, X):
        check_is_fitted(self)
        X = self._validate_network_X(X, reset=False)
        shape = tuple(X.shape[1:]) if X.ndim > 2 else None
        if shape is not None and shape != self.input_shape_:
            raise ValueError(f"X has per-sample shape {shape}; the estimator was fitted on {self.input_shape_}.")
        device = self.device_
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This estimator was fitted on {device!r}, which is not available here; "
                "computing on the CPU instead.",
                DeviceWarning,
                stacklevel=3,
            )
            device = "cpu"
        network = unwrap_network(self.network)
        if fingerprint(network) != self.network_fingerprint_:
            warnings.warn(
                "The network's parameters or buffers differ from those seen at fit (was it "
                "trained further, or replaced?). Results mix the two states: refit the "
                "estimator.",
                NetworkChangedWarning,
                stacklevel=3,
            )
        return X, self._make_adapter(device)

    # Pickling: a network parameter that lives on a GPU is stored as torch bytes and
    # restored onto the CPU when CUDA is missing, so fitted models load anywhere.
    def __getstate__(self):
        state = super().__getstate__()
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


class _CudaModuleBytes:
    """Pickle-time stand-in for a CUDA-resident network parameter."""

    def __init__(self, payload):
        self.payload = payload


def _on_cuda(module):
    return any(t.is_cuda for t in module.state_dict().values() if isinstance(t, torch.Tensor))
