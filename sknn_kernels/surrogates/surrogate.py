"""KernelSurrogateClassifier: the kernel general linear model (kGLM) and its attributions.

The model is ``logit_c(x) = sum_i W[c, i] K(x, x_i) + b[c]``: a linear classifier whose
features are the kernel values against the training set. It is fitted by a
deterministic full-batch L-BFGS in torch, and every logit decomposes exactly over the
training points (:meth:`KernelSurrogateClassifier.attribute`).

With ``target="logits"`` it is instead fitted in closed form to a network's logits by
weighted least squares (distillation; :func:`~sknn_kernels.surrogates._solvers.solve_ridge`).
Kernel input handling, the prediction methods and attribution ranking live in
:mod:`sknn_kernels.surrogates._kernel_base`, shared with the regressor and the neighbour classifiers;
both solvers in :mod:`sknn_kernels.surrogates._solvers`.
"""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from ..network._adapter import resolve_device
from ..network._base import DEVICE_CONSTRAINT, NETWORK_CONSTRAINT, user_stacklevel
from ._kernel_base import (
    _GAMMA,
    _KERNEL,
    _ScoringKernelClassifierMixin,
    check_top_k,
    network_targets,
    one_score_per_class,
    row_chunks,
    top_attribution_blocks,
)
from ._primal import objective_on_features, primal_glm, primal_ridge
from ._solvers import KGLMProblem, solve_ridge

__all__ = ["KernelSurrogateClassifier"]


class KernelSurrogateClassifier(_ScoringKernelClassifierMixin, BaseEstimator):
    """Kernel general linear model (kGLM): logistic regression on kernel rows.

    ``logit_c(x) = sum_i coef_[c, i] K(x, x_i) + intercept_[c]``, fitted by minimising ::

        (1 / sum_i s_i) * sum_i sum_c  omega[i, c] * loss[i, c]  +  alpha / 2 * R(W)

    with a deterministic full-batch L-BFGS (strong-Wolfe line search) in float64, so a
    fit does not depend on SGD noise. ``s_i`` are the sample weights, ``omega`` adds
    ``class_weight`` (see below), and ``loss`` is

    * binary problems: the logistic loss of one logit (``coef_`` has one row; the
      positive class is ``classes_[1]``);
    * ``multi_class="multinomial"``: softmax cross-entropy over ``C`` logits;
    * ``multi_class="ovr"``: the sum of ``C`` independent one-vs-rest logistic losses.

    The intercept is not regularised. ``R(W)`` is chosen by ``penalty``:

    * ``"l2"``: ``||W||_F^2``, the penalty of a linear model on the kernel rows. With
      ``multi_class="ovr"`` this is exactly the objective of the paper's
      ``SGDClassifier(loss="log_loss", penalty="l2", alpha=alpha,
      class_weight=...)`` fitted on ``K_train`` (sklearn defines ``R = ||w||^2 / 2``
      per binary problem and, in one-vs-rest, weights only the positive examples of
      class ``c`` by ``class_weight[c]``; ``omega`` does the same). Compare two
      fits with :meth:`objective`, passing the other model's ``coef_``/``intercept_``.
    * ``"rkhs"``: ``sum_c w_c^T K_train w_c``, the squared RKHS norm of each logit
      function (the kernel-ridge penalty). It depends only on the fitted functions,
      not on how they are spread over duplicated training points.

    Parameters
    ----------
    kernel : {"precomputed", "linear", "rbf"}, default="precomputed"
        ``"precomputed"``: ``X`` is ``K(X, X_train)`` (square at fit), e.g. the output
        of ``NTKFeaturizer``. ``"linear"``/``"rbf"``: ``X`` holds features and the
        kernel is computed with :func:`sklearn.metrics.pairwise.pairwise_kernels`
        (baselines without a network).
        ``"linear"`` is ``K = X X^T``: with fewer features than samples, or ``X`` a
        ``np.memmap``, Zarr or ``dask.array`` (streamed in row blocks), the same model is
        solved on the features (O(n k), never the ``(n, n)`` kernel; see the user guide,
        "Surrogates at data-set scale").
    gamma : float, default=None
        RBF bandwidth (``None`` means ``1 / n_features``); ignored by other kernels.
    alpha : float, default=1e-4
        Regularisation strength (``SGDClassifier``'s ``alpha``).
    penalty : {"l2", "rkhs"}, default="l2"
        Regulariser ``R(W)``, see above.
    multi_class : {"multinomial", "ovr"}, default="multinomial"
        Softmax over all classes, or one-vs-rest logistic models (the paper's
        setting). Irrelevant for binary problems, which always use one logit.
    target : {"labels", "network", "logits"}, default="labels"
        What the surrogate imitates. ``"labels"`` fits the ground-truth ``y``, as in
        the paper: faithfulness (Kendall tau with the network) then measures how much
        of the network's behaviour the *kernel* carries, an independent test.
        ``"network"`` distils the network: the targets are its soft predictions on
        ``network_X`` (a ``fit`` parameter holding the training inputs that the
        rows of ``K_train`` belong to). Use it when the aim is the most faithful
        explanation of the network, including its mistakes, not a test of the
        kernel; it needs ``network`` at fit. ``y`` still defines ``classes_``, and the
        network's output column ``j`` must score ``classes_[j]`` (one sigmoid output
        is accepted for binary problems).
        ``"logits"`` distils the network's *logits* instead: the kernel model is fitted
        in closed form by weighted least squares,
        ``min sum_i omega_i ||z(x_i) - f(x_i)||^2 + alpha R(W)`` with ``z`` the network's
        logits (``z_1 - z_0`` for a two-output binary network; its single output for a
        one-output network), and predicts through softmax (sigmoid for one logit),
        whatever ``multi_class`` says. With ``penalty="rkhs"`` this is kernel ridge
        regression of the logits, whose attributions decompose the network's own logit
        over the training points; the most faithful choice (see the user guide,
        "Which surrogate for which question"). ``max_iter``/``tol`` are unused.
    network : torch.nn.Module, fitted skorch net or FrozenEstimator, default=None
        The network to distil when ``target`` is ``"network"`` or ``"logits"``; ignored
        otherwise. It is only run on ``network_X`` during ``fit``, through
        :func:`sknn_kernels.metrics.network_outputs`.
    max_iter : int, default=1000
        Maximum number of L-BFGS iterations.
    tol : float, default=1e-6
        Convergence threshold on the largest absolute gradient entry of the
        objective; a :class:`~sklearn.exceptions.ConvergenceWarning` is raised when
        ``max_iter`` is reached (or the line search stalls) above it.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes' samples (``"balanced"``: ``n / (C * n_c)``).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where the solver runs (``"auto"``: CUDA when available). The fitted
        attributes are NumPy arrays, so a model fitted on a GPU loads anywhere.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coef_ : ndarray of shape (1, n_train) or (n_classes, n_train)
        ``W``: one row for binary problems, one per class otherwise.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        ``b``.
    n_iter_ : int
        L-BFGS iterations run (1 for the direct solve of ``target="logits"``).
    X_fit_ : ndarray of shape (n_train, n_features)
        Training features (only when ``kernel`` is not ``"precomputed"``); the array as
        given (not copied) when it is streamed (dask, Zarr, memmap).
    feature_coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        ``coef_ @ X_fit_`` (only for ``kernel="linear"``): the logits are
        ``X @ feature_coef_.T + intercept_``, in O(n_features) per sample.
    n_features_in_ : int
        Number of columns of ``X`` at fit (``n_train`` for a precomputed kernel).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sknn_kernels.surrogates.neighbors.KernelNearestCentroid : Nearest class mean in feature space.
    sklearn.linear_model.SGDClassifier : The stochastic solver of the paper's kGLM.

    Notes
    -----
    One solver iteration costs two ``(n_train, n_train) x (n_train, C)`` products.
    The kernel is held in float64 on ``device`` during ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> K = rbf_kernel(X, X, gamma=0.5)
    >>> clf = KernelSurrogateClassifier(alpha=1e-3, device="cpu").fit(K, y)
    >>> clf.coef_.shape
    (3, 150)
    >>> round(clf.score(K, y), 2)
    0.99
    >>> A = clf.attribute(K[:2], target="all")  # (n_test, n_train, n_classes)
    >>> bool(np.allclose(A.sum(axis=1) + clf.intercept_, clf.decision_function(K[:2])))
    True
    """

    _parameter_constraints = {
        "kernel": _KERNEL,
        "gamma": _GAMMA,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "penalty": [StrOptions({"l2", "rkhs"})],
        "multi_class": [StrOptions({"multinomial", "ovr"})],
        "target": [StrOptions({"labels", "network", "logits"})],
        "network": NETWORK_CONSTRAINT,
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        kernel="precomputed",
        *,
        gamma=None,
        alpha=1e-4,
        penalty="l2",
        multi_class="multinomial",
        target="labels",
        network=None,
        max_iter=1000,
        tol=1e-6,
        class_weight=None,
        device="auto",
    ):
        self.kernel = kernel
        self.gamma = gamma
        self.alpha = alpha
        self.penalty = penalty
        self.multi_class = multi_class
        self.target = target
        self.network = network
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.device = device

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, network_X=None):
        """Fit the kGLM on the training kernel.

        Parameters
        ----------
        X : array-like of shape (n_train, n_train) or (n_train, n_features)
            ``K(X_train, X_train)`` when ``kernel="precomputed"``, else features.
        y : array-like of shape (n_train,)
            Class labels, at least two distinct ones (as ``LogisticRegression``, one class
            raises a ``ValueError``: there is nothing to separate).
        sample_weight : array-like of shape (n_train,), default=None
            Non-negative per-sample weights.
        network_X : array-like of shape (n_train, ...), default=None
            Training inputs of the network (in the shape the network takes), needed by
            ``target="network"``/``"logits"``. Inside a
            ``Pipeline``/``GridSearchCV`` pass it as ``clf__network_X=X`` (it is
            sliced per fold like ``y``).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        features = self._uses_features(X) and self.alpha > 0
        K, T, omega = self._prepare(X, y, sample_weight, network_X, reset=True, features=features)
        if features:  # the same model, solved in the k-dimensional primal (_primal.py)
            return self._fit_primal(K, T, omega)
        device = resolve_device(self.device)
        if self.target == "logits":  # closed form: weighted least squares on the logits
            W, b, _ = solve_ridge(
                K, T, omega[:, 0], self.alpha, penalty=self.penalty, device=device
            )
            self.coef_, self.intercept_, self.n_iter_ = W.T, b, 1  # one direct solve
        else:
            problem = KGLMProblem(K, T, omega, self.alpha, self.penalty, self._softmax(), device)
            W, b, self.n_iter_, grad_max = problem.solve(self.max_iter, self.tol)
            self._check_converged(grad_max)
            self.coef_, self.intercept_ = W, b
        if self.kernel == "linear":
            self.feature_coef_ = self.coef_ @ self.X_fit_
        return self

    def _fit_primal(self, X, T, omega):
        if self.target == "logits":
            W, b, fc = primal_ridge(X, T, omega[:, 0], self.alpha, penalty=self.penalty)
            self.n_iter_ = 1
        else:
            W, b, fc, self.n_iter_, grad_max = primal_glm(
                X,
                T,
                omega,
                self.alpha,
                penalty=self.penalty,
                kind=self._loss_kind(),
                max_iter=self.max_iter,
                tol=self.tol,
            )
            self._check_converged(grad_max)
        self.coef_, self.intercept_, self.feature_coef_ = W.T, b, fc.T
        return self

    def _check_converged(self, grad_max):
        if not grad_max <= self.tol:
            warnings.warn(
                f"L-BFGS stopped after {self.n_iter_} iterations with largest gradient "
                f"entry {grad_max:.3g} > tol={self.tol:g}. Increase max_iter or alpha, "
                "or loosen tol.",
                ConvergenceWarning,
                stacklevel=user_stacklevel(),
            )

    def _loss_kind(self):
        if self.target == "logits":
            return "squared"
        return "softmax" if self._softmax() else "sigmoid"

    def _softmax(self):
        multinomial = self.multi_class == "multinomial" or self.target == "logits"
        return multinomial and len(self.classes_) > 2

    def _prepare(self, X, y, sample_weight, network_X, reset, features=False):
        """Training kernel (or features), targets ``T`` (n, L) and loss weights ``omega`` (n, L)."""
        if reset:
            K, y = self._fit_features(X, y) if features else self._validate_train(X, y)
            y_idx = self._fit_classes(y)
        else:  # objective(): the training data of an already fitted model
            K = self._validate_test_input(X) if features else self._validate_test(X)
            y_idx = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
            if K.shape[0] != self._n_train() or not np.array_equal(self.classes_[y_idx], y):
                raise ValueError("objective() needs the training data and labels of the fit.")
        n_classes = len(self.classes_)
        s = _check_sample_weight(sample_weight, K, ensure_non_negative=True)
        s = s / s.sum()
        cw = compute_class_weight(self.class_weight, classes=self.classes_, y=self.classes_[y_idx])
        onehot = np.eye(n_classes)[y_idx]
        if n_classes == 2:  # one logit for classes_[1]; class weight by label (SGD's binary rule)
            omega = (s * cw[y_idx])[:, None]
            onehot = onehot[:, 1:]
        elif self._softmax():  # includes target="logits": one weight per sample
            omega = (s * cw[y_idx])[:, None]
        else:  # one-vs-rest: class_weight[c] only on the positives of problem c, as SGDClassifier
            omega = s[:, None] * np.where(onehot == 1, cw, 1.0)
        T = onehot if self.target == "labels" else self._network_targets(network_X, K.shape[0])
        return K, T, omega

    def _network_targets(self, network_X, n_train):
        kind = "logits" if self.target == "logits" else "proba"
        P = network_targets(self, network_X, n_train, kind)
        if kind == "logits" and P.shape[1] == 1 and len(self.classes_) == 2:
            return P  # one output: the logit of classes_[1]
        if P.shape[1] != len(self.classes_):
            raise ValueError(
                f"The network has {P.shape[1]} output classes but y has "
                f"{len(self.classes_)}: output column j must score classes_[j]."
            )
        if len(self.classes_) == 2:  # the logit of classes_[1], or its probability
            return P[:, 1:] - P[:, :1] if kind == "logits" else P[:, 1:]
        return P

    def objective(self, X, y, sample_weight=None, *, network_X=None, coef=None, intercept=None):
        """Value of the training objective at the fitted (or given) parameters.

        Lets two solvers be compared on one objective, e.g. this model against an
        ``SGDClassifier(loss="log_loss", penalty="l2")`` fitted on the same kernel
        (use ``multi_class="ovr"``, ``penalty="l2"``, same ``alpha``/``class_weight``).

        Parameters
        ----------
        X : array-like of shape (n_train, n_train) or (n_train, n_features)
            The training data of the fit (``K_train`` when precomputed).
        y : array-like of shape (n_train,)
            The training labels.
        sample_weight : array-like of shape (n_train,), default=None
            Per-sample weights, as in ``fit``.
        network_X : array-like, default=None
            As in ``fit`` (``target="network"`` only).
        coef, intercept : array-like, default=None
            Parameters to evaluate instead of ``coef_``/``intercept_``, with the same
            shapes (an ``SGDClassifier``'s ``coef_``/``intercept_`` fit as they are).

        Returns
        -------
        value : float
            ``mean weighted loss + alpha / 2 * R(W)``.
        """
        check_is_fitted(self)
        features = self.kernel == "linear"  # O(n k): never the (n, n) kernel
        K, T, omega = self._prepare(X, y, sample_weight, network_X, reset=False, features=features)
        W = self.coef_ if coef is None else np.asarray(coef, dtype=np.float64)
        b = self.intercept_ if intercept is None else np.asarray(intercept, dtype=np.float64)
        if W.shape != self.coef_.shape or b.shape != self.intercept_.shape:
            raise ValueError(
                f"coef and intercept must have shapes {self.coef_.shape} and "
                f"{self.intercept_.shape}; got {W.shape} and {b.shape}."
            )
        if features:  # K = X X^T: Z = X (X^T W^T) + b, tr(W K W^T) = ||X^T W^T||^2
            return objective_on_features(
                K, T, omega, W, b, self.alpha, self.penalty, self._loss_kind()
            )
        problem = KGLMProblem(
            K,
            T,
            omega,
            self.alpha,
            self.penalty,
            self._softmax(),
            torch.device("cpu"),
            squared=self.target == "logits",
        )
        with torch.no_grad():
            return float(problem.value(torch.from_numpy(W.copy()), torch.from_numpy(b.copy())))

    # ------------------------------------------------------------- predict
    def _scores(self, K):
        """Logits ``K @ coef_.T + intercept_``: one column for binary problems."""
        return K @ self.coef_.T + self.intercept_

    def _raw_scores(self, X):
        if self.kernel == "linear":  # X (X_train^T W^T): O(k) per sample
            return self._validate_test_input(X) @ self.feature_coef_.T + self.intercept_
        return self._scores(self._validate_test(X))

    def _link(self, scores):
        """Sigmoid (binary), softmax, or one-vs-rest sigmoids normalised as sklearn does."""
        if scores.shape[1] == 1:
            p = expit(scores[:, 0])
            return np.column_stack([1 - p, p])
        if self._softmax():
            return softmax(scores, axis=1)
        p = expit(scores)
        return p / p.sum(axis=1, keepdims=True)

    # --------------------------------------------------------- attribution
    def attribute(self, X, target="predicted"):
        """Exact decomposition of the logits over the training points.

        ``A[x, i, c] = coef_[c, i] * K(x, x_i)``, so that ::

            A.sum(axis=1) + intercept_ == decision_function(X)   # target="all", multiclass

        In a binary problem the model has one logit ``f`` for ``classes_[1]``
        (``coef_`` has one row): ``target="all"`` returns ``A[..., 0]`` with
        ``A.sum(axis=1)[:, 0] + intercept_[0] == f``, and a per-point target returns the
        evidence *for* that class, ``s * coef_[0, i] * K(x, x_i)`` with ``s = +1`` for
        ``classes_[1]`` and ``-1`` for ``classes_[0]`` (then
        ``A.sum(axis=1) + s * intercept_[0] == s * f``). With ``target="predicted"``
        positive entries therefore always support the prediction.

        Computed in row blocks sized by sklearn's ``working_memory`` setting;
        ``target="all"`` allocates ``n_samples * n_train * n_logits`` floats, a
        per-point target only ``n_samples * n_train``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`decision_function`.
        target : "predicted", "all" or array-like of shape (n_samples,), default="predicted"
            Which logit to decompose: each point's predicted class, every logit, or
            one class label per point (e.g. the true labels).

        Returns
        -------
        A : ndarray of shape (n_samples, n_train) or (n_samples, n_train, n_logits)
            Attribution of each training point; the 3-D form for ``target="all"``
            (``n_logits`` is 1 for binary problems, ``n_classes`` otherwise).
        """
        check_is_fitted(self)
        K = self._validate_test(X)
        if isinstance(target, str) and target == "all":
            return K[:, :, None] * self.coef_.T[None, :, :]
        rows, sign = self._target_logits(X, target)
        A = np.empty_like(K)
        for chunk in row_chunks(K.shape[0], K.shape[1]):
            A[chunk] = K[chunk] * (sign[chunk, None] * self.coef_[rows[chunk]])
        return A

    def explain(self, X, top_k=5, target="predicted"):
        """Top proponents and opponents of each prediction, with their share of the mass.

        Attributions of kernel models are not sparse: the few training points with
        the largest scores usually hold a small part of the total absolute
        attribution, which ``proponent_share``/``opponent_share`` make visible.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`decision_function`.
        top_k : int, default=5
            Number of proponents and of opponents per point (at most ``n_train``).
        target : "predicted" or array-like of shape (n_samples,), default="predicted"
            The class whose logit is explained (see :meth:`attribute`).

        Returns
        -------
        explanation : :class:`~sklearn.utils.Bunch`
            ``target`` (n_samples,) the explained class;
            ``proponents``/``opponents`` (n_samples, top_k) training indices with the
            largest / smallest attributions, strongest first;
            ``proponent_scores``/``opponent_scores`` (n_samples, top_k) their
            attributions; ``proponent_share``/``opponent_share`` (n_samples,) the
            positive (resp. negative) part of those scores divided by
            ``sum_i |A[x, i]|``; ``intercept`` (n_samples,) the intercept term of the
            explained logit (``scores.sum + intercept`` is the logit).

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.metrics.pairwise import rbf_kernel
        >>> from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> K = rbf_kernel(X, X)
        >>> clf = KernelSurrogateClassifier(alpha=1e-3, device="cpu").fit(K, y)
        >>> ex = clf.explain(K[:3], top_k=2)
        >>> ex.proponents.shape, ex.proponent_share.shape
        ((3, 2), (3,))
        """
        check_is_fitted(self)
        if isinstance(target, str) and target == "all":
            raise ValueError("explain() explains one logit per point: target='all' is not allowed.")
        n, columns = self._kernel_columns(X)
        n_train = self._n_train()
        check_top_k(top_k, n_train)
        rows, sign = self._target_logits(X, target)
        blocks = (
            (sl, columns(sl) * (sign[:, None] * self.coef_[:, sl][rows]))
            for sl in row_chunks(n_train, n)
        )
        found = top_attribution_blocks(blocks, n, top_k)
        target_labels = self._target_labels(rows, sign)
        return Bunch(target=target_labels, intercept=sign * self.intercept_[rows], **found)

    def _target_logits(self, X, target):
        """Row of ``coef_`` and sign (+1/-1) of the logit explained for each point."""
        n = np.shape(X)[0]  # a kernel, features, a memmap, Zarr or dask array: all have a shape
        if isinstance(target, str):
            if target != "predicted":
                raise ValueError(
                    f"target must be 'predicted', 'all' or one class label per sample; got {target!r}."
                )
            idx = one_score_per_class(self._raw_scores(X)).argmax(axis=1)
        else:
            labels = np.asarray(target)
            if labels.shape != (n,):
                raise ValueError(f"target must have shape ({n},); got {labels.shape}.")
            idx = np.searchsorted(self.classes_, labels)
            idx = np.clip(idx, 0, len(self.classes_) - 1)
            if not np.array_equal(self.classes_[idx], labels):
                raise ValueError(
                    f"target contains labels not in classes_ {self.classes_.tolist()}."
                )
        if len(self.classes_) == 2:
            return np.zeros(n, dtype=np.intp), np.where(idx == 1, 1.0, -1.0)
        return idx, np.ones(n)

    def _target_labels(self, rows, sign):
        if len(self.classes_) == 2:
            return self.classes_[(sign > 0).astype(int)]
        return self.classes_[rows]
