"""The solvers of the kernel estimators, in float64 torch on the estimator's device.

* :func:`solve_ridge`: weighted least squares on kernel rows (Cholesky, least squares on
  singular systems, conjugate gradients for kernels too large for a dense factorisation),
  used by the kernel ridge regressor and by the classifier's ``target="logits"`` distillation;
* :class:`KGLMProblem`: the kernel logistic objective of
  :class:`~sknn_kernels.KernelSurrogateClassifier` and its deterministic full-batch L-BFGS.
"""

import warnings

import numpy as np
import torch
from sklearn import get_config
from sklearn.exceptions import ConvergenceWarning

from ..network._base import user_stacklevel
from ._kernel_base import row_chunks

__all__ = []


def dense_fits(n):
    """``solver="auto"`` rule: Cholesky when an ``(n, n)`` float64 matrix fits in ``working_memory``."""
    return 8 * n * n <= get_config()["working_memory"] * 2**20


def solve_ridge(
    K,
    Y,
    weights,
    alpha,
    *,
    penalty="rkhs",
    fit_intercept=True,
    solver="auto",
    device=None,
    tol=1e-10,
    max_iter=None,
):
    """Weighted least squares of ``Y`` on the kernel rows ``K`` with an unpenalised intercept.

    Minimises ``sum_i weights[i] * ||Y[i] - (K @ W)[i] - b||^2 + alpha * R(W)`` with
    ``R(W) = trace(W^T K W)`` (``penalty="rkhs"``, kernel ridge regression: with
    ``fit_intercept=False`` this is exactly :class:`sklearn.kernel_ridge.KernelRidge`'s
    dual problem) or ``R(W) = ||W||_F^2`` (``penalty="l2"``, ridge regression on the kernel
    rows as features).

    ``solver="cholesky"`` factorises one ``(n, n)`` float64 matrix on ``device``; when it is
    not positive definite (``alpha=0`` on a singular kernel) the least-squares solution is
    used with a warning, as sklearn's ``KernelRidge`` does. ``solver="cg"`` runs conjugate
    gradients on all columns at once, streaming ``K`` to ``device`` in row blocks (memory
    O(block * n) instead of O(n^2)); it needs ``alpha > 0`` and many iterations when
    ``alpha`` is small compared with the kernel's eigenvalues. ``"auto"`` picks Cholesky
    when the matrix fits in sklearn's ``working_memory`` (:func:`dense_fits`).

    Parameters
    ----------
    K : ndarray of shape (n, n)
    Y : ndarray of shape (n, L)
    weights : ndarray of shape (n,)
        Non-negative sample weights.
    alpha : float
    penalty, fit_intercept, solver, device, tol, max_iter
        As above; ``tol`` is the CG stopping rule ``||r|| <= tol * ||rhs||`` per column,
        ``max_iter`` its iteration cap (default ``n``).

    Returns
    -------
    W : ndarray of shape (n, L)
    b : ndarray of shape (L,)
    n_iter : int
        CG iterations (1 for the direct Cholesky solve).
    """
    n = K.shape[0]
    device = torch.device("cpu") if device is None else device
    if solver == "auto":
        solver = "cholesky" if dense_fits(n) else "cg"
    if solver == "cg" and alpha <= 0:
        raise ValueError(
            "solver='cg' needs alpha > 0 (the system is singular otherwise); use 'cholesky'."
        )
    K = K if K.flags.writeable else K.copy()  # torch cannot wrap read-only memory
    op = _KernelOperator(K, weights, alpha, penalty, fit_intercept, device)
    rhs = op.rhs(torch.tensor(Y, dtype=torch.float64, device=device))
    if solver == "cholesky":
        sol, n_iter = _dense_solve(op.dense(), rhs), 1
    else:
        sol, n_iter = _block_cg(op.matvec, rhs, tol, n if max_iter is None else max_iter)
    W, b = op.coefficients(sol, Y.shape[1])
    return W.cpu().numpy(), b.cpu().numpy(), n_iter


class _KernelOperator:
    """The symmetric positive (semi-)definite system of :func:`solve_ridge`.

    ``rkhs``: with ``d = sqrt(weights)``, ``M = diag(d) K diag(d) + alpha I`` (sklearn's
    form, which allows zero weights); ``W = d * M^{-1} d (Y - b)`` and the intercept makes
    ``sum_i W[i] = 0`` (the stationarity condition of an unpenalised ``b``), so it needs
    the extra right-hand side ``M^{-1} d``. ``l2``: the normal equations
    ``(Kc^T diag(w) Kc + alpha I) W = Kc^T diag(w) (Y - ybar)`` of the column-centred kernel
    ``Kc = K - 1 mu^T`` (``mu``, ``ybar``: weighted means), ``b = ybar - mu^T W``.
    """

    def __init__(self, K, weights, alpha, penalty, fit_intercept, device):
        self.K, self.alpha, self.penalty, self.fit_intercept = K, alpha, penalty, fit_intercept
        self.device = device
        self.w = torch.as_tensor(weights, dtype=torch.float64, device=device)
        self.d = self.w.sqrt()
        self.chunks = row_chunks(K.shape[0], K.shape[0])
        self.mu = None
        if penalty == "l2" and fit_intercept:
            wn = self.w / self.w.sum()
            self.mu = self._K_T(wn[:, None])[:, 0]  # weighted column means of K

    def _block(self, chunk):
        return torch.as_tensor(
            np.ascontiguousarray(self.K[chunk]), dtype=torch.float64, device=self.device
        )

    def _K(self, V):  # K @ V, streamed by row blocks
        return torch.cat([self._block(c) @ V for c in self.chunks])

    def _K_T(self, U):  # K^T @ U
        return sum(self._block(c).T @ U[c] for c in self.chunks)

    def _Kc(self, V):
        KV = self._K(V)
        return KV if self.mu is None else KV - self.mu @ V

    def _Kc_T(self, U):
        KU = self._K_T(U)
        return KU if self.mu is None else KU - self.mu[:, None] * U.sum(dim=0)

    def rhs(self, Y):
        if self.penalty == "rkhs":
            cols = [self.d[:, None] * Y] + ([self.d[:, None]] if self.fit_intercept else [])
            return torch.cat(cols, dim=1)
        self.ybar = (
            (self.w[:, None] * Y).sum(0) / self.w.sum()
            if self.fit_intercept
            else torch.zeros_like(Y[0])
        )
        return self._Kc_T(self.w[:, None] * (Y - self.ybar))

    def matvec(self, V):
        if self.penalty == "rkhs":
            return self.d[:, None] * self._K(self.d[:, None] * V) + self.alpha * V
        return self._Kc_T(self.w[:, None] * self._Kc(V)) + self.alpha * V

    def dense(self):
        K = torch.as_tensor(np.ascontiguousarray(self.K), dtype=torch.float64, device=self.device)
        if self.penalty == "rkhs":
            M = self.d[:, None] * K * self.d[None, :]
        else:
            Kc = K if self.mu is None else K - self.mu[None, :]
            M = Kc.T @ (self.w[:, None] * Kc)
        return M + self.alpha * torch.eye(K.shape[0], dtype=torch.float64, device=self.device)

    def coefficients(self, sol, n_targets):
        if self.penalty == "l2":
            W = sol
            b = self.ybar - self.mu @ W if self.mu is not None else self.ybar
            return W, b
        if not self.fit_intercept:
            return self.d[:, None] * sol, torch.zeros(n_targets, dtype=torch.float64)
        u, v = sol[:, :n_targets], sol[:, n_targets:]
        denom = self.d @ v[:, 0]
        b = (
            (self.d @ u) / denom
            if denom > 0
            else torch.zeros(n_targets, dtype=torch.float64, device=self.device)
        )
        return self.d[:, None] * (u - v * b), b


def _dense_solve(M, B):
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    warnings.warn(
        "The kernel system is singular (not positive definite): using the least-squares "
        "solution instead. Increase alpha for a unique, stable solution.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )
    return torch.linalg.lstsq(M.cpu(), B.cpu(), driver="gelsd").solution.to(M.device)


def _block_cg(matvec, B, tol, max_iter):
    """Conjugate gradients on every column of ``B`` at once (each with its own step sizes)."""
    X = torch.zeros_like(B)
    R = B.clone()
    P = R.clone()
    rr = (R * R).sum(0)
    stop = (tol * torch.linalg.vector_norm(B, dim=0)) ** 2
    n_iter = 0
    while n_iter < max_iter and bool((rr > stop).any()):
        AP = matvec(P)
        pAp = (P * AP).sum(0)
        step = torch.where(
            pAp > 0, rr / pAp.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rr)
        )
        X += step * P
        R -= step * AP
        rr_new = (R * R).sum(0)
        P = R + (rr_new / rr.clamp_min(torch.finfo(B.dtype).tiny)) * P
        rr = rr_new
        n_iter += 1
    if bool((rr > stop).any()):
        warnings.warn(
            f"Conjugate gradients stopped after {n_iter} iterations above tol={tol:g}: increase "
            "max_iter or alpha, or use solver='cholesky' if the matrix fits in memory.",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    return X, n_iter


def glm_loss(Z, T, omega, kind):
    """Weighted loss sum and its gradient ``G = dLoss/dZ`` (n, L), for one block of rows.

    ``kind``: ``"sigmoid"`` (logistic loss per column: binary and one-vs-rest),
    ``"softmax"`` (cross-entropy; ``omega`` constant across columns) or ``"squared"``
    (``(Z - T)^2 / 2`` weighted by ``omega[:, 0]``).
    """
    if kind == "squared":
        R = (Z - T) * omega[:, :1]
        return 0.5 * ((Z - T) * R).sum(), R
    if kind == "softmax":
        w = omega[:, 0]
        loss = (w * (torch.logsumexp(Z, dim=1) - (T * Z).sum(dim=1))).sum()
        G = w[:, None] * (torch.softmax(Z, dim=1) * T.sum(dim=1, keepdim=True) - T)
        return loss, G
    loss = (omega * (torch.nn.functional.softplus(Z) - T * Z)).sum()
    return loss, omega * (torch.sigmoid(Z) - T)


def lbfgs(value_and_grad, x0, c0, max_iter, tol):
    """Deterministic full-batch L-BFGS (strong Wolfe) of ``value_and_grad(x, c) -> (f, gx, gc)``.

    Stops when the largest gradient entry is ``<= tol``; returns ``(x, c, n_iter, grad_max)``.
    """
    x, c = x0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x, c],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-16,  # stop on the gradient test or at rounding level
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        value, x.grad, c.grad = value_and_grad(x.detach(), c.detach())
        return torch.as_tensor(value, dtype=x.dtype)

    opt.step(closure)
    n_iter = int(opt.state[x].get("n_iter", 0))
    closure()  # gradient at the final point for the convergence test
    grad_max = max(float(x.grad.abs().max()), float(c.grad.abs().max()))
    return x.detach(), c.detach(), n_iter, grad_max


class KGLMProblem:
    """The kGLM objective on one device, and its L-BFGS minimisation.

    ``T`` holds targets in [0, 1] (one-hot labels or soft network probabilities), or
    logits with ``squared=True`` (loss ``(Z - T)^2 / 2``, minimised in closed form by
    :func:`solve_ridge`; only :meth:`value` is used then), and
    ``omega`` the loss weights, both ``(n, L)`` with ``L = 1`` for binary problems;
    ``omega`` already includes the ``1 / sum(sample_weight)`` normalisation.

    The solver works with column-centred kernel features, ``Z = (K - 1 mu^T) W^T + c``
    with ``mu`` the column means and ``c = b + W mu``: the same objective (the penalty
    is on ``W`` only), but the huge constant direction of a kernel matrix moves into
    the unpenalised intercept, which cuts L-BFGS iterations several-fold.
    """

    def __init__(self, K, T, omega, alpha, penalty, use_softmax, device, squared=False):
        def as_tensor(a):
            return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64), device=device)

        self.K = as_tensor(K) if K.flags.writeable else as_tensor(K.copy())
        self.mu = self.K.mean(dim=0)
        self.T, self.omega = as_tensor(T), as_tensor(omega)
        self.alpha, self.penalty = alpha, penalty
        self.kind = "squared" if squared else "softmax" if use_softmax else "sigmoid"
        self.device = device

    def _value_and_grad(self, W, c):
        KW = self.K @ W.T  # (n, L)
        loss, G = glm_loss(KW - W @ self.mu + c, self.T, self.omega, self.kind)
        sG = G.sum(dim=0)
        grad = G.T @ self.K - sG[:, None] * self.mu[None, :]
        if self.penalty == "rkhs":
            reg, grad = (W * KW.T).sum(), grad + self.alpha * KW.T
        else:
            reg, grad = (W * W).sum(), grad + self.alpha * W
        return float(loss + 0.5 * self.alpha * reg), grad, sG

    def value(self, W, b):
        """Objective at ``coef_ = W``, ``intercept_ = b`` (CPU tensors)."""
        W = W.to(self.device)
        return self._value_and_grad(W, b.to(self.device) + W @ self.mu)[0]

    def gradient(self, W, b):
        """Per-sample loss gradients ``G = dLoss/dZ`` (n, L) at ``coef_ = W``, ``intercept_ = b``."""
        Z = self.K @ W.T + b
        return glm_loss(Z, self.T, self.omega, self.kind)[1]

    def solve(self, max_iter, tol):
        n, L = self.T.shape
        zeros = torch.zeros((L, n), dtype=torch.float64, device=self.device)
        W, c, n_iter, grad_max = lbfgs(self._value_and_grad, zeros, zeros[:, 0], max_iter, tol)
        b = c - W @ self.mu
        if self.penalty == "rkhs" and self.alpha > 0:
            # the representer solution W = -G / alpha: the same logits up to the
            # convergence tolerance, and the unique dual whatever the kernel's rank
            W = -self.gradient(W, b).T / self.alpha
        return W.cpu().numpy(), b.cpu().numpy(), n_iter, grad_max
