"""Cost model: how each structured layer is computed, and how many samples a block holds.

Estimates are FLOP counts of the two exact ways to get a Kronecker-factored (Linear/Conv) layer's
NTK block:

* ``hadamard``: ``Σ_{t,s} (g_t·g'_s)(a_t·a'_s)`` per pair of samples —
  ``pairs · T² · (width + m_g · d_out)``; its ``T²`` pair tensors must fit the budget;
* ``outer``: materialise ``Σ_t g_t ⊗ a_t`` (``n · m · T · width · d_out``) then one GEMM —
  ``pairs · m_g · width · d_out``; keeps ``m · width · d_out`` numbers per sample;
* ``factored``: the same, materialised in each of the ``tiles`` kernel tiles a block of samples
  takes part in, from the kept ``(A, G)`` (``T · (width + m · d_out)`` numbers per sample, as
  ``hadamard``): ``outer``'s compute for a one-tile kernel with ``hadamard``'s memory;

where ``m_g`` is the number of cotangent blocks a GEMM produces (``m`` for trace/diagonal
kernels, ``m²`` for the full kernel).
"""

import re
from numbers import Integral

import numpy as np
import torch

from .gram import available_memory
from .projection import kron_side

# Host/device memory the engine may use beyond the output kernel, by default.
MEMORY_BUDGET = 2**30
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({u + "i": 2 ** (10 * i) for i, u in enumerate("kmgt", start=1)})


def parse_budget(value):
    """``memory_budget`` as a number of bytes: ``None``, an int, or a string like ``"4GiB"``.

    Units: ``B``, ``kB``/``MB``/``GB``/``TB`` (powers of 1000), ``KiB``/``MiB``/``GiB``/``TiB``
    (powers of 1024), case-insensitive; a number without a unit is bytes.
    """
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", value.lower())
        if match is None:
            raise ValueError(
                f"memory_budget={value!r} is not a size: pass bytes (an int) or a string "
                "like '512MiB', '4GiB' or '2GB'."
            )
        number, unit = match.groups()
        value = float(number) * _UNITS[unit or ""]
    elif isinstance(value, bool) or not isinstance(value, (Integral, np.integer, float)):
        raise ValueError(
            f"memory_budget must be None, a number of bytes or a string like '4GiB'; got {value!r}."
        )
    if not value >= 1:
        raise ValueError(f"memory_budget must be at least one byte; got {value!r}.")
    return int(value)


def memory_budget(device, budget=None):
    """Bytes the engine may use beyond the output kernel: ``budget`` (parsed by
    :func:`parse_budget`) if given; else ``min(1 GiB, available / 4)`` on the CPU and
    ``max(1 GiB, free / 4)`` on a GPU."""
    if budget is not None:
        return parse_budget(budget)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(MEMORY_BUDGET, free // 4)
    return min(MEMORY_BUDGET, max(64 * 2**20, available_memory() // 4))


def _blocks(m, mode):
    return m * m if mode == "full" else m


def costs(unit, m, mode, pairs, n, tiles_per_block):
    """FLOP estimates ``{form: cost}`` of a Kronecker unit's exact forms (see module docstring)."""
    T, w, d = unit.positions, unit.width, unit.d_out
    mg = _blocks(m, mode)
    materialise = n * m * T * w * d
    gemm = pairs * mg * w * d
    return {  # "factored" before "outer": it wins their tie (one tile), keeping less memory
        "hadamard": pairs * T * T * (w + mg * d + mg),
        "factored": tiles_per_block * materialise + gemm,
        "outer": materialise + gemm,
    }


def choose(unit, m, mode, pairs, n, block, itemsize, budget, prefer_hadamard=False, tiles=1):
    """The cheapest exact form of one unit, ignoring the memory of what it keeps per sample.

    ``tiles``: kernel tiles each block of samples takes part in (its ``"factored"`` gradients
    are materialised in each).
    """
    fits = _pair_tensors_fit(unit, m, mode, block, itemsize, budget)
    if prefer_hadamard and fits:
        return "hadamard"
    cost = costs(unit, m, mode, pairs, n, tiles)
    if not fits:
        del cost["hadamard"]
    return min(cost, key=cost.get)


def plan(units, generic_numel, m, mode, *, block_size, **sizes):
    """Set each unit's ``choice``; return ``(block, keep_all)``.

    ``sizes``: the keyword arguments of :func:`_plan_block` (``n1``, ``n2``, ``symmetric``,
    ``itemsize``, ``budget``, ``method``, ``projection``, ``projection_dim``). Each Kronecker
    unit takes its cheapest form; while the kept per-sample representations of all samples
    exceed the budget, the switches to a smaller form that add the least compute per byte
    saved are made first. ``keep_all``: every block's representation then fits, so each
    block is computed once; otherwise blocks hold at most ``budget / 2`` and column blocks are
    recomputed for each row block — and since the forms' costs and the pair tensors' memory
    depend on the block, the plan is made again for the smaller block until it settles.
    """
    largest = min(block_size, max(sizes["n1"], sizes["n2"], 1))
    while True:
        block, keep_all = _plan_block(units, generic_numel, m, mode, block_size, **sizes)
        if keep_all or block >= largest:
            return block, keep_all
        block_size = largest = block


def _plan_block(
    units,
    generic_numel,
    m,
    mode,
    block_size,
    *,
    n1,
    n2,
    symmetric,
    itemsize,
    budget,
    method="auto",
    projection=None,
    projection_dim=None,
):
    n = n1 if symmetric else n1 + n2
    pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    block = min(block_size, max(n1, n2, 1))
    tiles = -(-max(n1, n2, 1) // block)  # tiles per block of samples
    switches = []  # (extra compute per byte saved, unit, smaller form)
    for u in units:
        u.tile = (block if tiles == 1 else 2 * block, m)  # samples, cotangents of a tile
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
            opts = (m, mode, pairs, n, block, itemsize, budget)
            u.choice = choose(u, *opts, prefer_hadamard=method == "structured", tiles=tiles)
            if not (method == "structured" and u.choice == "hadamard"):
                cost = costs(u, m, mode, pairs, n, tiles)
                if not _pair_tensors_fit(u, m, mode, block, itemsize, budget):
                    del cost["hadamard"]
                switches += _smaller_forms(u, m, cost)
    per_sample = (sum(u.rep_size(m) for u in units) + m * generic_numel) * itemsize
    # memory decides: the switches with the least extra compute per byte saved first, one per unit
    switched = set()
    for _, u, form in sorted(switches, key=lambda s: s[0]):
        if n * per_sample <= budget:
            break
        if u in switched:
            continue
        before = u.rep_size(m)
        u.choice = form
        switched.add(u)
        per_sample -= (before - u.rep_size(m)) * itemsize
    keep_all = n * per_sample <= budget
    if not keep_all:
        block = max(1, min(block, budget // (2 * per_sample)))
    return block, keep_all


def _smaller_forms(unit, m, cost):
    """``[(extra compute per byte saved, unit, form)]`` for the forms in ``cost`` that keep less
    per sample than the unit's chosen one (materialised gradients can be the smaller: a conv
    whose ``T × (C + d_out)`` input and signals outnumber its weights)."""
    chosen, size, out = unit.choice, unit.rep_size(m), []
    for form in cost:
        unit.choice = form
        saved = size - unit.rep_size(m)
        if saved > 0:
            out.append((max(cost[form] - cost[chosen], 0) / saved, unit, form))
    unit.choice = chosen
    return out


def _pair_tensors_fit(unit, m, mode, block, itemsize, budget):
    T = unit.positions
    return T == 1 or block * block * T * T * (1 + _blocks(m, mode)) * itemsize <= budget // 4
