"""Attributions of predictions to training samples and to the network's inputs.

:mod:`~sknn_kernels.attribution.influence` holds :class:`~sknn_kernels.InfluenceAttributor`;
:mod:`~sknn_kernels.attribution.evaluation` the ground truths (poisoning, flipped labels, the
linear datamodeling score) on which any attribution, the surrogates' included, is scored;
:mod:`~sknn_kernels.attribution.input_shares` (:class:`~sknn_kernels.InputShares`) and
:mod:`~sknn_kernels.attribution.branches` say which input (or channel group) drives a prediction.
"""
