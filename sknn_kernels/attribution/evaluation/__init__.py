"""Attribution quality: backdoor forensics, mislabel detection and the linear datamodeling score.

Each function scores attributions given as an ``(n_test, n_train)`` array (from
:meth:`KernelSurrogateClassifier.attribute <sknn_kernels.KernelSurrogateClassifier.attribute>`,
:meth:`InfluenceAttributor.attribute <sknn_kernels.attribution.influence.InfluenceAttributor.attribute>`
or any other method), so kernels and attribution methods are compared on the same ground
truth:

* :func:`poison` / :func:`add_trigger` plant a backdoor; :func:`attack_success` and
  :func:`poison_recall` say whether a model reproduces it and whether its attributions point
  at the poisoned training samples;
* :func:`flip_labels`, :func:`self_attribution` and :func:`mislabel_detection` rank training
  samples to find flipped labels;
* :func:`retrain_on_subsets` and :func:`linear_datamodeling_score` measure how well summed
  attributions predict the outputs of models retrained on random subsets (LDS);
* :func:`explanation_overlap`, :func:`kernel_neighbours`, :func:`repeated_proponents` and
  :func:`relative_attributions` say whether explanations depend on the sample explained.
"""

from ._diversity import (
    explanation_overlap,
    kernel_neighbours,
    relative_attributions,
    repeated_proponents,
)
from ._lds import linear_datamodeling_score, retrain_on_subsets
from ._mislabel import flip_labels, mislabel_detection, self_attribution
from ._poison import add_trigger, attack_success, poison, poison_recall

__all__ = [
    "add_trigger",
    "attack_success",
    "explanation_overlap",
    "flip_labels",
    "kernel_neighbours",
    "linear_datamodeling_score",
    "mislabel_detection",
    "poison",
    "poison_recall",
    "relative_attributions",
    "repeated_proponents",
    "retrain_on_subsets",
    "self_attribution",
]
