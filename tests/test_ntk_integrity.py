"""Kernels on disk that cannot be silently wrong: tile checksums checked on resume and on demand."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from _nets import make_mlp

from sknn_kernels.ntk import NTKEngine, _integrity, empirical_ntk, verify_stored
from sknn_kernels.ntk.store import log_path

N, BLOCK = 12, 4  # 3 row blocks: 6 tiles on and above the diagonal
OPTS = {"device": "cpu", "block_size": BLOCK}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


@pytest.fixture(params=[".npy", ".zarr"])
def suffix(request):
    if request.param == ".zarr":
        pytest.importorskip("zarr", reason="pip install sknn_kernels[zarr]")
    return request.param


def _setup(tmp_path, suffix):
    net, X = make_mlp(), torch.randn(N, 5, generator=torch.Generator().manual_seed(0))
    path = str(tmp_path / f"K{suffix}")
    K = np.array(empirical_ntk(net, X, out=path, **OPTS))
    return net, X, path, K


def _count_tiles(monkeypatch):
    calls = []
    tile = NTKEngine._tile

    def counting(self, B1, B2, paired=False):
        calls.append(1)
        return tile(self, B1, B2, paired)

    monkeypatch.setattr(NTKEngine, "_tile", counting)
    return calls


def _rerun(net, X, path, monkeypatch, match):
    calls = _count_tiles(monkeypatch)
    with pytest.warns(UserWarning, match=match):
        K = empirical_ntk(net, X, out=path, **OPTS)
    return np.array(K), len(calls)


def test_log_records_a_checksum_per_tile(tmp_path):
    _net, _X, path, _K = _setup(tmp_path, ".npy")
    lines = log_path(path).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["checksum"] == "crc32" and header["symmetric"]
    tiles = [json.loads(line) for line in lines[1:]]
    assert len(tiles) == 6 and all(len(t) == 3 and len(t[2]) == 8 for t in tiles)
    assert verify_stored(path) == {
        "tiles": 6,
        "logged": 6,
        "bad": [],
        "problems": [],
        "complete": True,
    }


def test_deleted_array_file_is_recomputed(tmp_path, monkeypatch, suffix):
    net, X, path, K = _setup(tmp_path, suffix)
    shutil.rmtree(path) if suffix == ".zarr" else os.remove(path)
    assert verify_stored(path)["problems"] and len(verify_stored(path)["bad"]) == 6
    again, computed = _rerun(net, X, path, monkeypatch, "6 logged tile.*file is missing")
    assert computed == 6 and np.array_equal(again, K)
    assert verify_stored(path)["complete"]


def test_replaced_array_file_is_recomputed(tmp_path, monkeypatch, suffix):
    net, X, path, K = _setup(tmp_path, suffix)
    other = np.random.default_rng(0).standard_normal(K.shape).astype(K.dtype)
    if suffix == ".npy":
        os.remove(path)
        np.save(path, other)
    else:
        import zarr

        shutil.rmtree(path)
        zarr.open_array(path, mode="w", shape=K.shape, chunks=(BLOCK, BLOCK), dtype=K.dtype)[:] = (
            other
        )
    report = verify_stored(path)
    assert len(report["bad"]) == 6 and not report["complete"]
    assert "it was replaced" in report["problems"][0]
    again, computed = _rerun(net, X, path, monkeypatch, r"6 logged tile.*replaced.*differ")
    assert computed == 6 and np.array_equal(again, K)
    assert verify_stored(path)["problems"] == []  # the file is the log's again


def test_moved_kernel_resumes_without_recomputing(tmp_path, monkeypatch, suffix):
    """The array's id travels with it (a .npy trailer, a Zarr attribute): a copy is the same."""
    import warnings

    net, X, path, K = _setup(tmp_path, suffix)
    moved = str(tmp_path / "elsewhere" / os.path.basename(path))
    os.makedirs(os.path.dirname(moved))
    (shutil.copytree if suffix == ".zarr" else shutil.copy)(path, moved)
    shutil.copy(log_path(path), log_path(moved))
    assert verify_stored(moved)["complete"] and verify_stored(moved)["problems"] == []
    calls = _count_tiles(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = empirical_ntk(net, X, out=moved, **OPTS)
    assert not calls and np.array_equal(np.asarray(again), K)
    assert np.array_equal(np.load(moved) if suffix == ".npy" else again[:], K)  # NumPy reads it


def test_truncated_npy_recomputes_the_lost_tiles(tmp_path, monkeypatch):
    net, X, path, K = _setup(tmp_path, ".npy")
    size = os.path.getsize(path)
    os.truncate(path, size - K.nbytes // 2)  # the last 6 of 12 rows are lost
    assert "cut short" in verify_stored(path)["problems"][0]
    # every tile but (0, 0) wrote rows 6..11 (its own rows or, above the diagonal, its mirror)
    again, computed = _rerun(net, X, path, monkeypatch, r"cut short.*: \(0, 1\), \(0, 2\)")
    assert computed == 5 and np.array_equal(again, K)


def test_npy_cut_into_its_header_is_refused(tmp_path):
    net, X, path, _K = _setup(tmp_path, ".npy")
    os.truncate(path, 20)
    with pytest.raises(ValueError, match=r"not a readable \.npy file.*delete .*K\.npy"):
        empirical_ntk(net, X, out=path, **OPTS)


def test_torn_tile_is_recomputed(tmp_path, monkeypatch, suffix):
    net, X, path, K = _setup(tmp_path, suffix)
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r+")
        arr[5, 1] += 1.0  # below the diagonal: the mirror of tile (0, 1)
        arr.flush()
        del arr
    else:
        import zarr

        arr = zarr.open_array(path, mode="r+")
        arr[5, 1] = arr[5, 1] + 1.0
    assert verify_stored(path)["bad"] == [(0, 1)]
    again, computed = _rerun(net, X, path, monkeypatch, r"1 logged tile.*: \(0, 1\)\.")
    assert computed == 1 and np.array_equal(again, K)
    assert verify_stored(path)["complete"]


def test_lost_zarr_chunk_is_recomputed(tmp_path, monkeypatch):
    pytest.importorskip("zarr", reason="pip install sknn_kernels[zarr]")
    net, X, path, K = _setup(tmp_path, ".zarr")
    os.remove(os.path.join(path, "c", "2", "1"))  # the mirror chunk of tile (1, 2)
    again, computed = _rerun(net, X, path, monkeypatch, r"\(1, 2\)")
    assert computed == 1 and np.array_equal(again, K)


def test_zarr_chunks_are_fsynced_before_logging(tmp_path, monkeypatch):
    pytest.importorskip("zarr", reason="pip install sknn_kernels[zarr]")
    synced = []
    fsync = _integrity.fsync
    monkeypatch.setattr(_integrity, "fsync", lambda p: (synced.append(str(p)), fsync(p)))
    _net, _X, path, _K = _setup(tmp_path, ".zarr")
    chunks = {os.path.join(path, "c", str(i), str(j)) for i in range(3) for j in range(3)}
    assert chunks <= set(synced)
    assert os.path.join(path, "c", "1") in synced  # the directory of a renamed chunk


def test_old_logs_and_missing_logs_are_refused(tmp_path):
    net, X, path, _K = _setup(tmp_path, ".npy")
    log = log_path(path)
    lines = log.read_text().splitlines()
    header = {**json.loads(lines[0]), "version": 1}
    log.write_text(json.dumps(header) + "\n" + "[0, 0]\n")
    with pytest.raises(ValueError, match="version 1.*delete"):
        empirical_ntk(net, X, out=path, **OPTS)
    with pytest.raises(ValueError, match="version 1"):
        verify_stored(path)
    with pytest.raises(FileNotFoundError, match="no tile log"):
        verify_stored(str(tmp_path / "none.npy"))
