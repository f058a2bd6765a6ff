"""``nn.Conv1d/2d/3d``: the Kronecker rule on unfolded patches (any groups, padding, dilation).

A convolution is a Linear applied at every output position ``t`` to the patch ``a_t`` (its
input window, channels x kernel offsets) — per group when ``groups > 1``, so grouped and
depthwise convolutions materialise their (small) per-group gradients instead of pair sums.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import register
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


@register
class ConvRule(KronRule):
    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    summary = (
        "``groups``, ``padding='same'``, any padding mode, dilation and stride; pair "
        "sums or materialised gradients (``groups > 1``: materialised, per group)."
    )

    def __init__(self, name, module, group, indices):
        super().__init__(name, module, group, indices)
        self.groups = module.groups
        if self.groups > 1:
            self.choices = ("outer",)
            self.choice = "outer"
            self.sketchable = False

    def inputs(self, x):
        m = self.module
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        if any(m._reversed_padding_repeated_twice):
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
        if x.dim() == len(m.kernel_size) + 1:  # unbatched input: not per-sample, fails the probe
            x = x.unsqueeze(0)
        return unfold(x, m.kernel_size, m.dilation, m.stride)

    def signals(self, g):
        return g.flatten(2).transpose(1, 2)

    def weight_rows(self, A, G, start, stop):
        if self.groups == 1:
            return super().weight_rows(A, G, start, stop)
        n, m, T, _ = G.shape
        per_out, per_in = self.d_out // self.groups, self.d_in
        Gg = G.reshape(n, m, T, self.groups, per_out)
        Ag = A.reshape(n, T, self.groups, per_in)
        g = torch.einsum("nmtgo,ntgi->nmgoi", Gg, Ag).reshape(n, m, self.d_out, per_in)
        return g[:, :, start:stop].reshape(n, m, -1)
