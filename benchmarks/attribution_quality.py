"""Attribution quality of kernel surrogates and of the influence estimator, measured.

Two experiments, each a table (markdown on stdout, JSON with ``--out``):

1. **Digits MLP** (scikit-learn's 8x8 digits, 1347 train / 450 test, MLP 64-64-10 (one
   hidden layer of 64) trained 30 epochs with Adam): the linear datamodeling score (LDS) of each
   attribution method under two protocols, the recorded output being the true-class margin
   (TRAK's) or the true-class logit (the issue's). Ground truth: ``--subsets`` retrainings on
   random halves (``--lds-seeds`` seeds each, outputs averaged) on ``--lds-test`` test points.
   Hyperparameters (the kGLM's alpha, the influence damping) are chosen, per protocol, on other
   retrainings: ``--tune-subsets`` other halves x 1 seed, on ``--lds-test`` other test points;
   the table reports the evaluation LDS of the chosen value and its ratio to the best kGLM.
   Then mislabel detection with 10% of the training labels flipped (network retrained on the
   noisy labels; self-attribution AUC and the fraction found in the top 10%).
2. **Fashion-MNIST CNN with a backdoor**: a 3x3 white patch in the bottom-right corner of 1%
   of ``--fmnist-train`` training images, relabelled to class 0 ("T-shirt/top"); the CNN of
   :func:`sknn_kernels.datasets.make_cnn` with channels (8, 16) and a 32-unit head, 20
   epochs of Adam at lr 2e-3. Per kernel: attack success of the network and of
   the kGLM surrogate on ``--fmnist-trigger`` triggered test images (true class not 0), and,
   on those the network sends to class 0, precision@10 and AUC of poisoned training images
   among the attributions of class 0.

Methods: the kGLM (``KernelSurrogateClassifier``, alpha 1e-4, cosine-normalised kernels)
attribution ``coef_[t, i] K(x, x_i)``; the raw kernel similarity ``K(x, x_i) (1[y_i = t] -
1/C)`` (no surrogate weights); TracIn ``<∇L(x, t), ∇L(x_i, y_i)>`` and its cosine form
Grad-Cos; :class:`~sknn_kernels.attribution.influence.InfluenceAttributor` with one network and with two
ensembles of ``--ensemble`` networks: trained on the full training set (seeds 0..M-1), or, as in
TRAK, each on a random half drawn independently of the LDS subsets.

Run: ``python benchmarks/attribution_quality.py`` (the digits part took 974 s on 2 cores shared
with other jobs, load average 8-16: retraining 329 s, kernel methods 55 s, influence 274 s,
mislabel 265 s; Fashion-MNIST 317 s in an earlier run; ``--quick`` takes 3-8 minutes there,
``--skip`` runs one experiment, ``--no-mislabel`` skips the mislabel part). Seeds are fixed by
``--seed``; ``--cache DIR`` keeps the retrained outputs between runs.
"""

import argparse
import json
import os
import sys
import time
import warnings
from functools import partial

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Bunch

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from sknn_kernels.attribution.evaluation import (
    add_trigger,
    attack_success,
    flip_labels,
    linear_datamodeling_score,
    mislabel_detection,
    poison,
    poison_recall,
    retrain_on_subsets,
    self_attribution,
)
from sknn_kernels.attribution.influence import InfluenceAttributor
from sknn_kernels.datasets import (
    load_digits_images,
    load_fashion_mnist,
    make_cnn,
    make_mlp,
    train_reference_network,
)
from sknn_kernels.ntk import empirical_ntk, ntk_diagonal

KERNELS = ("pntk", "trntk", "ck", "embedding", "proj-pntk", "proj-trntk")
DEVICE = "cpu"


def featurizer(net, kernel, input_shape, projection_dim, seed):
    projected = kernel.startswith("proj-")
    return NTKFeaturizer(
        net,
        kernel=kernel.removeprefix("proj-"),
        normalize="cosine",
        device=DEVICE,
        input_shape=input_shape,
        projection_dim=projection_dim if projected else None,
        random_state=seed,
    )


def similarity_attribution(K, y_train, target, n_classes):
    """Raw kernel vote: K(x, x_i) times the centred one-hot code of y_i for the target class."""
    code = (y_train[None, :] == np.asarray(target)[:, None]) - 1.0 / n_classes
    return K * code


def tracin(net, X, y, X_test, t, input_shape):
    """TracIn (loss-gradient inner products) and Grad-Cos (their cosine), test labels ``t``."""
    kw = {"device": DEVICE, "input_shape": input_shape}
    K = empirical_ntk(net, X_test, X, "loss_grad", y1=t, y2=y, **kw)
    d_test = ntk_diagonal(net, X_test, "loss_grad", y=t, **kw)
    d_train = ntk_diagonal(net, X, "loss_grad", y=y, **kw)
    return K, K / np.sqrt(np.outer(d_test, d_train)), d_train


def kernel_methods(net, X, y, X_test, t, input_shape, args, n_classes):
    """Yield (method, attributions of the target ``t``) for every kernel: kGLM and raw vote."""
    for kernel in KERNELS:
        feat = featurizer(net, kernel, input_shape, args.projection_dim, args.seed)
        K_train = feat.fit_transform(X, y)
        K_test = feat.transform(X_test)
        glm = KernelSurrogateClassifier(alpha=1e-4, device=DEVICE).fit(K_train, y)
        yield f"kGLM {kernel}", glm.attribute(K_test, target=t), (glm, K_train, K_test)
        yield f"similarity {kernel}", similarity_attribution(K_test, y, t, n_classes), None


# ---------------------------------------------------------------------- digits
PROTOCOLS = ("margin", "logit")
ALPHAS = (1e-6, 1e-4, 1e-2, 1.0)  # kGLM regularisation, chosen on the tuning retrainings
DAMPINGS = (0.1, 0.3, 1.0, 3.0, 10.0)  # influence damping, chosen on the tuning retrainings


def train_mlp(X, y, seed, epochs=30):
    return train_reference_network(partial(make_mlp, hidden=(64,)), X, y, epochs=epochs, seed=seed)


def true_class_logit(model, X_test, y_test):
    """The issue's recorded output: the logit of the true class (picklable, for joblib)."""
    with torch.no_grad():
        logits = model(torch.from_numpy(X_test)).double().numpy()
    return logits[np.arange(len(y_test)), y_test]


def ground_truth(args, X, y, X_test, y_test, protocol, *, n_subsets, n_seeds, seed):
    return retrain_on_subsets(
        train_mlp,
        X,
        y,
        X_test,
        y_test,
        n_subsets=n_subsets,
        subset_fraction=0.5,
        n_seeds=n_seeds,
        output="margin" if protocol == "margin" else true_class_logit,
        random_state=seed,
        n_jobs=args.n_jobs,
        memory=args.cache,
    )


def ensembles(X, y, args):
    """Members for the influence estimator, none of them an LDS model: ``M`` networks on the
    whole training set (seeds 0..M-1) and, as TRAK, ``M`` on random halves drawn from their own
    generator (seed + 2; the evaluation subsets come from seed, the tuning ones from seed + 1)."""
    full = [train_mlp(X, y, seed) for seed in range(args.ensemble)]
    rng = np.random.default_rng(args.seed + 2)
    halves = []
    for m in range(args.ensemble):
        idx = rng.choice(len(y), size=len(y) // 2, replace=False)
        while len(np.unique(y[idx])) < len(np.unique(y)):
            idx = rng.choice(len(y), size=len(y) // 2, replace=False)
        halves.append(train_mlp(X[idx], y[idx], 1000 + m))
    return full, halves


def tuned(attributions_of, grid, n_tune, tuning, evaluation):
    """For each protocol: the grid value with the best LDS on the tuning retrainings (other
    test points, other subsets, one seed), and the LDS of that value on the evaluation set.
    ``attributions_of(value, protocol)`` returns attributions of the tuning points followed by
    the evaluation points."""
    out = {}
    for protocol in evaluation:
        scores = {}
        for value in grid:
            A = attributions_of(value, protocol)
            scores[value] = (
                linear_datamodeling_score(A[:n_tune], tuning[protocol]).lds,
                linear_datamodeling_score(A[n_tune:], evaluation[protocol]).lds,
            )
        best = max(grid, key=lambda v: scores[v][0])
        out[protocol] = (scores[best][1], best, scores)
    return out


def digits_experiment(args):
    """LDS (two protocols, hyperparameters chosen on held-out retrainings) and mislabel AUC."""
    data = load_digits_images(random_state=args.seed)
    X, y = data.X_train, data.y_train
    perm = np.random.default_rng(args.seed).permutation(len(data.X_test))
    ev, tu = np.sort(perm[: args.lds_test]), np.sort(perm[args.lds_test : 2 * args.lds_test])
    X_both = np.concatenate([data.X_test[tu], data.X_test[ev]])
    t_both = np.concatenate([data.y_test[tu], data.y_test[ev]])
    n_tune, timings = len(tu), {}
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # alpha=1e-4: 1000 iterations

    start = time.perf_counter()
    evaluation, tuning = {}, {}
    for protocol in PROTOCOLS:
        evaluation[protocol] = ground_truth(
            args, X, y, data.X_test[ev], data.y_test[ev], protocol,
            n_subsets=args.subsets, n_seeds=args.lds_seeds, seed=args.seed,
        )  # fmt: skip
        tuning[protocol] = ground_truth(
            args, X, y, data.X_test[tu], data.y_test[tu], protocol,
            n_subsets=args.tune_subsets, n_seeds=1, seed=args.seed + 1,
        )  # fmt: skip
    timings["retraining"] = time.perf_counter() - start
    start = time.perf_counter()
    nets, halves = ensembles(X, y, args)
    timings["ensembles"] = time.perf_counter() - start
    net = nets[0]
    acc = float(np.mean(net(torch.from_numpy(data.X_test)).argmax(1).numpy() == data.y_test))
    rows = []

    def add(name, result, what=""):
        row = {"method": name}
        for protocol, (lds, best, sweep) in result.items():
            row[f"lds_{protocol}"] = lds
            if what:
                row[f"chosen_{protocol}"] = f"{what} {best:g}"
                # (tuning LDS, evaluation LDS) of every value: the evaluation column is for
                # reading only (the oracle), never for choosing
                row[f"sweep_{protocol}"] = {f"{v:g}": list(pair) for v, pair in sweep.items()}
                row[f"oracle_{protocol}"] = max(pair[1] for pair in sweep.values())
        rows.append(row)

    def fixed(A):  # no hyperparameter: the same LDS whatever the tuning set says
        return tuned(lambda value, protocol: A, [None], n_tune, tuning, evaluation)

    start = time.perf_counter()
    for kernel in KERNELS:
        feat = featurizer(net, kernel, None, args.projection_dim, args.seed)
        K_train = feat.fit_transform(X, y)
        K_both = feat.transform(X_both)
        glms = {
            alpha: KernelSurrogateClassifier(alpha=alpha, device=DEVICE).fit(K_train, y)
            for alpha in ALPHAS
        }

        def glm_attributions(alpha, protocol, glms=glms, K=K_both):
            return glms[alpha].attribute(K, target=t_both)

        add(f"kGLM {kernel}", tuned(glm_attributions, ALPHAS, n_tune, tuning, evaluation), "alpha")
        add(f"similarity {kernel}", fixed(similarity_attribution(K_both, y, t_both, 10)))
    K, cos, _ = tracin(net, X, y, X_both, t_both, None)
    add("TracIn (loss_grad)", fixed(K))
    add("Grad-Cos", fixed(cos))
    timings["kernel methods"] = time.perf_counter() - start
    start = time.perf_counter()
    M = args.ensemble
    for name, members in [
        ("influence, 1 network", nets[:1]),
        (f"influence, {M} networks (full data)", nets),
        (f"influence, {M} networks (random halves)", halves),
    ]:

        def attributions(damping, protocol, members=members):
            return (
                InfluenceAttributor(
                    members,
                    projection_dim=args.projection_dim,
                    damping=damping,
                    output=protocol,
                    random_state=args.seed,
                    device=DEVICE,
                )
                .fit(X, y)
                .attribute(X_both, target=t_both)
            )

        add(name, tuned(attributions, DAMPINGS, n_tune, tuning, evaluation), "damping")
    timings["influence"] = time.perf_counter() - start
    best_kglm = {
        p: max(r[f"lds_{p}"] for r in rows if r["method"].startswith("kGLM")) for p in PROTOCOLS
    }
    for row in rows:
        for p in PROTOCOLS:
            row[f"ratio_{p}"] = row[f"lds_{p}"] / best_kglm[p]
    if args.no_mislabel:
        return _digits_summary(acc, rows, timings, evaluation["margin"], args)

    # mislabel detection: 10% flipped, network retrained on the noisy labels
    start = time.perf_counter()
    y_noisy, flipped = flip_labels(y, 0.1, random_state=args.seed)
    noisy_nets = [train_mlp(X, y_noisy, seed) for seed in range(args.ensemble)]
    mis = {}

    def detect(name, scores):
        r = mislabel_detection(scores, flipped, inspect_fraction=0.1)
        mis[name] = {"mislabel_auc": r.auc, "found_top10": r.found_fraction}

    with torch.no_grad():
        logp = torch.log_softmax(noisy_nets[0](torch.from_numpy(X)), 1).numpy()
    detect("network loss (baseline)", -logp[np.arange(len(y)), y_noisy])
    for kernel in KERNELS:
        feat = featurizer(noisy_nets[0], kernel, None, args.projection_dim, args.seed)
        K_train = feat.fit_transform(X, y_noisy)
        for penalty in ("l2", "rkhs"):
            glm = KernelSurrogateClassifier(alpha=1e-4, penalty=penalty, device=DEVICE).fit(
                K_train, y_noisy
            )
            detect(
                f"kGLM {kernel}" + (" (rkhs)" if penalty == "rkhs" else ""),
                self_attribution(glm, K_train, y_noisy),
            )
    _, _, d_train = tracin(noisy_nets[0], X, y_noisy, X[:1], y_noisy[:1], None)
    detect("TracIn (loss_grad)", d_train)
    # the damping chosen on the LDS tuning retrainings (margin protocol)
    chosen = {
        row["method"]: float(row["chosen_margin"].split()[-1])
        for row in rows
        if row["method"].startswith("influence")
    }
    for name, members in [("influence, 1 network", 1), (f"influence, {M} networks (full data)", M)]:
        inf = InfluenceAttributor(
            noisy_nets[:members],
            projection_dim=args.projection_dim,
            damping=chosen[name],
            random_state=args.seed,
            device=DEVICE,
        ).fit(X, y_noisy)
        detect(name, self_attribution(inf, X, y_noisy))
    timings["mislabel"] = time.perf_counter() - start
    for row in rows:
        row.update(mis.get(row["method"], {}))
    names = {row["method"] for row in rows}
    rows += [{"method": name, **m} for name, m in mis.items() if name not in names]
    return _digits_summary(acc, rows, timings, evaluation["margin"], args)


def _digits_summary(acc, rows, timings, retrained, args):
    # noise ceiling: Spearman between the outputs of two seeds on the same subsets
    seed_agreement = float("nan")
    if args.lds_seeds >= 2:
        split = Bunch(
            masks=np.eye(len(retrained.masks), dtype=bool), outputs=retrained.outputs_per_seed[:, 1]
        )
        seed_agreement = linear_datamodeling_score(retrained.outputs_per_seed[:, 0].T, split).lds
    # the kGLM's best evaluation LDS over kernels *and* alphas: a bound that favours the kGLM
    oracle = {
        p: max(r.get(f"oracle_{p}", -1.0) for r in rows if r["method"].startswith("kGLM"))
        for p in PROTOCOLS
    }
    return {
        "network_test_accuracy": acc,
        "seed_agreement": seed_agreement,
        "kglm_oracle": oracle,
        "rows": rows,
        "timings": timings,
    }


# --------------------------------------------------------------------- fashion
def fmnist_experiment(args):
    shape = (1, 28, 28)
    data = load_fashion_mnist(n_train=args.fmnist_train, n_test=2000, random_state=args.seed)
    target = 0
    Xp, yp, mask = poison(
        data.X_train,
        data.y_train,
        0.01,
        target,
        input_shape=shape,
        patch_size=3,
        value=1.0,
        random_state=args.seed,
    )
    clean = np.flatnonzero(data.y_test != target)[: args.fmnist_trigger]
    X_trig = add_trigger(data.X_test[clean], input_shape=shape, patch_size=3, value=1.0)
    y_trig_true = data.y_test[clean]
    start = time.perf_counter()
    net = train_reference_network(
        partial(make_cnn, channels=(8, 16), hidden=32),
        Xp,
        yp,
        epochs=args.fmnist_epochs,
        lr=2e-3,
        seed=args.seed,
        input_shape=shape,
    )
    timings = {"training": time.perf_counter() - start}
    with torch.no_grad():
        pred_trig = net(torch.from_numpy(X_trig.reshape(-1, *shape))).argmax(1).numpy()
        pred_clean = net(torch.from_numpy(data.X_test.reshape(-1, *shape))).argmax(1).numpy()
    summary = {
        "n_train": len(yp),
        "n_poisoned": int(mask.sum()),
        "network_attack_success": attack_success(pred_trig, target, y_trig_true),
        "network_clean_accuracy": float(np.mean(pred_clean == data.y_test)),
    }
    t = np.full(len(X_trig), target)
    rows = []
    start = time.perf_counter()

    def score(name, A, surrogate_pred=None):
        r = poison_recall(A, mask, k=10, y_pred=pred_trig, target_class=target)
        rows.append(
            {
                "method": name,
                "surrogate_attack_success": (
                    attack_success(surrogate_pred, target, y_trig_true)
                    if surrogate_pred is not None
                    else float("nan")
                ),
                "precision_at_10": r.precision_at_k,
                "auc": r.auc,
            }
        )

    for name, A, fitted in kernel_methods(net, Xp, yp, X_trig, t, shape, args, 10):
        score(name, A, None if fitted is None else fitted[0].predict(fitted[2]))
    K, cos, _ = tracin(net, Xp, yp, X_trig, t, shape)
    score("TracIn (loss_grad)", K)
    score("Grad-Cos", cos)
    inf = InfluenceAttributor(
        net,
        projection_dim=args.projection_dim,
        damping=1.0,
        random_state=args.seed,
        device=DEVICE,
        input_shape=shape,
    ).fit(Xp, yp)
    score("influence, 1 network, damping 1", inf.attribute(X_trig, target=t))
    timings["attributions"] = time.perf_counter() - start
    return {**summary, "rows": rows, "timings": timings}


# ------------------------------------------------------------------------ main
def markdown(rows, columns):
    lines = ["| " + " | ".join(["method"] + columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = [row["method"]] + [_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value):
    if isinstance(value, str):
        return value
    return "" if not isinstance(value, float) or np.isnan(value) else f"{value:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--lds-seeds", type=int, default=2)
    parser.add_argument("--lds-test", type=int, default=100)
    parser.add_argument(
        "--tune-subsets",
        type=int,
        default=25,
        help="held-out retrainings that choose alpha/damping",
    )
    parser.add_argument("--no-mislabel", action="store_true", help="LDS only on digits")
    parser.add_argument("--ensemble", type=int, default=10)
    parser.add_argument("--projection-dim", type=int, default=512)
    parser.add_argument("--fmnist-train", type=int, default=2000)
    parser.add_argument("--fmnist-trigger", type=int, default=200)
    parser.add_argument("--fmnist-epochs", type=int, default=20)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--cache", default=None, help="joblib cache folder for the retrainings")
    parser.add_argument("--skip", choices=("digits", "fmnist"), default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.subsets, args.lds_seeds, args.lds_test, args.ensemble = 12, 1, 30, 3
        args.tune_subsets = 8
        args.fmnist_train, args.fmnist_trigger, args.fmnist_epochs = 1000, 60, 10
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, args.n_jobs)))
    results = {"args": vars(args)}
    started = time.perf_counter()
    if args.skip != "digits":
        d = digits_experiment(args)
        results["digits"] = d
        print(
            f"## Digits MLP (network test accuracy {d['network_test_accuracy']:.3f}); "
            f"LDS on {args.lds_test} test points, {args.subsets} halves x {args.lds_seeds} seeds "
            f"(true-class margin or logit; ratio: to the best kGLM); alpha and damping chosen on "
            f"{args.tune_subsets} other halves x 1 seed and {args.lds_test} other test points; "
            f"mislabel at 10% flipped\n"
        )
        columns = [f"{k}_{p}" for p in PROTOCOLS for k in ("lds", "ratio", "chosen")]
        print(markdown(d["rows"], [*columns, "mislabel_auc", "found_top10"]))
        print(f"\nretrained outputs of two seeds agree at Spearman {d['seed_agreement']:.3f}")
        oracle = d["kglm_oracle"]
        best = {p: max(r.get(f"lds_{p}", 0) for r in d["rows"]) for p in PROTOCOLS}
        print(
            "kGLM at its best kernel and alpha read on the evaluation set (oracle): "
            + "; ".join(
                f"{p} {oracle[p]:.3f} (best method {best[p] / oracle[p]:.2f}x)" for p in PROTOCOLS
            )
        )
        print(f"\ntimings (s): { {k: round(v, 1) for k, v in d['timings'].items()} }\n", flush=True)
    if args.skip != "fmnist":
        f = fmnist_experiment(args)
        results["fmnist"] = f
        print(
            f"## Fashion-MNIST CNN, {f['n_poisoned']} of {f['n_train']} training images poisoned "
            f"(3x3 patch -> class 0): network attack success {f['network_attack_success']:.3f}, "
            f"clean accuracy {f['network_clean_accuracy']:.3f}\n"
        )
        print(markdown(f["rows"], ["surrogate_attack_success", "precision_at_10", "auc"]))
        print(f"\ntimings (s): { {k: round(v, 1) for k, v in f['timings'].items()} }\n")
    results["total_seconds"] = time.perf_counter() - started
    print(f"total {results['total_seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
