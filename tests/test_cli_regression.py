"""The main job for regression networks and for distilled surrogates side by side."""

import html
import json

import numpy as np
import pytest

from sknn_kernels.app.cli import main
from sknn_kernels.app.compare import compare_surrogates, detect_task
from sknn_kernels.app.report import ESTIMATOR_NOTES
from sknn_kernels.datasets import make_mlp, make_smooth_regression, train_reference_network


def test_regression_report(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(
        [
            "compare",
            "--dataset",
            "diabetes",
            "--max-train",
            "80",
            "--max-test",
            "40",
            "--epochs",
            "20",
            "--cv",
            "2",
            "--kernels",
            "pntk0",
            "ck0",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert {
        "results.json",
        "index.html",
        "faithfulness.png",
        "scatter.png",
        "relative_loss.png",
    } <= {p.name for p in out.iterdir()}
    payload = json.loads((out / "results.json").read_text())
    rows = payload["results"]
    assert [(r["kernel"], r["estimator"]) for r in rows] == [
        ("pntk0", "krr"),
        ("pntk0", "krr-network"),
        ("ck0", "krr"),
        ("ck0", "krr-network"),
    ]
    # the CK's last layer is linear: regressing the network's outputs on the CK reproduces them
    ck_distilled = rows[3]
    assert ck_distilled["faithfulness_r2_mean"] > 0.999
    losses = {r["kernel"]: r for r in payload["kernel_losses"]}
    assert losses["pntk0"]["relative_to_ntk"] == 1.0
    assert losses["ck0"]["relative_to_ntk"] == pytest.approx(
        losses["ck0"]["test_mse"] / losses["pntk0"]["test_mse"]
    )
    page = (out / "index.html").read_text()
    assert html.escape(ESTIMATOR_NOTES["krr-network"]) in page and 'src="relative_loss.png"' in page
    assert "test R² vs network" in capsys.readouterr().out


def test_classification_report_shows_label_trained_and_distilled(tmp_path):
    out = tmp_path / "rep"
    code = main(
        [
            "compare",
            "--max-train",
            "60",
            "--max-test",
            "30",
            "--epochs",
            "2",
            "--cv",
            "2",
            "--kernels",
            "ck",
            "--estimators",
            "kglm",
            "kglm-logits",
            "--no-probe",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    assert [r["estimator"] for r in payload["results"]] == ["kglm", "kglm-logits"]
    page = (out / "index.html").read_text()
    assert (
        html.escape(ESTIMATOR_NOTES["kglm"]) in page
        and html.escape(ESTIMATOR_NOTES["kglm-logits"]) in page
    )


def test_task_detection_and_estimator_errors():
    X, y = make_smooth_regression(60, 2)
    assert detect_task(y) == "regression" and detect_task(np.round(y * 10)) == "classification"
    net = train_reference_network(
        lambda d, o: make_mlp(d, o, hidden=(8,)), X, y, epochs=2, task="regression"
    )
    with pytest.raises(ValueError, match=r"do not fit a regression task"):
        compare_surrogates(net, X, y, kernels=("ck",), estimators=("kglm",), cv=2)
    with pytest.raises(ValueError, match=r"do not fit a classification task"):
        compare_surrogates(net, X, y > 0, kernels=("ck",), estimators=("krr",), cv=2)
    assert (
        main(
            [
                "compare",
                "--dataset",
                "smooth",
                "--estimators",
                "svc",
                "--kernels",
                "ck",
                "--quiet",
                "--epochs",
                "1",
                "--max-train",
                "40",
            ]
        )
        == 2
    )
