"""The transformers: network + X -> embeddings, kernels ``K(X, X_fit)`` or layer probes.

:class:`~sknn_kernels.EmbeddingExtractor` (activations of named layers),
:class:`~sknn_kernels.NTKFeaturizer` (NTK-type kernels, on top of :mod:`sknn_kernels.ntk`) and
:class:`~sknn_kernels.PCAProbe` (how many principal components each layer needs).
"""
