"""Kernels written to disk tile by tile, that a rerun of the same call resumes.

``empirical_ntk(..., out="K.npy")`` (a ``.npy`` file opened as ``np.memmap``) or
``out="K.zarr"`` (a Zarr array, ``pip install sknn_kernels[zarr]``) writes the kernel where it
lives, tile by tile, and records each finished tile in a sidecar **tile log**
``K.npy.tiles.jsonl``: a first line with the kernel's *key* — the network's parameter
fingerprint, hashes of the inputs (and labels), the kernel options, shape, dtype and tile size —
then one ``[i, j, "crc"]`` line per tile, appended (and flushed to disk) only after the tile's
values are, with a CRC-32 of the bytes the tile wrote. A rerun after an interruption reads the
log, checks each logged tile's bytes against its checksum and computes the missing tiles and
those that no longer match (a deleted, replaced, truncated or altered file: a warning names
them and why; a file that cannot be read is refused with an error saying what to do). A log
whose key differs (another network, other data, other options) is refused with an error, so
results of two different kernels are never mixed. A half-written last line (the process killed
while appending) is ignored: that tile is simply computed again. :func:`verify_stored` checks a
finished kernel (or stored features) the same way without computing anything.

Projected features written with ``projected_ntk_features(..., out="F.npy")`` use the same log,
one line per row block (``[i, 0, "crc"]``).

The log is plain text on purpose: appending is O(1) per tile (rewriting a JSON or Zarr
attribute would be O(tiles) each time, quadratic for a 1M-sample kernel), and a user can read it.
"""

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from ._integrity import CHECKSUM, bad_tiles, npy_layout, release, sync, tile_checksum, tile_regions

FORMAT = "sknn_kernels tile log"
VERSION = 2  # 2: a checksum per tile, the layout (symmetric, rows) in the header
SUFFIXES = (".npy", ".zarr")
_ID_ATTR = "sknn_kernels_array_id"
_TRAILER = b"\n#sknn_kernels array "  # + the log's array id, after a .npy file's data
_REPLACED = "it is not the file its log was started with (it was replaced)"


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
    """A kernel (or features) array on disk (``.npy`` memmap or Zarr) and its tile log.

    Use :meth:`open`, which creates the files or resumes them. ``array`` is the kernel,
    ``done`` the finished tiles ``{(i, j): checksum}`` (block indices, ``j >= i`` for symmetric
    kernels; ``(i, 0)`` for row blocks), ``block`` the tile side that the log was started with
    (a resumed call keeps it so its tiles line up with the recorded ones).
    """

    def __init__(self, path, array, block, done, geometry):
        self.path = Path(path)
        self.array = array
        self.block = block
        self.done = done
        self.geometry = geometry

    @classmethod
    def open(cls, path, *, shape, dtype, block, key, symmetric=False, rows=False):
        """Create the kernel at ``path`` or resume the one there (same ``key`` only).

        ``symmetric``: tiles ``(i, j)`` with ``j > i`` also wrote their transpose;
        ``rows``: the tiles are row blocks (stored features). Logged tiles whose bytes no
        longer match their checksum are dropped, with a warning, to be computed again.
        """
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
            "symmetric": bool(symmetric),
            "rows": bool(rows),
            "checksum": CHECKSUM,
            "key": key,
        }
        log = log_path(path)
        if log.exists():
            old, done = _read_log(log)
            _check_same(path, old, header)
            block = old["block"]
            geometry = (tuple(shape), block, bool(symmetric), bool(rows))
            array, problem = _reopen(path, suffix, shape, dtype, block, old, len(done))
            bad = sorted(done) if problem == "missing" else bad_tiles(array, done, geometry)
            if bad:
                _warn_bad(path, bad, problem)
                for tile in bad:
                    del done[tile]
                _write_log(log, old, done)  # the log holds only tiles that can be trusted
        else:
            if path.exists():
                raise FileExistsError(
                    f"{str(path)!r} exists but has no tile log {log.name!r}, so it is not a "
                    "resumable kernel written by sknn_kernels: delete it or choose another path."
                )
            header["array_id"] = uuid.uuid4().hex
            _write_log(log, header, {})  # the header appears whole or not at all
            array = _open_array(path, suffix, shape, dtype, block, create=True, rows=rows)
            _mark(path, array, header["array_id"])
            done, geometry = {}, (tuple(shape), int(block), bool(symmetric), bool(rows))
        return cls(path, array, block, done, geometry)

    def record(self, tiles):
        """Mark tiles ``[(i, j), ...]`` as done once their values reached the disk, each with
        the checksum of its bytes read back from the array."""
        tiles = [(int(i), int(j)) for i, j in tiles]
        sync(self.array, [r for t in tiles for r in tile_regions(self.geometry, *t)])
        sums = {t: tile_checksum(self.array, self.geometry, *t) for t in tiles}
        release(self.array)
        with open(log_path(self.path), "a") as fh:
            fh.write("".join(f'[{i}, {j}, "{crc}"]\n' for (i, j), crc in sums.items()))
            fh.flush()
            os.fsync(fh.fileno())
        self.done.update(sums)


def verify_stored(path):
    """Check a kernel (or projected features) written to a path against its tile log.

    Reads every logged tile back and compares its bytes with the checksum recorded when it
    was written; computes nothing. Rerunning the call that wrote ``path`` recomputes the
    tiles reported here (and the missing ones).

    Parameters
    ----------
    path : str or path
        The ``.npy`` or ``.zarr`` path passed as ``out`` (its log is ``<path>.tiles.jsonl``).

    Returns
    -------
    report : dict
        ``"tiles"``: how many tiles the kernel has; ``"logged"``: how many its log records
        as done; ``"bad"``: sorted list of the logged tiles ``(i, j)`` whose bytes do not
        match (``(i, 0)`` for row blocks of features); ``"problems"``: what is wrong with
        the file as a whole (missing, unreadable, cut short, replaced), if anything;
        ``"complete"``: every tile logged and none bad.

    Raises
    ------
    FileNotFoundError
        When ``path`` has no tile log.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> from sknn_kernels.ntk import empirical_ntk, verify_stored
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "K.npy")
    >>> K = empirical_ntk(net, torch.randn(6, 3), device="cpu", block_size=4, out=path)
    >>> report = verify_stored(path)
    >>> report["complete"], report["tiles"], report["bad"]
    (True, 3, [])
    >>> K[0, 0] += 1  # a torn tile
    >>> K.flush()
    >>> verify_stored(path)["bad"]
    [(0, 0)]
    """
    path = Path(path)
    log = log_path(path)
    if not log.exists():
        raise FileNotFoundError(
            f"{str(path)!r} has no tile log {log.name!r}: it was not written by sknn_kernels "
            "with out=<path>, so there is nothing to check it against."
        )
    header, done = _read_log(log)
    if header.get("version") != VERSION:
        raise ValueError(_old_version(path, header))
    shape, block = tuple(header["shape"]), header["block"]
    symmetric, rows = header["symmetric"], header["rows"]
    nb = [-(-s // block) for s in shape[:2]]
    tiles = nb[0] if rows else nb[0] * (nb[0] + 1) // 2 if symmetric else nb[0] * nb[1]
    problems, bad = [], sorted(done)
    array = None
    if not path.exists():
        problems.append(f"{str(path)!r} is missing")
    elif path.suffix.lower() == ".zarr":
        try:
            array = _zarr().open_array(str(path), mode="r")
        except Exception as exc:
            problems.append(f"{str(path)!r} cannot be opened as a Zarr array ({exc})")
        else:
            if array.attrs.get(_ID_ATTR) != header.get("array_id"):
                problems.append(f"{str(path)!r}: {_REPLACED}")
    else:
        layout = npy_layout(path)
        if layout is None:
            problems.append(f"{str(path)!r} is not a readable .npy file")
        elif layout[1] < layout[0] + int(np.prod(shape)) * np.dtype(header["dtype"]).itemsize:
            problems.append(f"{str(path)!r} is cut short ({layout[1]} bytes)")
        else:
            array = np.load(path, mmap_mode="r")
            if _npy_id(path, array.offset + array.nbytes) != header.get("array_id"):
                problems.append(f"{str(path)!r}: {_REPLACED}")
    if array is not None:
        if tuple(array.shape) != shape or np.dtype(array.dtype).name != header["dtype"]:
            problems.append(f"{str(path)!r} holds an array of another shape or dtype")
        else:
            bad = bad_tiles(array, done, (shape, block, symmetric, rows))
    return {
        "tiles": tiles,
        "logged": len(done),
        "bad": bad,
        "problems": problems,
        "complete": len(done) == tiles and not bad,
    }


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Writing a kernel to a '.zarr' path needs the zarr package: "
            "pip install 'sknn_kernels[zarr]' (or write to a '.npy' path instead)."
        ) from exc
    return zarr


def _open_array(path, suffix, shape, dtype, block, create, rows=False):
    if suffix == ".npy":
        mode = "w+" if create else "r+"
        array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=tuple(shape))
    else:
        zarr = _zarr()
        if create:
            # one chunk per tile (per row block for features)
            chunks = (block,) + tuple(shape[1:]) if rows else (block, block) + tuple(shape[2:])
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


def _mark(path, array, array_id):
    """Write the log's random id into the array file, so that a replaced file is recognised:
    a Zarr attribute, or a trailer after a ``.npy`` file's data (NumPy reads only the data)."""
    if isinstance(array, np.memmap):
        with open(path, "r+b") as fh:
            fh.seek(array.offset + array.nbytes)
            fh.write(_TRAILER + str(array_id).encode() + b"\n")
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    else:
        array.attrs[_ID_ATTR] = array_id


def _npy_id(path, end):
    """The id in the trailer of a ``.npy`` file whose data ends at byte ``end``, or ``None``."""
    with open(path, "rb") as fh:
        fh.seek(end)
        trailer = fh.read(len(_TRAILER) + 33)
    if not trailer.startswith(_TRAILER):
        return None
    return trailer[len(_TRAILER) :].strip().decode(errors="replace")


def _reopen(path, suffix, shape, dtype, block, header, logged):
    """The array of a resumed kernel and what is wrong with the file as a whole, if anything:
    ``"missing"`` (created anew: every logged tile is recomputed), a description (its
    logged tiles are checked one by one) or ``None``. Unreadable files are refused."""
    fix = (
        f"delete {str(path)!r} (its {logged} logged tiles will be computed again) or put "
        "back the file that was there"
    )
    if not path.exists():
        array = _open_array(path, suffix, shape, dtype, block, create=True, rows=header["rows"])
        _mark(path, array, header.get("array_id"))
        return array, "missing"
    problem = None
    if suffix == ".zarr":
        try:
            array = _open_array(path, suffix, shape, dtype, block, create=False)
        except ValueError:
            raise
        except Exception as exc:  # any unreadable store
            msg = f"{str(path)!r} cannot be opened as a Zarr array ({exc}): {fix}."
            raise ValueError(msg) from exc
        if array.attrs.get(_ID_ATTR) != header.get("array_id"):
            problem = _REPLACED
    else:
        layout = npy_layout(path)
        if layout is None:
            raise ValueError(
                f"{str(path)!r} is not a readable .npy file (its header is damaged or cut "
                f"short), so the tiles of its log {log_path(path).name!r} cannot be checked: "
                f"{fix}."
            )
        offset, size, npy_shape, npy_dtype = layout
        end = offset + int(np.prod(shape)) * dtype.itemsize
        if tuple(npy_shape) == tuple(shape) and npy_dtype == dtype:  # else refused below
            if size < end:
                os.truncate(path, end)  # map it whole; the lost tiles fail their checksums
                problem = f"it was cut short ({size} of {end} bytes)"
            elif _npy_id(path, end) != header.get("array_id"):
                problem = _REPLACED
        array = _open_array(path, suffix, shape, dtype, block, create=False)
    if problem is not None:  # the file is this log's from now on
        _mark(path, array, header.get("array_id"))
    return array, problem


def _warn_bad(path, bad, problem):
    shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    why = (
        "the file is missing"
        if problem == "missing"
        else (f"{problem}; " if problem else "")
        + "their bytes differ from the checksums logged when they were written "
        "(the file was replaced or altered afterwards)"
    )
    warnings.warn(
        f"{str(path)!r}: {len(bad)} logged tile(s) cannot be trusted and are computed again "
        f"({why}): {shown}.",
        UserWarning,
        stacklevel=4,
    )


def _write_log(log, header, done):
    """Write a whole log atomically (a temporary file renamed over it)."""
    tmp = log.with_name(log.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(header) + "\n")
        fh.write("".join(f'[{i}, {j}, "{crc}"]\n' for (i, j), crc in sorted(done.items())))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, log)


def _read_log(log):
    lines = log.read_text().splitlines()
    try:
        header = json.loads(lines[0])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(log)!r} is not a tile log of sknn_kernels.") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{str(log)!r} is not a tile log of sknn_kernels.")
    done = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            i, j, crc = json.loads(line)
        except (json.JSONDecodeError, ValueError, TypeError):
            if number == len(lines):  # cut short by a kill while appending: redo that tile
                continue
            raise ValueError(f"{str(log)!r}, line {number}: not a logged tile.") from None
        done[(int(i), int(j))] = str(crc)  # a tile logged again: its latest checksum
    return header, done


def _old_version(path, header):
    return (
        f"{str(path)!r} was written by another version of sknn_kernels (tile log version "
        f"{header.get('version')}, this one writes {VERSION}: a checksum per tile), so its "
        f"tiles cannot be checked: delete {str(path)!r} and {log_path(path).name!r} to "
        "compute it again."
    )


def _check_same(path, old, new):
    """Refuse to resume a kernel computed from another network, data or options."""
    if old.get("version") != new["version"]:
        raise ValueError(_old_version(path, old))
    diff = [
        name
        for name in sorted(set(old["key"]) | set(new["key"]))
        if old["key"].get(name) != new["key"].get(name)
    ]
    diff += [name for name in ("shape", "dtype", "symmetric", "rows") if old[name] != new[name]]
    if diff:
        raise ValueError(
            f"{str(path)!r} holds (part of) a different kernel: {', '.join(diff)} "
            "differ from this call's. Resuming would mix two kernels; delete "
            f"{str(path)!r} and {log_path(path).name!r} to start over, or choose another path."
        )
