"""Reproduce Qadeer et al.'s claim: kernel regression on the CK is only marginally worse than on the NTK.

Qadeer, Engel, Howard, Tsou, Vargas, Stinis, Chiang, "Efficient kernel surrogates for neural
network-based regression" (arXiv 2310.18612), papers.md §3. Only the abstract is available: for
"the regression problem of smooth functions ... the CK performance is only marginally worse than
that of the NTK and, in certain cases, is shown to be superior"; they report the relative test
loss L(CK) / L(NTK). Their functions, widths and training schedules are not public, so this
script uses its own, stated here:

* **smooth**: ``sknn_kernels.datasets.make_smooth_regression`` on ``[-1, 1]^2``,
  ``f(x) = sin(pi x1) cos(pi x2 / 2) + 0.5 mean(x^2)`` plus noise of s.d. 0.05; 500 train and
  500 test points drawn per seed.
* **diabetes**: sklearn's diabetes data (442 patients, 10 features), a 75/25 split per seed;
  targets standardised with the training mean and std.
* Network: ``make_mlp(d, 1, hidden=(64, 64))`` (ReLU), Adam lr 1e-3, batch 32, MSE,
  ``--epochs`` (default 300), seeded (``train_reference_network(task="regression")``).
* Kernels of the trained network, unnormalised (``normalize="std"``, one global scale, so one
  alpha grid fits both): NTK = the empirical NTK of the single output (= pNTK = trNTK), and
  CK = the Gram of the last hidden layer's output (the input to the last ``nn.Linear``).
* Kernel regression: ``KernelSurrogateRegressor`` (kernel ridge with an unpenalised intercept)
  fitted on the **true targets**, ``alpha`` chosen per kernel by 5-fold ``GridSearchCV`` on the
  training set over ``--alphas``; test loss = MSE on the test set. Reported: L(NN), L(NTK),
  L(CK), the relative test loss L(CK)/L(NTK) (the paper's quantity), and L(kernel)/L(NN).
  Also the distilled regressions (``target="network"``, alpha 1e-6): R² between the network's
  and the surrogate's test outputs, i.e. how faithfully each kernel can reproduce the network.
* Mean ± s.e. (std/√n) over ``--seeds`` seeds (each seed: data split/draw, initialisation,
  shuffling).

Run (defaults: 5 seeds, both data sets; 270 s measured on 2 busy CPU cores)::

    python benchmarks/reproduce_regression.py
    python benchmarks/reproduce_regression.py --datasets smooth --seeds 10 --epochs 1000
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import GridSearchCV, train_test_split

from sknn_kernels import KernelSurrogateRegressor, NTKFeaturizer
from sknn_kernels.datasets import make_mlp, make_smooth_regression, train_reference_network
from sknn_kernels.metrics import network_outputs, output_r2, relative_test_loss

KERNELS = {"NTK": "pntk", "CK": "ck"}


def load(name, seed):
    """(X_train, y_train, X_test, y_test), float32 inputs, standardised float64 targets."""
    if name == "smooth":
        X, y = make_smooth_regression(1000, 2, noise=0.05, random_state=seed)
        X_train, X_test, y_train, y_test = X[:500], X[500:], y[:500], y[500:]
    else:
        X, y = load_diabetes(return_X_y=True)
        X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
    mean, std = y_train.mean(), y_train.std()
    return X_train, (y_train - mean) / std, X_test, (y_test - mean) / std


def run_seed(name, seed, epochs, alphas):
    X, y, X_test, y_test = load(name, seed)
    row = {}
    t0 = time.perf_counter()
    net = train_reference_network(
        lambda d, o: make_mlp(d, o, hidden=(64, 64), seed=seed),
        X,
        y,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        task="regression",
    )
    row["t_train"] = time.perf_counter() - t0
    f_net = network_outputs(net, X_test, device="cpu")[:, 0]
    row["loss NN"] = mean_squared_error(y_test, f_net)
    preds = {}
    t0 = time.perf_counter()
    for label, kernel in KERNELS.items():
        feat = NTKFeaturizer(net, kernel=kernel, normalize="std", dtype="float64", device="cpu")
        K, K_test = feat.fit_transform(X), feat.transform(X_test)
        search = GridSearchCV(
            KernelSurrogateRegressor(device="cpu"),
            {"alpha": alphas},
            cv=5,
            scoring="neg_mean_squared_error",
        ).fit(K, y)
        preds[label] = search.predict(K_test)
        row[f"loss {label}"] = mean_squared_error(y_test, preds[label])
        row[f"alpha {label}"] = search.best_params_["alpha"]
        row[f"vs NN {label}"] = row[f"loss {label}"] / row["loss NN"]
        distilled = KernelSurrogateRegressor(
            alpha=1e-6, target="network", network=net, device="cpu"
        )
        row[f"R2 distilled {label}"] = output_r2(
            f_net, distilled.fit(K, network_X=X).predict(K_test)
        )
    row["ratio"] = relative_test_loss(y_test, preds["CK"], preds["NTK"])
    row["t_kernels"] = time.perf_counter() - t0
    return row


def mean_se(values):
    v = np.asarray(values, dtype=float)
    return v.mean(), v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=("smooth", "diabetes"), default=["smooth", "diabetes"]
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(
        "| data set | NN test MSE | NTK test MSE | CK test MSE | L(CK)/L(NTK) | L(NTK)/L(NN) | L(CK)/L(NN) "
        "| CK better (seeds) | alpha NTK / CK (median) | distilled R² vs NN: NTK / CK | seconds/seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        rows = [run_seed(name, seed, args.epochs, args.alphas) for seed in range(args.seeds)]
        cell = {key: "{:.4f} ± {:.4f}".format(*mean_se([r[key] for r in rows])) for key in rows[0]}
        better = sum(r["ratio"] < 1 for r in rows)
        alphas = " / ".join(f"{np.median([r[f'alpha {k}'] for r in rows]):.0e}" for k in KERNELS)
        seconds = np.mean([r["t_train"] + r["t_kernels"] for r in rows])
        print(
            f"| {name} | {cell['loss NN']} | {cell['loss NTK']} | {cell['loss CK']} | {cell['ratio']} | "
            f"{cell['vs NN NTK']} | {cell['vs NN CK']} | {better}/{len(rows)} | {alphas} | "
            f"{cell['R2 distilled NTK']} / {cell['R2 distilled CK']} | {seconds:.0f} |",
            flush=True,
        )
    print(
        f"\n{args.seeds} seeds, {args.epochs} epochs, mean ± s.e.; targets standardised (MSE in units of "
        f"the training variance). Total wall time: {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
