"""Per-sample gradients for a basis of output cotangents.

Every NTK-family kernel is ``k(x, x') = sum_{a, b} <J(x)ᵀ v_a(x), J(x')ᵀ v_b(x')>`` for some
cotangents ``v_a(x) ∈ R^C`` (rows of ``V``, shape ``(n, m, C)``):

* ``"pntk"``: one cotangent ``1/√C`` (sum of logits; Mohamadi et al.);
* ``"trace"``, ``"diagonal"``, ``"full"``: the ``C`` unit vectors ``e_c``;
* ``"loss_grad"``: one cotangent ``softmax(f(x)) - onehot(y)``, the gradient of the softmax
  cross-entropy with respect to the logits, so the kernel is ``<∇θ L(x, y), ∇θ L(x', y')>``.

This module builds ``V`` and computes per-sample gradients ``(n, m, numel)`` of the parameters
the structured rule cannot handle, with ``torch.func`` (``vmap`` over ``grad`` of a functional
forward with buffers) or a plain autograd loop.
"""

import math
import warnings

import torch
from torch.func import grad, vmap

from ..network._adapter import Inputs

KINDS = ("pntk", "trace", "diagonal", "full", "loss_grad")

# How the (n1, n2, m, m) cotangent blocks of each kind are reduced: "trace" sums a == b
# (m == 1 for pntk/loss_grad, so it is the kernel itself), "diag" keeps a == b, "full" all.
MODES = {
    "pntk": "trace",
    "loss_grad": "trace",
    "trace": "trace",
    "diagonal": "diag",
    "full": "full",
}


def n_cotangents(kind, n_outputs):
    """Number ``m`` of cotangents per sample."""
    return 1 if kind in ("pntk", "loss_grad") else n_outputs


def cotangents(kind, f, y=None):
    """Cotangents ``V`` of shape ``(n, m, C)`` for outputs ``f`` of shape ``(n, C)``.

    ``y`` (class indices, ``(n,)``) is used by ``"loss_grad"`` only; ``None`` there means the
    network's predicted class.
    """
    n, C = f.shape
    if kind == "pntk":
        return torch.full((n, 1, C), 1.0 / math.sqrt(C), dtype=f.dtype, device=f.device)
    if kind == "loss_grad":
        if C < 2:
            raise ValueError("kind='loss_grad' needs a network with at least 2 outputs (logits).")
        y = f.argmax(1) if y is None else torch.as_tensor(y, device=f.device).long()
        if y.numel() and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"Labels for kind='loss_grad' must be class indices in [0, {C}).")
        v = torch.softmax(f, 1)
        v[torch.arange(n, device=f.device), y] -= 1.0
        return v[:, None, :]
    return torch.eye(C, dtype=f.dtype, device=f.device).expand(n, C, C)


class GradientShapeError(RuntimeError):
    """A per-sample gradient came back with the wrong shape (a torch.func batching bug)."""


def check_shapes(grads, shapes, n, m, path):
    """``grads`` (one per parameter) reshaped to ``(n, m, numel)`` after checking each shape.

    Nested ``vmap`` over samples and cotangents can silently return ``(n, n, ...)`` instead of
    ``(n, m, ...)`` (PReLU's backward, torch 2.x): a reshape would hide it.
    """
    out = []
    for g, shape in zip(grads, shapes):
        expected = (n, m) + tuple(shape)
        if tuple(g.shape) != expected:
            raise GradientShapeError(
                f"{path} per-sample gradient has shape {tuple(g.shape)}, expected {expected}."
            )
        out.append(g.reshape(n, m, -1))
    return out


def vmap_grads(adapter, names, x, V, nested=True):
    """Per-sample gradients of the parameters ``names``: list of ``(n, m, numel)`` tensors.

    ``vmap`` over samples of ``grad`` of a one-sample functional forward (buffers passed, so
    eval-mode BatchNorm uses its running stats); ``nested=True`` also vmaps over the ``m``
    cotangents, ``nested=False`` loops over them (sidesteps batching bugs of nested vmap).
    ``adapter`` is the :class:`~sknn_kernels.network._adapter.NetworkAdapter` holding the network and
    ``x`` its :class:`~sknn_kernels.network._adapter.Inputs` (one tensor or named tensors).
    Raises :class:`GradientShapeError` when a gradient comes back with the wrong shape.
    """
    module = adapter.module
    params = {k: p.detach() for k, p in module.named_parameters()}
    chosen = {k: params.pop(k) for k in names}
    fixed = {**params, **dict(module.named_buffers())}

    def scalar(p, xi, v):
        one = Inputs(xi).map(lambda t: t.unsqueeze(0))
        out = adapter.functional_forward({**p, **fixed}, one)
        return (out[0] * v).sum()

    per_sample = vmap(grad(scalar), in_dims=(None, 0, 0))
    n, m = V.shape[:2]
    with warnings.catch_warnings():  # torch's "no batching rule, performance drop" notes
        warnings.filterwarnings("ignore", message="There is a performance drop")
        if nested:
            per_cotangent = vmap(grad(scalar), in_dims=(None, None, 0))
            grads = vmap(per_cotangent, in_dims=(None, 0, 0))(chosen, x.data, V)
            grads = [grads[k] for k in names]
        else:
            parts = [per_sample(chosen, x.data, V[:, a]) for a in range(m)]
            grads = [torch.stack([p[k] for p in parts], dim=1) for k in names]
    return check_shapes(
        grads, [chosen[k].shape for k in names], n, m, "vmap" if nested else "vmap (per cotangent)"
    )


def autograd_grads(adapter, names, x, V):
    """Same as :func:`vmap_grads` with one forward pass per sample (and one backward pass for
    its ``m`` cotangents, vmapped, or one per cotangent when the backward cannot be vmapped).

    The last resort for modules ``vmap`` cannot trace (data-dependent control flow, ``.item()``).
    """
    named = dict(adapter.module.named_parameters())
    params = [named[k] for k in names]
    n, m = V.shape[:2]
    out = [torch.zeros(n, m, p.numel(), dtype=V.dtype, device=V.device) for p in params]
    batched = m > 1  # the m cotangents in one vmapped backward pass, while it works
    with torch.enable_grad():
        for i in range(n):
            f = adapter.forward(x[i : i + 1])[0]
            if batched:
                try:
                    gs = torch.autograd.grad(
                        f, params, V[i], allow_unused=True, is_grads_batched=True, retain_graph=True
                    )
                except (RuntimeError, NotImplementedError):
                    batched = False  # a backward without a batching rule: one pass per cotangent
                else:
                    for buf, g in zip(out, gs):
                        if g is not None:
                            buf[i] = g.reshape(m, -1)
                    continue
            for a in range(m):
                gs = torch.autograd.grad(
                    (f * V[i, a]).sum(), params, retain_graph=a < m - 1, allow_unused=True
                )
                for buf, g in zip(out, gs):
                    if g is not None:
                        buf[i, a] = g.reshape(-1)
    return out
