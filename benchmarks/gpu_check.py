"""The GPU check: CUDA tests and GPU benchmarks in one command, one table, at most 8 minutes.

Run on a machine with a CUDA device (``bash benchmarks/gpu_check.sh``): it runs the test suite's
CUDA tests (``-m gpu``), then times on the GPU

* the exact pNTK of ResNet-18 (CIFAR variant, 11.2M parameters) against ``torch.func``'s
  ``vmap(grad)`` + one GEMM on the same device (the ratio, and the largest kernel error);
* the projected pNTK (k = 2048) of ResNet-18 on 10,000 images;
* the exact pNTK of all-MiniLM-L6-v2 + a head on token ids;
* the kGLM surrogate fitted on 60,000 x 512 features (10 classes) on the GPU, against the same fit
  on the CPU when time allows.

Each check is skipped, with the reason in the table, once less time is left than it needs, so the
table always comes back. Peak GPU memory is ``torch.cuda.max_memory_allocated`` per check.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROWS = []


def report(check, **cells):
    ROWS.append({"check": check, **cells})
    print(f"[gpu_check] {check}: {cells}", flush=True)


def gpu_timed(fn, device):
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t, out, torch.cuda.max_memory_allocated(device) / 2**30


def cuda_tests(deadline):
    root = HERE.parent
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=max(30, deadline - time.monotonic() - 300),
    )
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:]
    report(
        "CUDA tests (pytest -m gpu)",
        seconds=round(time.perf_counter() - t, 1),
        result=tail[0] if tail else f"rc {proc.returncode}",
    )
    if proc.returncode not in (0, 5):
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")


def resnet(device, sizes, ks):
    from bench_ntk import baseline_pntk
    from ntk_architectures import resnet18_cifar

    from sknn_kernels.ntk import empirical_ntk

    net = resnet18_cifar().to(device).eval()
    for n in sizes:
        X = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
        t, K, mem = gpu_timed(lambda X=X: empirical_ntk(net, X, device=device), device)
        cells = {"n": n, "seconds": round(t, 2), "gpu_gib": round(mem, 2)}
        if n <= 512:
            bt, B, bmem = gpu_timed(lambda X=X: baseline_pntk(net, X), device)
            cells.update(
                baseline_s=round(bt, 2),
                baseline_gib=round(bmem, 2),
                ratio=round(bt / t, 2),
                max_rel_err=f"{np.abs(K - B).max() / np.abs(B).max():.1e}",
            )
        report("ResNet-18 exact pNTK vs torch.func", **cells)
    for n, k in ks:
        X = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
        t, _, mem = gpu_timed(
            lambda X=X, k=k: empirical_ntk(net, X, device=device, projection_dim=k, random_state=0),
            device,
        )
        report(f"ResNet-18 projected pNTK k={k}", n=n, seconds=round(t, 2), gpu_gib=round(mem, 2))


def minilm(device, n, tokens):
    from ntk_architectures import minilm_classifier, token_ids

    from sknn_kernels.ntk import empirical_ntk

    net = minilm_classifier().to(device).eval()
    ids = token_ids(n, tokens).to(device)
    t, _, mem = gpu_timed(lambda: empirical_ntk(net, ids, device=device), device)
    report(
        "MiniLM-L6 + head exact pNTK",
        n=n,
        tokens=tokens,
        seconds=round(t, 2),
        gpu_gib=round(mem, 2),
    )


def surrogate(device, n, k, classes, with_cpu):
    """The kGLM on explicit features (solved in the primal): GPU, then CPU for the ratio."""
    from sknn_kernels import KernelSurrogateClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, k))
    y = rng.integers(classes, size=n)
    F = (centres[y] + 2.0 * rng.normal(size=(n, k))).astype(np.float32)
    F /= np.linalg.norm(F, axis=1, keepdims=True)  # the cosine kernel's features

    def fit(dev):
        return KernelSurrogateClassifier(kernel="linear", device=dev).fit(F, y)

    t, model, mem = gpu_timed(lambda: fit(device), device)
    cells = {
        "n": n,
        "k": k,
        "seconds": round(t, 2),
        "gpu_gib": round(mem, 2),
        "train_acc": round(float(model.score(F, y)), 3),
    }
    if with_cpu:
        c = time.perf_counter()
        fit("cpu")
        cpu = time.perf_counter() - c
        cells.update(cpu_s=round(cpu, 2), ratio=round(cpu / t, 2))
    report("kGLM on features (primal)", **cells)


def markdown():
    keys = []
    for row in ROWS:
        keys += [k for k in row if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in ROWS]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=450, help="seconds for everything")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check", file=sys.stderr)
        return 0
    deadline = time.monotonic() + args.budget
    device = torch.device(args.device)
    report("device", name=torch.cuda.get_device_name(device), torch=torch.__version__)
    # (check, seconds it needs at most, call): cheap and essential first
    checks = [
        ("CUDA tests", 150, lambda: cuda_tests(deadline)),
        ("ResNet-18", 120, lambda: resnet(device, (256, 1024), ((10_000, 2048),))),
        ("MiniLM", 40, lambda: minilm(device, 256, 64)),
        ("kGLM 60k", 60, lambda: surrogate(device, 60_000, 512, 10, with_cpu=False)),
    ]
    for name, needs, run in checks:
        left = deadline - time.monotonic()
        if left < needs:
            report(name, status=f"skipped: {left:.0f} s left, needs {needs} s")
            continue
        try:
            run()
        except Exception as exc:  # one failing check must not hide the others' results
            report(name, status=f"failed: {type(exc).__name__}: {str(exc)[:120]}")
        torch.cuda.empty_cache()
    print()
    print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
