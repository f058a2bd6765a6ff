"""Kernels written to disk tile by tile, that a rerun of the same call resumes.

``empirical_ntk(..., out="K.npy")`` (a ``.npy`` file opened as ``np.memmap``) or
``out="K.zarr"`` (a Zarr array, ``pip install sknn_kernels[zarr]``) writes the kernel where it
lives, tile by tile, and records each finished tile in a sidecar **tile log**
``K.npy.tiles.jsonl``: a first line with the kernel's *key* — the network's parameter
fingerprint, hashes of the inputs (and labels), the kernel options, shape, dtype and tile size —
then one ``[i, j]`` line per tile, appended (and flushed to disk) only after the tile's values
are. A rerun after an interruption reads the log and computes only the missing tiles; a log
whose key differs (another network, other data, other options) is refused with an error, so
results of two different kernels are never mixed. A half-written last line (the process killed
while appending) is ignored: that tile is simply computed again.

The log is plain text on purpose: appending is O(1) per tile (rewriting a JSON or Zarr
attribute would be O(tiles) each time, quadratic for a 1M-sample kernel), and a user can read it.
"""

import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np

FORMAT = "sknn_kernels tile log"
VERSION = 1
SUFFIXES = (".npy", ".zarr")


def is_path(out):
    return isinstance(out, (str, os.PathLike))


def digest(*parts):
    """A short hex hash of tensors / arrays (dtype, shape, bytes) and strings, in order."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if part is None:
            h.update(b"None|")
            continue
        if hasattr(part, "detach"):  # torch tensor
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype.str}|{part.shape}|".encode())
            h.update(memoryview(part.reshape(-1).view(np.uint8)))
        else:
            h.update(f"{part}|".encode())
    return h.hexdigest()


def log_path(path):
    """The tile log next to the kernel ``path``."""
    return Path(str(path) + ".tiles.jsonl")


class KernelStore:
    """A kernel array on disk (``.npy`` memmap or Zarr) and its tile log.

    Use :meth:`open`, which creates the files or resumes them. ``array`` is the kernel,
    ``done`` the set of finished tiles ``(i, j)`` (block indices, ``j >= i`` for symmetric
    kernels), ``block`` the tile side that the log was started with (a resumed call keeps it so
    its tiles line up with the recorded ones).
    """

    def __init__(self, path, array, block, done):
        self.path = Path(path)
        self.array = array
        self.block = block
        self.done = done

    @classmethod
    def open(cls, path, *, shape, dtype, block, key):
        """Create the kernel at ``path`` or resume the one there (same ``key`` only)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(
                f"out={str(path)!r}: a kernel written to disk needs a path ending in '.npy' "
                "(a memory-mapped NumPy file) or '.zarr' (a Zarr array); or pass an array "
                "(e.g. np.memmap) to out."
            )
        if suffix == ".zarr":
            _zarr()  # clear error before anything is written
        dtype = np.dtype(dtype)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "shape": [int(s) for s in shape],
            "dtype": dtype.name,
            "block": int(block),
            "key": key,
        }
        log = log_path(path)
        if log.exists():
            old, done = _read_log(log)
            _check_same(path, old, header)
            block = old["block"]
            array = _open_array(path, suffix, shape, dtype, block, create=not path.exists())
        else:
            if path.exists():
                raise FileExistsError(
                    f"{str(path)!r} exists but has no tile log {log.name!r}, so it is not a "
                    "resumable kernel written by sknn_kernels: delete it or choose another path."
                )
            tmp = log.with_name(log.name + ".tmp")
            tmp.write_text(json.dumps(header) + "\n")
            os.replace(tmp, log)  # the header appears whole or not at all
            array = _open_array(path, suffix, shape, dtype, block, create=True)
            done = set()
        return cls(path, array, block, done)

    def record(self, tiles):
        """Mark tiles ``[(i, j), ...]`` as done, after their values reached the disk."""
        if isinstance(self.array, np.memmap):
            self.array.flush()
            # the written pages are on disk now: drop them from this process's resident set,
            # so a kernel larger than memory does not count against it (reads map them back)
            mm = getattr(self.array, "_mmap", None)
            if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)
        with open(log_path(self.path), "a") as fh:
            fh.write("".join(f"[{int(i)}, {int(j)}]\n" for i, j in tiles))
            fh.flush()
            os.fsync(fh.fileno())
        self.done.update((int(i), int(j)) for i, j in tiles)


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Writing a kernel to a '.zarr' path needs the zarr package: "
            "pip install 'sknn_kernels[zarr]' (or write to a '.npy' path instead)."
        ) from exc
    return zarr


def _open_array(path, suffix, shape, dtype, block, create):
    if suffix == ".npy":
        mode = "w+" if create else "r+"
        array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=tuple(shape))
    else:
        zarr = _zarr()
        if create:
            chunks = (block, block) + tuple(shape[2:])  # one chunk per tile
            array = zarr.open_array(
                str(path), mode="w", shape=tuple(shape), chunks=chunks, dtype=dtype
            )
        else:
            array = zarr.open_array(str(path), mode="r+")
    if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != dtype:
        raise ValueError(
            f"{str(path)!r} holds an array of shape {tuple(array.shape)} and dtype "
            f"{np.dtype(array.dtype).name}, but its tile log describes {tuple(shape)} "
            f"{dtype.name}: the files do not belong together; delete both to start over."
        )
    return array


def _read_log(log):
    lines = log.read_text().splitlines()
    try:
        header = json.loads(lines[0])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(log)!r} is not a tile log of sknn_kernels.") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{str(log)!r} is not a tile log of sknn_kernels.")
    done = set()
    for number, line in enumerate(lines[1:], start=2):
        try:
            i, j = json.loads(line)
        except (json.JSONDecodeError, ValueError, TypeError):
            if number == len(lines):  # cut short by a kill while appending: redo that tile
                continue
            raise ValueError(f"{str(log)!r}, line {number}: not a tile index pair.") from None
        done.add((int(i), int(j)))
    return header, done


def _check_same(path, old, new):
    """Refuse to resume a kernel computed from another network, data or options."""
    diff = [
        name
        for name in sorted(set(old["key"]) | set(new["key"]))
        if old["key"].get(name) != new["key"].get(name)
    ]
    diff += [name for name in ("shape", "dtype") if old[name] != new[name]]
    if old.get("version") != new["version"]:
        diff.append("version")
    if diff:
        raise ValueError(
            f"{str(path)!r} holds (part of) a different kernel: {', '.join(diff)} "
            "differ from this call's. Resuming would mix two kernels; delete "
            f"{str(path)!r} and {log_path(path).name!r} to start over, or choose another path."
        )
