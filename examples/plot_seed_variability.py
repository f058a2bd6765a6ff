"""
How many seeds? Training variability and the α-trimming level
=============================================================

Train the same small MLP on scikit-learn's digits with different seeds (they change the
initialisation and the order of the mini-batches). Their test accuracies barely differ,
but the distributions of their per-sample scores do. Banerjee et al. (arXiv 2406.08307)
measure this with the α-trimming level: the fraction of a model's score distribution
that must be trimmed away before it matches, within a Kolmogorov tolerance, the
distribution of an ensemble of other seeds. Adding seeds to the reference ensemble
makes it a better stand-in for "the" trained model, and the level of held-out seeds
settles: the size at which it settles answers "how many training runs are enough".
"""

import os

import numpy as np

from sknn_kernels.analysis.variability import compare_networks
from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
from sknn_kernels.plotting import plot_ensemble_convergence

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

# %%
# Seeds
# -----
# Everything is fixed except the seed.
data = load_digits_images()
X_train, y_train = data.X_train, data.y_train
if QUICK:
    X_train, y_train = X_train[:300], y_train[:300]
n_seeds = 4 if QUICK else 16
nets = [
    train_reference_network(make_mlp, X_train, y_train, epochs=2 if QUICK else 15, seed=seed)
    for seed in range(n_seeds)
]

# %%
# Accuracy, churn, calibration and the trimming level
# ---------------------------------------------------
# The score is each test point's probability of its true class. The paper estimates the
# model's and the reference's distributions on two independent halves of a large test set
# and uses a DKW-type sampling-noise tolerance; on the 450 test digits that tolerance
# (0.16 for halves of 225) exceeds the typical Kolmogorov distance between two seeds, so
# every level would be 0. Instead all models are scored on the same points (``split=False``:
# no sampling noise between them) with a tolerance of 0.03.
res = compare_networks(
    nets,
    data.X_test,
    data.y_test,
    tol=0.03,
    split=False,
    n_repeats=5 if QUICK else 30,
    random_state=0,
)
print(f"tolerance: {res.tol:.3f}   ensemble accuracy: {res.ensemble_accuracy:.3f}")
print("seed  accuracy  churn   ECE     trimming level")
for seed in range(n_seeds):
    print(
        f"{seed:4d}  {res.accuracy[seed]:.3f}     {res.churn[seed]:.3f}  "
        f"{res.ece[seed]:.3f}   {res.trimming_level[seed]:.3f}"
    )
print(
    f"accuracy spread: {np.ptp(res.accuracy):.3f}; "
    f"trimming-level spread: {np.ptp(res.trimming_level):.3f}"
)

# %%
# How many seeds make a reliable reference?
# -----------------------------------------
conv = res.convergence
for k, mean, std in zip(conv.sizes, conv.mean, conv.std):
    print(f"{k:2d} models in the reference: level {mean:.3f} ± {std:.3f}")
print(f"the curve stays within a band of 0.01 from {conv.stable_size} models on")
fig = plot_ensemble_convergence(conv)
