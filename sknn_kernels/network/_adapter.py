"""How sknn_kernels holds and calls a user's torch network (pure torch: no sklearn here).

* :func:`unwrap_network` accepts an ``nn.Module`` (Hugging Face models included), a fitted
  skorch ``NeuralNet`` or ``sklearn.frozen.FrozenEstimator(net)`` and returns the module;
* :class:`Inputs` is a batch (or a data set) of network inputs: one tensor, or several named
  tensors passed to the network as keyword arguments (``{"input_ids", "attention_mask"}``);
  each keeps its dtype, so token ids stay ``torch.long``;
* :class:`NetworkAdapter` owns a *private* eval-mode copy of the module on the requested
  device and dtype, turns arrays into :class:`Inputs`, calls the network, picks "the logits"
  out of whatever it returns (``output=``), names layers and turns torch's errors about
  inputs into messages that say what is wrong and how to fix it.

The user's object is never touched: no ``.eval()``, ``.to()`` or ``requires_grad_`` on it.
"""

import contextlib
import copy
import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ._input_errors import call_module, diagnose

__all__ = [
    "DTYPES",
    "Inputs",
    "NetworkAdapter",
    "fingerprint",
    "parse_layer",
    "resolve_device",
    "resolve_dtype",
    "state_token",
    "unwrap_network",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
            # sklearn's NotFittedError subclasses ValueError and AttributeError; raising those
            # two keeps this module free of sklearn while callers can still catch it as such.
            raise _NotInitialized(
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


class _NotInitialized(ValueError, AttributeError):
    """An unfitted skorch net (re-raised as sklearn's NotFittedError by the estimators)."""


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
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")


def fingerprint(module):
    """A hash of a module's parameters and buffers (names, shapes, dtypes, values).

    Identical for the same weights on any device, so a model fitted on a GPU and
    reloaded on a CPU-only machine still matches.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict(keep_vars=False).items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.view(torch.int16)
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def state_token(module):
    """A cheap stand-in for :func:`fingerprint`: storage, version counter and shape per tensor.

    In-place updates (optimizer steps, ``load_state_dict``) bump a tensor's version counter and
    assignments change its storage, so an unchanged token means unchanged weights without
    reading them; a changed token only means "hash again".
    """
    return tuple(
        (name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device))
        for name, t in module.state_dict(keep_vars=True).items()
        if isinstance(t, torch.Tensor)
    )


def parse_layer(spec):
    """Split a layer spec ``"name"`` or ``"name:input"`` into ``(name, "output"|"input")``."""
    if not isinstance(spec, str):
        raise TypeError(f"Layer names must be strings; got {spec!r}.")
    name, sep, where = spec.partition(":")
    if sep and where != "input":
        raise ValueError(f"Layer spec {spec!r}: only the suffix ':input' is understood.")
    return name, ("input" if sep else "output")


# --------------------------------------------------------------------------- inputs
class Inputs:
    """Network inputs for a set of samples: one tensor, or named tensors (keyword arguments).

    Supports ``len``, row indexing (``inputs[2:5]``, index tensors) and ``.to(device)``, so the
    rest of the package batches and slices inputs without caring which form they take.
    """

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    @property
    def named(self):
        return isinstance(self.data, dict)

    def tensors(self):
        return list(self.data.values()) if self.named else [self.data]

    def map(self, fn):
        if self.named:
            return Inputs({k: fn(v) for k, v in self.data.items()})
        return Inputs(fn(self.data))

    def __len__(self):
        return int(self.tensors()[0].shape[0])

    def __getitem__(self, rows):
        return self.map(lambda t: t[rows])

    def to(self, device):
        return self.map(lambda t: t.to(device, non_blocking=True))

    def get(self, key):
        """The named input ``key`` (e.g. ``"attention_mask"``), or None."""
        return self.data.get(key) if self.named else None

    def describe(self):
        """Per-sample shapes and dtypes, for error messages."""
        if self.named:
            return ", ".join(
                f"{k}: {tuple(v.shape[1:])} {_dtype_name(v)}" for k, v in self.data.items()
            )
        return f"{tuple(self.data.shape[1:])} {_dtype_name(self.data)}"


def _dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def select_output(output, selector):
    """The tensor that holds the logits in a network's ``output``, as ``(n, C)``.

    ``selector`` ``None``: the output itself if it is a tensor, the first tensor of a tuple,
    or the ``"logits"`` entry of a dict / Hugging Face ``ModelOutput``; a string: that key
    (or attribute); a callable has already produced the tensor.
    """
    found = output
    if isinstance(selector, str):
        if isinstance(output, Mapping):
            if selector not in output:
                raise ValueError(
                    f"output={selector!r}: the network's output has no such key; it has "
                    f"{_keys(output)}."
                )
            found = output[selector]
        else:
            found = getattr(output, selector, None)
            if found is None:
                raise ValueError(
                    f"output={selector!r}: the network returned a {type(output).__name__}, "
                    "which has no such key or attribute."
                )
    elif selector is None:
        while isinstance(found, (tuple, list)) and found:
            found = found[0]
        if isinstance(found, Mapping):
            if "logits" not in found:
                raise ValueError(
                    f"The network returned a {type(found).__name__} with keys {_keys(found)} "
                    "and none is 'logits': pass output='<key>' to say which tensor holds the "
                    "logits, or output=callable(module, batch) -> (n, C) tensor."
                )
            found = found["logits"]
    if not isinstance(found, torch.Tensor):
        raise TypeError(
            f"The network returned {type(found).__name__}, not a tensor of logits: pass "
            "output='<key>' for a dict output, or output=callable(module, batch) -> (n, C) "
            "tensor to compute them."
        )
    if found.ndim == 0:
        raise ValueError("The network returned a scalar; it must return one row per sample.")
    return found.reshape(found.shape[0], -1)


def _keys(mapping):
    return "[" + ", ".join(repr(k) for k in mapping) + "]"


class _Call(nn.Module):
    """Wraps ``output(module, batch)`` as a module so ``torch.func.functional_call`` can run it."""

    def __init__(self, net, fn):
        super().__init__()
        self.net = net
        self.fn = fn

    def forward(self, **named):
        return self.fn(self.net, named.get("__x", named))


# --------------------------------------------------------------------------- adapter
class NetworkAdapter:
    """A private, eval-mode copy of a network, ready to be called on arrays.

    Parameters
    ----------
    network : nn.Module, fitted skorch NeuralNet or FrozenEstimator
        The user's network. It is deep-copied; the original is never modified.
    device : str or torch.device, default="auto"
    dtype : {"float32", "float64"}, default="float32"
        Precision of the copy and of floating-point inputs (integer inputs stay integer).
    batch_size : int, default=256
    input_shape : tuple of int or None
        Shape of one sample; a 2-D array ``X`` of shape ``(n, prod(input_shape))`` is
        reshaped to ``(n, *input_shape)`` before the forward pass (arrays only).
    output : None, str or callable, default=None
        Which tensor of the network's output holds the logits; see :func:`select_output`.
        A callable ``output(module, batch) -> (n, C)`` replaces the plain call entirely
        (tuple-input networks, heads applied by hand); ``batch`` is the tensor or the dict.
    """

    def __init__(
        self,
        network,
        *,
        device="auto",
        dtype="float32",
        batch_size=256,
        input_shape=None,
        output=None,
    ):
        source = unwrap_network(network)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if output is not None and not (isinstance(output, str) or callable(output)):
            raise TypeError(f"output must be None, a string key or a callable; got {output!r}.")
        self.output = output
        self.module = _private_copy(source, self.device, self.dtype)

    # ----------------------------------------------------------------- inputs
    def inputs(self, X):
        """:class:`Inputs` on the CPU: float arrays in ``dtype``, integer/bool ones kept.

        ``X`` is an array or tensor, a dict (or skorch ``SliceDict``) of them, or
        :class:`Inputs`; it is copied, so read-only memmaps are fine.
        """
        if isinstance(X, Inputs):
            return X
        if isinstance(X, Mapping):
            if self.input_shape is not None:
                raise ValueError(
                    "input_shape applies to array inputs; named (dict) inputs are "
                    "passed to the network as they are."
                )
            data = {str(k): self._tensor(v) for k, v in X.items()}
            lengths = {k: int(v.shape[0]) for k, v in data.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"The named inputs have different numbers of samples: {lengths}.")
            return Inputs(data)
        X = self._tensor(X)
        if self.input_shape is not None:
            per_sample = int(np.prod(X.shape[1:]))
            if per_sample != int(np.prod(self.input_shape)):
                raise ValueError(
                    f"input_shape={self.input_shape} needs {int(np.prod(self.input_shape))} "
                    f"values per sample, but X has shape {tuple(X.shape)} ({per_sample} per sample)."
                )
            X = X.reshape((X.shape[0],) + self.input_shape)
        return Inputs(X)

    def _tensor(self, a):
        t = a.detach().cpu() if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a))
        if t.is_floating_point():
            return t.to(self.dtype)
        if t.dtype == torch.bool:
            return t
        if t.is_complex():
            raise ValueError(f"Network inputs must be numeric; got dtype {t.dtype}.")
        return t.long()

    def batches(self, X):
        """Yield consecutive device batches (:class:`Inputs`) of ``inputs(X)``."""
        X = self.inputs(X)
        for start in range(0, len(X), self.batch_size):
            yield X[start : start + self.batch_size].to(self.device)

    # ----------------------------------------------------------------- calls
    def call(self, batch, module=None):
        """Run the network on ``batch`` (:class:`Inputs`) and return its raw output.

        Torch's errors about the inputs (shapes, dtypes, token ids out of range) become
        ValueErrors that name the problem and the fix.
        """
        module = self.module if module is None else module
        try:
            if callable(self.output):
                return self.output(module, batch.data)
            return call_module(module, batch)
        except (RuntimeError, IndexError, TypeError) as exc:
            message = diagnose(exc, batch, module, self.output, self.input_shape)
            if message is None:
                raise
            raise ValueError(message) from exc

    def forward(self, batch, module=None):
        """The logits ``(n, C)`` of ``batch`` (see ``output``)."""
        out = self.call(batch, module)
        return (
            out.reshape(out.shape[0], -1)
            if callable(self.output)
            else select_output(out, self.output)
        )

    def functional_forward(self, params, batch):
        """:meth:`forward` with parameters/buffers taken from ``params`` (for ``torch.func``)."""
        from torch.func import functional_call

        if callable(self.output):
            wrapper = _Call(self.module, self.output)
            params = {f"net.{k}": v for k, v in params.items()}
            kwargs = batch.data if batch.named else {"__x": batch.data}
            out = functional_call(wrapper, params, (), kwargs)
            return out.reshape(out.shape[0], -1)
        args, kwargs = ((), batch.data) if batch.named else ((batch.data,), {})
        return select_output(functional_call(self.module, params, args, kwargs), self.output)

    @torch.no_grad()
    def predict(self, X):
        """Logits for all of ``X`` as a CPU tensor ``(n, C)`` (batched, no grad, checked finite)."""
        outs = [self.forward(b).detach().cpu() for b in self.batches(X)]
        logits = torch.cat(outs) if outs else torch.empty(0, 0, dtype=self.dtype)
        check_finite_rows(logits, "network outputs")
        return logits

    # ----------------------------------------------------------------- layers
    def get_layer(self, name):
        """The submodule called ``name`` (as in ``named_modules()``), with a clear error."""
        modules = dict(self.module.named_modules())
        if name not in modules or name == "":
            valid = _layer_names(self.module)
            shown = ", ".join(repr(n) for n in valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise ValueError(f"Layer {name!r} does not exist in the network. Valid names: {shown}.")
        return modules[name]

    def last_linear(self, batch=None):
        """Name of the readout layer: the last ``nn.Linear`` called on ``batch``.

        Without ``batch``, the last in module order. Call order matters for networks that
        register modules in another order than they use them (or hold unused ones).
        """
        linears = {n: m for n, m in self.module.named_modules() if isinstance(m, nn.Linear)}
        if not linears:
            raise ValueError(
                "The network has no nn.Linear layer, so there is no default penultimate "
                "representation: pass `layers` explicitly."
            )
        called = []
        if batch is not None:
            handles = [
                m.register_forward_hook(lambda m, a, o, n=n: called.append(n))
                for n, m in linears.items()
            ]
            try:
                with torch.no_grad():
                    self.call(batch)
            finally:
                for h in handles:
                    h.remove()
        return called[-1] if called else list(linears)[-1]

    def leaf_layers(self):
        """Names of every module without children (the "all" layer set)."""
        return [
            n for n, m in self.module.named_modules() if n and not any(True for _ in m.children())
        ]

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
                    handles.append(
                        layer.register_forward_pre_hook(
                            lambda m, args, kwargs, store=store: store.append(
                                _first_tensor((args, kwargs))
                            ),
                            with_kwargs=True,
                        )
                    )
                else:
                    handles.append(
                        layer.register_forward_hook(
                            lambda m, args, out, store=store: store.append(_first_tensor(out))
                        )
                    )
            yield records
        finally:
            for handle in handles:
                handle.remove()


def _first_tensor(value):
    """The first tensor in a module output or input (``(out, weights)`` tuples, kwargs...)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, Mapping):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def check_finite_rows(values, what, offset=0):
    """Raise if some rows of ``values`` (n, ...) hold NaN or infinity, naming the first ones.

    ``offset`` is the index of row 0 in the caller's data (batches of a larger set).
    """
    if values.numel() == 0 or not values.is_floating_point():
        return
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if bool(bad.any()):
        rows = (torch.nonzero(bad).flatten() + offset).tolist()
        raise ValueError(
            f"The {what} are not finite (NaN or infinity) for {len(rows)} sample(s), first "
            f"at indices {rows[:5]}: check those inputs, the network's "
            "numerics (e.g. dtype='float64'), or its weights."
        )


def _layer_names(module):
    return [name for name, _ in module.named_modules() if name]


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
