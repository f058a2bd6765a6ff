"""``nn.ConvTranspose1d/2d/3d``: per-sample weight gradients by a convolution's weight gradient.

A transposed convolution is the adjoint of the convolution with the same weight (stride,
padding, dilation, groups), so ``<g, conv_transpose(x, W)> = <conv(g, W), x>``: the per-sample
gradient of ``W`` is that convolution's weight gradient with input ``g`` and output gradient
``x`` (``output_padding`` only fixes the output size). The ``m`` cotangents are ``m`` more
groups of one call per sample; the bias gradient sums ``g`` over positions. Materialised
(decoder weights are small); calls of a shared module add up.
"""

from torch import nn
from torch.nn.grad import conv1d_weight, conv2d_weight, conv3d_weight

from .base import PerCallRule, register


@register
class ConvTransposeRule(PerCallRule):
    types = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    summary = (
        "stride, padding, ``output_padding``, dilation and ``groups``; materialised per-sample "
        "gradients (the adjoint convolution's weight gradient, one call per sample)."
    )

    @staticmethod
    def signal_width(module):
        return module.out_channels

    def outer(self, A, G):
        mod = self.module
        n, m = G[0].shape[:2]
        d = len(mod.kernel_size)
        out = G[0].new_zeros(n, m, self.numel)
        size = mod.weight.numel() if "weight" in self.indices else 0
        weight_grad = (conv1d_weight, conv2d_weight, conv3d_weight)[d - 1]
        shape = (m * mod.in_channels, *mod.weight.shape[1:])
        for x, g in zip(A, G):
            if x.dim() == d + 1:  # unbatched call: not per-sample, fails the probe
                x = x.unsqueeze(0)
            x = x.to(g.dtype)
            if size:
                # cotangent a is group block a: its g channels map to its copy of x
                xs = x.repeat(1, m, *(1,) * d) if m > 1 else x
                gs = g.reshape(n, m * mod.out_channels, *g.shape[3:])
                for i in range(n):
                    w = weight_grad(
                        gs[i : i + 1],
                        shape,
                        xs[i : i + 1],
                        mod.stride,
                        mod.padding,
                        mod.dilation,
                        m * mod.groups,
                    )
                    out[i, :, :size] += w.view(m, -1)
            if "bias" in self.indices:
                out[:, :, size:] += g.flatten(3).sum(-1)
        return out
