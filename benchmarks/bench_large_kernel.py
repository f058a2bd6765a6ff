"""Out-of-core pNTK of a small CNN on Fashion-MNIST: serial vs a local Dask cluster.

Writes ``K(X, X)`` (``n × n``, float32) to a ``.npy`` memmap or a Zarr array with
``empirical_ntk(..., out=path)`` and reports wall time, tiles/s, kernel entries/s (the full
``n²`` entries; symmetric tiles are computed once) and peak resident memory of the calling
process (and of each Dask worker). The same call is then timed through
``joblib.parallel_config(backend="dask")`` on a ``LocalCluster`` of ``--workers`` processes with
one thread each, so the two figures come from one run.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``; the CNN is
``sknn_kernels.datasets.make_cnn((1, 28, 28), 10)`` (conv 16 → pool → conv 32 → pool → 64 → 10,
P = 105,866), untrained: the cost does not depend on the weights.

Examples
--------
python benchmarks/bench_large_kernel.py --n 4000 --engines serial dask      # ~2 x 1-2 min
python benchmarks/bench_large_kernel.py --n 20000 --engines serial --format zarr
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from joblib import parallel_config

from sknn_kernels.datasets import load_fashion_mnist, make_cnn
from sknn_kernels.ntk import empirical_ntk


def _peak_rss_mb():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited at fork)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _warm_up():
    import sknn_kernels.ntk  # noqa: F401  (torch and this package, on every worker)


def _cpu_seconds():
    return time.process_time()


def _run(net, X, path, args, n_jobs, client=None):
    cpu = client.run(_cpu_seconds) if client is not None else {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    K = empirical_ntk(
        net,
        X,
        input_shape=(1, 28, 28),
        device="cpu",
        block_size=args.block,
        batch_size=args.batch_size,
        out=path,
        n_jobs=n_jobs,
    )
    seconds = time.perf_counter() - t0
    # CPU seconds of the caller and the workers: on a shared machine, wall time depends on the
    # other jobs; CPU time measures the work each path does
    cpu_seconds = time.process_time() - cpu0
    if client is not None:
        cpu_seconds += sum(v - cpu[k] for k, v in client.run(_cpu_seconds).items())
    with open(path + ".tiles.jsonl") as fh:
        header = json.loads(fh.readline())
        tiles = sum(1 for _ in fh)
    n = len(X)
    return K, {
        "n": n,
        "block": header["block"],
        "tiles": tiles,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "tiles_per_s": round(tiles / seconds, 3),
        "entries_per_s": float(f"{n * n / seconds:.4g}"),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--engines", nargs="+", default=["serial", "dask"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--format", choices=["npy", "zarr"], default="npy")
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (serial)")
    parser.add_argument("--dir", default=None, help="where the kernels are written")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_fashion_mnist(n_train=args.n, n_test=1, random_state=0)
    X = data.X_train.astype(np.float32)
    net = make_cnn((1, 28, 28), 10)
    P = sum(p.numel() for p in net.parameters())
    workdir = args.dir or tempfile.mkdtemp(prefix="sknn-large-kernel-")
    print(
        f"n = {args.n}, P = {P}, output {args.format} in {workdir}, torch threads "
        f"{torch.get_num_threads()}, loaded machine: compare ratios within this run"
    )
    results, kernels = [], {}
    for engine in args.engines:
        path = os.path.join(workdir, f"K-{engine}-{args.n}.{args.format}")
        for stale in (path, path + ".tiles.jsonl"):
            if os.path.isdir(stale):
                shutil.rmtree(stale)
            elif os.path.exists(stale):
                os.remove(stale)
        if engine == "serial":
            K, row = _run(net, X, path, args, None)
        else:
            from distributed import Client, LocalCluster

            with (
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",
                ) as cluster,
                Client(cluster) as client,
            ):
                with parallel_config(backend="dask"):
                    # workers import torch and this package on their first task: warm them up
                    # (a long-running cluster is warm), then time the kernel
                    t0 = time.perf_counter()
                    client.run(_warm_up)
                    warmup = time.perf_counter() - t0
                    K, row = _run(net, X, path, args, -1, client)
                row["warmup_seconds"] = round(warmup, 2)
                rss = client.run(lambda: _peak_rss_mb())
                row["worker_peak_rss_mb"] = sorted(round(v) for v in rss.values())
        row["engine"] = engine if engine == "serial" else f"dask x{args.workers}"
        results.append(row)
        kernels[engine] = K
        print(json.dumps(row))
    if len(kernels) > 1:
        first, *rest = kernels.values()
        for other in rest:  # compared a row block at a time: never the whole kernel in memory
            same = all(
                np.array_equal(np.asarray(first[s : s + 1024]), np.asarray(other[s : s + 1024]))
                for s in range(0, args.n, 1024)
            )
            print("kernels bitwise equal:", same)
        base = results[0]["seconds"]
        for row in results[1:]:
            print(f"{row['engine']}: {base / row['seconds']:.2f}x the serial speed")
    if args.dir is None:
        shutil.rmtree(workdir)
    return results


if __name__ == "__main__":
    main()
