"""Empirical neural tangent kernels of trained torch networks (pure torch, no sklearn).

Notation: network ``f(x; θ) ∈ R^C``, ``g_c(x) = ∂f_c(x)/∂θ``.

* :func:`empirical_ntk` — kernels ``K(X1, X2)`` of the NTK family, exact (per-layer rules of
  :mod:`sknn_kernels.ntk.rules` for Linear, Conv, Embedding and normalisation layers,
  ``torch.func`` per-sample gradients elsewhere) or JL-projected;
* :func:`ntk_diagonal` — ``k(x, x)`` without the ``n × n`` kernel (cosine normalisation);
* :func:`projected_ntk_features` and :func:`features_kernel` — projected per-sample gradients
  that can be stored, and the kernel between two sets of stored features (one GEMM);
* :func:`verify_stored` — check a kernel or features written to a path against the checksums
  of its tile log.
"""

import numpy as np
import torch

from . import _tiles
from ._docs import fill_doc
from ._numerics import no_tf32, resolve_seed
from .engine import METHODS, NTKEngine
from .gradients import KINDS, MODES
from .gram import allocate, assemble, contract
from .store import digest, is_path, verify_stored

__all__ = [
    "KINDS",
    "METHODS",
    "NTKEngine",
    "empirical_ntk",
    "features_kernel",
    "ntk_diagonal",
    "projected_ntk_features",
    "verify_stored",
]


@fill_doc
def empirical_ntk(
    network,
    X1,
    X2=None,
    kind="pntk",
    *,
    layers=None,
    layerwise=False,
    projection_dim=None,
    projection="structured",
    random_state=None,
    method="auto",
    batch_size=256,
    block_size=1024,
    device="auto",
    dtype="float32",
    accumulate_dtype=None,
    out=None,
    input_shape=None,
    network_output=None,
    memory_budget=None,
    y1=None,
    y2=None,
    verbose=False,
    n_jobs=None,
):
    """Empirical NTK-family kernel of a network between the rows of ``X1`` and ``X2``.

    Parameters
    ----------
    %(network)s
    X1 : array-like, tensor, or dict of them, of shape (n1, ...)
        Inputs (2-D with ``input_shape``, or N-D). Integer arrays (token ids) keep their
        dtype; a dict (or skorch ``SliceDict``) of equal-length arrays is passed to the network
        as keyword arguments, e.g. ``{"input_ids": ids, "attention_mask": mask}``.
    X2 : same form as X1, of shape (n2, ...), default=None
        ``None`` means ``X1``: the symmetric kernel, each off-diagonal tile computed once.
    %(kind)s
    %(layers)s
    %(layerwise)s
    %(projection_dim)s
    %(projection)s
    %(random_state)s
    %(method)s
    %(batch_size)s
    %(block_size)s
    %(device)s
    %(dtype)s
    %(accumulate_dtype)s
    %(out)s
    %(input_shape)s
    %(network_output)s
    %(memory_budget)s
    y1, y2 : array-like of int, default=None
        Class indices for ``kind="loss_grad"``: ``y1`` is required, ``y2=None`` uses the
        network's predicted classes for ``X2`` (true test labels would leak into it).
    verbose : bool, default=False
        A progress bar over the kernel tiles (when there is more than one).
    %(n_jobs)s

    Returns
    -------
    K : ndarray of shape (n1, n2), (n1, n2, C) or (n1, n2, C, C), or dict of them
        A ``np.memmap`` / Zarr array when ``out`` is a path.

    Raises
    ------
    MemoryError
        When the kernel cannot fit in memory (the message names its size).
    ValueError
        On an invalid option, on ``kind="loss_grad"`` without ``y1``, or when ``out`` holds
        another kernel.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.ntk import empirical_ntk
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> X = torch.randn(5, 3)
    >>> K = empirical_ntk(net, X, device="cpu", dtype="float64")
    >>> K.shape, bool(abs(K - K.T).max() == 0)
    ((5, 5), True)
    >>> parts = empirical_ntk(net, X, layerwise=True, device="cpu", dtype="float64")
    >>> sorted(parts), bool(abs(sum(parts.values()) - K).max() < 1e-12)
    (['0', '2'], True)
    >>> empirical_ntk(net, X, X[:2], kind="full", device="cpu").shape
    (5, 2, 2, 2)
    """
    engine = NTKEngine(
        network,
        kind,
        layers=layers,
        method=method,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        accumulate_dtype=accumulate_dtype,
        input_shape=input_shape,
        output=network_output,
        memory_budget=memory_budget,
    )
    if projection_dim is None:
        return _tiles.kernel(
            engine,
            X1,
            X2,
            y1=y1,
            y2=y2,
            layerwise=layerwise,
            block_size=block_size,
            out=out,
            progress=verbose,
            n_jobs=n_jobs,
        )
    if kind == "loss_grad" and y1 is None:
        raise ValueError("kind='loss_grad' needs the labels of X1 (y1=...).")
    # one integer seed, so that X1 and X2 are projected with the same Π
    options = {
        "projection_dim": projection_dim,
        "random_state": resolve_seed(random_state),
        "layerwise": layerwise,
        "block_size": block_size,
        "projection": projection,
    }
    if is_path(out) and not isinstance(random_state, (int, np.integer)):
        raise ValueError(
            "A projected kernel written to a path is resumed only with the same projection: "
            f"pass an integer random_state (got {random_state!r})."
        )
    if is_path(out) and layerwise:
        raise ValueError("out= is supported for a single kernel, not with layerwise=True.")
    X1, X2 = (None if X is None else engine._tensor(X) for X in (X1, X2))
    if is_path(out):  # a resumed kernel must see its inputs exactly as before
        X1, X2 = (None if X is None else _tiles._canonical(X) for X in (X1, X2))
    F1 = _tiles.projected_features(engine, X1, y=y1, n_jobs=n_jobs, **options)
    F2 = None
    if X2 is not None:
        F2 = _tiles.projected_features(engine, X2, y=y2, n_jobs=n_jobs, **options)
    if layerwise:
        return {
            key: features_kernel(
                F1[key], None if F2 is None else F2[key], kind, block_size=block_size
            )
            for key in F1
        }
    if is_path(out):
        labels = [None if y is None else np.asarray(y) for y in (y1, y2)]
        key = _tiles.kernel_key(
            engine,
            X1,
            X2,
            *labels,
            projection_dim=projection_dim,
            projection=projection,
            random_state=options["random_state"],
        )
        F1, F2 = (None if F is None else torch.from_numpy(F) for F in (F1, F2))
        return _tiles.features_kernel(F1, F2, MODES[kind], block_size=block_size, out=out, key=key)
    return features_kernel(F1, F2, kind, block_size=block_size, out=out)


@fill_doc
def ntk_diagonal(
    network,
    X,
    kind="pntk",
    *,
    layers=None,
    projection_dim=None,
    projection="structured",
    random_state=None,
    method="auto",
    batch_size=256,
    block_size=1024,
    device="auto",
    dtype="float32",
    accumulate_dtype=None,
    input_shape=None,
    network_output=None,
    memory_budget=None,
    y=None,
    n_jobs=None,
):
    """``k(x, x)`` for each row of ``X`` without building the ``n × n`` kernel.

    The options are those of :func:`empirical_ntk`.

    Parameters
    ----------
    %(network)s
    %(X)s
    %(kind)s
    %(layers)s
    %(projection_dim)s
    %(projection)s
    %(random_state)s
    %(method)s
    %(batch_size)s
    %(block_size)s
    %(device)s
    %(dtype)s
    %(accumulate_dtype)s
    %(input_shape)s
    %(network_output)s
    %(memory_budget)s
    %(y)s
    n_jobs : int, default=None
        ``None``: every row block in this process. An int: row blocks (of the samples, or
        of their projected features with ``projection_dim``) run as ``joblib`` tasks on the
        active backend, as in :func:`empirical_ntk`; the result is bitwise the serial one.

    Returns
    -------
    d : ndarray of shape (n,), (n, C) or (n, C, C)
        ``k(x, x)`` per row: ``(n, C)`` for ``kind="diagonal"``, ``(n, C, C)`` for
        ``kind="full"``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.ntk import empirical_ntk, ntk_diagonal
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> X = torch.randn(4, 3)
    >>> d = ntk_diagonal(net, X, kind="trace", device="cpu", dtype="float64")
    >>> K = empirical_ntk(net, X, kind="trace", device="cpu", dtype="float64")
    >>> bool(np.allclose(d, np.diag(K)))
    True
    """
    engine = NTKEngine(
        network,
        kind,
        layers=layers,
        method=method,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        accumulate_dtype=accumulate_dtype,
        input_shape=input_shape,
        output=network_output,
        memory_budget=memory_budget,
    )
    if projection_dim is None:
        return _tiles.diagonal(engine, X, y=y, block_size=block_size, n_jobs=n_jobs)
    F = _tiles.projected_features(
        engine,
        X,
        projection_dim=projection_dim,
        random_state=random_state,
        y=y,
        block_size=block_size,
        projection=projection,
        n_jobs=n_jobs,
    )
    Ft = torch.from_numpy(F)
    return contract(Ft, Ft, MODES[kind], paired=True).numpy()


@fill_doc
def projected_ntk_features(
    network,
    X,
    kind="pntk",
    *,
    projection_dim,
    projection="structured",
    random_state=None,
    layers=None,
    method="auto",
    batch_size=256,
    block_size=1024,
    device="auto",
    dtype="float32",
    accumulate_dtype=None,
    input_shape=None,
    network_output=None,
    memory_budget=None,
    y=None,
    n_jobs=None,
    out=None,
):
    """JL-projected per-sample gradients ``φ(x)`` of shape ``(n, m, projection_dim)``.

    The kernel is ``features_kernel(F1, F2, kind)``: store the train side once and later
    kernels are GEMMs. Use the same integer ``random_state`` for every call whose features
    are compared.

    Parameters
    ----------
    %(network)s
    %(X)s
    %(kind)s
    projection_dim : int
        Dimension ``k`` of the Johnson–Lindenstrauss projection ``Πᵀg/√k`` (Rademacher
        ``Π`` generated from ``random_state``; every layer projects into the same ``k``
        coordinates).
    %(projection)s
    %(random_state)s
    %(layers)s
    %(method)s
    %(batch_size)s
    %(block_size)s
    %(device)s
    %(dtype)s
    %(accumulate_dtype)s
    %(input_shape)s
    %(network_output)s
    %(memory_budget)s
    %(y)s
    %(n_jobs)s
    out : str or path, default=None
        A path ending in ``.npy`` or ``.zarr``: the features are written there a row block at
        a time (out of core) and each finished block is logged, with a checksum of its
        bytes, in ``<out>.tiles.jsonl``, as the kernels of :func:`empirical_ntk` are:
        rerunning the same call computes only the missing blocks and those whose bytes no
        longer match (see :func:`verify_stored`). Needs an integer ``random_state``.

    Returns
    -------
    F : ndarray of shape (n, m, projection_dim)
        ``m`` is 1 for ``"pntk"``/``"loss_grad"`` and ``C`` otherwise. Row blocks run as
        ``joblib`` tasks with ``n_jobs`` give the same features. A ``np.memmap`` / Zarr
        array when ``out`` is a path.

    Raises
    ------
    ValueError
        On an invalid option; with ``out``, when ``random_state`` is not an integer or the
        path holds other features.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.ntk import features_kernel, projected_ntk_features
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> F = projected_ntk_features(net, torch.randn(6, 3), projection_dim=16, random_state=0,
    ...                            device="cpu")
    >>> F.shape, features_kernel(F, F[:2]).shape
    ((6, 1, 16), (6, 2))
    """
    engine = NTKEngine(
        network,
        kind,
        layers=layers,
        method=method,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        accumulate_dtype=accumulate_dtype,
        input_shape=input_shape,
        output=network_output,
        memory_budget=memory_budget,
    )
    return _tiles.projected_features(
        engine,
        X,
        projection_dim=projection_dim,
        random_state=random_state,
        y=y,
        block_size=block_size,
        projection=projection,
        n_jobs=n_jobs,
        out=out,
    )


def features_kernel(F1, F2=None, kind="pntk", *, block_size=1024, out=None):
    """Kernel between per-sample features ``F: (n, m, p)`` (or ``(n, p)``), reduced as ``kind``.

    Parameters
    ----------
    F1 : array-like of shape (n1, m, p) or (n1, p)
        Features of the rows, e.g. from :func:`projected_ntk_features` (``m`` outputs).
    F2 : array-like of shape (n2, m, p) or (n2, p), default=None
        Features of the columns; ``None`` computes the symmetric kernel of ``F1`` (each
        off-diagonal tile once).
    kind : {"pntk", "trace", "diagonal", "full", "loss_grad"}, default="pntk"
        How the ``m`` outputs are reduced, as in :func:`empirical_ntk`.
    block_size : int, default=1024
        Side of the tiles.
    out : np.ndarray, np.memmap, str or path, default=None
        Array to write the kernel into, or a ``.npy``/``.zarr`` path: a resumable kernel
        keyed by the features' hash (see ``out`` in :func:`empirical_ntk`).

    Returns
    -------
    K : ndarray of shape (n1, n2), (n1, n2, m) or (n1, n2, m, m)
        The kernel, in the features' dtype; a ``np.memmap`` / Zarr array when ``out`` is
        a path.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.ntk import features_kernel
    >>> F = np.arange(12, dtype=np.float64).reshape(3, 2, 2)  # 3 samples, 2 outputs
    >>> features_kernel(F, kind="trace")[0]
    array([14., 38., 62.])
    >>> features_kernel(F, kind="diagonal").shape
    (3, 3, 2)
    """
    F1 = torch.as_tensor(np.asarray(F1))
    F1 = F1[:, None] if F1.ndim == 2 else F1
    symmetric = F2 is None
    F2 = F1 if symmetric else torch.as_tensor(np.asarray(F2))
    F2 = F2[:, None] if F2.ndim == 2 else F2
    mode = MODES[kind]
    if is_path(out):
        key = {"F1": digest(F1), "F2": "F1" if symmetric else digest(F2), "kind": kind}
        return _tiles.features_kernel(
            F1, None if symmetric else F2, mode, block_size=block_size, out=out, key=key
        )
    m = F1.shape[1]
    tail = {"trace": (), "diag": (m,), "full": (m, m)}[mode]
    shape = (F1.shape[0], F2.shape[0]) + tail
    outputs = {None: allocate(shape, F1.numpy().dtype, out, what=f"{kind!r} kernel")}

    def tile(i, rows, j, cols):
        return {None: contract(F1[rows], F2[cols], mode)}

    with no_tf32():
        assemble(
            shape[0], shape[1], tile, block_size=block_size, symmetric=symmetric, outputs=outputs
        )
    return outputs[None]
