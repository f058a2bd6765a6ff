"""The NTK engine: parameters -> per-layer plan -> blocks of per-sample representations -> tiles."""

from numbers import Integral

import numpy as np
import torch

from ..network._adapter import DTYPES, NetworkAdapter, check_finite_rows
from . import _cost
from ._docs import fill_doc
from ._generic import GenericPath
from ._numerics import WHAT_NOT_FINITE, check_finite_tile, no_tf32, resolve_seed
from ._probe import Probe
from .gradients import KINDS, MODES, cotangents, n_cotangents
from .gram import allocate, assemble, contract, reusing_scratch
from .projection import PROJECTIONS, GradientRows, project, sketch
from .structured import Recorder

METHODS = ("auto", "structured", "vmap", "autograd")


# Per-sample gradients longer than this are contracted on their own rather than copied into one
# concatenated matrix (the copy would cost as much memory traffic as the GEMM).
_JOIN = 2**16


def _cat(tensors, dim=0):
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def _slice(y, sl):
    return None if y is None else y[sl]


class _Block:
    """Per-sample representations of a block of samples.

    ``had``: ``[(key, unit, A, G)]`` for units on pair sums; ``mats``: ``{key: [J (n, m, p)]}``
    materialised gradients (outer units and generic parameters), small ones concatenated;
    ``sources``: per-parameter readers for the projection (only when asked for).
    """

    def __init__(self, had, mats, sources=None):
        self.had = had
        self.mats = mats
        self.sources = sources


@fill_doc
class NTKEngine(Probe, GenericPath):
    """Computes NTK-family kernels of one network; see :func:`empirical_ntk` for the options.

    The engine owns a :class:`~sknn_kernels._network.NetworkAdapter` (a private eval-mode copy
    of the network) and, after a probe on the first samples, a plan: which layers go through
    their per-layer rule (:mod:`sknn_kernels.ntk.rules`) (verified against autograd on the probe, so a layer whose
    weight is also used outside its ``forward`` falls back safely) and which parameters need
    generic per-sample gradients.

    Parameters
    ----------
    %(network)s
    %(kind)s
    %(layers)s
    %(method)s
    %(batch_size)s
    %(device)s
    %(dtype)s
    %(accumulate_dtype)s
    %(input_shape)s
    output : None, str or callable, default=None
        ``network_output`` of :func:`empirical_ntk`: which tensor of the output is ``f``.
    %(memory_budget)s

    Raises
    ------
    ValueError
        When ``kind``, ``method``, ``accumulate_dtype`` or ``memory_budget`` is not one of
        the accepted values.
    """

    def __init__(
        self,
        network,
        kind="pntk",
        *,
        layers=None,
        method="auto",
        batch_size=256,
        device="auto",
        dtype="float32",
        accumulate_dtype=None,
        input_shape=None,
        output=None,
        memory_budget=None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        if isinstance(network, NetworkAdapter):
            self.adapter = network
        else:
            self.adapter = NetworkAdapter(
                network,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                input_shape=input_shape,
                output=output,
            )
        self.module = self.adapter.module
        self.device = self.adapter.device
        self.dtype = self.adapter.dtype
        self.batch_size = self.adapter.batch_size
        if accumulate_dtype is not None and accumulate_dtype not in DTYPES:
            raise ValueError(
                f"accumulate_dtype must be None, 'float32' or 'float64'; got {accumulate_dtype!r}."
            )
        self.acc_dtype = DTYPES[accumulate_dtype] if accumulate_dtype else self.dtype
        self.kind, self.method, self.mode = kind, method, MODES[kind]
        self.layers = (
            None if layers is None else [layers] if isinstance(layers, str) else list(layers)
        )
        self.memory_budget = _cost.parse_budget(memory_budget)
        self._select(layers)
        self.n_outputs = None
        self.expand = True  # see Recorder; settled by the probe

    @property
    def params_by_index(self):
        return {i: p for i, _, p, _ in self.params}

    # ------------------------------------------------------------------ blocks
    def _batch(self, x, y, recorder, start=0):
        """Structured ``(A, G)`` per unit and generic gradients for one batch on the device."""
        if self.units:
            with recorder.recording(len(x)), torch.enable_grad():
                f = self.adapter.forward(x)
                check_finite_rows(f, "network outputs", start)
                V = cotangents(self.kind, f.detach(), y)
                signals = recorder.signals(f, V)
        else:
            with torch.no_grad():
                f = self.adapter.forward(x)
            check_finite_rows(f, "network outputs", start)
            V = cotangents(self.kind, f, y)
            signals = {}
        generic = self._generic_grads(x, V) if self.generic else []
        return signals, generic

    def _block(self, X, y, rows, recorder, key_of, sources=False, sketch=False):
        """A :class:`_Block` for samples ``X[rows]`` (computed ``batch_size`` at a time)."""
        acc = self.acc_dtype
        had = {u: ([], []) for u in self.units if u.choice in ("hadamard", "factored")}
        # materialised gradients are written straight into one array per unit (no copies); zero
        # where a batch does not call the unit
        m = n_cotangents(self.kind, self.n_outputs)
        size = (rows.stop - rows.start, m)
        opts = {"dtype": acc, "device": self.device}
        outer = {u: torch.zeros(*size, u.numel, **opts) for u in self.units if u.choice == "outer"}
        gen = [[] for _ in self.generic]
        for s in range(rows.start, rows.stop, self.batch_size):
            sl = slice(s, min(s + self.batch_size, rows.stop))
            signals, grads = self._batch(X[sl].to(self.device), _slice(y, sl), recorder, s)
            for u, (A, G) in signals.items():
                if u in had:
                    had[u][0].append(
                        A.to(acc) if A.is_floating_point() else A
                    )  # token ids stay ids
                    had[u][1].append(G.to(acc))
                else:
                    u.outer_into(A, G, outer[u][s - rows.start : sl.stop - rows.start])
            for store, g in zip(gen, grads):
                store.append(g.to(acc))
        had = [(u, _cat(As), _cat(Gs)) for u, (As, Gs) in had.items()]
        outer = list(outer.items())
        gen = [(param, _cat(Js)) for param, Js in zip(self.generic, gen)]
        if sources:  # sketchable units keep (A, G) for the structured projection
            kept = [(u.group, u, A, G) for u, A, G in had if sketch and u.side is not None]
            had = [(u, A, G) for u, A, G in had if not (sketch and u.side is not None)]
            return _Block(kept, {}, self._sources(had, outer, gen))
        mats = {}
        for key, J in [(key_of(u.group), J) for u, J in outer] + [
            (key_of(p[3]), J) for p, J in gen
        ]:
            mats.setdefault(key, []).append(J)
        # small gradients are joined for one GEMM; large ones are contracted where they are
        mats = {
            k: ([_cat(small, dim=2)] if small else []) + [J for J in Js if J.shape[2] > _JOIN]
            for k, Js in mats.items()
            for small in [[J for J in Js if J.shape[2] <= _JOIN]]
        }
        return _Block([(key_of(u.group), u, A, G) for u, A, G in had], mats)

    def _sources(self, had, outer, gen):
        """Per-parameter gradient readers for the projection (see projection.GradientRows)."""
        src = [
            GradientRows(index, u.group, rows, row_len, read)
            for u, A, G, J in [(u, A, G, None) for u, A, G in had]
            + [(u, None, None, J) for u, J in outer]
            for index, rows, row_len, read in u.sources(A, G, J)
        ]
        for (index, _, p, group), J in gen:
            rows = p.shape[0] if p.ndim else 1
            row_len = p.numel() // rows
            src.append(
                GradientRows(
                    index,
                    group,
                    rows,
                    row_len,
                    lambda s, a, b, J=J, r=row_len: J[s, :, a * r : b * r],
                )
            )
        return sorted(src, key=lambda g: g.index)

    def _tile(self, B1, B2, paired=False):
        with reusing_scratch():
            return self._tile_sums(B1, B2, paired)

    def _tile_sums(self, B1, B2, paired):
        out = {}
        for (key, u, A1, G1), (_, _, A2, G2) in zip(B1.had, B2.had):
            if u.choice == "factored":
                t = u.factored(A1, G1, A2, G2, self.mode, paired, same=B1 is B2)
            else:
                t = u.hadamard(A1, G1, A2, G2, self.mode, paired)
            out[key] = t if key not in out else out[key] + t
        for key, Js in B1.mats.items():
            for J1, J2 in zip(Js, B2.mats[key]):
                t = contract(J1, J2, self.mode, paired)
                out[key] = t if key not in out else out[key] + t
        return out

    # ------------------------------------------------------------------ helpers
    def _tensor(self, X):
        return self.adapter.inputs(X)

    def _labels(self, y, n, name):
        if y is None:
            return None
        y = np.asarray(y)
        if y.dtype.kind not in "iuf":
            raise ValueError(
                f"kind='loss_grad' needs class indices 0..C-1 (output column j scores class j); "
                f"{name} has dtype {y.dtype}. Encode the labels first, e.g. with "
                "sklearn.preprocessing.LabelEncoder (its classes_ order = the output columns)."
            )
        if y.shape != (n,) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(
                f"{name} must be {n} integer class indices; got an array of shape {y.shape}."
            )
        return torch.as_tensor(y.astype(np.int64))

    def _tail(self):
        m = n_cotangents(self.kind, self.n_outputs)
        return {"trace": (), "diag": (m,), "full": (m, m)}[self.mode]

    def _plan(self, n1, n2, symmetric, block_size, projection=None, projection_dim=None):
        return _cost.plan(
            self.units,
            self.generic_numel,
            n_cotangents(self.kind, self.n_outputs),
            self.mode,
            n1=n1,
            n2=n2,
            symmetric=symmetric,
            block_size=block_size,
            itemsize=torch.finfo(self.acc_dtype).bits // 8,
            budget=_cost.memory_budget(self.device, self.memory_budget),
            method=self.method,
            projection=projection,
            projection_dim=projection_dim,
        )

    # ------------------------------------------------------------------ public
    @fill_doc
    def kernel(
        self,
        X1,
        X2=None,
        *,
        y1=None,
        y2=None,
        layerwise=False,
        block_size=1024,
        out=None,
        progress=False,
    ):
        """Exact kernel ``K(X1, X2)``, as :func:`empirical_ntk` without ``projection_dim``.

        Parameters
        ----------
        X1 : array-like, tensor, or dict of them, of shape (n1, ...)
            Rows of the kernel, in any form :func:`empirical_ntk` takes.
        X2 : same form as X1, of shape (n2, ...), default=None
            Columns; ``None`` means ``X1`` (the symmetric kernel).
        y1, y2 : array-like of int, default=None
            Class indices for ``kind="loss_grad"``: ``y1`` is required, ``y2=None`` uses
            the network's predicted classes for ``X2``.
        %(layerwise)s
        %(block_size)s
        %(out)s
        progress : bool, default=False
            A progress bar over the kernel tiles.

        Returns
        -------
        K : ndarray of shape (n1, n2), (n1, n2, C) or (n1, n2, C, C), or dict of them
            The kernel (a dict layer name -> kernel with ``layerwise``).
        """
        X1 = self._tensor(X1)
        symmetric = X2 is None
        X2 = X1 if symmetric else self._tensor(X2)
        y1, y2 = self._kernel_labels(X1, X2, y1, y2, symmetric)
        self._prepare(X1 if len(X1) else X2)
        keys = self.groups if layerwise else [None]
        n1, n2 = len(X1), len(X2)
        outputs = self._outputs(n1, n2, keys, out)
        if n1 == 0 or n2 == 0:
            return self._result(outputs, layerwise)
        block, keep_all = self._plan(n1, n2, symmetric, block_size)
        key_of = (lambda g: g) if layerwise else (lambda g: None)
        cache = {}  # every block if they fit (keep_all), else only the current row block
        with Recorder(self.units, self.expand, self.module).installed() as recorder, no_tf32():

            def fetch(source, X, y, index, rows, is_row):
                key = (source, index)
                if key not in cache:
                    if not keep_all and is_row:
                        cache.clear()
                    block = self._block(X, y, rows, recorder, key_of)
                    if not (keep_all or is_row):
                        return block  # recomputed for the next row block: memory stays bounded
                    cache[key] = block
                return cache[key]

            source2 = 1 if symmetric else 2

            def tile(i, rows, j, cols):
                B1 = fetch(1, X1, y1, i, rows, True)
                out = self._tile(B1, fetch(source2, X2, y2, j, cols, False))
                for t in out.values():  # once per tile, not per signal: cheap
                    check_finite_tile(t, rows.start, cols.start)
                return out

            assemble(
                n1,
                n2,
                tile,
                block_size=block,
                symmetric=symmetric,
                outputs=outputs,
                progress=progress,
            )
        return self._result(outputs, layerwise)

    def _kernel_labels(self, X1, X2, y1, y2, symmetric):
        if self.kind != "loss_grad":
            return None, None
        if y1 is None:
            raise ValueError(
                "kind='loss_grad' needs the labels of X1 (y1=...): the kernel is "
                "built from gradients of the loss at those labels."
            )
        y1 = self._labels(y1, len(X1), "y1")
        y2 = y1 if symmetric else self._labels(y2, len(X2), "y2")
        return y1, y2

    def _outputs(self, n1, n2, keys, out):
        if out is not None and len(keys) > 1:
            raise ValueError("out= is supported for a single kernel, not with layerwise=True.")
        shape = (n1, n2) + self._tail()
        dtype = np.dtype(str(self.acc_dtype).replace("torch.", ""))
        first = allocate(shape, dtype, out, what=f"{self.kind!r} kernel", count=len(keys))
        return {k: (first if i == 0 else np.empty(shape, dtype)) for i, k in enumerate(keys)}

    @staticmethod
    def _result(outputs, layerwise):
        return outputs if layerwise else outputs[None]

    @fill_doc
    def diagonal(self, X, *, y=None, block_size=1024):
        """``k(x, x)`` for every row of ``X``, without the ``n × n`` kernel.

        Parameters
        ----------
        %(X)s
        %(y)s
        %(block_size)s

        Returns
        -------
        d : ndarray of shape (n,), (n, C) or (n, C, C)
            ``(n, C)`` for ``kind="diagonal"``, ``(n, C, C)`` for ``kind="full"``.
        """
        X = self._tensor(X)
        y = self._labels(y, len(X), "y") if self.kind == "loss_grad" else None
        self._prepare(X)
        n = len(X)
        block, _ = self._plan(n, n, True, block_size)
        parts = [self._diagonal_rows(X, y, slice(s, min(s + block, n))) for s in range(0, n, block)]
        return self._diagonal_result(parts)

    def _diagonal_rows(self, X, y, rows):
        """``k(x, x)`` of the samples ``X[rows]``, with the plan made (see :meth:`diagonal`)."""
        with Recorder(self.units, self.expand, self.module).installed() as recorder, no_tf32():
            B = self._block(X, y, rows, recorder, lambda g: None)
            part = self._tile(B, B, paired=True)[None]
            check_finite_rows(part, WHAT_NOT_FINITE, rows.start)
        return part.cpu()

    def _diagonal_result(self, parts):
        dtype = self.acc_dtype
        return (
            torch.cat(parts) if parts else torch.empty((0,) + self._tail(), dtype=dtype)
        ).numpy()

    @fill_doc
    def projected_features(
        self,
        X,
        *,
        projection_dim,
        random_state=None,
        y=None,
        layerwise=False,
        block_size=1024,
        projection="structured",
    ):
        """JL-projected per-sample gradients ``(n, m, k)`` (a dict per layer if ``layerwise``).

        ``<φ(x), φ(x')>`` summed over the ``m`` cotangents is an unbiased estimate of the kernel.

        Parameters
        ----------
        X : array-like, tensor, or dict of them, of shape (n, ...)
            Inputs, in any form :func:`empirical_ntk` takes.
        projection_dim : int
            Dimension ``k`` of the projection.
        %(random_state)s
        %(y)s
        %(layerwise)s
        %(block_size)s
        %(projection)s

        Returns
        -------
        F : ndarray of shape (n, m, k), or dict of them
            ``m`` is 1 for ``"pntk"``/``"loss_grad"`` and ``C`` otherwise.

        Raises
        ------
        ValueError
            When ``projection_dim`` is not a positive integer or ``projection`` is unknown.
        """
        if (
            isinstance(projection_dim, bool)
            or not isinstance(projection_dim, (Integral, np.integer))
            or projection_dim < 1
        ):
            raise ValueError(f"projection_dim must be a positive integer; got {projection_dim!r}.")
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}; got {projection!r}.")
        k = int(projection_dim)
        seed = resolve_seed(random_state)
        X = self._tensor(X)
        y = self._labels(y, len(X), "y") if self.kind == "loss_grad" else None
        self._prepare(X)
        n = len(X)
        m = n_cotangents(self.kind, self.n_outputs)
        block, _ = self._plan(n, n, True, block_size, projection=projection, projection_dim=k)
        keys = self.groups if layerwise else [None]
        out = {key: torch.zeros(n, m, k, dtype=self.acc_dtype) for key in keys}
        cache = {}  # Π blocks, generated once per call
        opts = {"dtype": self.acc_dtype, "device": self.device, "cache": cache}
        with Recorder(self.units, self.expand, self.module).installed() as recorder, no_tf32():
            for s in range(0, n, block):
                rows = slice(s, min(s + block, n))
                B = self._block(
                    X, y, rows, recorder, None, sources=True, sketch=projection == "structured"
                )
                for src in B.sources:
                    src.group = src.group if layerwise else None
                nb = rows.stop - rows.start
                phi = project(B.sources, nb, m, k, seed, batch_size=self.batch_size, **opts)
                units = [(g if layerwise else None, u, A, G) for g, u, A, G in B.had]
                phi = sketch(units, nb, m, k, seed, out=phi, **opts)
                for key, value in phi.items():
                    check_finite_rows(value, "projected per-sample gradients", s)
                    out[key][rows] = value.cpu()
        out = {key: v.numpy() for key, v in out.items()}
        return out if layerwise else out[None]
