"""Speed and memory of the NTK engine against a torch.func baseline run in the same process.

Baseline (what a careful user writes from PyTorch's NTK tutorial): per-sample gradients of
``Σ_c f_c / √C`` with ``torch.func.vmap(grad(functional_call))`` in chunks, stacked into an
``(n, P)`` matrix, then one GEMM. Workloads:

* MLP 784-512-512-10 (ReLU), P = 669,706: pNTK for several n, trace NTK (C = 10);
* CNN 3×32×32: conv3×3(32)-ReLU-maxpool-conv3×3(64)-ReLU-maxpool-Linear(128)-ReLU-Linear(10),
  P = 545,098: pNTK.

Reported: seconds (best of ``--repeat``), speed-up over the baseline, peak extra RSS during
the call (sampled from /proc/self/statm, beyond the memory in use before it; includes the
n × n output), achieved GFLOP/s of the method's algebraic floor, and the relative difference
to the baseline kernel. Run::

    python benchmarks/bench_ntk.py --quick
    python benchmarks/bench_ntk.py --mlp-sizes 500 1000 2000 4000 8000 --cnn-sizes 250 500 1000
"""

import argparse
import itertools
import math
import os
import threading
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from sknn_kernels.ntk import empirical_ntk

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        self.extra = self.peak - self.start


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def baseline_pntk(net, X, chunk=64):
    """vmap(grad) per-sample gradients of Σ_c f_c/√C, then one GEMM (the tutorial's way)."""
    net = net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())
    C = net(X[:1]).shape[1]

    def scalar(p, x):
        return functional_call(net, (p, buffers), (x.unsqueeze(0),)).sum() / math.sqrt(C)

    per_sample = vmap(grad(scalar), in_dims=(None, 0))
    rows = []
    for s in range(0, X.shape[0], chunk):
        g = per_sample(params, X[s : s + chunk])
        rows.append(torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], dim=1))
    G = torch.cat(rows)
    return (G @ G.T).numpy()


def gemm_rate(size=2048, repeat=5):
    a = torch.randn(size, size)
    a @ a
    t = time.perf_counter()
    for _ in range(repeat):
        a @ a
    return repeat * 2 * size**3 / (time.perf_counter() - t) / 1e9


def timed(fn, repeat):
    best, result, extra = math.inf, None, 0
    for _ in range(repeat):
        with PeakRSS() as mem:
            t = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t)
        extra = max(extra, mem.extra)
        if best > 60:  # one run is enough for slow baselines
            break
    return best, result, extra


def floors(net, n, C, input_shape):
    """(structural, generic) FLOP counts of the exact pNTK for ``net`` on ``n`` samples."""
    P = sum(p.numel() for p in net.parameters())
    structural = 0
    x = torch.zeros((1,) + input_shape)
    for layer in net:
        if isinstance(layer, nn.Linear):
            structural += 2 * n * n * (layer.in_features + 1 + layer.out_features)
        elif isinstance(layer, nn.Conv2d):  # materialised per-sample gradient + Gram
            out = layer(x)
            L = out.shape[2] * out.shape[3]
            width = layer.weight[0].numel() + 1
            structural += (
                2 * n * L * width * layer.out_channels + 2 * n * n * width * layer.out_channels
            )
        x = layer(x)
    generic = 6 * n * P + 2 * n * n * P  # forward + backward per sample, then the Gram
    return structural, generic


def row(table, **cells):
    table.append(cells)
    print("  ".join(f"{k}={v}" for k, v in cells.items()), flush=True)


def bench_pntk(table, name, net, sizes, input_shape, baseline_max_n, repeat, rate):
    C = 10
    for n in sizes:
        X = torch.randn((n,) + input_shape, generator=torch.Generator().manual_seed(n))
        ours_t, K, ours_mem = timed(lambda X=X: empirical_ntk(net, X, device="cpu"), repeat)
        structural, generic = floors(net, n, C, input_shape)
        cells = {
            "workload": name,
            "kind": "pntk",
            "n": n,
            "sknn_s": round(ours_t, 3),
            "sknn_rss_mb": round(ours_mem / 2**20),
            "sknn_gflops": round(structural / ours_t / 1e9, 1),
            "gemm_gflops": round(rate, 1),
        }
        if n <= baseline_max_n:
            base_t, B, base_mem = timed(lambda X=X: baseline_pntk(net, X), 1)
            cells.update(
                base_s=round(base_t, 2),
                base_rss_mb=round(base_mem / 2**20),
                base_gflops=round(generic / base_t / 1e9, 1),
                speedup=round(base_t / ours_t, 1),
                rel_err=f"{np.abs(K - B).max() / np.abs(B).max():.1e}",
            )
        row(table, **cells)
        del K


def bench_trace(table, net, n, repeat):
    X = torch.randn(n, 784, generator=torch.Generator().manual_seed(1))
    p_t, _, _ = timed(lambda X=X: empirical_ntk(net, X, device="cpu"), repeat)
    t_t, _, t_mem = timed(lambda: empirical_ntk(net, X, kind="trace", device="cpu"), repeat)
    row(
        table,
        workload="mlp",
        kind="trace/pntk",
        n=n,
        pntk_s=round(p_t, 3),
        trace_s=round(t_t, 3),
        trace_rss_mb=round(t_mem / 2**20),
        ratio=round(t_t / p_t, 2),
        C=10,
    )


def growth(table):
    """Empirical exponent of time in n between consecutive sizes (2 = quadratic)."""
    for name in ("mlp", "cnn"):
        rows = [r for r in table if r.get("workload") == name and r.get("kind") == "pntk"]
        steps = [
            f"{a['n']}->{b['n']}: n^{math.log(b['sknn_s'] / a['sknn_s']) / math.log(b['n'] / a['n']):.2f}"
            for a, b in itertools.pairwise(rows)
        ]
        if steps:
            print(f"{name} pNTK time growth: " + ", ".join(steps))


def markdown(table):
    keys = list(dict.fromkeys(k for r in table for k in r))
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in table:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--mlp-sizes", type=int, nargs="*", default=[500, 1000, 2000, 4000, 8000])
    parser.add_argument("--cnn-sizes", type=int, nargs="*", default=[250, 500, 1000, 2000])
    parser.add_argument("--trace-n", type=int, default=2000)
    parser.add_argument(
        "--baseline-max-n",
        type=int,
        default=2000,
        help="largest n for the baseline (it stores an n × P gradient matrix)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.mlp_sizes, args.cnn_sizes, args.trace_n = [250, 500, 1000], [250, 500], 500
        args.baseline_max_n = 500
    if args.threads:
        torch.set_num_threads(args.threads)
    rate = gemm_rate()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 GEMM {rate:.0f} GFLOP/s"
    )
    table = []
    bench_pntk(table, "mlp", mlp(), args.mlp_sizes, (784,), args.baseline_max_n, args.repeat, rate)
    bench_pntk(
        table, "cnn", cnn(), args.cnn_sizes, (3, 32, 32), args.baseline_max_n, args.repeat, rate
    )
    bench_trace(table, mlp(), args.trace_n, args.repeat)
    print()
    growth(table)
    markdown(table)


if __name__ == "__main__":
    main()
