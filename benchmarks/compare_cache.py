"""The main job's comparison before/after the fold-kernel cache, timed in one process.

*Before*: what ``compare_surrogates`` did up to this change, one ``cross_validate`` of a
``Pipeline(NTKFeaturizer, estimator)`` per kernel x estimator (each kernel recomputed for every
estimator, the network run by every scorer). *After*: ``compare_surrogates`` (each kernel once
per fold, the network once), then with ``memory=`` twice (the second run reads every fold kernel
back). Data and network are the CLI's default digits job (a CNN on 8x8 digits, 30 epochs).

    python benchmarks/compare_cache.py                     # the default job's comparison
    python benchmarks/compare_cache.py --max-train 400     # a quick one
"""

import argparse
import tempfile
import time
import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_validate

from sknn_kernels import compare_surrogates
from sknn_kernels.app.compare import make_surrogate_pipeline
from sknn_kernels.datasets import load_digits_images, make_cnn, train_reference_network
from sknn_kernels.metrics import make_faithfulness_scorer

KERNELS = ("pntk", "trntk", "ck", "embedding", "proj-pntk")
ESTIMATORS = ("kglm", "kglm-logits", "ncc", "knn", "svc")


def before(net, X, y, cv, options):
    """The pre-cache comparison: one cross_validate per kernel x estimator."""
    scoring = {
        "accuracy": "accuracy",
        "tau": make_faithfulness_scorer(net, "kendall", **options["forward"]),
        "tad": make_faithfulness_scorer(net, "accuracy_difference", **options["forward"]),
    }
    taus = []
    for kernel in options["kernels"]:
        for name in options["estimators"]:
            pipe = make_surrogate_pipeline(net, kernel, name, random_state=0, **options["forward"])
            params = {"estimator__network_X": X.reshape(len(X), 1, 8, 8)}
            params = params if name == "kglm-logits" else None
            res = cross_validate(pipe, X, y, cv=cv, scoring=scoring, params=params)
            taus.append(np.nanmean(res["test_tau"]))
    return np.array(taus)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS))
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
    data = load_digits_images(random_state=0)
    X, y = data.X_train, data.y_train
    if args.max_train:
        keep = np.sort(np.random.default_rng(0).choice(len(X), args.max_train, replace=False))
        X, y = X[keep], y[keep]
    net = train_reference_network(make_cnn, X, y, epochs=30, seed=0, input_shape=(1, 8, 8))
    forward = {"device": "cpu", "input_shape": (1, 8, 8)}
    cv = StratifiedKFold(args.cv)
    options = {"kernels": args.kernels, "estimators": args.estimators, "forward": forward}
    common = {
        "kernels": args.kernels,
        "estimators": args.estimators,
        "cv": cv,
        "featurizer_params": forward,
        "random_state": 0,
    }
    times = {}
    t0 = time.perf_counter()
    old = before(net, X, y, cv, options)
    times["before (cross_validate per pair)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = compare_surrogates(net, X, y, **common)
    times["after (kernels once per fold)"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        compare_surrogates(net, X, y, memory=cache, **common)
        times["after, memory= first run"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = compare_surrogates(net, X, y, memory=cache, **common)
        times["after, memory= rerun"] = time.perf_counter() - t0
    same = np.allclose(old, new["tau_mean"], equal_nan=True) and np.array_equal(
        new["tau_mean"], again["tau_mean"], equal_nan=True
    )
    n_pairs = len(args.kernels) * len(args.estimators)
    print(
        f"digits CNN, {len(y)} samples, {args.cv} folds, {len(args.kernels)} kernels x "
        f"{len(args.estimators)} estimators ({n_pairs} pairs); same tau before/after: {same}"
    )
    base = times["before (cross_validate per pair)"]
    for name, seconds in times.items():
        print(f"{name:36s} {seconds:8.1f} s   {base / seconds:5.1f}x")


if __name__ == "__main__":
    main()
