"""Attributions of predictions to training samples, and the tests of whether they predict retraining.

:mod:`~sknn_kernels.attribution.influence` holds :class:`~sknn_kernels.InfluenceAttributor`;
:mod:`~sknn_kernels.attribution.evaluation` the ground truths (poisoning, flipped labels, the
linear datamodeling score) on which any attribution, the surrogates' included, is scored.
"""
