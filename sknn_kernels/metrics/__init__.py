"""Faithfulness of kernel surrogates to the network they imitate (classification and regression),
neural-collapse measures, and the calibration of binned regression (PIT, photo-z metrics)."""

from ._calibration import (
    binned_point_estimates,
    binned_regression_metrics,
    photoz_metrics,
    pit_histogram,
    pit_ks_distance,
    pit_values,
)
from ._collapse import collapse_onset, neural_collapse
from ._faithfulness import (
    accuracy_difference,
    kendall_faithfulness,
    logit_r2,
    make_faithfulness_scorer,
    misclassification_overlap,
    network_outputs,
    network_proba,
)
from ._regression import (
    kendall_outputs,
    make_regression_faithfulness_scorer,
    output_r2,
    relative_test_loss,
)

__all__ = [
    "accuracy_difference",
    "binned_point_estimates",
    "binned_regression_metrics",
    "collapse_onset",
    "kendall_faithfulness",
    "kendall_outputs",
    "logit_r2",
    "make_faithfulness_scorer",
    "make_regression_faithfulness_scorer",
    "misclassification_overlap",
    "network_outputs",
    "network_proba",
    "neural_collapse",
    "output_r2",
    "photoz_metrics",
    "pit_histogram",
    "pit_ks_distance",
    "pit_values",
    "relative_test_loss",
]
