"""The per-layer rule for ``nn.Linear`` and ``nn.Conv2d``: NTK blocks from (inputs, signals).

For a layer ``y_t = W a_t + b`` applied at positions ``t`` (tokens, conv patches, or the
several calls of a shared module), the per-sample gradient of ``[W, b]`` for cotangent ``v``
is ``Σ_t g_t ⊗ [a_t, 1]`` with ``g_t = ∂(vᵀf)/∂y_t`` the backpropagated signal. Hence

    <grad(x), grad(x')> = Σ_{t,s} (g_t · g'_s) ([a_t, 1] · [a'_s, 1]),

which for a single position is the Hadamard rule ``K = (G Gᵀ) ∘ (A Aᵀ + 1)``: ``O(d_in + d_out)``
per pair instead of ``O(d_in d_out)``, and no P-sized gradient is ever formed. Positions from
different calls of one module are cross terms ``Σ_{s,t}`` of that same sum, which is what makes
weight sharing come out right. When positions are many (convolutions) the gradient
``Σ_t g_t ⊗ a_t`` is cheaper to materialise ("outer") than the ``T²`` pair sums.

Signals are captured by adding a zero leaf ``z`` to the layer's output in a forward hook and
differentiating with respect to ``z``: unlike the output tensor itself, ``z`` is not affected
by later in-place operations (``ReLU(inplace=True)``).
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .gram import broadcast_to, contract


def eligible(module):
    """Whether ``module``'s parameters can go through the structured rule."""
    if type(module) in (nn.Linear,):
        return True
    if type(module) is nn.Conv2d:
        return module.groups == 1 and module.padding_mode == "zeros" and module.padding != "same"
    return False


class HookedUnit:
    """One Linear/Conv2d layer handled by the structured rule.

    Attributes set by the engine: ``positions`` (``T``: positions per sample summed over all
    calls, measured on a probe) and ``choice`` (``"hadamard"`` or ``"outer"``).
    """

    def __init__(self, name, module, group, weight_index, bias_index):
        self.name = name
        self.module = module
        self.group = group
        self.weight_index = weight_index
        self.bias_index = bias_index
        self.is_conv = isinstance(module, nn.Conv2d)
        self.d_out = module.weight.shape[0]
        self.d_in = module.weight[0].numel()
        self.positions = None
        self.choice = "hadamard"

    @property
    def width(self):
        """Length of the input rows ``[a, 1]`` (the bias adds the constant 1)."""
        return self.d_in + (self.bias_index is not None)

    def inputs(self, x):
        """Layer input -> ``(n, T, d_in)`` (the bias's constant 1 is added in the products)."""
        if self.is_conv:
            m = self.module
            padding = 0 if m.padding == "valid" else m.padding
            return F.unfold(x, m.kernel_size, m.dilation, padding, m.stride).transpose(1, 2)
        return x.reshape(x.shape[0], -1, self.d_in)

    def signals(self, g):
        """Gradient w.r.t. the layer output -> ``(n, T, d_out)``."""
        if self.is_conv:
            return g.flatten(2).transpose(1, 2)
        return g.reshape(g.shape[0], -1, self.d_out)

    def weight_rows(self, A, G, start, stop):
        """Per-sample gradient of weight rows ``start:stop``, flattened: ``(n, m, rows·d_in)``."""
        g = torch.einsum("nmtr,nte->nmre", G[..., start:stop], A)
        return g.reshape(g.shape[0], g.shape[1], -1)

    def bias_grad(self, G):
        return G.sum(2)

    def outer(self, A, G):
        """The full per-sample gradient of ``[W, b]``: ``(n, m, d_out·width)``."""
        g = torch.einsum("nmtd,nte->nmde", G, A)
        if self.bias_index is not None:
            g = torch.cat([g, G.sum(2).unsqueeze(-1)], dim=-1)
        return g.reshape(g.shape[0], g.shape[1], -1)


class Recorder:
    """Forward hooks that record each unit's inputs and a zero leaf on its outputs."""

    def __init__(self, units):
        self.units = units
        self.active = False
        self.records = {}
        self.missing = set()

    @contextlib.contextmanager
    def installed(self):
        handles = [u.module.register_forward_hook(self._hook(u)) for u in self.units]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def recording(self):
        self.records = {u: [] for u in self.units}
        self.active = True
        try:
            yield self.records
        finally:
            self.active = False

    def _hook(self, unit):
        def hook(module, args, output):
            if not self.active:
                return None
            if not args or not isinstance(args[0], torch.Tensor):
                self.missing.add(unit)  # called with keywords only: cannot see its input
                return None
            # an expanded scalar: no allocation; the add is the one copy in-place safety needs
            z = output.new_zeros((), requires_grad=True).expand_as(output)
            self.records[unit].append((args[0].detach(), z))
            return output + z

        return hook

    def signals(self, f, V):
        """``{unit: (A, G)}`` with ``A: (n, T, d_in)`` and ``G: (n, m, T, d_out)``.

        One backward pass over the batch per cotangent; calls of a shared unit are stacked
        along ``T``.
        """
        used = [u for u in self.units if self.records.get(u)]
        zs = [z for u in used for _, z in self.records[u]]
        m = V.shape[1]
        per_cotangent = []
        for a in range(m):
            gs = torch.autograd.grad(
                (f * V[:, a]).sum(), zs, retain_graph=a < m - 1, allow_unused=True
            )
            per_cotangent.append([torch.zeros(z.shape, dtype=z.dtype, device=z.device) if g is None else g
                                  for g, z in zip(gs, zs)])
        out, k = {}, 0
        for u in used:
            calls = self.records[u]
            A = _cat([u.inputs(x) for x, _ in calls], dim=1)
            G = _cat([_stack([u.signals(per_cotangent[a][k + i]) for a in range(m)], dim=1)
                      for i in range(len(calls))], dim=2)
            out[u] = (A, G)
            k += len(calls)
        return out


def _cat(tensors, dim):
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def _stack(tensors, dim):
    return tensors[0].unsqueeze(dim) if len(tensors) == 1 else torch.stack(tensors, dim=dim)


def hadamard(A1, G1, A2, G2, mode, paired=False, bias=False):
    """NTK block of one unit from ``(A, G)`` pairs, reduced over cotangents as ``mode`` says.

    ``bias``: the layer has a bias, i.e. its inputs are ``[a, 1]``: ``a·a' + 1``.
    Shapes: ``(n1, n2)`` (trace), ``(n1, n2, m)`` (diag), ``(n1, n2, m, m)`` (full); with
    ``paired=True`` the diagonal ``i == j`` only: ``(n,)``, ``(n, m)``, ``(n, m, m)``.
    """
    if A1.shape[1] == 1:  # one position: the Hadamard rule proper
        a1, a2 = A1[:, 0], A2[:, 0]
        gg = contract(G1[:, :, 0], G2[:, :, 0], mode, paired)
        aa = (a1 * a2).sum(-1) if paired else a1 @ a2.T
        if bias:
            aa += 1
        return gg * broadcast_to(aa, gg)
    i, j = ("i", "i") if paired else ("i", "j")
    ij = "i" if paired else "ij"
    aa = torch.einsum(f"{i}td,{j}sd->{ij}ts", A1, A2)
    if bias:
        aa += 1
    if mode == "trace":
        gg = torch.einsum(f"{i}atd,{j}asd->{ij}ts", G1, G2)
        return (gg * aa).sum((-2, -1))
    if mode == "diag":
        gg = torch.einsum(f"{i}atd,{j}asd->{ij}ats", G1, G2)
        return (gg * aa.unsqueeze(-3)).sum((-2, -1))
    gg = torch.einsum(f"{i}atd,{j}bsd->{ij}abts", G1, G2)
    return (gg * aa.unsqueeze(-3).unsqueeze(-3)).sum((-2, -1))
