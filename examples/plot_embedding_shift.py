"""
Distribution shift and real-vs-generated separability in a network's embeddings
================================================================================

Vargas et al. use the embeddings of a trained network to tell a shifted test set from
the training distribution (arXiv 2310.13836) and real from generated content
(arXiv 2408.10437). Here the network is a small MLP trained on scikit-learn's digits and
the embedding is its penultimate layer. Half of the test set is compared with the other
half (no shift: the tests must not fire), with the other half corrupted by pixel noise or
rotated, and with images sampled from a Gaussian mixture fitted to the training pixels
(a simple generative model). Two tests: the unbiased kernel MMD with a permutation
p-value, and a classifier two-sample test (a cross-validated linear probe); the PCA
view shows what they see.
"""

import os

import numpy as np
from scipy.ndimage import rotate
from sklearn.mixture import GaussianMixture

from sknn_kernels import EmbeddingExtractor
from sknn_kernels.analysis.shift import classifier_two_sample_test, mmd_test, pca_view
from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
from sknn_kernels.plotting import plot_two_sample

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))
rng = np.random.default_rng(0)

# %%
# Network and test halves
# -----------------------
data = load_digits_images()
n_train = 300 if QUICK else len(data.X_train)
net = train_reference_network(
    make_mlp, data.X_train[:n_train], data.y_train[:n_train], epochs=2 if QUICK else 30, seed=0
)
order = rng.permutation(len(data.X_test))
half = 40 if QUICK else len(order) // 2
A, B = data.X_test[order[:half]], data.X_test[order[half : 2 * half]]


def noisy(X, scale=0.25):
    return np.clip(X + rng.normal(scale=scale, size=X.shape), 0, 1).astype(np.float32)


def rotated(X, degrees=20):
    images = X.reshape(-1, 8, 8)
    out = [rotate(img, degrees, reshape=False, order=1, mode="constant") for img in images]
    return np.clip(np.stack(out).reshape(len(X), -1), 0, 1).astype(np.float32)


# A simple generative model of the training images: its samples look like blurry digits.
gmm = GaussianMixture(n_components=10, covariance_type="full", reg_covar=1e-3, random_state=0).fit(
    data.X_train
)
generated = np.clip(gmm.sample(half)[0], 0, 1).astype(np.float32)

comparisons = {
    "no shift (test half vs half)": B,
    "pixel noise": noisy(B),
    "rotation 20°": rotated(B),
    "Gaussian-mixture samples": generated,
}

# %%
# Both tests, in the embedding space and on the raw pixels
# --------------------------------------------------------
# ``features=`` embeds the pooled samples with the network before each test; the same
# tests on the raw pixels show what the embedding keeps and what it discards.
embed = EmbeddingExtractor(net)
n_perm = 49 if QUICK else 500
probe_perm = 2 if QUICK else 100
results = {}
print(f"{'comparison':28s} {'space':>10s} {'MMD²':>8s} {'p':>6s} {'probe AUC':>10s} {'p':>6s}")
for name, other in comparisons.items():
    for space, features in (("embedding", embed), ("pixels", None)):
        mmd = mmd_test(A, other, features=features, n_permutations=n_perm, random_state=0)
        c2st = classifier_two_sample_test(
            A,
            other,
            features=features,
            cv=2 if QUICK else 3,
            n_permutations=probe_perm,
            random_state=0,
        )
        results[name, space] = (mmd, c2st)
        print(
            f"{name:28s} {space:>10s} {mmd.statistic:8.4f} {mmd.pvalue:6.3f} "
            f"{c2st.roc_auc:10.3f} {c2st.pvalue:6.3f}"
        )

# %%
# What the tests see
# ------------------
# Rotated digits move along the leading principal axes of the embeddings. The mixture's
# samples are easy to spot on the raw pixels (noise where real digits have blank
# borders), but the network maps them close to real digits: in its embedding they are
# much harder to tell apart.
figs = []
for name in ("rotation 20°", "Gaussian-mixture samples"):
    mmd, c2st = results[name, "embedding"]
    view = pca_view(A, comparisons[name], features=embed)
    figs.append(plot_two_sample(view, mmd, c2st, names=("test digits", name)))
