"""Every gallery example runs offline, in quick mode (small data, few epochs)."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("SKNN_EXAMPLES_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:  # an example may stop early (e.g. data package absent)
        assert exc.code in (0, None)
        pytest.skip(f"{path.stem} stopped early: an optional data set or extra is absent")
