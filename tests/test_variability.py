"""α-trimming level, trimmed Kolmogorov distance and seed-ensemble comparisons."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import ks_2samp
from sklearn.utils import Bunch

from sknn_kernels.analysis.variability import (
    compare_networks,
    dkw_tolerance,
    ensemble_convergence,
    expected_calibration_error,
    trimmed_kolmogorov_distance,
    trimming_level,
)


def _cdf(sample, x, side="right"):
    return np.searchsorted(np.sort(sample), x, side=side) / len(sample)


def brute_force_distance(scores, reference, alpha):
    """min over trimmings of sup |G − H| as a linear program over the atom weights."""
    atoms, counts = np.unique(scores, return_counts=True)
    p = counts / counts.sum()
    m = atoms.size
    grid = np.unique(np.r_[scores, reference])
    rows, rhs = [], []
    for side in ("right", "left"):  # G and H at every pooled value and just before it
        G = _cdf(reference, grid, side)
        below = (
            atoms[None, :] <= grid[:, None] if side == "right" else atoms[None, :] < grid[:, None]
        )
        for Hrow, g in zip(below.astype(float), G):
            rows += [np.r_[Hrow, -1.0], np.r_[-Hrow, -1.0]]  # H − t ≤ G and −H − t ≤ −G
            rhs += [g, -g]
    bounds = [(0, pj / (1 - alpha)) for pj in p] + [(0, None)]
    res = linprog(
        np.r_[np.zeros(m), 1.0],
        A_ub=np.array(rows),
        b_ub=np.array(rhs),
        A_eq=np.r_[np.ones(m), 0.0][None, :],
        b_eq=[1.0],
        bounds=bounds,
    )
    assert res.success
    return res.fun


@pytest.mark.parametrize("a", [0.0, 0.1, 0.25, 0.5])
def test_contaminated_mixture_has_its_contamination_as_level(a):
    rng = np.random.default_rng(0)
    q = rng.normal(size=60)
    n_foreign = round(a * 60 / (1 - a))
    # foreign points interleaved with the reference's support, never on its atoms
    foreign = rng.uniform(-2, 2, size=n_foreign) + 1e-7
    p = np.r_[q, foreign]
    expected = n_foreign / p.size
    assert trimming_level(p, q) == pytest.approx(expected, abs=1e-12)
    assert trimmed_kolmogorov_distance(p, q, expected) == pytest.approx(0, abs=1e-12)


def test_level_is_one_minus_the_smallest_density_ratio_on_a_common_support():
    rng = np.random.default_rng(1)
    for _ in range(20):
        support = np.arange(6.0)
        p_counts = rng.integers(1, 9, size=6)
        g_counts = rng.integers(0, 9, size=6)
        g_counts[0] = max(g_counts[0], 1)
        P, G = np.repeat(support, p_counts), np.repeat(support, g_counts)
        on = g_counts > 0
        ratio = (p_counts[on] / p_counts.sum()) / (g_counts[on] / g_counts.sum())
        expected = max(0.0, 1 - ratio.min())
        assert trimming_level(P, G) == pytest.approx(expected, abs=1e-12)


def test_no_trimming_can_add_mass_where_the_sample_has_none():
    assert trimming_level([0.0, 1.0, 2.0], [0.0, 1.5, 2.0]) == 1.0
    assert trimming_level([0.0, 1.0], [-1.0, 0.0, 1.0]) == 1.0
    # with a tolerance as large as the foreign mass the level drops
    assert trimming_level([0.0, 1.0], [-1.0, 0.0, 1.0], tol=1 / 3) < 1.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.0, 0.15, 0.4])
def test_trimmed_distance_matches_a_linear_program(seed, alpha):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=25), 1)  # ties in both samples
    reference = np.round(rng.normal(0.3, 1.2, size=18), 1)
    got = trimmed_kolmogorov_distance(scores, reference, alpha)
    assert got == pytest.approx(brute_force_distance(scores, reference, alpha), abs=1e-9)


def test_untrimmed_distance_is_the_two_sample_ks_statistic():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=80), rng.normal(0.4, size=50)
    assert trimmed_kolmogorov_distance(x, y, 0.0) == pytest.approx(ks_2samp(x, y).statistic)


@pytest.mark.parametrize("seed", range(8))
def test_level_is_the_smallest_alpha_within_tolerance(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=40)
    y = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 1.5), size=30)
    tol = rng.uniform(0.02, 0.2)
    level = trimming_level(x, y, tol=tol)
    if level < 1:
        assert trimmed_kolmogorov_distance(x, y, level) <= tol + 1e-9
    if 1e-6 < level < 1:
        assert trimmed_kolmogorov_distance(x, y, level - 1e-6) > tol
    grid = np.linspace(0, 0.999, 400)  # the smallest feasible α on a grid is never below it
    feasible = [a for a in grid if trimmed_kolmogorov_distance(x, y, a) <= tol]
    if feasible:
        assert feasible[0] >= level - 1e-12 and feasible[0] - level < 0.0026


def test_vectorised_rows_match_row_by_row_and_monotone_transforms_do_not_matter():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(5, 40))
    refs = rng.normal(size=(5, 33))
    levels = trimming_level(S, refs, tol=0.1)
    assert levels.shape == (5,)
    for j in range(5):
        assert levels[j] == trimming_level(S[j], refs[j], tol=0.1)
    np.testing.assert_allclose(trimming_level(np.exp(S), np.exp(refs), tol=0.1), levels)
    shared = trimming_level(S, refs[0], tol=0.1)
    assert shared[2] == trimming_level(S[2], refs[0], tol=0.1)
    dist = trimmed_kolmogorov_distance(S, refs, np.linspace(0, 0.4, 5))
    assert dist[3] == trimmed_kolmogorov_distance(S[3], refs[3], 0.3)


def test_input_errors_are_explicit():
    with pytest.raises(ValueError, match="one per row"):
        trimming_level(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        trimming_level([0.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="tol"):
        trimming_level([0.0], [0.0], tol=-1)
    with pytest.raises(ValueError, match="alpha"):
        trimmed_kolmogorov_distance([0.0], [0.0], 1.0)
    with pytest.raises(ValueError, match="confidence"):
        dkw_tolerance(10, confidence=1.0)


def test_dkw_tolerance_formula():
    assert dkw_tolerance(200, 0.95) == pytest.approx(np.sqrt(np.log(2 / 0.05) / 200) + 1 / 200)


def test_expected_calibration_error_matches_a_loop():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(300, 4)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, size=300)
    n_bins = 10
    conf, pred = proba.max(1), proba.argmax(1)
    total = 0.0
    for b in range(n_bins):
        inside = (conf > b / n_bins) & (conf <= (b + 1) / n_bins)
        if inside.any():
            total += (
                inside.sum() / 300 * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
            )
    assert expected_calibration_error(y, proba, n_bins=n_bins) == pytest.approx(total)


def test_ensemble_convergence_reports_a_curve_and_stable_size():
    rng = np.random.default_rng(5)
    # seeds whose score distributions differ by a seed-specific shift
    S = rng.normal(size=(8, 300)) + rng.normal(scale=0.3, size=(8, 1))
    res = ensemble_convergence(S, n_repeats=6, random_state=0)
    assert res.sizes.tolist() == [1, 2, 3, 4]  # at least as many held out as in the reference
    assert res.mean.shape == res.std.shape == (4,) and res.levels.shape == (4, 6)
    assert ensemble_convergence(S, sizes=[7, 1], n_repeats=2).sizes.tolist() == [1, 7]
    later = res.mean[res.sizes >= res.stable_size]
    assert np.ptp(later) <= 0.01
    if res.stable_size > 1:  # one size earlier the band is wider than atol
        assert np.ptp(res.mean[res.sizes >= res.stable_size - 1]) > 0.01
    same = np.tile(S[:1], (5, 1))  # identical seeds: nothing to trim at any size
    flat = ensemble_convergence(same, n_repeats=3, split=False, random_state=0)
    np.testing.assert_allclose(flat.mean, 0, atol=1e-12)
    assert flat.stable_size == 1
    with pytest.raises(ValueError, match="sizes"):
        ensemble_convergence(S, sizes=[8])


def _tiny_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def test_compare_networks_on_identical_and_different_networks():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=120)
    same = [_tiny_net(0) for _ in range(3)]
    res = compare_networks(same, X, y, split=False, n_repeats=2, random_state=0, device="cpu")
    assert np.all(res.disagreement == 0) and np.all(res.churn == 0)
    np.testing.assert_allclose(res.trimming_level, 0, atol=1e-12)
    assert np.allclose(res.accuracy, res.accuracy[0])
    assert res.ensemble_accuracy == pytest.approx(res.accuracy[0])

    nets = [_tiny_net(s) for s in range(4)]
    res = compare_networks(
        nets, X, y, score="confidence", n_repeats=2, random_state=0, device="cpu"
    )
    assert res.disagreement.shape == (4, 4) and np.allclose(res.disagreement, res.disagreement.T)
    assert res.churn == pytest.approx(res.disagreement.sum(1) / 3)
    assert res.scores.shape == (4, 120) and np.all(
        (res.trimming_level >= 0) & (res.trimming_level <= 1)
    )
    with pytest.raises(ValueError, match="score"):
        compare_networks(nets, X, y, score="logit")
    with pytest.raises(ValueError, match="two networks"):
        compare_networks(nets[:1], X, y)


def test_convergence_plot_draws_the_curve():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_ensemble_convergence

    S = np.random.default_rng(7).normal(size=(6, 100))
    res = ensemble_convergence(S, n_repeats=2, random_state=0)
    fig = plot_ensemble_convergence(Bunch(convergence=res))  # as compare_networks returns
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), res.sizes)
    np.testing.assert_allclose(line.get_ydata(), res.mean)
