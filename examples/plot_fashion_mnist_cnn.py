"""
Fashion-MNIST CNN: trace-NTK surrogate and projected kernels
============================================================

A small CNN trained on a subset of Fashion-MNIST (read offline from Debian's
``dataset-fashion-mnist`` package), its cosine trace NTK and its JL-projected
variant, each imitated by a kernel GLM. Skipped when the data package is absent.
"""

import os

import numpy as np
from sklearn.pipeline import make_pipeline

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from sknn_kernels.datasets import load_fashion_mnist, make_cnn, train_reference_network
from sknn_kernels.metrics import kendall_faithfulness, network_proba

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

try:
    data = load_fashion_mnist(n_train=300 if QUICK else 3000, n_test=100 if QUICK else 1000)
except FileNotFoundError as exc:  # the data package is not installed
    print(exc)
    raise SystemExit(0) from None

shape = data.input_shape
net = train_reference_network(
    make_cnn, data.X_train, data.y_train, input_shape=shape, epochs=2 if QUICK else 8, seed=0
)
proba_net = network_proba(net, data.X_test, input_shape=shape)
print(f"CNN test accuracy: {np.mean(proba_net.argmax(1) == data.y_test):.3f}")

for name, featurizer in [
    ("trNTK", NTKFeaturizer(net, kernel="trace", normalize="cosine", input_shape=shape)),
    (
        "proj-trNTK",
        NTKFeaturizer(
            net,
            kernel="trace",
            normalize="cosine",
            projection_dim=256 if QUICK else 2048,
            random_state=0,
            input_shape=shape,
        ),
    ),
]:
    surrogate = make_pipeline(featurizer, KernelSurrogateClassifier(alpha=1e-4)).fit(
        data.X_train, data.y_train
    )
    tau = kendall_faithfulness(data.y_test, proba_net, surrogate.predict_proba(data.X_test))
    print(
        f"{name:>10}: surrogate accuracy {surrogate.score(data.X_test, data.y_test):.3f}, Kendall tau {tau:.3f}"
    )
