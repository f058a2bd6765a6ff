"""Kernel MMD and classifier two-sample tests: exactness, calibration and power."""

import numpy as np
import pytest
import torch
from scipy.stats import kstest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score

from sknn_kernels import EmbeddingExtractor, NTKFeaturizer
from sknn_kernels.analysis.shift import (
    _auc,
    _mmd2,
    classifier_two_sample_test,
    mmd_test,
    mmd_test_precomputed,
    pca_view,
)


def brute_force_mmd2(X, Y, k):
    n, m = len(X), len(Y)
    xx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_unbiased_mmd_matches_a_double_loop():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(9, 3)), rng.normal(0.5, size=(7, 3))
    gamma = 0.3

    def rbf(a, b):
        return np.exp(-gamma * np.sum((a - b) ** 2))

    res = mmd_test(X, Y, kernel="rbf", gamma=gamma, n_permutations=10, random_state=0)
    assert res.statistic == pytest.approx(brute_force_mmd2(X, Y, rbf), rel=1e-12)
    assert res.gamma == gamma
    linear = mmd_test(X, Y, kernel="linear", n_permutations=10, random_state=0)
    assert linear.statistic == pytest.approx(brute_force_mmd2(X, Y, np.dot), rel=1e-12)

    def cubic(A, B):
        return (A @ B.T + 1) ** 3

    got = mmd_test(X, Y, kernel=cubic, n_permutations=10, random_state=0).statistic
    assert got == pytest.approx(brute_force_mmd2(X, Y, lambda a, b: (a @ b + 1) ** 3), rel=1e-12)


def test_permutation_statistics_match_the_double_loop_on_any_split():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(12, 2))
    K = Z @ Z.T
    S = np.zeros((4, 12))
    for b in range(4):
        S[b, rng.choice(12, size=5, replace=False)] = 1
    got = _mmd2(K, S, np.diag(K).copy())
    for b in range(4):
        inside = S[b] == 1
        assert got[b] == pytest.approx(brute_force_mmd2(Z[inside], Z[~inside], np.dot), rel=1e-10)


def test_median_heuristic_bandwidth():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(6, 2)), rng.normal(size=(5, 2))
    Z = np.r_[X, Y]
    sq = [np.sum((Z[i] - Z[j]) ** 2) for i in range(11) for j in range(i + 1, 11)]
    res = mmd_test(X, Y, n_permutations=5, random_state=0)
    assert res.gamma == pytest.approx(1 / (2 * np.median(sq)))


def test_mmd_pvalues_are_uniform_without_shift_and_power_grows_with_the_shift():
    rng = np.random.default_rng(3)
    null_p = [
        mmd_test(
            rng.normal(size=(15, 2)),
            rng.normal(size=(15, 2)),
            n_permutations=99,
            random_state=int(rng.integers(2**31)),
        ).pvalue
        for _ in range(80)
    ]
    assert kstest(null_p, "uniform").pvalue > 0.01
    assert np.mean(np.array(null_p) <= 0.05) < 0.15
    power = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        p = [
            mmd_test(
                rng.normal(size=(15, 2)),
                rng.normal(size=(15, 2)) + shift,
                n_permutations=99,
                random_state=int(rng.integers(2**31)),
            ).pvalue
            for _ in range(20)
        ]
        power.append(np.mean(np.array(p) <= 0.05))
    assert power == sorted(power) and power[-1] >= 0.9 and power[0] <= 0.2


class MeanDifference(ClassifierMixin, BaseEstimator):
    """A linear probe along the difference of the class means: cheap enough to refit
    thousands of times in the calibration test."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        mu0, mu1 = X[y == self.classes_[0]].mean(0), X[y == self.classes_[1]].mean(0)
        self.w_, self.b_ = mu1 - mu0, -(mu1 - mu0) @ (mu1 + mu0) / 2
        return self

    def decision_function(self, X):
        return X @ self.w_ + self.b_


def test_classifier_test_pvalues_are_uniform_without_shift_and_power_grows():
    rng = np.random.default_rng(4)
    probe = MeanDifference()
    null_p = [
        classifier_two_sample_test(
            rng.normal(size=(15, 2)),
            rng.normal(size=(15, 2)),
            estimator=probe,
            cv=3,
            n_permutations=19,
            random_state=int(rng.integers(2**31)),
        ).pvalue
        for _ in range(50)
    ]
    # permutation p-values live on the grid k/20: compare with the uniform on it
    assert kstest(null_p, "uniform").pvalue > 0.01
    assert np.mean(np.array(null_p) <= 0.05) < 0.15
    power = []
    for shift in (0.0, 1.0, 2.5):
        p = [
            classifier_two_sample_test(
                rng.normal(size=(15, 2)),
                rng.normal(size=(15, 2)) + shift,
                estimator=probe,
                cv=3,
                n_permutations=19,
                random_state=int(rng.integers(2**31)),
            ).pvalue
            for _ in range(10)
        ]
        power.append(np.mean(np.array(p) <= 0.05))
    assert power == sorted(power) and power[-1] >= 0.9


def test_classifier_test_reports_accuracy_and_auc():
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 4
    res = classifier_two_sample_test(
        X, Y, estimator=MeanDifference(), metric="accuracy", n_permutations=9, random_state=0
    )
    assert res.accuracy > 0.95 and res.roc_auc > 0.95 and res.metric == "accuracy"
    assert res.pvalue == pytest.approx(0.1) and res.null_distribution.shape == (9,)
    Z = rng.normal(size=(40, 2))
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    scores = np.round(Z[:, 0], 1)  # ties count one half, as in roc_auc_score
    assert _auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    with pytest.raises(ValueError, match="metric"):
        classifier_two_sample_test(X, Y, metric="f1")
    with pytest.raises(ValueError, match="cv"):
        classifier_two_sample_test(X[:3], Y, cv=5)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_package_kernels_and_embeddings_plug_in():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    Y = (rng.normal(size=(10, 4)) + 2).astype(np.float32)
    net = _net()
    ntk = NTKFeaturizer(net, kernel="pntk", device="cpu")
    res = mmd_test(X, Y, kernel=ntk, n_permutations=20, random_state=0)
    K = NTKFeaturizer(net, kernel="pntk", device="cpu").fit_transform(np.r_[X, Y])
    expected = mmd_test_precomputed(K, 12, n_permutations=20, random_state=0)
    assert res.statistic == pytest.approx(expected.statistic)
    np.testing.assert_allclose(res.null_distribution, expected.null_distribution)
    emb = EmbeddingExtractor(net, device="cpu")
    H = emb.fit(X).transform(np.r_[X, Y])
    res = mmd_test(X, Y, kernel="linear", features=emb, n_permutations=5, random_state=0)
    lin = mmd_test(H[:12], H[12:], kernel="linear", n_permutations=5, random_state=0)
    assert res.statistic == pytest.approx(lin.statistic, rel=1e-6)
    view = pca_view(X, Y, features=emb)
    assert view.X.shape == (12, 2) and view.Y.shape == (10, 2)
    with pytest.raises(ValueError, match="either"):
        mmd_test(X, Y, kernel=ntk, features=emb)


def test_input_errors():
    with pytest.raises(ValueError, match="per-sample shape"):
        mmd_test(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="square"):
        mmd_test_precomputed(np.zeros((4, 3)), 2)
    with pytest.raises(ValueError, match="n_x"):
        mmd_test_precomputed(np.eye(5), 1)


def test_two_sample_plot_shows_both_sets_and_the_null():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_two_sample

    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(15, 3)), rng.normal(size=(10, 3)) + 2
    view = pca_view(X, Y)
    fig = plot_two_sample(view, mmd_test(X, Y, n_permutations=20, random_state=0))
    points = [c.get_offsets() for c in fig.axes[0].collections]
    np.testing.assert_allclose(points[0], view.X[:, :2])
    np.testing.assert_allclose(points[1], view.Y[:, :2])
    assert len(fig.axes) == 2 and len(plot_two_sample(view).axes) == 1
