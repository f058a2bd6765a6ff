"""Affine parameters of normalisation layers (materialised: they are small).

With ``x̂`` the normalised input (eval statistics for BatchNorm), ``y = γ ⊙ x̂ + β``, so the
per-sample gradients are ``Σ_t g_t ⊙ x̂_t`` and ``Σ_t g_t`` over the positions ``t`` that share
the affine parameters. ``x̂`` is recomputed from the recorded input (no division by ``γ``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import Rule, register


class AffineRule(Rule):
    """``A``: normalised inputs ``(n, T, C)``; ``G``: signals ``(n, m, T, C)``."""

    @classmethod
    def eligible(cls, module):
        return isinstance(getattr(module, "weight", None), torch.Tensor)

    @staticmethod
    def signal_width(module):
        return module.weight.numel()

    def normalise(self, x):
        raise NotImplementedError

    def inputs(self, x):
        return self._positions(self.normalise(x))

    def signals(self, g):
        return self._positions(g)

    def _positions(self, t):
        return t.reshape(t.shape[0], -1, self.d_out)

    def outer(self, A, G):
        parts = []
        if "weight" in self.indices:
            parts.append(torch.einsum("nmtc,ntc->nmc", G, A))
        if "bias" in self.indices:
            parts.append(G.sum(2))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class ChannelFirst(AffineRule):
    """Affine parameters per channel on ``(n, C, *spatial)`` inputs."""

    def _positions(self, t):
        return t.reshape(t.shape[0], self.d_out, -1).transpose(1, 2)


@register
class LayerNormRule(AffineRule):
    types = (nn.LayerNorm,)
    summary = "``elementwise_affine`` weight and (optional) bias."

    def normalise(self, x):
        m = self.module
        return F.layer_norm(x, m.normalized_shape, None, None, m.eps)


if hasattr(nn, "RMSNorm"):

    @register
    class RMSNormRule(AffineRule):
        types = (nn.RMSNorm,)
        summary = "``elementwise_affine`` weight."

        def normalise(self, x):
            m = self.module
            return F.rms_norm(x, m.normalized_shape, None, m.eps)


@register
class GroupNormRule(ChannelFirst):
    types = (nn.GroupNorm,)
    summary = "affine weight and bias."

    def normalise(self, x):
        m = self.module
        return F.group_norm(x, m.num_groups, None, None, m.eps)


@register
class BatchNormRule(ChannelFirst):
    types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    summary = "affine weight and bias with the running (eval) statistics."

    @classmethod
    def eligible(cls, module):
        return super().eligible(module) and module.running_mean is not None

    def normalise(self, x):
        m = self.module  # one fused pass (half the time of (x - mean) * rsqrt(var + eps))
        return F.batch_norm(x, m.running_mean, m.running_var, training=False, eps=m.eps)
