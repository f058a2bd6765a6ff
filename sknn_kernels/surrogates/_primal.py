"""Kernel surrogates solved on explicit features ``Phi`` (n, k) instead of ``K = Phi Phi^T``.

Every kernel estimator of the package has an exact k-dimensional form when its kernel is
linear in features. With ``Z = K W + b`` the logits (or predictions) of the dual model and
``Psi = Phi^T W`` (k, L), ``Z = Phi Psi + b`` and

* ``penalty="rkhs"``: ``tr(W^T K W) = ||Psi||^2``, plain L2 in the primal;
* ``penalty="l2"``: ``min {||W||^2 : Phi^T W = Psi} = tr(Psi^T (Phi^T Phi)^+ Psi)``, a
  generalised ridge. With ``Phi^T Phi = V S^2 V^T`` (rank r) and ``Psi = V S theta`` it is
  plain L2 on ``theta`` with features ``Phi V S`` (the kernel's eigen-features ``U S^2``).

So both penalties are ``||theta||^2`` on features ``E = Phi T`` (``T = I`` or ``V S``). The
solver whitens ``theta`` with the Cholesky factor ``R`` of ``c E_c^T Omega E_c + alpha I``
(``E_c``: weighted-centred features, ``c``: the loss curvature at zero), which makes
L-BFGS nearly independent of the features' conditioning.

The dual coefficients that ``attribute``/``explain`` decompose come from the first-order
conditions at the optimum, with ``G = dLoss/dZ`` (n, L) including every sample weight:
``rkhs``: ``W = -G / alpha`` (the representer solution; unique up to the null space of a
rank-deficient K, and the kernel-space solvers return this same one); ``l2``:
``W = -K G / alpha = -Phi (Phi^T G) / alpha``. The intercept is unpenalised
(``sum_i G_i = 0``).

Features may be a NumPy array, a ``np.memmap``, a Zarr array (streamed in row blocks) or a
``dask.array`` (each objective gradient is a ``map_blocks`` + ``sum`` reduction, so it runs on
whatever Dask scheduler is active, e.g. a ``distributed`` cluster).
"""

import numpy as np
import torch

from ._kernel_base import row_chunks
from ._solvers import glm_loss, lbfgs

__all__ = []

CURVATURE = 0.25  # logistic loss curvature at Z = 0, the preconditioner's scale


def is_dask(X):
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "chunks")


class RowBlocks:
    """The features as row blocks, and sums / row-wise maps of a function over them.

    ``fn(x, *rows, **consts)`` gets a float64 NumPy block of ``X`` and the matching blocks
    of the row-aligned ``(n, m)`` arrays ``rows``. With a dask array each call is one
    ``map_blocks`` graph computed by the active scheduler; otherwise blocks are read in
    turn (memory: one block).
    """

    def __init__(self, X):
        self.n, self.k = X.shape
        if is_dask(X):
            import dask

            self.X = X.rechunk({1: -1})
            self.dask = dask
        else:
            self.X, self.dask = X, None
        self.slices = None if self.dask else row_chunks(self.n, self.k)

    def _align(self, rows):
        import dask.array as da

        out = [da.from_array(np.asarray(r), chunks=(self.X.chunks[0], r.shape[1])) for r in rows]
        return list(self.dask.persist(*out))  # shipped once, not at every iteration

    def prepare(self, *rows):
        """Row-aligned arrays in the form :meth:`sum`/:meth:`map` take (persisted for dask)."""
        return self._align(rows) if self.dask else list(rows)

    def sum(self, fn, rows, shapes, **consts):
        """``sum over blocks of fn(...)``, a list of arrays of the given ``shapes``."""
        sizes = [int(np.prod(s)) for s in shapes]
        if self.dask:
            import dask.array as da

            def packed(x, *r, **c):
                out = fn(np.asarray(x, dtype=np.float64), *r, **c)
                return np.concatenate([np.ravel(o) for o in out])[None, :]

            nb = len(self.X.chunks[0])
            parts = da.map_blocks(
                packed, self.X, *rows, chunks=((1,) * nb, (sum(sizes),)), dtype=float, **consts
            )
            flat = parts.sum(axis=0).compute()
        else:
            flat = sum(
                np.concatenate(
                    [np.ravel(o) for o in fn(self.block(sl), *(r[sl] for r in rows), **consts)]
                )
                for sl in self.slices
            )
        out, start = [], 0
        for shape, size in zip(shapes, sizes):
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return out

    def map(self, fn, rows, width, **consts):
        """``(n, width)`` array of ``fn(...)`` computed block by block."""
        if self.dask:
            import dask.array as da

            def wrapped(x, *r, **c):
                return fn(np.asarray(x, dtype=np.float64), *r, **c)

            return np.asarray(
                da.map_blocks(
                    wrapped,
                    self.X,
                    *rows,
                    chunks=(self.X.chunks[0], (width,)),
                    dtype=float,
                    **consts,
                ).compute()
            )
        return np.concatenate(
            [fn(self.block(sl), *(r[sl] for r in rows), **consts) for sl in self.slices]
        )

    def block(self, sl):
        return np.asarray(self.X[sl], dtype=np.float64)


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _moments(x, w, *, gram):
    """``sum w``, ``Phi^T w``, ``Phi^T diag(w) Phi`` (and ``Phi^T Phi``) of one block."""
    X, w = _t(x), _t(w)[:, 0]
    out = [w.sum()[None], X.T @ w, X.T @ (w[:, None] * X)]
    return [o.numpy() for o in out + ([X.T @ X] if gram else [])]


def _basis(gram, penalty):
    """``T`` (k, r): the primal coordinates ``Psi = T theta`` in which the penalty is ``||theta||^2``."""
    k = gram.shape[0]
    if penalty == "rkhs":
        return np.eye(k)
    s2, V = np.linalg.eigh(gram)
    keep = s2 > max(s2.max(), 0.0) * k * np.finfo(float).eps
    return V[:, keep] * np.sqrt(s2[keep])


class FeatureProblem:
    """Statistics of the features that every primal solve needs (one pass over the rows)."""

    def __init__(self, X, weights, penalty, fit_intercept=True):
        self.rows = RowBlocks(X)
        self.penalty = penalty
        w = np.asarray(weights, dtype=np.float64).reshape(-1, 1)
        (self.wsum,), self.s1, Sxx, *gram = self.rows.sum(
            _moments,
            self.rows.prepare(w),
            [(1,), (self.rows.k,), (self.rows.k, self.rows.k)]
            + ([(self.rows.k, self.rows.k)] if penalty == "l2" else []),
            gram=penalty == "l2",
        )
        self.gram = gram[0] if gram else None
        k = self.rows.k
        self.mu = self.s1 / self.wsum if fit_intercept and self.wsum > 0 else np.zeros(k)
        self.cov = Sxx - self.wsum * np.outer(self.mu, self.mu)  # sum w (x - mu)(x - mu)^T
        self.T = _basis(self.gram, penalty) if penalty == "l2" else np.eye(k)

    def system(self, scale, alpha):
        """``scale * T^T cov T + alpha I`` (the ridge matrix, or the L-BFGS preconditioner)."""
        M = scale * self.T.T @ self.cov @ self.T
        return M + alpha * np.eye(M.shape[0])

    def dual(self, G, PtG, alpha):
        """Dual coefficients ``W`` (n, L) and ``Phi^T W`` (k, L) from ``G`` and ``Phi^T G``."""
        if self.penalty == "rkhs":
            return -G / alpha, -PtG / alpha
        W = self.rows.map(lambda x, *, v: x @ v, [], G.shape[1], v=-PtG / alpha)
        return W, self.gram @ (-PtG / alpha)


def _residual(x, y, w, *, psi, b):
    """``w * (X psi + b - y)``: the squared loss's gradient in ``Z`` (block)."""
    return w * (x @ psi + b - y)


def _grad_terms(x, g):
    return [x.T @ g]


def primal_ridge(X, Y, weights, alpha, *, penalty, fit_intercept=True):
    """:func:`~sknn_kernels.surrogates._solvers.solve_ridge`'s model, solved on ``X = Phi``.

    Minimises ``sum_i w_i ||Y_i - (K W)_i - b||^2 + alpha R(W)`` with ``K = X X^T`` through
    the ``(r, r)`` normal equations of the primal; needs ``alpha > 0``.

    Returns
    -------
    W : ndarray of shape (n, L)
    b : ndarray of shape (L,)
    feature_coef : ndarray of shape (k, L)
        ``X^T W``, so that ``X_test @ feature_coef + b`` are the predictions.
    """
    prob = FeatureProblem(X, weights, penalty, fit_intercept)
    Y = np.asarray(Y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1, 1)
    rows = prob.rows.prepare(Y, w)
    L = Y.shape[1]
    (XtwY, wY) = prob.rows.sum(
        lambda x, y, w: [x.T @ (w * y), (w * y).sum(0)], rows, [(prob.rows.k, L), (L,)]
    )
    ybar = wY / prob.wsum if fit_intercept and prob.wsum > 0 else np.zeros(L)
    rhs = (
        XtwY - np.outer(prob.s1, ybar) - np.outer(prob.mu, wY) + prob.wsum * np.outer(prob.mu, ybar)
    )
    theta = np.linalg.solve(prob.system(1.0, alpha), prob.T.T @ rhs)
    psi = prob.T @ theta
    b = ybar - prob.mu @ psi
    # the squared loss sum w ||Y - Z||^2 has dLoss/dZ = 2 w (Z - Y) and R(W) enters as alpha R:
    # the same conditions as -G / alpha with G = w (Z - Y)
    G = prob.rows.map(_residual, rows, L, psi=psi, b=b)
    (PtG,) = prob.rows.sum(_grad_terms, prob.rows.prepare(G), [(prob.rows.k, L)])
    W, feature_coef = prob.dual(G, PtG, alpha)
    return W, b, feature_coef


def _glm_terms(x, t, o, *, psi, b, kind):
    Z = _t(x) @ _t(psi) + _t(b)
    loss, G = glm_loss(Z, _t(t), _t(o), kind)
    return [loss.numpy()[None], (_t(x).T @ G).numpy(), G.sum(0).numpy()]


def _glm_gradient(x, t, o, *, psi, b, kind):
    return glm_loss(_t(x) @ _t(psi) + _t(b), _t(t), _t(o), kind)[1].numpy()


def primal_glm(X, T, omega, alpha, *, penalty, kind, max_iter, tol):
    """The kGLM of :class:`~sknn_kernels.surrogates._solvers.KGLMProblem` on ``K = X X^T``.

    Solved by L-BFGS on the whitened primal coordinates ``phi = R theta``; needs
    ``alpha > 0``. ``tol`` bounds the largest gradient entry in ``theta`` (and the
    intercept), the unwhitened primal coordinates.

    Returns
    -------
    W : ndarray of shape (n, L)
        Dual coefficients (see the module docstring).
    b : ndarray of shape (L,)
    feature_coef : ndarray of shape (k, L)
        ``X^T W``.
    n_iter : int
    grad_max : float
    """
    T, omega = np.asarray(T, dtype=np.float64), np.asarray(omega, dtype=np.float64)
    prob = FeatureProblem(X, omega.mean(axis=1), penalty)
    rows = prob.rows.prepare(T, omega)
    k, L = prob.rows.k, T.shape[1]
    R = np.linalg.cholesky(prob.system(CURVATURE, alpha)).T  # M = R^T R
    A = np.linalg.solve(R.T, prob.T.T).T  # Psi = T R^{-1} phi = A phi
    Rinv = np.linalg.inv(R)
    mu = prob.mu

    def value_and_grad(phi, c):
        phi, c = phi.numpy(), c.numpy()
        psi = A @ phi
        b = c - mu @ psi  # centred intercept: Z = (X - mu) psi + c
        loss, XtG, sG = prob.rows.sum(
            _glm_terms, rows, [(1,), (k, L), (L,)], psi=psi, b=b, kind=kind
        )
        theta = Rinv @ phi
        value = float(loss[0]) + 0.5 * alpha * float((theta * theta).sum())
        g_psi = XtG - np.outer(mu, sG)
        return value, _t(A.T @ g_psi + alpha * Rinv.T @ theta), _t(sG)

    zeros = torch.zeros((A.shape[1], L), dtype=torch.float64)
    # |grad_theta| <= |R^T|_inf |grad_phi|: stop when the gradient in theta meets tol
    tol_phi = tol / max(np.abs(R).sum(axis=0).max(), 1.0)
    phi, c, n_iter, _ = lbfgs(value_and_grad, zeros, zeros[0], max_iter, tol_phi)
    _, g_phi, g_c = value_and_grad(phi, c)
    grad_max = max(np.abs(R.T @ g_phi.numpy()).max(), np.abs(g_c.numpy()).max())
    phi, c = phi.numpy(), c.numpy()
    psi = A @ phi
    b = c - mu @ psi
    G = prob.rows.map(_glm_gradient, rows, L, psi=psi, b=b, kind=kind)
    (PtG,) = prob.rows.sum(_grad_terms, prob.rows.prepare(G), [(k, L)])
    W, feature_coef = prob.dual(G, PtG, alpha)
    return W, b, feature_coef, n_iter, grad_max


def _loss_term(x, t, o, *, psi, b, kind):
    return _glm_terms(x, t, o, psi=psi, b=b, kind=kind)[:1]


def objective_on_features(X, T, omega, W, b, alpha, penalty, kind):
    """The kGLM objective at dual ``W`` (L, n), ``b`` on ``K = X X^T``, in O(n k L)."""
    rows = RowBlocks(X)
    L = W.shape[0]
    (psi,) = rows.sum(_grad_terms, rows.prepare(W.T), [(rows.k, L)])  # X^T W^T
    (loss,) = rows.sum(_loss_term, rows.prepare(T, omega), [(1,)], psi=psi, b=b, kind=kind)
    reg = (psi * psi).sum() if penalty == "rkhs" else (W * W).sum()
    return float(loss[0] + 0.5 * alpha * reg)
