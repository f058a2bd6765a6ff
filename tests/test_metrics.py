"""Faithfulness metrics against scipy/sklearn, and the network-aware scorer."""

import numpy as np
import pytest
from _nets import make_mlp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, kendalltau, pearsonr
from sklearn.datasets import make_classification
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate

from sknn_kernels.metrics import (
    accuracy_difference,
    kendall_faithfulness,
    logit_r2,
    make_faithfulness_scorer,
    misclassification_overlap,
)
from sknn_kernels.metrics._faithfulness import network_proba


def _proba(rng, n, c):
    p = rng.dirichlet(np.ones(c), size=n)
    return p


def test_kendall_against_scipy_with_saturation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    P, Q = _proba(rng, 50, 3), _proba(rng, 50, 3)
    P[:3] = np.eye(3)[y[:3]]  # saturated at 1 in the network
    Q[5] = np.eye(3)[(y[5] + 1) % 3]  # saturated at 0 in the surrogate
    p, q = P[np.arange(50), y], Q[np.arange(50), y]
    keep = np.ones(50, bool)
    keep[[0, 1, 2, 5]] = False
    assert kendall_faithfulness(y, P, Q) == pytest.approx(kendalltau(p[keep], q[keep]).statistic)
    assert kendall_faithfulness(y, P, Q, drop_saturated=False) == pytest.approx(
        kendalltau(p, q).statistic
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_kendall_binary_1d_and_labels(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(["a", "b"], 20)
    p1, q1 = rng.uniform(0.01, 0.99, 20), rng.uniform(0.01, 0.99, 20)
    pt, qt = np.where(y == "b", p1, 1 - p1), np.where(y == "b", q1, 1 - q1)
    tau = kendall_faithfulness(y, p1, q1, labels=["a", "b"])
    assert tau == pytest.approx(kendalltau(pt, qt).statistic)
    two_col = kendall_faithfulness(
        y, np.column_stack([1 - p1, p1]), np.column_stack([1 - q1, q1]), labels=["a", "b"]
    )
    assert two_col == pytest.approx(tau)


def test_kendall_labels_needed_when_a_class_is_missing():
    y = np.array([0, 2, 2, 0])
    P = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="labels="):
        kendall_faithfulness(y, P, P)
    with pytest.warns(UndefinedMetricWarning, match="1 point"):
        assert np.isnan(kendall_faithfulness([0], P[:1], P[:1], labels=[0, 1, 2]))
    with pytest.raises(ValueError, match="not in `labels`"):
        kendall_faithfulness([5, 0, 1, 2], P, P, labels=[0, 1, 2])


def test_logit_r2_is_squared_correlation_of_logits():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    P, Q = _proba(rng, 40, 2), _proba(rng, 40, 2)
    p, q = P[np.arange(40), y], Q[np.arange(40), y]
    r = pearsonr(np.log(p / (1 - p)), np.log(q / (1 - q))).statistic
    assert logit_r2(y, P, Q) == pytest.approx(r**2)
    # an affine map in logit space is perfectly faithful
    z = np.log(q / (1 - q))
    p_affine = 1 / (1 + np.exp(-(2 * z + 0.5)))
    P2 = np.where(y[:, None] == np.arange(2), p_affine[:, None], 1 - p_affine[:, None])
    assert logit_r2(y, P2, Q) == pytest.approx(1.0)


def test_accuracy_difference_and_overlap():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    net = np.array([0, 1, 2, 1, 1, 0, 0, 1, 2, 0])  # 2 errors: idx 3, 5
    sur = np.array([0, 1, 1, 1, 1, 2, 0, 1, 2, 2])  # 3 errors: idx 2, 3, 9
    assert accuracy_difference(y, net, sur) == pytest.approx(0.7 - 0.8)
    w = np.arange(1, 11)
    assert accuracy_difference(y, net, sur, sample_weight=w) == pytest.approx(
        (w[sur == y].sum() - w[net == y].sum()) / w.sum()
    )
    res = misclassification_overlap(y, net, sur)
    assert res.jaccard == pytest.approx(1 / 4)
    assert res.pvalue == pytest.approx(1 - binom.cdf(2 * 0.25, 2, 3 * 2 / 100))
    with pytest.warns(UndefinedMetricWarning, match="neither model misclassifies"):
        assert np.isnan(misclassification_overlap(y, y, y).jaccard)


def test_network_proba_softmax_and_sigmoid():
    X = np.random.default_rng(0).standard_normal((7, 5))
    P = network_proba(make_mlp(n_out=3), X, device="cpu")
    np.testing.assert_allclose(P.sum(1), 1)
    P1 = network_proba(make_mlp(n_out=1), X, device="cpu")
    assert P1.shape == (7, 2)
    np.testing.assert_allclose(P1.sum(1), 1)


def test_scorer_in_cross_validate_and_grid_search():
    X, y = make_classification(
        n_samples=90, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    net = make_mlp(n_in=5, n_out=3)
    tau = make_faithfulness_scorer(net, device="cpu")
    tad = make_faithfulness_scorer(net, "accuracy_difference", device="cpu")
    cv = KFold(3)
    res = cross_validate(
        LogisticRegression(),
        X,
        y,
        cv=cv,
        return_estimator=True,
        scoring={
            "acc": "accuracy",
            "tau": tau,
            "tad": tad,
            "r2": make_faithfulness_scorer(net, "logit_r2", device="cpu"),
            "ov": make_faithfulness_scorer(net, "overlap", device="cpu"),
        },
    )
    for k, (_, test) in enumerate(cv.split(X)):
        est, P = res["estimator"][k], network_proba(net, X[test], device="cpu")
        expected = kendall_faithfulness(y[test], P, est.predict_proba(X[test]))
        assert res["test_tau"][k] == pytest.approx(expected)
        assert res["test_tad"][k] == pytest.approx(
            accuracy_difference(y[test], P.argmax(1), est.predict(X[test]))
        )
    search = GridSearchCV(LogisticRegression(), {"C": [0.01, 1.0]}, scoring=tau, cv=cv).fit(X, y)
    assert search.best_score_ == pytest.approx(max(search.cv_results_["mean_test_score"]))
    with pytest.raises(ValueError, match="metric"):
        make_faithfulness_scorer(net, "nope")
    with pytest.raises(ValueError, match="classes_"):
        make_faithfulness_scorer(make_mlp(n_in=5, n_out=4), device="cpu")(search, X, y)


def test_kendall_positive_class_target_matches_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    p_net = np.clip(0.5 + 0.4 * (2 * y - 1) * rng.random(60), 0.01, 0.99)
    p_sur = np.clip(p_net + 0.1 * rng.normal(size=60), 0.01, 0.99)
    got = kendall_faithfulness(y, np.column_stack([1 - p_net, p_net]), p_sur, target="positive")
    assert got == pytest.approx(kendalltau(p_net, p_sur).statistic, abs=1e-12)
    # the true-class tau ranks a different quantity
    true_class = kendall_faithfulness(y, p_net, p_sur)
    assert true_class != pytest.approx(got)
    with pytest.raises(ValueError, match="binary"):
        kendall_faithfulness([0, 1, 2], np.eye(3), np.eye(3), target="positive")
    with pytest.raises(ValueError, match="target must be"):
        kendall_faithfulness(y, p_net, p_sur, target="class1")
