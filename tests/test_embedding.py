"""EmbeddingExtractor values against hand-written forward passes, and its sklearn plumbing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _nets import make_cnn_bn, make_mlp, make_shared_weights_net, make_transformer
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sknn_kernels import EmbeddingExtractor

ATOL = 1e-5


def _np(t):
    return t.detach().numpy()


def test_mlp_layers_match_manual_forward(rng):
    net = make_mlp()
    X = rng.normal(size=(11, 5)).astype(np.float32)
    x = torch.from_numpy(X)
    h1 = F.relu(x @ net[0].weight.T + net[0].bias)
    h2 = F.relu(h1 @ net[2].weight.T + net[2].bias)
    out = h2 @ net[4].weight.T + net[4].bias
    emb = EmbeddingExtractor(net, layers=["1", "3", "4"], device="cpu", batch_size=4)
    Z = emb.fit_transform(X)
    np.testing.assert_allclose(Z, np.hstack([_np(h1), _np(h2), _np(out)]), atol=ATOL)
    assert Z.dtype == np.float32
    # default: the input of the last Linear (penultimate representation)
    default = EmbeddingExtractor(net, device="cpu").fit(X)
    assert default.layers_ == ["4:input"]
    np.testing.assert_allclose(default.transform(X), _np(h2), atol=ATOL)


def _manual_cnn(net, x):
    bn = net.bn
    z = F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1)
    z = (z - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps
    )
    z = z * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]  # eval statistics
    a1 = torch.relu(z)
    return z, F.conv2d(a1, net.conv2.weight, net.conv2.bias, stride=2)  # conv2's own output


@pytest.mark.parametrize("as_2d", [True, False])
def test_cnn_batchnorm_eval_matches_manual(as_2d, rng):
    net = make_cnn_bn().train()  # the user's net in train mode: we must still use eval stats
    X = rng.normal(size=(9, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        bn_out, conv2 = _manual_cnn(net, torch.from_numpy(X))
    kwargs = {"input_shape": (1, 8, 8)} if as_2d else {}
    Xin = X.reshape(9, -1) if as_2d else X
    flat = EmbeddingExtractor(net, layers=["bn", "conv2"], device="cpu", **kwargs)
    np.testing.assert_allclose(
        flat.fit_transform(Xin),
        np.hstack([_np(bn_out.flatten(1)), _np(conv2.flatten(1))]),
        atol=ATOL,
    )
    avg = EmbeddingExtractor(net, layers=["conv2"], pooling="avg", device="cpu", **kwargs)
    np.testing.assert_allclose(avg.fit_transform(Xin), _np(conv2.mean((2, 3))), atol=ATOL)
    mx = EmbeddingExtractor(net, layers=["conv2"], pooling="max", device="cpu", **kwargs)
    np.testing.assert_allclose(mx.fit_transform(Xin), _np(conv2.amax((2, 3))), atol=ATOL)
    assert avg.feature_slices_ == {"conv2": slice(0, 6)}


def test_transformer_encoder_matches_manual(rng):
    net = make_transformer()
    X = rng.normal(size=(6, 4, 3)).astype(np.float32)
    x = torch.from_numpy(X)
    enc = net.encoder
    with torch.no_grad():
        h = x @ net.embed.weight.T + net.embed.bias
        # post-norm encoder layer, eval mode (dropout off), written out by hand
        n, L, d = h.shape
        qkv = h @ enc.self_attn.in_proj_weight.T + enc.self_attn.in_proj_bias
        q, k, v = qkv.split(d, dim=-1)
        heads = enc.self_attn.num_heads

        def split(t):
            return t.reshape(n, L, heads, d // heads).transpose(1, 2)

        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
        a = (att @ split(v)).transpose(1, 2).reshape(n, L, d)
        a = a @ enc.self_attn.out_proj.weight.T + enc.self_attn.out_proj.bias
        h1 = F.layer_norm(h + a, (d,), enc.norm1.weight, enc.norm1.bias, enc.norm1.eps)
        ff = (
            F.relu(h1 @ enc.linear1.weight.T + enc.linear1.bias) @ enc.linear2.weight.T
            + enc.linear2.bias
        )
        h2 = F.layer_norm(h1 + ff, (d,), enc.norm2.weight, enc.norm2.bias, enc.norm2.eps)
    emb = EmbeddingExtractor(net, layers=["encoder", "head:input"], device="cpu").fit(X)
    np.testing.assert_allclose(
        emb.transform(X), np.hstack([_np(h2.flatten(1)), _np(h2.mean(1))]), atol=ATOL
    )
    tokens = EmbeddingExtractor(
        net, layers=["encoder"], pooling="avg", channel_axis=-1, device="cpu"
    )
    np.testing.assert_allclose(tokens.fit_transform(X), _np(h2.mean(1)), atol=ATOL)
    # attention returns (output, weights): the first tensor is taken
    attn = EmbeddingExtractor(net, layers=["encoder.self_attn"], device="cpu").fit(X)
    assert attn.n_features_out_ == 4 * 8


def test_weight_shared_module_records_every_call(rng):
    net = make_shared_weights_net()
    X = rng.normal(size=(5, 5)).astype(np.float32)
    x = torch.from_numpy(X)
    with torch.no_grad():
        first = net.shared(x)
        second = net.shared(torch.tanh(first))
    Z = EmbeddingExtractor(net, layers="shared", device="cpu").fit_transform(X)
    np.testing.assert_allclose(Z, np.hstack([_np(first), _np(second)]), atol=ATOL)


def test_layers_all_lists_leaves(rng):
    X = rng.normal(size=(4, 64))
    emb = EmbeddingExtractor(
        make_cnn_bn(), layers="all", pooling="avg", input_shape=(1, 8, 8), device="cpu"
    ).fit(X)
    assert emb.layers_ == ["conv1", "bn", "conv2", "fc"]
    assert emb.transform(X).shape == (4, 4 + 4 + 6 + 3)


def test_feature_names_and_pandas_output(rng):
    pd = pytest.importorskip("pandas")
    X = rng.normal(size=(4, 5))
    emb = EmbeddingExtractor(make_mlp(), layers=["1", "4"], device="cpu").set_output(
        transform="pandas"
    )
    out = emb.fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns[:2]) == ["1__0", "1__1"] and out.columns[-1] == "4__2"
    assert out.shape == (4, 19)
    with pytest.raises(ValueError, match="input_features"):
        emb.get_feature_names_out(["a", "b"])


def test_pipeline_and_grid_search_over_layers(rng):
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    pipe = Pipeline(
        [("emb", EmbeddingExtractor(make_mlp(), device="cpu")), ("clf", LogisticRegression())]
    )
    search = GridSearchCV(pipe, {"emb__layers": [["1"], ["3"], None]}, cv=3).fit(X, y)
    assert search.best_params_["emb__layers"] in (["1"], ["3"], None)
    assert search.score(X, y) > 0.6


@settings(max_examples=15, deadline=None)
@given(
    batch_size=st.integers(1, 12),
    n=st.integers(1, 12),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_batch_size_invariance(batch_size, n, dtype):
    X = np.random.default_rng(n).normal(size=(n, 64))
    net = make_cnn_bn()
    ref = EmbeddingExtractor(
        net, layers=["bn", "fc"], input_shape=(1, 8, 8), device="cpu", dtype=dtype, batch_size=64
    )
    got = EmbeddingExtractor(
        net,
        layers=["bn", "fc"],
        input_shape=(1, 8, 8),
        device="cpu",
        dtype=dtype,
        batch_size=batch_size,
    )
    Z = got.fit(X).transform(X)
    assert Z.shape == (n, 4 * 64 + 3) and Z.dtype == np.dtype(dtype)
    np.testing.assert_allclose(Z, ref.fit(X).transform(X), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    X = rng.normal(size=(20, 64))
    kw = {"layers": ["bn", "fc"], "input_shape": (1, 8, 8), "dtype": "float64"}
    cpu = EmbeddingExtractor(make_cnn_bn(), device="cpu", **kw).fit_transform(X)
    gpu_est = EmbeddingExtractor(make_cnn_bn(), device="cuda", **kw)
    np.testing.assert_allclose(gpu_est.fit_transform(X), cpu, rtol=1e-10, atol=1e-12)
    assert gpu_est.device_.startswith("cuda")
