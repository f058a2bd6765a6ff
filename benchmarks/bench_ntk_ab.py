"""Alternating (A/B/A/B) timing of the NTK engine and one baseline, best of each: steadier than
one-after-the-other timings on a shared machine whose load changes.

* ``resnet N``: ResNet-18 (CIFAR variant) pNTK against torch.func ``vmap(grad)`` + GEMM;
* ``minilm N T``: MiniLM-L6 + head (local BERT-like stand-in when absent) on ``T`` tokens
  against the per-sample ``autograd.grad`` loop.

Run::

    python benchmarks/bench_ntk_ab.py resnet 32 [ROUNDS]
    python benchmarks/bench_ntk_ab.py minilm 16 64 [ROUNDS]

``ROUNDS`` (default 3) A/B alternations; the ratio of the best times and of the medians are
printed.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ntk import baseline_pntk
from bench_ntk_real import loop_pntk
from ntk_architectures import minilm_classifier, resnet18_cifar, token_ids

from sknn_kernels.ntk import empirical_ntk


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    what, n = argv[0], int(argv[1])
    if what == "resnet":
        net, name, baseline = resnet18_cifar(), "resnet18", baseline_pntk
        X = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
    else:
        T = int(argv[2])
        (net, name), baseline = minilm_classifier(), loop_pntk
        name, X = f"{name} T={T}", token_ids(n, T, seed=n)
    rest = argv[3:] if what == "minilm" else argv[2:]
    rounds = int(rest[0]) if rest else 3
    ours, base = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        K = empirical_ntk(net, X, device="cpu")
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        B = baseline(net, X)
        base.append(time.perf_counter() - t)
    err = np.abs(K - B).max() / np.abs(B).max()
    print(
        f"{name} n={n}: sknn {min(ours):.2f} s, {baseline.__name__} {min(base):.2f} s, "
        f"ratio {min(base) / min(ours):.2f}x (medians {np.median(base) / np.median(ours):.2f}x), "
        f"max rel. diff {err:.0e} "
        f"(all: {[round(t, 2) for t in ours]} / {[round(t, 2) for t in base]})"
    )


if __name__ == "__main__":
    main()
