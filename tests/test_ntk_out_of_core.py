"""Projected features written out of core, ntk_diagonal's n_jobs, and the memory_budget option."""

import json

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp
from joblib import parallel_config
from sklearn.utils._param_validation import InvalidParameterError

from sknn_kernels import NTKFeaturizer
from sknn_kernels.ntk import (
    NTKEngine,
    _cost,
    empirical_ntk,
    ntk_diagonal,
    projected_ntk_features,
    verify_stored,
)
from sknn_kernels.ntk.store import log_path

OPTS = {"device": "cpu", "block_size": 8, "batch_size": 5}
PROJ = {"projection_dim": 16, "random_state": 3, **OPTS}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Serial references on one thread, as the workers."""


def _data(n, seed=0):
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _count_blocks(monkeypatch):
    sizes = []
    block = NTKEngine._block

    def counting(self, X, y, rows, *args, **kwargs):
        sizes.append(rows.stop - rows.start)
        return block(self, X, y, rows, *args, **kwargs)

    monkeypatch.setattr(NTKEngine, "_block", counting)
    return sizes


# --------------------------------------------------------------------------- ntk_diagonal n_jobs
@pytest.mark.parametrize("kind", ["pntk", "full", "loss_grad"])
def test_ntk_diagonal_n_jobs_equals_serial(kind):
    net, X = make_cnn_bn(), _data(29)
    y = np.arange(29) % 3 if kind == "loss_grad" else None
    serial = ntk_diagonal(net, X, kind, y=y, **OPTS)
    assert _same(ntk_diagonal(net, X, kind, y=y, n_jobs=2, **OPTS), serial)
    K = empirical_ntk(net, X, kind=kind, y1=y, dtype="float64", device="cpu")
    d = ntk_diagonal(net, X, kind, y=y, dtype="float64", n_jobs=2, device="cpu", block_size=8)
    np.testing.assert_allclose(d, np.diagonal(K, axis1=0, axis2=1).transpose(), rtol=1e-10)


def test_ntk_diagonal_n_jobs_projected_and_empty():
    net, X = make_mlp(), torch.randn(19, 5)
    serial = ntk_diagonal(net, X, "trace", **PROJ)
    with parallel_config(backend="threading"):
        assert _same(ntk_diagonal(net, X, "trace", n_jobs=2, **PROJ), serial)
        with pytest.raises(ValueError, match="without samples"):  # as the serial call
            ntk_diagonal(net, X[:0], n_jobs=2, device="cpu")


# --------------------------------------------------------------------------- features out of core
@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_projected_features_to_a_path_resume(tmp_path, monkeypatch, suffix):
    if suffix == ".zarr":
        pytest.importorskip("zarr", reason="pip install sknn_kernels[zarr]")
    net, X = make_cnn_bn(), _data(29)
    F = projected_ntk_features(net, X, kind="diagonal", **PROJ)
    path = str(tmp_path / f"F{suffix}")
    stored = projected_ntk_features(net, X, kind="diagonal", out=path, **PROJ)
    assert _same(stored[:], F)
    log = log_path(path)
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["rows"] and [json.loads(x)[:2] for x in lines[1:]] == [
        [i, 0] for i in range(4)
    ]
    assert verify_stored(path) == {
        "tiles": 4,
        "logged": 4,
        "bad": [],
        "problems": [],
        "complete": True,
    }
    sizes = _count_blocks(monkeypatch)
    assert _same(projected_ntk_features(net, X, kind="diagonal", out=path, **PROJ)[:], F)
    assert sizes == []  # nothing recomputed
    log.write_text("\n".join(lines[:2]) + "\n")  # interrupted after the first block
    assert _same(projected_ntk_features(net, X, kind="diagonal", out=path, **PROJ)[:], F)
    assert sizes == [8, 8, 5]  # the three missing blocks only (29 = 8 + 8 + 8 + 5)


def test_projected_features_torn_block_and_n_jobs(tmp_path, monkeypatch):
    net, X = make_mlp(), torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    F = projected_ntk_features(net, X, **PROJ)
    path = str(tmp_path / "F.npy")
    with parallel_config(backend="threading"):
        stored = projected_ntk_features(net, X, out=path, n_jobs=2, **PROJ)
    assert _same(stored, F)
    stored[17, 0, 3] += 1.0  # block 2 (rows 16..23) torn after it was logged
    stored.flush()
    assert verify_stored(path)["bad"] == [(2, 0)]
    sizes = _count_blocks(monkeypatch)
    with pytest.warns(UserWarning, match=r"1 logged tile.*: \(2, 0\)\."):
        again = projected_ntk_features(net, X, out=path, **PROJ)
    assert sizes == [8] and _same(again, F)


def test_projected_features_to_a_path_is_refused_when_it_cannot_resume(tmp_path):
    net, X = make_mlp(), torch.randn(10, 5)
    path = str(tmp_path / "F.npy")
    with pytest.raises(ValueError, match="integer random_state"):
        projected_ntk_features(net, X, out=path, **{**PROJ, "random_state": None})
    projected_ntk_features(net, X, out=path, **PROJ)
    with pytest.raises(ValueError, match="different kernel: random_state"):
        projected_ntk_features(net, X, out=path, **{**PROJ, "random_state": 4})
    with pytest.raises(ValueError, match="different kernel: X1"):
        projected_ntk_features(net, X + 1, out=path, **PROJ)


# --------------------------------------------------------------------------- memory_budget
def test_parse_budget():
    assert _cost.parse_budget("4GiB") == 4 * 2**30
    assert _cost.parse_budget("0.25 gib") == 2**28
    assert _cost.parse_budget("512MB") == 512 * 10**6
    assert _cost.parse_budget(1000) == 1000 and _cost.parse_budget(None) is None
    for bad in ["lots", "4 GiBs", 0, -1, True, [1]]:
        with pytest.raises(ValueError, match="memory_budget"):
            _cost.parse_budget(bad)
    with pytest.raises(ValueError, match="memory_budget"):
        empirical_ntk(make_mlp(), torch.randn(3, 5), memory_budget="big", device="cpu")


def test_memory_budget_changes_the_plan_not_the_kernel(monkeypatch):
    net, X = make_cnn_bn(), _data(9)
    plans = {}
    for budget in [None, 20_000, "20kB"]:
        engine = NTKEngine(net, "trace", device="cpu", dtype="float64", memory_budget=budget)
        engine._prepare(engine._tensor(X))
        plans[budget] = engine._plan(9, 9, True, 1024)
    assert plans[None] == (9, True)  # every block kept
    assert plans[20_000] == plans["20kB"] and plans[20_000][0] < 9 and not plans[20_000][1]
    base = empirical_ntk(net, X, kind="trace", dtype="float64", device="cpu")
    sizes = _count_blocks(monkeypatch)
    K = empirical_ntk(net, X, kind="trace", dtype="float64", device="cpu", memory_budget=20_000)
    np.testing.assert_allclose(K, base, rtol=1e-12, atol=1e-12)
    assert max(sizes) < 9 and sum(sizes) > 9  # smaller blocks, column blocks recomputed
    d = ntk_diagonal(net, X, "trace", dtype="float64", device="cpu", memory_budget=20_000)
    np.testing.assert_allclose(d, np.diag(base), rtol=1e-12)


def test_featurizer_passes_memory_budget(monkeypatch):
    seen = []
    budget = _cost.memory_budget
    monkeypatch.setattr(_cost, "memory_budget", lambda d, b=None: (seen.append(b), budget(d, b))[1])
    net, X = make_mlp(), torch.randn(8, 5).numpy()
    K = NTKFeaturizer(net, device="cpu", dtype="float64", memory_budget="1MiB").fit_transform(X)
    ref = NTKFeaturizer(net, device="cpu", dtype="float64").fit_transform(X)
    np.testing.assert_allclose(K, ref, rtol=1e-12)
    assert 2**20 in seen and None in seen
    with pytest.raises(InvalidParameterError, match="memory_budget"):
        NTKFeaturizer(net, memory_budget=0.5).fit(X)
