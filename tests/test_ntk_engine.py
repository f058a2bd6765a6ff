"""The NTK engine against an independent float64 reference built with torch.func.jacrev."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _nets import make_cnn_bn, make_mlp, make_shared_weights_net, make_transformer
from hypothesis import given, settings
from hypothesis import strategies as st
from ntk_reference import reference, rel_err
from torch import nn

from sknn_kernels.ntk import (
    NTKEngine,
    _cost,
    empirical_ntk,
    features_kernel,
    ntk_diagonal,
    projected_ntk_features,
)

# jacrev (the reference) vmaps attention, for which torch has no batching rule yet
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


KINDS = ["pntk", "trace", "diagonal", "full", "loss_grad"]
METHODS = ["auto", "structured", "vmap", "autograd"]


def _data(name, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"mlp": (5,), "cnn": (1, 8, 8), "shared": (5,), "transformer": (4, 3)}
    return torch.randn((n,) + shapes[name], generator=g)


NETS = {
    "mlp": make_mlp,
    "cnn": make_cnn_bn,
    "shared": make_shared_weights_net,
    "transformer": make_transformer,
}


def _labels(n, C=3, seed=1):
    return np.random.default_rng(seed).integers(0, C, n)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_float64_and_float32(name, kind):
    net = NETS[name]()
    X1, X2 = _data(name, 7), _data(name, 4, seed=1)
    y1 = _labels(7)
    for X2_, y2 in [(None, None), (X2, None)]:
        R = reference(net, X1, X2_, kind, y1=y1, y2=y2)
        K64 = empirical_ntk(net, X1, X2_, kind, dtype="float64", device="cpu", y1=y1)
        assert K64.dtype == np.float64 and K64.shape == R.shape
        assert rel_err(K64, R) <= 1e-9
        K32 = empirical_ntk(net, X1, X2_, kind, dtype="float32", device="cpu", y1=y1)
        assert K32.dtype == np.float32 and rel_err(K32, R) <= 1e-4


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_exact(name, method):
    net = NETS[name]()
    X1, X2 = _data(name, 6), _data(name, 3, seed=2)
    for kind in ("trace", "full"):
        R = reference(net, X1, X2, kind)
        K = empirical_ntk(net, X1, X2, kind, method=method, dtype="float64", device="cpu")
        assert rel_err(K, R) <= 1e-9


def test_structured_paths_are_the_ones_tested():
    """Weight sharing and convolutions go through the structured rule, not a fallback."""
    shared = NTKEngine(make_shared_weights_net(), "pntk", device="cpu", dtype="float64")
    shared.kernel(_data("shared", 3))
    units = {u.name: u for u in shared.units}
    assert units["shared"].positions == 2 and not shared.generic  # two calls, cross terms
    cnn = NTKEngine(make_cnn_bn(), "trace", device="cpu", dtype="float64")
    cnn.kernel(_data("cnn", 3))
    choices = {u.name: u.choice for u in cnn.units}
    # one tile: the convolutions' gradients are materialised chunk by chunk, never kept
    assert choices == {"conv1": "factored", "conv2": "factored", "fc": "hadamard", "bn": "outer"}
    cnn.kernel(_data("cnn", 3), block_size=1)  # three tiles per block: kept once, reused
    assert {u.name: u.choice for u in cnn.units}["conv1"] == "outer"
    assert not cnn.generic  # BatchNorm's affine parameters have a rule too
    tr = NTKEngine(make_transformer(), "pntk", device="cpu")
    tr.kernel(_data("transformer", 3))
    # MultiheadAttention runs a decomposed forward while recording: both projections have rules
    assert not tr.generic
    assert {"encoder.self_attn", "encoder.self_attn.out_proj", "encoder.linear1"} <= {
        u.name for u in tr.units
    }


def test_structured_hadamard_with_positions_matches():
    """method='structured' runs the T² Hadamard sums for the multi-position layers."""
    net = make_cnn_bn()
    X = _data("cnn", 5)
    engine = NTKEngine(net, "diagonal", method="structured", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert {u.choice for u in engine.units if u.kron} == {"hadamard"}
    assert rel_err(K, reference(net, X, kind="diagonal")) <= 1e-9


class TiedNet(nn.Module):
    """A Linear whose weight is also used outside its forward (tied output layer)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h) + F.linear(h, self.inp.weight[:3])


class ItemNet(nn.Module):
    """Data-dependent control flow: vmap cannot trace it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        h = self.lin(x) * self.scale
        return h if h.abs().sum().item() >= 0 else -h


def test_weight_used_outside_forward_falls_back():
    net = TiedNet()
    X = torch.randn(5, 4)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert "inp" not in {u.name for u in engine.units}
    assert rel_err(K, reference(net, X, kind="trace")) <= 1e-9


def test_vmap_failure_falls_back_to_autograd():
    net = ItemNet()
    X = torch.randn(5, 4)
    engine = NTKEngine(net, "pntk", device="cpu", dtype="float64")
    assert rel_err(engine.kernel(X), reference(net, X)) <= 1e-9
    # the root's own parameter: the local rule, looping over samples as vmap cannot trace it
    (local,) = [u for u in engine.units if type(u).__name__ == "LocalRule"]
    assert local.name == "" and not local.vmap_ok and not engine.generic
    with pytest.raises(ValueError, match="method='vmap'.*cannot trace"):
        empirical_ntk(net, X, method="vmap", device="cpu")


def test_inplace_activation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))
    X = torch.randn(6, 5)
    assert rel_err(empirical_ntk(net, X, dtype="float64", device="cpu"), reference(net, X)) <= 1e-9


def test_input_shape_2d():
    net = make_cnn_bn()
    X = _data("cnn", 4)
    K = empirical_ntk(
        net, X.reshape(4, -1).numpy(), input_shape=(1, 8, 8), dtype="float64", device="cpu"
    )
    assert rel_err(K, reference(net, X)) <= 1e-9


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_train_kernel_symmetric_psd(name):
    net = NETS[name]()
    for kind in ("pntk", "trace"):
        K = empirical_ntk(net, _data(name, 9), kind=kind, block_size=4, device="cpu")
        assert np.array_equal(K, K.T)
        eig = np.linalg.eigvalsh(K.astype(np.float64))
        assert eig.min() >= -1e-5 * eig.max()
    full = empirical_ntk(
        net, _data(name, 5), kind="full", block_size=2, dtype="float64", device="cpu"
    )
    M = full.transpose(0, 2, 1, 3).reshape(15, 15)  # (n C) x (n C) NTK matrix
    assert np.array_equal(M, M.T) and np.linalg.eigvalsh(M).min() >= -1e-10 * np.abs(M).max()


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_layerwise_sums_to_total_with_biases(name):
    net = NETS[name]()
    X = _data(name, 5)
    total = empirical_ntk(net, X, kind="trace", dtype="float64", device="cpu")
    parts = empirical_ntk(net, X, kind="trace", layerwise=True, dtype="float64", device="cpu")
    owners = {n.rpartition(".")[0] for n, _ in net.named_parameters()}
    assert set(parts) == owners
    assert rel_err(sum(parts.values()), total) <= 1e-12
    for layer, K in parts.items():  # each part is that module's own (weight + bias) kernel
        assert rel_err(K, reference(net, X, kind="trace", owned=layer)) <= 1e-9


def test_layers_restrict_parameters():
    net = make_mlp()
    X1, X2 = _data("mlp", 6), _data("mlp", 3, 1)
    K = empirical_ntk(net, X1, X2, "full", layers=["0", "4"], dtype="float64", device="cpu")
    assert rel_err(K, reference(net, X1, X2, "full", layers=["0", "4"])) <= 1e-9
    parts = empirical_ntk(net, X1, layers=["0", "4"], layerwise=True, dtype="float64", device="cpu")
    assert set(parts) == {"0", "4"}
    container = empirical_ntk(
        make_transformer(), _data("transformer", 4), layers="encoder", dtype="float64", device="cpu"
    )
    assert (
        rel_err(
            container, reference(make_transformer(), _data("transformer", 4), layers=["encoder"])
        )
        <= 1e-9
    )


@pytest.mark.parametrize("kind", KINDS)
def test_diagonal_matches_kernel(kind):
    net = make_cnn_bn()
    X = _data("cnn", 6)
    y = _labels(6)
    K = empirical_ntk(net, X, kind=kind, dtype="float64", device="cpu", y1=y)
    d = ntk_diagonal(net, X, kind=kind, dtype="float64", device="cpu", y=y, block_size=4)
    idx = np.arange(6)
    np.testing.assert_allclose(d, K[idx, idx], rtol=1e-12)


def test_loss_grad_labels():
    net = make_mlp()
    X1, X2 = _data("mlp", 5), _data("mlp", 4, 1)
    y1, y2 = _labels(5), _labels(4, seed=3)
    with pytest.raises(ValueError, match="labels"):
        empirical_ntk(net, X1, kind="loss_grad")
    K = empirical_ntk(net, X1, X2, "loss_grad", y1=y1, y2=y2, dtype="float64", device="cpu")
    assert rel_err(K, reference(net, X1, X2, "loss_grad", y1=y1, y2=y2)) <= 1e-9
    predicted = empirical_ntk(net, X1, X2, "loss_grad", y1=y1, dtype="float64", device="cpu")
    assert rel_err(predicted, reference(net, X1, X2, "loss_grad", y1=y1)) <= 1e-9
    with pytest.raises(ValueError, match="class indices"):
        empirical_ntk(net, X1, kind="loss_grad", y1=np.full(5, 7), device="cpu")


def test_accumulate_float64_and_memmap_out(tmp_path):
    net = make_mlp()
    X = _data("mlp", 9)
    R = reference(net, X, kind="diagonal")
    K = empirical_ntk(net, X, kind="diagonal", accumulate_dtype="float64", device="cpu")
    assert K.dtype == np.float64 and rel_err(K, R) <= 1e-5
    out = np.lib.format.open_memmap(
        tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=(9, 9, 3)
    )
    res = empirical_ntk(
        net, X, kind="diagonal", dtype="float64", block_size=4, out=out, device="cpu"
    )
    assert res is out
    out.flush()
    assert rel_err(np.load(tmp_path / "k.npy"), R) <= 1e-9
    with pytest.raises(ValueError, match="shape"):
        empirical_ntk(net, X, kind="pntk", out=np.empty((3, 3)), device="cpu")
    with pytest.raises(ValueError, match="layerwise"):
        empirical_ntk(net, X, layerwise=True, out=np.empty((9, 9)), device="cpu")


def test_clear_errors():
    net = make_mlp()
    X = _data("mlp", 3)
    with pytest.raises(ValueError, match="does not exist"):
        empirical_ntk(net, X, layers=["nope"], device="cpu")
    with pytest.raises(ValueError, match="overlap"):
        empirical_ntk(
            make_transformer(),
            _data("transformer", 2),
            layers=["encoder", "encoder.linear1"],
            device="cpu",
        )
    with pytest.raises(ValueError, match="no trainable"):
        empirical_ntk(net, X, layers=["1"], device="cpu")
    with pytest.raises(ValueError, match="kind"):
        empirical_ntk(net, X, kind="nope", device="cpu")
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(net, X, method="nope", device="cpu")
    big = np.zeros((1_000_000, 5), dtype=np.float32)
    with pytest.raises(MemoryError, match=r"\(1000000, 1000000, 3, 3\) needs .* GiB"):
        empirical_ntk(net, big, kind="full", device="cpu")


def test_network_not_modified():
    net = make_cnn_bn()
    net.train()
    before = copy.deepcopy(net.state_dict())
    empirical_ntk(net, _data("cnn", 3), kind="trace", device="cpu", dtype="float64")
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


@settings(max_examples=12, deadline=None)
@given(
    n1=st.integers(1, 9),
    n2=st.integers(0, 6),
    block=st.integers(1, 10),
    batch=st.integers(1, 10),
    kind=st.sampled_from(["pntk", "diagonal", "full"]),
    symmetric=st.booleans(),
)
def test_independent_of_block_and_batch_size(n1, n2, block, batch, kind, symmetric):
    net = make_shared_weights_net()
    X1, X2 = _data("shared", n1), (None if symmetric else _data("shared", n2, 1))
    base = empirical_ntk(net, X1, X2, kind, dtype="float64", device="cpu")
    K = empirical_ntk(
        net, X1, X2, kind, dtype="float64", device="cpu", block_size=block, batch_size=batch
    )
    np.testing.assert_allclose(K, base, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_small_memory_budget_caps_blocks(monkeypatch, symmetric):
    """When representations do not fit, blocks shrink and column blocks are recomputed."""
    net = make_cnn_bn()
    X1, X2 = _data("cnn", 9), (None if symmetric else _data("cnn", 5, 1))
    base = empirical_ntk(net, X1, X2, "trace", dtype="float64", device="cpu")
    monkeypatch.setattr(_cost, "MEMORY_BUDGET", 20_000)
    sizes = []
    block = NTKEngine._block

    def counting(self, X, y, rows, *args, **kwargs):
        sizes.append(rows.stop - rows.start)
        return block(self, X, y, rows, *args, **kwargs)

    monkeypatch.setattr(NTKEngine, "_block", counting)
    K = empirical_ntk(net, X1, X2, "trace", dtype="float64", device="cpu")
    np.testing.assert_allclose(K, base, rtol=1e-12, atol=1e-12)
    assert max(sizes) < 9 and sum(sizes) > 9 + (0 if symmetric else 5)  # capped, recomputed


# --------------------------------------------------------------------------- projection
def test_projection_unbiased_and_converges():
    net = make_mlp()
    X = _data("mlp", 6)
    R = reference(net, X, kind="trace")
    norm = np.linalg.norm(R)
    seeds = [
        empirical_ntk(
            net, X, kind="trace", projection_dim=16, random_state=s, dtype="float64", device="cpu"
        )
        for s in range(200)
    ]
    single = np.mean([np.linalg.norm(K - R) for K in seeds]) / norm
    mean = np.linalg.norm(np.mean(seeds, axis=0) - R) / norm
    assert mean < 0.25 * single  # averaging over seeds converges (unbiased): ~1/sqrt(200)
    errors = [
        np.linalg.norm(
            empirical_ntk(
                net,
                X,
                kind="trace",
                projection_dim=k,
                random_state=0,
                dtype="float64",
                device="cpu",
            )
            - R
        )
        / norm
        for k in (8, 128, 2048)
    ]
    assert errors[2] < errors[0] and errors[2] < 0.1


def test_projection_reproducible_and_path_independent():
    net = make_cnn_bn()
    X = _data("cnn", 7)
    opts = {"projection_dim": 24, "random_state": 3, "dtype": "float64", "device": "cpu"}
    a = projected_ntk_features(net, X, "trace", **opts)
    b = projected_ntk_features(net, X, "trace", batch_size=2, block_size=3, **opts)
    assert a.shape == (7, 3, 24)
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    dense = projected_ntk_features(net, X, "trace", projection="dense", **opts)
    c = projected_ntk_features(net, X, "trace", method="vmap", projection="dense", **opts)
    np.testing.assert_allclose(c, dense, rtol=1e-10, atol=1e-12)  # the dense Π: any path
    K = empirical_ntk(net, X, X[:2], "trace", **opts)
    np.testing.assert_allclose(K, features_kernel(a, a[:2], "trace"), rtol=1e-10)
    d = ntk_diagonal(net, X, "trace", **opts)
    np.testing.assert_allclose(d, np.diag(features_kernel(a, None, "trace")), rtol=1e-10)
    other = projected_ntk_features(
        net, X, "trace", projection_dim=24, random_state=4, dtype="float64", device="cpu"
    )
    assert not np.allclose(other, a)


def test_projected_layerwise_sums_and_kinds():
    net = make_mlp()
    X = _data("mlp", 5)
    parts = empirical_ntk(
        net,
        X,
        kind="full",
        projection_dim=64,
        random_state=0,
        layerwise=True,
        dtype="float64",
        device="cpu",
    )
    assert set(parts) == {"0", "2", "4"} and parts["0"].shape == (5, 5, 3, 3)
    y = _labels(5)
    K = empirical_ntk(
        net,
        X,
        kind="loss_grad",
        projection_dim=4096,
        random_state=0,
        y1=y,
        dtype="float64",
        device="cpu",
    )
    R = reference(net, X, kind="loss_grad", y1=y)
    assert np.linalg.norm(K - R) / np.linalg.norm(R) < 0.1


# --------------------------------------------------------------------------- GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_reference(name, method):
    net = NETS[name]()
    X1, X2 = _data(name, 6), _data(name, 3, 1)
    y = _labels(6)
    for kind in KINDS:
        R = reference(net, X1, X2, kind, y1=y)
        K = empirical_ntk(net, X1, X2, kind, method=method, device="cuda", dtype="float64", y1=y)
        assert rel_err(K, R) <= 1e-9
        K32 = empirical_ntk(net, X1, X2, kind, method=method, device="cuda", y1=y)
        assert rel_err(K32, R) <= 1e-4
    d = ntk_diagonal(net, X1, "trace", device="cuda", dtype="float64")
    np.testing.assert_allclose(d, np.diag(reference(net, X1, kind="trace")), rtol=1e-9)
    F_gpu = projected_ntk_features(
        net, X1, projection_dim=8, random_state=0, device="cuda", dtype="float64"
    )
    F_cpu = projected_ntk_features(
        net, X1, projection_dim=8, random_state=0, device="cpu", dtype="float64"
    )
    # same seeds, different generators per device: both unbiased, not equal
    assert F_gpu.shape == F_cpu.shape == (6, 1, 8) and np.isfinite(F_gpu).all()


@needs_cuda
@pytest.mark.gpu
def test_cuda_tf32_off_inside_and_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 512), nn.Tanh(), nn.Linear(512, 4))
    X = torch.randn(64, 256)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        K = empirical_ntk(net, X, kind="trace", device="cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is True  # the user's setting is restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    R = empirical_ntk(net, X, kind="trace", device="cpu", dtype="float64")
    assert rel_err(K, R) <= 1e-5  # TF32 (10-bit mantissa) would be ~1e-3 off


class SeqFirst(nn.Module):
    """Linear layers applied to sequence-first (T, n, d) tensors: rows are not samples."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(3, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):  # x: (n, T, 3)
        h = torch.tanh(self.inp(x.transpose(0, 1)))  # (T, n, 4)
        return self.out(h.mean(0))


@pytest.mark.parametrize("T", [2, 3])
def test_sequence_first_layers_fall_back(T):
    net = SeqFirst()
    X = torch.randn(2, T, 3)
    engine = NTKEngine(net, "trace", device="cpu", dtype="float64")
    K = engine.kernel(X)
    assert {u.name for u in engine.units} == {"out"}
    assert rel_err(K, reference(net, X, kind="trace")) <= 1e-9


def test_only_large_materialised_gradients(monkeypatch):
    """Every materialised gradient above the join threshold: none is concatenated (regression)."""
    from sknn_kernels.ntk import engine as engine_module

    monkeypatch.setattr(engine_module, "_JOIN", 0)
    net = make_mlp()
    X = _data("mlp", 5)
    for method in ("vmap", "auto"):
        K = empirical_ntk(net, X, method=method, dtype="float64", device="cpu")
        assert rel_err(K, reference(net, X)) <= 1e-9


class _NanBackward(torch.autograd.Function):
    """Identity on ``h``; NaN gradient for the rows whose input ``x`` starts above 100."""

    @staticmethod
    def forward(ctx, h, x):
        ctx.bad = x[:, 0] > 100
        return h.clone()

    @staticmethod
    def backward(ctx, g):
        return g.masked_fill(ctx.bad[:, None], float("nan")), None


class NanGradNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(_NanBackward.apply(torch.tanh(self.a(x)), x))


def test_non_finite_gradients_with_finite_outputs_are_reported():
    """Finite outputs, NaN backward for sample 2: the tiles (not every signal) are checked."""
    X = torch.randn(5, 3)
    X[2, 0] = 1000.0
    from sknn_kernels.ntk import ntk_diagonal

    for call in (
        lambda: empirical_ntk(NanGradNet(), X, device="cpu"),
        lambda: ntk_diagonal(NanGradNet(), X, device="cpu"),
        lambda: empirical_ntk(NanGradNet(), X, projection_dim=8, random_state=0, device="cpu"),
    ):
        with pytest.raises(ValueError, match=r"not finite.*indices \[2"):
            call()


def test_scratch_buffers_are_reused_per_slot_and_thread():
    """Inside reusing_scratch() a slot's buffer is handed out again (no fresh pages), grown
    when a larger one is asked for; outside it, and in another thread, buffers are fresh."""
    import threading

    from sknn_kernels.ntk.gram import reusing_scratch, scratch

    like = torch.zeros(1)
    assert scratch("a", (4, 5), like).shape == (4, 5)
    with reusing_scratch():
        first = scratch("a", (4, 5), like)
        again = scratch("a", (2, 3), like)
        assert again.data_ptr() == first.data_ptr()  # the same storage: no new allocation
        assert scratch("b", (2, 3), like).data_ptr() != first.data_ptr()  # slots are apart
        assert scratch("a", (2, 3), like.double()).dtype == torch.float64  # one per dtype
        grown = scratch("a", (10, 10), like)
        assert grown.shape == (10, 10) and scratch("a", (4, 5), like).data_ptr() == (
            grown.data_ptr()
        )
        other = []
        thread = threading.Thread(target=lambda: other.append(scratch("a", (4, 5), like)))
        thread.start()
        thread.join()
        assert other[0].data_ptr() != grown.data_ptr()  # another thread: no shared buffer
    assert scratch("a", (4, 5), like).data_ptr() != grown.data_ptr()  # released on exit
