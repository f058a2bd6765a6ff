"""``nn.Linear`` at any number of positions, and the Kronecker-factored rule it shares with Conv.

For ``y_t = W a_t + b`` the per-sample gradient of ``[W, b]`` is ``Σ_t g_t ⊗ [a_t, 1]``, so a
pair of samples costs ``T S (d_in + m d_out)`` as pair sums ("hadamard") against
``d_in d_out`` per pair plus ``T d_in d_out`` per sample when materialised ("outer", which
keeps ``d_in d_out`` numbers per sample), or materialised in each tile from the kept ``(A, G)``
("factored": the memory of pair sums, the compute of "outer" when the kernel is one tile);
the cost model in ``_cost`` picks per layer. Attention blocks of Hugging Face models are plain Linears.
"""

import torch
from torch import nn

from ..gram import contract, scratch
from .base import Rule, register

# Elements of the per-sample gradient chunks the "factored" form materialises at once.
FACTOR_ELEMENTS = 2**23


class KronRule(Rule):
    """A weight ``(d_out, d_in)`` (any trailing shape) used as ``Σ_t g_t ⊗ a_t``, plus a bias."""

    choices = ("hadamard", "outer", "factored")
    kron = True
    sketchable = True

    def __init__(self, name, module, group, indices):
        super().__init__(name, module, group, indices)
        self.d_in = getattr(module, self.slots[0])[0].numel()

    @classmethod
    def eligible(cls, module):
        return isinstance(getattr(module, cls.slots[0], None), torch.Tensor)

    @property
    def has_bias(self):
        return len(self.slots) > 1 and self.slots[1] in self.indices

    @property
    def width(self):
        """Length of the input rows ``[a, 1]`` (the bias adds the constant 1)."""
        return self.d_in + self.has_bias

    @property
    def input_width(self):
        return self.width

    def pair_inputs(self, A1, A2, paired):
        if A1.shape[1] == 1 and A2.shape[1] == 1:
            aa = (A1[:, 0] * A2[:, 0]).sum(-1) if paired else A1[:, 0] @ A2[:, 0].T
            aa = aa[..., None, None]
        else:
            aa = torch.einsum("itd,isd->its" if paired else "itd,jsd->ijts", A1, A2)
        return aa + 1 if self.has_bias else aa

    @property
    def sketch_width(self):
        return self.width

    @property
    def sketch_cost(self):
        return self.width

    def project_inputs(self, A, P):
        """``[a_t, 1] P`` for the structured projection: ``(n, T, cols)``."""
        At = A.to(P.dtype) @ P[: self.d_in]
        return At + P[self.d_in] if self.has_bias else At

    def weight_rows(self, A, G, start, stop, out=None):
        """Per-sample gradient of weight rows ``start:stop``, flattened: ``(n, m, rows·d_in)``.

        ``out``: a ``(n, m, rows·d_in)`` tensor (a view into a larger one is fine) to write into.
        """
        (n, m), rows = G.shape[:2], stop - start
        if out is None:
            out = torch.empty(n, m, rows * self.d_in, dtype=G.dtype, device=G.device)
        # one (rows × T) @ (T × d_in) GEMM per sample and cotangent, written in place
        g = G[..., start:stop].transpose(-1, -2).flatten(0, 1)
        a = A.to(G.dtype)
        if m > 1:
            a = a.unsqueeze(1).expand(n, m, *a.shape[1:]).flatten(0, 1)
        torch.bmm(g, a, out=out.unflatten(-1, (rows, self.d_in)).view(n * m, rows, self.d_in))
        return out

    def factor_rows(self, n, m):
        """Weight rows per chunk of the ``"factored"`` form for a tile of ``n`` samples."""
        return max(1, FACTOR_ELEMENTS // max(1, n * m * self.d_in))

    def factored(self, A1, G1, A2, G2, mode, paired=False, same=False):
        """NTK block through per-sample gradients materialised a chunk of weight rows at a time.

        The ``"factored"`` form keeps ``(A, G)`` per sample (the memory of pair sums) and pays
        the materialisation of ``Σ_t g_t ⊗ a_t`` in each tile instead (the compute of
        ``"outer"`` when the kernel is one tile); ``same``: ``(A2, G2)`` is ``(A1, G1)``.
        The chunks go to reused scratch buffers (see :func:`~sknn_kernels.ntk.gram.scratch`).
        """
        (n1, m), n2 = G1.shape[:2], (0 if same else G2.shape[0])
        per = self.factor_rows(n1 + n2, m)
        out = None
        for r in range(0, self.d_out, per):
            stop = min(r + per, self.d_out)
            size = (stop - r) * self.d_in
            J1 = self.weight_rows(A1, G1, r, stop, scratch("rows1", (n1, m, size), G1))
            if not same:
                J2 = self.weight_rows(A2, G2, r, stop, scratch("rows2", (n2, m, size), G2))
            t = contract(J1, J1 if same else J2, mode, paired)
            out = t if out is None else out.add_(t)
        if self.has_bias:
            b1 = G1.sum(2)
            out.add_(contract(b1, b1 if same else G2.sum(2), mode, paired))
        return out

    def outer(self, A, G):
        return self.outer_into(A, G, G.new_empty(G.shape[0], G.shape[1], self.numel))

    def outer_into(self, A, G, out):
        G, start = G.to(out.dtype), 0
        if self.slots[0] in self.indices:
            start = self.d_out * self.d_in
            self.weight_rows(A, G, 0, self.d_out, out[..., :start])
        if self.has_bias:
            torch.sum(G, 2, out=out[..., start:])
        return out

    def sources(self, A, G, J):
        if J is not None:
            return super().sources(A, G, J)
        out = [
            (
                self.indices[self.slots[0]],
                self.d_out,
                self.d_in,
                lambda s, a, b: self.weight_rows(A[s], G[s], a, b),
            )
        ]
        if self.has_bias:
            out.append(
                (self.indices[self.slots[1]], self.d_out, 1, lambda s, a, b: G[s].sum(2)[..., a:b])
            )
        return out


@register
class LinearRule(KronRule):
    types = (nn.Linear,)
    summary = (
        "any number of positions (tokens); pair sums over ``T × T`` positions or "
        "materialised per-sample gradients (kept, or rebuilt in each tile when memory is "
        "short), chosen per layer by a cost model."
    )

    def inputs(self, x):
        return x.reshape(x.shape[0], -1, self.d_in)
