"""The package's attributions and the field's libraries on one retraining protocol.

Protocol (digits MLP, as ``benchmarks/attribution_quality.py``): scikit-learn's 8x8 digits,
an MLP with one hidden layer of 64 trained 30 epochs with Adam; ground truth: ``--subsets``
retrainings on random halves, ``--lds-seeds`` seeds each (outputs averaged), the true-class
margin recorded on ``--lds-test`` test points. Every method's damping (or other
hyperparameter) is chosen on *other* retrainings (``--tune-subsets`` halves, other test points)
and reported on the evaluation ones: LDS ± s.e. over test samples, and seconds (fit and
attribution of the evaluation points, after the networks are trained).

Methods: the package's kGLM distilled on the unnormalised pNTK (``pntk0 kglm-logits``), its
:class:`~sknn_kernels.attribution.influence.InfluenceAttributor` with 1 network and with 5
trained on random halves, at ``k`` = 512 and 2048; the peers when importable: captum's
``TracInCP`` (last checkpoint), dattri's TRAK and influence functions, traker's TRAKer and
kronfluence's EK-FAC. A peer that is not installed is reported as such (install peers with
``pip install --no-deps``: kronfluence declares torchvision, which would replace the CPU torch).
Signs: every method is oriented so that positive = supports the recorded output, checked with
self-influence (a training sample must support its own prediction on average).

Run: ``python benchmarks/attribution_peers.py [--quick] [--cache DIR] [--n-jobs N]``.
"""

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attribution_quality import ground_truth, train_mlp

from sknn_kernels.attribution.evaluation import linear_datamodeling_score
from sknn_kernels.attribution.influence import InfluenceAttributor
from sknn_kernels.datasets import load_digits_images

DAMPINGS = (0.1, 0.3, 1.0, 3.0)


def lds(A, retrained):
    per = linear_datamodeling_score(A, retrained).per_sample
    per = per[np.isfinite(per)]
    return float(per.mean()), float(per.std(ddof=1) / np.sqrt(len(per)))


def influence(nets, X, y, X_test, t, k, damping):
    inf = InfluenceAttributor(nets, projection_dim=k, damping=damping, random_state=0, device="cpu")
    return inf.fit(X, y).attribute(X_test, target=t)


def surrogate(net, X, y, X_test, t, alpha):
    from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer

    feat = NTKFeaturizer(net, kernel="pntk", normalize="std", device="cpu")
    glm = KernelSurrogateClassifier(target="logits", penalty="rkhs", alpha=alpha, network=net)
    glm.fit(feat.fit_transform(X), y, network_X=X)
    return glm.attribute(feat.transform(X_test), target=t)


def _load_checkpoint(model, state):
    model.load_state_dict(state)
    return 1.0  # captum scales each checkpoint by the learning rate this returns


def captum_tracin(net, X, y, X_test, t, _):
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)))
    tracin = TracInCP(
        net,
        data,
        checkpoints=[net.state_dict()],
        checkpoints_load_func=_load_checkpoint,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
        batch_size=256,
        sample_wise_grads_per_batch=True,
    )
    inputs = (torch.from_numpy(X_test), torch.from_numpy(t.astype(np.int64)))
    return tracin.influence(inputs).detach().numpy()  # proponents positive


PEERS = {  # name -> (module that must import, function, hyperparameter grid)
    "captum TracInCP (1 checkpoint)": ("captum", captum_tracin, (None,)),
    "dattri TRAK": ("dattri", None, ()),
    "dattri influence (CG)": ("dattri", None, ()),
    "traker TRAKer": ("trak", None, ()),
    "kronfluence EK-FAC": ("kronfluence", None, ()),
}


def oriented(A_self):
    """+1 when the method's self-attributions are positive on average (proponent positive)."""
    return 1.0 if np.mean(np.diag(A_self)) >= 0 else -1.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=40)
    parser.add_argument("--lds-seeds", type=int, default=2)
    parser.add_argument("--tune-subsets", type=int, default=10)
    parser.add_argument("--lds-test", type=int, default=100)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--quick", action="store_true", help="8 subsets x 1 seed, 40 test points")
    args = parser.parse_args(argv)
    if args.quick:
        args.subsets, args.lds_seeds, args.tune_subsets, args.lds_test = 8, 1, 4, 40
    warnings.filterwarnings("ignore")
    data = load_digits_images(random_state=args.seed)
    X, y = data.X_train, data.y_train
    perm = np.random.default_rng(args.seed).permutation(len(data.X_test))
    ev, tu = np.sort(perm[: args.lds_test]), np.sort(perm[args.lds_test : 2 * args.lds_test])
    truth = {
        "eval": ground_truth(args, X, y, data.X_test[ev], data.y_test[ev], "margin",
                             n_subsets=args.subsets, n_seeds=args.lds_seeds, seed=args.seed),
        "tune": ground_truth(args, X, y, data.X_test[tu], data.y_test[tu], "margin",
                             n_subsets=args.tune_subsets, n_seeds=1, seed=args.seed + 1),
    }  # fmt: skip
    points = {
        "eval": (data.X_test[ev], data.y_test[ev]),
        "tune": (data.X_test[tu], data.y_test[tu]),
    }
    net = train_mlp(X, y, 0)
    rng = np.random.default_rng(args.seed + 2)
    halves = []
    for m in range(args.members):
        idx = rng.choice(len(y), size=len(y) // 2, replace=False)
        halves.append(train_mlp(X[idx], y[idx], 1000 + m))
    methods = {
        "pntk0 kglm-logits surrogate": (lambda *a: surrogate(net, *a), (1e-4, 1e-2, 1.0)),
        "influence, 1 network, k=512": (lambda *a: influence(net, *a[:4], 512, a[4]), DAMPINGS),
        "influence, 1 network, k=2048": (lambda *a: influence(net, *a[:4], 2048, a[4]), DAMPINGS),
        f"influence, {args.members} halves, k=2048": (
            lambda *a: influence(halves, *a[:4], 2048, a[4]),
            DAMPINGS,
        ),
    }
    for name, (module, fn, grid) in PEERS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            print(f"| {name} | not installed | | |")
            continue
        if fn is None:
            print(f"| {name} | installed, adapter not written yet | | |")
            continue
        methods[name] = (lambda *a, fn=fn: fn(net, *a), grid)
    print("| method | LDS ± s.e. (eval) | chosen | seconds |\n|---|---|---|---|")
    for name, (run, grid) in methods.items():
        tuned = {v: lds(run(X, y, *points["tune"], v), truth["tune"])[0] for v in grid}
        best = max(tuned, key=lambda v: tuned[v] if np.isfinite(tuned[v]) else -np.inf)
        start = time.perf_counter()
        A = run(X, y, *points["eval"], best)
        seconds = time.perf_counter() - start
        sign = oriented(run(X, y, X[:50], y[:50], best)[:, :50])
        mean, se = lds(sign * A, truth["eval"])
        print(f"| {name} | {mean:.3f} ± {se:.3f} | {best} | {seconds:.1f} |", flush=True)
    print(f"\ntorch {torch.__version__}; protocol: {args.subsets} halves x {args.lds_seeds} seeds, "
          f"{len(ev)} test points; hyperparameters chosen on {args.tune_subsets} other halves.")  # fmt: skip


if __name__ == "__main__":
    main()
