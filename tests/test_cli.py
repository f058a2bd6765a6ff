"""The ``sknn-kernels`` command line: the main job, its report, and clean user errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sknn_kernels import __version__
from sknn_kernels.app.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "compare" in capsys.readouterr().out


def test_console_script_and_module():
    out = subprocess.run(
        [sys.executable, "-m", "sknn_kernels", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """One quick end-to-end run on digits, shared by the report tests."""
    out = tmp_path_factory.mktemp("report")
    code = main(
        [
            "compare",
            "--max-train",
            "150",
            "--max-test",
            "60",
            "--epochs",
            "3",
            "--cv",
            "2",
            "--kernels",
            "pntk",
            "ck",
            "proj-pntk",
            "--projection-dim",
            "64",
            "--estimators",
            "kglm",
            "ncc",
            "knn",
            "svc",
            "--out",
            str(out),
            "--cache-dir",
            str(out.parent / "kernel-cache"),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_compare_writes_report(report_dir, capsys):
    names = {p.name for p in report_dir.iterdir()}
    assert {
        "results.csv",
        "results.json",
        "index.html",
        "faithfulness.png",
        "scatter.png",
        "attributions.png",
        "probes.png",
    } <= names
    payload = json.loads((report_dir / "results.json").read_text())
    rows = payload["results"]
    assert len(rows) == 3 * 4
    assert {r["kernel"] for r in rows} == {"pntk", "ck", "proj-pntk"}
    assert all(-1 <= r["tau_mean"] <= 1 for r in rows if r["tau_mean"] is not None)
    assert 0 < payload["summary"]["network_test_accuracy"] <= 1
    header = (report_dir / "results.csv").read_text().splitlines()[0]
    assert header.startswith("kernel,estimator")
    assert header.endswith("tau_folds,convergence_warnings")
    assert isinstance(payload["summary"]["convergence_warnings"], int)
    # --cache-dir: 3 kernels x 2 folds written as joblib.Memory entries, and the kernels on all
    # training data of the refit best surrogate and of the attributions' kGLM (one or two)
    cached = list((report_dir.parent / "kernel-cache").rglob("output.pkl"))
    assert len(cached) in (3 * 2 + 1, 3 * 2 + 2)
    html = (report_dir / "index.html").read_text()
    for name in ("faithfulness.png", "scatter.png", "attributions.png"):
        assert f'src="{name}"' in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--allow-file-access-from-files",
    ]
    url = (report_dir / "index.html").as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    total = int(dom.stdout.split('data-images-total="')[1].split('"')[0])
    loaded = int(dom.stdout.split('data-images-loaded="')[1].split('"')[0])
    assert total >= 4 and loaded == total, dom.stdout[:500]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def test_user_mistakes_exit_cleanly(tmp_path, capsys):
    def fails(*argv, match):
        assert main(["compare", "--quiet", "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and match in err and "Traceback" not in err

    fails("--data", str(tmp_path / "missing.npz"), match="no such file")
    (tmp_path / "bad.npz").write_text("not an archive")
    fails("--data", str(tmp_path / "bad.npz"), match="not a readable .npz")
    np.savez(tmp_path / "nox.npz", y=np.arange(3))
    fails("--data", str(tmp_path / "nox.npz"), match="it needs X (or named inputs X_<name>) and y")
    fails("--model", str(tmp_path / "missing.pt"), match="no such file")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    fails("--model", str(tmp_path / "junk.pt"), match="neither TorchScript")
    fails("--model", "no_such_module:factory", match="cannot import the factory")
    fails("--cv", "1", match="--cv must be at least 2")
    fails("--classes", "3", "42", match="--classes")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--dataset", "imagenet"])
    assert exc.value.code == 2


def test_hard_edges_are_one_line_errors(tmp_path, capsys):
    """Bad input found before any training: exit code 2, one line on stderr, no traceback."""

    def fails(*argv, match):
        argv = ["compare", "--quiet", *argv]
        if "--out" not in argv:
            argv += ["--out", str(tmp_path / "o")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("sknn-kernels: error: ") and err.count("\n") == 1, err
        assert match in err and "Traceback" not in err
        return err

    X = np.random.default_rng(0).normal(size=(20, 3))
    X[[4, 7], 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.arange(20) % 2)
    fails(
        "--data", str(tmp_path / "nan.npz"), match="X has non-finite values (NaN or inf) in 2 rows"
    )
    (tmp_path / "nan.csv").write_text("a,b,label\n1,2,0\n3,,1\n5,6,0\nnan,1,1\n")
    fails("--data", str(tmp_path / "nan.csv"), match="the features has non-finite values")
    (tmp_path / "exists.txt").write_text("")
    fails("--out", str(tmp_path / "exists.txt"), match="is an existing file; name a folder")
    fails("--cache-dir", str(tmp_path / "exists.txt"), match="--cache-dir")
    err = fails("--kernels", "pntk", "ntk", match="--kernels: unknown kernel ntk; choose from")
    assert "proj-pntk" in err and "ck0" in err
    err = fails("--estimators", "forest", match="--estimators: unknown estimator forest")
    assert "kglm-logits" in err and "krr-network" in err
    fails("--projection-dim", "0", match="--projection-dim must be a positive integer")
    fails("--device", "gpu0", match="--device: device='gpu0' is not a valid torch device")
    fails("--estimators", "krr", "--max-train", "40", match="do not fit a classification task")


def test_user_model_file_and_factory(tmp_path, capsys, monkeypatch):
    """--model accepts TorchScript, a torch.save'd module and package.module:factory + weights."""
    from sknn_kernels.datasets import make_mlp

    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    net = make_mlp(5, 2, hidden=(8,))
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    torch.save(net, tmp_path / "net.pt")
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "userfactory.py").write_text(
        "from sknn_kernels.datasets import make_mlp\n\ndef build():\n    return make_mlp(5, 2, hidden=(8,))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    common = [
        "compare",
        "--data",
        str(tmp_path / "data.npz"),
        "--cv",
        "2",
        "--kernels",
        "pntk",
        "--estimators",
        "kglm",
        "--no-probe",
        "--quiet",
    ]
    for i, model in enumerate(
        [
            ["--model", str(tmp_path / "net.ts")],
            ["--model", str(tmp_path / "net.pt")],
            ["--model", "userfactory:build", "--weights", str(tmp_path / "weights.pt")],
        ]
    ):
        assert main([*common, *model, "--out", str(tmp_path / f"out{i}")]) == 0, (
            capsys.readouterr().err
        )
    assert "pntk" in capsys.readouterr().out


def test_numeric_csv_data(tmp_path):
    """--data FILE.csv without --text-column: features, and labels in the last or named column."""
    from argparse import Namespace

    from sknn_kernels.app._cli_inputs import _read_numeric_csv

    path = tmp_path / "data.csv"
    path.write_text("a,label,b\n1.5,0,2\n3,1,4\n5,1,6\n")
    X, y = _read_numeric_csv(Namespace(data=str(path), label_column="label"))
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4], [5, 6]])
    assert y.tolist() == [0, 1, 1] and y.dtype.kind == "i"
    X, y = _read_numeric_csv(Namespace(data=str(path), label_column=None))
    assert y.tolist() == [2.0, 4.0, 6.0] and X.shape == (3, 2)


def test_csv_encoding_is_never_guessed(tmp_path):
    """A CSV that is not UTF-8 is an error naming the byte and line, or read with --encoding."""
    from argparse import Namespace

    from sknn_kernels.app._cli_inputs import UsageError, _read_numeric_csv, _read_text_csv

    path = tmp_path / "data.csv"
    path.write_bytes("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n".encode().replace(b"b,", b"\xe9,"))
    args = Namespace(data=str(path), label_column="label", encoding=None)
    with pytest.raises(UsageError, match=r"not valid utf-8 text \(byte 0xe9 on line 1: invalid"):
        _read_numeric_csv(args)
    args.encoding = "latin-1"
    X, y = _read_numeric_csv(args)
    assert X.shape == (4, 2) and y.tolist() == [0, 1, 0, 1]
    args.encoding = "klingon"
    with pytest.raises(UsageError, match="--encoding klingon: unknown encoding"):
        _read_numeric_csv(args)
    texts = tmp_path / "texts.csv"
    rows = ["text,label"] + [f"caf\xe9 {i},{'ab'[i % 2]}" for i in range(8)]
    texts.write_bytes("\n".join(rows).encode("cp1252"))
    args = Namespace(data=str(texts), text_column="text", label_column="label", encoding=None)
    args.seed = 0
    with pytest.raises(UsageError, match="line 2"):
        _read_text_csv(args, 6, 2)
    args.encoding = "cp1252"
    t_train, _, t_test, _ = _read_text_csv(args, 6, 2)
    assert all(t.startswith("café ") for t in t_train + t_test)  # the user's text, unaltered


def test_cli_default_kernels_are_run_reports():
    """The CLI's defaults (kept light to import) are those of run_report, ck0 included."""
    from sknn_kernels.app import cli
    from sknn_kernels.app._surrogate_specs import DEFAULT_KERNELS

    assert cli.DEFAULT_KERNELS == DEFAULT_KERNELS and "ck0" in DEFAULT_KERNELS
