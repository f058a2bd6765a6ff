"""
Spectra across training: small-learning-rate SGD against Adam
=============================================================

Wang et al. ("Spectral evolution and invariance in linear-width neural networks",
NeurIPS 2023) prove that with a small learning rate the bulk of the weight, conjugate
kernel (CK) and neural tangent kernel (NTK) spectra stays where it was at
initialisation, while adaptive optimisers such as Adam move the spectra and give them
heavy tails. Here two copies of one MLP (same initialisation, same mini-batches) are
trained on scikit-learn's digits, one with plain SGD at a small learning rate and one
with Adam, and their checkpoints are compared: eigenvalues of ``WᵀW`` against the
Marchenko–Pastur bulk edge, the power-law exponent of the spectrum's tail, and how far
the CK and NTK on a fixed batch of test digits move from their initial values.
"""

import copy
import os

import numpy as np
import torch

from sknn_kernels.analysis.spectral_evolution import spectral_evolution
from sknn_kernels.datasets import load_digits_images, make_mlp
from sknn_kernels.plotting import plot_spectral_evolution

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

# %%
# Training with checkpoints
# -------------------------
# A wide-ish MLP: the hidden width (256) is of the order of the number of training
# images, the linear-width regime of the paper.
data = load_digits_images()
n_train = 300 if QUICK else len(data.X_train)
X = torch.from_numpy(data.X_train[:n_train])
y = torch.from_numpy(data.y_train[:n_train])
width = 32 if QUICK else 256
epochs = 2 if QUICK else 10
initial = make_mlp(64, 10, hidden=(width, width), seed=0)


def train(optimizer_name, lr):
    net = copy.deepcopy(initial)
    opt = (torch.optim.SGD if optimizer_name == "sgd" else torch.optim.Adam)(
        net.parameters(), lr=lr
    )
    generator = torch.Generator().manual_seed(0)  # the same mini-batches for both runs
    checkpoints = [copy.deepcopy(net.state_dict())]
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=generator).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()
        checkpoints.append(copy.deepcopy(net.state_dict()))
    accuracy = (net(torch.from_numpy(data.X_test)).argmax(1).numpy() == data.y_test).mean()
    return checkpoints, accuracy


# %%
# Spectra of every checkpoint
# ---------------------------
batch = data.X_test[: 40 if QUICK else 200]
labels = data.y_test[: len(batch)]
evolutions = {}
for name, lr in (("SGD, lr=0.01", 0.01), ("Adam, lr=0.001", 0.001)):
    checkpoints, accuracy = train("sgd" if name.startswith("SGD") else "adam", lr)
    evo = spectral_evolution(
        checkpoints, batch, labels, template=initial, steps=np.arange(epochs + 1)
    )
    evolutions[name] = evo
    W = evo.weights["2.weight"]  # the hidden-to-hidden matrix
    print(f"{name}: test accuracy {accuracy:.3f}")
    print(
        f"  hidden weights: ‖W−W0‖/‖W0‖ = {W.distance[-1]:.3f}, outliers above the MP edge "
        f"{W.n_outliers[0]} -> {W.n_outliers[-1]}, tail exponent {W.alpha[0]:.2f} -> "
        f"{W.alpha[-1]:.2f}"
    )
    for kind, rec in evo.kernels.items():
        print(
            f"  {kind}: ‖K−K0‖/‖K0‖ = {rec.distance[-1]:.3f}, alignment with K0 "
            f"{rec.alignment[-1]:.3f}, top eigenvector vs labels "
            f"{rec.label_alignment[0]:.2f} -> {rec.label_alignment[-1]:.2f}"
        )

fig = plot_spectral_evolution(evolutions, matrix="2.weight", kernel="ntk")
