"""Spectra across checkpoints, checked against numpy computations by hand."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sknn_kernels.analysis.spectral import fit_power_law
from sknn_kernels.analysis.spectral_evolution import (
    label_alignment,
    marchenko_pastur_edge,
    spectral_evolution,
)


def _checkpoints(seed=0, n_steps=3, lr=0.5):
    """An MLP and copies after a few plain gradient steps on random data."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 3))
    X = torch.randn(30, 6)
    y = torch.randint(0, 3, (30,))
    states = [copy.deepcopy(net)]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(n_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
        states.append(copy.deepcopy(net))
    return states, X.numpy(), y.numpy()


def _cka(A, B):
    n = len(A)
    H = np.eye(n) - np.ones((n, n)) / n
    A, B = H @ A @ H, H @ B @ H
    return np.sum(A * B) / np.linalg.norm(A) / np.linalg.norm(B)


def test_weight_statistics_match_numpy():
    nets, _, _ = _checkpoints()
    evo = spectral_evolution(nets, kernels=(), min_tail=5)
    assert evo.steps.tolist() == [0, 1, 2, 3]
    W0 = nets[0][0].weight.detach().double().numpy()
    for t, net in enumerate(nets):
        W = net[0].weight.detach().double().numpy()
        rec = evo.weights["0.weight"]
        eig = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)[::-1]
        np.testing.assert_allclose(rec.eigenvalues[t], eig, rtol=1e-10)
        edge = np.mean(W**2) * (np.sqrt(24) + np.sqrt(6)) ** 2
        assert rec.bulk_edge[t] == pytest.approx(edge)
        assert rec.n_outliers[t] == np.sum(eig > edge)
        assert rec.distance[t] == pytest.approx(np.linalg.norm(W - W0) / np.linalg.norm(W0))
        assert rec.alpha[t] == pytest.approx(fit_power_law(eig, min_tail=5).alpha)
    assert rec.shape == (24, 6) and evo.weights["2.weight"].eigenvalues.shape == (4, 3)
    assert np.isnan(evo.weights["2.weight"].alpha).all()  # 3 eigenvalues: no tail to fit


def test_kernel_statistics_match_numpy():
    nets, X, y = _checkpoints()
    evo = spectral_evolution(nets, X, y, kernels=("ck",), steps=[0, 10, 20, 30])
    rec = evo.kernels["ck"]
    Ks = []
    for net in nets:
        with torch.no_grad():
            Phi = copy.deepcopy(net).double()[:2](torch.from_numpy(X).double()).numpy()
        Ks.append(Phi @ Phi.T)
    for t, K in enumerate(Ks):
        np.testing.assert_allclose(
            rec.eigenvalues[t], np.linalg.eigvalsh(K)[::-1], rtol=1e-5, atol=1e-8 * np.abs(K).max()
        )
        assert rec.distance[t] == pytest.approx(
            np.linalg.norm(K - Ks[0]) / np.linalg.norm(Ks[0]), rel=1e-4, abs=1e-6
        )
        assert rec.alignment[t] == pytest.approx(_cka(K, Ks[0]), rel=1e-5)
        assert rec.label_alignment[t] == pytest.approx(label_alignment(K, y), rel=1e-4)
    assert evo.steps.tolist() == [0, 10, 20, 30]
    assert rec.distance[0] == 0 and rec.alignment[0] == pytest.approx(1)


def test_ntk_of_a_two_layer_linear_network_matches_the_closed_form():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 7, bias=False), nn.Linear(7, 1, bias=False))
    later = copy.deepcopy(net)
    with torch.no_grad():
        later[1].weight.mul_(3.0)
    X = np.random.default_rng(0).normal(size=(9, 4))
    evo = spectral_evolution([net, later], X.astype(np.float32), kernels=("ntk",))
    Ks = []
    for m in (net, later):
        W1 = m[0].weight.detach().double().numpy()
        w2 = m[1].weight.detach().double().numpy().ravel()
        # f(x) = w2ᵀ W1 x: ∂f/∂w2 = W1 x and ∂f/∂W1 = w2 xᵀ
        Xd = X.astype(np.float32).astype(np.float64)
        Ks.append((Xd @ W1.T) @ (Xd @ W1.T).T + (w2 @ w2) * Xd @ Xd.T)
    rec = evo.kernels["ntk"]
    for t, K in enumerate(Ks):
        np.testing.assert_allclose(
            rec.eigenvalues[t], np.linalg.eigvalsh(K)[::-1], rtol=1e-6, atol=1e-9
        )
    assert rec.distance[1] == pytest.approx(
        np.linalg.norm(Ks[1] - Ks[0]) / np.linalg.norm(Ks[0]), rel=1e-6
    )
    assert np.isnan(rec.label_alignment).all()  # no labels given


def test_state_dicts_with_a_template_equal_modules():
    nets, X, _ = _checkpoints(n_steps=2)
    from_modules = spectral_evolution(nets, X, kernels=("ck",))
    template = copy.deepcopy(nets[0])
    from_states = spectral_evolution(
        [n.state_dict() for n in nets], X, kernels=("ck",), template=template
    )
    np.testing.assert_allclose(
        from_states.kernels["ck"].eigenvalues, from_modules.kernels["ck"].eigenvalues
    )
    np.testing.assert_allclose(
        from_states.weights["0.weight"].distance, from_modules.weights["0.weight"].distance
    )
    assert torch.equal(template[0].weight, nets[0][0].weight)  # the template is not modified
    with pytest.raises(TypeError, match="template"):
        spectral_evolution([n.state_dict() for n in nets], kernels=())
    with pytest.raises(ValueError, match="fixed batch"):
        spectral_evolution(nets)
    with pytest.raises(ValueError, match="kernels"):
        spectral_evolution(nets, X, kernels=("rbf",))
    with pytest.raises(ValueError, match="steps"):
        spectral_evolution(nets, kernels=(), steps=[0, 1])


def test_marchenko_pastur_edge_separates_a_spike_from_the_bulk():
    rng = np.random.default_rng(0)
    r, c = 200, 100
    noise = rng.normal(size=(r, c)) / np.sqrt(c)
    eig = np.linalg.svd(noise, compute_uv=False) ** 2
    edge = marchenko_pastur_edge(noise)
    assert edge == pytest.approx((noise**2).mean() * (np.sqrt(r) + np.sqrt(c)) ** 2)
    assert eig.max() < 1.05 * edge and np.mean(eig > edge) < 0.02  # the bulk ends at the edge
    u, v = rng.normal(size=r), rng.normal(size=c)
    spiked = noise + 3 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * np.sqrt(edge)
    eig = np.linalg.svd(spiked, compute_uv=False) ** 2
    assert np.sum(eig > marchenko_pastur_edge(spiked)) == 1


def test_label_alignment_matches_a_projection_by_hand():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=40)
    Z = rng.normal(size=(40, 5))
    K = Z @ Z.T
    n = 40
    H = np.eye(n) - 1 / n
    v = np.linalg.eigh(H @ K @ H)[1][:, -1]
    Y = np.eye(3)[y] - np.eye(3)[y].mean(0)
    P = Y @ np.linalg.pinv(Y)  # projector on the centred label columns
    assert label_alignment(K, y) == pytest.approx(np.linalg.norm(P @ v))
    # a kernel whose main direction is the class structure
    M = np.eye(3)[y] * 5 + rng.normal(scale=0.01, size=(40, 3))
    assert label_alignment(M @ M.T, y) > 0.99
    with pytest.raises(ValueError, match="labels"):
        label_alignment(K, y[:10])


def test_spectral_evolution_plot_compares_runs():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_spectral_evolution

    nets, X, _ = _checkpoints(n_steps=2)
    evo = spectral_evolution(nets, X, kernels=("ntk",), min_tail=5)
    fig = plot_spectral_evolution({"a": evo, "b": evo}, matrix="0.weight")
    assert len(fig.axes) == 4
    np.testing.assert_allclose(fig.axes[3].lines[0].get_ydata(), evo.kernels["ntk"].distance)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), evo.weights["0.weight"].n_outliers)
