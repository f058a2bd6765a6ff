"""KernelSurrogateRegressor: kernel ridge regression on a network's kernel, with exact attributions.

``f(x) = sum_i dual_coef_[i] K(x, x_i) + intercept_``, fitted in closed form (Cholesky in
float64 on the estimator's device, or conjugate gradients for kernels too large for a
dense factorisation): with ``fit_intercept=False`` the predictions are those of
:class:`sklearn.kernel_ridge.KernelRidge` on the same kernel and ``alpha``. Every
prediction decomposes exactly over the training points (:meth:`~KernelSurrogateRegressor.attribute`).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from ..network._adapter import resolve_device
from ..network._base import DEVICE_CONSTRAINT, NETWORK_CONSTRAINT
from ._kernel_base import (
    _GAMMA,
    _KERNEL,
    _KernelInputMixin,
    check_top_k,
    is_lazy,
    network_targets,
    row_chunks,
    top_attribution_blocks,
)
from ._primal import primal_ridge
from ._solvers import solve_ridge

__all__ = ["KernelSurrogateRegressor"]


class KernelSurrogateRegressor(_KernelInputMixin, RegressorMixin, BaseEstimator):
    """Kernel ridge regression on kernel rows, with an intercept and exact attributions.

    Minimises ::

        sum_i s_i ||y_i - f(x_i)||^2  +  alpha * ||f - b||_H^2,
        f(x) = sum_i dual_coef_[i] K(x, x_i) + b

    (``s``: sample weights, ``||.||_H``: the norm of the kernel's function space, i.e.
    ``dual_coef_^T K dual_coef_``), the objective of :class:`sklearn.kernel_ridge.KernelRidge`
    with the same ``alpha`` and an unpenalised intercept ``b``. With ``fit_intercept=False``
    the predictions equal ``KernelRidge``'s on the same kernel. Multi-output ``y`` shares one
    factorisation.

    This is the regression surrogate of Qadeer et al. ("Efficient kernel surrogates for
    neural network-based regression"): kernel regression of the targets on the network's
    NTK or conjugate kernel (CK). With ``target="network"`` it distils the network instead,
    regressing its outputs; its attributions then decompose the network's own prediction.

    Parameters
    ----------
    kernel : {"precomputed", "linear", "rbf"}, default="precomputed"
        ``"precomputed"``: ``X`` is ``K(X, X_train)`` (square at fit), e.g. the output of
        ``NTKFeaturizer``. ``"linear"``/``"rbf"``: ``X`` holds features and the kernel is
        computed with :func:`sklearn.metrics.pairwise.pairwise_kernels`.
        ``"linear"`` is ``K = X X^T``: with fewer features than samples, or ``X`` a
        ``np.memmap``, Zarr or ``dask.array`` (streamed in row blocks), the same model is
        solved on the features (O(n k), never the ``(n, n)`` kernel; see the user guide,
        "Surrogates at data-set scale").
    gamma : float, default=None
        RBF bandwidth (``None`` means ``1 / n_features``); ignored by other kernels.
    alpha : float, default=1.0
        Regularisation strength, as in ``KernelRidge``. ``alpha=0`` interpolates; on a
        singular kernel the least-squares solution is used, with a warning.
    fit_intercept : bool, default=True
        Fit an unpenalised intercept (``False``: ``KernelRidge``'s model).
    target : {"labels", "network"}, default="labels"
        ``"labels"`` regresses ``y`` (the paper's protocol: how good is a regression on this
        kernel?). ``"network"`` regresses the network's outputs on ``network_X`` (a ``fit``
        parameter holding the training inputs the rows of ``K_train`` belong to), computed
        by :func:`sknn_kernels.metrics.network_outputs`; ``y`` is then ignored (it may be
        ``None``). Use it for the most faithful explanation of the network.
    network : torch.nn.Module, fitted skorch net or FrozenEstimator, default=None
        The network distilled when ``target="network"``; only run during ``fit``.
    solver : {"auto", "cholesky", "cg"}, default="auto"
        ``"cholesky"``: dense float64 factorisation of an ``(n_train, n_train)`` matrix on
        ``device``. ``"cg"``: conjugate gradients streaming the kernel to ``device`` in row
        blocks, for kernels that do not fit a dense solve (needs ``alpha > 0``; slow to
        converge when ``alpha`` is tiny). ``"auto"``: Cholesky when ``8 * n_train**2`` bytes
        fit in sklearn's ``working_memory`` (``sklearn.set_config``), else CG.
    tol : float, default=1e-10
        CG stopping rule, ``||residual|| <= tol * ||right-hand side||`` per output.
    max_iter : int, default=None
        CG iteration cap (``None``: ``n_train``). A ``ConvergenceWarning`` is raised when hit.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where the solver runs (``"auto"``: CUDA when available). Fitted attributes are
        NumPy arrays.

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_train,) or (n_train, n_outputs)
        Weights of the kernel rows (``KernelRidge``'s ``dual_coef_``).
    intercept_ : float or ndarray of shape (n_outputs,)
        ``b`` (0 when ``fit_intercept=False``).
    n_iter_ : int
        CG iterations (1 for the direct Cholesky solve).
    X_fit_ : ndarray of shape (n_train, n_features)
        Training features (only when ``kernel`` is not ``"precomputed"``); the array as
        given when it is streamed (dask, Zarr, memmap).
    feature_coef_ : ndarray of shape (n_features,) or (n_features, n_outputs)
        ``X_fit_.T @ dual_coef_`` (only for ``kernel="linear"``): predictions are
        ``X @ feature_coef_ + intercept_``.
    n_features_in_ : int
        Number of columns of ``X`` at fit (``n_train`` for a precomputed kernel).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sknn_kernels.KernelSurrogateClassifier : The classifier (``target="logits"`` distils
        the logits with the same solver).
    sklearn.kernel_ridge.KernelRidge : The same model without intercept or attributions.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from sknn_kernels import KernelSurrogateRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> K = rbf_kernel(X, X, gamma=5.0)
    >>> reg = KernelSurrogateRegressor(alpha=0.1, fit_intercept=False, device="cpu").fit(K, y)
    >>> bool(np.allclose(reg.predict(K), KernelRidge(alpha=0.1, kernel="precomputed").fit(K, y).predict(K)))
    True
    >>> reg = KernelSurrogateRegressor(alpha=0.1, device="cpu").fit(K, y)
    >>> A = reg.attribute(K[:3])  # (n_test, n_train)
    >>> bool(np.allclose(A.sum(axis=1) + reg.intercept_, reg.predict(K[:3])))
    True
    """

    _parameter_constraints = {
        "kernel": _KERNEL,
        "gamma": _GAMMA,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "target": [StrOptions({"labels", "network"})],
        "network": NETWORK_CONSTRAINT,
        "solver": [StrOptions({"auto", "cholesky", "cg"})],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        kernel="precomputed",
        *,
        gamma=None,
        alpha=1.0,
        fit_intercept=True,
        target="labels",
        network=None,
        solver="auto",
        tol=1e-10,
        max_iter=None,
        device="auto",
    ):
        self.kernel = kernel
        self.gamma = gamma
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.target = target
        self.network = network
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, network_X=None):
        """Fit the kernel ridge regression on the training kernel.

        Parameters
        ----------
        X : array-like of shape (n_train, n_train) or (n_train, n_features)
            ``K(X_train, X_train)`` when ``kernel="precomputed"``, else features.
        y : array-like of shape (n_train,) or (n_train, n_outputs), default=None
            Targets; required unless ``target="network"`` (then ignored).
        sample_weight : array-like of shape (n_train,), default=None
            Non-negative per-sample weights (``KernelRidge``'s: they multiply each
            squared error).
        network_X : array-like of shape (n_train, ...), default=None
            Training inputs of the network in the shape it takes, for
            ``target="network"``. In a ``Pipeline``/``GridSearchCV`` pass it as
            ``reg__network_X=X`` (sliced per fold like ``y``).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        distil = self.target == "network"
        if y is None and not distil:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None "
                "(only target='network' fits without y)."
            )
        if not distil:
            _check_numeric_targets(y, type(self).__name__)
        features = self._uses_features(X) and self.alpha > 0
        features = features and (self.solver == "auto" or is_lazy(X))
        validate = self._fit_features if features else self._validate_train
        K, y = validate(X, None if distil else y, multi_output=True, y_numeric=True)
        if distil:
            y = self._network_targets(network_X, K.shape[0])
        s = _check_sample_weight(sample_weight, K, ensure_non_negative=True)
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if features:  # the same model from the (k, k) primal normal equations
            W, b, fc = primal_ridge(
                K, Y, s, self.alpha, penalty="rkhs", fit_intercept=self.fit_intercept
            )
            self.n_iter_ = 1
            return self._set_coef(W, b, y.ndim == 1, fc)
        W, b, self.n_iter_ = solve_ridge(
            K,
            Y,
            s,
            self.alpha,
            penalty="rkhs",
            fit_intercept=self.fit_intercept,
            solver=self.solver,
            device=resolve_device(self.device),
            tol=self.tol,
            max_iter=self.max_iter,
        )
        fc = self._train_features().T @ W if self.kernel == "linear" else None
        return self._set_coef(W, b, y.ndim == 1, fc)

    def _set_coef(self, W, b, single, feature_coef):
        self.dual_coef_ = W[:, 0] if single else W
        self.intercept_ = float(b[0]) if single else b
        if feature_coef is not None:
            self.feature_coef_ = feature_coef[:, 0] if single else feature_coef
        return self

    def _network_targets(self, network_X, n_train):
        Z = network_targets(self, network_X, n_train, "logits")
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X):
        """Predictions ``K(X, X_train) @ dual_coef_ + intercept_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            ``K(X, X_train)`` when ``kernel="precomputed"``, else features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions, one column per output of ``y`` at fit.
        """
        check_is_fitted(self)
        if self.kernel == "linear":  # X (X_train^T W): O(n_features) per sample
            return self._validate_test_input(X) @ self.feature_coef_ + self.intercept_
        return self._validate_test(X) @ self.dual_coef_ + self.intercept_

    def attribute(self, X, target=None):
        """Exact decomposition of the predictions over the training points.

        ``A[x, i, o] = dual_coef_[i, o] * K(x, x_i)``, so that ::

            A.sum(axis=1) + intercept_ == predict(X)

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`predict`.
        target : int, default=None
            Output to decompose (multi-output models); ``None`` decomposes every output.

        Returns
        -------
        A : ndarray of shape (n_samples, n_train) or (n_samples, n_train, n_outputs)
            2-D for a single-output model or an integer ``target``.
        """
        check_is_fitted(self)
        K = self._validate_test(X)
        coef = self._output_coef(target)
        return K[:, :, None] * coef[None] if coef.ndim == 2 else K * coef

    def explain(self, X, top_k=5, target=None):
        """Top proponents and opponents of each prediction, with their share of the mass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`predict`.
        top_k : int, default=5
            Proponents and opponents per point (at most ``n_train``).
        target : int, default=None
            Output explained; required for multi-output models.

        Returns
        -------
        explanation : :class:`~sklearn.utils.Bunch`
            As :meth:`KernelSurrogateClassifier.explain`: ``proponents``/``opponents``
            (n_samples, top_k) training indices (largest positive / negative attributions
            first), ``proponent_scores``/``opponent_scores``,
            ``proponent_share``/``opponent_share`` (their part of ``sum_i |A[x, i]|``),
            and ``intercept`` (n_samples,), so that the sum of all attributions plus
            ``intercept`` is the prediction.

        Examples
        --------
        >>> from sklearn.datasets import load_diabetes
        >>> from sknn_kernels import KernelSurrogateRegressor
        >>> X, y = load_diabetes(return_X_y=True)
        >>> reg = KernelSurrogateRegressor(kernel="rbf", gamma=5.0, alpha=0.1, device="cpu").fit(X, y)
        >>> ex = reg.explain(X[:3], top_k=2)
        >>> ex.proponents.shape, ex.proponent_share.shape
        ((3, 2), (3,))
        """
        check_is_fitted(self)
        coef = self._output_coef(target)
        if coef.ndim == 2:
            raise ValueError(
                "explain() explains one output: pass target=<output index> for a multi-output model."
            )
        n, columns = self._kernel_columns(X)
        n_train = self._n_train()
        check_top_k(top_k, n_train)
        blocks = ((sl, columns(sl) * coef[sl]) for sl in row_chunks(n_train, n))
        found = top_attribution_blocks(blocks, n, top_k)
        intercept = np.asarray(self.intercept_, dtype=float)
        intercept = intercept if intercept.ndim == 0 else intercept[target]
        return Bunch(intercept=np.full(n, float(intercept)), **found)

    def _output_coef(self, target):
        """``dual_coef_`` of one output (1-D) or of all of them."""
        if target is None:
            return self.dual_coef_
        n_outputs = 1 if self.dual_coef_.ndim == 1 else self.dual_coef_.shape[1]
        if (
            isinstance(target, bool)
            or not isinstance(target, (Integral, np.integer))
            or not 0 <= target < n_outputs
        ):
            raise ValueError(
                f"target must be None or an output index in [0, {n_outputs}); got {target!r}."
            )
        return self.dual_coef_ if self.dual_coef_.ndim == 1 else self.dual_coef_[:, target]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.required = self.target == "labels"  # distillation fits without y
        return tags


def _check_numeric_targets(y, name):
    """A regressor's targets are numbers: say so for labels (strings, booleans, objects)."""
    kind = np.asarray(y).dtype.kind
    if kind == "O":  # e.g. a pandas object column of numbers converts; labels do not
        try:
            np.asarray(y, dtype=np.float64)
            return
        except (TypeError, ValueError):
            pass
    if kind not in "iufbc":  # complex: validate_data says complex data are not supported
        sample = np.asarray(y).ravel()[:3].tolist()
        raise ValueError(
            f"{name} needs numeric targets; got y of dtype {np.asarray(y).dtype}, e.g. {sample}. "
            "For class labels use KernelSurrogateClassifier; otherwise convert y to numbers, "
            "e.g. y.astype(float)."
        )
