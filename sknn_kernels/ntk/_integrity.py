"""Integrity of kernels and features on disk: a checksum per tile, checked before it is trusted.

The tile log (:mod:`sknn_kernels.ntk.store`) records, for each finished tile, a CRC-32 of the
bytes the tile wrote, read back from the array once they reached the disk (for a symmetric
kernel, the tile and its mirror image below the diagonal). A resumed call recomputes every
logged tile whose bytes no longer match — a deleted, replaced, truncated or torn file — with a
warning naming them and why, instead of returning a kernel whose logged tiles were never
recomputed. The file's identity (the log's random id, written into the array: a Zarr attribute
or a trailer after a ``.npy`` file's data) and size say what happened to the file as a whole. CRC-32 (zlib) runs at memory speed: checking a finished kernel costs one read of it,
negligible next to computing it.
"""

import mmap
import os
import zlib
from pathlib import Path

import numpy as np

CHECKSUM = "crc32"


def regions(shape, block, i, j, *, symmetric, rows):
    """Index tuples of what tile ``(i, j)`` wrote (row block ``i`` when ``rows``)."""
    r = slice(i * block, min((i + 1) * block, shape[0]))
    if rows:
        return [(r,)]
    c = slice(j * block, min((j + 1) * block, shape[1]))
    return [(r, c)] + ([(c, r)] if symmetric and i != j else [])


def checksum(array, parts):
    """CRC-32 (8 hex digits) of the bytes of ``array`` in the regions ``parts``, in order."""
    crc = 0
    for region in parts:
        values = np.ascontiguousarray(array[region])
        crc = zlib.crc32(memoryview(values.reshape(-1).view(np.uint8)), crc)
    return f"{crc:08x}"


def bad_tiles(array, done, geometry):
    """``[(i, j)]`` of the logged tiles ``done`` (``{(i, j): crc}``) whose bytes differ now."""
    bad = [
        tile for tile, crc in sorted(done.items()) if crc != tile_checksum(array, geometry, *tile)
    ]
    release(array)
    return bad


def tile_checksum(array, geometry, i, j):
    """:func:`checksum` of what tile ``(i, j)`` wrote."""
    return checksum(array, tile_regions(geometry, i, j))


def tile_regions(geometry, i, j):
    """:func:`regions` of tile ``(i, j)`` for ``geometry = (shape, block, symmetric, rows)``."""
    shape, block, symmetric, rows = geometry
    return regions(shape, block, i, j, symmetric=symmetric, rows=rows)


def release(array):
    """Drop the pages of a memmap that reached the disk from this process's resident set (a
    kernel larger than memory must not count against it; reads map them back)."""
    mm = getattr(array, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def sync(array, parts):
    """Make what was written to ``parts`` of ``array`` durable before its tiles are logged.

    A memmap: ``flush`` (``msync``). A Zarr array in a local directory: ``fsync`` each chunk
    file of the regions and the directories holding them (Zarr 3 writes chunks through a
    temporary file and a rename, and syncs neither).
    """
    if isinstance(array, np.memmap):
        array.flush()
        return
    root = getattr(getattr(array, "store", None), "root", None)
    if root is None:  # not a local directory: its store decides durability
        return
    base = Path(str(root)) / (array.path or "")
    dirs = set()
    for region in parts:
        for key in _chunk_keys(array, region):
            path = base / key
            if path.exists():  # absent: a chunk of fill values zarr does not write
                fsync(path)
                dirs.add(path.parent)
    for d in dirs:
        fsync(d)


def _chunk_keys(array, region):
    """The Zarr chunk keys covering ``region`` (slices over the leading dimensions)."""
    spans = []
    for d, (size, chunk) in enumerate(zip(array.shape, array.chunks)):
        sl = region[d] if d < len(region) else slice(0, size)
        spans.append(range(sl.start // chunk, -(-sl.stop // chunk)))
    coords = [()]
    for span in spans:
        coords = [c + (k,) for c in coords for k in span]
    return [array.metadata.encode_chunk_key(c) for c in coords]


def fsync(path):
    """``fsync`` a file or directory (directories: where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def npy_layout(path):
    """``(data offset, file size, shape, dtype)`` of a ``.npy`` file; ``None`` if unreadable."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            return fh.tell(), os.fstat(fh.fileno()).st_size, shape, dtype
    except (OSError, ValueError, EOFError):
        return None
