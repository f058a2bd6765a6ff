"""Faithfulness of kernel surrogates to the network they imitate, and neural-collapse measures."""

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

__all__ = [
    "collapse_onset",
    "neural_collapse",
    "accuracy_difference",
    "kendall_faithfulness",
    "logit_r2",
    "make_faithfulness_scorer",
    "misclassification_overlap",
    "network_outputs",
    "network_proba",
]
