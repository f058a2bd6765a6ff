"""Contractions of per-sample features and tiled assembly of Gram matrices.

A kernel is assembled in ``(block_size × block_size)`` tiles computed on the device and
copied into a host array (or an ``np.memmap`` given as ``out``). For a symmetric train kernel
only tiles on or above the diagonal are computed; the others are their transposes, and
diagonal tiles are symmetrised, so the result is exactly symmetric.
"""

import contextlib
import math
import os
import threading

import numpy as np
import torch

from .._progress import progress as iter_progress


def contract(J1, J2, mode, paired=False):
    """Kernel of per-sample features ``J: (n, m, p)`` reduced over the ``m`` cotangents.

    ``mode="trace"``: ``Σ_a <J1[i,a], J2[j,a]>`` -> ``(n1, n2)``; ``"diag"`` -> ``(n1, n2, m)``;
    ``"full"`` -> ``(n1, n2, m, m)``. ``paired=True`` gives the ``i == j`` entries only
    (``J1`` and ``J2`` then hold the same samples): ``(n,)``, ``(n, m)``, ``(n, m, m)``.
    """
    n1, m, p = J1.shape
    n2 = J2.shape[0]
    if paired:
        if mode == "trace":
            return (J1 * J2).sum((1, 2))
        if mode == "diag":
            return (J1 * J2).sum(2)
        return torch.bmm(J1, J2.transpose(1, 2))
    if mode == "trace":  # one GEMM: the cotangents are just more columns
        return J1.reshape(n1, m * p) @ J2.reshape(n2, m * p).T
    if mode == "diag":
        return torch.bmm(J1.transpose(0, 1), J2.permute(1, 2, 0)).permute(1, 2, 0)
    K = J1.reshape(n1 * m, p) @ J2.reshape(n2 * m, p).T
    return K.reshape(n1, m, n2, m).permute(0, 2, 1, 3)


_SCRATCH = threading.local()


@contextlib.contextmanager
def reusing_scratch():
    """Within the block, :func:`scratch` hands the same buffers out again.

    A large fresh CPU allocation is new pages from the OS, and writing them costs page faults
    that took longer than the GEMM filling them (37 MB: 13 ms of a 21 ms ``bmm``), so the
    per-sample gradients a tile materialises chunk after chunk reuse one buffer per slot.
    """
    owner = getattr(_SCRATCH, "buffers", None) is None
    if owner:
        _SCRATCH.buffers = {}
    try:
        yield
    finally:
        if owner:
            _SCRATCH.buffers = None


def scratch(slot, shape, like):
    """An uninitialised ``shape`` tensor like ``like``: slot ``slot``'s buffer, reused inside
    :func:`reusing_scratch` (valid until the next ``scratch(slot, ...)``), else a new one."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    numel, key = math.prod(shape), (slot, like.dtype, like.device)
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buf[:numel].view(shape)


def broadcast_to(x, like):
    """``x`` with trailing singleton axes so it broadcasts against ``like``."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def transpose_tile(tile):
    """``K[j, i]`` from ``K[i, j]``: swap the sample axes and, for full kernels, the outputs."""
    if tile.ndim == 4:
        return tile.permute(1, 0, 3, 2)
    return tile.transpose(0, 1)


def available_memory():
    """Bytes of host memory available now (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    try:  # pragma: no cover
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 2**63


def allocate(shape, dtype, out=None, what="kernel", count=1):
    """The host array for a kernel of ``shape``: ``out`` if given, else a new one.

    Raises ``MemoryError`` naming the size when ``count`` such arrays cannot fit in memory.
    """
    nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize * count
    if out is not None:
        if tuple(out.shape) != tuple(shape):
            raise ValueError(
                f"out has shape {tuple(out.shape)}; the {what} has shape {tuple(shape)}."
            )
        return out
    free = available_memory()
    if nbytes > free:
        raise MemoryError(
            f"The {what} of shape {tuple(shape)} needs {nbytes / 2**30:.3g} GiB "
            f"({np.dtype(dtype).name}), more than the {free / 2**30:.3g} GiB of memory available. "
            "Use a smaller kind (kind='pntk' or 'trace' instead of 'full'), fewer samples, or "
            "pass out=np.memmap(...) to write the kernel to disk."
        )
    return np.empty(shape, dtype=dtype)


def assemble(n1, n2, tile_fn, *, block_size, symmetric, outputs, progress=False):
    """Fill the arrays ``outputs`` (dict key -> ``(n1, n2, ...)``) tile by tile.

    ``tile_fn(i, rows, j, cols)`` returns a dict key -> tensor of shape
    ``(len(rows), len(cols), ...)`` for block indices ``i, j`` (``rows``/``cols`` are slices).
    With ``symmetric=True`` (``n1 == n2``, same samples) only ``j >= i`` is computed.
    ``progress=True`` shows a progress bar over the tiles (tqdm) when there is more than one.
    """
    starts1 = range(0, n1, block_size)
    starts2 = range(0, n2, block_size)
    tiles = [
        (i, slice(r0, min(r0 + block_size, n1)), j, slice(c0, min(c0 + block_size, n2)))
        for i, r0 in enumerate(starts1)
        for j, c0 in enumerate(starts2)
        if not (symmetric and j < i)
    ]
    # Inner bar (verbose >= 2 upstream): it vanishes when done so a log keeps one line per level.
    bar_verbose = progress if len(tiles) > 1 else 0
    for i, rows, j, cols in iter_progress(
        tiles, "kernel tiles", unit="tile", verbose=bar_verbose, leave=False
    ):
        for key, tile in tile_fn(i, rows, j, cols).items():
            if symmetric and i == j:
                tile = 0.5 * (tile + transpose_tile(tile))
            outputs[key][rows, cols] = tile.cpu().numpy()
            if symmetric and i != j:
                outputs[key][cols, rows] = transpose_tile(tile).cpu().numpy()
    return outputs
