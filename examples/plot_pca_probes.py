"""
Per-layer PCA probes and neural collapse
========================================

How many principal components does each layer of a trained network need before
k-NN, nearest-class-centre (NCC) and linear probes reach their full-width accuracy,
and from which layer on is the class mean a sufficient statistic (neural collapse)?
"""

import os

from sknn_kernels import EmbeddingExtractor, PCAProbe
from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
from sknn_kernels.metrics import collapse_onset, neural_collapse
from sknn_kernels.plotting import plot_explained_variance, plot_probe_curves

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

data = load_digits_images()
X, y = (data.X_train[:400], data.y_train[:400]) if QUICK else (data.X_train, data.y_train)
net = train_reference_network(make_mlp, X, y, epochs=5 if QUICK else 40, seed=0)

# %%
# Probe every ReLU output of the MLP
layers = [name for name, module in net.named_modules() if module.__class__.__name__ == "ReLU"]
probe = PCAProbe(
    net,
    layers=layers,
    probe_components=(1, 2, 5, 10, 20, 50) if not QUICK else (1, 5, 20),
    cv=3,
    random_state=0,
).fit(X, y)
needed = probe.components_needed(score_fraction=0.99)  # a dict of arrays, like cv_results_
for layer, name, k, explained in zip(
    needed["layer"], needed["probe"], needed["n_components"], needed["explained_variance"]
):
    print(f"layer {layer}, {name} probe: {k} components ({explained:.0%} of the variance)")

# %%
# NC1 per layer: within-class variability relative to between-class spread
extractor = EmbeddingExtractor(net, layers=layers).fit(X)
Z = extractor.transform(X)
for layer, cols in extractor.feature_slices_.items():
    print(f"layer {layer}: NC1 = {neural_collapse(Z[:, cols], y).nc1:.3f}")
print("collapse begins at layer:", collapse_onset(probe))

fig = plot_probe_curves(probe)
fig2 = plot_explained_variance(probe)
