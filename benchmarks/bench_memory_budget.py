"""The plan's choices and the exact pNTK's time under several ``memory_budget`` values.

Workload: ResNet-18 (CIFAR variant, ``benchmarks/ntk_architectures.py``), random 3×32×32
inputs, exact pNTK in float32, all parameters, every budget in one process (ratios). For each
``(n, budget)``: the plan (tile side, whether every block's representation is kept, how many
Kronecker layers take each form), the wall time, the peak extra RSS and the largest difference
from the first budget's kernel (relative to the kernel's largest entry). Run::

    python benchmarks/bench_memory_budget.py --n 256 512 --budgets 0.25GiB 1GiB 4GiB
    python benchmarks/bench_memory_budget.py --n 1024 --plan-only   # the plans, in seconds
"""

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ntk import PeakRSS
from ntk_architectures import resnet18_cifar

from sknn_kernels.ntk import NTKEngine


def plan(engine, n, block_size):
    """``(block, keep_all, {form: count})`` of the engine's plan for an ``n``-sample kernel."""
    block, keep_all = engine._plan(n, n, True, block_size)
    forms = collections.Counter(u.choice for u in engine.units if u.kron)
    return block, keep_all, dict(sorted(forms.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--budgets", nargs="+", default=["0.25GiB", "1GiB", "4GiB"])
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plan-only", action="store_true", help="print the plans, no kernels")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    net = resnet18_cifar()
    print(
        "| n | budget | block | keep all | forms | time (s) | peak extra RSS (GiB) | max rel diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        X = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        first = None
        for budget in args.budgets:
            engine = NTKEngine(net, "pntk", device="cpu", memory_budget=budget)
            engine._prepare(engine._tensor(X))
            block, keep_all, forms = plan(engine, n, args.block_size)
            if args.plan_only:
                print(f"| {n} | {budget} | {block} | {keep_all} | {forms} | | | |", flush=True)
                continue
            with PeakRSS() as rss:
                start = time.perf_counter()
                K = engine.kernel(X, block_size=args.block_size)
                seconds = time.perf_counter() - start
            first = K if first is None else first
            diff = float(np.abs(K - first).max() / np.abs(first).max())
            print(
                f"| {n} | {budget} | {block} | {keep_all} | {forms} | {seconds:.1f} "
                f"| {rss.extra / 2**30:.2f} | {diff:.1e} |",
                flush=True,
            )
    with open("/proc/loadavg") as fh:
        print("loadavg:", fh.read().strip())


if __name__ == "__main__":
    main()
