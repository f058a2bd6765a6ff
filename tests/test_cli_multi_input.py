"""The main job on a multi-input network (named inputs X_<name>) and on channel groups of one input."""

import json

import numpy as np
import pytest

from sknn_kernels.app._surrogate_specs import KERNELS
from sknn_kernels.app.cli import main

QUICK = ["--cv", "2", "--projection-dim", "8", "--quiet", "--device", "cpu", "--seed", "0"]
FUSION = "tests._nets:make_late_fusion"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Named inputs of different shapes; ``ignored`` never reaches the network's output."""
    rng = np.random.default_rng(0)
    n = 48
    path = tmp_path_factory.mktemp("named") / "fusion.npz"
    np.savez(
        path,
        X_image=rng.normal(size=(n, 2, 5, 5)).astype(np.float32),
        X_table=rng.normal(size=(n, 3)).astype(np.float32),
        X_ignored=rng.normal(size=(n, 4)).astype(np.float32),
        y=np.array(["a", "b", "c"])[np.arange(n) % 3],
    )
    return path


def test_named_inputs_run_to_a_report_with_input_shares(named, tmp_path):
    out = tmp_path / "report"
    argv = ["--data", str(named), "--model", FUSION, "--kernels", "pntk0", "ck0"]
    assert (
        main(["compare", *argv, "--estimators", "kglm", "kglm-logits", *QUICK, "--out", str(out)])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    rows = results["input_shares"]
    overall = {r["player"]: r["share"] for r in rows if r["bin"] == -1}
    assert set(overall) == {"image", "table", "ignored"}
    assert overall["ignored"] == pytest.approx(0, abs=1e-9)  # a dummy: never read
    assert overall["image"] + overall["table"] == pytest.approx(1)
    assert {r["bin_label"] for r in rows} == {"all", "a", "b", "c"}
    page = (out / "index.html").read_text()
    assert "Which input drives the prediction" in page and (out / "input_shares.png").is_file()


@pytest.mark.slow
def test_every_kernel_takes_named_inputs(named, tmp_path):
    out = tmp_path / "all"
    argv = ["--data", str(named), "--model", FUSION, "--no-probe", "--kernels", *KERNELS]
    assert main(["compare", *argv, "--estimators", "kglm-logits", *QUICK, "--out", str(out)]) == 0


def test_input_groups_of_one_array(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)  # only the first two features carry the label
    np.savez(tmp_path / "f.npz", X=X, y=y)
    out = tmp_path / "report"
    argv = ["--data", str(tmp_path / "f.npz"), "--input-groups", "signal=0,1;noise=2-5"]
    argv += ["--kernels", "pntk0", "--estimators", "kglm-logits", "--epochs", "60", "--no-probe"]
    assert main(["compare", *argv, *QUICK, "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["input_shares"]
    overall = {r["player"]: r["share"] for r in rows if r["bin"] == -1}
    assert overall["signal"] > overall["noise"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model", FUSION, "--input-groups", "a=0;b=1"], "named inputs X_<name> of --data"),
        ([], "named inputs X_<name> need your multi-input network"),
        (["--model", FUSION, "--input-shape", "2", "5", "5"], "--input-shape applies to one"),
    ],
)
def test_named_input_mistakes_are_one_line_errors(named, tmp_path, capsys, argv, match):
    code = main(["compare", "--data", str(named), *argv, *QUICK, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("groups", ["a=0", "a=0;b", "a=0;b=x-2"])
def test_malformed_input_groups_are_one_line_errors(tmp_path, capsys, groups):
    np.savez(tmp_path / "f.npz", X=np.ones((10, 4), np.float32), y=np.arange(10) % 2)
    argv = ["--data", str(tmp_path / "f.npz"), "--input-groups", groups]
    assert main(["compare", *argv, *QUICK, "--out", str(tmp_path / "o")]) == 2
    assert "--input-groups:" in capsys.readouterr().err


def test_share_plot_names_class_bins():
    from sknn_kernels.plotting import plot_input_shares

    res = {
        "bin": np.array([-1, -1, 0, 0, 1, 1]),
        "bin_low": np.array([-0.5, -0.5, -0.5, -0.5, 0.5, 0.5]),
        "bin_high": np.array([1.5, 1.5, 0.5, 0.5, 1.5, 1.5]),
        "player": np.array(["a", "b"] * 3, dtype=object),
        "share": np.array([0.5, 0.5, 0.9, 0.1, 0.2, 0.8]),
        "bin_label": np.array(["all", "all", "cat", "cat", "dog", "dog"], dtype=object),
    }
    ax = plot_input_shares(res).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert ax.get_xlabel() == "class"
