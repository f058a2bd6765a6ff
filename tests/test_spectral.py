"""Spectra, power-law fits and kernel alignment against direct computations."""

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp

from sknn_kernels.analysis.spectral import (
    fit_power_law,
    kernel_alignment,
    kernel_spectrum,
    weight_spectra,
)


def test_kernel_spectrum_matches_eigvalsh(rng):
    X = rng.normal(size=(30, 8))
    K = X @ X.T + 0.1 * np.eye(30)
    spec = kernel_spectrum(K)
    expected = np.sort(np.linalg.eigvalsh(K))[::-1]
    np.testing.assert_allclose(spec.eigenvalues, expected, rtol=1e-10)
    p = expected / expected.sum()
    assert spec.effective_rank == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert spec.participation_ratio == pytest.approx(expected.sum() ** 2 / np.sum(expected**2))
    assert spec.condition_number == pytest.approx(expected[0] / expected[-1])


def test_effective_rank_extremes(rng):
    n = 12
    flat = kernel_spectrum(3.0 * np.eye(n))
    assert flat.effective_rank == pytest.approx(n)
    assert flat.participation_ratio == pytest.approx(n)
    assert flat.condition_number == pytest.approx(1.0)
    v = rng.normal(size=n)
    rank_one = kernel_spectrum(np.outer(v, v))
    assert rank_one.effective_rank == pytest.approx(1.0, abs=1e-6)
    assert rank_one.participation_ratio == pytest.approx(1.0, abs=1e-6)
    assert rank_one.condition_number == np.inf


def test_kernel_spectrum_errors(rng):
    with pytest.raises(ValueError, match="square"):
        kernel_spectrum(np.ones((3, 4)))
    with pytest.raises(ValueError, match="not symmetric"):
        kernel_spectrum(rng.normal(size=(4, 4)))
    with pytest.raises(ValueError, match="no positive"):
        kernel_spectrum(-np.eye(3))


def test_weight_spectra_match_numpy_svd():
    net = make_cnn_bn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    spectra = weight_spectra(net)
    assert list(spectra) == [
        "conv1.weight",
        "conv2.weight",
        "fc.weight",
    ]  # BatchNorm weight is 1-D: skipped
    W = net.conv2.weight.detach().numpy().reshape(6, -1)
    assert spectra["conv2.weight"].shape == (6, 36)
    np.testing.assert_allclose(
        spectra["conv2.weight"].singular_values, np.linalg.svd(W, compute_uv=False), rtol=1e-6
    )
    eig = np.sort(np.linalg.eigvalsh(W.astype(np.float64) @ W.T))[
        ::-1
    ]  # non-zero eigenvalues of WᵀW
    np.testing.assert_allclose(spectra["conv2.weight"].eigenvalues, eig, rtol=1e-5)
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name])


@pytest.mark.parametrize("log", [False, True])
def test_spectral_density_is_normalised(log):
    spec = weight_spectra(make_mlp(n_in=40, hidden=(60,)))["0.weight"]
    density, edges = spec.density(bins=12, log=log)
    assert density.shape == (12,)
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)
    assert edges[0] == pytest.approx(spec.eigenvalues.min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_law_recovers_known_exponent(seed):
    rng = np.random.default_rng(seed)
    alpha, xmin = 2.5, 2.0
    x = xmin * (1 - rng.uniform(size=5000)) ** (-1 / (alpha - 1))
    fit = fit_power_law(x)
    assert abs(fit.alpha - alpha) < 0.15
    assert fit.ks_distance < 0.05
    assert fit.sigma == pytest.approx((fit.alpha - 1) / np.sqrt(fit.n_tail))


def test_power_law_finds_tail_start_above_a_non_power_law_body():
    rng = np.random.default_rng(3)
    body = rng.uniform(0.1, 1.0, size=3000)  # not a power law
    tail = 1.0 * (1 - rng.uniform(size=3000)) ** (-1 / 1.5)  # alpha = 2.5 above 1
    fit = fit_power_law(np.r_[body, tail])
    assert 0.85 < fit.xmin < 1.6
    assert abs(fit.alpha - 2.5) < 0.15
    # starting the tail at the minimum (ignoring the KS choice) gets the exponent badly wrong
    naive = fit_power_law(np.r_[body, tail], xmin=0.1)
    assert abs(naive.alpha - 2.5) > 0.5


def test_power_law_fixed_xmin_is_the_mle():
    x = np.array([1.0, 1.5, 2.0, 4.0, 10.0, 0.5, -1.0])
    fit = fit_power_law(x, xmin=1.0)
    tail = np.array([1.0, 1.5, 2.0, 4.0, 10.0])
    assert fit.alpha == pytest.approx(1 + 5 / np.log(tail).sum())
    assert fit.n_tail == 5
    with pytest.raises(ValueError, match="xmin must be positive"):
        fit_power_law(x, xmin=0)
    with pytest.raises(ValueError, match="min_tail"):
        fit_power_law(x, min_tail=20)


def _linear_cka(X, Y):
    """Kornblith et al. 2019, eq. for linear CKA on centred features."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def test_kernel_alignment_is_linear_cka(rng):
    X = rng.normal(size=(40, 6))
    Y = X @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(40, 4))
    K1, K2 = X @ X.T, Y @ Y.T
    assert kernel_alignment(K1, K2) == pytest.approx(_linear_cka(X, Y))
    assert kernel_alignment(K1, K1) == pytest.approx(1.0)
    assert 0 < kernel_alignment(K1, K2) < 1
    # uncentred alignment: plain Frobenius cosine
    assert kernel_alignment(K1, K2, center=False) == pytest.approx(
        np.sum(K1 * K2) / np.linalg.norm(K1) / np.linalg.norm(K2)
    )


def test_kernel_alignment_invariances(rng):
    X = rng.normal(size=(40, 6))
    Y = np.tanh(X @ rng.normal(size=(6, 5)))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = kernel_alignment(X @ X.T, Y @ Y.T)
    XQ = 3.0 * (X @ Q)  # orthogonal transform and isotropic scaling of the features
    assert kernel_alignment(XQ @ XQ.T, Y @ Y.T) == pytest.approx(base)
    assert kernel_alignment(X @ X.T, 7.5 * (Y @ Y.T)) == pytest.approx(base)
    # not invariant to an anisotropic scaling
    S = X * np.array([10.0, 1, 1, 1, 1, 0.1])
    assert abs(kernel_alignment(S @ S.T, Y @ Y.T) - base) > 1e-3
    # centring: adding a constant to every entry of a kernel changes nothing
    assert kernel_alignment(X @ X.T + 4.0, Y @ Y.T) == pytest.approx(base)


def test_kernel_alignment_errors():
    with pytest.raises(ValueError, match="same shape"):
        kernel_alignment(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="zero after centring"):
        kernel_alignment(np.ones((3, 3)), np.eye(3))
