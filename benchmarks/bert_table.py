"""The paper's BERT table in miniature: six kernels on the tweets job, several seeds.

Engel et al. (ICLR 2024) compare six kernels with kGLM surrogates of BERT-base fine-tuned on
COLA (Kendall τ, mean ± s.e. over 4 models): trNTK 0.81 > proj-trNTK 0.80 > Grad-Cos 0.74 >
proj-pNTK 0.72 > Em 0.65 > CK 0.52. This runs the command line's tweets job (all-MiniLM-L6-v2
with a trained head and last block, ``sknn-kernels compare --dataset tweets``) once per seed
with the same six kernels, under the names the command line uses:

=============  ===============  ==========================================================
paper          ``--kernels``    what
=============  ===============  ==========================================================
trNTK          ``trntk``        trace NTK, cosine-normalised
proj-trNTK     ``proj-trntk``   its Johnson–Lindenstrauss projection (``--projection-dim``)
Grad-Cos       ``loss_grad``    cosine of cross-entropy loss gradients
proj-pNTK      ``proj-pntk``    projected pseudo-NTK
Em             ``embedding``    sum of per-module activation Grams (token-mean), cosine
CK             ``ck``           Gram of the head's input, cosine
=============  ===============  ==========================================================

and two surrogates: the paper's label-trained kGLM (``kglm``) and the kGLM distilled from the
network's logits (``kglm-logits``). Each seed draws its own tweets, trains its own network and
folds; τ and TAD are the job's cross-validated means, then mean ± standard error over seeds.

    python benchmarks/bert_table.py --seeds 0 1 2 --out bert-table   # ~5 min per seed, 2 cores
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from sknn_kernels.app.cli import main

#: (paper name, CLI name, paper's kGLM τ on BERT-base/COLA, papers.md §1.5 (a))
KERNELS = (
    ("trNTK", "trntk", 0.8085),
    ("proj-trNTK", "proj-trntk", 0.7997),
    ("Grad-Cos", "loss_grad", 0.7378),
    ("proj-pNTK", "proj-pntk", 0.7155),
    ("Em", "embedding", 0.6463),
    ("CK", "ck", 0.5169),
)
ESTIMATORS = ("kglm", "kglm-logits")


def run_seed(seed, args):
    """The tweets job of one seed; its rows (kernel, estimator, tau, tad), and seconds."""
    out = Path(args.out) / f"seed{seed}"
    argv = ["compare", "--dataset", "tweets", "--seed", str(seed), "--no-probe", "--quiet"]
    argv += ["--kernels", *(k for _, k, _ in KERNELS), "--estimators", *ESTIMATORS]
    argv += ["--cv", str(args.cv), "--projection-dim", str(args.projection_dim)]
    argv += ["--max-train", str(args.max_train), "--max-test", str(args.max_test)]
    argv += ["--device", args.device, "--out", str(out)]
    start = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"seed {seed}: the job failed")
    seconds = time.perf_counter() - start
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows, seconds


def table(per_seed):
    """Markdown rows: kernel, paper τ, and for each estimator τ and TAD, mean ± s.e."""

    def cell(values):
        values = np.asarray(values, dtype=float)
        se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        return f"{values.mean():.3f} ± {se:.3f}"

    head = "| kernel (paper) | `--kernels` | paper τ (kGLM) |"
    head += "".join(f" τ {e} | TAD {e} |" for e in ESTIMATORS)
    lines = [head, "|" + "---|" * (3 + 2 * len(ESTIMATORS))]
    for paper, name, tau in KERNELS:
        line = f"| {paper} | `{name}` | {tau:.2f} |"
        for estimator in ESTIMATORS:
            rows = [
                r
                for rows in per_seed
                for r in rows
                if r["kernel"] == name and r["estimator"] == estimator
            ]
            line += f" {cell([r['tau_mean'] for r in rows])} |"
            line += f" {cell([r['tad_mean'] for r in rows])} |"
        lines.append(line)
    return "\n".join(lines)


def main_table(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-train", type=int, default=300)
    parser.add_argument("--max-test", type=int, default=60)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--projection-dim", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bert-table")
    args = parser.parse_args(argv)
    per_seed, times = [], []
    for seed in args.seeds:
        rows, seconds = run_seed(seed, args)
        per_seed.append(rows)
        times.append(seconds)
        print(f"seed {seed}: {seconds:.0f} s", file=sys.stderr, flush=True)
    text = table(per_seed)
    text += (
        f"\n\nseeds {args.seeds}, {args.max_train} training tweets, {args.cv}-fold CV, "
        f"projection dim {args.projection_dim}; {np.mean(times):.0f} s per seed\n"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bert_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main_table()
