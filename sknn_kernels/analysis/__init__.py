"""The papers' other questions about a network: seed variability, distribution shift and spectra.

:mod:`~sknn_kernels.analysis.variability` (ensembles of seeds, the α-trimming level),
:mod:`~sknn_kernels.analysis.shift` (two-sample tests in embedding space),
:mod:`~sknn_kernels.analysis.spectral` and :mod:`~sknn_kernels.analysis.spectral_evolution`
(kernel and weight spectra, across training).
"""
