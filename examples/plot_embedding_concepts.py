"""
Concepts in a CNN's embedding space: directions and clusters explained by samples and metadata
==============================================================================================

Embeddings as automated feature engineering: a small CNN trained on Fashion-MNIST (read
offline from Debian's ``dataset-fashion-mnist`` package; scikit-learn's digits when it is
absent) maps each image to its penultimate layer. Without any label,
:func:`~sknn_kernels.analysis.concepts.embedding_concepts` finds the leading principal
directions and the k-means clusters of that space, and explains each concept by its extreme
samples (shown as images) and by its association with metadata: the class label, the amount
of ink, the network's confidence and a "generated" flag marking crude synthetic images
(class-mean images plus pixel noise). The same call works on sentence embeddings (MiniLM on
the tweets, with the text length as metadata); whether real and generated samples separate
is then a two-sample test (:func:`~sknn_kernels.analysis.shift.mmd_test`).
"""

import os

import numpy as np

from sknn_kernels import EmbeddingExtractor
from sknn_kernels.analysis.concepts import embedding_concepts
from sknn_kernels.analysis.shift import mmd_test
from sknn_kernels.datasets import (
    load_digits_images,
    load_fashion_mnist,
    make_cnn,
    train_reference_network,
)
from sknn_kernels.metrics import network_proba
from sknn_kernels.plotting import plot_concepts

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))
rng = np.random.default_rng(0)

# %%
# A CNN and its penultimate-layer embeddings
# ------------------------------------------
try:
    data = load_fashion_mnist(n_train=400 if QUICK else 3000, n_test=300 if QUICK else 1000)
    names, side = data.target_names, 28
except FileNotFoundError:  # the data package is absent: the same study on 8×8 digits
    data = load_digits_images()
    data.input_shape = (1, 8, 8)
    names, side = [str(c) for c in range(10)], 8
shape = data.input_shape
net = train_reference_network(
    make_cnn, data.X_train, data.y_train, input_shape=shape, epochs=2 if QUICK else 8, seed=0
)

# crude "generated" images: a class's mean image plus pixel noise
n_gen = 60 if QUICK else 200
labels_gen = rng.integers(0, 10, n_gen)
means = np.stack([data.X_train[data.y_train == c].mean(0) for c in range(10)])
X_gen = np.clip(means[labels_gen] + rng.normal(0, 0.15, (n_gen, means.shape[1])), 0, 1)
X = np.concatenate([data.X_test, X_gen.astype(np.float32)])
proba = network_proba(net, X, input_shape=shape)
metadata = {
    "label": np.array([names[c] for c in np.r_[data.y_test, labels_gen]], dtype=object),
    "ink": X.mean(1),
    "confidence": proba.max(1),
    "generated": np.r_[np.zeros(len(data.X_test), bool), np.ones(n_gen, bool)],
}
Z = EmbeddingExtractor(net, input_shape=shape).fit(data.X_train).transform(X)
print(f"embeddings: {Z.shape}")

# %%
# Concepts: five directions and eight clusters
# --------------------------------------------
concepts = embedding_concepts(Z, metadata, n_components=5, n_clusters=8, random_state=0)
for i in range(len(concepts["concept"])):
    print(
        f"{concepts['concept'][i]:>9} ({concepts['weight'][i]:.0%}): "
        f"label η {concepts['assoc_label'][i]:.2f} ({concepts['favours_label'][i]}), "
        f"ink r {concepts['assoc_ink'][i]:+.2f}, "
        f"confidence r {concepts['assoc_confidence'][i]:+.2f}, "
        f"generated r {concepts['assoc_generated'][i]:+.2f}"
    )

# %%
# Real against generated: a two-sample test in the same space
# -----------------------------------------------------------
real, fake = Z[: len(data.X_test)][:n_gen], Z[len(data.X_test) :]
mmd = mmd_test(real, fake, n_permutations=100 if QUICK else 500, random_state=0)
print(f"MMD² real vs generated: {mmd.statistic:.4f}, p = {mmd.pvalue:.3g}")

# %%
# Figures: the associations, and the extreme samples of the first two directions
# ------------------------------------------------------------------------------
from matplotlib.figure import Figure

fig_assoc = plot_concepts(concepts)

fig = Figure(figsize=(8, 4), layout="constrained")
axes = fig.subplots(4, 5)
for row, (concept, end) in enumerate([(0, "top"), (0, "bottom"), (1, "top"), (1, "bottom")]):
    for col, idx in enumerate(concepts[end][concept][:5]):
        ax = axes[row, col]
        ax.imshow(X[idx].reshape(side, side), cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(metadata["label"][idx], fontsize=6)
    axes[row, 0].set_ylabel(f"{concepts['concept'][concept]} {end}", fontsize=7)
