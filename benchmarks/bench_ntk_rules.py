"""Measures the Linear rule's exact forms against the cost model that chooses between them.

For a Linear layer at ``T`` positions, a one-tile kernel of ``n`` samples costs either the
``T × T`` pair sums (``"hadamard"``) or the materialised per-sample gradients
``Σ_t g_t ⊗ a_t`` plus one GEMM (``"outer"``; ``"factored"`` materialises them in the tile, in
chunks of rows: same FLOPs, less memory; the model treats the two as one on a one-tile kernel). This times both on random ``(A, G)`` and prints which one the cost model
(``sknn_kernels.ntk._cost.choose``) picks, so the switch can be checked (and tuned) on the
machine at hand. ``--fallback N`` also times, on ``N`` samples, a network ``torch.func.vmap``
cannot trace (``.item()`` in its forward) with PReLU activations (no rule: per-sample
gradients through each PReLU alone) against the plain per-sample autograd loop; ``--decoder N``
times a DCGAN-style generator (the ConvTranspose2d rule) against the generic ``vmap`` path and
the loop. Run::

    python benchmarks/bench_ntk_rules.py --n 256 --fallback 256 --decoder 256
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ntk import markdown, row

from sknn_kernels.ntk import _cost
from sknn_kernels.ntk.gram import contract, reusing_scratch
from sknn_kernels.ntk.rules.linear import LinearRule


def best_of(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class Untraceable(nn.Module):
    """MLP 784-512-512-10 with PReLU activations and a data-dependent ``.item()``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(784, 512),
            nn.PReLU(512),
            nn.Linear(512, 512),
            nn.PReLU(512),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        out = self.net(x)
        return out if out.abs().max().item() < 1e6 else out / 2


def fallback(n, table):
    from bench_ntk_real import loop_pntk

    from sknn_kernels.ntk import NTKEngine

    net = Untraceable().eval()
    X = torch.randn(n, 784, generator=torch.Generator().manual_seed(0))
    engine = NTKEngine(net, "pntk", device="cpu")
    ours = best_of(lambda: engine.kernel(X), 2)
    loop = best_of(lambda: loop_pntk(net, X), 1)
    local = [u.name for u in engine.units if type(u).__name__ == "LocalRule"]
    row(
        table,
        n=n,
        local_rule=" ".join(local),
        sknn_s=round(ours, 3),
        loop_s=round(loop, 3),
        x_loop=round(loop / ours, 1),
    )


class Decoder(nn.Module):
    """DCGAN-style generator (64 -> 128x4x4 -> 3x32x32, three ConvTranspose2d) + linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 128 * 16)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, 2, 1),
            nn.Tanh(),
        )
        self.head = nn.Linear(3 * 32 * 32, 10)

    def forward(self, z):
        return self.head(self.up(self.fc(z).view(-1, 128, 4, 4)).flatten(1))


def decoder(n, table):
    """The ConvTranspose rule against the generic vmap path and the per-sample loop."""
    from bench_ntk_real import loop_pntk

    from sknn_kernels.ntk import NTKEngine

    net = Decoder().eval()
    X = torch.randn(n, 64, generator=torch.Generator().manual_seed(0))
    rule = NTKEngine(net, "pntk", device="cpu")
    K = rule.kernel(X)
    generic = NTKEngine(net, "pntk", method="vmap", device="cpu")
    ours = best_of(lambda: rule.kernel(X), 2)
    vmap = best_of(lambda: generic.kernel(X), 2)
    loop = best_of(lambda: loop_pntk(net, X), 1)
    err = float(abs(K - loop_pntk(net, X)).max() / abs(K).max())
    row(
        table,
        n=n,
        rules=" ".join(sorted({type(u).__name__ for u in rule.units})),
        sknn_s=round(ours, 3),
        vmap_s=round(vmap, 3),
        loop_s=round(loop, 3),
        x_vmap=round(vmap / ours, 1),
        x_loop=round(loop / ours, 1),
        max_rel_diff=f"{err:.0e}",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--positions", type=int, nargs="*", default=[1, 4, 16, 32, 64])
    parser.add_argument("--widths", type=int, nargs="*", default=[64, 384, 1536])
    parser.add_argument("--m", type=int, default=1, help="cotangents (1 = pNTK)")
    parser.add_argument("--fallback", type=int, default=0, help="samples of the fallback timing")
    parser.add_argument("--decoder", type=int, default=0, help="samples of the decoder timing")
    args = parser.parse_args(argv)
    if args.decoder:
        table = []
        decoder(args.decoder, table)
        markdown(table)
    if args.fallback:
        table = []
        fallback(args.fallback, table)
        markdown(table)
    n, m, table = args.n, args.m, []
    for d in args.widths:
        for T in args.positions:
            rule = LinearRule("lin", nn.Linear(d, d), "lin", {"weight": 0, "bias": 1})
            rule.positions = T
            A = torch.randn(n, T, d)
            G = torch.randn(n, m, T, d)
            had = best_of(lambda rule=rule, A=A, G=G: rule.hadamard(A, G, A, G, "trace"))
            out = best_of(
                lambda rule=rule, A=A, G=G: (lambda J: contract(J, J, "trace"))(rule.outer(A, G))
            )
            with reusing_scratch():  # as the engine runs it
                fac = best_of(
                    lambda rule=rule, A=A, G=G: rule.factored(A, G, A, G, "trace", same=True)
                )
            pairs = n * n
            model = _cost.choose(rule, m, "trace", pairs, n, n, 4, _cost.MEMORY_BUDGET)
            fastest = "hadamard" if had <= min(out, fac) else "outer" if out <= fac else "factored"
            row(
                table,
                d_in=d,
                d_out=d,
                T=T,
                n=n,
                hadamard_s=round(had, 4),
                outer_s=round(out, 4),
                factored_s=round(fac, 4),
                fastest=fastest,
                model=model,
                fastdp=("hadamard" if d * d >= 2 * T * T else "outer"),
                agree=model == fastest or {model, fastest} == {"outer", "factored"},
            )
    if table:
        markdown(table)


if __name__ == "__main__":
    main()
