"""
Choosing the most faithful kernel with GridSearchCV
===================================================

A surrogate should rank test points the way the network does. ``make_faithfulness_scorer``
is an sklearn scorer that computes the network's probabilities on each scored fold and
returns the Kendall tau between the network's and the surrogate's probability of the true
class, so ``GridSearchCV`` can select the kernel and regularisation that imitate the
network best — not merely the most accurate ones.
"""

import os

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
from sknn_kernels.metrics import make_faithfulness_scorer

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))

data = load_digits_images()
n = 240 if QUICK else 900
X, y = data.X_train[:n], data.y_train[:n]
net = train_reference_network(
    make_mlp, data.X_train, data.y_train, epochs=5 if QUICK else 30, seed=0
)

pipe = Pipeline(
    [
        ("kernel", NTKFeaturizer(net, normalize="cosine")),
        ("glm", KernelSurrogateClassifier()),
    ]
)
grid = {
    "kernel__kernel": ["pntk", "trace", "ck", "embedding"],
    "glm__alpha": [1e-4, 1e-2] if QUICK else [1e-5, 1e-4, 1e-3, 1e-2],
}
search = GridSearchCV(
    pipe,
    grid,
    scoring={"tau": make_faithfulness_scorer(net), "accuracy": "accuracy"},
    refit="tau",
    cv=3,
)
search.fit(X, y)

# %%
# Faithfulness (tau) and accuracy of every candidate, best first
results = search.cv_results_
order = np.argsort(-results["mean_test_tau"])
for i in order:
    params = results["params"][i]
    print(
        f"{params['kernel__kernel']:>9}  alpha={params['glm__alpha']:<7g}"
        f"tau={results['mean_test_tau'][i]:.3f}  accuracy={results['mean_test_accuracy'][i]:.3f}"
    )
print("most faithful:", search.best_params_)
