"""
A skorch network end to end, persisted with joblib
==================================================

Train a classifier with skorch, freeze it with ``sklearn.frozen.FrozenEstimator`` so
that sklearn's ``clone`` (used by ``cross_validate`` and ``GridSearchCV``) keeps its
trained weights, fit a trace-NTK surrogate pipeline, and save / reload the whole
pipeline with joblib. The fitted pipeline holds no CUDA tensors, so a file written on a
GPU machine loads on a CPU-only one.
"""

import os
import tempfile

import joblib
import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from sknn_kernels.datasets import load_digits_images, make_mlp
from sknn_kernels.metrics import make_faithfulness_scorer

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

data = load_digits_images()
X, y = data.X_train, data.y_train
X_test, y_test = data.X_test, data.y_test
if QUICK:
    X, y = X[:300], y[:300]

torch.manual_seed(0)
net = NeuralNetClassifier(
    make_mlp(64, 10),
    criterion=torch.nn.CrossEntropyLoss,
    optimizer=torch.optim.Adam,
    lr=1e-2,
    max_epochs=5 if QUICK else 20,
    train_split=None,
    verbose=0,
)
net.fit(X.astype(np.float32), y)
print(f"skorch net test accuracy: {net.score(X_test.astype(np.float32), y_test):.3f}")

# %%
# Cross-validate a surrogate of the frozen net
frozen = FrozenEstimator(net)
pipe = make_pipeline(
    NTKFeaturizer(frozen, kernel="trace", normalize="cosine"), KernelSurrogateClassifier()
)
scores = cross_validate(
    pipe, X, y, cv=3, scoring={"accuracy": "accuracy", "tau": make_faithfulness_scorer(frozen)}
)
print(f"cv accuracy {scores['test_accuracy'].mean():.3f}, cv tau {scores['test_tau'].mean():.3f}")

# %%
# Persist and reload
pipe.fit(X, y)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "surrogate.joblib")
    joblib.dump(pipe, path)
    loaded = joblib.load(path)
same = np.array_equal(loaded.predict_proba(X_test[:50]), pipe.predict_proba(X_test[:50]))
print("reloaded pipeline gives identical probabilities:", same)
