"""KernelNearestCentroid / KernelKNeighborsClassifier against sklearn on a linear kernel."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import pairwise_distances
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from sknn_kernels.surrogates.neighbors import KernelKNeighborsClassifier, KernelNearestCentroid
from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier


@pytest.fixture(params=[2, 3])
def split(request):
    X, y = make_classification(
        n_samples=120,
        n_features=6,
        n_informative=4,
        n_redundant=0,
        n_classes=request.param,
        random_state=0,
    )
    return X[:80], y[:80], X[80:], y[80:]


def test_nearest_centroid_equals_sklearn(split):
    X, y, Xt, _ = split
    ref = NearestCentroid().fit(X, y)
    pre = KernelNearestCentroid().fit(X @ X.T, y)
    lin = KernelNearestCentroid(kernel="linear").fit(X, y)
    np.testing.assert_array_equal(pre.predict(Xt @ X.T), ref.predict(Xt))
    np.testing.assert_array_equal(lin.predict(Xt), ref.predict(Xt))
    # scores are k(x, x) - ||x - mu_c||^2 with sklearn's centroids
    d2 = pairwise_distances(Xt, ref.centroids_) ** 2
    expected = (Xt**2).sum(1, keepdims=True) - d2
    scores = pre.decision_function(Xt @ X.T)
    if len(pre.classes_) == 2:
        np.testing.assert_allclose(scores, expected[:, 1] - expected[:, 0], atol=1e-9)
    else:
        np.testing.assert_allclose(scores, expected, atol=1e-9)
    e = np.exp(-d2 - (-d2).max(1, keepdims=True))
    np.testing.assert_allclose(pre.predict_proba(Xt @ X.T), e / e.sum(1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_equals_sklearn(split, weights):
    X, y, Xt, _ = split
    ref = KNeighborsClassifier(n_neighbors=5, weights=weights).fit(X, y)
    models = [
        (KernelKNeighborsClassifier(weights=weights, kernel="linear").fit(X, y), Xt),
        (
            KernelKNeighborsClassifier(weights=weights, metric="precomputed").fit(
                pairwise_distances(X), y
            ),
            pairwise_distances(Xt, X),
        ),
    ]
    if weights == "uniform":  # a precomputed kernel orders neighbours exactly
        models.append((KernelKNeighborsClassifier().fit(X @ X.T, y), Xt @ X.T))
    ref_dist, ref_ind = ref.kneighbors(Xt)
    for model, data in models:
        np.testing.assert_array_equal(model.predict(data), ref.predict(Xt))
        np.testing.assert_allclose(model.predict_proba(data), ref.predict_proba(Xt), atol=1e-12)
        np.testing.assert_array_equal(model.kneighbors(data, return_distance=False), ref_ind)
    dist, _ = models[0][0].kneighbors(Xt)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-7)


def test_knn_duplicates_vote_alone():
    X = np.array([[0.0, 0.0], [1.0, 1.0], [1.1, 1.0], [3.0, 3.0]])
    y = np.array([0, 1, 1, 0])
    knn = KernelKNeighborsClassifier(
        n_neighbors=3, weights="distance", kernel="rbf", gamma=0.3
    ).fit(X, y)
    np.testing.assert_array_equal(knn.predict_proba(X[[0]]), [[1.0, 0.0]])


def test_cv_slices_precomputed_kernel():
    X, y = make_classification(n_samples=90, n_features=5, random_state=1)
    a = cross_val_score(KernelNearestCentroid(), X @ X.T, y, cv=3)
    b = cross_val_score(NearestCentroid(), X, y, cv=3)
    np.testing.assert_allclose(a, b)


def test_errors():
    X, y = make_classification(n_samples=30, n_features=4, random_state=0)
    K = X @ X.T
    with pytest.raises(NotFittedError):
        KernelKNeighborsClassifier().predict(K)
    with pytest.raises(NotFittedError):
        KernelNearestCentroid().decision_function(K)
    with pytest.raises(ValueError, match="square"):
        KernelNearestCentroid().fit(K[:, :10], y)
    with pytest.raises(ValueError, match="true distances"):
        KernelKNeighborsClassifier(weights="distance").fit(K, y)
    with pytest.raises(ValueError, match="meaningless"):
        KernelKNeighborsClassifier(metric="precomputed", kernel="rbf").fit(X, y)
    with pytest.raises(ValueError, match="Negative"):
        KernelKNeighborsClassifier(metric="precomputed").fit(K, y)
    knn = KernelKNeighborsClassifier().fit(K, y)
    with pytest.raises(ValueError, match="distances"):
        knn.kneighbors(K)
    with pytest.raises(ValueError, match="one column per training sample"):
        knn.predict(K[:, :5])
    with pytest.raises(ValueError, match="n_neighbors"):
        knn.kneighbors(K, n_neighbors=31, return_distance=False)
    K_nan = K.copy()
    K_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn.predict(K_nan)


@pytest.mark.parametrize(
    ("make", "accepts"),
    [
        (lambda: KernelNearestCentroid(), False),  # as sklearn's NearestCentroid
        (lambda: KernelSurrogateClassifier(device="cpu"), False),  # as LogisticRegression
        (lambda: KernelKNeighborsClassifier(n_neighbors=3), True),  # as KNeighborsClassifier
    ],
)
def test_one_class_y_follows_sklearn(make, accepts):
    X = np.random.default_rng(0).normal(size=(12, 3))
    K = X @ X.T
    y = np.full(12, "a")
    if accepts:
        clf = make().fit(K, y)
        assert_array_equal(clf.predict(K[:4]), ["a"] * 4)
        assert_allclose(clf.predict_proba(K[:4]), 1.0)
    else:
        with pytest.raises(ValueError, match="at least 2 classes.*only one class: 'a'"):
            make().fit(K, y)
