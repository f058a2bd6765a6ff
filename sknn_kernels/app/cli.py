"""The ``sknn-kernels`` command line. Thin: it only composes the public API.

``sknn-kernels compare`` loads a data set and a network (a trained reference network by
default), cross-validates kernel surrogates of the network with
:func:`sknn_kernels.compare_surrogates`, probes its layers with :class:`PCAProbe`, and
writes a report folder (CSV, JSON, PNG figures and an ``index.html``).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ._cli_inputs import (
    REGRESSION_DATASETS,
    TEXT_DATASETS,
    TEXT_MAX_LENGTH,
    UsageError,
    load_data,
    load_network,
    load_text,
)

__all__ = ["build_parser", "main"]

# The default of run_report too (app._surrogate_specs.DEFAULT_KERNELS, imported with torch; a test
# keeps the two equal): label-trained kGLMs on the paper's normalised kernels, and ck0, the
# unnormalised kernel on which the distilled surrogate is faithful (user guide, "Which surrogate").
DEFAULT_KERNELS = ("pntk", "trntk", "ck", "ck0", "embedding", "proj-pntk")
# Qadeer et al.'s comparison, normalised and not: CK vs NTK kernel regression
REGRESSION_KERNELS = ("pntk", "ck", "pntk0", "ck0")
# Text: a kernel surrogate of a transformer costs a backward pass per sample, so the default
# job is smaller (documented in docs/command_line.rst): 3 kernels x 2 estimators, 3 folds.
TEXT_KERNELS = ("pntk", "ck", "ck0")
TEXT_ESTIMATORS = ("kglm", "kglm-logits")


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
        help="arrays X, y (and optional X_test, y_test); a CSV of numbers (features, and "
        "the labels in --label-column, default the last column); or a CSV of texts with "
        "--text-column and --label-column",
    )
    data.add_argument("--text-column", metavar="C", help="CSV column holding the texts")
    data.add_argument("--label-column", metavar="L", help="CSV column holding the labels")
    data.add_argument(
        "--encoding",
        metavar="NAME",
        help="text encoding of --data FILE.csv (default utf-8); undecodable bytes are an "
        "error, never replaced",
    )
    data.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="T",
        help=f"tokens per text (padding/truncation; default {TEXT_MAX_LENGTH}); texts only",
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
    data.add_argument(
        "--input-groups",
        metavar="NAME=I,J-K;...",
        help="groups of channels (images) or features of one input array whose shares of the "
        "prediction the report measures, e.g. 'uv=0,1;optical=2-6;ir=7,8' (named inputs "
        "X_<name> of --data are measured by themselves)",
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
        "--cache-dir",
        metavar="DIR",
        help="cache each fold's kernels here (keyed by the network, the data and the kernel "
        "options), so a rerun with the same network and data computes no kernel",
    )
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
    run.add_argument(
        "--influence-members",
        type=_at_least(1),
        default=1,
        metavar="N",
        help="influence explanations from the network alone (1, default) and, for N > 1, from "
        "N networks trained on random halves with the reference network's recipe",
    )
    run.add_argument(
        "--lds",
        type=_at_least(2),
        metavar="N",
        help="retrain the reference network on N random halves (cached with --cache-dir, "
        "parallel with --n-jobs) and report the LDS of every attribution method",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _at_least(low):
    """An argparse type: an integer >= ``low``."""

    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


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


# ------------------------------------------------------------------------ compare
def _compare(args):
    import warnings

    text = args.dataset in TEXT_DATASETS or (
        args.data is not None and Path(args.data).suffix == ".csv" and args.text_column is not None
    )
    cv = args.cv if args.cv is not None else 3 if text else 5
    _check_args(args, cv)
    _check_scope(args, text)
    if args.poison is not None and text:
        raise UsageError(
            "--poison plants an image patch: it is for image or feature data, not texts."
        )
    progress = not args.quiet
    started = time.perf_counter()
    estimators = args.estimators or (TEXT_ESTIMATORS if text else None)
    if text:  # checked before the text network is loaded and trained
        task = "classification"
        _check_estimators(estimators, task)
        X, y, X_test, y_test, name, network, texts, text_options = load_text(args, progress)
        image_shape, input_shape = None, None
    else:  # the task is known once the data are read; the network is trained below
        X, y, X_test, y_test, image_shape, name, task = load_data(args)
        input_groups = _input_groups(args, X)  # checked before any training
        texts, text_options = None, {}
        _check_estimators(estimators, task)
        _check_kernels(args.kernels, task)
    targets = (
        f"{len(np.unique(y))} classes" if task == "classification" else "regression, standardised y"
    )
    _say(progress, f"data: {name}, {len(y)} train / {len(y_test)} test, {targets}")
    backdoor = None
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
        network, input_shape = load_network(args, X, y, image_shape, progress, task)
        if args.model is not None and task == "classification":
            _check_outputs(network, X, y, input_shape, args)

    from ._explanations import attribution_options
    from .report import format_table, run_report, write_report

    default_kernels = (
        TEXT_KERNELS if text else REGRESSION_KERNELS if task == "regression" else DEFAULT_KERNELS
    )
    per_kernel = text_options.get("kernels", {})
    kernels = {k: per_kernel.get(k, {}) for k in (args.kernels or default_kernels)}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The `probability` parameter", category=FutureWarning
        )
        # NearestCentroid divides by each feature's spread: constant pixels (image borders)
        # make NaN deviations it does not use for predictions.
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, module=r"sklearn\.neighbors\._nearest_centroid"
        )
        results = run_report(
            network,
            X,
            y,
            X_test,
            y_test,
            task=task,
            kernels=kernels,
            estimators=estimators,
            cv=cv,
            n_jobs=args.n_jobs,
            featurizer_params=text_options.get("featurizer"),
            projection_dim=args.projection_dim,
            probe=False if args.no_probe else text_options.get("probe", True),
            backdoor=backdoor,
            input_shape=input_shape,
            image_shape=image_shape,
            texts=texts,
            device=args.device,
            memory=args.cache_dir,
            random_state=args.seed,
            verbose=int(progress),
            input_groups=None if text else input_groups,
            **attribution_options(args, image_shape, task, text),
        )
    summary = results.summary
    network_score = "network_test_r2" if task == "regression" else "network_test_accuracy"
    _say(progress, f"{network_score.replace('_', ' ')}: {summary[network_score]:.4f}")
    if backdoor is not None:
        _say(progress, f"network attack success: {summary['network_attack_success']:.3f}")
    out = Path(args.out)
    written = write_report(results, out)
    print()
    print(format_table(results))
    print()
    best = f"best surrogate: {summary['best_kernel']} + {summary['best_estimator']}: "
    if task == "regression":
        print(
            best + f"test R² vs network {summary['best_test_r2_network']:.4f}, "
            f"tau {summary['best_test_tau']:.4f}, "
            f"loss / network loss {summary['best_test_relative_loss']:.4f}"
        )
    else:
        print(
            best + f"test tau {summary['best_test_tau']:.4f}, TAD {summary['best_test_tad']:+.4f}"
        )
    if summary["convergence_warnings"]:
        print(f"convergence warnings: {summary['convergence_warnings']} fits (see the report)")
    print(f"report: {out}/ ({', '.join(sorted(p.name for p in written))})")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _check_args(args, cv):
    """Reject bad option values before any data is loaded or network trained."""
    from ..network._adapter import resolve_device
    from .compare import KERNELS

    if cv < 2:
        raise UsageError("--cv must be at least 2.")
    if args.max_train is not None and args.max_train < 2 * cv:
        raise UsageError(f"--max-train {args.max_train} is too small for {cv} folds.")
    for flag, value in (
        ("--projection-dim", args.projection_dim),
        ("--epochs", args.epochs),
        ("--max-length", args.max_length),
        ("--n-jobs", args.n_jobs),
    ):
        if value is not None and value < 1 and not (flag == "--n-jobs" and value < 0):
            raise UsageError(f"{flag} must be a positive integer; got {value}.")
    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    unknown = [k for k in args.kernels or () if k not in KERNELS]
    if unknown:
        raise UsageError(
            f"--kernels: unknown kernel {', '.join(unknown)}; choose from {' '.join(KERNELS)}."
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out} is an existing file; name a folder for the report (created if missing)."
        )
    if args.cache_dir is not None and Path(args.cache_dir).is_file():
        raise UsageError(f"--cache-dir {args.cache_dir} is an existing file; name a folder.")


def _check_scope(args, text):
    """Options that apply to some data only: refused where they would be silently ignored."""
    csv = args.data is not None and Path(args.data).suffix == ".csv"
    regression = args.task == "regression" or args.dataset in REGRESSION_DATASETS
    refused = [
        (
            text and args.task == "regression",
            "--task regression: texts are classified here (a sentence classifier and its "
            "labels); there is no regression head for texts.",
        ),
        (
            text and args.classes,
            "--classes selects integer labels of image or feature data; for texts, keep "
            "the rows you want in the CSV.",
        ),
        (
            text and args.input_shape,
            "--input-shape is for array data; texts are tokenized (see --max-length).",
        ),
        (
            text and args.weights,
            "--weights goes with --model package.module:factory; for texts, --model is a "
            "Hugging Face model directory with its weights.",
        ),
        (
            not text and args.max_length is not None,
            "--max-length is the number of tokens per text: for texts only (--dataset "
            "tweets, or --data FILE.csv with --text-column).",
        ),
        (
            (args.text_column or args.label_column) and not csv,
            "--text-column and --label-column name columns of --data FILE.csv.",
        ),
        (args.encoding is not None and not csv, "--encoding is for --data FILE.csv."),
        (
            regression and args.classes,
            "--classes selects class labels: not for a regression task.",
        ),
        (
            text and args.input_groups,
            "--input-groups splits the channels or features of array data; a text network "
            "has one input of token ids.",
        ),
        (
            args.poison_target is not None and args.poison is None,
            "--poison-target is the label of the backdoor of --poison; pass --poison too.",
        ),
        (
            args.model is not None and args.epochs is not None,
            "--epochs trains the reference network; a --model network is used as it is.",
        ),
        (
            args.model is not None and args.poison is not None,
            "--poison plants a backdoor before the reference network is trained; a --model "
            "network is used as it is, so it never saw the poisoned samples.",
        ),
    ]
    for wrong, message in refused:
        if wrong:
            raise UsageError(message)


def _input_groups(args, X):
    """The parsed ``--input-groups`` (None without it)."""
    if not args.input_groups:
        return None
    if isinstance(X, dict):
        raise UsageError(
            "--input-groups splits one input array; the named inputs X_<name> of --data are "
            "measured by themselves."
        )
    from ._input_section import parse_groups

    try:
        return parse_groups(args.input_groups)
    except ValueError as exc:
        raise UsageError(f"--input-groups: {exc}.") from None


def _check_kernels(kernels, task):
    """Kernels that need class labels are refused for a regression network."""
    wrong = [k for k in kernels or () if "loss_grad" in k]
    if task == "regression" and wrong:
        raise UsageError(
            f"--kernels {' '.join(wrong)}: the loss gradient of a classifier's cross-entropy "
            "needs class labels, not a regression task."
        )


def _check_estimators(estimators, task):
    """``--estimators`` names: known, and fitting the task."""
    from ._surrogate_specs import DEFAULT_ESTIMATORS, REGRESSORS, default_estimators

    if not estimators:
        return
    known = list(default_estimators(None))
    unknown = [e for e in estimators if e not in known]
    if unknown:
        raise UsageError(
            f"--estimators: unknown estimator {', '.join(unknown)}; choose from {' '.join(known)}."
        )
    wrong = [e for e in estimators if (e in REGRESSORS) != (task == "regression")]
    if wrong:
        raise UsageError(
            f"--estimators {' '.join(wrong)} do not fit a {task} task; use "
            f"{' '.join(DEFAULT_ESTIMATORS[task])} (or pass --task)."
        )


def _check_outputs(network, X, y, input_shape, args):
    """A user's classifier needs one output per class of the data (column j: j-th label)."""
    from ..metrics import network_outputs
    from ..network._base import first_rows

    try:
        n_outputs = network_outputs(
            network, first_rows(X), device=args.device, input_shape=input_shape
        ).shape[1]
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"--model {args.model}: cannot run it on the data ({exc}).") from None
    classes = np.unique(y)
    if n_outputs != len(classes):
        raise UsageError(
            f"--model {args.model} has {n_outputs} outputs but the data have {len(classes)} "
            f"classes {classes.tolist()[:10]}: output column j must score the j-th sorted "
            "label (select classes with --classes only for a network trained on them)."
        )


def _plant_backdoor(args, X, y, X_test, y_test, image_shape):
    """Poisoned (X, y) and the forensics inputs (X_trigger, y_trigger, mask, target)."""
    from ..attribution.evaluation import add_trigger, poison

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
