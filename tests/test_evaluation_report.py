"""``sknn-kernels compare --poison``: a backdoor, its forensics section and results.csv columns."""

import csv

import pytest

from sknn_kernels.cli import main

pytestmark = pytest.mark.slow


def test_compare_with_poison_writes_forensics(tmp_path, capsys):
    out = tmp_path / "report"
    argv = [
        "compare",
        "--max-train",
        "100",
        "--max-test",
        "40",
        "--kernels",
        "ck",
        "--estimators",
        "kglm",
        "ncc",
        "--cv",
        "2",
        "--epochs",
        "15",
        "--no-probe",
        "--device",
        "cpu",
        "--quiet",
        "--poison",
        "0.05",
        "--poison-target",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    kglm, ncc = rows
    for key in ("attack_success", "poison_precision_at_10", "poison_recall_at_10", "poison_auc"):
        assert 0.0 <= float(kglm[key]) <= 1.0
        assert ncc[key] == "nan"  # attributions are the kGLM's
    page = (out / "index.html").read_text()
    assert page.count("<h2>Backdoor forensics</h2>") == 1
    assert page.index("Backdoor forensics") < page.index("<h2>Figures</h2>")
    assert "5 poisoned training samples" in page  # round(0.05 * 100)
    assert (out / "forensics.png").stat().st_size > 0
    assert "network attack success" in (out / "results.json").read_text().replace("_", " ")


def test_poison_errors_are_usage_errors(tmp_path, capsys):
    argv = [
        "compare",
        "--max-train",
        "40",
        "--cv",
        "2",
        "--kernels",
        "ck",
        "--estimators",
        "kglm",
        "--no-probe",
        "--quiet",
        "--poison",
        "0.99",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "--poison: fraction=0.99 asks for" in capsys.readouterr().err
