"""Kernel surrogates at data-set scale: the kGLM on features vs on the kernel vs sklearn.

Not a test. Synthetic features shaped like projected pNTK features (rows scaled to unit
norm, i.e. the cosine kernel), 10 classes:

* ``fit``: ``KernelSurrogateClassifier(kernel="linear")`` on ``n x k`` features (the primal
  solve, ``surrogates/_primal.py``) against ``LogisticRegression`` on the same features at
  equal objective (sklearn's ``C = 1 / (alpha * n)``) and against the dual fit on
  ``K = X X^T`` (timed at ``--dual-n`` samples and extrapolated as ``n^2`` per iteration);
  peak RSS from ``resource.getrusage``.
* ``dask``: the same fit with the features as a ``dask.array`` on a 2-worker
  ``LocalCluster`` against the serial fit (``--n 1000000`` for the issue's million rows).

Usage::

    python benchmarks/bench_scale.py fit --n 20000 --k 512
    python benchmarks/bench_scale.py dask --n 1000000 --k 512

``--threads`` (default 1) sets torch's and the BLAS thread counts for every solver alike.
"""

import argparse
import resource
import time

import numpy as np


def features(n, k, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, k))
    y = rng.integers(0, n_classes, n)
    X = centres[y] * 0.15 + rng.normal(size=(n, k)) / np.sqrt(k)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def bench_fit(n, k, alpha, dual_n, penalty):
    from sklearn.linear_model import LogisticRegression

    from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier

    X, y = features(n, k)
    print(f"n={n} k={k} alpha={alpha} load={load()} rss_after_data={peak_rss_gb():.2f} GB")
    t = time.perf_counter()
    params = {"alpha": alpha, "penalty": penalty, "device": "cpu"}
    clf = KernelSurrogateClassifier(kernel="linear", **params).fit(X, y)
    t_primal = time.perf_counter() - t
    obj = clf.objective(X, y)
    print(
        f"kGLM primal: {t_primal:.2f} s, {clf.n_iter_} it, objective {obj:.8f}, "
        f"peak RSS {peak_rss_gb():.2f} GB, load={load()}"
    )
    if penalty == "rkhs":  # LogisticRegression on X is the kGLM with penalty="rkhs"
        t = time.perf_counter()
        lr = LogisticRegression(C=1 / (alpha * n), tol=1e-8, max_iter=5000).fit(X, y)
        t_lr = time.perf_counter() - t
        # sklearn's W is Psi: its objective on our scale (mean loss + alpha/2 ||Psi||^2)
        P = lr.predict_proba(X)
        obj_lr = -np.log(P[np.arange(n), y]).mean() + 0.5 * alpha * (lr.coef_**2).sum()
        print(
            f"sklearn LogisticRegression: {t_lr:.2f} s, objective {obj_lr:.8f} "
            f"(kGLM - sklearn = {obj - obj_lr:.2e}), peak RSS {peak_rss_gb():.2f} GB, "
            f"load={load()}"
        )
    if dual_n:
        Xs, ys = X[:dual_n], y[:dual_n]
        t = time.perf_counter()
        dual = KernelSurrogateClassifier(**params).fit(Xs @ Xs.T, ys)
        t_dual = time.perf_counter() - t
        t = time.perf_counter()
        small = KernelSurrogateClassifier(kernel="linear", **params).fit(Xs, ys)
        t_small = time.perf_counter() - t
        gap = small.objective(Xs, ys) - dual.objective(Xs @ Xs.T, ys)
        print(
            f"dual at n={dual_n}: {t_dual:.2f} s ({dual.n_iter_} it) vs primal {t_small:.2f} s "
            f"({small.n_iter_} it), objective primal - dual {gap:.2e}; dual extrapolated to n={n} at equal iterations: "
            f"{t_dual * (n / dual_n) ** 2:.0f} s, load={load()}"
        )


def bench_dask(n, k, alpha, chunk, penalty):
    import dask.array as da
    from distributed import Client, LocalCluster

    from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier

    X, y = features(n, k)
    X = X.astype(np.float32)  # halve the memory; blocks are solved in float64
    print(f"n={n} k={k} load={load()}")
    t = time.perf_counter()
    serial = KernelSurrogateClassifier(
        kernel="linear", alpha=alpha, penalty=penalty, device="cpu"
    ).fit(X, y)
    t_serial = time.perf_counter() - t
    print(f"serial: {t_serial:.1f} s ({serial.n_iter_} it), peak RSS {peak_rss_gb():.2f} GB")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        Xd = da.from_array(X, chunks=(chunk, k)).persist()
        t = time.perf_counter()
        clf = KernelSurrogateClassifier(
            kernel="linear", alpha=alpha, penalty=penalty, device="cpu"
        ).fit(Xd, y)
        t_dask = time.perf_counter() - t
    rel = np.abs(clf.coef_ - serial.coef_).max() / np.abs(serial.coef_).max()
    Xt = X[:1000]
    agree = np.mean(clf.predict(Xt) == serial.predict(Xt))
    print(
        f"dask LocalCluster(2 workers): {t_dask:.1f} s ({clf.n_iter_} it); "
        f"max rel coef diff {rel:.2e}; predictions agree {agree:.4f}; "
        f"peak RSS {peak_rss_gb():.2f} GB, load={load()}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["fit", "dask"])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--dual-n", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=62500)
    parser.add_argument("--penalty", choices=["rkhs", "l2"], default="rkhs")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    # one thread each: on a loaded machine torch's thread pool waits dominate tiny ops
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.what == "fit":
        bench_fit(args.n, args.k, args.alpha, args.dual_n, args.penalty)
    else:
        bench_dask(args.n, args.k, args.alpha, args.chunk, args.penalty)
