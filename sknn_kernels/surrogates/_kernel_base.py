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
        return self._link(self._scores(self._validate_test(X)))

    def _class_scores(self, X):
        return one_score_per_class(self._scores(self._validate_test(X)))

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
        scores = self._scores(self._validate_test(X))
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
