"""InfluenceAttributor against a brute-force float64 influence computation."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch.func import functional_call, jacrev

from sknn_kernels.influence import InfluenceAttributor


def _net(seed=0, n_in=3, n_out=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 5), torch.nn.Tanh(), torch.nn.Linear(5, n_out))


def _data(n=12, n_in=3, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), np.arange(n) % n_classes


def _jacobians(net, X):
    """Per-sample ``(C, P)`` Jacobians of the logits, float64."""
    net = net.double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, x):
        return functional_call(net, p, (x[None],))[0]

    out = []
    for x in torch.as_tensor(X, dtype=torch.float64):
        J = jacrev(f)(params, x)
        out.append(torch.cat([J[k].reshape(J[k].shape[0], -1) for k in params], dim=1))
    return torch.stack(out).numpy()


def _brute_force(net, X, y, X_test, t, curvature, damping, output):
    """``-u(x)ᵀ J(x) (Σ J_jᵀ W_j J_j + λI)⁻¹ J_iᵀ (p_i - e_yi)`` with explicit P × P matrices."""
    net = _net_copy(net)
    J, Jt = _jacobians(net, X), _jacobians(net, X_test)
    with torch.no_grad():
        P = torch.softmax(net(torch.as_tensor(X)), 1).numpy()
        Pt = torch.softmax(net(torch.as_tensor(X_test)), 1).numpy()
    C = P.shape[1]
    E = np.eye(C)
    H = np.zeros((J.shape[2], J.shape[2]))
    for j in range(len(X)):
        p, c = P[j], y[j]
        m = E[c] - np.where(np.arange(C) == c, 0, p) / (1 - p[c])
        W = {
            "ggn": np.diag(p) - np.outer(p, p),
            "margin": p[c] * (1 - p[c]) * np.outer(m, m),
            "identity": np.outer(m, m),
        }[curvature]
        H += J[j].T @ W @ J[j]
    H += damping * np.trace(H) / len(X) * np.eye(len(H))
    grads = np.stack([J[i].T @ (P[i] - E[y[i]]) for i in range(len(X))])  # (n, P)
    A = np.zeros((len(X_test), len(X)))
    for a in range(len(X_test)):
        p, c = Pt[a], t[a]
        u = E[c] if output == "logit" else E[c] - np.where(np.arange(C) == c, 0, p) / (1 - p[c])
        A[a] = -(u @ Jt[a]) @ np.linalg.solve(H, grads.T)
    return A


def _net_copy(net):
    import copy

    return copy.deepcopy(net).double().eval()


@pytest.mark.parametrize("curvature", ["ggn", "margin", "identity"])
@pytest.mark.parametrize("output", ["margin", "logit"])
def test_exact_mode_matches_brute_force(curvature, output):
    net = _net()
    X, y = _data()
    inf = InfluenceAttributor(
        net, projection_dim=None, curvature=curvature, damping=1e-2, output=output, device="cpu"
    ).fit(X, y)
    t = np.array([0, 2, 1])
    A = inf.attribute(X[:3] + 0.1, target=t)
    ref = _brute_force(net, X, y, X[:3] + 0.1, t, curvature, 1e-2, output)
    np.testing.assert_allclose(A, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())


def test_projected_mode_approaches_exact_with_large_projection():
    net = _net()
    X, y = _data()
    exact = InfluenceAttributor(net, projection_dim=None, damping=1e-2, device="cpu").fit(X, y)
    proj = InfluenceAttributor(
        net, projection_dim=4096, damping=1e-2, random_state=0, device="cpu"
    ).fit(X, y)
    A, B = exact.attribute(X[:4], target=y[:4]), proj.attribute(X[:4], target=y[:4])
    corr = np.corrcoef(A.ravel(), B.ravel())[0, 1]
    assert corr > 0.95
    # a small projection is visibly different: the test above can fail
    small = clone(proj).set_params(projection_dim=4).fit(X, y).attribute(X[:4], target=y[:4])
    assert np.corrcoef(A.ravel(), small.ravel())[0, 1] < corr


def test_ensemble_averages_members():
    nets = [_net(0), _net(1)]
    X, y = _data()
    kw = {"projection_dim": 32, "random_state": 3, "device": "cpu"}
    both = InfluenceAttributor(nets, **kw).fit(X, y)
    one = InfluenceAttributor(nets[0], **kw).fit(X, y)
    two = InfluenceAttributor(nets[1], **{**kw, "random_state": 4}).fit(X, y)  # member 1 seed
    np.testing.assert_allclose(
        both.attribute(X[:3], target=y[:3]),
        (one.attribute(X[:3], target=y[:3]) + two.attribute(X[:3], target=y[:3])) / 2,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        both.predict_proba(X[:3]), (one.predict_proba(X[:3]) + two.predict_proba(X[:3])) / 2
    )


def test_explain_matches_attribute_and_surrogate_format():
    net = _net()
    X, y = _data(n=15)
    inf = InfluenceAttributor(net, projection_dim=16, random_state=0, device="cpu").fit(X, y)
    ex = inf.explain(X[:4], top_k=3)
    A = inf.attribute(X[:4], target=ex.target)
    np.testing.assert_array_equal(ex.target, inf.predict(X[:4]))
    np.testing.assert_allclose(ex.proponent_scores, -np.sort(-A, axis=1)[:, :3])
    np.testing.assert_allclose(ex.opponent_scores, np.sort(A, axis=1)[:, :3])
    assert set(ex) == {
        "target",
        "intercept",
        "proponents",
        "proponent_scores",
        "proponent_share",
        "opponents",
        "opponent_scores",
        "opponent_share",
    }


def test_image_inputs_and_labels_other_than_indices():
    from sknn_kernels.datasets import make_cnn

    net = make_cnn((1, 6, 6), 2, channels=(2,), hidden=4)
    X = np.random.default_rng(0).random((8, 36)).astype(np.float32)
    y = np.array(["a", "b"] * 4)
    inf = InfluenceAttributor(
        net, projection_dim=8, random_state=0, device="cpu", input_shape=(1, 6, 6)
    ).fit(X, y)
    assert inf.attribute(X[:2], target=["b", "a"]).shape == (2, 8)
    assert inf.predict(X[:3]).tolist() == [
        ["a", "b"][i] for i in inf.predict_proba(X[:3]).argmax(1)
    ]


def test_errors_are_clear():
    X, y = _data()
    with pytest.raises(ValueError, match="needs a trained `network`"):
        InfluenceAttributor().fit(X, y)
    with pytest.raises(ValueError, match="outputs but y has"):
        InfluenceAttributor(_net(n_out=4), projection_dim=8, device="cpu").fit(X, y)
    inf = InfluenceAttributor(_net(), projection_dim=8, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="not in classes_"):
        inf.attribute(X[:2], target=[0, 7])
    with pytest.raises(ValueError, match="top_k"):
        inf.explain(X[:2], top_k=0)


def test_clone_pickle_and_params():
    import pickle

    net = _net()
    X, y = _data()
    inf = InfluenceAttributor(net, projection_dim=16, random_state=0, device="cpu")
    assert clone(inf).get_params()["projection_dim"] == 16
    inf.fit(X, y)
    again = pickle.loads(pickle.dumps(inf))
    np.testing.assert_allclose(
        again.attribute(X[:2], target=y[:2]), inf.attribute(X[:2], target=y[:2])
    )
    with pytest.raises(ValueError, match="curvature"):
        InfluenceAttributor(net, curvature="hessian").fit(X, y)
