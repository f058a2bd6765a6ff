"""Each per-layer rule against the float64 autograd-loop reference, every kind, with sharing."""

import numpy as np
import pytest
import torch
from _nets import autograd_kernel
from ntk_reference import reference, rel_err
from torch import nn

from sknn_kernels.ntk import NTKEngine, empirical_ntk
from sknn_kernels.ntk.rules import rule_for, supported_layers, supported_layers_rst

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

KINDS = ["pntk", "trace", "diagonal", "full", "loss_grad"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


class Tokens(nn.Module):
    """Linear at T positions, called twice (sharing), on (n, T, 3) inputs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))).mean(1))


class Convs1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 4, 3, padding="same", dilation=2, groups=2)
        self.b = nn.Conv1d(4, 3, 4, stride=2, padding=1, padding_mode="circular")
        self.head = nn.Linear(3, 2)

    def forward(self, x):  # (n, 2, 9)
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))).mean(2))


class Convs2d(nn.Module):
    """Even kernel with padding='same' (asymmetric), reflect padding, depthwise, shared conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 4, padding="same", bias=False)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect")
        self.shared = nn.Conv2d(4, 4, 3, stride=2, dilation=1, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 2, 6, 6)
        h = torch.tanh(self.dw(torch.tanh(self.a(x))))
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        return self.head(h.mean((2, 3)))


class Convs3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(1, 3, (2, 3, 3), stride=(1, 2, 1), padding=(0, 1, 1), dilation=(1, 1, 2))
        self.head = nn.Linear(3, 2)

    def forward(self, x):  # (n, 1, 3, 5, 6)
        return self.head(torch.tanh(self.a(x)).mean((2, 3, 4)))


class Deconvs(nn.Module):
    """Transposed convolutions: grouped with stride and output_padding, a dilated bias-free
    one called twice (sharing), 1-d and 3-d."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.same = nn.ConvTranspose2d(4, 4, 2, dilation=2, bias=False)
        self.d1 = nn.ConvTranspose1d(4, 3, 3, stride=2)
        self.d3 = nn.ConvTranspose3d(2, 2, (1, 2, 2), padding=(0, 1, 0))
        self.head = nn.Linear(9, 3)

    def forward(self, x):  # (n, 2, 3, 3)
        h = torch.tanh(self.same(torch.tanh(self.same(torch.tanh(self.up(x))))))
        t = torch.tanh(self.d1(h.mean(2)))
        v = torch.tanh(self.d3(x.unsqueeze(2)))
        return self.head(torch.cat([h.mean((2, 3)), t.mean(2), v.mean((2, 3, 4))], dim=1))


class Tokenised(nn.Module):
    """Embedding with padding_idx, used twice (sharing); position embeddings on a batch-1 index
    broadcast over the batch (as Hugging Face models do)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4, padding_idx=0)
        self.pos = nn.Embedding(5, 4)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):  # integer ids (n, 5)
        h = self.embed(ids) + self.embed((ids + 1) % 7)
        h = h + self.pos(torch.arange(ids.shape[1])[None])
        return self.head(torch.tanh(self.mix(h)).mean(1))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4, bias=False)
        self.ln2 = nn.LayerNorm((2, 4))
        self.bn1 = nn.BatchNorm1d(4)
        self.rms = nn.RMSNorm(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 1, 5, 5)
        h = self.gn(torch.tanh(self.bn(self.conv(x))))  # (n, 4, 3, 3)
        t = self.ln(h.flatten(2).transpose(1, 2))  # (n, 9, 4)
        t = self.ln2(t[:, :8].reshape(-1, 4, 2, 4)).reshape(t.shape[0], 8, 4)
        t = self.ln(torch.tanh(t))  # shared LayerNorm
        return self.head(self.rms(self.bn1(t.mean(1))))


def _norms():
    net = Norms()
    with torch.no_grad():
        for bn in (net.bn, net.bn1):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        for mod in (net.bn, net.gn, net.ln, net.ln2, net.bn1, net.rms):
            mod.weight.uniform_(0.5, 1.5)
    return net


class SelfAttention(nn.Module):
    """MultiheadAttention on itself twice (sharing), with a key-padding mask from the data,
    a causal boolean mask and the returned attention weights."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 5, 4)
        pad = x[..., 0] > 1.0
        pad[:, 0] = False
        causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
        h = self.mha(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        t = torch.tanh(h)
        h, w = self.mha(t, t, t, attn_mask=causal)
        return self.head(h.mean(1)) + w.sum((1, 2))[:, None]


class CrossAttention(nn.Module):
    """Sequence-first MultiheadAttention: query ≠ key is value, then query, key, value all
    different (the stacked-positions layout), per-head weights."""

    def __init__(self):
        super().__init__()
        self.xattn = nn.MultiheadAttention(4, 2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 5, 4)
        s = x.transpose(0, 1)
        h = self.xattn(s[:3], s, s, need_weights=False)[0]
        h = self.xattn(torch.tanh(h), s, torch.tanh(s), average_attn_weights=False)[0]
        return self.head(h.mean(0))


class Encoder(nn.Module):
    """nn.TransformerEncoder (pre-norm, GELU) with a padding mask, mean pool, Linear head."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            4, 2, 6, batch_first=True, norm_first=True, activation="gelu"
        )
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 5, 4)
        pad = x[..., 0] > 1.0
        pad[:, 0] = False
        return self.head(self.enc(x, src_key_padding_mask=pad).mean(1))


_SEQ = (lambda g, n: torch.randn(n, 5, 4, generator=g),)
_ENC = {f"enc.layers.0.{m}" for m in ("self_attn", "self_attn.out_proj", "linear1", "linear2")}

CASES = {
    "tokens": (Tokens, lambda g, n: torch.randn(n, 4, 3, generator=g), {"lin", "head"}),
    "conv1d": (Convs1d, lambda g, n: torch.randn(n, 2, 9, generator=g), {"a", "b", "head"}),
    "conv2d": (
        Convs2d,
        lambda g, n: torch.randn(n, 2, 6, 6, generator=g),
        {"a", "dw", "shared", "head"},
    ),
    "conv3d": (Convs3d, lambda g, n: torch.randn(n, 1, 3, 5, 6, generator=g), {"a", "head"}),
    "conv-transpose": (
        Deconvs,
        lambda g, n: torch.randn(n, 2, 3, 3, generator=g),
        {"up", "same", "d1", "d3", "head"},
    ),
    "embedding": (
        Tokenised,
        lambda g, n: torch.randint(0, 7, (n, 5), generator=g),
        {"embed", "pos", "mix", "head"},
    ),
    "norms": (
        _norms,
        lambda g, n: torch.randn(n, 1, 5, 5, generator=g),
        {"conv", "bn", "gn", "ln", "ln2", "bn1", "rms", "head"},
    ),
    "self-attention": (SelfAttention, *_SEQ, {"mha", "mha.out_proj", "head"}),
    "cross-attention": (CrossAttention, *_SEQ, {"xattn", "xattn.out_proj", "head"}),
    "encoder": (Encoder, *_SEQ, _ENC | {"enc.layers.0.norm1", "enc.layers.0.norm2", "head"}),
}


def _case(name, n1=5, n2=3):
    make, data, units = CASES[name]
    torch.manual_seed(0)
    net = make()
    return (
        net,
        data(torch.Generator().manual_seed(0), n1),
        data(torch.Generator().manual_seed(1), n2),
        units,
    )


@pytest.mark.parametrize("method", ["auto", "structured"])
@pytest.mark.parametrize("name", CASES)
def test_rule_every_kind_matches_reference(name, method):
    net, X1, X2, units = _case(name)
    y1 = np.arange(len(X1)) % 2
    engine = NTKEngine(net, "trace", method=method, device="cpu", dtype="float64")
    engine.kernel(X1[:2])
    assert {u.name for u in engine.units} == units and not engine.generic  # the rules ran
    for kind in KINDS:
        R = reference(net, X1, X2, kind, y1=y1, loop=True)
        K = empirical_ntk(net, X1, X2, kind, method=method, device="cpu", dtype="float64", y1=y1)
        assert rel_err(K, R) <= 1e-9, (kind, rel_err(K, R))
    K = empirical_ntk(net, X1, kind="trace", method=method, device="cpu")
    assert rel_err(K, reference(net, X1, kind="trace", loop=True)) <= 1e-4


@pytest.mark.parametrize("name", CASES)
def test_rule_layerwise_and_layers_subset(name):
    net, X1, _, units = _case(name, 4)
    parts = empirical_ntk(net, X1, kind="diagonal", layerwise=True, device="cpu", dtype="float64")
    assert set(parts) == units
    for layer, K in parts.items():
        assert rel_err(K, reference(net, X1, kind="diagonal", owned=layer, loop=True)) <= 1e-9, (
            layer
        )
    subset = sorted(units)[:2]
    K = empirical_ntk(net, X1, kind="pntk", layers=subset, device="cpu", dtype="float64")
    assert rel_err(K, reference(net, X1, kind="pntk", layers=subset, loop=True)) <= 1e-9


def test_rule_lookup_and_generated_docs():
    assert rule_for(nn.Linear(2, 2)).__name__ == "LinearRule"
    assert (
        rule_for(nn.modules.linear.NonDynamicallyQuantizableLinear(2, 2)).__name__ == "LinearRule"
    )
    assert rule_for(nn.Embedding(3, 2, max_norm=1.0)) is None  # rewrites its table: generic
    assert rule_for(nn.BatchNorm1d(3, track_running_stats=False)) is None  # batch statistics
    assert rule_for(nn.PReLU()) is None
    text = supported_layers_rst()
    for rule in supported_layers():
        for module_type in rule.types:
            assert f"nn.{module_type.__name__}``" in text


class ReducedConstant(nn.Module):
    """A Linear on a batch-1 constant whose output is reduced, not broadcast: not per-sample."""

    def __init__(self):
        super().__init__()
        self.register_buffer("const", torch.randn(1, 3))
        self.lin = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(x + self.lin(self.const).sum(0))


def test_batch_one_constant_not_broadcast_falls_back():
    torch.manual_seed(0)
    net = ReducedConstant()
    X = torch.randn(4, 3)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert not engine.expand and {u.name for u in engine.units} == {"head"}
    assert rel_err(K, reference(net, X, kind="trace", loop=True)) <= 1e-9


class Masked(nn.Module):
    """Keyword inputs ``input_ids`` and ``attention_mask`` (a dict X), masked mean pooling."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(9, 4, padding_idx=0)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.lin(self.embed(input_ids)))
        w = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * w).sum(1) / w.sum(1))


def test_rules_with_dict_inputs():
    torch.manual_seed(0)
    net = Masked()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 9, (5, 6), generator=g)
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[:, 4:] = 0
    ids[:, 4:] = 0
    X = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert {u.name for u in engine.units} == {"embed", "lin", "head"}
    R = autograd_kernel(net, X, kind="trace")  # one keyword call per sample, float64
    assert rel_err(K, R) <= 1e-9
    Kp = empirical_ntk(
        net, X, kind="trace", projection_dim=4096, random_state=0, device="cpu", dtype="float64"
    )
    assert np.linalg.norm(Kp - R) / np.linalg.norm(R) < 0.1


class Configurations(nn.Module):
    """Attention configurations torch computes otherwise (separate k/v widths, bias_k,
    add_zero_attn) next to one the rule covers: the former take the generic path."""

    def __init__(self):
        super().__init__()
        self.kv = nn.MultiheadAttention(4, 2, kdim=3, vdim=3, batch_first=True)
        self.extra = nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (n, 5, 4)
        h = self.kv(x, x[..., :3], x[..., 1:], need_weights=False)[0]
        h = self.extra(h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1))[0]
        h = torch.tanh(h.transpose(0, 1))
        return self.head(self.mha(h, h, h)[0].mean(1))


def test_attention_configurations_and_out_proj_alone():
    torch.manual_seed(0)
    net = Configurations()
    X1, X2 = _SEQ[0](torch.Generator().manual_seed(0), 4), _SEQ[0](torch.Generator(), 3)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    engine.kernel(X1[:2])
    assert {u.name for u in engine.units} == {"mha", "mha.out_proj", "head"}
    for kind in ("diagonal", "pntk"):
        R = reference(net, X1, X2, kind, loop=True)
        assert rel_err(empirical_ntk(net, X1, X2, kind, device="cpu", dtype="float64"), R) < 1e-9
    # only out_proj in θ: the attention still runs its decomposed forward, so the rule applies
    engine = NTKEngine(net, "trace", layers=["mha.out_proj"], device="cpu", dtype="float64")
    K = engine.kernel(X1)
    assert [u.name for u in engine.units] == ["mha.out_proj"] and not engine.generic
    assert rel_err(K, reference(net, X1, kind="trace", layers=["mha.out_proj"], loop=True)) < 1e-9
    # the network's own attention modules are untouched after the engine ran
    assert all("forward" not in m.__dict__ for m in net.modules())


class Gate(nn.Module):
    """A learned gate with data-dependent control flow (``torch.func.vmap`` cannot trace it)."""

    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x):
        return torch.stack([r * self.scale if r.sum() > 0 else r * self.scale**2 for r in x])


class Untraceable(nn.Module):
    """PReLU and Gate (local rule), a module called on two tensors and a parameter also used
    outside its module (both generic), in a network ``vmap`` cannot trace (``.item()``)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.act = nn.PReLU(4)
        self.gate = Gate(4)
        self.pair = nn.Bilinear(4, 4, 4)
        self.tied = nn.PReLU(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.gate(self.act(self.lin(x)))
        h = torch.tanh(self.pair(h, h)) * self.tied.weight + self.tied(h)
        return self.head(h) * (2.0 if h.abs().max().item() < 1e6 else 1.0)


def test_local_rule_for_modules_without_a_rule():
    torch.manual_seed(0)
    net = Untraceable()
    g = torch.Generator().manual_seed(0)
    X1, X2 = torch.randn(5, 3, generator=g), torch.randn(3, 3, generator=g)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    engine.kernel(X1[:2])
    kinds = {u.name: type(u).__name__ for u in engine.units}
    assert kinds == {
        "lin": "LinearRule",
        "act": "LocalRule",
        "gate": "LocalRule",
        "head": "LinearRule",
    }
    assert {n for _, n, _, _ in engine.generic} == {
        "pair.weight",
        "pair.bias",
        "tied.weight",
    }  # two inputs; used outside its forward (the probe rejects it)
    assert engine.generic_path == "autograd"  # the network cannot be traced as a whole
    gate = next(u for u in engine.units if u.name == "gate")
    assert not gate.vmap_ok  # per-sample loop through the gate alone
    y1 = np.arange(5) % 2
    for kind in KINDS:
        R = reference(net, X1, X2, kind, y1=y1, loop=True)
        K = empirical_ntk(net, X1, X2, kind, device="cpu", dtype="float64", y1=y1)
        assert rel_err(K, R) <= 1e-9, kind
    parts = empirical_ntk(net, X1, kind="pntk", layerwise=True, device="cpu", dtype="float64")
    assert rel_err(parts["act"], reference(net, X1, kind="pntk", owned="act", loop=True)) < 1e-9


@pytest.mark.parametrize("name", ["tokens", "conv2d", "cross-attention"])
def test_factored_form_matches_reference(monkeypatch, name):
    """Gradients materialised per tile from (A, G), in chunks of weight rows, over several
    tiles, symmetric or not, every kind, and the paired diagonal."""
    from sknn_kernels.ntk import _cost, ntk_diagonal
    from sknn_kernels.ntk.rules import linear

    def factored(unit, *args, **kwargs):
        return "factored" if "factored" in unit.choices else unit.choices[0]

    monkeypatch.setattr(_cost, "choose", factored)
    monkeypatch.setattr(linear, "FACTOR_ELEMENTS", 16)  # several chunks of rows
    net, X1, X2, _ = _case(name)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    engine.kernel(X1[:2], block_size=1)
    assert "factored" in {u.choice for u in engine.units}
    y1 = np.arange(len(X1)) % 2
    for kind in KINDS:
        for X2_ in (None, X2):
            R = reference(net, X1, X2_, kind, y1=y1, loop=True)
            K = empirical_ntk(
                net, X1, X2_, kind, device="cpu", dtype="float64", y1=y1, block_size=2
            )
            assert rel_err(K, R) <= 1e-9, kind
    R = reference(net, X1, kind="full", loop=True)
    d = ntk_diagonal(net, X1, "full", device="cpu", dtype="float64")
    assert rel_err(d, np.einsum("iiab->iab", R)) <= 1e-9


class Wide(nn.Module):
    """Linear layers at 16 positions: materialised gradients are their cheapest form."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 40), nn.Linear(40, 40), nn.Linear(40, 30)
        self.head = nn.Linear(30, 2)

    def forward(self, x):  # (n, 16, 6)
        return self.head(torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))).mean(1))


def test_memory_pressure_switches_the_cheapest_layers_first(monkeypatch):
    """Under a small budget only the layers whose switch from materialised gradients to their
    kept (A, G) is needed switch, cheapest per byte first; the kernel is unchanged."""
    from sknn_kernels.ntk import _cost

    torch.manual_seed(0)
    net, X = Wide(), torch.randn(6, 16, 6, generator=torch.Generator().manual_seed(0))
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    # three tiles per block of samples: kept gradients beat rebuilding them in each tile
    R = engine.kernel(X, block_size=2)
    choices = {u.name: u.choice for u in engine.units}
    assert choices["b"] == choices["c"] == "outer"
    per_sample = sum(u.rep_size(2) * 8 for u in engine.units)
    # room for everything but about one 40x40 gradient per sample: one layer switches
    monkeypatch.setattr(_cost, "MEMORY_BUDGET", 6 * (per_sample - 8 * 1000))
    K = engine.kernel(X, block_size=2)
    switched = {u.name: u.choice for u in engine.units if u.choice != choices[u.name]}
    assert len(switched) == 1 and set(switched.values()) <= {"factored", "hadamard"}
    np.testing.assert_allclose(K, R, rtol=1e-12, atol=1e-12)


class WideConv(nn.Module):
    """A 3-channel conv on 16x16 images: its input and signals (256 positions) outnumber its
    weights, so its materialised gradients are the smaller thing to keep."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean((2, 3)))


def test_memory_pressure_can_switch_to_materialised_gradients(monkeypatch):
    """When the kept (A, G) do not fit but the smaller materialised gradients do, the plan
    switches to them and keeps one tile; when nothing fits, it plans again for the smaller
    block it falls back to. The kernel is unchanged either way."""
    from sknn_kernels.ntk import _cost

    torch.manual_seed(0)
    net, X = WideConv(), torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    engine = NTKEngine(net, "pntk", device="cpu", dtype="float64")
    R = engine.kernel(X)
    conv = next(u for u in engine.units if u.name == "conv")
    assert conv.choice == "factored"  # one tile: the cheapest, with a fixed scratch buffer
    kept, outer = conv.rep_size(1), conv.numel
    assert outer < kept
    per_sample = 8 * sum(u.rep_size(1) for u in engine.units)
    monkeypatch.setattr(_cost, "MEMORY_BUDGET", 8 * (per_sample - 8 * (kept - outer)) + 8)
    K = engine.kernel(X)
    assert conv.choice == "outer"
    assert engine._plan(8, 8, True, 1024) == (8, True)  # one tile, every block kept
    np.testing.assert_allclose(K, R, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(_cost, "MEMORY_BUDGET", 8 * outer * 3)  # room for about 3 samples
    block, keep_all = engine._plan(8, 8, True, 1024)
    assert block < 8 and not keep_all
    np.testing.assert_allclose(engine.kernel(X), R, rtol=1e-12, atol=1e-12)
