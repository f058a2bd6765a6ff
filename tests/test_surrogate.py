"""KernelSurrogateClassifier: solver optimum, SGD objective, attribution identity, errors."""

import numpy as np
import pytest
import torch
from _nets import make_mlp
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import GridSearchCV, cross_val_score

from sknn_kernels.metrics._faithfulness import network_proba
from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier


def _data(n_classes=3, n=90, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        weights=None if n_classes > 2 else [0.7, 0.3],
        random_state=seed,
    )
    return X, y, rbf_kernel(X, X, gamma=0.2)


def _clf(**params):
    return KernelSurrogateClassifier(**{"device": "cpu", "tol": 1e-7, "max_iter": 3000, **params})


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_optimum_matches_logistic_regression(n_classes, class_weight):
    # sklearn's LogisticRegression minimises C * sum(cw * loss) + ||W||^2 / 2, i.e. our
    # objective times C * n with alpha = 1 / (C * n): same optimum.
    _X, y, K = _data(n_classes)
    alpha = 1e-2
    clf = _clf(alpha=alpha, class_weight=class_weight).fit(K, y)
    lr = LogisticRegression(
        C=1 / (alpha * len(y)), tol=1e-12, max_iter=10_000, class_weight=class_weight
    )
    lr.fit(K, y)
    if n_classes > 2:  # softmax logits are defined up to a constant per sample
        lr_scores, our_scores = lr.decision_function(K), clf.decision_function(K)
        np.testing.assert_allclose(
            our_scores - our_scores.mean(1, keepdims=True),
            lr_scores - lr_scores.mean(1, keepdims=True),
            atol=1e-5,
        )
    else:
        np.testing.assert_allclose(clf.coef_, lr.coef_, atol=1e-5)
        np.testing.assert_allclose(clf.intercept_, lr.intercept_, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(K), lr.predict_proba(K), atol=1e-5)
    if n_classes == 2:  # same parametrisation: the same minimum, to solver precision
        lr_objective = clf.objective(K, y, coef=lr.coef_, intercept=lr.intercept_)
        assert clf.objective(K, y) == pytest.approx(lr_objective, rel=1e-9)


def _sgd_objective(K, y, coef, intercept, alpha, cw):
    """SGDClassifier's one-vs-rest log-loss objective, written independently."""
    classes = np.unique(y)
    total = 0.0
    for c, label in enumerate(classes if len(classes) > 2 else classes[1:]):
        pos = y == label
        z = K @ coef[c] + intercept[c]
        weight = np.where(pos, cw[c + (len(classes) == 2)], 1.0 if len(classes) > 2 else cw[0])
        loss = np.logaddexp(0, -np.where(pos, z, -z))
        total += np.mean(weight * loss) + alpha / 2 * coef[c] @ coef[c]
    return total


@pytest.mark.parametrize("n_classes", [2, 3])
def test_ovr_l2_is_sgd_objective_and_beats_sgd(n_classes):
    _X, y, K = _data(n_classes)
    counts = np.bincount(y)
    cw = len(y) / (len(counts) * counts)  # "balanced"
    clf = _clf(multi_class="ovr", class_weight="balanced").fit(K, y)
    sgd = SGDClassifier(loss="log_loss", alpha=1e-4, class_weight="balanced", random_state=0).fit(
        K, y
    )
    for coef, icpt in [(clf.coef_, clf.intercept_), (sgd.coef_, sgd.intercept_)]:
        ours = clf.objective(K, y, coef=coef, intercept=icpt)
        assert ours == pytest.approx(_sgd_objective(K, y, coef, icpt, 1e-4, cw), rel=1e-10)
    assert clf.objective(K, y) <= clf.objective(K, y, coef=sgd.coef_, intercept=sgd.intercept_)


def test_rkhs_penalty_objective_and_stationarity():
    _X, y, K = _data(3)
    clf = _clf(penalty="rkhs", alpha=1e-2, multi_class="ovr").fit(K, y)
    W, b = clf.coef_, clf.intercept_
    Z = K @ W.T + b
    T = np.eye(3)[y]
    expected = np.mean(np.sum(np.logaddexp(0, Z) - T * Z, axis=1)) + 0.5e-2 * np.sum(W * (W @ K))
    assert clf.objective(K, y) == pytest.approx(expected, rel=1e-12)
    # any perturbation raises the objective at the optimum
    rng = np.random.default_rng(0)
    for _ in range(3):
        dW = 1e-3 * rng.standard_normal(W.shape)
        assert clf.objective(K, y, coef=W + dW) > clf.objective(K, y)


def test_sample_weight_and_determinism():
    _X, y, K = _data(3)
    w = np.random.default_rng(0).uniform(0.5, 2, len(y))
    a = _clf(alpha=1e-2).fit(K, y, sample_weight=w)
    b = _clf(alpha=1e-2).fit(K, y, sample_weight=w)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    # integer weights == repeated rows (the RKHS norm is invariant to duplicated columns)
    reps = np.array([1, 2] * (len(y) // 2))
    idx = np.repeat(np.arange(len(y)), reps)
    c = _clf(alpha=1e-2, penalty="rkhs").fit(K, y, sample_weight=reps)
    d = _clf(alpha=1e-2, penalty="rkhs").fit(K[np.ix_(idx, idx)], y[idx])
    np.testing.assert_allclose(c.predict_proba(K), d.predict_proba(K[:, idx]), atol=1e-5)


def test_builtin_kernel_equals_precomputed_and_cv_slices_pairwise():
    X, y, K = _data(3)
    feat = _clf(kernel="rbf", gamma=0.2).fit(X, y)
    pre = _clf().fit(K, y)
    np.testing.assert_allclose(
        feat.decision_function(X[:7]), pre.decision_function(K[:7]), atol=1e-8
    )
    assert _clf().__sklearn_tags__().input_tags.pairwise
    assert not _clf(kernel="rbf").__sklearn_tags__().input_tags.pairwise
    s_pre = cross_val_score(_clf(), K, y, cv=3)
    s_feat = cross_val_score(_clf(kernel="rbf", gamma=0.2), X, y, cv=3)
    np.testing.assert_allclose(s_pre, s_feat)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_attribution_identity(n_classes):
    _X, y, K = _data(n_classes)
    clf = _clf(alpha=1e-3).fit(K[:60, :60], y[:60])
    Kt = K[60:, :60]
    scores = clf.decision_function(Kt).reshape(len(Kt), -1)
    A = clf.attribute(Kt, target="all")
    assert A.shape == (30, 60, 1 if n_classes == 2 else 3)
    np.testing.assert_allclose(A.sum(axis=1) + clf.intercept_, scores, atol=1e-10)
    # per-point targets: evidence for that class; binary uses the sign convention
    for target in ["predicted", y[60:]]:
        A1 = clf.attribute(Kt, target=target)
        labels = clf.predict(Kt) if isinstance(target, str) else target
        idx = np.searchsorted(clf.classes_, labels)
        if n_classes == 2:
            sign = np.where(idx == 1, 1.0, -1.0)
            np.testing.assert_allclose(
                A1.sum(1) + sign * clf.intercept_[0], sign * scores[:, 0], atol=1e-10
            )
        else:
            np.testing.assert_allclose(
                A1.sum(1) + clf.intercept_[idx], scores[np.arange(30), idx], atol=1e-10
            )
    # with the predicted target, the logit (sum + intercept) supports the prediction
    A_pred = clf.attribute(Kt)
    ex = clf.explain(Kt, top_k=3)
    if n_classes == 2:
        assert np.all(A_pred.sum(1) + ex.intercept >= 0)


def test_attribution_chunked_matches_unchunked():
    import sklearn

    _X, y, K = _data(3)
    clf = _clf(alpha=1e-3).fit(K, y)
    full = clf.attribute(K)
    with (
        sklearn.config_context(working_memory=0.001),
        pytest.warns(UserWarning, match="working_memory"),
    ):
        chunked = clf.attribute(K)
        ex_chunked = clf.explain(K, top_k=4)
    np.testing.assert_array_equal(full, chunked)
    ex = clf.explain(K, top_k=4)
    np.testing.assert_array_equal(ex.proponents, ex_chunked.proponents)


def test_explain_matches_sorted_attributions():
    _X, y, K = _data(3)
    clf = _clf(alpha=1e-3).fit(K[:70, :70], y[:70])
    Kt = K[70:, :70]
    A = clf.attribute(Kt)
    ex = clf.explain(Kt, top_k=4)
    order = np.argsort(-A, axis=1)
    np.testing.assert_array_equal(ex.proponents, order[:, :4])
    np.testing.assert_array_equal(ex.opponents, order[:, ::-1][:, :4])
    np.testing.assert_allclose(ex.proponent_scores, np.take_along_axis(A, order[:, :4], 1))
    mass = np.abs(A).sum(1)
    pos = np.clip(ex.proponent_scores, 0, None).sum(1)
    neg = np.clip(-ex.opponent_scores, 0, None).sum(1)
    np.testing.assert_allclose(ex.proponent_share, pos / mass)
    np.testing.assert_allclose(ex.opponent_share, neg / mass)
    np.testing.assert_array_equal(ex.target, clf.predict(Kt))
    np.testing.assert_allclose(
        A.sum(1) + ex.intercept,
        clf.decision_function(Kt)[np.arange(20), np.searchsorted(clf.classes_, ex.target)],
    )
    assert np.all((ex.proponent_share > 0) & (ex.proponent_share < 1))


def test_distillation_to_network():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5)).astype(np.float32)
    net = make_mlp(n_in=5, n_out=3)
    P = network_proba(net, X, device="cpu")
    y = np.arange(80) % 3  # labels only name the classes here; the targets are P
    K = rbf_kernel(X, X, gamma=0.3)
    soft = _clf(target="network", network=net, alpha=1e-4).fit(K, y, network_X=X)
    hard = _clf(alpha=1e-4).fit(K, y)
    # the distilled surrogate reproduces the network's probabilities far more closely
    err_soft = np.abs(soft.predict_proba(K) - P).mean()
    err_hard = np.abs(hard.predict_proba(K) - P).mean()
    assert err_soft < 0.02 < err_hard
    # cross-entropy to soft targets is what the objective reports
    Z = soft.decision_function(K)
    logp = Z - np.logaddexp.reduce(Z, axis=1, keepdims=True)
    expected = -np.mean(np.sum(P * logp, 1)) + 0.5e-4 * np.sum(soft.coef_**2)
    assert soft.objective(K, y, network_X=X) == pytest.approx(expected, rel=1e-9)
    # network_X is a fit parameter, sliced per fold like y (K by rows and columns)
    search = GridSearchCV(_clf(target="network", network=net), {"alpha": [1e-3, 1e-2]}, cv=2)
    search.fit(K, y, network_X=X)
    assert search.best_estimator_.coef_.shape == (3, 80)
    fold = _clf(target="network", network=net, alpha=search.best_params_["alpha"])
    np.testing.assert_allclose(fold.fit(K, y, network_X=X).coef_, search.best_estimator_.coef_)


def test_distillation_binary_single_output():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    net = make_mlp(n_in=5, n_out=1)
    y = (network_proba(net, X, device="cpu")[:, 1] > 0.5).astype(int)
    if len(np.unique(y)) < 2:
        y[:5] = 1 - y[:5]
    clf = _clf(target="network", network=net).fit(rbf_kernel(X, X), y, network_X=X)
    assert clf.coef_.shape == (1, 60)


def test_distillation_errors():
    X, y, K = _data(3)
    with pytest.raises(ValueError, match="network_X"):
        _clf(target="network", network=make_mlp()).fit(K, y)
    with pytest.raises(ValueError, match="network_X"):
        _clf(target="network").fit(K, y, network_X=X)
    with pytest.raises(ValueError, match="4 output classes"):
        _clf(target="network", network=make_mlp(n_out=4)).fit(K, y, network_X=X.astype(np.float32))
    with pytest.raises(ValueError, match="samples"):
        _clf(target="network", network=make_mlp()).fit(K, y, network_X=X[:10])


def test_bad_input_errors():
    _X, y, K = _data(3)
    clf = _clf()
    with pytest.raises(NotFittedError):
        clf.predict(K)
    with pytest.raises(NotFittedError):
        clf.attribute(K)
    with pytest.raises(ValueError, match="square"):
        clf.fit(K[:, :50], y)
    K_nan = K.copy()
    K_nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(K_nan, y)
    clf.fit(K, y)
    with pytest.raises(ValueError, match="one column per training sample"):
        clf.predict(K[:, :50])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(K_nan)
    with pytest.raises(ValueError, match="one class"):
        _clf().fit(K, np.zeros(len(y)))
    with pytest.raises(ValueError, match="not in classes_"):
        clf.attribute(K[:2], target=[0, 7])
    with pytest.raises(ValueError, match="top_k"):
        clf.explain(K[:2], top_k=0)
    with pytest.raises(ValueError, match="training data"):
        clf.objective(K[:10], y[:10])


def test_convergence_warning():
    _X, y, K = _data(3)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        _clf(max_iter=2).fit(K, y)


def test_docstring_example_numbers():
    X, y = load_iris(return_X_y=True)
    K = rbf_kernel(X, X, gamma=0.5)
    clf = KernelSurrogateClassifier(alpha=1e-3, device="cpu").fit(K, y)
    assert clf.n_iter_ > 0
    assert clf.score(K, y) > 0.95
    assert torch.get_default_dtype() == torch.float32  # the solver does not change global state
