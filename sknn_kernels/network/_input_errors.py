"""Torch's errors about a network's inputs, turned into messages that say what to fix.

Called by :meth:`~sknn_kernels.network._adapter.NetworkAdapter.call` only after a forward pass failed,
so the checks here (a re-run with hooks on Linear/Conv/Embedding layers) cost nothing on the
normal path.
"""

import torch
from torch import nn


def call_module(module, inputs):
    """``module(x)`` for one tensor, ``module(**named)`` for named inputs."""
    return module(**inputs.data) if inputs.named else module(inputs.data)


def diagnose(exc, batch, module, output, input_shape):
    """A message for an error caused by the inputs, or None if it is something else."""
    text = str(exc)
    integer = [t for t in batch.tensors() if not t.is_floating_point()]
    if "index out of range" in text or "out of bounds" in text:
        return _embedding_range_error(module, batch, output) or None
    if _looks_like_dtype_error(text):
        if integer and not batch.named:
            return (
                f"X has an integer dtype, and integer inputs go to the network as "
                f"torch.long (token ids, category codes), but this network expects "
                f"floating-point inputs ({text.splitlines()[0]}). Convert X, e.g. "
                "X.astype(np.float32), or a FunctionTransformer before this step."
            )
        if _has(module, nn.Embedding) and any(t.is_floating_point() for t in batch.tensors()):
            return (
                "The network starts from token ids (it has nn.Embedding layers) but got "
                f"floating-point inputs ({batch.describe()}): pass integer arrays "
                f"(e.g. ids.astype(np.int64)). Torch said: {text.splitlines()[0]}"
            )
        return (
            f"The network cannot process inputs of dtype {batch.describe()}: {text.splitlines()[0]}"
        )
    if isinstance(exc, TypeError) and "argument" in text and batch.named:
        return (
            f"The network does not take the named inputs {list(batch.data)}: {text}. Pass "
            "only the keyword arguments its forward() accepts, or output=callable(module, "
            "batch) to call it yourself."
        )
    if isinstance(exc, RuntimeError) and _looks_like_shape_error(text):
        return _shape_error(module, batch, input_shape, text)
    return None


def _has(module, kind):
    return any(isinstance(m, kind) for m in module.modules())


def _looks_like_dtype_error(text):
    keys = (
        "dtype",
        "scalar type",
        "type (",
        "not implemented for 'Long'",
        "not implemented for 'Int'",
        "Expected tensor for argument",
        "LongTensor",
        "FloatTensor",
        "DoubleTensor",
    )
    return any(k in text for k in keys)


def _looks_like_shape_error(text):
    keys = ("shape", "size", "dimension", "Expected", "expected", "mat1", "channels")
    return any(k in text for k in keys)


def _shape_error(module, batch, input_shape, text):
    """Find the first layer whose input does not fit, and say what it expects."""
    culprit = []

    def check(name, layer):
        def hook(m, args):
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is None or culprit:
                return
            if isinstance(m, nn.Linear) and x.shape[-1] != m.in_features:
                culprit.append(
                    f"layer {name!r} (nn.Linear) expects {m.in_features} features, "
                    f"got {x.shape[-1]}"
                )
            elif isinstance(m, nn.modules.conv._ConvNd):
                spatial = len(m.kernel_size)
                if x.ndim not in (spatial + 1, spatial + 2):
                    culprit.append(
                        f"layer {name!r} ({type(m).__name__}) expects {spatial + 2}-D "
                        f"batches (n, C, ...), got {x.ndim}-D"
                    )
                elif x.shape[-spatial - 1] != m.in_channels:
                    culprit.append(
                        f"layer {name!r} ({type(m).__name__}) expects "
                        f"{m.in_channels} input channels, got {x.shape[-spatial - 1]}"
                    )

        return hook

    handles = [
        m.register_forward_pre_hook(check(n, m))
        for n, m in module.named_modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            call_module(module, batch)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    where = culprit[0] if culprit else text.splitlines()[0]
    message = f"The network cannot process inputs of per-sample shape {batch.describe()}: {where}."
    flat = not batch.named and batch.data.ndim == 2
    if culprit and "-D batches" in where and flat and input_shape is None:
        message += (
            " Pass input_shape=(C, H, W) (the per-sample shape your network expects) to "
            "reshape 2-D X, or pass X as an N-D array."
        )
    elif culprit and "features" in where and flat and input_shape is None:
        message += f" X must have {where.split('expects ')[1].split(' ')[0]} columns."
    return message


def _embedding_range_error(module, batch, output):
    """Name the nn.Embedding that got an id outside ``[0, num_embeddings)``."""
    found = []

    def check(name):
        def hook(m, args):
            x = args[0] if args else None
            if found or not isinstance(x, torch.Tensor) or x.numel() == 0:
                return
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= m.num_embeddings:
                found.append(
                    f"Layer {name!r} (nn.Embedding with {m.num_embeddings} rows) got ids in "
                    f"[{lo}, {hi}]; valid ids are 0..{m.num_embeddings - 1}. Check the "
                    "tokenizer/vocabulary matches the network (or the category coding)."
                )

        return hook

    handles = [
        m.register_forward_pre_hook(check(n))
        for n, m in module.named_modules()
        if isinstance(m, nn.Embedding)
    ]
    try:
        with torch.no_grad():
            output(module, batch.data) if callable(output) else call_module(module, batch)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None
