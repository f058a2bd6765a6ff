"""``nn.MultiheadAttention``: its packed input projection as a Kronecker rule, ``out_proj`` as a Linear.

``MultiheadAttention.forward`` calls ``F.multi_head_attention_forward`` with the raw
``in_proj_weight`` and ``out_proj.weight``, so neither projection is a module call a hook can
see. While the engine records, every eligible attention module runs :func:`attention_forward`
instead — the same computation (eval mode), written so that both projections are observable:
the packed projection ``[q, k, v] = x W_inᵀ + b_in`` reports its input and output to the rule
below, and the output projection is a call of ``self.out_proj`` (its :class:`LinearRule` applies).
The engine's probe checks the network's output is unchanged and that the rule's per-sample
gradient equals autograd's, as for every rule.

With self-attention (``query is key is value``) the packed weight is one Linear at the ``L``
query positions. Otherwise the positions are the ``L`` query, ``S`` key and ``S`` value
positions stacked (``L + S`` when ``key is value``); each sees the whole ``3E``-row projection
but only its own third of the output is used, so the signals of the other rows are zero and
``Σ_t g_t ⊗ a_t`` is the exact gradient of the packed weight.

Configurations computed otherwise (``kdim``/``vdim`` different from ``embed_dim``, ``bias_k``,
``add_zero_attn``) keep torch's forward: their parameters take the generic path.
"""

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

from .base import register
from .linear import KronRule


def _float_mask(mask, dtype):
    """A boolean mask (``True`` = not attended) as an additive float mask; floats unchanged."""
    if mask is None or mask.is_floating_point():
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask, float("-inf")
    )


def attention_forward(
    self,
    query,
    key,
    value,
    key_padding_mask=None,
    need_weights=True,
    attn_mask=None,
    average_attn_weights=True,
    is_causal=False,
):
    """``nn.MultiheadAttention.forward`` (eval mode) with observable projections."""
    if self.training and self.dropout > 0:  # attention dropout: torch's own forward
        return nn.MultiheadAttention.forward(
            self,
            query,
            key,
            value,
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
        )
    same_kv = key is value
    same_qkv = same_kv and query is key
    batched = query.dim() == 3
    if not batched:  # one sequence (L, E): a batch of one
        query, key, value = (t.unsqueeze(0) for t in (query, key, value))
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    elif not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, L, E = query.shape
    S = key.shape[1]
    parts = [query] if same_qkv else [query, key] if same_kv else [query, key, value]
    x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    y = F.linear(x, self.in_proj_weight, self.in_proj_bias)
    hook = getattr(self, "_sknn_in_proj_hook", None)
    if hook is not None:  # the engine's Recorder: records x, adds a zero leaf to y
        hooked = hook(self, (x,), y)
        y = y if hooked is None else hooked
    if same_qkv:
        q, k, v = y.chunk(3, dim=-1)
    else:
        q = y[:, :L, :E]
        k = y[:, L : L + S, E : 2 * E]
        v = y[:, L : L + S, 2 * E :] if same_kv else y[:, L + S :, 2 * E :]
    H = self.num_heads
    q, k, v = (t.reshape(n, -1, H, E // H).transpose(1, 2) for t in (q, k, v))
    mask = _float_mask(attn_mask, q.dtype)
    if mask is not None:
        mask = mask.reshape(1, 1, L, S) if mask.dim() == 2 else mask.reshape(n, H, L, S)
    padding = _float_mask(key_padding_mask, q.dtype)
    if padding is not None:
        padding = padding.reshape(n, 1, 1, S)
        mask = padding if mask is None else mask + padding
    weights = None
    if need_weights:
        scores = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
        out = weights @ v
        weights = weights.mean(1) if average_attn_weights else weights
        if not batched:
            weights = weights.squeeze(0)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = self.out_proj(out.transpose(1, 2).reshape(n, L, E))  # a module call: hooks see it
    if not batched:
        out = out.squeeze(0)
    elif not self.batch_first:
        out = out.transpose(0, 1)
    return out, weights


class _InProjHook:
    """Handle of the in-projection hook (``remove()`` like a torch hook handle)."""

    def __init__(self, module, hook):
        self.module = module
        module._sknn_in_proj_hook = hook

    def remove(self):
        self.module.__dict__.pop("_sknn_in_proj_hook", None)


@register
class MultiheadAttentionRule(KronRule):
    types = (nn.MultiheadAttention,)
    summary = (
        "the packed ``in_proj_weight``/``in_proj_bias`` as a Linear at the query (and key, "
        "value) positions; ``out_proj`` by the Linear rule (the attention runs a decomposed "
        "forward while signals are recorded). ``kdim``/``vdim``, ``bias_k`` and "
        "``add_zero_attn``: generic path."
    )
    slots = ("in_proj_weight", "in_proj_bias")

    @classmethod
    def eligible(cls, module):
        return (
            module._qkv_same_embed_dim
            and isinstance(module.in_proj_weight, torch.Tensor)
            and module.bias_k is None
            and not module.add_zero_attn
        )

    def inputs(self, x):
        return x.reshape(x.shape[0], -1, self.d_in)

    def install(self, hook):
        return _InProjHook(self.module, hook)

    @classmethod
    @contextlib.contextmanager
    def decomposed(cls, module):
        """Run :func:`attention_forward` in place of ``module.forward`` inside the block."""
        if not cls.eligible(module):
            yield
            return
        had = "forward" in module.__dict__
        old = module.__dict__.get("forward")
        module.forward = types.MethodType(attention_forward, module)
        try:
            yield
        finally:
            if had:
                module.forward = old
            else:
                del module.forward
