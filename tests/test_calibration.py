"""Binned-regression calibration: PIT, point estimates and photo-z metrics against hand values."""

import numpy as np
import pytest
from scipy.stats import kstest

from sknn_kernels.metrics import (
    binned_point_estimates,
    binned_regression_metrics,
    photoz_metrics,
    pit_histogram,
    pit_ks_distance,
    pit_values,
)

EDGES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def test_pit_by_hand():
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [1.0, 0, 0, 0]])
    y = [0.6, 0.5, 0.1]
    # 0.1 + 0.2 + 0.3 * (0.1 / 0.25); 0.5 exactly at an edge; 1.0 * 0.1 / 0.25
    np.testing.assert_allclose(pit_values(y, proba, EDGES), [0.42, 0.5, 0.4])
    # outside the edges: 0 below, 1 above
    np.testing.assert_allclose(pit_values([-1.0, 2.0], proba[:2], EDGES), [0.0, 1.0])


def test_calibrated_predictions_give_uniform_pit():
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 1, 21)
    # each sample's truth drawn from its own predicted distribution: PIT ~ U(0, 1)
    proba = rng.dirichlet(np.ones(20), size=4000)
    k = np.array([rng.choice(20, p=p) for p in proba])
    y = edges[k] + rng.uniform(size=len(k)) * 0.05
    pit = pit_values(y, proba, edges)
    assert pit_ks_distance(pit) < 0.03
    assert np.abs(pit_histogram(pit)["density"] - 1).max() < 0.15
    # an overconfident predictor (mass on one bin next to the truth) is far from uniform
    wrong = np.eye(20)[np.clip(k + 1, 0, 19)]
    assert pit_ks_distance(pit_values(y, wrong, edges)) > 0.4


def test_ks_distance_matches_scipy_and_histogram_by_hand():
    pit = np.array([0.05, 0.1, 0.15, 0.8])
    assert np.isclose(pit_ks_distance(pit), kstest(pit, "uniform").statistic)
    hist = pit_histogram(pit, n_bins=4)
    np.testing.assert_array_equal(hist["count"], [3, 0, 0, 1])
    np.testing.assert_allclose(hist["density"], [3, 0, 0, 1])
    np.testing.assert_allclose(hist["bin_low"], [0, 0.25, 0.5, 0.75])


def test_point_estimates_by_hand():
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.6, 0.0, 0.0, 0.4]])
    est = binned_point_estimates(proba, EDGES)
    np.testing.assert_allclose(est["mode"], [0.875, 0.125])
    np.testing.assert_allclose(est["mean"], [0.0125 + 0.075 + 0.1875 + 0.35, 0.075 + 0.35])
    # CDF reaches 1/2 in bin 2 (0.3 + 0.2 * 0.25 / 0.3 ... ) and in bin 0 (0.5 / 0.6 of it)
    np.testing.assert_allclose(est["median"], [0.5 + 0.25 * (0.2 / 0.3), 0.25 * (0.5 / 0.6)])


def test_photoz_metrics_and_results_dict():
    m = photoz_metrics([1.0, 1.0, 1.0], [1.2, 1.0, 0.4])
    # Δ = [0.1, 0, -0.3]: median 0, |Δ| = [0.1, 0, 0.3]
    assert np.isclose(m["bias"], -0.2 / 3)
    assert np.isclose(m["nmad"], 1.4826 * 0.1)
    assert np.isclose(m["outlier_rate"], 1 / 3)
    absolute = photoz_metrics([1.0, 1.0], [1.2, 1.0], relative=False, outlier_threshold=0.1)
    assert np.isclose(absolute["bias"], 0.1) and absolute["outlier_rate"] == 0.5
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    res = binned_regression_metrics([0.6, 0.5], proba, EDGES)
    assert list(res["estimate"]) == ["mode", "mean", "median"]
    assert len({len(v) for v in res.values()}) == 1
    est = binned_point_estimates(proba, EDGES)
    assert np.isclose(res["bias"][1], photoz_metrics([0.6, 0.5], est["mean"])["bias"])
    assert np.isclose(res["pit_ks"][0], pit_ks_distance([0.42, 0.5]))


def test_errors():
    with pytest.raises(ValueError, match="softmax"):
        pit_values([0.1], [[2.0, -1.0]], [0, 0.5, 1])
    with pytest.raises(ValueError, match="bin_edges"):
        pit_values([0.1], [[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        pit_histogram([0.5], n_bins=0)


def test_plot_pit_histogram():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_pit_histogram

    fig = plot_pit_histogram([0.05, 0.1, 0.15, 0.8], n_bins=4)
    heights = [b.get_height() for b in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [3, 0, 0, 1])
    assert "0.600" in fig.axes[0].get_title()  # KS distance of this sample
