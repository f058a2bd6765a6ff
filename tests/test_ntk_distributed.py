"""Kernel tiles on real engines (loky, a dask.distributed LocalCluster, Ray): bitwise the serial kernel."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp
from joblib import parallel_config

from sknn_kernels import NTKFeaturizer
from sknn_kernels.ntk import _tiles, empirical_ntk, projected_ntk_features


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Serial references on one thread, as the workers (Dask and loky limit them)."""


def _cnn_data(n, seed=0):
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def _mlp_data(n, seed=0):
    return torch.randn((n, 5), generator=torch.Generator().manual_seed(seed))


def _same(a, b):
    """Bitwise equality, dtype included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _check_backend(n_jobs=2):
    """Exact and projected kernels through the active joblib backend equal the serial ones."""
    cnn, X, Z = make_cnn_bn(), _cnn_data(37), _cnn_data(11, seed=1)
    opts = {"device": "cpu", "block_size": 8, "batch_size": 5}
    for kind, X2 in [("pntk", None), ("full", Z)]:
        serial = empirical_ntk(cnn, X, X2, kind=kind, **opts)
        assert _same(empirical_ntk(cnn, X, X2, kind=kind, n_jobs=n_jobs, **opts), serial)
    mlp = make_mlp()
    Xm = _mlp_data(30)
    serial = empirical_ntk(mlp, Xm, kind="trace", layerwise=True, **opts)
    parallel = empirical_ntk(mlp, Xm, kind="trace", layerwise=True, n_jobs=n_jobs, **opts)
    assert sorted(parallel) == sorted(serial)
    assert all(_same(parallel[k], serial[k]) for k in serial)
    proj = {"projection_dim": 24, "random_state": 3, **opts}
    F = projected_ntk_features(cnn, X, **proj)
    assert _same(projected_ntk_features(cnn, X, n_jobs=n_jobs, **proj), F)


def test_loky_equals_serial():
    _check_backend()


def test_loss_grad_and_featurizer_n_jobs():
    mlp, X = make_mlp(), _mlp_data(26)
    y = np.arange(26) % 3
    opts = {"device": "cpu", "block_size": 7, "kind": "loss_grad", "y1": y}
    assert _same(empirical_ntk(mlp, X, n_jobs=2, **opts), empirical_ntk(mlp, X, **opts))
    serial = NTKFeaturizer(mlp, device="cpu", block_size=7, normalize="cosine")
    parallel = NTKFeaturizer(mlp, device="cpu", block_size=7, normalize="cosine", n_jobs=2)
    assert _same(parallel.fit_transform(X), serial.fit_transform(X))
    assert _same(parallel.transform(X[:9]), serial.transform(X[:9]))
    projected = {"device": "cpu", "block_size": 7, "projection_dim": 16, "random_state": 0}
    serial = NTKFeaturizer(mlp, **projected).fit(X)
    parallel = NTKFeaturizer(mlp, n_jobs=2, **projected).fit(X)
    assert _same(parallel.fit_features_, serial.fit_features_)


def test_n_jobs_none_is_the_engine_loop(monkeypatch):
    """n_jobs=None with an in-memory output never touches joblib (no pickling, no overhead)."""

    def fail(*args, **kwargs):
        raise AssertionError("joblib was used")

    monkeypatch.setattr(_tiles, "_dispatch", fail)
    monkeypatch.setattr(_tiles, "_payload", fail)
    K = empirical_ntk(make_mlp(), _mlp_data(12), device="cpu", block_size=4)
    F = projected_ntk_features(
        make_mlp(), _mlp_data(12), projection_dim=8, random_state=0, device="cpu", block_size=4
    )
    assert K.shape == (12, 12) and F.shape == (12, 1, 8)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="pip install sknn_kernels[distributed]")
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=50,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_cluster_equals_serial(dask_client):
    with parallel_config(backend="dask"):
        _check_backend(n_jobs=-1)
    # each worker unpickled the planned engine once per kernel, not once per task
    loads = dask_client.run(lambda: _tiles._LOADS)
    assert sum(loads.values()) <= 2 * 2 * 4  # 2 workers x at most one load per call (4 calls)
    assert all(n >= 1 for n in loads.values())  # both workers took part


def test_dask_engine_built_once_per_worker(dask_client):
    dask_client.run(_tiles._reset)
    net, X = make_cnn_bn(), _cnn_data(40)
    with parallel_config(backend="dask"):
        K = empirical_ntk(net, X, device="cpu", block_size=4, n_jobs=-1)  # 55 tiles, 10 tasks
    assert _same(K, empirical_ntk(net, X, device="cpu", block_size=4))
    loads = dask_client.run(lambda: _tiles._LOADS)
    assert sum(loads.values()) <= 2


def test_ray_equals_serial():
    ray = pytest.importorskip("ray", reason="pip install ray (optional)")
    from ray.util.joblib import register_ray

    here = Path(__file__).parent  # Ray workers import the test networks and this checkout
    path = os.pathsep.join([str(here.parent), str(here)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )
    try:
        register_ray()
        with parallel_config(backend="ray"):
            net, X = make_cnn_bn(), _cnn_data(21)
            opts = {"device": "cpu", "block_size": 6}
            assert _same(empirical_ntk(net, X, n_jobs=2, **opts), empirical_ntk(net, X, **opts))
    finally:
        ray.shutdown()


def test_dask_resumes_a_stored_kernel(dask_client, tmp_path):
    """Tiles lost in an interruption (values gone, not in the log) are redone on the cluster."""
    from sknn_kernels.ntk.store import log_path

    net, X = make_cnn_bn(), _cnn_data(30)
    opts = {"device": "cpu", "block_size": 5}
    path = str(tmp_path / "K.npy")
    with parallel_config(backend="dask"):
        K = np.array(empirical_ntk(net, X, out=path, n_jobs=-1, **opts))
        assert _same(K, empirical_ntk(net, X, **opts))
        log = log_path(path)
        lines = log.read_text().splitlines()
        lost = [json.loads(line) for line in lines[-7:]]
        stored = np.load(path, mmap_mode="r+")
        for i, j, _crc in lost:
            stored[5 * i : 5 * i + 5, 5 * j : 5 * j + 5] = np.nan
        stored.flush()
        log.write_text("\n".join(lines[:-7]) + "\n")
        resumed = empirical_ntk(net, X, out=path, n_jobs=-1, **opts)
    assert _same(np.asarray(resumed), K)
    assert len(log.read_text().splitlines()) == len(lines)  # the 7 lost tiles, nothing more


def test_dask_worker_killed_mid_run(dask_client, tmp_path):
    """A worker that dies mid-run fails the call (joblib's Dask backend gives up on the lost
    task); the same call again resumes from the tile log and gives the exact kernel."""
    marker = str(tmp_path / "killed")

    def output(module, x):
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # the caller (planning, probe): not a worker
            return module(x)
        if not os.path.exists(marker):  # the first tile on a worker kills that worker
            Path(marker).touch()
            os._exit(1)
        return module(x)

    net, X = make_mlp(), _mlp_data(24)
    opts = {"device": "cpu", "block_size": 6, "network_output": output}
    path = str(tmp_path / "K.npy")
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    from sknn_kernels.ntk.store import log_path

    with parallel_config(backend="dask"):
        # joblib cancels the lost task's future (or the scheduler gives up on the worker)
        with pytest.raises((CancelledError, KilledWorker)):
            empirical_ntk(net, X, out=path, n_jobs=-1, **opts)
        assert os.path.exists(marker)  # a worker was killed
        K = empirical_ntk(net, X, out=path, n_jobs=-1, **opts)
    assert _same(np.asarray(K), empirical_ntk(net, X, **opts))
    done = [tuple(json.loads(line)[:2]) for line in log_path(path).read_text().splitlines()[1:]]
    # every tile logged exactly once: those done before the failure were not recomputed
    assert sorted(done) == sorted({(i, j) for i in range(4) for j in range(i, 4)})


def test_local_network_class_and_lambda_output():
    """A network class defined in a function (or a notebook) and a lambda travel by value."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(5, 6), torch.nn.Linear(6, 3)

        def forward(self, x):
            return {"scores": self.b(torch.tanh(self.a(x)))}

    torch.manual_seed(0)
    net, X = Net(), _mlp_data(20)
    opts = {"device": "cpu", "block_size": 6, "network_output": lambda m, x: m(x)["scores"]}
    assert _same(empirical_ntk(net, X, n_jobs=2, **opts), empirical_ntk(net, X, **opts))
