"""Faithfulness of kernel surrogates to the network they imitate (classification and regression),
and neural-collapse measures."""

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
    "relative_test_loss",
]
