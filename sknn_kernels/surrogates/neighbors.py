"""Nearest-centroid and k-nearest-neighbour classifiers in a kernel's feature space.

Both need only ``K(x, x_i)`` and quantities of the training Gram matrix:

* the distance from ``phi(x)`` to a class mean is
  ``k(x, x) - 2/n_c sum_{i in c} k(x, x_i) + 1/n_c^2 sum_{i, j in c} k(x_i, x_j)``, whose
  first term is the same for every class;
* the distance to a training point is ``k(x, x) + k(x_i, x_i) - 2 k(x, x_i)``, so the
  *order* of the neighbours of ``x`` needs only the training diagonal.

A precomputed ``K(test, train)`` does not carry the test self-similarities ``k(x, x)``,
so exact distances (``weights="distance"``, ``kneighbors`` distances) need either a
built-in kernel or a precomputed distance matrix, e.g. from
``NTKFeaturizer(output="distance")``.
"""

from numbers import Integral

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_non_negative

from ._kernel_base import (
    _GAMMA,
    _KERNEL,
    _KernelClassifierMixin,
    _ScoringKernelClassifierMixin,
    row_chunks,
)

__all__ = ["KernelKNeighborsClassifier", "KernelNearestCentroid"]


class KernelNearestCentroid(_ScoringKernelClassifierMixin, BaseEstimator):
    """Nearest class mean in the feature space of a kernel.

    The class means ``mu_c = 1/n_c sum_{i in c} phi(x_i)`` are never formed: the
    decision score ::

        score_c(x) = k(x, x) - ||phi(x) - mu_c||^2
                   = 2/n_c sum_{i in c} k(x, x_i) - 1/n_c^2 sum_{i, j in c} k(x_i, x_j)

    needs only ``K(x, X_train)`` and the training Gram matrix. With a linear kernel
    the predictions equal :class:`sklearn.neighbors.NearestCentroid`'s (Euclidean,
    uniform priors), and the scores are its ``-||x - mu_c||^2`` shifted by ``||x||^2``
    per sample, so ``predict_proba`` is the softmax of ``-||phi(x) - mu_c||^2``.
    (sklearn's own ``decision_function`` first divides each feature by the
    within-class standard deviation, which no kernel can express.)

    Parameters
    ----------
    kernel : {"precomputed", "linear", "rbf"}, default="precomputed"
        ``"precomputed"``: ``X`` is ``K(X, X_train)`` (square at fit); otherwise ``X``
        holds features.
    gamma : float, default=None
        RBF bandwidth (``None`` means ``1 / n_features``); ignored by other kernels.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    centroid_coef_ : ndarray of shape (n_classes, n_train)
        ``mu_c = sum_i centroid_coef_[c, i] phi(x_i)`` (``1/n_c`` on class ``c``).
    centroid_sq_norms_ : ndarray of shape (n_classes,)
        ``||mu_c||^2``.
    centroids_ : ndarray of shape (n_classes, n_features)
        The class means ``mu_c`` (only for ``kernel="linear"``; fitted on the features
        in O(n_train * n_features) when they are fewer than the samples or streamed).
    X_fit_ : ndarray of shape (n_train, n_features)
        Training features (only when ``kernel`` is not ``"precomputed"``).
    n_features_in_ : int
        Number of columns of ``X`` at fit (``n_train`` for a precomputed kernel).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.neighbors.NearestCentroid : The same rule on features.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from sknn_kernels.surrogates.neighbors import KernelNearestCentroid
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = KernelNearestCentroid().fit(rbf_kernel(X, X), y)
    >>> clf.predict(rbf_kernel(X[:3], X))
    array([0, 0, 0])
    """

    _parameter_constraints = {"kernel": _KERNEL, "gamma": _GAMMA}

    def __init__(self, kernel="precomputed", *, gamma=None):
        self.kernel = kernel
        self.gamma = gamma

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Compute the class means' coefficients and squared norms.

        Parameters
        ----------
        X : array-like of shape (n_train, n_train) or (n_train, n_features)
            ``K(X_train, X_train)`` when ``kernel="precomputed"``, else features.
        y : array-like of shape (n_train,)
            Class labels, at least two distinct ones (as sklearn's ``NearestCentroid``,
            one class raises a ``ValueError``).

        Returns
        -------
        self : object
            Fitted estimator.
        """
        if self._uses_features(X):  # class means of the features: O(n k), not the (n, n) kernel
            X, y = self._fit_features(X, y)
            y_idx = self._fit_classes(y)
            self.centroid_coef_ = self._centroid_coef(y_idx)
            self.centroids_ = sum(
                self.centroid_coef_[:, sl] @ self._train_features(sl)
                for sl in row_chunks(X.shape[0], X.shape[1])
            )
            self.centroid_sq_norms_ = (self.centroids_**2).sum(axis=1)
            return self
        K, y = self._validate_train(X, y)
        self.centroid_coef_ = self._centroid_coef(self._fit_classes(y))
        self.centroid_sq_norms_ = np.einsum(
            "ci,ij,cj->c", self.centroid_coef_, K, self.centroid_coef_
        )
        if self.kernel == "linear":
            self.centroids_ = self.centroid_coef_ @ self.X_fit_
        return self

    def _centroid_coef(self, y_idx):
        onehot = np.eye(len(self.classes_))[y_idx].T
        return onehot / onehot.sum(axis=1, keepdims=True)

    def _raw_scores(self, X):
        if self.kernel == "linear":  # 2 x . mu_c - ||mu_c||^2 on the features
            return 2 * self._validate_test_input(X) @ self.centroids_.T - self.centroid_sq_norms_
        return self._scores(self._validate_test(X))

    def _scores(self, K):
        # k(x, x) - ||phi(x) - mu_c||^2: the class-independent k(x, x) is not needed
        return 2 * K @ self.centroid_coef_.T - self.centroid_sq_norms_

    def _link(self, scores):
        return softmax(scores, axis=1)


class KernelKNeighborsClassifier(_KernelClassifierMixin, BaseEstimator):
    """Vote of the k nearest neighbours, with distances induced by a kernel.

    ``d(x, x_i)^2 = k(x, x) + k(x_i, x_i) - 2 k(x, x_i)``. A kernel and a distance
    matrix carry different information, so what ``X`` holds is explicit:

    * ``kernel="precomputed"`` (default): ``X`` is ``K(X, X_train)``. The neighbours'
      order needs only the training diagonal (kept at fit), so ``predict`` and
      ``predict_proba`` with ``weights="uniform"`` are exact; the test
      self-similarities ``k(x, x)`` are not in ``X``, so true distances
      (``weights="distance"``, distances from :meth:`kneighbors`) are unavailable.
    * ``metric="precomputed"``: ``X`` is the distance matrix ``D(X, X_train)``, as for
      :class:`~sklearn.neighbors.KNeighborsClassifier`, e.g. from
      ``NTKFeaturizer(output="distance")``; everything is available.
    * ``kernel="linear"``/``"rbf"``: ``X`` holds features; the kernel and its
      diagonal are computed.

    With a linear kernel it equals :class:`sklearn.neighbors.KNeighborsClassifier`
    (Euclidean metric) up to the order of exactly tied distances.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours.
    weights : {"uniform", "distance"} or callable, default="uniform"
        Vote weights: equal, ``1 / distance`` (a point at distance 0 takes the whole
        vote), or a function of the distance array. Non-uniform weights need true
        distances (not a precomputed kernel).
    kernel : {"precomputed", "linear", "rbf"}, default="precomputed"
        The kernel inducing the distances, see above; must stay ``"precomputed"``
        (meaning: given by ``X``) with ``metric="precomputed"``.
    metric : {"kernel", "precomputed"}, default="kernel"
        ``"kernel"``: distances come from the kernel; ``"precomputed"``: ``X`` holds
        the distances themselves (non-negative).
    gamma : float, default=None
        RBF bandwidth (``None`` means ``1 / n_features``); ignored by other kernels.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    train_diag_ : ndarray of shape (n_train,) or None
        ``k(x_i, x_i)`` (None with ``metric="precomputed"``).
    X_fit_ : ndarray of shape (n_train, n_features)
        Training features (only for ``"linear"``/``"rbf"``).
    n_features_in_ : int
        Number of columns of ``X`` at fit (``n_train`` when precomputed).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.neighbors.KNeighborsClassifier : The same rule on features or distances.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from sknn_kernels.surrogates.neighbors import KernelKNeighborsClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> knn = KernelKNeighborsClassifier(n_neighbors=3).fit(rbf_kernel(X, X), y)
    >>> knn.predict(rbf_kernel(X[-2:], X))
    array([2, 2])
    """

    _min_classes = 1  # a vote needs no second class, as KNeighborsClassifier

    _parameter_constraints = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"}), callable],
        "kernel": _KERNEL,
        "metric": [StrOptions({"kernel", "precomputed"})],
        "gamma": _GAMMA,
    }

    def __init__(
        self, n_neighbors=5, *, weights="uniform", kernel="precomputed", metric="kernel", gamma=None
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.kernel = kernel
        self.metric = metric
        self.gamma = gamma

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = self._distances_only()
        return tags

    def _precomputed(self):
        return self.kernel == "precomputed" or self._distances_only()

    def _distances_only(self):
        return self.metric == "precomputed"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Store what the distances to the training points need.

        Parameters
        ----------
        X : array-like of shape (n_train, n_train) or (n_train, n_features)
            ``K(X_train, X_train)``, ``D(X_train, X_train)`` or features (see
            ``kernel`` and ``metric``).
        y : array-like of shape (n_train,)
            Class labels. One class is accepted, as by sklearn's
            ``KNeighborsClassifier``: every prediction is then that class.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        if self._distances_only() and self.kernel != "precomputed":
            raise ValueError(
                f"metric='precomputed' takes distances, so kernel={self.kernel!r} is meaningless."
            )
        if self._rank_only() and self.weights != "uniform":
            raise ValueError(
                "weights other than 'uniform' need true distances, which a precomputed "
                "kernel K(test, train) cannot give (k(x, x) of test points is missing): "
                "pass distances with metric='precomputed' (e.g. "
                "NTKFeaturizer(output='distance')) or use a built-in kernel."
            )
        if self._precomputed():
            K, y = self._validate_train(X, y)
            if self._distances_only():
                check_non_negative(K, f"{type(self).__name__}.fit")
            diag = None if self._distances_only() else np.diag(K).copy()
        else:  # k(x_i, x_i) only: never the (n, n) training kernel
            X, y = self._fit_features(X, y)
            diag = np.einsum("ij,ij->i", X, X) if self.kernel == "linear" else np.ones(len(X))
        self._y_idx = self._fit_classes(y)
        self.train_diag_ = diag
        return self

    def _rank_only(self):
        # a precomputed kernel orders the neighbours but does not give distances
        return self.kernel == "precomputed" and not self._distances_only()

    def _squared_distances(self, X):
        """Squared distances to the training points; without ``k(x, x)`` when precomputed."""
        if self._distances_only():
            D = self._validate_test(X)
            check_non_negative(D, f"{type(self).__name__}.predict")
            return D**2
        K = self._validate_test(X)
        d2 = self.train_diag_ - 2 * K
        if self._rank_only():
            return d2  # a per-row constant short of d^2: same neighbour order
        X = np.asarray(X, dtype=np.float64)
        test_diag = np.ones(len(X)) if self.kernel == "rbf" else np.einsum("ij,ij->i", X, X)
        scale = test_diag[:, None] + self.train_diag_
        d2 += test_diag[:, None]
        # the kernel trick cancels catastrophically for (near-)duplicates: treat squared
        # distances at rounding level as exact zeros, so duplicates vote as such
        d2[d2 <= 1e-12 * scale] = 0.0
        return d2

    def kneighbors(self, X, n_neighbors=None, return_distance=True):
        """Indices (and distances) of the nearest training points, nearest first.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_train) or (n_samples, n_features)
            As in ``fit``, against the training set.
        n_neighbors : int, default=None
            Number of neighbours (default ``self.n_neighbors``).
        return_distance : bool, default=True
            Also return the distances (not available from a precomputed kernel).

        Returns
        -------
        dist : ndarray of shape (n_samples, n_neighbors)
            Distances, only when ``return_distance=True``.
        ind : ndarray of shape (n_samples, n_neighbors)
            Indices of the neighbours in the training set.
        """
        check_is_fitted(self)
        if return_distance and self._rank_only():
            raise ValueError(
                "kernel='precomputed' gives the neighbours' order but not their distances "
                "(k(x, x) of the test points is unknown): call kneighbors(X, "
                "return_distance=False), or pass distances with metric='precomputed'."
            )
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        d2 = self._squared_distances(X)
        if not 1 <= k <= d2.shape[1]:
            raise ValueError(f"Expected 1 <= n_neighbors <= n_train={d2.shape[1]}; got {k}.")
        ind = np.argpartition(d2, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d2, ind, axis=1), axis=1, kind="stable")
        ind = np.take_along_axis(ind, order, axis=1)
        if not return_distance:
            return ind
        return np.sqrt(np.take_along_axis(d2, ind, axis=1)), ind

    def _proba(self, X):
        """Weighted share of each class among the neighbours."""
        if self.weights == "uniform":
            ind = self.kneighbors(X, return_distance=False)
            w = np.ones(ind.shape)
        else:
            dist, ind = self.kneighbors(X)
            w = self._vote_weights(dist)
        proba = np.zeros((ind.shape[0], len(self.classes_)))
        np.add.at(proba, (np.arange(ind.shape[0])[:, None], self._y_idx[ind]), w)
        total = proba.sum(axis=1, keepdims=True)
        total[total == 0] = 1.0
        return proba / total

    def _vote_weights(self, dist):
        if callable(self.weights):
            return np.asarray(self.weights(dist), dtype=np.float64)
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        exact = np.isinf(w)
        rows = exact.any(axis=1)
        w[rows] = exact[rows]  # a training point at distance 0 takes the vote, as sklearn
        return w
