"""Kernels written to .npy/.zarr paths: resumed after a kill, refused when they are another kernel."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp

from sknn_kernels.ntk import NTKEngine, empirical_ntk, features_kernel, projected_ntk_features
from sknn_kernels.ntk.store import log_path

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


def _data(n, seed=0):
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def _count_tiles(monkeypatch):
    """Count the exact tiles the engine computes from now on."""
    calls = []
    tile = NTKEngine._tile

    def counting(self, B1, B2, paired=False):
        calls.append(1)
        return tile(self, B1, B2, paired)

    monkeypatch.setattr(NTKEngine, "_tile", counting)
    return calls


def _done(path):
    lines = log_path(path).read_text().splitlines()[1:]
    return [line for line in lines if line.endswith("]")]


# The interrupted run: the same call as the test's, slowed down after each recorded tile so the
# test can kill it (SIGKILL: no cleanup, no flush) in the middle.
_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    sys.path[:0] = [{tests!r}, {root!r}]
    from _nets import make_cnn_bn
    from sknn_kernels.ntk import empirical_ntk
    from sknn_kernels.ntk.store import KernelStore

    torch.set_num_threads(1)
    record = KernelStore.record

    def slow(self, tiles):
        record(self, tiles)
        time.sleep(0.15)

    KernelStore.record = slow
    X = torch.randn((40, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    empirical_ntk(make_cnn_bn(), X, device="cpu", block_size=4, out={path!r})
    """
)


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_resume_after_kill_computes_only_missing_tiles(tmp_path, monkeypatch, suffix):
    if suffix == ".zarr":
        pytest.importorskip("zarr", reason="pip install sknn_kernels[zarr]")
    path = str(tmp_path / f"K{suffix}")
    script = _SCRIPT.format(tests=str(HERE), root=str(HERE.parent), path=path)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if log_path(path).exists() and len(_done(path)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    total = 10 * 11 // 2  # 40 samples in blocks of 4: tiles on and above the diagonal
    before = len(_done(path))
    assert 3 <= before < total

    calls = _count_tiles(monkeypatch)
    net, X = make_cnn_bn(), _data(40)
    K = empirical_ntk(net, X, device="cpu", block_size=4, out=path)
    assert len(calls) == total - before  # only the missing tiles were computed
    assert len(_done(path)) == total

    fresh = empirical_ntk(net, X, device="cpu", block_size=4, out=str(tmp_path / f"F{suffix}"))
    assert np.array_equal(np.asarray(K[:]), np.asarray(fresh[:]))  # bitwise
    assert np.array_equal(np.asarray(K[:]), empirical_ntk(net, X, device="cpu", block_size=4))

    calls.clear()
    again = empirical_ntk(net, X, device="cpu", block_size=4, out=path)
    assert not calls and np.array_equal(np.asarray(again[:]), np.asarray(K[:]))


def test_other_network_data_or_options_are_refused(tmp_path):
    path = str(tmp_path / "K.npy")
    net, X = make_mlp(), torch.randn(9, 5)
    empirical_ntk(net, X, device="cpu", block_size=4, out=path)
    other = make_mlp(seed=1)
    with pytest.raises(ValueError, match="different kernel: network"):
        empirical_ntk(other, X, device="cpu", block_size=4, out=path)
    with pytest.raises(ValueError, match="different kernel: X1"):
        empirical_ntk(net, X + 1, device="cpu", block_size=4, out=path)
    with pytest.raises(ValueError, match="kind"):
        empirical_ntk(net, X, kind="trace", device="cpu", block_size=4, out=path)
    with pytest.raises(ValueError, match="X2"):
        empirical_ntk(net, X, X, device="cpu", block_size=4, out=path)
    # a file that is not ours is never overwritten
    np.save(tmp_path / "mine.npy", np.zeros((9, 9), np.float32))
    with pytest.raises(FileExistsError, match="no tile log"):
        empirical_ntk(net, X, device="cpu", out=str(tmp_path / "mine.npy"))
    with pytest.raises(ValueError, match=r"'\.npy'.*'\.zarr'"):
        empirical_ntk(net, X, device="cpu", out=str(tmp_path / "K.bin"))
    with pytest.raises(ValueError, match="layerwise"):
        empirical_ntk(net, X, device="cpu", layerwise=True, out=str(tmp_path / "L.npy"))


def test_truncated_log_line_is_recomputed(tmp_path, monkeypatch):
    """A kill while appending leaves half a line: that tile is computed again, nothing else."""
    path = str(tmp_path / "K.npy")
    net, X = make_mlp(), torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    K = np.array(empirical_ntk(net, X, device="cpu", block_size=4, out=path))
    log = log_path(path)
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:3])  # last tile half-written
    calls = _count_tiles(monkeypatch)
    again = empirical_ntk(net, X, device="cpu", block_size=4, out=path)
    assert len(calls) == 1 and np.array_equal(np.asarray(again), K)
    header = json.loads(log.read_text().splitlines()[0])
    assert header["block"] == 4 and header["shape"] == [12, 12]


def test_projected_and_features_kernels_to_paths(tmp_path):
    net, X, Z = make_mlp(), torch.randn(10, 5), torch.randn(7, 5)
    opts = {"projection_dim": 16, "random_state": 0, "device": "cpu", "block_size": 4}
    K = empirical_ntk(net, X, Z, **opts)
    stored = empirical_ntk(net, X, Z, out=str(tmp_path / "P.npy"), **opts)
    assert np.array_equal(np.asarray(stored), K)
    with pytest.raises(ValueError, match="random_state"):
        empirical_ntk(net, X, out=str(tmp_path / "Q.npy"), **{**opts, "random_state": None})
    F = projected_ntk_features(net, X, kind="trace", **opts)
    Kf = features_kernel(F, kind="full", block_size=3, out=str(tmp_path / "F.npy"))
    assert np.array_equal(np.asarray(Kf), features_kernel(F, kind="full", block_size=3))
    with pytest.raises(ValueError, match="F1"):
        features_kernel(F + 1, kind="full", block_size=3, out=str(tmp_path / "F.npy"))
