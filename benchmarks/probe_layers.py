"""Per-layer PCA probes and neural collapse of small trained networks (issue 5's must-show).

For each layer: how many principal components k-NN, nearest-class-centre (NCC) and
linear probes need to reach 99% of their full-width accuracy, the share of the
layer's variance those components hold, NC1 on the training and held-out data,
and the first layer from which NCC matches the linear probe (collapse onset).
Compared with Harlev et al. 2023 (ResNet-18 / CIFAR-10): "in certain layers, as
little as 20% of the variance is necessary", "the first ~100 PCs completely
determine the performance of the k-NN and NCC classifiers".

The network is trained on the training split; the probes are cross-validated
(5 folds) on the held-out split's representations, which the network never saw.

Run (offline, CPU)::

    python benchmarks/probe_layers.py        # digits MLP + CNN; Fashion-MNIST CNN if installed
    python benchmarks/probe_layers.py --dataset digits --quick
    python benchmarks/probe_layers.py --plots probe-figures/  # also save the figures
"""

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from sknn_kernels import EmbeddingExtractor
from sknn_kernels.datasets import (
    FASHION_MNIST_ROOT,
    load_digits_images,
    load_fashion_mnist,
    make_cnn,
    make_mlp,
    train_reference_network,
)
from sknn_kernels.features.probe import PCAProbe
from sknn_kernels.metrics import collapse_onset, network_proba, neural_collapse

GRID = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200)


def layer_table(probe, X_train, y_train, X_test, y_test, score_fraction=0.99):
    """One row per layer: components needed per probe, their variance share, NC1."""
    # dicts of arrays (column -> array), wrapped as DataFrames for grouping
    needed = pd.DataFrame(probe.components_needed(score_fraction))
    results = pd.DataFrame(probe.probe_results_)
    # NC1 on the training data (Papyan's setting) and on the held-out data, same extractor
    X_train, y_train = X_train[:4000], y_train[:4000]  # bounds memory on wide layers
    extractor = EmbeddingExtractor(
        probe.network, layers=probe.layers_, input_shape=probe.input_shape, device="cpu"
    ).fit(X_train)
    Z_train, Z_test = extractor.transform(X_train), extractor.transform(X_test)
    rows = []
    for layer in probe.layers_:
        cols = extractor.feature_slices_[layer]
        row = {"layer": layer, "width": cols.stop - cols.start}
        for r in needed[needed["layer"] == layer].itertuples():
            row[f"{r.probe} k"] = r.n_components
            row[f"{r.probe} var"] = round(r.explained_variance, 3)
            row[f"{r.probe} full acc"] = round(r.full_score, 3)
        best = results[results["layer"] == layer].groupby("probe")["score_mean"].max()
        row["linear-ncc gap"] = round(best["linear"] - best["ncc"], 3)
        row["NC1 train"] = round(neural_collapse(Z_train[:, cols], y_train).nc1, 3)
        row["NC1 test"] = round(neural_collapse(Z_test[:, cols], y_test).nc1, 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


def run(name, network, data, layers, grid, n_jobs, plots, input_shape=None, tolerance=0.01):
    t0 = time.perf_counter()
    probe = PCAProbe(
        network,
        layers=layers,
        n_components=0.95,
        probe_components=grid,
        cv=5,
        input_shape=input_shape,
        device="cpu",
        n_jobs=n_jobs,
        random_state=0,
    ).fit(data.X_test, data.y_test)
    table = layer_table(probe, data.X_train, data.y_train, data.X_test, data.y_test)
    onset = collapse_onset(probe, tolerance=tolerance)
    results = pd.DataFrame(probe.probe_results_)
    # the paper's two claims, read off the curves
    at100 = results[results["n_components"] == 100].set_index(["layer", "probe"])["score_mean"]
    full = results.groupby(["layer", "probe"])["score_mean"].last()
    print(
        f"\n=== {name}: probes on {len(data.y_test)} held-out samples, 5-fold CV "
        f"({time.perf_counter() - t0:.0f} s) ==="
    )
    print(
        "k = fewest probed PCs reaching 99% of the full-width accuracy; "
        "var = explained-variance share of those k"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string())
    print(f"collapse onset (NCC within {tolerance:.2f} of linear from this layer on): {onset}")
    for probe_name in ("knn", "ncc"):
        gaps = [
            full[(layer, probe_name)] - at100[(layer, probe_name)]
            for layer in probe.layers_
            if (layer, probe_name) in at100.index
        ]
        if gaps:
            print(
                f"{probe_name}: full-width accuracy minus accuracy at k=100 "
                "(max over layers wider than 100): "
                f"{max(gaps):+.3f}"
            )
    low = table[[f"{p} var" for p in ("knn", "ncc", "linear")]].min(axis=1)
    print(f"smallest variance share that reaches 99%: {low.min():.2f} (layer {low.idxmin()})")
    if plots:
        from sknn_kernels.plotting import plot_explained_variance, plot_probe_curves

        os.makedirs(plots, exist_ok=True)
        stem = os.path.join(plots, name.replace(" ", "_").replace("/", "-"))
        plot_probe_curves(probe).savefig(f"{stem}_probes.png", dpi=100)
        plot_explained_variance(probe).savefig(f"{stem}_variance.png", dpi=100)
    return table


def train_and_probe(title, builder, data, layers, epochs, args, input_shape=None, verbose=False):
    """Train a reference network on ``data``, print its test accuracy, and probe its layers."""
    network = train_reference_network(
        builder,
        data.X_train,
        data.y_train,
        epochs=epochs,
        seed=args.seed,
        input_shape=input_shape,
        verbose=verbose,
    )
    proba = network_proba(network, data.X_test, device="cpu", input_shape=input_shape)
    test_accuracy = float(np.mean(proba.argmax(1) == data.y_test))
    print(f"\n{title}: test accuracy {test_accuracy:.3f} ({epochs} epochs)")
    run(title, network, data, layers, GRID, args.n_jobs, args.plots, input_shape=input_shape)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["digits", "fashion-mnist", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples (smoke run)")
    parser.add_argument("--n-train", type=int, default=10000, help="Fashion-MNIST training images")
    parser.add_argument(
        "--n-test", type=int, default=2000, help="Fashion-MNIST held-out images probed"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override training epochs")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", default=None, help="folder for PNG figures")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    if args.dataset in ("digits", "all"):
        data = load_digits_images(test_size=0.4, random_state=args.seed)
        epochs = args.epochs or (10 if args.quick else 60)
        train_and_probe(
            "digits MLP 64-128-64-32-10",
            lambda n, c: make_mlp(n, c, hidden=(128, 64, 32), seed=args.seed),
            data,
            ["0:input", "1", "3", "5", "6"],
            epochs,
            args,
        )
        train_and_probe(
            "digits CNN (16-32 conv, 64 fc)",
            lambda s, c: make_cnn(s, c, channels=(16, 32), hidden=64, seed=args.seed),
            data,
            ["0:input", "2", "5", "8", "9"],
            epochs,
            args,
            input_shape=data.input_shape,
        )

    if args.dataset in ("fashion-mnist", "all"):
        if not os.path.isdir(FASHION_MNIST_ROOT):
            print(
                f"\nFashion-MNIST skipped: {FASHION_MNIST_ROOT} missing "
                "(apt-get install dataset-fashion-mnist)."
            )
        else:
            n_train, n_test = (2000, 500) if args.quick else (args.n_train, args.n_test)
            data = load_fashion_mnist(n_train=n_train, n_test=n_test, random_state=args.seed)
            epochs = args.epochs or (1 if args.quick else 4)
            train_and_probe(
                f"Fashion-MNIST CNN (16-32 conv, 128 fc) on {n_train} images",
                lambda s, c: make_cnn(s, c, channels=(16, 32), hidden=128, seed=args.seed),
                data,
                ["0:input", "2", "5", "8", "9"],
                epochs,
                args,
                input_shape=data.input_shape,
                verbose=sys.stderr.isatty(),
            )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
