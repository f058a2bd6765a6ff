"""The ``sknn-kernels`` command line. Thin: it only composes the public API.

``sknn-kernels compare`` loads a data set and a network (a trained reference network by
default), cross-validates kernel surrogates of the network with
:func:`sknn_kernels.compare_surrogates`, probes its layers with :class:`PCAProbe`, and
writes a report folder (CSV, JSON, PNG figures and an ``index.html``).
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

from ._version import __version__

__all__ = ["build_parser", "main"]

DEFAULT_KERNELS = ("pntk", "trntk", "ck", "embedding", "proj-pntk")
# Qadeer et al.'s comparison, normalised and not: CK vs NTK kernel regression
REGRESSION_KERNELS = ("pntk", "ck", "pntk0", "ck0")
REGRESSION_DATASETS = ("diabetes", "smooth")
TEXT_DATASETS = ("tweets",)
# Text: a kernel surrogate of a transformer costs a backward pass per sample, so the default
# job is smaller (documented in docs/command_line.rst): 2 kernels x 2 estimators, 3 folds.
TEXT_KERNELS = ("pntk", "ck")
TEXT_ESTIMATORS = ("kglm", "kglm-logits")
TEXT_SIZES = (300, 150)  # default --max-train / --max-test for text
_HEADS = ("head", "classifier", "score")  # a classifier head's name in common text models


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
        choices=("digits", "fashion-mnist") + REGRESSION_DATASETS + TEXT_DATASETS,
        default=None,
        help="bundled data set (default: digits, shipped inside scikit-learn); diabetes (sklearn) and "
        "smooth (a generated smooth function) are regression sets; tweets (sentiment, needs the "
        "text extra) trains a head on all-MiniLM-L6-v2",
    )
    source.add_argument(
        "--data",
        metavar="FILE.npz|FILE.csv",
        help="arrays X, y (and optional X_test, y_test), or a CSV of texts with "
        "--text-column and --label-column",
    )
    data.add_argument("--text-column", metavar="C", help="CSV column holding the texts")
    data.add_argument("--label-column", metavar="L", help="CSV column holding the labels")
    data.add_argument(
        "--max-length",
        type=int,
        default=32,
        metavar="T",
        help="tokens per text (padding/truncation; default 32)",
    )
    data.add_argument(
        "--classes", nargs="+", type=int, metavar="C", help="keep only these class labels"
    )
    data.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="auto: regression for the regression data sets and for continuous y in --data",
    )
    data.add_argument(
        "--max-train", type=int, metavar="N", help="subsample the training set to N points"
    )
    data.add_argument(
        "--max-test", type=int, metavar="N", help="subsample the test set to N points"
    )
    data.add_argument(
        "--input-shape",
        nargs="+",
        type=int,
        metavar="D",
        help="per-sample shape the network expects",
    )
    net = compare.add_argument_group("network")
    net.add_argument(
        "--model",
        metavar="FILE|DIR|MODULE:FACTORY",
        help="a TorchScript file or torch.save'd module, a Hugging Face model directory "
        "(AutoModelForSequenceClassification, with its tokenizer; texts only), or "
        "package.module:factory (with --weights)",
    )
    net.add_argument(
        "--weights", metavar="STATE_DICT.pt", help="state_dict for --model MODULE:FACTORY"
    )
    net.add_argument(
        "--epochs", type=int, default=None, help="epochs for the reference network (default 30)"
    )
    run = compare.add_argument_group("comparison")
    run.add_argument(
        "--kernels",
        nargs="+",
        default=None,
        metavar="K",
        help=f"default: {' '.join(DEFAULT_KERNELS)} (regression: {' '.join(REGRESSION_KERNELS)}); "
        "a name ending in 0 (pntk0, ck0) is the unnormalised kernel",
    )
    run.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="E",
        help="label-trained: kglm ncc knn svc (regression: krr); distilled from the network: "
        "kglm-logits kglm-network (regression: krr-network). Default: kglm kglm-logits "
        "ncc knn svc (regression: krr krr-network)",
    )
    run.add_argument(
        "--cv", type=int, default=None, help="cross-validation folds (default 5; 3 for texts)"
    )
    run.add_argument("--projection-dim", type=int, default=512, help="k for proj-* kernels")
    run.add_argument("--no-probe", action="store_true", help="skip the per-layer PCA probes")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--n-jobs", type=int, default=None, help="parallel folds (joblib)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="sknn-report", metavar="DIR", help="report folder")
    run.add_argument(
        "--poison",
        type=float,
        metavar="FRACTION",
        help="plant a backdoor (3x3 corner patch) in this fraction of the training data "
        "before training; adds a forensics section and columns to the report",
    )
    run.add_argument(
        "--poison-target",
        type=int,
        default=None,
        metavar="C",
        help="label the backdoor sends to (default: the smallest label)",
    )
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
            raise UsageError(
                f"--data {path}: the archive has no array {exc}; it needs X and y."
            ) from None
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
            X = X * np.sqrt(
                len(X)
            )  # sklearn scales each column to unit norm: back to unit variance
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
            X,
            y,
            test_size=0.25,
            stratify=y if task == "classification" else None,
            random_state=args.seed,
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
            raise UsageError(
                f"--input-shape {image_shape} does not hold {X.shape[1]} features per sample."
            )
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
            builder,
            X,
            y,
            epochs=epochs,
            seed=args.seed,
            input_shape=input_shape,
            verbose=progress,
            task=task,
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
                raise UsageError(
                    f"--weights {args.weights}: cannot load it into the network ({exc})."
                ) from None
    else:
        path = Path(args.model)
        if not path.is_file():
            raise UsageError(f"--model {path}: no such file.")
        if args.weights:
            raise UsageError(
                "--weights goes with --model package.module:factory, not with a model file."
            )
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError):
            try:  # a torch.save'd module: trusted input by the user's own choice
                network = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:
                raise UsageError(
                    f"--model {path}: neither TorchScript nor a torch.save'd module ({exc})."
                ) from None
    if not isinstance(network, torch.nn.Module):
        raise UsageError(
            f"--model {args.model}: got a {type(network).__name__}, not a torch.nn.Module."
        )
    return network, input_shape


# --------------------------------------------------------------------------- texts
def _load_text(args, progress):
    """Texts, a text network and its tokens: ``(X, y, X_test, y_test, name, network, texts, options)``.

    ``X`` is a ``SliceDict`` of ``input_ids``/``attention_mask`` (cross-validation slices it);
    ``options`` holds the featurizer, per-kernel and probe parameters of a transformer.
    """
    from skorch.helper import SliceDict

    from .datasets import load_tweets, train_reference_network

    try:
        from .text import SentenceClassifier, load_minilm, tokenize
    except ImportError as exc:  # pragma: no cover - text.py imports only torch and numpy
        raise UsageError(str(exc)) from None
    n_train, n_test = (args.max_train or TEXT_SIZES[0]), (args.max_test or TEXT_SIZES[1])
    try:
        if args.dataset in TEXT_DATASETS:
            name = args.dataset
            data = load_tweets(
                n_train=n_train, n_test=n_test, min_confidence=0.6, random_state=args.seed
            )
            names = np.asarray(data.target_names)  # the report shows sentiments, not indices
            texts_train, y, texts_test, y_test = (
                data.texts_train,
                names[data.y_train],
                data.texts_test,
                names[data.y_test],
            )
        else:
            name = Path(args.data).stem
            texts_train, y, texts_test, y_test = _read_text_csv(args, n_train, n_test)
        if args.model is not None:
            network, tokenizer = _load_hf_model(args.model)
        else:
            tokenizer, encoder = load_minilm()
            network = None
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    label2id = getattr(getattr(network, "config", None), "label2id", None) or {}
    if network is not None and set(np.unique(y)) <= set(label2id):
        # output column j of a Hugging Face classifier scores config.id2label[j]
        y, y_test = (np.array([label2id[v] for v in labels]) for labels in (y, y_test))
    classes = np.unique(y)  # otherwise output column j scores the j-th sorted label
    X = SliceDict(**tokenize(texts_train, tokenizer, max_length=args.max_length))
    X_test = tokenize(texts_test, tokenizer, max_length=args.max_length)
    if network is None:
        model = SentenceClassifier(encoder, n_classes=len(classes), train_layers=1)
        network = train_reference_network(
            model,
            X,
            y,
            epochs=args.epochs or 2,
            lr=5e-4,
            batch_size=16,
            seed=args.seed,
            verbose=progress,
        )
    elif network.config.num_labels != len(classes):
        raise UsageError(
            f"--model {args.model} has {network.config.num_labels} outputs but the data "
            f"have {len(classes)} classes."
        )
    blocks = _blocks(network)
    heads = [h for h in _HEADS if hasattr(network, h)]
    theta = heads + blocks[-1:]  # the gradient kernels' θ: the head and the last block
    options = {
        "featurizer": {"batch_size": 16},
        "kernels": {
            k: {"layers": theta}
            for k in ("pntk", "trntk", "loss_grad", "proj-pntk", "proj-trntk", "pntk0", "trntk0")
        },
        "probe": {"layers": blocks or "all", "pooling": "mean_tokens"},
    }
    return X, y, X_test, y_test, name, network, (list(texts_train), list(texts_test)), options


def _read_text_csv(args, n_train, n_test):
    """Texts and labels from a CSV (``--text-column``, ``--label-column``), split 3:1."""
    import csv

    from sklearn.model_selection import train_test_split

    if not args.text_column or not args.label_column:
        raise UsageError("--data FILE.csv needs --text-column and --label-column.")
    try:
        with open(args.data, newline="", encoding="utf-8", errors="replace") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise UsageError(f"--data {args.data}: no such file.") from None
    missing = [c for c in (args.text_column, args.label_column) if rows and c not in rows[0]]
    if not rows or missing:
        raise UsageError(
            f"--data {args.data}: no column {missing or 'rows'}; it has "
            f"{list(rows[0]) if rows else []}."
        )
    texts = np.array([r[args.text_column] for r in rows], dtype=object)
    labels = np.array([r[args.label_column] for r in rows])
    if len(np.unique(labels)) < 2:
        raise UsageError("the texts have fewer than two labels.")
    t_train, t_test, y, y_test = train_test_split(
        texts, labels, test_size=0.25, stratify=labels, random_state=args.seed
    )
    t_train, y = _subsample(t_train, y, n_train, args.seed)
    t_test, y_test = _subsample(t_test, y_test, n_test, args.seed)
    return list(t_train), y, list(t_test), y_test


def _load_hf_model(path):
    """A Hugging Face sequence classifier and its tokenizer from a local directory."""
    if not (Path(path) / "config.json").is_file():
        raise UsageError(
            f"--model {path}: for texts, a Hugging Face model directory (with "
            "config.json, weights and tokenizer files)."
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {path}: cannot load a sequence classifier ({exc}).") from None
    return model.eval(), tokenizer


def _blocks(network):
    """Names of the transformer blocks: the children of the longest ``nn.ModuleList``."""
    import torch

    lists = [
        (len(m), name) for name, m in network.named_modules() if isinstance(m, torch.nn.ModuleList)
    ]
    if not lists:
        return []
    _, name = max(lists)
    return [f"{name}.{i}" for i in range(max(lists)[0])]


# ------------------------------------------------------------------------ compare
def _compare(args):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    text = args.dataset in TEXT_DATASETS or (
        args.data is not None and Path(args.data).suffix == ".csv"
    )
    cv = args.cv if args.cv is not None else 3 if text else 5
    if cv < 2:
        raise UsageError("--cv must be at least 2.")
    if args.max_train is not None and args.max_train < 2 * cv:
        raise UsageError(f"--max-train {args.max_train} is too small for {cv} folds.")
    progress = not args.quiet
    started = time.perf_counter()
    if text:
        X, y, X_test, y_test, name, network, texts, text_options = _load_text(args, progress)
        image_shape, input_shape, task = None, None, "classification"
    else:
        X, y, X_test, y_test, image_shape, name, task = _load_data(args)
        texts, text_options = None, {}
    targets = (
        f"{len(np.unique(y))} classes" if task == "classification" else "regression, standardised y"
    )
    _say(progress, f"data: {name}, {len(y)} train / {len(y_test)} test, {targets}")
    backdoor = None
    if args.poison is not None and text:
        raise UsageError(
            "--poison plants an image patch: it is for image or feature data, not texts."
        )
    if args.poison is not None:
        if task != "classification":
            raise UsageError(
                "--poison relabels triggered samples to a target class: it needs a "
                "classification task, not --task regression."
            )
        X, y, backdoor = _plant_backdoor(args, X, y, X_test, y_test, image_shape)
        _say(
            progress,
            f"backdoor: {int(backdoor[2].sum())} poisoned training samples -> {backdoor[3]}",
        )
    if not text:
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
        texts=texts,
        featurizer_params=text_options.get("featurizer"),
        kernel_params=text_options.get("kernels"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings(
            "ignore", message="The `probability` parameter", category=FutureWarning
        )
        # NearestCentroid divides by each feature's spread: constant pixels (image borders)
        # make NaN deviations it does not use for predictions.
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, module=r"sklearn\.neighbors\._nearest_centroid"
        )
        report.network_scores()
        network_score = "network_test_r2" if task == "regression" else "network_test_accuracy"
        _say(progress, f"{network_score.replace('_', ' ')}: {report.summary[network_score]:.4f}")
        default_kernels = (
            TEXT_KERNELS
            if text
            else REGRESSION_KERNELS
            if task == "regression"
            else DEFAULT_KERNELS
        )
        try:
            report.compare(
                kernels=args.kernels or default_kernels,
                estimators=args.estimators or (TEXT_ESTIMATORS if text else None),
                cv=cv,
                n_jobs=args.n_jobs,
                projection_dim=args.projection_dim,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        report.evaluate_best()
        if not args.no_probe and task == "classification":  # the probes classify
            report.probe_layers(**text_options.get("probe", {}))
        if backdoor is not None:
            from .report import poison_forensics, write_forensics

            forensics = poison_forensics(report, *backdoor)
    out = Path(args.out)
    written = report.write(out)
    if backdoor is not None:
        written += write_forensics(report, forensics, out)
        _say(progress, f"network attack success: {report.summary['network_attack_success']:.3f}")
    print()
    print(report.table_text())
    print()
    best = f"best surrogate: {report.summary['best_kernel']} + {report.summary['best_estimator']}: "
    if task == "regression":
        print(
            best + f"test R² vs network {report.summary['best_test_r2_network']:.4f}, "
            f"tau {report.summary['best_test_tau']:.4f}, "
            f"loss / network loss {report.summary['best_test_relative_loss']:.4f}"
        )
    else:
        print(
            best
            + f"test tau {report.summary['best_test_tau']:.4f}, TAD {report.summary['best_test_tad']:+.4f}"
        )
    print(f"report: {out}/ ({', '.join(sorted(p.name for p in written))})")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _plant_backdoor(args, X, y, X_test, y_test, image_shape):
    """Poisoned (X, y) and the forensics inputs (X_trigger, y_trigger, mask, target)."""
    from .evaluation import add_trigger, poison

    target = int(np.min(y)) if args.poison_target is None else args.poison_target
    trigger = {"input_shape": image_shape, "patch_size": 3, "value": float(X.max())}
    if image_shape is None:
        trigger["patch_size"] = min(3, X.shape[1])
    try:
        X, y, mask = poison(X, y, args.poison, target, random_state=args.seed, **trigger)
    except ValueError as exc:
        raise UsageError(f"--poison: {exc}") from None
    keep = y_test != target
    return X, y, (add_trigger(X_test[keep], **trigger), y_test[keep], mask, target)


def _say(progress, message):
    if progress:
        print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
