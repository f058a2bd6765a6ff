"""Figures of results dicts: probes, spectra, surrogates, input shares, PIT, concepts (extra ``plot``).

Every function draws on a given ``ax`` or on a new ``matplotlib.figure.Figure``
(created without pyplot, so no window ever opens and no backend is needed) and
returns the Figure; save it with ``fig.savefig(path)``.
"""

from ._representations import (
    plot_ensemble_convergence,
    plot_explained_variance,
    plot_probe_curves,
    plot_spectral_evolution,
    plot_spectrum,
    plot_two_sample,
)
from ._shares import plot_concepts, plot_input_shares, plot_pit_histogram
from ._surrogates import (
    plot_attribution_grid,
    plot_attribution_lds,
    plot_faithfulness,
    plot_output_scatter,
    plot_poison_grid,
    plot_probability_scatter,
    plot_relative_loss,
)

__all__ = [
    "plot_attribution_grid",
    "plot_attribution_lds",
    "plot_concepts",
    "plot_ensemble_convergence",
    "plot_explained_variance",
    "plot_faithfulness",
    "plot_input_shares",
    "plot_output_scatter",
    "plot_pit_histogram",
    "plot_poison_grid",
    "plot_probability_scatter",
    "plot_probe_curves",
    "plot_relative_loss",
    "plot_spectral_evolution",
    "plot_spectrum",
    "plot_two_sample",
]
