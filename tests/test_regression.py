"""KernelSurrogateRegressor against KernelRidge, its intercept, solvers, attributions and distillation."""

import numpy as np
import pytest
import sklearn
from _nets import make_mlp
from sklearn.datasets import make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import cross_validate

from sknn_kernels import KernelSurrogateRegressor, NTKFeaturizer, make_surrogate_pipeline
from sknn_kernels.metrics import make_regression_faithfulness_scorer, network_outputs


def _data(n=40, n_targets=1, seed=0):
    X, y = make_regression(
        n_samples=n, n_features=5, n_targets=n_targets, noise=5.0, random_state=seed
    )
    return X, y, rbf_kernel(X, X, gamma=0.1)


def _reg(**params):
    return KernelSurrogateRegressor(**{"device": "cpu", **params})


@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_equals_kernel_ridge_precomputed(n_targets, solver):
    _, y, K = _data(n_targets=n_targets)
    s = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    ours = _reg(alpha=0.5, fit_intercept=False, solver=solver).fit(K, y, sample_weight=s)
    ref = KernelRidge(alpha=0.5, kernel="precomputed").fit(K, y, sample_weight=s)
    assert ours.dual_coef_.shape == ref.dual_coef_.shape
    np.testing.assert_allclose(ours.predict(K[:7]), ref.predict(K[:7]), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("kernel", "gamma"), [("linear", None), ("rbf", 0.3), ("rbf", None)])
def test_equals_kernel_ridge_builtin_kernels(kernel, gamma):
    X, y, _ = _data()
    ours = _reg(kernel=kernel, gamma=gamma, alpha=2.0, fit_intercept=False).fit(X, y)
    ref = KernelRidge(kernel=kernel, gamma=gamma, alpha=2.0).fit(X, y)
    np.testing.assert_allclose(ours.predict(X[:9]), ref.predict(X[:9]), rtol=1e-7, atol=1e-7)


def test_intercept_is_the_unpenalised_limit():
    # An intercept with penalty alpha * b^2 / c is kernel ridge on K + c; as c grows it is
    # unpenalised (independent reference: sklearn's KernelRidge on the shifted kernel).
    _, y, K = _data(n_targets=2)
    y = y + 300.0  # a large offset the intercept must absorb
    s = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    ours = _reg(alpha=0.3).fit(K, y, sample_weight=s)
    c = 1e6
    ref = KernelRidge(alpha=0.3, kernel="precomputed").fit(K + c, y, sample_weight=s)
    np.testing.assert_allclose(ours.predict(K), ref.predict(K + c), rtol=1e-5)
    np.testing.assert_allclose(ours.dual_coef_.sum(axis=0), 0, atol=1e-8)  # stationarity in b
    with_b = np.mean((ours.predict(K) - y) ** 2)
    without_b = np.mean((_reg(alpha=0.3, fit_intercept=False).fit(K, y).predict(K) - y) ** 2)
    assert with_b < without_b


def test_zero_weights_equal_dropping_points():
    _, y, K = _data()
    s = np.ones(len(y))
    s[::4] = 0
    keep = s > 0
    full = _reg(alpha=0.2).fit(K, y, sample_weight=s)
    sub = _reg(alpha=0.2).fit(K[np.ix_(keep, keep)], y[keep])
    np.testing.assert_allclose(full.predict(K[:, :]), sub.predict(K[:, keep]), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(full.dual_coef_[~keep], 0)


def test_integer_weights_equal_repetitions():
    X, y, _ = _data()
    reps = np.random.default_rng(2).integers(1, 4, len(y))
    Xr, yr = np.repeat(X, reps, axis=0), np.repeat(y, reps)
    weighted = _reg(kernel="rbf", gamma=0.1, alpha=0.7).fit(X, y, sample_weight=reps)
    repeated = _reg(kernel="rbf", gamma=0.1, alpha=0.7).fit(Xr, yr)
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_attribution_identity_and_explain(n_targets):
    _, y, K = _data(n_targets=n_targets)
    reg = _reg(alpha=0.1).fit(K, y)
    A = reg.attribute(K[:5])
    expected_shape = (5, len(y)) if n_targets == 1 else (5, len(y), n_targets)
    assert A.shape == expected_shape
    np.testing.assert_allclose(
        A.sum(axis=1) + reg.intercept_, reg.predict(K[:5]), rtol=1e-10, atol=1e-8
    )
    target = None if n_targets == 1 else 1
    A1 = reg.attribute(K[:5], target=target)
    ex = reg.explain(K[:5], top_k=3, target=target)
    A1 = A1 if A1.ndim == 2 else A1[..., 0]
    np.testing.assert_array_equal(ex.proponents, np.argsort(-A1, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(ex.proponent_scores, -np.sort(-A1, axis=1)[:, :3])
    np.testing.assert_allclose(ex.opponent_scores, np.sort(A1, axis=1)[:, :3])
    share = np.clip(ex.proponent_scores, 0, None).sum(1) / np.abs(A1).sum(1)
    np.testing.assert_allclose(ex.proponent_share, share)
    predict = reg.predict(K[:5]) if n_targets == 1 else reg.predict(K[:5])[:, 1]
    np.testing.assert_allclose(A1.sum(axis=1) + ex.intercept, predict, rtol=1e-10, atol=1e-8)


def test_attribution_errors():
    _, y, K = _data(n_targets=2)
    reg = _reg().fit(K, y)
    with pytest.raises(ValueError, match="pass target=<output index>"):
        reg.explain(K[:2])
    with pytest.raises(ValueError, match=r"output index in \[0, 2\)"):
        reg.attribute(K[:2], target=2)
    with pytest.raises(ValueError, match="top_k"):
        reg.explain(K[:2], top_k=0, target=0)
    with pytest.raises(NotFittedError):
        _reg().predict(K)


def test_auto_switches_to_cg_and_cg_warns():
    _, y, K = _data(n=60)
    dense = _reg(alpha=0.5).fit(K, y)
    assert dense.n_iter_ == 1  # one direct solve
    with sklearn.config_context(working_memory=0.01):  # 60 x 60 float64 does not fit 10 kB
        streamed = _reg(alpha=0.5, tol=1e-12).fit(K, y)
    assert streamed.n_iter_ > 1
    np.testing.assert_allclose(streamed.predict(K), dense.predict(K), rtol=1e-7, atol=1e-7)
    with pytest.warns(ConvergenceWarning, match="Conjugate gradients stopped"):
        _reg(alpha=0.5, solver="cg", max_iter=1).fit(K, y)
    with pytest.raises(ValueError, match="needs alpha > 0"):
        _reg(alpha=0.0, solver="cg").fit(K, y)


def test_singular_kernel_falls_back_to_least_squares():
    X, y, _ = _data()
    K = X @ X.T  # rank 5 < 40
    with pytest.warns(UserWarning, match="least-squares"):
        reg = _reg(alpha=0.0, fit_intercept=False).fit(K, y)
    ref = np.linalg.lstsq(X, y, rcond=None)[0]  # the min-norm interpolant of a linear kernel
    np.testing.assert_allclose(reg.predict(K), X @ ref, rtol=1e-6, atol=1e-6)


def test_distils_a_regression_network():
    net = make_mlp(n_in=5, hidden=(16,), n_out=2, seed=0)
    X, _, _ = _data(n=50)
    X = X / X.std()
    Z = network_outputs(net, X, device="cpu")
    K = NTKFeaturizer(net, device="cpu", dtype="float64").fit_transform(X)
    reg = _reg(alpha=1e-8, target="network", network=net).fit(K, network_X=X)  # y not needed
    np.testing.assert_allclose(reg.predict(K), Z, atol=1e-4)
    as_labels = _reg(alpha=1e-8).fit(K, Z)  # the same model with the outputs passed as y
    np.testing.assert_allclose(reg.dual_coef_, as_labels.dual_coef_)
    with pytest.raises(ValueError, match="network_X=X_train"):
        _reg(target="network", network=net).fit(K)
    with pytest.raises(ValueError, match="requires y"):
        _reg().fit(K)


def test_pipeline_cross_validation_with_network_targets():
    net = make_mlp(n_in=5, hidden=(16,), n_out=1, seed=1)
    X, _, _ = _data(n=48)
    X = (X / X.std()).astype(np.float32)
    y = network_outputs(net, X, device="cpu")[:, 0] + 0.1 * np.random.default_rng(0).normal(
        size=len(X)
    )
    pipe = make_surrogate_pipeline(net, "pntk0", "krr-network", device="cpu")
    assert pipe[0].normalize == "std" and pipe[-1].network is net
    scoring = {"r2": make_regression_faithfulness_scorer(net, device="cpu")}
    res = cross_validate(pipe, X, y, cv=3, scoring=scoring, params={"estimator__network_X": X})
    assert np.all(res["test_r2"] > 0.95)
