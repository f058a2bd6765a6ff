"""What the estimators on kernels share: kernel input, classes, attributions.

* :class:`_KernelInputMixin` turns ``X`` into ``K(X, X_train)`` (``kernel="precomputed"``,
  ``"linear"`` or ``"rbf"``) and sets the pairwise tag;
* :class:`_KernelClassifierMixin` (and :class:`_ScoringKernelClassifierMixin`, for models
  with per-class scores) give the classifiers one ``classes_`` rule and one
  ``predict``/``predict_proba``/``predict_log_proba``/``decision_function`` on top of a
  per-model hook;
* :func:`top_attributions` ranks the training points of exact kernel attributions
  ``A[x, i] = w[x, i] * K(x, x_i)`` (proponents, opponents, shares of the mass).

The solvers are in :mod:`sknn_kernels.surrogates._solvers`.
"""

import warnings
from numbers import Real

import numpy as np
from sklearn import get_config
from sklearn.base import ClassifierMixin
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..metrics._faithfulness import network_outputs
from ..network._base import n_samples, user_stacklevel


def is_lazy(X):
    """Arrays streamed by row blocks rather than loaded: dask, Zarr, ``np.memmap``."""
    if isinstance(X, np.memmap):
        return True
    module = type(X).__module__.split(".")[0]
    return module in ("dask", "zarr") and hasattr(X, "shape")


__all__ = []

_GAMMA = [Interval(Real, 0, None, closed="neither"), None]  # RBF bandwidth, shared
_KERNEL = [StrOptions({"precomputed", "linear", "rbf"})]


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
        X, y = self._validate_train_input(X, y, **check_params)
        if self._precomputed():
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    "A precomputed X must be the square (n_train, n_train) matrix between "
                    f"the training samples; got shape {X.shape}."
                )
            return X, y
        self.X_fit_ = X
        return self._pairwise_kernel(X, X), y

    def _validate_train_input(self, X, y, **check_params):
        """Validated ``(X, y)``; a lazy ``X`` (dask, Zarr, memmap) is checked by shape only."""
        if is_lazy(X) and not self._precomputed():
            if len(X.shape) != 2:
                raise ValueError(f"Expected 2D features; got shape {X.shape}.")
            self.n_features_in_ = int(X.shape[1])
            if y is not None:
                y = check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=True)
                y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 and not check_params else y
                if len(y) != X.shape[0]:
                    raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} entries.")
            return X, y
        if y is None:
            return validate_data(self, X, dtype=np.float64), None
        return validate_data(self, X, y, dtype=np.float64, **check_params)

    def _uses_features(self, X):
        """Solve on the features ``X`` (``K = X X^T``) rather than on the kernel.

        Exact for ``kernel="linear"``; chosen when the features are fewer than the samples
        or ``X`` is streamed (dask, Zarr, memmap).
        """
        if self.kernel != "linear":
            return False
        shape = X.shape if hasattr(X, "shape") else np.asarray(X).shape
        return is_lazy(X) or (len(shape) == 2 and shape[0] > shape[1])

    def _fit_features(self, X, y, **check_params):
        """Validated ``(X, y)`` of a fit on features; sets ``X_fit_``."""
        X, y = self._validate_train_input(X, y, **check_params)
        self.X_fit_ = X
        return X, y

    def _validate_test(self, X):
        """Validated ``K(X, X_train)`` of shape ``(n_samples, n_train)``."""
        X = self._validate_test_input(X)
        return X if self._precomputed() else self._pairwise_kernel(X, self._train_features())

    def _validate_test_input(self, X):
        """Validated ``X`` as given (kernel rows when precomputed, else features)."""
        shape = getattr(X, "shape", ())
        n_fit = self.n_features_in_
        if self._precomputed() and len(shape) == 2 and shape[1] != n_fit:
            check_array(X)  # NaN/inf and dtype errors first
            raise ValueError(
                f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                f"{n_fit} features as input: a precomputed X must be K(X, X_train) "
                f"(or distances) with one column per training sample ({n_fit})."
            )
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _train_features(self, rows=slice(None)):
        return np.asarray(self.X_fit_[rows], dtype=np.float64)

    def _n_train(self):
        return self.n_features_in_ if self._precomputed() else self.X_fit_.shape[0]

    def _kernel_columns(self, X):
        """``(n_samples, columns)``: ``columns(sl)`` is ``K(X, X_train[sl])``.

        Lets attributions run over blocks of training points (memory O(block * n_samples))
        without the ``(n_samples, n_train)`` kernel, on features or on a (memory-mapped)
        precomputed kernel.
        """
        X = self._validate_test_input(X)
        if self._precomputed():
            return X.shape[0], lambda sl: np.asarray(X[:, sl], dtype=np.float64)
        if self.kernel == "linear":
            return X.shape[0], lambda sl: X @ self._train_features(sl).T
        return X.shape[0], lambda sl: self._pairwise_kernel(X, self._train_features(sl))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self._precomputed()
        return tags


class _KernelClassifierMixin(_KernelInputMixin, ClassifierMixin):
    """``classes_`` and the prediction methods of a classifier on kernel rows.

    Subclasses implement ``_proba(X)`` (probabilities of the unvalidated ``X``, which
    they turn into kernel rows or distances); ``predict`` takes the argmax of
    ``_class_scores(X)``, the probabilities unless overridden. ``_min_classes`` follows sklearn per estimator type:
    2 for models that need two classes to fit (as ``LogisticRegression`` and
    ``NearestCentroid``), 1 for a vote (as ``KNeighborsClassifier``).
    """

    _min_classes = 2

    def _fit_classes(self, y):
        """Set ``classes_``; return ``y`` as indices into it."""
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < self._min_classes:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contains only one class: {self.classes_[0].tolist()!r}. Pass training "
                "data with two or more labels."
            )
        return y_idx

    def _class_scores(self, X):
        return self._proba(X)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            ``K(X, X_train)`` when ``kernel="precomputed"``, else features (or
            distances, for an estimator with ``metric="precomputed"``).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns ordered as ``classes_``.
        """
        check_is_fitted(self)
        return self._proba(X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`predict_proba`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns ordered as ``classes_``.
        """
        check_is_fitted(self)
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class of each sample (the smallest label among exact ties).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in :meth:`predict_proba`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels.
        """
        check_is_fitted(self)
        return self.classes_[self._class_scores(X).argmax(axis=1)]


class _ScoringKernelClassifierMixin(_KernelClassifierMixin):
    """A kernel classifier with per-class scores and a ``decision_function``.

    Subclasses implement ``_scores(K)`` on validated kernel rows, ``(n, n_classes)`` or
    ``(n, 1)`` (the score of ``classes_[1]``) for a binary model with one logit, and
    ``_link(scores)``, the probabilities; ``predict`` is the class of the largest score.
    """

    def _proba(self, X):
        return self._link(self._raw_scores(X))

    def _class_scores(self, X):
        return one_score_per_class(self._raw_scores(X))

    def _raw_scores(self, X):
        """``_scores`` of the unvalidated ``X`` (overridden to score features directly)."""
        return self._scores(self._validate_test(X))

    def decision_function(self, X):
        """Per-class scores; for binary problems one score, positive for ``classes_[1]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            ``K(X, X_train)`` when ``kernel="precomputed"``, else features.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            1-D for binary problems (positive: ``classes_[1]``).
        """
        check_is_fitted(self)
        scores = self._raw_scores(X)
        if scores.shape[1] == 1:
            return scores[:, 0]
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores


def one_score_per_class(scores):
    """``(n, n_classes)`` scores whose argmax is the prediction (a zero column for one logit)."""
    return np.hstack([np.zeros_like(scores), scores]) if scores.shape[1] == 1 else scores


def network_targets(estimator, network_X, n_train, kind):
    """The network's outputs on the training inputs: the one path by which a kernel estimator runs it.

    Used by distilled estimators (``target="network"``/``"logits"``) inside ``fit`` only,
    through :func:`sknn_kernels.metrics.network_outputs`.
    """
    if estimator.network is None or network_X is None:
        raise ValueError(
            f"target={estimator.target!r} needs both the `network` parameter and the training "
            "inputs as fit(K, y, network_X=X_train)."
        )
    if n_samples(network_X) != n_train:  # a dict of named inputs has len() = its key count
        raise ValueError(
            f"network_X has {n_samples(network_X)} samples but the kernel has {n_train} rows."
        )
    return network_outputs(estimator.network, network_X, kind, device=estimator.device)


def row_chunks(n_rows, n_cols):
    """Row slices of a few ``(chunk, n_cols)`` float64 temporaries within ``working_memory``."""
    memory = get_config()["working_memory"]  # MiB, as sklearn's pairwise chunking
    row_bytes = 4 * 8 * max(n_cols, 1)
    step = int(min(memory * 2**20 // row_bytes, max(n_rows, 1)))
    if step < 1:
        warnings.warn(
            f"Could not adhere to working_memory config ({memory:g} MiB): one row needs "
            f"{row_bytes / 2**20:.3g} MiB. Processing one row at a time.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        step = 1
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def top_attributions(K, weights, top_k):
    """Largest and smallest attributions ``A = K * weights(cols)`` per row, and their shares.

    ``weights(cols)`` returns the coefficients (broadcastable to ``(n, len(cols))``) that
    multiply ``K[:, cols]``; see :func:`top_attribution_blocks`.
    """
    n, n_train = K.shape
    blocks = ((sl, K[:, sl] * weights(sl)) for sl in row_chunks(n_train, n))
    return top_attribution_blocks(blocks, n, top_k)


def top_attribution_blocks(blocks, n, top_k):
    """Top attributions of ``n`` points from ``(cols, A[:, cols])`` blocks of training points.

    A running top-k over blocks of training columns: memory O(n * (top_k + block)), never
    the ``(n, n_train)`` matrix.

    Returns
    -------
    dict
        ``proponents``/``opponents`` (n, top_k) indices, strongest first (ties: smallest
        index first), their ``proponent_scores``/``opponent_scores``, and
        ``proponent_share``/``opponent_share`` (n,): the positive (resp. negative) part of
        those scores over ``sum_i |A[x, i]|``.
    """
    best = {name: (np.empty((n, 0), np.intp), np.empty((n, 0))) for name in ("pro", "opp")}
    mass = np.zeros(n)
    for sl, A in blocks:
        mass += np.abs(A).sum(axis=1)
        cols = np.broadcast_to(np.arange(sl.start, sl.start + A.shape[1]), A.shape)
        for name, signed in (("pro", A), ("opp", -A)):
            best[name] = merge_top(*best[name], cols, signed, top_k)
    mass[mass == 0] = 1.0  # all-zero rows: shares are 0, not NaN
    out = {}
    for name, long in (("pro", "proponent"), ("opp", "opponent")):
        idx, top = best[name]
        order = np.lexsort((idx, -top), axis=1)
        idx, top = np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)
        out[long + "s"] = idx
        out[long + "_scores"] = top if name == "pro" else -top
        out[long + "_share"] = np.clip(top, 0, None).sum(axis=1) / mass
    return out


def merge_top(idx, val, new_idx, new_val, k):
    """The ``k`` largest values per row among ``(idx, val)`` and ``(new_idx, new_val)``."""
    idx, val = np.hstack([idx, new_idx]), np.hstack([val, new_val])
    if val.shape[1] <= k:
        return idx, val
    part = np.argpartition(-val, k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, part, axis=1), np.take_along_axis(val, part, axis=1)


def check_top_k(top_k, n_train):
    if (
        isinstance(top_k, bool)
        or not isinstance(top_k, (int, np.integer))
        or not 1 <= top_k <= n_train
    ):
        raise ValueError(f"top_k must be an integer in [1, n_train={n_train}]; got {top_k!r}.")
