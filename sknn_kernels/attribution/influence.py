"""InfluenceAttributor: TRAK-style attributions that predict retraining.

A kernel surrogate's attributions ``coef_[c, i] K(x, x_i)`` say how the *surrogate* uses each
training sample; they fit the labels, not the network's sensitivity to its training data.
This estimator answers that second question with the influence function of the network
linearised around its weights (Koh & Liang 2017; Park et al., "TRAK", ICML 2023), computed in
the feature space of the package's kernels: with per-logit gradients ``J(x) = ∂f(x)/∂θ``
(``C × P``, exact or Johnson–Lindenstrauss-projected to ``k`` columns), softmax
probabilities ``p(x)`` and labels ``y_i``,

``A(x, i) = -u(x)ᵀ J(x) (Σ_j J(x_j)ᵀ W_j J(x_j) + λ I)⁻¹ J(x_i)ᵀ (p(x_i) - e_{y_i})``

where ``u(x)`` is the gradient of the explained output with respect to the logits,
``p(x_i) - e_{y_i}`` is the derivative of the cross-entropy at ``x_i`` and ``W_j`` the loss
curvature. ``A(x, i)`` is the first-order change of the output when ``x_i`` is removed from
training (positive: ``x_i`` supports it), so ``Σ_{i ∈ S} A(x, i)`` predicts the output of a
model trained on a subset ``S``, which :func:`sknn_kernels.attribution.evaluation.linear_datamodeling_score`
measures. With ``output="margin"`` and ``curvature="identity"`` this is TRAK's estimator
``φ(x)ᵀ (ΦᵀΦ)⁻¹ φ(x_i) (1 - p_i)`` (``φ`` the projected margin gradient). Averaging over
networks trained with different seeds (an ensemble) removes much of the noise of one
linearisation, as in TRAK; members trained on random halves of the training set predict
retraining on subsets better still (they are linearised where the question is asked).
"""

from numbers import Integral, Real

import numpy as np
import scipy.linalg
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..network._base import CALL_CONSTRAINTS, NetworkEstimatorMixin, n_samples
from ..ntk import empirical_ntk, projected_ntk_features
from ..surrogates._kernel_base import check_top_k, top_attributions

__all__ = ["InfluenceAttributor"]


class InfluenceAttributor(NetworkEstimatorMixin, BaseEstimator):
    """Attribute a network's predictions to its training samples by (TRAK-style) influence.

    See the module docstring for the formula. ``fit`` stores, per network,
    ``H⁻¹ J(x_i)ᵀ (p_i - e_{y_i})`` for every training sample; :meth:`attribute` multiplies
    them by the output gradients of new samples.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net, FrozenEstimator, or a list or tuple of them
        The trained network(s). A list or tuple is an ensemble (same architecture, different
        seeds; trained on all of ``X`` or, as in TRAK, each on a random half of it):
        attributions and probabilities are averaged over its members. Output column ``j`` scores ``classes_[j]``. Private copies are used;
        the networks are never modified.
    classes : array-like of shape (n_outputs,), default=None
        The labels scored by the network's output columns, in order. ``None``: the sorted
        labels of ``y``, which must then hold every class. Set it when the training samples
        you attribute to miss a class the network predicts (a subset of the data).
    projection_dim : int or None, default=2048
        ``k``: dimension of the projected per-logit gradients (``None``: exact gradients,
        through the ``(n C) × (n C)`` full NTK of the training set, for small problems).
    curvature : {"ggn", "margin", "identity"}, default="ggn"
        ``W_j``: ``"ggn"`` the Hessian of the softmax cross-entropy in the logits,
        ``diag(p_j) - p_j p_jᵀ`` (the Gauss-Newton matrix); ``"margin"`` its curvature
        along the correct-class margin, ``p_j(1 - p_j) m_j m_jᵀ`` with ``m_j`` the margin's
        gradient in the logits; ``"identity"`` TRAK's ``m_j m_jᵀ`` (``ΦᵀΦ``).
    damping : float, default=0.1
        ``λ`` relative to the mean curvature per training sample:
        ``λ = damping * trace(Σ_j J_jᵀ W_j J_j) / n_train``. Needed when ``k`` exceeds
        the rank of the curvature; larger values move the estimate towards the plain
        gradient inner product (TracIn). Choose it on retrainings that are not used to
        evaluate the result (``benchmarks/attribution_quality.py`` does): on the digits
        benchmark held-out subsets pick 1.0, far above the usual 1e-3, because a network
        trained to convergence is far from its linearisation and strong damping keeps the
        inverse from amplifying that error.
    output : {"margin", "logit"}, default="margin"
        The explained output of class ``c``: its margin ``log p_c - log(1 - p_c)`` (TRAK's
        choice, what :func:`~sknn_kernels.attribution.evaluation.retrain_on_subsets` records) or its
        logit ``f_c``.
    layers : str or list of str, default=None
        Restrict ``θ`` to these modules' parameters (see
        :func:`sknn_kernels.ntk.empirical_ntk`).
    random_state : int, RandomState instance or None, default=None
        Seed of the projection (member ``m`` uses ``seed_ + m``).
    batch_size : int, default=256
        Samples per forward/backward pass.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where the networks run.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the network copies and gradients; the curvature's eigenvectors and
        the ``k × k`` solve are float64 in any case (the projected curvature's GEMM runs in
        float32, as TRAK's).
    input_shape : tuple of int, default=None
        Per-sample shape the network expects when ``X`` is 2-D.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits (see
        :class:`~sknn_kernels.EmbeddingExtractor`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_outputs,)
        Labels of the network outputs (``classes``, or the sorted labels of ``y``).
    train_vectors_ : list of ndarray
        Per member: ``(n_train, k)`` vectors ``H⁻¹ φ_i`` (projected), or ``(n_train, C,
        n_train)`` solves in the NTK space (exact).
    X_fit_ : ndarray or dict of ndarray, or None
        Training inputs (exact mode only).
    damping_ : list of float
        ``λ`` of each member.
    seed_ : int
        Projection seed of the first member.
    device_ : str
        Device the networks run on.
    n_features_in_ : int
        Number of features of ``X`` at fit (array inputs).
    input_keys_ : tuple of str
        Names of the inputs at fit (dict inputs, instead of ``n_features_in_``).

    See Also
    --------
    sknn_kernels.KernelSurrogateClassifier.attribute : The kGLM's own decomposition.
    sknn_kernels.attribution.evaluation.linear_datamodeling_score : How well attributions predict retraining.

    Notes
    -----
    Inputs are those of the other network estimators: float arrays (2-D with
    ``input_shape``, or N-D), integer token ids, or a dict / skorch ``SliceDict`` of named
    inputs passed as keyword arguments. Fitting costs one pass of per-logit gradients over
    the training set per member (``C`` backward passes per sample, projected on the fly) and
    one ``k × k`` solve; :meth:`attribute` costs the same gradient pass over the new samples
    and a GEMM.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.influence import InfluenceAttributor
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    >>> y = np.arange(30) % 3
    >>> inf = InfluenceAttributor(net, projection_dim=64, random_state=0, device="cpu").fit(X, y)
    >>> inf.attribute(X[:2], target=y[:2]).shape
    (2, 30)
    >>> inf.explain(X[:2], top_k=3).proponents.shape
    (2, 3)
    """

    _parameter_constraints = {
        "network": "no_validation",
        "classes": ["array-like", None],
        "projection_dim": [Interval(Integral, 1, None, closed="left"), None],
        "curvature": [StrOptions({"ggn", "margin", "identity"})],
        "damping": [Interval(Real, 0, None, closed="left")],
        "output": [StrOptions({"margin", "logit"})],
        "layers": [str, list, None],
        "random_state": ["random_state"],
        "device": "no_validation",
        **CALL_CONSTRAINTS,
    }

    def __init__(
        self,
        network=None,
        *,
        classes=None,
        projection_dim=2048,
        curvature="ggn",
        damping=0.1,
        output="margin",
        layers=None,
        random_state=None,
        batch_size=256,
        device="auto",
        dtype="float32",
        input_shape=None,
        network_output=None,
    ):
        self.network = network
        self.classes = classes
        self.projection_dim = projection_dim
        self.curvature = curvature
        self.damping = damping
        self.output = output
        self.layers = layers
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape
        self.network_output = network_output

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Per-sample gradients of the training set, the curvature, and its solves.

        Parameters
        ----------
        X : array-like of shape (n_train, n_features) or (n_train, *sample_shape), or dict
            The network's training inputs: floats, integer token ids, or a dict of named
            inputs.
        y : array-like of shape (n_train,)
            Their labels.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X = self._validate_network_X(X, reset=True)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = column_or_1d(y, warn=True)
        if len(y) != n_samples(X):
            raise ValueError(f"X has {n_samples(X)} samples but y has {len(y)}.")
        check_classification_targets(y)
        self.classes_, y_idx = self._encode(y)
        seed = self.random_state
        self.seed_ = (
            int(seed)
            if isinstance(seed, Integral)
            else int(check_random_state(seed).randint(2**31 - 1))
        )
        options = {name: getattr(self, name) for name in _MEMBER_OPTIONS}
        self._members = [_Member(net, **options) for net in self._networks()]
        self.X_fit_ = X if self.projection_dim is None else None
        self.train_vectors_, self.damping_ = [], []
        for m, member in enumerate(self._members):
            adapter = member.fit(X).adapter(X)
            P = self._proba(adapter, X)
            if P.shape[1] != len(self.classes_):
                raise ValueError(
                    f"Network {m} has {P.shape[1]} outputs but there are {len(self.classes_)} "
                    "classes: output j must score classes_[j] (the j-th sorted label of y, "
                    "or set `classes`)."
                )
            R = P - np.eye(P.shape[1])[y_idx]  # dL/df at each training sample
            if self.projection_dim is None:
                vectors, lam = self._fit_exact(adapter, X, R, self._curvature(P, y_idx))
            else:
                vectors, lam = self._fit_projected(self._features(adapter, X, m), R, P, y_idx)
            self.train_vectors_.append(vectors)
            self.damping_.append(lam)
        self.device_ = self._members[0].device_
        return self

    def _encode(self, y):
        if self.classes is None:
            return np.unique(y, return_inverse=True)
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or len(np.unique(classes)) != len(classes):
            raise ValueError(
                f"classes must be a 1-D list of distinct labels; got {self.classes!r}."
            )
        return classes, _label_index(classes, y, "y", "`classes`")

    def _networks(self):
        if self.network is None:
            raise ValueError(
                "InfluenceAttributor needs a trained `network` (or a list of them, an ensemble)."
            )
        if isinstance(self.network, (list, tuple)):
            if not self.network:
                raise ValueError("`network` is an empty list: pass at least one network.")
            return list(self.network)
        return [self.network]

    def _adapters(self, X):
        """Validated ``X`` and each member's adapter (cached, re-checked for changes)."""
        check_is_fitted(self)
        X = self._validate_network_X(X, reset=False)
        return X, [member.adapter(X) for member in self._members]

    @staticmethod
    def _proba(adapter, X):
        return torch.softmax(adapter.predict(X).double(), dim=1).numpy()

    def _features(self, adapter, X, member):
        F = projected_ntk_features(
            adapter,
            X,
            "trace",
            projection_dim=self.projection_dim,
            random_state=self.seed_ + member,
            layers=self.layers,
        )
        return F  # (n, C, k), float32: GEMMs, not the solve, need no more

    def _ntk(self, adapter, X1, X2=None):
        return empirical_ntk(
            adapter, X1, X2, "full", layers=self.layers, accumulate_dtype="float64"
        )

    def _curvature(self, P, y_idx):
        """``W_j`` as ``(n, C, C)``."""
        if self.curvature == "ggn":
            return np.einsum("ic,cd->icd", P, np.eye(P.shape[1])) - P[:, :, None] * P[:, None, :]
        M = _margin_gradients(P, y_idx)
        w = (
            np.ones(len(P))
            if self.curvature == "identity"
            else _true(P, y_idx) * (1 - _true(P, y_idx))
        )
        return w[:, None, None] * M[:, :, None] * M[:, None, :]

    def _fit_projected(self, F, R, P, y_idx):
        """``H⁻¹ φ_i`` for every training sample: one GEMM for ``H``, one ``k × k`` solve.

        ``H = Σ_j (L_jᵀ F_j)ᵀ (L_jᵀ F_j)`` with ``W_j = L_j L_jᵀ`` (:func:`_curvature_factors`):
        a single float32 GEMM over the kept rows, as TRAK's ``ΦᵀΦ``, instead of a float64
        ``(n, C, C)`` contraction; the solve is float64.
        """
        n, _C, k = F.shape
        L, keep = _curvature_factors(self.curvature, P, y_idx)
        rows = np.einsum("icr,ick->irk", L.astype(np.float32), F)[keep]  # (kept, k)
        H = (rows.T @ rows).astype(np.float64)
        lam = self.damping * np.trace(H) / n
        H[np.diag_indices(k)] += lam
        G = np.einsum("ic,ick->ik", R, F, dtype=np.float64)  # projected loss gradients
        try:
            V = scipy.linalg.solve(H, G.T, assume_a="pos", overwrite_a=True)
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            raise ValueError(
                "The curvature matrix is singular: increase `damping` or lower `projection_dim`."
            ) from None
        return V.T, lam  # (n, k): H^-1 J_i^T r_i

    def _fit_exact(self, adapter, X, R, W):
        # Woodbury: (λI + JᵀWJ)⁻¹ Jᵀ = Jᵀ (λI + W K)⁻¹ with K = J Jᵀ the (nC, nC) full NTK.
        n, C = R.shape
        K = self._ntk(adapter, X).transpose(0, 2, 1, 3).reshape(n * C, n * C)
        WK = np.einsum("iab,ibjc->iajc", W, K.reshape(n, C, n, C)).reshape(n * C, n * C)
        lam = self.damping * np.trace(WK) / n
        if lam <= 0:
            raise ValueError("The exact mode needs damping > 0 (and a non-zero curvature).")
        WK[np.diag_indices(n * C)] += lam
        rhs = np.zeros((n, C, n))
        rhs[np.arange(n), :, np.arange(n)] = R
        return np.linalg.solve(WK, rhs.reshape(n * C, n)).reshape(n, C, n), lam

    # ------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities of the network(s), averaged over the ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), or dict
            Network inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Softmax probabilities, columns in the order of ``classes_``.
        """
        X, adapters = self._adapters(X)
        return np.mean([self._proba(adapter, X) for adapter in adapters], axis=0)

    def predict(self, X):
        """The class of largest averaged probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), or dict
            Network inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, taken from ``classes_``.
        """
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[proba.argmax(axis=1)]

    # --------------------------------------------------------- attribution
    def attribute(self, X, target="predicted"):
        """Influence of each training sample on the output of ``target`` at each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), or dict
            Network inputs.
        target : "predicted" or array-like of shape (n_samples,), default="predicted"
            The class whose output (``output``) is explained: the ensemble's prediction or
            one label per sample (e.g. the true labels).

        Returns
        -------
        A : ndarray of shape (n_samples, n_train)
            ``A[x, i]``: first-order decrease of the output when ``x_i`` is left out of
            training, averaged over the ensemble (positive: ``x_i`` supports it).
        """
        X, adapters = self._adapters(X)
        probas = [self._proba(adapter, X) for adapter in adapters]
        t_idx = self._target_index(n_samples(X), target, probas)
        A = np.zeros((n_samples(X), self._n_train()))
        for m, (adapter, V, P) in enumerate(zip(adapters, self.train_vectors_, probas)):
            U = np.eye(P.shape[1])[t_idx] if self.output == "logit" else _margin_gradients(P, t_idx)
            if self.projection_dim is None:
                Kx = self._ntk(adapter, X, self.X_fit_)  # (n, n_train, C, C)
                A -= np.einsum("xa,xjab,jbi->xi", U, Kx, V, optimize=True)
            else:
                phi = np.einsum("xc,xck->xk", U, self._features(adapter, X, m))
                A -= phi @ V.T
        return A / len(adapters)

    def _n_train(self):
        V = self.train_vectors_[0]
        return V.shape[0] if self.projection_dim is not None else V.shape[2]

    def _target_index(self, n, target, probas):
        if isinstance(target, str):
            if target != "predicted":
                raise ValueError(
                    f"target must be 'predicted' or one class label per sample; got {target!r}."
                )
            return np.mean(probas, axis=0).argmax(axis=1)
        labels = np.asarray(target)
        if labels.shape != (n,):
            raise ValueError(f"target must have shape ({n},); got {labels.shape}.")
        return _label_index(self.classes_, labels, "target", f"classes_ {self.classes_.tolist()}")

    def explain(self, X, top_k=5, target="predicted"):
        """Top proponents and opponents of each prediction, with their share of the mass.

        The same explanation as :meth:`KernelSurrogateClassifier.explain
        <sknn_kernels.KernelSurrogateClassifier.explain>` (``intercept`` is 0: influence
        has no bias term).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), or dict
            Network inputs.
        top_k : int, default=5
            Number of proponents and of opponents per point.
        target : "predicted" or array-like of shape (n_samples,), default="predicted"
            As in :meth:`attribute`.

        Returns
        -------
        explanation : :class:`~sklearn.utils.Bunch`
            ``target``, ``proponents``, ``proponent_scores``, ``proponent_share``,
            ``opponents``, ``opponent_scores``, ``opponent_share`` and ``intercept``.
        """
        check_is_fitted(self)
        check_top_k(top_k, self._n_train())
        if isinstance(target, str) and target == "predicted":
            target = self.predict(X)
        A = self.attribute(X, target=target)
        found = top_attributions(A, lambda chunk: 1.0, top_k)
        return Bunch(target=np.asarray(target), intercept=np.zeros(len(A)), **found)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags


_MEMBER_OPTIONS = ("device", "dtype", "batch_size", "input_shape", "network_output")


class _Member(NetworkEstimatorMixin, BaseEstimator):
    """One network of an ensemble: its private copy, cached between calls, and the check
    that it is unchanged since fit (the :class:`NetworkEstimatorMixin` plumbing, per member).
    """

    def __init__(
        self,
        network=None,
        *,
        device="auto",
        dtype="float32",
        batch_size=256,
        input_shape=None,
        network_output=None,
    ):
        self.network = network
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.input_shape = input_shape
        self.network_output = network_output

    def fit(self, X, y=None):
        self._fit_network(X)
        return self

    def adapter(self, X):
        return self._transform_network(X)[1]


def _label_index(classes, labels, what, where):
    """Position of each label in ``classes`` (any order), with a clear error for unknown ones."""
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes, labels, sorter=order), 0, len(classes) - 1)
    idx = order[pos]
    unknown = classes[idx] != labels
    if np.any(unknown):
        raise ValueError(
            f"{what} contains labels not in {where}: {np.unique(labels[unknown]).tolist()}."
        )
    return idx


def _curvature_factors(curvature, P, y_idx, rtol=1e-4):
    """``L`` with ``W_j = L_j L_jᵀ`` (``(n, C, r)``), and the columns ``(n, r)`` worth keeping.

    GGN: ``L_j`` from the eigendecomposition of ``diag(p_j) - p_j p_jᵀ`` in float64, so
    the small curvature of a confident sample is not lost to cancellation; directions whose
    eigenvalue is below ``rtol`` times the sample's largest are dropped (< 0.1 % of its
    trace), which removes most rows of a confident network. Margin and identity: rank one.
    """
    if curvature == "ggn":
        W = np.einsum("ic,cd->icd", P, np.eye(P.shape[1])) - P[:, :, None] * P[:, None, :]
        values, vectors = np.linalg.eigh(W)
        values = np.clip(values, 0.0, None)
        keep = (values > 0) & (values >= rtol * values.max(axis=1, keepdims=True))
        return vectors * np.sqrt(values)[:, None, :], keep
    M = _margin_gradients(P, y_idx)
    w = np.ones(len(P)) if curvature == "identity" else _true(P, y_idx) * (1 - _true(P, y_idx))
    return (np.sqrt(w)[:, None] * M)[:, :, None], np.ones((len(P), 1), dtype=bool)


def _true(P, idx):
    return P[np.arange(len(P)), idx]


def _margin_gradients(P, idx):
    """Gradient in the logits of the margin ``log p_c - log(1 - p_c)``: ``e_c - p_{≠c}/(1-p_c)``."""
    rest = P.sum(axis=1) - _true(P, idx)  # 1 - p_c without cancellation when p_c -> 1
    M = -P / np.maximum(rest, np.finfo(float).tiny)[:, None]
    M[np.arange(len(P)), idx] = 1.0
    return M
