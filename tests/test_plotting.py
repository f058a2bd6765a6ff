"""Plots draw the data they are given, on new or given axes, without opening a window."""

import io

import numpy as np
import pandas as pd
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")  # before any pyplot import; plotting itself never imports pyplot

from _nets import make_cnn_bn, make_mlp
from matplotlib.figure import Figure

from sknn_kernels.analysis.spectral import fit_power_law, kernel_spectrum, weight_spectra
from sknn_kernels.features.probe import PCAProbe
from sknn_kernels.plotting import plot_explained_variance, plot_probe_curves, plot_spectrum


@pytest.fixture(scope="module")
def fitted_probe():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = rng.normal(size=(60, 5)) + 2 * np.eye(3, 5)[y]
    return PCAProbe(
        make_mlp(), layers=["1", "3"], probe_components=(1, 2, 4), cv=3, device="cpu"
    ).fit(X, y)


def _png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


def test_probe_curves_one_panel_per_probe(fitted_probe):
    fig = plot_probe_curves(fitted_probe)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["knn probe", "ncc probe", "linear probe"]
    ncc = fig.axes[1]
    assert ncc.get_xscale() == "log"
    assert [line.get_label() for line in ncc.lines] == ["1", "3"]
    results = pd.DataFrame(fitted_probe.probe_results_)
    rows = results.query("layer == '3' and probe == 'ncc'").sort_values("n_components")
    np.testing.assert_allclose(ncc.lines[1].get_xdata(), rows["n_components"])
    np.testing.assert_allclose(ncc.lines[1].get_ydata(), rows["score_mean"])
    _png(fig)


def test_probe_curves_on_a_given_axes(fitted_probe):
    fig = Figure()
    ax = fig.subplots()
    assert (
        plot_probe_curves(
            fitted_probe.probe_results_, probes=["ncc", "linear"], layers=["3"], ax=ax
        )
        is fig
    )
    assert [line.get_label() for line in ax.lines] == ["3 / ncc", "3 / linear"]
    assert ax.lines[0].get_linestyle() != ax.lines[1].get_linestyle()
    with pytest.raises(ValueError, match="No results"):
        plot_probe_curves(fitted_probe, layers=["nope"])


def test_explained_variance_curves(fitted_probe):
    fig = plot_explained_variance(fitted_probe)
    (ax,) = fig.axes
    for line, layer in zip(ax.lines, ["1", "3"]):
        np.testing.assert_allclose(line.get_ydata(), fitted_probe.explained_variance_[layer])
    fig2 = plot_explained_variance({"a": [0.5, 0.9, 1.0]})
    np.testing.assert_allclose(fig2.axes[0].lines[0].get_xdata(), [1, 2, 3])
    with pytest.raises(TypeError):
        plot_explained_variance([0.5, 1.0])
    _png(fig)


def test_spectrum_rank_and_density():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 10))
    spec = kernel_spectrum(X @ X.T)
    fig = plot_spectrum(spec)
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), spec.eigenvalues[spec.eigenvalues > 0])
    spectra = weight_spectra(make_cnn_bn())
    fig = plot_spectrum(spectra, kind="density")
    assert [line.get_label() for line in fig.axes[0].lines] == list(spectra)
    values = (1 - rng.uniform(size=2000)) ** (-1 / 1.5)
    fig = plot_spectrum(values, kind="density", fit=fit_power_law(values))
    assert fig.axes[0].lines[-1].get_label().startswith("power law, alpha=")
    with pytest.raises(ValueError, match="kind"):
        plot_spectrum(values, kind="bars")
    _png(fig)
