"""The structured (Kronecker) projection: unbiased, reproducible, and close to dense JL."""

import numpy as np
import pytest
import torch
from ntk_reference import reference
from torch import nn

from sknn_kernels.ntk import NTKEngine, empirical_ntk, features_kernel, projected_ntk_features
from sknn_kernels.ntk import projection as projection_module
from sknn_kernels.ntk.projection import kron_side


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


class Mixed(nn.Module):
    """Embedding (ids), Linear over tokens, Conv1d, LayerNorm and PReLU (dense leftovers)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(6, 4, padding_idx=0)
        self.lin = nn.Linear(4, 5)
        self.conv = nn.Conv1d(5, 3, 2)
        self.norm = nn.LayerNorm(3)
        self.act = nn.PReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, ids):  # (n, 4) integer ids
        h = torch.tanh(self.lin(self.embed(ids)))  # (n, 4, 5)
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (n, 3, 3)
        return self.head(self.act(self.norm(h)).mean(1))


def _ids(n, seed=0):
    return torch.randint(0, 6, (n, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("side", [1, 2, 4])
def test_structured_projection_unbiased(monkeypatch, side):
    """Averaged over seeds, the projected kernel converges to the exact one (every block side,
    a partial last block when k is not a multiple of s²)."""
    monkeypatch.setattr(projection_module, "KRON_COST_FRACTION", 1e9)  # every layer structured
    monkeypatch.setattr("sknn_kernels.ntk._cost.kron_side", lambda *args: side)
    net, X = Mixed(), _ids(5)
    R = reference(net, X, kind="trace", loop=True)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    Ks = [
        features_kernel(
            engine.projected_features(X, projection_dim=24, random_state=s), kind="trace"
        )
        for s in range(200)
    ]
    assert {u.side for u in engine.units if u.sketchable} == {side}
    norm = np.linalg.norm(R)
    single = np.mean([np.linalg.norm(K - R) for K in Ks]) / norm
    mean = np.linalg.norm(np.mean(Ks, axis=0) - R) / norm
    assert mean < 0.25 * single  # ~1/sqrt(200) of one estimate's error if unbiased


def test_structured_projection_reproducible_and_sized():
    net, X = Mixed(), _ids(7)
    opts = {"projection_dim": 40, "random_state": 1, "device": "cpu", "dtype": "float64"}
    a = projected_ntk_features(net, X, "diagonal", **opts)
    b = projected_ntk_features(net, X, "diagonal", batch_size=2, block_size=3, **opts)
    assert a.shape == (7, 2, 40)
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    F = projected_ntk_features(net, X, "pntk", **opts)
    parts = NTKEngine(net, "pntk", device="cpu", dtype="float64").projected_features(
        X, projection_dim=40, random_state=1, layerwise=True
    )
    assert set(parts) == {"embed", "lin", "conv", "norm", "act", "head"}
    np.testing.assert_allclose(sum(parts.values()), F, rtol=1e-9, atol=1e-12)  # same Π per layer


def test_structured_error_close_to_dense():
    """At the same k, the structured kernel's error is within 1.5x of dense JL's (s = 1 layers)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3)
    )
    X = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    R = reference(net, X, kind="pntk", loop=True)
    errors = {}
    for how in ("structured", "dense"):
        Ks = [
            empirical_ntk(
                net,
                X,
                projection_dim=64,
                projection=how,
                random_state=s,
                device="cpu",
                dtype="float64",
            )
            for s in range(20)
        ]
        errors[how] = np.mean([np.linalg.norm(K - R) for K in Ks]) / np.linalg.norm(R)
    assert errors["structured"] <= 1.5 * errors["dense"], errors


def test_kron_side_follows_the_cost():
    # one position (fully connected): s = 1 is far cheaper than dense
    assert kron_side(1, 513, 512, 512 * 513, 1, 512) == 1
    # many positions and a small weight (an early convolution): no s is cheaper than dense
    assert kron_side(1024, 28, 64, 64 * 28, 1, 512) is None
    # in between, the side grows until the sketch costs a quarter of the dense projection
    s = kron_side(256, 1153, 128, 128 * 1153, 1, 512)
    dense = 128 * 1153 * 512 + 256 * 128 * 1153
    cost = 256 * (1153 + 128) * 512 / s + 256 * 512
    assert s > 1 and cost <= 0.25 * dense < 256 * (1153 + 128) * 512 / (s // 2) + 256 * 512
    with pytest.raises(ValueError, match="projection must be one of"):
        empirical_ntk(nn.Linear(2, 2), torch.randn(3, 2), projection_dim=4, projection="kron")


def _padded_convs():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 4, 2, stride=2, padding=(1, 0), dilation=(1, 2), padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(4, 2, 3, padding="same", bias=False),
        nn.Flatten(),
        nn.Linear(2 * 3 * 2, 2),
    )


@pytest.mark.parametrize("name", ["mixed", "padded"])
def test_conv_projection_as_a_convolution_equals_patches(monkeypatch, name):
    """A conv called once projects its patches with a convolution of its (padded) input; the
    features equal those of the unfolded patches."""
    from sknn_kernels.ntk.rules.base import Rule
    from sknn_kernels.ntk.rules.conv import ConvRule

    monkeypatch.setattr(projection_module, "KRON_COST_FRACTION", 1e9)  # every layer structured
    net = Mixed() if name == "mixed" else _padded_convs()
    X = _ids(6) if name == "mixed" else torch.randn(6, 2, 5, 5)
    opts = {"projection_dim": 32, "random_state": 3}
    engine = NTKEngine(net, "diagonal", device="cpu", dtype="float64")
    a = engine.projected_features(X, **opts)
    convs = [u for u in engine.units if isinstance(u, ConvRule)]
    assert convs and all(u.raw and u.side is not None for u in convs)
    monkeypatch.setattr(ConvRule, "combine", Rule.combine)  # unfolded patches
    b = NTKEngine(net, "diagonal", device="cpu", dtype="float64").projected_features(X, **opts)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
