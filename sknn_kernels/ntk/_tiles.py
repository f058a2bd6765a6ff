"""Kernel tiles (and row blocks of projected features) through joblib, and resumable stores.

``n_jobs=None`` calls the engine as before: one process, nothing pickled. Otherwise:

* **One plan, made here.** The engine probes the network and plans the tiles (tile side,
  Hadamard or materialised per layer) in the calling process; it is then pickled once
  (``torch.save``) into a ``uint8`` array, the *payload*. Every worker unpickles it once and
  keeps the engine in a small per-process cache keyed by the payload's hash, so workers make
  exactly the serial computation and their tiles are bitwise those of ``n_jobs=None``.
* **The network travels once per worker, not per tile.** The payload is a top-level argument
  of every task: joblib's Dask backend scatters such arrays to the cluster once per call (workers
  fetch it once and keep it), loky memory-maps arrays above 1 MB to a shared file, and under Ray
  the payload is ``ray.put`` once and tasks carry only its reference. Each task carries only
  the samples of its tiles.
* **Tasks are runs of tiles of one row block** (at most ``_TILES_PER_TASK``), as the serial
  engine does: the row block's per-sample representation is computed once per task, each column
  block once per tile, so a worker holds one row block, one column block and its tiles: memory
  set by ``batch_size``/``block_size``, not by ``n``. When the plan says every block fits the
  engine's memory budget (the serial loop then keeps them all), each worker keeps the blocks it
  computed for its later tasks of the same call. Symmetric kernels compute each off-diagonal
  tile once (``j >= i``). Tasks in one process take turns (the engine hooks its layers).
* **Results are written where they belong as tasks finish** (``return_as="generator_unordered"``),
  by this process: into the in-memory array, the user's ``np.memmap`` or a resumable store
  (:mod:`sknn_kernels.ntk.store`), whose tile log is appended after each task. Workers need no
  shared file system.
"""

import collections
import io
import itertools
import threading
import uuid
import warnings

import joblib
import numpy as np
import torch

from .._progress import ProgressBar
from ._numerics import no_tf32, resolve_seed
from .gradients import n_cotangents
from .gram import contract, transpose_tile
from .store import KernelStore, digest, is_path
from .structured import Recorder

try:  # a dependency of joblib >= 1.5; vendored by older joblib
    import cloudpickle
except ImportError:  # pragma: no cover
    from joblib.externals import cloudpickle

# Tiles per task: a task recomputes its row block once, so longer runs waste less; shorter runs
# balance the workers and bound the memory a task's results take.
_TILES_PER_TASK = 8
_ENGINES = collections.OrderedDict()  # per worker process: payload hash -> engine
_BLOCKS = {}  # per worker process: call id -> {(source, block index): block}, latest call only
_LOADS = 0  # engines unpickled by this process (tests check: once per worker and call)
# The engine hooks its layers while it computes: tasks sharing a process (a Dask worker with
# several threads) take turns; torch's own threads still parallelise each task.
_LOCK = threading.Lock()


class _Rows:
    """Samples ``[start, start + len)`` of a larger set, indexed with the larger set's slices.

    ``NTKEngine._block`` slices inputs and labels by absolute row numbers (its error messages
    name them), so a task's shipped rows keep their position.
    """

    def __init__(self, data, start):
        self.data, self.start = data, start

    def __getitem__(self, sl):
        return self.data[sl.start - self.start : sl.stop - self.start]


def _aligned_copy(t, like=None):
    """A copy of ``t`` whose address is ``like``'s modulo 64 bytes (default: 64-byte aligned).

    Vectorised CPU kernels (GEMM, convolutions) peel unaligned leading elements, which can
    change a result's last bit: a tile computed from a copy must see the same alignment as
    the rows the serial loop slices. (A plain view would also pickle its whole storage.)
    """
    shift = 0 if like is None else (like.data_ptr() % 64) // t.element_size()
    buf = torch.empty(shift + t.numel(), dtype=t.dtype)  # torch's CPU allocator: 64-aligned
    out = buf[shift:].view(t.shape)
    out.copy_(t)
    return out


def _ship(X, rows):
    """Rows of inputs or labels for a task, aligned as in ``X`` (see :func:`_aligned_copy`)."""
    if X is None:
        return None
    part = X[rows]
    if hasattr(part, "map"):
        part = part.map(lambda t: _aligned_copy(t, t))
    else:
        part = _aligned_copy(part, part)
    return _Rows(part, rows.start)


def _canonical(X):
    """``X`` (inputs) with every tensor 64-byte aligned, so that a resumed kernel, computed
    in another process, slices its rows at the same alignments as the interrupted one."""
    return X.map(lambda t: t if t.data_ptr() % 64 == 0 else _aligned_copy(t))


# --------------------------------------------------------------------------- the engine on workers
def _payload(engine):
    """The planned engine as a ``uint8`` array and its hash (see the module docstring)."""
    buf = io.BytesIO()
    # cloudpickle: networks defined in a notebook or script (__main__) and network_output
    # lambdas travel by value; torch.save keeps tensors compact
    torch.save(engine, buf, pickle_module=cloudpickle)
    payload = np.frombuffer(buf.getbuffer(), dtype=np.uint8).copy()
    name = type(joblib.parallel.get_active_backend()[0]).__name__
    token = f"{digest(payload)}@{engine.device}"  # workers load it onto that device if they can
    if name == "RayBackend":  # Ray copies task arguments each time; its object store once
        import ray

        payload = ray.put(payload)
    return payload, token


def _engine(payload, token):
    """The engine of ``payload`` in this process, unpickled once per process."""
    if token in _ENGINES:
        _ENGINES.move_to_end(token)
        return _ENGINES[token]
    global _LOADS
    _LOADS += 1
    if not isinstance(payload, np.ndarray):  # a Ray object reference
        import ray

        payload = ray.get(payload)
    _, sep, wanted = token.rpartition("@")
    device = _device(torch.device(wanted) if sep else None)
    engine = torch.load(io.BytesIO(payload.tobytes()), map_location=device, weights_only=False)
    engine.device = engine.adapter.device = device
    _ENGINES[token] = engine
    while len(_ENGINES) > 2:
        _ENGINES.popitem(last=False)
    return engine


def _blocks(call):
    """The block cache of kernel call ``call`` in this process (earlier calls' are freed)."""
    if call not in _BLOCKS:
        _BLOCKS.clear()
        _BLOCKS[call] = {}
    return _BLOCKS[call]


def _reset():
    """Forget this process's engines (and the count)."""
    global _LOADS
    _ENGINES.clear()
    _BLOCKS.clear()
    _LOADS = 0


def _device(wanted=None):
    """``wanted`` if this worker has it, else its first GPU, else the CPU."""
    if wanted is not None and (
        wanted.type == "cpu" or (wanted.index or 0) < torch.cuda.device_count()
    ):
        return wanted
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------- exact tiles
def _strip(engine, X1, y1, i, rows, cols, X2, y2, symmetric, layerwise, cache=None):
    """Yield ``(j, cols_slice, {key: ndarray})`` for the tiles ``(i, j)`` of row block ``rows``.

    ``cols`` is ``[(j, slice)]``. The same blocks and products as ``NTKEngine.kernel``, and
    the same symmetrisation of diagonal tiles as :func:`~sknn_kernels.ntk.gram.assemble`.
    ``cache``: a dict keeping every block computed (when the plan says they all fit).
    """
    key_of = (lambda g: g) if layerwise else (lambda g: None)

    def fetch(source, X, y, index, sl):
        if cache is not None and (source, index) in cache:
            return cache[(source, index)]
        block = engine._block(X, y, sl, recorder, key_of)
        if cache is not None:
            cache[(source, index)] = block
        return block

    with Recorder(engine.units, engine.expand).installed() as recorder, no_tf32():
        B1 = fetch(1, X1, y1, i, rows)
        for j, sl in cols:
            diagonal = symmetric and j == i
            B2 = B1 if diagonal else fetch(1 if symmetric else 2, X2, y2, j, sl)
            tiles = {}
            for key, tile in engine._tile(B1, B2).items():
                if diagonal:
                    tile = 0.5 * (tile + transpose_tile(tile))
                tiles[key] = tile.cpu().numpy()
            yield j, sl, tiles


def _task(payload, token, X1, y1, i, rows, cols, X2, y2, symmetric, layerwise, keep_all=0, call=0):
    """One joblib task: the tiles ``cols`` of row block ``i``, computed on a worker.

    With ``keep_all`` (every block's representation fits the engine's memory budget, as in the
    serial loop) the worker keeps the blocks it computed for its later tasks of the same
    ``call`` (the same engine serves calls on other data).
    """
    with _LOCK:
        engine = _engine(payload, token)
        cache = _blocks(call) if keep_all else None
        tiles = list(_strip(engine, X1, y1, i, rows, cols, X2, y2, symmetric, layerwise, cache))
    return i, rows, tiles


def _grid(n1, n2, block, symmetric, done=()):
    """``[(i, rows, [(j, cols), ...])]``: the tiles still to compute, by row block."""
    strips = []
    for i, r0 in enumerate(range(0, n1, block)):
        cols = [
            (j, slice(c0, min(c0 + block, n2)))
            for j, c0 in enumerate(range(0, n2, block))
            if not (symmetric and j < i) and (i, j) not in done
        ]
        if cols:
            strips.append((i, slice(r0, min(r0 + block, n1)), cols))
    return strips


def _write(outputs, rows, tiles, symmetric):
    """Copy a task's tiles into the outputs (and their transposes below the diagonal)."""
    for _j, cols, parts in tiles:
        for key, tile in parts.items():
            outputs[key][rows, cols] = tile
            if symmetric and cols != rows:
                outputs[key][cols, rows] = (
                    tile.transpose(1, 0, 3, 2) if tile.ndim == 4 else tile.swapaxes(0, 1)
                )


def kernel_key(engine, X1, X2, y1, y2, **options):
    """What a stored kernel is keyed by: network, data, labels and every option that changes it."""
    output = engine.adapter.output
    if callable(output):  # its code, not its address: the same function in a new process
        code = getattr(output, "__code__", None)
        output = f"{getattr(output, '__qualname__', type(output).__name__)}:" + digest(
            None if code is None else np.frombuffer(code.co_code, np.uint8)
        )
    from ..network._adapter import fingerprint

    def data(X):
        return (
            None
            if X is None
            else digest(*[X.data[k] for k in sorted(X.data)] if X.named else [X.data])
        )

    return {
        "network": fingerprint(engine.module),
        "X1": data(X1),
        "X2": data(X2) if X2 is not X1 else "X1",
        "y1": None if y1 is None else digest(y1),
        "y2": None if y2 is None or y2 is y1 else digest(y2),
        "kind": engine.kind,
        "layers": engine.layers,
        "dtype": str(engine.dtype).replace("torch.", ""),
        "accumulate_dtype": str(engine.acc_dtype).replace("torch.", ""),
        "network_output": output,
        **options,
    }


def kernel(
    engine,
    X1,
    X2=None,
    *,
    y1=None,
    y2=None,
    layerwise=False,
    block_size=1024,
    out=None,
    progress=False,
    n_jobs=None,
):
    """``engine.kernel(...)``, with ``out`` also a ``.npy``/``.zarr`` path (resumable) and
    ``n_jobs`` (tiles through joblib). See :func:`sknn_kernels.ntk.empirical_ntk`."""
    opts = {"y1": y1, "y2": y2, "layerwise": layerwise, "block_size": block_size}
    if n_jobs is None and not is_path(out):
        return engine.kernel(X1, X2, out=out, progress=progress, **opts)
    X1 = engine._tensor(X1)
    symmetric = X2 is None
    X2 = X1 if symmetric else engine._tensor(X2)
    y1, y2 = engine._kernel_labels(X1, X2, y1, y2, symmetric)
    n1, n2 = len(X1), len(X2)
    if n1 == 0 or n2 == 0:
        return engine.kernel(X1, X2 if not symmetric else None, out=None, **opts)
    engine._prepare(X1)
    block, keep_all = engine._plan(n1, n2, symmetric, block_size)
    keys = engine.groups if layerwise else [None]
    store = None
    if is_path(out):
        X1 = _canonical(X1)
        X2 = X1 if symmetric else _canonical(X2)
        if layerwise:
            raise ValueError("out= is supported for a single kernel, not with layerwise=True.")
        shape = (n1, n2) + engine._tail()
        dtype = np.dtype(str(engine.acc_dtype).replace("torch.", ""))
        key = kernel_key(engine, X1, X2, y1, y2)
        store = KernelStore.open(
            out, shape=shape, dtype=dtype, block=block, key=key, symmetric=symmetric
        )
        block, outputs = store.block, {None: store.array}
    else:
        outputs = engine._outputs(n1, n2, keys, out)
    strips = _grid(n1, n2, block, symmetric, store.done if store else ())
    n_tiles = sum(len(c) for _, _, c in strips)
    bar = ProgressBar(
        n_tiles, "kernel tiles", unit="tile", verbose=progress if n_tiles > 1 else 0, leave=False
    )
    args = (X2, y2, symmetric, layerwise)
    if n_jobs is None:  # a resumable kernel in this process: a strip at a time
        cache = {} if keep_all else None
        results = (
            (i, rows, [tile])
            for i, rows, cols in strips
            for tile in _strip(engine, X1, y1, i, rows, cols, *args, cache)
        )
    else:
        results = _dispatch(engine, X1, y1, strips, args + (keep_all,), n_jobs)
    for i, rows, tiles in results:
        _write(outputs, rows, tiles, symmetric)
        if store is not None:
            store.record([(i, j) for j, _, _ in tiles])
        bar.update(len(tiles))
    bar.close()
    return outputs if layerwise else outputs[None]


def _dispatch(engine, X1, y1, strips, args, n_jobs):
    """Run the strips' tiles as joblib tasks; yield their results as they complete."""
    X2, y2, symmetric, layerwise, keep_all = args
    payload, token = _payload(engine)
    call = uuid.uuid4().hex

    def tasks():  # lazily: joblib dispatches a few at a time, so few copies of rows exist
        for i, rows, cols in strips:
            for s in range(0, len(cols), _TILES_PER_TASK):
                part = cols[s : s + _TILES_PER_TASK]
                span = slice(part[0][1].start, part[-1][1].stop)
                own = symmetric and span == rows and len(part) == 1  # the diagonal tile alone
                yield joblib.delayed(_task)(
                    payload,
                    token,
                    _ship(X1, rows),
                    _ship(y1, rows),
                    i,
                    rows,
                    part,
                    None if own else _ship(X2, span),
                    None if own else _ship(y2, span),
                    symmetric,
                    layerwise,
                    keep_all,
                    call,
                )

    yield from _run(tasks(), n_jobs)


def _run(tasks, n_jobs):
    """Results of joblib tasks as they complete (in rounds where the backend cannot stream)."""
    backend = joblib.parallel.get_active_backend()[0]
    with warnings.catch_warnings():
        # Dask warns about tasks of several MB: here they are the task's samples, by design
        # (shipping all of X to every worker would not keep worker memory bounded)
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        if getattr(backend, "supports_return_generator", False):
            yield from joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
            return
        size = 4 * joblib.effective_n_jobs(n_jobs)  # Ray's backend returns lists only
        while batch := list(itertools.islice(tasks, size)):
            yield from joblib.Parallel(n_jobs=n_jobs)(batch)


# --------------------------------------------------------------------------- per-sample results
def _diagonal_task(payload, token, X, y, rows):
    with _LOCK:
        return rows.start, _engine(payload, token)._diagonal_rows(X, y, rows)


def diagonal(engine, X, *, y=None, block_size=1024, n_jobs=None):
    """``engine.diagonal(X, ...)``, row blocks through joblib when ``n_jobs`` is set.

    The plan is made here and travels with the engine, so every block is computed as in the
    serial loop (bitwise).
    """
    if n_jobs is None:
        return engine.diagonal(X, y=y, block_size=block_size)
    X = engine._tensor(X)
    n = len(X)
    if n == 0:
        return engine.diagonal(X, y=y, block_size=block_size)
    y = engine._labels(y, n, "y") if engine.kind == "loss_grad" else None
    engine._prepare(X)
    block, _ = engine._plan(n, n, True, block_size)
    payload, token = _payload(engine)
    tasks = (
        joblib.delayed(_diagonal_task)(payload, token, _ship(X, rows), _ship(y, rows), rows)
        for rows in (slice(s, min(s + block, n)) for s in range(0, n, block))
    )
    parts = dict(_run(tasks, n_jobs))
    return engine._diagonal_result([parts[s] for s in sorted(parts)])


def _features_task(payload, token, X, y, options, i):
    with _LOCK:
        return i, _engine(payload, token).projected_features(X, y=y, **options)


def projected_features(engine, X, *, y=None, n_jobs=None, out=None, **options):
    """``engine.projected_features(X, ...)``, row blocks through joblib when ``n_jobs`` is set,
    written to a resumable store when ``out`` is a ``.npy``/``.zarr`` path.

    Every block is projected with the same Π (one integer seed) and the plan made here, so
    the features are bitwise those of ``n_jobs=None`` and of one in-memory call. A store logs
    each row block (``[i, 0, crc]``) as the kernels' stores log tiles, with the same checks.
    """
    if n_jobs is None and not is_path(out):
        return engine.projected_features(X, y=y, **options)
    if is_path(out):
        if options.get("layerwise"):
            raise ValueError("out= is supported for a single array, not with layerwise=True.")
        if not isinstance(options.get("random_state"), (int, np.integer)):
            raise ValueError(
                "Projected features written to a path are resumed only with the same "
                f"projection: pass an integer random_state (got {options.get('random_state')!r})."
            )
    X = engine._tensor(X)
    n = len(X)
    if n == 0:
        return engine.projected_features(X, y=y, **options)
    options["random_state"] = resolve_seed(options.get("random_state"))
    y = engine._labels(y, n, "y") if engine.kind == "loss_grad" else None
    engine._prepare(X)
    engine.projected_features(X[:0], y=None if y is None else y[:0], **options)  # checks options
    block, _ = engine._plan(
        n,
        n,
        True,
        options["block_size"],
        projection=options.get("projection", "structured"),
        projection_dim=options["projection_dim"],
    )
    store, parts = None, {}
    if is_path(out):  # a resumed store must see its inputs exactly as before
        X = _canonical(X)
        k = int(options["projection_dim"])
        shape = (n, n_cotangents(engine.kind, engine.n_outputs), k)
        dtype = np.dtype(str(engine.acc_dtype).replace("torch.", ""))
        key = kernel_key(
            engine,
            X,
            None,
            None if y is None else y.numpy(),
            None,
            what="projected features",
            projection_dim=k,
            projection=options.get("projection", "structured"),
            random_state=options["random_state"],
        )
        store = KernelStore.open(out, shape=shape, dtype=dtype, block=block, key=key, rows=True)
        block = store.block
    options = {**options, "block_size": block}
    todo = [
        (i, slice(s, min(s + block, n)))
        for i, s in enumerate(range(0, n, block))
        if store is None or (i, 0) not in store.done
    ]

    def task(i, rows):
        y_rows = None if y is None else y[rows].clone()
        return _ship(X, rows).data, y_rows, options, i

    if n_jobs is None:  # a resumable store in this process: a block at a time
        results = (
            (i, engine.projected_features(Xr, y=yr, **opts))
            for i, rows in todo
            for Xr, yr, opts, _ in [task(i, rows)]
        )
    else:
        payload, token = _payload(engine)
        results = _run(
            (joblib.delayed(_features_task)(payload, token, *task(i, rows)) for i, rows in todo),
            n_jobs,
        )
    for i, F in results:
        if store is None:
            parts[i] = F
            continue
        store.array[i * block : i * block + len(F)] = F
        store.record([(i, 0)])
    if store is not None:
        return store.array
    parts = [parts[i] for i in sorted(parts)]
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)


def features_kernel(F1, F2, mode, *, block_size, out, key):
    """:func:`sknn_kernels.ntk.features_kernel` into a resumable store at the path ``out``."""
    symmetric = F2 is None
    F2 = F1 if symmetric else F2
    m = F1.shape[1]
    tail = {"trace": (), "diag": (m,), "full": (m, m)}[mode]
    shape = (F1.shape[0], F2.shape[0]) + tail
    block = min(block_size, max(shape[0], shape[1], 1))
    store = KernelStore.open(
        out, shape=shape, dtype=F1.numpy().dtype, block=block, key=key, symmetric=symmetric
    )
    outputs = {None: store.array}
    with no_tf32():
        for i, rows, cols in _grid(shape[0], shape[1], store.block, symmetric, store.done):
            for j, sl in cols:
                tile = contract(F1[rows], F2[sl], mode)
                if symmetric and i == j:
                    tile = 0.5 * (tile + transpose_tile(tile))
                _write(outputs, rows, [(j, sl, {None: tile.numpy()})], symmetric)
                store.record([(i, j)])
    return store.array
