"""Estimators on precomputed kernels: the kGLM, kernel ridge, nearest centroid and k-NN.

Each takes ``K(X, X_fit)`` (a featurizer's output) and decomposes its predictions into
per-training-sample attributions. ``_kernel_base`` holds what they share; ``_solvers`` the ridge
and L-BFGS solvers.
"""
