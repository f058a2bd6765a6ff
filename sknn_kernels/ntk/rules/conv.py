"""``nn.Conv1d/2d/3d``: the Kronecker rule on unfolded patches (any groups, padding, dilation).

A convolution is a Linear applied at every output position ``t`` to the patch ``a_t`` (its
input window, channels x kernel offsets) — per group when ``groups > 1``, so grouped and
depthwise convolutions materialise their (small) per-group gradients instead of pair sums.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv1d_weight, conv2d_weight, conv3d_weight

from .base import _stack, register
from .linear import KronRule


def unfold(x, kernel_size, dilation, stride):
    """Patches of an already padded ``(n, C, *spatial)`` input: ``(n, T, C·prod(kernel_size))``.

    Works for 1, 2 and 3 spatial dimensions (``F.unfold`` is 2-D only); the patch layout
    matches the weight's ``(C, *kernel_size)``.
    """
    d = len(kernel_size)
    for i, (k, dil, s) in enumerate(zip(kernel_size, dilation, stride)):
        x = x.unfold(2 + i, dil * (k - 1) + 1, s)
        if dil > 1:
            x = x[..., ::dil]
    # x: (n, C, *out, *kernel) -> (n, *out, C, *kernel)
    n, C = x.shape[:2]
    x = x.permute(0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d))
    return x.reshape(n, -1, C * int(torch.tensor(kernel_size).prod()))


def unfold_channels_last(x, kernel_size, dilation, stride):
    """Patches ``(n, T, prod(kernel_size)·C)`` in ``(*kernel_size, C)`` order.

    Twice as fast as :func:`unfold` (the copy moves runs of ``C`` contiguous channels instead
    of single elements); the rule maps rows of the weight's ``(C, *kernel_size)`` order to it.
    """
    d = len(kernel_size)
    n, C, *size = x.shape
    x = x.permute(0, *range(2, 2 + d), 1).contiguous()  # (n, *spatial, C)
    out = [
        (s - dil * (k - 1) - 1) // st + 1
        for s, k, dil, st in zip(size, kernel_size, dilation, stride)
    ]
    strides = x.stride()
    view = x.as_strided(
        (n, *out, *kernel_size, C),
        (
            strides[0],
            *(st * strides[1 + i] for i, st in enumerate(stride)),
            *(dil * strides[1 + i] for i, dil in enumerate(dilation)),
            strides[-1],
        ),
    )
    return view.reshape(n, -1, C * math.prod(kernel_size))


# Row chunks per tile up to which a conv's materialised gradients come from its input.
RAW_CHUNKS = 4


@register
class ConvRule(KronRule):
    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    summary = (
        "``groups``, ``padding='same'``, any padding mode, dilation and stride; pair "
        "sums, or materialised gradients (a weight-gradient convolution per sample from the "
        "kept input; ``groups > 1``: always materialised, per group)."
    )

    def __init__(self, name, module, group, indices):
        super().__init__(name, module, group, indices)
        self.groups = module.groups
        if self.groups > 1:
            self.choices = ("outer",)
            self.choice = "outer"
            self.sketchable = False

        self.raw = False  # A holds the input, not patches (see combine)
        self.n_calls = None  # calls per forward pass, seen on the probe
        self.tile = (1, 1)  # (samples, cotangents) of a kernel tile, set by the plan

    def padded(self, x):
        m = self.module
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        if any(m._reversed_padding_repeated_twice):
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
        if x.dim() == len(m.kernel_size) + 1:  # unbatched input: not per-sample, fails the probe
            x = x.unsqueeze(0)
        return x

    def inputs(self, x):
        m = self.module
        x = self.padded(x)
        if self.groups > 1:
            return unfold(x, m.kernel_size, m.dilation, m.stride)
        return unfold_channels_last(x, m.kernel_size, m.dilation, m.stride)

    @property
    def keeps_input(self):
        """Whether ``A`` is the (padded) input rather than unfolded patches (``T × k`` times
        larger), for a conv called once whose patches are only ever contracted with signals:
        under the structured projection (a convolution with the projection as filters), and
        for materialised gradients (a weight-gradient convolution per sample). The
        ``"factored"`` form keeps it only while a tile takes the rows in at most
        ``RAW_CHUNKS`` chunks: each chunk repeats the convolution's pass over the input."""
        if self.n_calls != 1:
            return False
        if self.side is not None:
            return True
        if self.groups > 1 or self.choice == "hadamard":
            return False
        return self.choice == "outer" or self.factor_rows(*self.tile) * RAW_CHUNKS >= self.d_out

    def combine(self, calls):
        self.n_calls = len(calls)
        self.raw = self.keeps_input
        if not self.raw:
            return super().combine(calls)
        ((x, gs),) = calls
        x = x if self.zero_padding else self.padded(x)  # zeros: padded by the convolution
        return x, _stack([self.signals(g) for g in gs], dim=1)

    @property
    def zero_padding(self):
        m = self.module
        return m.padding_mode == "zeros" and not isinstance(m.padding, str)

    def rep_size(self, m):
        if not self.keeps_input or self.choice == "outer":
            return super().rep_size(m)
        # the padded input (about T · stride · C numbers) instead of T patches
        channels = self.d_in // math.prod(self.module.kernel_size)
        return self.positions * (math.prod(self.module.stride) * channels + m * self.d_out)

    def _patch_order(self, t, last):
        """Weight-order ``(C, *kernel)`` rows of the last axis of ``t`` -> patch order (or back
        with ``last=False``: patch order -> weight order)."""
        k = self.module.kernel_size
        C = self.d_in // math.prod(k)
        lead = t.shape[:-1]
        if last:  # (.., C, *k) -> (.., *k, C)
            t = t.reshape(*lead, C, *k).movedim(len(lead), -1)
        else:  # (.., *k, C) -> (.., C, *k)
            t = t.reshape(*lead, *k, C).movedim(-1, len(lead))
        return t.reshape(*lead, self.d_in)

    def project_inputs(self, A, P):
        if self.raw:  # [patches, 1] P = a convolution of the input with P's columns as filters
            m = self.module
            w = P[: self.d_in].T.reshape(P.shape[1], -1, *m.kernel_size)
            conv = (F.conv1d, F.conv2d, F.conv3d)[len(m.kernel_size) - 1]
            pad = m.padding if self.zero_padding else 0
            if A.dim() == len(m.kernel_size) + 1:  # unbatched input (fails the probe anyway)
                A = A.unsqueeze(0)
            At = conv(A.to(P.dtype), w, stride=m.stride, dilation=m.dilation, padding=pad)
            At = At.flatten(2).transpose(1, 2)
            return At + P[self.d_in] if self.has_bias else At
        rows = P[: self.d_in].T  # (cols, d_in) in weight order -> patch order
        At = A.to(P.dtype) @ self._patch_order(rows, last=True).T
        return At + P[self.d_in] if self.has_bias else At

    def signals(self, g):
        return g.flatten(2).transpose(1, 2)

    def weight_rows(self, A, G, start, stop, out=None):
        n, m, T, _ = G.shape
        if self.raw:
            return self._input_weight_rows(A, G, start, stop, out)
        if self.groups == 1:  # patch order -> the weight's (C, *kernel) order
            if m * (stop - start) >= T:  # reorder whichever is smaller: the patches...
                return super().weight_rows(self._patch_order(A, last=False), G, start, stop, out)
            g = super().weight_rows(A, G, start, stop)  # ... or the gradient rows
            g = self._patch_order(g.unflatten(-1, (stop - start, self.d_in)), last=False)
        else:
            per_out, per_in = self.d_out // self.groups, self.d_in
            Gg = G.reshape(n, m, T, self.groups, per_out)
            Ag = A.reshape(n, T, self.groups, per_in)
            g = torch.einsum("nmtgo,ntgi->nmgoi", Gg, Ag).reshape(n, m, self.d_out, per_in)
            g = g[:, :, start:stop]
        g = g.reshape(n, m, -1)
        return g if out is None else out.copy_(g)

    def _input_weight_rows(self, x, G, start, stop, out):
        """:meth:`weight_rows` from the kept input: per sample, the weight gradient of this conv
        restricted to rows ``start:stop`` and stacked for the ``m`` cotangents (a conv with
        ``m · rows`` filters), which torch computes without materialising patches."""
        mod = self.module
        n, m = G.shape[:2]
        rows, d = stop - start, len(mod.kernel_size)
        if out is None:
            out = G.new_empty(n, m, rows * self.d_in)
        pad = mod.padding if self.zero_padding else (0,) * d
        size = [
            (s + 2 * p - dil * (k - 1) - 1) // st + 1
            for s, p, dil, k, st in zip(x.shape[2:], pad, mod.dilation, mod.kernel_size, mod.stride)
        ]
        g = G[..., start:stop].transpose(-1, -2).reshape(n, m * rows, *size)
        x = x.to(G.dtype)
        shape = (m * rows, self.d_in // math.prod(mod.kernel_size), *mod.kernel_size)
        weight_grad = (conv1d_weight, conv2d_weight, conv3d_weight)[d - 1]
        for i in range(n):
            w = weight_grad(x[i : i + 1], shape, g[i : i + 1], mod.stride, pad, mod.dilation)
            out[i].copy_(w.view(m, -1))
        return out
