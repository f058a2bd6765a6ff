"""Surrogates solved on features (kernel="linear") equal the same models on K = X X^T."""

import numpy as np
import pytest
from sklearn import config_context
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from sknn_kernels.surrogates._primal import primal_ridge
from sknn_kernels.surrogates._solvers import solve_ridge
from sknn_kernels.surrogates.neighbors import KernelNearestCentroid
from sknn_kernels.surrogates.regression import KernelSurrogateRegressor
from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier

N, K_DIM = 2000, 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, K_DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # the cosine kernel's scale: K_ii = 1
    y = (X[:, :3] @ rng.normal(size=(3, 3)) * 3 + rng.normal(size=(N, 3))).argmax(axis=1)
    Xt = rng.normal(size=(40, K_DIM))
    return X, y, rng.uniform(0.2, 2.0, N), Xt


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _same_explanations(e1, e2):
    np.testing.assert_array_equal(e1.proponents, e2.proponents)
    np.testing.assert_array_equal(e1.opponents, e2.opponents)
    for key in ("proponent_scores", "opponent_scores", "proponent_share", "intercept"):
        assert _rel(e1[key], e2[key]) < 1e-6, key


@pytest.mark.parametrize(
    ("penalty", "alpha", "n_classes"),
    [("rkhs", 1e-2, 2), ("rkhs", 1e-2, 3), ("l2", 0.3, 2), ("l2", 0.3, 3)],
)
def test_classifier_primal_equals_dual(data, penalty, alpha, n_classes):
    # K = X X^T has rank 8 < n: with "rkhs" the dual is unique only up to K's null space,
    # and both solvers return the representer solution W = -G / alpha
    X, y, w, Xt = data
    y = y if n_classes == 3 else (y == 0).astype(int)
    params = {"penalty": penalty, "alpha": alpha, "tol": 1e-10, "max_iter": 5000, "device": "cpu"}
    primal = KernelSurrogateClassifier(kernel="linear", **params).fit(X, y, sample_weight=w)
    dual = KernelSurrogateClassifier(**params).fit(X @ X.T, y, sample_weight=w)
    assert hasattr(primal, "feature_coef_") and primal.coef_.shape == dual.coef_.shape
    Kt = Xt @ X.T
    assert _rel(primal.decision_function(Xt), dual.decision_function(Kt)) < 1e-6
    assert _rel(primal.predict_proba(Xt), dual.predict_proba(Kt)) < 1e-6
    np.testing.assert_array_equal(primal.predict(Xt), dual.predict(Kt))
    assert _rel(primal.coef_, dual.coef_) < 1e-6
    assert _rel(primal.attribute(Xt, target="all"), dual.attribute(Kt, target="all")) < 1e-6
    _same_explanations(primal.explain(Xt, top_k=4), dual.explain(Kt, top_k=4))
    assert primal.objective(X, y, w) == pytest.approx(dual.objective(X @ X.T, y, w), rel=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_regressor_primal_equals_dual(data, fit_intercept):
    X, y, w, Xt = data
    Y = np.column_stack([X @ np.arange(1.0, K_DIM + 1), y.astype(float)])
    params = {"alpha": 1e-2, "fit_intercept": fit_intercept, "device": "cpu"}
    primal = KernelSurrogateRegressor(kernel="linear", **params).fit(X, Y, sample_weight=w)
    dual = KernelSurrogateRegressor(**params).fit(X @ X.T, Y, sample_weight=w)
    Kt = Xt @ X.T
    assert _rel(primal.predict(Xt), dual.predict(Kt)) < 1e-6
    assert _rel(primal.dual_coef_, dual.dual_coef_) < 1e-6
    assert _rel(primal.attribute(Xt), dual.attribute(Kt)) < 1e-6
    _same_explanations(primal.explain(Xt, top_k=3, target=1), dual.explain(Kt, top_k=3, target=1))


@pytest.mark.parametrize("penalty", ["rkhs", "l2"])
def test_primal_ridge_equals_solve_ridge(data, penalty):
    # the classifier's target="logits" solve, both penalties, on a rank-deficient kernel
    X, _, w, _ = data
    X, w = X[:300], w[:300]
    Y = np.column_stack([np.sin(3 * X[:, 0]), X[:, 1] ** 2])
    W, b, fc = primal_ridge(X, Y, w, 0.1, penalty=penalty)
    W_ref, b_ref, _ = solve_ridge(X @ X.T, Y, w, 0.1, penalty=penalty, solver="cholesky")
    assert _rel(W, W_ref) < 1e-8 and _rel(b, b_ref) < 1e-8
    np.testing.assert_allclose(fc, X.T @ W, atol=1e-12)


def test_nearest_centroid_on_features(data):
    X, y, _, Xt = data
    primal = KernelNearestCentroid(kernel="linear").fit(X, y)
    dual = KernelNearestCentroid().fit(X @ X.T, y)
    np.testing.assert_allclose(primal.centroid_sq_norms_, dual.centroid_sq_norms_, rtol=1e-12)
    np.testing.assert_allclose(
        primal.decision_function(Xt), dual.decision_function(Xt @ X.T), atol=1e-12
    )


def test_explain_runs_over_blocks_of_training_points(data):
    # a tiny working_memory forces many blocks of training points: same as the full matrix
    X, y, _, Xt = data
    clf = KernelSurrogateClassifier(kernel="linear", alpha=1e-2, device="cpu").fit(X, y)
    with config_context(working_memory=0.01):
        ex = clf.explain(Xt, top_k=3, target=y[:40])
    A = clf.attribute(Xt, target=y[:40])
    order = np.argsort(-A, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ex.proponents, order)
    np.testing.assert_allclose(ex.proponent_scores, np.take_along_axis(A, order, axis=1))
    np.testing.assert_allclose(
        ex.opponent_share, np.clip(-np.sort(A)[:, :3], 0, None).sum(1) / np.abs(A).sum(1)
    )


def test_grid_search_pipeline_on_features(data):
    X, y, _, _ = data
    pipe = make_pipeline(Normalizer(), KernelSurrogateClassifier(kernel="linear", device="cpu"))
    search = GridSearchCV(pipe, {"kernelsurrogateclassifier__alpha": [1e-2, 1e-1]}, cv=2)
    search.fit(X[:400], y[:400])
    assert search.best_estimator_[-1].coef_.shape == (3, 400)
    assert search.cv_results_["mean_test_score"].min() > 0.5


def test_streamed_features_equal_in_memory(data, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, y, w, Xt = data
    path = tmp_path / "X.npy"
    np.save(path, X)
    z = zarr.open_array(str(tmp_path / "X.zarr"), mode="w", shape=X.shape, chunks=(300, K_DIM))
    z[:] = X
    params = {"kernel": "linear", "alpha": 1e-2, "tol": 1e-10, "device": "cpu"}
    ref = KernelSurrogateClassifier(**params).fit(X, y, sample_weight=w)
    with config_context(working_memory=0.1):  # several row blocks
        for source in (np.load(path, mmap_mode="r"), z):
            clf = KernelSurrogateClassifier(**params).fit(source, y, sample_weight=w)
            assert _rel(clf.decision_function(Xt), ref.decision_function(Xt)) < 1e-6
            _same_explanations(clf.explain(Xt, top_k=2), ref.explain(Xt, top_k=2))


def test_dask_cluster_fit_equals_serial(data):
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    X, y, w, Xt = data
    params = {"kernel": "linear", "alpha": 1e-2, "tol": 1e-10, "device": "cpu"}
    ref = KernelSurrogateClassifier(**params).fit(X, y, sample_weight=w)
    reg_ref = KernelSurrogateRegressor(kernel="linear", alpha=1e-2, device="cpu").fit(X, y * 1.0)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        Xd = da.from_array(X, chunks=(500, K_DIM)).persist()
        clf = KernelSurrogateClassifier(**params).fit(Xd, y, sample_weight=w)
        reg = KernelSurrogateRegressor(kernel="linear", alpha=1e-2, device="cpu").fit(Xd, y * 1.0)
    assert _rel(clf.decision_function(Xt), ref.decision_function(Xt)) < 1e-6
    assert _rel(clf.coef_, ref.coef_) < 1e-6
    assert _rel(reg.predict(Xt), reg_ref.predict(Xt)) < 1e-9
