"""Cost model: how each structured layer is computed, and how many samples a block holds.

Estimates are FLOP counts of the two exact ways to get a Kronecker-factored (Linear/Conv) layer's
NTK block:

* ``hadamard``: ``Σ_{t,s} (g_t·g'_s)(a_t·a'_s)`` per pair of samples —
  ``pairs · T² · (width + m_g · d_out)``; its ``T²`` pair tensors must fit the budget;
* ``outer``: materialise ``Σ_t g_t ⊗ a_t`` (``n · m · T · width · d_out``) then one GEMM —
  ``pairs · m_g · width · d_out``;

where ``m_g`` is the number of cotangent blocks a GEMM produces (``m`` for trace/diagonal
kernels, ``m²`` for the full kernel).
"""

import torch

from .gram import available_memory
from .projection import kron_side

# Host/device memory the engine may use beyond the output kernel.
MEMORY_BUDGET = 512 * 2**20


def memory_budget(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(MEMORY_BUDGET, free // 4)
    return min(MEMORY_BUDGET, max(64 * 2**20, available_memory() // 4))


def _blocks(m, mode):
    return m * m if mode == "full" else m


def choose(unit, m, mode, pairs, n, block, itemsize, budget, prefer_hadamard=False):
    """``"hadamard"`` or ``"outer"`` for one unit (both exact)."""
    T, w, d = unit.positions, unit.width, unit.d_out
    mg = _blocks(m, mode)
    fits = T == 1 or block * block * T * T * (1 + mg) * itemsize <= budget // 4
    if not fits:
        return "outer"
    if prefer_hadamard:
        return "hadamard"
    hadamard = pairs * T * T * (w + mg * d + mg)
    outer = n * m * T * w * d + pairs * mg * w * d
    return "hadamard" if hadamard <= outer else "outer"


def plan(
    units,
    generic_numel,
    m,
    mode,
    *,
    n1,
    n2,
    symmetric,
    block_size,
    itemsize,
    budget,
    method="auto",
    projection=None,
    projection_dim=None,
):
    """Set each unit's ``choice``; return ``(block, keep_all)``.

    ``keep_all``: every block's per-sample representation fits in the budget, so each block
    is computed once; otherwise blocks hold at most ``budget / 2`` and column blocks are
    recomputed for each row block.
    """
    n = n1 if symmetric else n1 + n2
    pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    block = min(block_size, max(n1, n2, 1))
    for u in units:
        u.side = None
        if projection == "structured" and u.sketchable:
            u.side = kron_side(u.positions, u.sketch_cost, u.d_out, u.numel, m, projection_dim)
        if not u.kron or len(u.choices) == 1:
            u.choice = u.choices[0]
        elif projection == "structured" and u.sketchable and u.side is not None:
            u.choice = "hadamard"  # keeps (A, G): the Kronecker projection reads them
        elif projection:  # keep whichever form is smaller; the projection costs the same
            u.choice = (
                "hadamard"
                if u.positions * (u.width + m * u.d_out) <= m * u.width * u.d_out
                else "outer"
            )
        else:
            u.choice = choose(
                u,
                m,
                mode,
                pairs,
                n,
                block,
                itemsize,
                budget,
                prefer_hadamard=method == "structured",
            )
    per_sample = (sum(u.rep_size(m) for u in units) + m * generic_numel) * itemsize
    if n * per_sample > budget and not projection:
        # blocks that do not fit are recomputed for every row block (whole forward/backward
        # passes, quadratic in n): memory decides, each layer keeps its smaller form
        for u in units:
            if u.kron and len(u.choices) > 1 and method != "structured":
                u.choice = "outer"
                outer = u.rep_size(m)
                u.choice = "hadamard"
                u.choice = "hadamard" if u.rep_size(m) < outer else "outer"
        per_sample = (sum(u.rep_size(m) for u in units) + m * generic_numel) * itemsize
    keep_all = n * per_sample <= budget
    if not keep_all:
        block = max(1, min(block, budget // (2 * per_sample)))
    return block, keep_all
