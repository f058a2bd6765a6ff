"""What the estimators on kernels share: kernel input handling, attributions, the ridge solver.

* :class:`_KernelInputMixin` turns ``X`` into ``K(X, X_train)`` (``kernel="precomputed"``,
  ``"linear"`` or ``"rbf"``) and sets the pairwise tag;
* :func:`top_attributions` ranks the training points of exact kernel attributions
  ``A[x, i] = w[x, i] * K(x, x_i)`` (proponents, opponents, shares of the mass);
* :func:`solve_ridge` is the weighted least-squares solver (Cholesky in float64 on the
  estimator's device, least squares on singular systems, conjugate gradients for kernels
  too large for a dense factorisation) used by the kernel ridge regressor and by the
  classifier's ``target="logits"`` distillation.
"""

import warnings
from numbers import Real

import numpy as np
import torch
from sklearn import get_config
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.utils._chunking import get_chunk_n_rows
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_array, validate_data

__all__ = []

_GAMMA = [Interval(Real, 0, None, closed="neither"), None]  # RBF bandwidth, shared


class _KernelInputMixin:
    """Turn the ``X`` given to an estimator into a kernel against the training set.

    With ``kernel="precomputed"``, ``X`` is already ``K(X, X_train)``: square at fit, ``n_train`` columns afterwards, and the
    pairwise tag makes cross-validation slice rows *and* columns. Otherwise ``X`` holds
    features and ``X_fit_`` is kept to compute ``pairwise_kernels(X, X_fit_)``.
    """

    def _precomputed(self):
        return self.kernel == "precomputed"

    def _pairwise_kernel(self, X, Y):
        return pairwise_kernels(X, Y, metric=self.kernel, gamma=self.gamma, filter_params=True)

    def _validate_train(self, X, y, **check_params):
        """Validated ``(K_train, y)``; sets ``n_features_in_`` and ``X_fit_``.

        ``y=None`` validates ``X`` alone (targets computed elsewhere, e.g. by a network).
        """
        if y is None:
            X = validate_data(self, X, dtype=np.float64)
        else:
            X, y = validate_data(self, X, y, dtype=np.float64, **check_params)
        if self._precomputed():
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    "A precomputed X must be the square (n_train, n_train) matrix between "
                    f"the training samples; got shape {X.shape}."
                )
            return X, y
        self.X_fit_ = X
        return self._pairwise_kernel(X, X), y

    def _validate_test(self, X):
        """Validated ``K(X, X_train)`` of shape ``(n_samples, n_train)``."""
        shape = getattr(X, "shape", ())
        n_fit = self.n_features_in_
        if self._precomputed() and len(shape) == 2 and shape[1] != n_fit:
            check_array(X)  # NaN/inf and dtype errors first
            raise ValueError(
                f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                f"{n_fit} features as input: a precomputed X must be K(X, X_train) "
                f"(or distances) with one column per training sample ({n_fit})."
            )
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X if self._precomputed() else self._pairwise_kernel(X, self.X_fit_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self._precomputed()
        return tags


def network_targets(estimator, network_X, n_train, kind):
    """The network's outputs on the training inputs: the one path by which a kernel estimator runs it.

    Used by distilled estimators (``target="network"``/``"logits"``) inside ``fit`` only,
    through :func:`sknn_kernels.metrics.network_outputs`.
    """
    from .metrics._faithfulness import network_outputs  # lazy: the metrics import the estimators

    if estimator.network is None or network_X is None:
        raise ValueError(
            f"target={estimator.target!r} needs both the `network` parameter and the training "
            "inputs as fit(K, y, network_X=X_train)."
        )
    if len(network_X) != n_train:
        raise ValueError(
            f"network_X has {len(network_X)} samples but the kernel has {n_train} rows."
        )
    return network_outputs(estimator.network, network_X, kind, device=estimator.device)


def row_chunks(n_rows, n_cols):
    """Row slices of a few ``(chunk, n_cols)`` float64 temporaries within ``working_memory``."""
    step = get_chunk_n_rows(row_bytes=4 * 8 * n_cols, max_n_rows=n_rows)
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def top_attributions(K, weights, top_k):
    """Largest and smallest attributions ``A = K * weights(chunk)`` per row, and their shares.

    ``weights(chunk)`` returns the ``(len(chunk), n_train)`` coefficients that multiply
    ``K[chunk]``; rows are processed in :func:`row_chunks` blocks.

    Returns
    -------
    dict
        ``proponents``/``opponents`` (n, top_k) indices, strongest first, their
        ``proponent_scores``/``opponent_scores``, and ``proponent_share``/``opponent_share``
        (n,): the positive (resp. negative) part of those scores over ``sum_i |A[x, i]|``.
    """
    n, n_train = K.shape
    out = {
        key: np.empty((n, top_k), dtype=dt)
        for key, dt in [
            ("proponents", np.intp),
            ("proponent_scores", float),
            ("opponents", np.intp),
            ("opponent_scores", float),
        ]
    }
    out.update(proponent_share=np.empty(n), opponent_share=np.empty(n))
    for chunk in row_chunks(n, n_train):
        A = K[chunk] * weights(chunk)
        mass = np.abs(A).sum(axis=1)
        mass[mass == 0] = 1.0  # all-zero rows: shares are 0, not NaN
        for name, signed in [("proponent", A), ("opponent", -A)]:
            idx = np.argpartition(-signed, top_k - 1, axis=1)[:, :top_k]
            top = np.take_along_axis(signed, idx, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
            top = np.take_along_axis(top, order, axis=1)
            out[name + "s"][chunk] = idx
            out[name + "_scores"][chunk] = top if name == "proponent" else -top
            out[name + "_share"][chunk] = np.clip(top, 0, None).sum(axis=1) / mass
    return out


def check_top_k(top_k, n_train):
    if (
        isinstance(top_k, bool)
        or not isinstance(top_k, (int, np.integer))
        or not 1 <= top_k <= n_train
    ):
        raise ValueError(f"top_k must be an integer in [1, n_train={n_train}]; got {top_k!r}.")


# ----------------------------------------------------------------------------- ridge solver
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
        stacklevel=4,
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
            stacklevel=4,
        )
    return X, n_iter
