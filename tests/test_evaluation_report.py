"""``sknn-kernels compare --poison``: a backdoor, its forensics section and results.csv columns."""

import csv

import pytest

from sknn_kernels.app.cli import main

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


def test_run_report_then_write_report(tmp_path):
    """The report as two functions: results in, files out; CSV quoting and warning counts."""
    import numpy as np
    from _nets import make_mlp
    from sklearn.datasets import make_classification

    from sknn_kernels.app.report import format_table, run_report, write_report
    from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier

    X, y = make_classification(
        n_samples=80, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    estimators = {
        "kglm, default": (KernelSurrogateClassifier(), "kernel"),
        "stopped": (KernelSurrogateClassifier(max_iter=1, tol=1e-12), "kernel"),
    }
    results = run_report(
        make_mlp(n_in=5, n_out=3),
        X[:60],
        y[:60],
        X[60:],
        y[60:],
        kernels=("ck",),
        estimators=estimators,
        cv=2,
        probe=False,
        device="cpu",
        verbose=0,
    )
    assert results.table["estimator"].tolist() == ["kglm, default", "stopped"]
    assert results.table["convergence_warnings"].tolist() == [0, 2]
    assert results.summary["convergence_warnings"] >= 2
    assert "conv. warnings" in format_table(results)
    written = write_report(results, tmp_path / "out")
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["estimator"] for r in rows] == ["kglm, default", "stopped"]  # quoted by csv
    assert [r["convergence_warnings"] for r in rows] == ["0", "2"]
    assert float(rows[0]["accuracy_mean"]) == results.table["accuracy_mean"][0]  # full precision
    page = (tmp_path / "out" / "index.html").read_text()
    assert "conv. warnings" in page and "2 surrogate fits stopped before converging" in page
    assert {p.name for p in written} >= {"results.csv", "results.json", "index.html", "scatter.png"}


def test_run_report_computes_each_kernel_once(tmp_path, monkeypatch):
    """The refit on all training data computes each kernel once; with ``memory`` a rerun none."""
    import numpy as np
    from _nets import make_mlp
    from sklearn.datasets import make_classification

    from sknn_kernels.app.report import run_report
    from sknn_kernels.features.featurizer import NTKFeaturizer

    calls = []
    for method in ("fit", "fit_transform", "transform"):
        original = getattr(NTKFeaturizer, method)

        def counted(self, X, *args, _original=original, _method=method, **kwargs):
            calls.append((_method, len(X)))
            return _original(self, X, *args, **kwargs)

        monkeypatch.setattr(NTKFeaturizer, method, counted)
    X, y = make_classification(
        n_samples=80, n_features=4, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    net = make_mlp(n_in=4, n_out=3)
    runs = []
    for memory in (None, tmp_path / "cache", tmp_path / "cache"):
        calls.clear()
        # the best surrogate, and a kGLM on the same kernel for the attributions
        results = run_report(
            *(net, X[:60], y[:60], X[60:], y[60:]),
            kernels=("ck",),
            estimators=("kglm", "ncc"),
            cv=2,
            probe=False,
            image_shape=(1, 2, 2),
            memory=memory,
            device="cpu",
            verbose=0,
        )
        runs.append((sorted(calls), results))
    (first, plain), (cached, stored), (rerun, reread) = runs
    folds = [("fit_transform", 30)] * 2 + [("transform", 30)] * 2
    # the fold kernels, then K(X, X) and K(X_test, X) once each
    assert first == cached == sorted(folds + [("fit_transform", 60), ("transform", 20)])
    assert rerun == []  # everything read back from memory
    for results in (stored, reread):
        assert results.summary == plain.summary
        np.testing.assert_array_equal(results.surrogate_test, plain.surrogate_test)
        np.testing.assert_array_equal(results.explanation.proponents, plain.explanation.proponents)
