"""KernelSurrogateClassifier's L-BFGS against SGDClassifier(log_loss) on the same kernel.

Data: sklearn's digits, resampled with Gaussian pixel noise to n_train points; kernel:
cosine similarity (what NTKFeaturizer(normalize="cosine") emits). Both solvers fit the
same objective, one-vs-rest log-loss + alpha/2 ||W||^2 with class_weight="balanced"
(KernelSurrogateClassifier(multi_class="ovr", penalty="l2")), and both objective values
are evaluated by ``KernelSurrogateClassifier.objective``. Timed in one process, CPU.

    python benchmarks/bench_surrogate.py --sizes 2000 5000 10000
"""

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.metrics.pairwise import cosine_similarity

from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier


def digits_like(n, seed=0):
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(X), n)
    return X[idx] + rng.normal(0, 2.0, (n, X.shape[1])), y[idx]


def run(n, alpha, class_weight):
    X, y = digits_like(n)
    K = cosine_similarity(X)
    ours = KernelSurrogateClassifier(
        alpha=alpha, multi_class="ovr", class_weight=class_weight, device="cpu"
    )
    sgd = SGDClassifier(
        loss="log_loss", penalty="l2", alpha=alpha, class_weight=class_weight, random_state=0
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        ours.fit(K, y)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        sgd.fit(K, y)
        t_sgd = time.perf_counter() - t0
    warned = sorted(
        {
            type(w.message).__name__ + ":" + ("ours" if "L-BFGS" in str(w.message) else "sgd")
            for w in caught
        }
    )
    return {
        "n_train": n,
        "ours_s": t_ours,
        "sgd_s": t_sgd,
        "ratio_sgd_over_ours": t_sgd / t_ours,
        "ours_iter": ours.n_iter_,
        "sgd_epochs": sgd.n_iter_,
        "obj_ours": ours.objective(K, y),
        "obj_sgd": ours.objective(K, y, coef=sgd.coef_, intercept=sgd.intercept_),
        "acc_ours": ours.score(K, y),
        "acc_sgd": sgd.score(K, y),
        "warnings": ",".join(warned) or "-",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--class-weight", default="balanced", choices=["balanced", "none"])
    args = parser.parse_args()
    class_weight = None if args.class_weight == "none" else args.class_weight
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, alpha {args.alpha}, "
        f"class_weight {class_weight}"
    )
    header = None
    for n in args.sizes:
        row = run(n, args.alpha, class_weight)
        if header is None:
            header = list(row)
            print(" | ".join(header))
        print(
            " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()),
            flush=True,
        )


if __name__ == "__main__":
    main()
