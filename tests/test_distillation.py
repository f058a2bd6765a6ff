"""Distilled surrogates: KernelSurrogateClassifier(target="logits") and the network-output helper."""

import numpy as np
import pytest
import torch
from _nets import make_mlp
from sklearn.datasets import make_classification
from sklearn.metrics.pairwise import rbf_kernel

from sknn_kernels import KernelSurrogateClassifier, KernelSurrogateRegressor
from sknn_kernels.metrics import kendall_faithfulness, network_outputs, network_proba


def _data(n_classes=3, n=60):
    X, y = make_classification(
        n_samples=n,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        random_state=0,
    )
    return X.astype(np.float32), y, rbf_kernel(X, X, gamma=0.2)


def test_network_outputs_kinds():
    net = make_mlp(n_in=5, n_out=3)
    X, _, _ = _data()
    Z = network_outputs(net, X, device="cpu")
    with torch.no_grad():
        expected = net(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(Z, expected, rtol=1e-6)
    P = network_outputs(net, X, "proba", device="cpu")
    np.testing.assert_allclose(P, np.exp(Z) / np.exp(Z).sum(1, keepdims=True), rtol=1e-10)
    np.testing.assert_array_equal(P, network_proba(net, X, device="cpu"))
    one = make_mlp(n_in=5, n_out=1)
    assert network_outputs(one, X, device="cpu").shape == (len(X), 1)
    with pytest.raises(ValueError, match="kind must be"):
        network_outputs(net, X, "probabilities")


@pytest.mark.parametrize("penalty", ["rkhs", "l2"])
def test_logits_fit_is_weighted_least_squares(penalty):
    # Independent reference for "rkhs": the regressor (itself checked against KernelRidge) on the
    # logits with the classifier's normalised weights; "l2": the normal equations, by numpy.
    net = make_mlp(n_in=5, n_out=3)
    X, y, K = _data()
    s = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    clf = KernelSurrogateClassifier(
        target="logits", network=net, penalty=penalty, alpha=1e-3, device="cpu"
    )
    clf.fit(K, y, sample_weight=s, network_X=X)
    Z = network_outputs(net, X, device="cpu")
    w = s / s.sum()
    if penalty == "rkhs":
        reg = KernelSurrogateRegressor(alpha=1e-3, device="cpu").fit(K, Z, sample_weight=w)
        np.testing.assert_allclose(clf.coef_, reg.dual_coef_.T, rtol=1e-8, atol=1e-10)
    else:
        mu, zbar = w @ K, w @ Z
        Kc = K - mu
        W = np.linalg.solve(
            Kc.T @ (w[:, None] * Kc) + 1e-3 * np.eye(len(y)), Kc.T @ (w[:, None] * (Z - zbar))
        )
        np.testing.assert_allclose(clf.coef_, W.T, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(clf.intercept_, zbar - mu @ W, rtol=1e-6, atol=1e-8)
    # the closed form is the minimum of the objective the classifier reports
    base = clf.objective(K, y, s, network_X=X)
    for scale in (1e-4, -1e-4):
        assert clf.objective(K, y, s, network_X=X, coef=clf.coef_ * (1 + scale)) > base
    # predictions go through softmax, whatever multi_class says
    ovr = clf.set_params(multi_class="ovr").fit(K, y, sample_weight=s, network_X=X)
    scores = ovr.decision_function(K)
    np.testing.assert_allclose(
        ovr.predict_proba(K), np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    )


@pytest.mark.parametrize("n_out", [1, 2])
def test_binary_logits_target(n_out):
    net = make_mlp(n_in=5, n_out=n_out, seed=3)
    X, y, K = _data(n_classes=2)  # an RBF kernel: full rank, so the logits are interpolated
    Z = network_outputs(net, X, device="cpu")
    logit = Z[:, 0] if n_out == 1 else Z[:, 1] - Z[:, 0]
    clf = KernelSurrogateClassifier(
        target="logits", network=net, penalty="rkhs", alpha=1e-10, device="cpu"
    )
    clf.fit(K, y, network_X=X)
    np.testing.assert_allclose(clf.decision_function(K), logit, atol=1e-4)
    P = network_proba(net, X, device="cpu")
    assert kendall_faithfulness(y, P, clf.predict_proba(K), drop_saturated=False) > 0.999


def test_logits_target_errors():
    net = make_mlp(n_in=5, n_out=4)
    X, y, K = _data()
    with pytest.raises(ValueError, match="target='logits' needs both"):
        KernelSurrogateClassifier(target="logits", device="cpu").fit(K, y)
    with pytest.raises(ValueError, match="4 output classes but y has 3"):
        KernelSurrogateClassifier(target="logits", network=net, device="cpu").fit(K, y, network_X=X)
