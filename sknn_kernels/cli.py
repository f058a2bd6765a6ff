"""The ``sknn-kernels`` command line. Thin: it only composes the public API.

``sknn-kernels compare`` loads a data set and a network (a trained reference network by
default), cross-validates kernel surrogates of the network with
:func:`sknn_kernels.compare_surrogates`, probes its layers with :class:`PCAProbe`, and
writes a report folder (CSV, JSON, PNG figures and an ``index.html``).
"""

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ._version import __version__

__all__ = ["main", "build_parser"]

DEFAULT_KERNELS = ("pntk", "trntk", "ck", "embedding", "proj-pntk")
# Qadeer et al.'s comparison, normalised and not: CK vs NTK kernel regression
REGRESSION_KERNELS = ("pntk", "ck", "pntk0", "ck0")
REGRESSION_DATASETS = ("diabetes", "smooth")


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2, no traceback."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sknn-kernels",
        description=(
            "Turn a trained PyTorch network into scikit-learn features and neural tangent "
            "kernels, and fit faithful kernel surrogate models."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sknn-kernels {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare = commands.add_parser(
        "compare",
        help="compare kernel surrogates of a network and write a report",
        description=(
            "Cross-validate kernel surrogates (kernel x estimator) of a network, measure how "
            "faithful each is (Kendall tau on true-class probabilities, test accuracy "
            "difference), probe its layers with PCA, and write a report folder."
        ),
    )
    data = compare.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=("digits", "fashion-mnist") + REGRESSION_DATASETS,
        default=None,
        help="bundled data set (default: digits, shipped inside scikit-learn); diabetes (sklearn) and "
             "smooth (a generated smooth function) are regression sets",
    )
    source.add_argument("--data", metavar="FILE.npz", help="arrays X, y (and optional X_test, y_test)")
    data.add_argument("--classes", nargs="+", type=int, metavar="C", help="keep only these class labels")
    data.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="auto: regression for the regression data sets and for continuous y in --data",
    )
    data.add_argument("--max-train", type=int, metavar="N", help="subsample the training set to N points")
    data.add_argument("--max-test", type=int, metavar="N", help="subsample the test set to N points")
    data.add_argument(
        "--input-shape", nargs="+", type=int, metavar="D", help="per-sample shape the network expects"
    )
    net = compare.add_argument_group("network")
    net.add_argument(
        "--model",
        metavar="FILE|MODULE:FACTORY",
        help="a TorchScript file or torch.save'd module, or package.module:factory (with --weights)",
    )
    net.add_argument("--weights", metavar="STATE_DICT.pt", help="state_dict for --model MODULE:FACTORY")
    net.add_argument("--epochs", type=int, default=None,
                     help="epochs for the reference network (default 30)")
    run = compare.add_argument_group("comparison")
    run.add_argument("--kernels", nargs="+", default=None, metavar="K",
                     help=f"default: {' '.join(DEFAULT_KERNELS)} (regression: {' '.join(REGRESSION_KERNELS)}); "
                          "a name ending in 0 (pntk0, ck0) is the unnormalised kernel")
    run.add_argument("--estimators", nargs="+", default=None, metavar="E",
                     help="label-trained: kglm ncc knn svc (regression: krr); distilled from the network: "
                          "kglm-logits kglm-network (regression: krr-network). Default: kglm kglm-logits "
                          "ncc knn svc (regression: krr krr-network)")
    run.add_argument("--cv", type=int, default=5, help="cross-validation folds (default 5)")
    run.add_argument("--projection-dim", type=int, default=512, help="k for proj-* kernels")
    run.add_argument("--no-probe", action="store_true", help="skip the per-layer PCA probes")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--n-jobs", type=int, default=None, help="parallel folds (joblib)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="sknn-report", metavar="DIR", help="report folder")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    """Entry point of the ``sknn-kernels`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _compare(args)
    except UsageError as exc:
        print(f"sknn-kernels: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("sknn-kernels: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- data
def _load_data(args):
    """Return (X_train, y_train, X_test, y_test, image_shape or None, name, task).

    Regression targets are standardised with the training mean and std (the report is in
    those units).
    """
    from sklearn.model_selection import train_test_split

    if args.data:
        path = Path(args.data)
        try:
            arrays = np.load(path, allow_pickle=False)
            X, y = np.asarray(arrays["X"]), np.asarray(arrays["y"])
            X_test = np.asarray(arrays["X_test"]) if "X_test" in arrays else None
            y_test = np.asarray(arrays["y_test"]) if "y_test" in arrays else None
        except FileNotFoundError:
            raise UsageError(f"--data {path}: no such file.") from None
        except KeyError as exc:
            raise UsageError(f"--data {path}: the archive has no array {exc}; it needs X and y.") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--data {path}: not a readable .npz archive ({exc}).") from None
        if X.ndim < 2 or len(X) != len(y):
            raise UsageError(f"--data {path}: X must be (n, ...) with one label in y per row.")
        image_shape = tuple(X.shape[1:]) if X.ndim > 2 else None
        name = path.stem
    elif args.dataset in REGRESSION_DATASETS:
        from sklearn.datasets import load_diabetes

        from .datasets import make_smooth_regression

        name, X_test, y_test, image_shape = args.dataset, None, None, None
        if name == "diabetes":
            X, y = load_diabetes(return_X_y=True)
            X = X * np.sqrt(len(X))  # sklearn scales each column to unit norm: back to unit variance
        else:
            X, y = make_smooth_regression(1000, 2, noise=0.05, random_state=args.seed)
    else:
        from .datasets import load_digits_images, load_fashion_mnist

        name = args.dataset or "digits"
        try:
            if name == "digits":
                bunch = load_digits_images(classes=args.classes, random_state=args.seed)
            else:
                bunch = load_fashion_mnist(classes=args.classes)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:  # e.g. --classes naming a label the data set lacks
            raise UsageError(f"--classes: {exc}") from None
        X, y, X_test, y_test = bunch.X_train, bunch.y_train, bunch.X_test, bunch.y_test
        image_shape = tuple(bunch.input_shape)

    X = X.reshape(len(X), -1).astype(np.float32)
    if X_test is not None:
        X_test = np.asarray(X_test).reshape(len(X_test), -1).astype(np.float32)
    if args.classes and args.data:
        X, y = _select_classes(X, y, args.classes, "training")
        if X_test is not None:
            X_test, y_test = _select_classes(X_test, y_test, args.classes, "test")
    task = _task(args, y)
    if X_test is None:
        X, X_test, y, y_test = train_test_split(
            X, y, test_size=0.25, stratify=y if task == "classification" else None, random_state=args.seed
        )
    X, y = _subsample(X, y, args.max_train, args.seed)
    X_test, y_test = _subsample(X_test, y_test, args.max_test, args.seed)
    if task == "regression":
        mean, std = np.mean(y, axis=0), np.std(y, axis=0)
        std = np.where(std > 0, std, 1.0)
        y, y_test = (np.asarray(y, float) - mean) / std, (np.asarray(y_test, float) - mean) / std
    elif len(np.unique(y)) < 2:
        raise UsageError("the training data has fewer than two classes.")
    if args.input_shape:
        image_shape = tuple(args.input_shape)
        if int(np.prod(image_shape)) != X.shape[1]:
            raise UsageError(f"--input-shape {image_shape} does not hold {X.shape[1]} features per sample.")
    return X, y, X_test, y_test, image_shape, name, task


def _task(args, y):
    if args.task != "auto":
        return args.task
    if args.dataset in REGRESSION_DATASETS:
        return "regression"
    from .compare import detect_task

    return detect_task(y)


def _select_classes(X, y, classes, what):
    keep = np.isin(y, classes)
    missing = sorted(set(classes) - set(np.unique(y).tolist()))
    if missing:
        raise UsageError(f"--classes: the {what} labels have no class {missing}.")
    return X[keep], y[keep]


def _subsample(X, y, n, seed):
    if n is None or n >= len(X):
        return X, y
    if n < 2:
        raise UsageError("--max-train/--max-test must be at least 2.")
    idx = np.random.default_rng(seed).choice(len(X), size=n, replace=False)
    return X[np.sort(idx)], y[np.sort(idx)]


# ------------------------------------------------------------------------ network
def _load_network(args, X, y, image_shape, progress, task="classification"):
    """Return (network, input_shape fed to it)."""
    import torch

    if args.model is None:
        from .datasets import make_cnn, make_mlp, train_reference_network

        # CNN for images, MLP for vectors
        images = image_shape is not None and len(image_shape) == 3
        builder, input_shape = (make_cnn, image_shape) if images else (make_mlp, None)
        epochs = args.epochs if args.epochs is not None else 30  # more overfits diabetes
        network = train_reference_network(
            builder, X, y, epochs=epochs, seed=args.seed, input_shape=input_shape, verbose=progress, task=task
        )
        return network, input_shape

    input_shape = tuple(args.input_shape) if args.input_shape else None
    if ":" in args.model and not Path(args.model).exists():
        module_name, _, factory_name = args.model.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"--model {args.model}: cannot import the factory ({exc}).") from None
        network = factory()
        if args.weights:
            try:
                state = torch.load(args.weights, map_location="cpu", weights_only=True)
                network.load_state_dict(state)
            except FileNotFoundError:
                raise UsageError(f"--weights {args.weights}: no such file.") from None
            except (RuntimeError, OSError, ValueError) as exc:
                raise UsageError(f"--weights {args.weights}: cannot load it into the network ({exc}).") from None
    else:
        path = Path(args.model)
        if not path.is_file():
            raise UsageError(f"--model {path}: no such file.")
        if args.weights:
            raise UsageError("--weights goes with --model package.module:factory, not with a model file.")
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError):
            try:  # a torch.save'd module: trusted input by the user's own choice
                network = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
                raise UsageError(f"--model {path}: neither TorchScript nor a torch.save'd module ({exc}).") from None
    if not isinstance(network, torch.nn.Module):
        raise UsageError(f"--model {args.model}: got a {type(network).__name__}, not a torch.nn.Module.")
    return network, input_shape


# ------------------------------------------------------------------------ compare
def _compare(args):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if args.cv < 2:
        raise UsageError("--cv must be at least 2.")
    if args.max_train is not None and args.max_train < 2 * args.cv:
        raise UsageError(f"--max-train {args.max_train} is too small for {args.cv} folds.")
    progress = not args.quiet
    started = time.perf_counter()
    X, y, X_test, y_test, image_shape, name, task = _load_data(args)
    targets = f"{len(np.unique(y))} classes" if task == "classification" else "regression, standardised y"
    _say(progress, f"data: {name}, {len(X)} train / {len(X_test)} test, {targets}")
    network, input_shape = _load_network(args, X, y, image_shape, progress, task)

    from .report import SurrogateReport

    report = SurrogateReport(
        network,
        X,
        y,
        X_test,
        y_test,
        input_shape=input_shape,
        image_shape=image_shape,
        device=args.device,
        seed=args.seed,
        progress=progress,
        task=task,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
        # NearestCentroid divides by each feature's spread: constant pixels (image borders)
        # make NaN deviations it does not use for predictions.
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, module=r"sklearn\.neighbors\._nearest_centroid"
        )
        report.network_scores()
        network_score = "network_test_r2" if task == "regression" else "network_test_accuracy"
        _say(progress, f"{network_score.replace('_', ' ')}: {report.summary[network_score]:.4f}")
        default_kernels = REGRESSION_KERNELS if task == "regression" else DEFAULT_KERNELS
        try:
            report.compare(
                kernels=args.kernels or default_kernels,
                estimators=args.estimators,
                cv=args.cv,
                n_jobs=args.n_jobs,
                projection_dim=args.projection_dim,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        report.evaluate_best()
        if not args.no_probe and task == "classification":  # the probes classify
            report.probe_layers()
    out = Path(args.out)
    written = report.write(out)
    print()
    print(report.table_text())
    print()
    best = f"best surrogate: {report.summary['best_kernel']} + {report.summary['best_estimator']}: "
    if task == "regression":
        print(best + f"test R² vs network {report.summary['best_test_r2_network']:.4f}, "
              f"tau {report.summary['best_test_tau']:.4f}, "
              f"loss / network loss {report.summary['best_test_relative_loss']:.4f}")
    else:
        print(best + f"test tau {report.summary['best_test_tau']:.4f}, TAD {report.summary['best_test_tad']:+.4f}")
    print(f"report: {out}/ ({', '.join(sorted(p.name for p in written))})")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _say(progress, message):
    if progress:
        print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
