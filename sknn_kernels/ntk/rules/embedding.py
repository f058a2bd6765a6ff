"""``nn.Embedding``: the token-equality Gram, never a dense ``V × D`` gradient.

The per-sample gradient of the table is ``Σ_t e_{id_t} ⊗ g_t``, so

    <grad(x), grad(x')> = Σ_{t,s} 1[id_t = id'_s] <g_t, g'_s>,

the Kronecker pair sum with token equality as the forward Gram. ``padding_idx`` rows get no
gradient (their positions drop out); ``max_norm`` (which rewrites the table in ``forward``)
and ``scale_grad_by_freq`` (a batch-dependent gradient) use the generic path.
"""

from torch import nn

from .base import Rule, register


@register
class EmbeddingRule(Rule):
    types = (nn.Embedding,)
    summary = (
        "token-equality Gram ``Σ_{t,s} 1[id_t = id'_s] <g_t, g'_s>`` (``padding_idx`` "
        "respected); never a dense ``V × D`` per-sample gradient."
    )
    slots = ("weight",)
    choices = ("hadamard",)
    sketchable = True

    def __init__(self, name, module, group, indices):
        super().__init__(name, module, group, indices)
        self.vocab = module.weight.shape[0]
        self.d_in = 1  # one id per position (for the cost model's per-sample sizes)

    @classmethod
    def eligible(cls, module):
        return module.max_norm is None and not module.scale_grad_by_freq and not module.sparse

    @staticmethod
    def signal_width(module):
        return module.weight.shape[1]

    def inputs(self, x):
        ids = x.reshape(x.shape[0], -1).long()
        pad = self.module.padding_idx
        return ids if pad is None else ids.masked_fill(ids == pad, -1)  # -1 matches nothing

    def pair_inputs(self, A1, A2, paired):
        a1 = A1[:, :, None] if paired else A1[:, None, :, None]
        a2 = A2[:, None, :] if paired else A2[None, :, None, :]
        return (a1 == a2) & (a1 >= 0)  # bool: multiplies the signal Gram as 0/1

    @property
    def sketch_width(self):
        return self.vocab

    sketch_cost = 1  # a row gather per position

    counter_inputs = True  # never a V × k matrix: the rows of P_in are hashed from the ids

    def project_inputs(self, A, rows_of):
        """Rows ``rows_of(ids)`` of ``P_in`` for the ids, zero at padding: ``(n, T, cols)``."""
        P = rows_of(A.clamp(min=0))
        return P * (A >= 0).unsqueeze(-1).to(P.dtype)

    def weight_rows(self, A, G, start, stop):
        """Rows ``start:stop`` of the per-sample table gradient: ``(n, m, rows·D)``.

        A scatter-add of each position's signal into its token's row (``n T D`` work), not a
        one-hot GEMM over the vocabulary (``n T V D``).
        """
        n, m = G.shape[:2]
        out = G.new_zeros(n, m, stop - start, self.d_out)
        i, t = A.ge(start).logical_and(A.lt(stop)).nonzero(as_tuple=True)
        # (n, rows, m, D) view of out: one (sample, row) index pair per position
        out.transpose(1, 2).index_put_((i, A[i, t] - start), G[i, :, t], accumulate=True)
        return out.reshape(n, m, -1)

    def outer(self, A, G):
        return self.weight_rows(A, G, 0, self.vocab)

    def sources(self, A, G, J):
        return [
            (
                self.indices["weight"],
                self.vocab,
                self.d_out,
                lambda s, a, b: self.weight_rows(A[s], G[s], a, b),
            )
        ]
