"""InfluenceAttributor against a brute-force float64 influence computation."""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sknn_kernels.attribution.influence import InfluenceAttributor


def _net(seed=0, n_in=3, n_out=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 5), torch.nn.Tanh(), torch.nn.Linear(5, n_out))


def _data(n=12, n_in=3, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), np.arange(n) % n_classes


def _rows(X):
    """Per-sample inputs as keyword dicts of float64 / integer tensors (arrays or dicts)."""
    named = isinstance(X, dict)
    n = len(next(iter(X.values()))) if named else len(X)
    for i in range(n):
        items = X.items() if named else [("x", X)]
        yield {k: _as_tensor(v[i : i + 1]) for k, v in items}


def _jacobians_and_proba(net, X):
    """Per-sample ``(C, P)`` Jacobians of the logits and softmax probabilities, float64,
    one ``autograd.grad`` per sample and output (any input form; a dict output's logits)."""
    net = copy.deepcopy(net).double().eval()
    params = [p for p in net.parameters() if p.requires_grad]
    J, P = [], []
    for kwargs in _rows(X):
        out = net(**kwargs) if "x" not in kwargs else net(kwargs["x"])
        f = (out["logits"] if isinstance(out, dict) else out).reshape(-1)
        rows = []
        for c in range(len(f)):
            grads = torch.autograd.grad(f[c], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        torch.zeros(p.numel(), dtype=torch.float64) if g is None else g.reshape(-1)
                        for p, g in zip(params, grads)
                    ]
                )
            )
        J.append(torch.stack(rows))
        P.append(torch.softmax(f.detach(), 0))
    return torch.stack(J).numpy(), torch.stack(P).numpy()


def _brute_force(net, X, y, X_test, t, curvature, damping, output):
    """``-u(x)ᵀ J(x) (Σ J_jᵀ W_j J_j + λI)⁻¹ J_iᵀ (p_i - e_yi)`` with explicit P × P matrices."""
    J, P = _jacobians_and_proba(net, X)
    Jt, Pt = _jacobians_and_proba(net, X_test)
    C = P.shape[1]
    E = np.eye(C)
    H = np.zeros((J.shape[2], J.shape[2]))
    for j in range(len(y)):
        p, c = P[j], y[j]
        m = E[c] - np.where(np.arange(C) == c, 0, p) / (1 - p[c])
        W = {
            "ggn": np.diag(p) - np.outer(p, p),
            "margin": p[c] * (1 - p[c]) * np.outer(m, m),
            "identity": np.outer(m, m),
        }[curvature]
        H += J[j].T @ W @ J[j]
    H += damping * np.trace(H) / len(y) * np.eye(len(H))
    grads = np.stack([J[i].T @ (P[i] - E[y[i]]) for i in range(len(y))])  # (n, P)
    A = np.zeros((len(t), len(y)))
    for a in range(len(t)):
        p, c = Pt[a], t[a]
        u = E[c] if output == "logit" else E[c] - np.where(np.arange(C) == c, 0, p) / (1 - p[c])
        A[a] = -(u @ Jt[a]) @ np.linalg.solve(H, grads.T)
    return A


def _as_tensor(a):
    t = torch.as_tensor(np.asarray(a))
    return t.double() if t.is_floating_point() else t


@pytest.mark.parametrize("curvature", ["ggn", "margin", "identity"])
@pytest.mark.parametrize("output", ["margin", "logit"])
def test_exact_mode_matches_brute_force(curvature, output):
    net = _net()
    X, y = _data()
    inf = InfluenceAttributor(
        net,
        projection_dim=None,
        curvature=curvature,
        damping=1e-2,
        output=output,
        device="cpu",
        dtype="float64",
    ).fit(X, y)
    t = np.array([0, 2, 1])
    A = inf.attribute(X[:3] + 0.1, target=t)
    ref = _brute_force(net, X, y, X[:3] + 0.1, t, curvature, 1e-2, output)
    np.testing.assert_allclose(A, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())


def test_projected_mode_approaches_exact_with_large_projection():
    net = _net()
    X, y = _data()
    exact = InfluenceAttributor(
        net, projection_dim=None, damping=1e-2, device="cpu", dtype="float64"
    ).fit(X, y)
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
    with pytest.raises(ValueError, match="outputs but there are 3 classes"):
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


def _token_case():
    from _nets import BagOfTokens, token_data

    torch.manual_seed(0)
    net = BagOfTokens(vocab=12, dim=3, n_out=3)
    ids, _ = token_data(10, T=5, vocab=12, seed=1)
    return net, ids, np.arange(10) % 3


def _fusion_case():
    from _nets import TwoImageFusion

    torch.manual_seed(0)
    net = TwoImageFusion(n_out=3)
    rng = np.random.default_rng(2)
    X = {"left": rng.random((9, 1, 5, 5)), "right": rng.random((9, 1, 5, 5))}
    return net, X, np.arange(9) % 3


@pytest.mark.parametrize("case", [_token_case, _fusion_case], ids=["token_ids", "named_inputs"])
def test_token_ids_and_named_inputs_match_float64_hand_computation(case, one_torch_thread):
    """Integer ids (nn.Embedding) and a dict of named inputs with a dict output, exact mode."""
    net, X, y = case()
    inf = InfluenceAttributor(
        net, projection_dim=None, damping=1e-2, device="cpu", dtype="float64"
    ).fit(X, y)
    sub = {k: v[:3] for k, v in X.items()} if isinstance(X, dict) else X[:3]
    t = np.array([2, 0, 1])
    A = inf.attribute(sub, target=t)
    ref = _brute_force(net, X, y, sub, t, "ggn", 1e-2, "margin")
    np.testing.assert_allclose(A, ref, rtol=1e-7, atol=1e-10 * np.abs(ref).max())
    # the projected path runs on the same inputs, and its kernel approximates the exact one
    proj = clone(inf).set_params(projection_dim=2048, random_state=0).fit(X, y)
    assert np.corrcoef(proj.attribute(sub, target=t).ravel(), A.ravel())[0, 1] > 0.9
    assert inf.explain(sub, top_k=2).proponents.shape == (3, 2)
    if isinstance(X, dict):
        assert inf.input_keys_ == ("left", "right") and not hasattr(inf, "n_features_in_")
        with pytest.raises(ValueError, match="named inputs"):
            inf.attribute(sub["left"].reshape(3, -1))
    else:
        assert inf.n_features_in_ == X.shape[1]


def test_classes_cover_labels_missing_from_y():
    """A training subset without class 2 still maps output j to classes[j]."""
    net = _net()
    X, y = _data(n=12)
    keep = y != 2
    full = InfluenceAttributor(
        net, projection_dim=None, damping=1e-2, device="cpu", dtype="float64"
    ).fit(X, y)
    part = InfluenceAttributor(
        net, classes=[0, 1, 2], projection_dim=None, damping=1e-2, device="cpu", dtype="float64"
    ).fit(X[keep], y[keep])
    np.testing.assert_array_equal(part.classes_, [0, 1, 2])
    ref = _brute_force(net, X[keep], y[keep], X[:2], np.array([2, 0]), "ggn", 1e-2, "margin")
    np.testing.assert_allclose(part.attribute(X[:2], target=[2, 0]), ref, rtol=1e-7)
    np.testing.assert_allclose(part.predict_proba(X[:3]), full.predict_proba(X[:3]))
    # labels in any order: column j scores classes[j]
    rev = InfluenceAttributor(net, classes=["c", "b", "a"], projection_dim=8, device="cpu")
    rev.fit(X, np.array(["c", "b", "a"])[y])
    assert rev.predict(X[:4]).tolist() == [["c", "b", "a"][i] for i in full.predict(X[:4])]
    with pytest.raises(ValueError, match=r"y contains labels not in `classes`: \[3\]"):
        clone(part).fit(X, np.where(y == 2, 3, y))  # label 3 is unknown: a clear error
    with pytest.raises(ValueError, match="2 classes"):
        InfluenceAttributor(net, classes=[0, 1], projection_dim=8, device="cpu").fit(
            X[keep], y[keep]
        )


def test_ensemble_api_and_changed_member_warns():
    from sknn_kernels.exceptions import NetworkChangedWarning

    nets = (_net(0), _net(1))  # a tuple works like a list
    X, y = _data()
    inf = InfluenceAttributor(nets, projection_dim=16, random_state=np.random.RandomState(0))
    inf.set_params(device="cpu").fit(X, y)
    assert len(inf.train_vectors_) == 2 and inf.device_ == "cpu"
    before = inf.attribute(X[:2], target=y[:2])
    with torch.no_grad():
        nets[1][0].weight.add_(1.0)  # the user trains member 1 further
    with pytest.warns(NetworkChangedWarning):
        changed = inf.attribute(X[:2], target=y[:2])
    assert not np.allclose(before, changed)
    with pytest.raises(ValueError, match="empty list"):
        InfluenceAttributor([]).fit(X, y)


def test_skorch_and_frozen_networks_in_an_ensemble(one_torch_thread):
    from sklearn.exceptions import NotFittedError
    from sklearn.frozen import FrozenEstimator
    from skorch import NeuralNetClassifier

    X, y = _data(n=20)
    X = X.astype(np.float32)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = NeuralNetClassifier(
            _net(seed), max_epochs=2, lr=0.1, train_split=None, verbose=0,
            criterion=torch.nn.CrossEntropyLoss,
        )  # fmt: skip
        nets.append(net.fit(X, y))
    kw = {"projection_dim": 16, "random_state": 0, "device": "cpu"}
    expected = InfluenceAttributor([n.module_ for n in nets], **kw).fit(X, y)
    mixed = InfluenceAttributor([nets[0], FrozenEstimator(nets[1])], **kw).fit(X, y)
    np.testing.assert_allclose(
        mixed.attribute(X[:3], target=y[:3]), expected.attribute(X[:3], target=y[:3])
    )
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        clone(mixed).fit(X, y)  # clone turns the plain skorch net into an unfitted one


@pytest.mark.parametrize("curvature", ["ggn", "margin", "identity"])
def test_projected_curvature_gemm_matches_float64_contraction(curvature):
    """H from the factors of W (float32 GEMM, negligible GGN directions dropped) equals the
    float64 ``Σ F_jᵀ W_j F_j`` contraction to float32 precision."""
    import scipy.linalg

    net = _net(n_out=4)
    X, y = _data(n=40, n_classes=4)
    X = 3 * X  # confident predictions: small curvature, where cancellation would show
    inf = InfluenceAttributor(
        net, projection_dim=32, curvature=curvature, damping=1e-2, random_state=0, device="cpu"
    ).fit(X, y)
    adapter = inf._members[0].adapter(inf._validate_network_X(X, reset=False))
    F = inf._features(adapter, X, 0).astype(np.float64)
    P = inf._proba(adapter, X)
    H = np.einsum("ick,icd,idl->kl", F, inf._curvature(P, y), F)
    lam = 1e-2 * np.trace(H) / len(y)
    G = np.einsum("ic,ick->ik", P - np.eye(4)[y], F)
    V = scipy.linalg.solve(H + lam * np.eye(len(H)), G.T, assume_a="pos").T
    np.testing.assert_allclose(inf.damping_[0], lam, rtol=1e-3)
    np.testing.assert_allclose(inf.train_vectors_[0], V, rtol=1e-3, atol=1e-4 * np.abs(V).max())
