"""
Explaining a digits MLP with a pNTK kernel surrogate
====================================================

Train a small MLP on scikit-learn's digits, turn it into its cosine-normalised
pseudo-NTK (``NTKFeaturizer``), and fit a kernel general linear model
(``KernelSurrogateClassifier``) on that kernel. The surrogate predicts like the
network, and each of its predictions decomposes exactly over the training images:
the top proponents and opponents are shown with the share of attribution mass they
hold (attributions of kernel models are not sparse).
"""

import os

import numpy as np
from sklearn.pipeline import make_pipeline

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
from sknn_kernels.metrics import accuracy_difference, kendall_faithfulness, network_proba
from sknn_kernels.plotting import plot_attribution_grid

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

# %%
# Data and network
# ----------------
# 8×8 digit images as 64 features; the network is a plain torch MLP.
data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
if QUICK:
    X_train, y_train = X_train[:300], y_train[:300]
    X_test, y_test = X_test[:100], y_test[:100]
net = train_reference_network(make_mlp, X_train, y_train, epochs=5 if QUICK else 30, seed=0)
proba_net = network_proba(net, X_test)
print(f"network test accuracy: {np.mean(proba_net.argmax(1) == y_test):.3f}")

# %%
# A pNTK surrogate
# ----------------
# The featurizer emits K(X, X_train); the kernel GLM is fitted on the true labels.
surrogate = make_pipeline(
    NTKFeaturizer(net, kernel="pntk", normalize="cosine"),
    KernelSurrogateClassifier(alpha=1e-4),
)
surrogate.fit(X_train, y_train)
proba_sur = surrogate.predict_proba(X_test)
tau = kendall_faithfulness(y_test, proba_net, proba_sur)
tad = accuracy_difference(y_test, proba_net.argmax(1), surrogate.predict(X_test))
print(
    f"surrogate accuracy: {surrogate.score(X_test, y_test):.3f}  Kendall tau: {tau:.3f}  TAD: {tad:+.3f}"
)

# %%
# Which training images drive each prediction?
# --------------------------------------------
# ``explain`` ranks training points by W[c, i] K(x, x_i) for the predicted class c.
K_test = surrogate[0].transform(X_test[:5])
explanation = surrogate[-1].explain(K_test, top_k=5)
print(
    "share of the attribution mass held by the top-5 proponents:",
    np.round(explanation.proponent_share, 3),
)
fig = plot_attribution_grid(X_test[:5], X_train, explanation, image_shape=(8, 8))
