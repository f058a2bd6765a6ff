"""The NTK engine on a zoo of common layers, every kind and method, against a vmap-free reference.

The reference (``ntk_reference.reference(..., loop=True)``) differentiates one sample and one
output at a time with ``torch.autograd.grad`` in float64, so it cannot share a torch.func
batching bug with the engine (nested ``vmap`` through PReLU's backward returns
``(n, n, ...)``-shaped gradients: issue 15).
"""

import numpy as np
import pytest
import torch
from ntk_reference import reference, rel_err
from torch import nn

from sknn_kernels.ntk import NTKEngine, empirical_ntk, ntk_diagonal

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")

KINDS = ["pntk", "trace", "diagonal", "full", "loss_grad"]
METHODS = ["auto", "structured", "vmap", "autograd"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


def prelu_net():
    """The issue's reproduction: nested vmap gives ``0.weight`` a ``(5, 5, 4, 3)`` gradient."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.PReLU(4), nn.Linear(4, 2))


def activations_net():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(5, 8),
        nn.SiLU(),
        nn.Linear(8, 8),
        nn.GELU(),
        nn.LayerNorm(8),
        nn.Dropout(0.5),
        nn.Linear(8, 6),
        nn.Softplus(),
        nn.Linear(6, 3),
    )


def cnn_net():
    """PReLU per channel, MaxPool with ceil_mode (7 -> 4), GroupNorm, dropout in eval."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.PReLU(4),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.GroupNorm(2, 4),
        nn.SiLU(),
        nn.Dropout2d(0.5),
        nn.Flatten(),
        nn.Linear(64, 3),
    )


class TokenAttention(nn.Module):
    """Embedding -> MultiheadAttention -> LayerNorm -> mean pool -> Linear (token ids as input)."""

    def __init__(self, vocab=11, d=8, n_out=3):
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(vocab, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)

    def forward(self, ids):
        h = self.embed(ids.long())
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.head(h.mean(1))


ZOO = {
    "prelu": prelu_net,
    "activations": activations_net,
    "cnn": cnn_net,
    "attention": TokenAttention,
}


def zoo_data(name, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "attention":
        return torch.randint(0, 11, (n, 4), generator=g)  # integer token ids
    shapes = {"prelu": (3,), "activations": (5,), "cnn": (1, 7, 7)}
    return torch.randn((n,) + shapes[name], generator=g)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_every_kind_matches_reference(name, method):
    net = ZOO[name]()
    X1, X2 = zoo_data(name, 5), zoo_data(name, 3, 1)
    y1 = np.arange(5) % 2
    for kind in KINDS:
        R = reference(net, X1, X2, kind, y1=y1, loop=True)
        K = empirical_ntk(net, X1, X2, kind, method=method, device="cpu", dtype="float64", y1=y1)
        assert K.shape == R.shape
        assert rel_err(K, R) <= 1e-9, (kind, rel_err(K, R))
    K32 = empirical_ntk(net, X1, kind="trace", method=method, device="cpu")
    assert rel_err(K32, reference(net, X1, kind="trace", loop=True)) <= 1e-4


@pytest.mark.parametrize("name", ZOO)
def test_zoo_layerwise_diagonal_and_layers(name):
    net = ZOO[name]()
    X = zoo_data(name, 4)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    parts = engine.kernel(X, layerwise=True)
    for layer, K in parts.items():
        assert rel_err(K, reference(net, X, kind="trace", owned=layer, loop=True)) <= 1e-9, layer
    total = reference(net, X, kind="trace", loop=True)
    np.testing.assert_allclose(
        ntk_diagonal(net, X, "trace", device="cpu", dtype="float64"), np.diag(total), rtol=1e-9
    )
    first = sorted(parts)[:1]
    K = empirical_ntk(net, X, kind="trace", layers=first, device="cpu", dtype="float64")
    assert rel_err(K, reference(net, X, kind="trace", layers=first, loop=True)) <= 1e-9


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_prelu_regression_generic_path_falls_back(method):
    """The nested-vmap PReLU bug is caught on the probe; the kernel is exact in float32 too."""
    net = prelu_net()
    X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    engine = NTKEngine(net, "trace", method=method, device="cpu", dtype="float64")
    parts = engine.kernel(X, layerwise=True)
    if method == "auto":  # PReLU goes through the local rule (single-level vmap per cotangent)
        assert {type(u).__name__ for u in engine.units} == {"LinearRule", "LocalRule"}
        assert not engine.generic
    else:
        assert engine.generic_path != "vmap" and engine.generic_notes
    R = reference(net, X, kind="trace", owned="1", loop=True)  # the PReLU parameters
    assert rel_err(parts["1"], R) <= 1e-9
    K32 = empirical_ntk(net, X, kind="trace", method=method, device="cpu")
    assert rel_err(K32, reference(net, X, kind="trace", loop=True)) <= 1e-5


def test_wrongly_shaped_generic_gradients_fall_back(monkeypatch):
    """A gradient of the wrong shape on a later batch is detected, not reshaped away."""
    from sknn_kernels.ntk import _generic as engine_module

    net = activations_net()
    X = zoo_data("activations", 6)
    real = engine_module.vmap_grads

    def broken(adapter, names, x, V, nested=True):
        grads = real(adapter, names, x, V, nested=nested)
        if nested and len(x) > 2:  # the probe (2 samples) passes, later batches do not
            from sknn_kernels.ntk.gradients import check_shapes

            return check_shapes(
                [g.repeat(1, 2, 1) for g in grads],
                [(g.shape[2],) for g in grads],
                len(x),
                V.shape[1],
                "broken",
            )
        return grads

    monkeypatch.setattr(engine_module, "vmap_grads", broken)
    engine = NTKEngine(net, "pntk", method="vmap", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert engine.generic_path == "vmap_per_cotangent"
    assert rel_err(K, reference(net, X, loop=True)) <= 1e-9
