"""The network adapter: non-mutation, devices, fingerprints, skorch, persistence, errors."""

import io
import warnings

import joblib
import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from skorch import NeuralNetClassifier
from torch import nn

from sknn_kernels import EmbeddingExtractor
from sknn_kernels.exceptions import DeviceWarning, NetworkChangedWarning
from sknn_kernels.network._adapter import (
    NetworkAdapter,
    fingerprint,
    resolve_device,
    unwrap_network,
)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, [
        m.training for m in module.modules()
    ]


@pytest.mark.parametrize("training", [True, False])
def test_user_network_is_never_mutated(training, rng):
    net = make_cnn_bn()
    net.train(training)
    before, flags = _snapshot(net)
    X = rng.normal(size=(7, 64))
    emb = EmbeddingExtractor(net, layers=["bn", "fc"], input_shape=(1, 8, 8), device="cpu")
    emb.fit(X).transform(X)
    after, flags_after = _snapshot(net)
    assert flags_after == flags
    assert before.keys() == after.keys()
    for key in before:  # bit-identical, BatchNorm running stats included
        assert torch.equal(before[key], after[key]), key
    assert all(p.requires_grad for p in net.parameters())
    assert next(net.parameters()).device.type == "cpu"


def test_private_copy_is_eval_and_separate():
    net = make_cnn_bn().train()
    adapter = NetworkAdapter(net, device="cpu", dtype="float64")
    assert not adapter.module.training and net.training
    assert adapter.module is not net
    assert next(adapter.module.parameters()).dtype == torch.float64
    assert next(net.parameters()).dtype == torch.float32


def test_fingerprint_is_content_based():
    net = make_mlp()
    twin = make_mlp()
    assert fingerprint(net) == fingerprint(twin)
    with torch.no_grad():
        twin[0].weight[0, 0] += 1e-3
    assert fingerprint(net) != fingerprint(twin)
    buffers = make_cnn_bn()
    fp = fingerprint(buffers)
    buffers.bn.running_mean += 1.0  # buffers count too
    assert fingerprint(buffers) != fp


def test_transform_warns_when_network_changed(rng):
    net = make_mlp()
    X = rng.normal(size=(6, 5))
    emb = EmbeddingExtractor(net, device="cpu").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.transform(X)
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # "trained further" after fitting
    with pytest.warns(NetworkChangedWarning, match="differ from those seen at fit"):
        emb.transform(X)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="not a valid torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_not_a_network():
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        unwrap_network("resnet18")
    with pytest.raises(ValueError, match="`network` is None"):
        EmbeddingExtractor().fit(np.ones((3, 2)))


def _skorch_net(fit=True):
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = NeuralNetClassifier(
        make_mlp(n_out=2),
        max_epochs=2,
        lr=0.1,
        train_split=None,
        verbose=0,
        criterion=nn.CrossEntropyLoss,
    )
    if fit:
        torch.manual_seed(0)
        net.fit(X, y)
    return net, X, y


def test_skorch_plain_and_frozen():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    net, X, y = _skorch_net()
    expected = EmbeddingExtractor(net.module_, device="cpu").fit(X).transform(X)
    plain = EmbeddingExtractor(net, device="cpu").fit(X).transform(X)
    np.testing.assert_array_equal(plain, expected)
    frozen = EmbeddingExtractor(FrozenEstimator(net), device="cpu")
    np.testing.assert_array_equal(frozen.fit(X).transform(X), expected)
    # clone keeps a frozen net's weights; a plain skorch net comes back unfitted
    np.testing.assert_array_equal(clone(frozen).fit(X).transform(X), expected)
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        clone(EmbeddingExtractor(net, device="cpu")).fit(X)
    pipe = make_pipeline(
        EmbeddingExtractor(FrozenEstimator(net), device="cpu"), LogisticRegression()
    )
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.5


def test_unfitted_skorch_net_error():
    net, X, _ = _skorch_net(fit=False)
    with pytest.raises(NotFittedError, match="not initialized"):
        EmbeddingExtractor(net, device="cpu").fit(X)


def test_joblib_round_trip(tmp_path, rng):
    X = rng.normal(size=(9, 64))
    emb = EmbeddingExtractor(
        make_cnn_bn(),
        layers=["conv1", "fc:input"],
        pooling="avg",
        input_shape=(1, 8, 8),
        device="cpu",
    )
    Z = emb.fit(X).transform(X)
    path = tmp_path / "emb.joblib"
    joblib.dump(emb, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.transform(X), Z)
    # fitted state holds no tensors, hooks or modules besides the `network` parameter
    for name, value in vars(loaded).items():
        if name != "network":
            assert not isinstance(value, (torch.Tensor, nn.Module)), name
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.network.modules())


def test_cuda_fitted_model_transforms_on_cpu(tmp_path, rng):
    """A model fitted on a GPU machine (device_='cuda') loads and runs on a CPU-only one."""
    if torch.cuda.is_available():
        pytest.skip("simulates a CPU-only machine")
    X = rng.normal(size=(5, 5))
    emb = EmbeddingExtractor(make_mlp(), device="cpu").fit(X)
    Z = emb.transform(X)
    emb.device_ = "cuda:0"  # the state a fit with device="cuda" leaves
    buffer = io.BytesIO()
    joblib.dump(emb, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    with pytest.warns(DeviceWarning, match="not available here"):
        np.testing.assert_array_equal(loaded.transform(X), Z)


def test_cuda_network_parameter_pickles_to_cpu(rng, monkeypatch):
    """A network parameter that lives on CUDA is saved as torch bytes and restored to CPU."""
    import sknn_kernels.network._base as network_module

    X = rng.normal(size=(4, 5))
    emb = EmbeddingExtractor(make_mlp(), device="cpu").fit(X)
    Z = emb.transform(X)
    monkeypatch.setattr(network_module, "_on_cuda", lambda module: True)
    state = emb.__getstate__()
    assert isinstance(state["network"], network_module._CudaModuleBytes)
    restored = EmbeddingExtractor.__new__(EmbeddingExtractor)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="loaded onto the CPU"):
        restored.__setstate__(state)
    np.testing.assert_array_equal(restored.transform(X), Z)


def test_bad_inputs(rng):
    X = rng.normal(size=(6, 5))
    emb = EmbeddingExtractor(make_mlp(), device="cpu")
    with pytest.raises(NotFittedError):
        emb.transform(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        emb.fit(bad)
    emb.fit(X)
    with pytest.raises(ValueError, match="features"):
        emb.transform(rng.normal(size=(3, 4)))
    inf = X.copy()
    inf[1, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        emb.transform(inf)
    with pytest.raises(ValueError, match="does not exist.*Valid names: '0', '1'"):
        EmbeddingExtractor(make_mlp(), layers=["0", "fc9"], device="cpu").fit(X)
    with pytest.raises(ValueError, match="cannot process inputs of per-sample shape"):
        EmbeddingExtractor(make_mlp(), device="cpu").fit(rng.normal(size=(4, 7)))
    with pytest.raises(ValueError, match=r"input_shape=\(1, 8, 8\) needs 64 values"):
        EmbeddingExtractor(make_cnn_bn(), input_shape=(1, 8, 8), device="cpu").fit(
            rng.normal(size=(4, 60))
        )
    with pytest.raises(ValueError, match="dtype"):
        EmbeddingExtractor(make_mlp(), dtype="float16", device="cpu").fit(X)
