"""Time of ``transform`` on a fitted estimator with and without the cached network copy.

Before the adapter cache, every ``transform`` deep-copied the whole network and hashed all its
weights. Now the copy made at ``fit`` is reused while the network is unchanged (checked from
each tensor's storage and version counter). Both are measured in one process: "before" clears
the cache before each call, which does exactly the old work (copy + hash).

    python benchmarks/bench_adapter_cache.py            # MiniLM + head (text extra), else a wide MLP
    python benchmarks/bench_adapter_cache.py --repeat 5 --n 8
"""

import argparse
import time

import numpy as np
import torch

from sknn_kernels import EmbeddingExtractor


def workload(n):
    try:
        from sknn_kernels.text import SentenceClassifier, load_minilm, tokenize

        tokenizer, encoder = load_minilm()
        net = SentenceClassifier(encoder, n_classes=2)
        X = tokenize([f"sample text number {i}" for i in range(n)], tokenizer, max_length=32)
        return "MiniLM-L6 + head", net, X, "encoder.encoder.layer.5"
    except ImportError:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(1024, 4096),
            torch.nn.ReLU(),
            torch.nn.Linear(4096, 4096),
            torch.nn.ReLU(),
            torch.nn.Linear(4096, 10),
        )
        return "MLP 1024-4096-4096-10", net, np.random.default_rng(0).normal(size=(n, 1024)), "2"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=8, help="samples per transform call")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    name, net, X, layer = workload(args.n)
    n_params = sum(p.numel() for p in net.parameters())
    emb = EmbeddingExtractor(
        net,
        layers=[layer],
        pooling="mean_tokens" if isinstance(X, dict) else "flatten",
        device="cpu",
    ).fit(X)
    emb.transform(X)  # warm-up
    timings = {}
    for label, clear in (("cached (now)", False), ("copy + hash per call (before)", True)):
        times = []
        for _ in range(args.repeat):
            if clear:
                emb._adapter_cache.clear()
            start = time.perf_counter()
            emb.transform(X)
            times.append(time.perf_counter() - start)
        timings[label] = float(np.median(times))
    print(
        f"{name}: {n_params / 1e6:.1f}M parameters, transform of {args.n} samples, median of {args.repeat}"
    )
    for label, t in timings.items():
        print(f"  {label:32s} {t * 1e3:8.1f} ms")
    before, now = timings["copy + hash per call (before)"], timings["cached (now)"]
    print(f"  speed-up {before / now:.1f}x")


if __name__ == "__main__":
    main()
