"""Inputs of the ``sknn-kernels`` command line: data sets, data files, networks and texts.

Every user mistake is a :class:`UsageError`, which the CLI prints as one line (exit code 2).
"""

import importlib
from pathlib import Path

import numpy as np

REGRESSION_DATASETS = ("diabetes", "smooth")
TEXT_DATASETS = ("tweets",)
TEXT_SIZES = (300, 150)  # default --max-train / --max-test for text
TEXT_MAX_LENGTH = 32  # default --max-length
_HEADS = ("head", "classifier", "score")  # a classifier head's name in common text models


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2, no traceback."""


# --------------------------------------------------------------------------- data
def load_data(args):
    """Return (X_train, y_train, X_test, y_test, image_shape or None, name, task).

    Regression targets are standardised with the training mean and std (the report is in
    those units).
    """
    from sklearn.model_selection import train_test_split

    if args.data and Path(args.data).suffix == ".csv":
        X, y = _read_numeric_csv(args)
        X_test = y_test = image_shape = None
        name = Path(args.data).stem
    elif args.data:
        path = Path(args.data)
        try:
            arrays = np.load(path, allow_pickle=False)
            X, X_test = _npz_inputs(arrays, path)
            y = np.asarray(arrays["y"])
            y_test = np.asarray(arrays["y_test"]) if "y_test" in arrays else None
        except FileNotFoundError:
            raise UsageError(f"--data {path}: no such file.") from None
        except KeyError as exc:
            raise UsageError(
                f"--data {path}: the archive has no array {exc}; it needs X (or named inputs "
                "X_<name>) and y."
            ) from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--data {path}: not a readable .npz archive ({exc}).") from None
        for key, values in (
            ("y", y),
            ("y_test", y_test),
            *_named(X, "X"),
            *_named(X_test, "X_test"),
        ):
            _check_finite(values, f"--data {path}: {key}")
        if any(v.ndim < 2 or len(v) != len(y) for _, v in _named(X, "X")):
            raise UsageError(f"--data {path}: X must be (n, ...) with one label in y per row.")
        image_shape = tuple(X.shape[1:]) if isinstance(X, np.ndarray) and X.ndim > 2 else None
        name = path.stem
    elif args.dataset in REGRESSION_DATASETS:
        from sklearn.datasets import load_diabetes

        from ..datasets import make_smooth_regression

        name, X_test, y_test, image_shape = args.dataset, None, None, None
        if name == "diabetes":
            X, y = load_diabetes(return_X_y=True)
            X = X * np.sqrt(
                len(X)
            )  # sklearn scales each column to unit norm: back to unit variance
        else:
            X, y = make_smooth_regression(1000, 2, noise=0.05, random_state=args.seed)
    else:
        from ..datasets import load_digits_images, load_fashion_mnist

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

    X, X_test = _as_network_input(X), _as_network_input(X_test)
    if args.classes and args.data:
        X, y = _select_classes(X, y, args.classes, "training")
        if X_test is not None:
            X_test, y_test = _select_classes(X_test, y_test, args.classes, "test")
    task = _task(args, y)
    if X_test is None:
        train, test = train_test_split(
            np.arange(len(y)),
            test_size=0.25,
            stratify=y if task == "classification" else None,
            random_state=args.seed,
        )
        X, X_test, y, y_test = _take(X, train), _take(X, test), y[train], y[test]
    X, y = _subsample(X, y, args.max_train, args.seed)
    X_test, y_test = _subsample(X_test, y_test, args.max_test, args.seed)
    if task == "regression":
        mean, std = np.mean(y, axis=0), np.std(y, axis=0)
        std = np.where(std > 0, std, 1.0)
        y, y_test = (np.asarray(y, float) - mean) / std, (np.asarray(y_test, float) - mean) / std
    elif len(np.unique(y)) < 2:
        raise UsageError("the training data has fewer than two classes.")
    if args.input_shape and isinstance(X, dict):
        raise UsageError("--input-shape applies to one input array, not to named inputs X_<name>.")
    if args.input_shape:
        image_shape = tuple(args.input_shape)
        if int(np.prod(image_shape)) != X.shape[1]:
            raise UsageError(
                f"--input-shape {image_shape} does not hold {X.shape[1]} features per sample."
            )
    return X, y, X_test, y_test, image_shape, name, task


def _check_finite(values, what):
    """A clear error for NaN or inf in numeric data (kernels and metrics would turn NaN)."""
    if values is None or not np.issubdtype(np.asarray(values).dtype, np.number):
        return
    values = np.asarray(values).reshape(len(values), -1)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise UsageError(
            f"{what} has non-finite values (NaN or inf) in {bad.size} rows, the first "
            f"{bad[:5].tolist()}; drop or impute them first."
        )


def _read_numeric_csv(args):
    """Features and labels from a CSV of numbers with a header row."""
    import csv

    rows = list(csv.reader(_csv_lines(args)))
    if len(rows) < 3:
        raise UsageError(f"--data {args.data}: a header row and at least two data rows needed.")
    header, rows = rows[0], rows[1:]
    label = args.label_column or header[-1]
    if label not in header:
        raise UsageError(f"--label-column {label}: no such column; the CSV has {header}.")
    j = header.index(label)
    try:
        table = np.array(
            [[float(v) if v.strip() else np.nan for v in row] for row in rows], dtype=float
        )
    except ValueError as exc:
        raise UsageError(
            f"--data {args.data}: not a CSV of numbers ({exc}); a CSV of texts needs "
            "--text-column and --label-column."
        ) from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise UsageError(f"--data {args.data}: every row needs {len(header)} values.")
    X, y = np.delete(table, j, axis=1), table[:, j]
    _check_finite(X, f"--data {args.data}: the features")
    _check_finite(y, f"--data {args.data}: column {label}")
    if np.all(y == np.round(y)):
        y = y.astype(np.int64)  # integer labels stay labels
    return X, y


def _csv_lines(args):
    """The text of ``--data FILE.csv`` in ``--encoding`` (default UTF-8), as a CSV source.

    Bytes that are not valid in the encoding are an error naming where they are, never
    replaced: the texts and labels are the user's, and must reach the network unaltered.
    """
    import codecs
    import io

    encoding = getattr(args, "encoding", None) or "utf-8"
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise UsageError(f"--encoding {encoding}: unknown encoding.") from None
    try:
        raw = Path(args.data).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--data {args.data}: no such file.") from None
    except OSError as exc:
        raise UsageError(f"--data {args.data}: cannot read it ({exc}).") from None
    try:  # utf-8-sig: a leading byte-order mark is not part of the first column's name
        text = raw.decode("utf-8-sig" if name == "utf-8" else name)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"--data {args.data}: not valid {encoding} text (byte {raw[exc.start]:#04x} on line "
            f"{line}: {exc.reason}); pass its encoding, e.g. --encoding latin-1 or cp1252."
        ) from None
    return io.StringIO(text, newline="")


def _task(args, y):
    from .compare import detect_task

    if args.task == "classification" and detect_task(y) == "regression":
        raise UsageError(
            f"--task classification: the targets are continuous ({len(np.unique(y))} distinct "
            "values), not class labels; use --task regression (or auto)."
        )
    if args.task != "auto":
        return args.task
    if args.dataset in REGRESSION_DATASETS:
        return "regression"
    return detect_task(y)


def _npz_inputs(arrays, path):
    """``(X, X_test)`` of an archive: arrays ``X``/``X_test``, or named inputs ``X_<name>`` (and
    ``X_test_<name>``) as dicts of arrays that keep their shapes."""
    if "X" in arrays:
        return np.asarray(arrays["X"]), (
            np.asarray(arrays["X_test"]) if "X_test" in arrays else None
        )
    names = [k[2:] for k in arrays.files if k.startswith("X_") and not k.startswith("X_test")]
    if not names:
        raise KeyError("X")
    X = {name: np.asarray(arrays[f"X_{name}"]) for name in names}
    tests = [f"X_test_{name}" for name in names]
    present = [k for k in tests if k in arrays]
    if present and len(present) != len(tests):
        raise UsageError(
            f"--data {path}: give X_test_<name> for every named input ({', '.join(tests)}) or none."
        )
    X_test = {name: np.asarray(arrays[k]) for name, k in zip(names, tests)} if present else None
    for inputs in (X, X_test or {}):
        if len({len(v) for v in inputs.values()}) > 1:
            raise UsageError(
                f"--data {path}: the named inputs have different numbers of rows "
                f"({', '.join(f'{k}: {len(v)}' for k, v in inputs.items())})."
            )
    return X, X_test


def _named(X, prefix):
    """``[(label, array)]`` of an array or of each named input."""
    if X is None:
        return []
    if isinstance(X, dict):
        return [(f"{prefix}_{k}", v) for k, v in X.items()]
    return [(prefix, X)]


def _as_network_input(X):
    """One array: flat float32 rows (the estimators' 2-D form, reshaped by ``input_shape``). Named
    inputs keep their shapes; floats become float32, integers (token ids) stay integers."""
    if X is None:
        return None
    if isinstance(X, dict):
        return {
            k: v if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
            for k, v in X.items()
        }
    return np.asarray(X).reshape(len(X), -1).astype(np.float32)


def _take(X, idx):
    """Rows ``idx`` of an array or of every named input."""
    return {k: v[idx] for k, v in X.items()} if isinstance(X, dict) else X[idx]


def _select_classes(X, y, classes, what):
    keep = np.isin(y, classes)
    missing = sorted(set(classes) - set(np.unique(y).tolist()))
    if missing:
        raise UsageError(f"--classes: the {what} labels have no class {missing}.")
    return _take(X, keep), y[keep]


def _subsample(X, y, n, seed):
    if n is None or n >= len(y):
        return X, y
    if n < 2:
        raise UsageError("--max-train/--max-test must be at least 2.")
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
    return _take(X, idx), y[idx]


# ------------------------------------------------------------------------ network
def load_network(args, X, y, image_shape, progress, task="classification"):
    """Return (network, input_shape fed to it)."""
    import torch

    if args.model is None and isinstance(X, dict):
        raise UsageError(
            "named inputs X_<name> need your multi-input network: pass --model FILE (or "
            "package.module:factory with --weights); no reference network is trained for them."
        )
    if args.model is None:
        from ..datasets import make_cnn, make_mlp, train_reference_network

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
def load_text(args, progress):
    """Texts, a text network and its tokens: ``(X, y, X_test, y_test, name, network, texts, options)``.

    ``X`` is a ``SliceDict`` of ``input_ids``/``attention_mask`` (cross-validation slices it);
    ``options`` holds the featurizer, per-kernel and probe parameters of a transformer.
    """
    from skorch.helper import SliceDict

    from ..datasets import load_tweets, train_reference_network

    try:
        from ..text import SentenceClassifier, load_minilm, tokenize
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
    max_length = args.max_length or TEXT_MAX_LENGTH
    X = SliceDict(**tokenize(texts_train, tokenizer, max_length=max_length))
    X_test = tokenize(texts_test, tokenizer, max_length=max_length)
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
    rows = list(csv.DictReader(_csv_lines(args)))
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
