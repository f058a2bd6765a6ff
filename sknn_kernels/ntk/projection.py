"""Seeded Johnson–Lindenstrauss projection of per-sample gradients, block by block.

The projection ``Π ∈ {±1}^{P×k}`` (Rademacher) is never stored: each parameter's gradient is
cut into fixed chunks of rows and the chunk's ``Π`` block is regenerated from
``(seed, parameter index, chunk index)``. The chunking depends only on the parameter's shape
and ``k``, so the features do not depend on batch or block sizes (nor on which path computed
the gradient). With ``φ(x) = Πᵀ g(x) / √k``, ``E[Π Πᵀ] = k I`` gives ``E[<φ(x), φ(x')>] =
<g(x), g(x')>``: the projected kernel is unbiased, with variance ``O(1/k)``.
"""

import math

import torch

# Elements of one generated Π block; bounds the projection's scratch memory.
CHUNK_ELEMENTS = 2**22


def row_chunks(n_rows, row_len, k):
    """Fixed ``(start, stop)`` row ranges for a parameter with ``n_rows`` rows of ``row_len``."""
    per = max(1, CHUNK_ELEMENTS // (k * row_len))
    return [(s, min(s + per, n_rows)) for s in range(0, n_rows, per)]


def chunk_seed(seed, param_index, chunk_index):
    return (seed * 0x9E3779B97F4A7C15 + param_index * 0xBF58476D1CE4E5B9 + chunk_index) % 2**63


def rademacher(seed, param_index, chunk_index, shape, dtype, device):
    """The ``(cols, k)`` block of ``Π`` for one chunk of one parameter."""
    gen = torch.Generator(device=device)
    gen.manual_seed(chunk_seed(seed, param_index, chunk_index))
    signs = torch.randint(0, 2, shape, generator=gen, device=device, dtype=torch.int8)
    return signs.to(dtype).mul_(2).sub_(1)


class GradientRows:
    """How to read one parameter's per-sample gradient, a chunk of rows at a time.

    ``read(samples, start, stop)`` returns ``(len(samples), m, (stop - start) * row_len)``.
    """

    def __init__(self, index, group, n_rows, row_len, read):
        self.index = index
        self.group = group
        self.n_rows = n_rows
        self.row_len = row_len
        self.read = read


def project(sources, n, m, k, seed, *, dtype, device, batch_size):
    """Projected features ``{group: (n, m, k)}`` of the gradients described by ``sources``."""
    out = {}
    for src in sources:
        phi = out.setdefault(src.group, torch.zeros(n, m, k, dtype=dtype, device=device))
        for c, (r0, r1) in enumerate(row_chunks(src.n_rows, src.row_len, k)):
            P = rademacher(seed, src.index, c, ((r1 - r0) * src.row_len, k), dtype, device)
            for s0 in range(0, n, batch_size):
                samples = slice(s0, min(s0 + batch_size, n))
                phi[samples] += src.read(samples, r0, r1).to(dtype) @ P
    scale = 1.0 / math.sqrt(k)
    return {g: phi.mul_(scale) for g, phi in out.items()}
