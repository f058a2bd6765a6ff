"""The embedding kernel (the paper's Em) on any network: which module outputs enter, how reduced.

Each test checks ``NTKFeaturizer(kernel="embedding")`` against a direct computation: forward
hooks on the modules, one Gram per module, summed.
"""

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_tiny_bert, token_data
from torch import nn

from sknn_kernels.features.featurizer import NTKFeaturizer


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread (see conftest.one_torch_thread)."""


def _module_outputs(net, X, names):
    """Each named module's first output tensor on ``X`` (one float64 forward pass)."""
    net = net.double().eval()
    outs = {}
    handles = [
        net.get_submodule(n).register_forward_hook(
            lambda m, a, o, n=n: outs.setdefault(n, o[0] if isinstance(o, tuple) else o)
        )
        for n in names
    ]
    with torch.no_grad():
        if isinstance(X, dict):
            net(**{k: torch.as_tensor(v) for k, v in X.items()})
        else:
            net(torch.as_tensor(X, dtype=torch.float64))
    for h in handles:
        h.remove()
    return outs


def _gram_sum(rows_a, rows_b):
    """Σ over modules of the Gram of their per-sample rows."""
    return sum(a @ b.T for a, b in zip(rows_a, rows_b))


def _bert_rows(net, X, names):
    """Per-module rows of a BERT: token sequences averaged over real tokens, else flattened."""
    n, mask = len(X["input_ids"]), torch.as_tensor(X["attention_mask"], dtype=torch.float64)
    rows = []
    for out in _module_outputs(net, X, names).values():
        if out.shape[0] != n:  # position embeddings: (1, T, d), the same for every sample
            continue
        if out.ndim == 3:
            out = (out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        rows.append(out.reshape(n, -1).numpy())
    return rows


def test_embedding_kernel_on_bert_regression_and_rule():
    """Regression: Em on a transformer crashed ('Sizes of tensors must match')."""
    pytest.importorskip("transformers")
    net = make_tiny_bert()
    ids, mask = token_data(12, T=6, vocab=30)
    X = {"input_ids": ids[:7], "attention_mask": mask[:7]}
    X_new = {"input_ids": ids[7:], "attention_mask": mask[7:]}
    # batch_size=3 leaves a last batch of one sample, where (1, T, d) looks per-sample
    em = NTKFeaturizer(net, kernel="embedding", device="cpu", dtype="float64", batch_size=3)
    K, K_new = em.fit_transform(X), em.transform(X_new)
    leaves = [
        n
        for n, m in net.named_modules()
        if n and not list(m.children()) and not isinstance(m, nn.Dropout)
    ]
    assert em.layers_ == [n for n in leaves if n != "bert.embeddings.position_embeddings"]
    assert {"bert.pooler.activation", "classifier"} <= set(em.layers_)
    rows, rows_new = _bert_rows(net, X, leaves), _bert_rows(net, X_new, leaves)
    np.testing.assert_allclose(K, _gram_sum(rows, rows), rtol=1e-10)
    np.testing.assert_allclose(K_new, _gram_sum(rows_new, rows), rtol=1e-10)
    # padding does not change a text's features: the same texts padded further
    pad = {k: np.pad(v, ((0, 0), (0, 3))) for k, v in X.items()}
    np.testing.assert_allclose(em.fit_transform(pad), K, rtol=1e-8)
    cos = NTKFeaturizer(net, kernel="embedding", normalize="cosine", device="cpu").fit_transform(X)
    np.testing.assert_allclose(np.diag(cos), 1, rtol=1e-5)


def test_embedding_kernel_on_cnn_is_unchanged():
    """MLP/CNN: every leaf's flattened output, as before token sequences were handled."""
    net = make_cnn_bn()
    X = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    em = NTKFeaturizer(net, kernel="embedding", device="cpu", dtype="float64", batch_size=4)
    K = em.fit_transform(X)
    assert em.layers_ == ["conv1", "bn", "conv2", "fc"]
    outs = _module_outputs(net, X, em.layers_)
    rows = [o.reshape(len(X), -1).numpy() for o in outs.values()]
    np.testing.assert_allclose(K, _gram_sum(rows, rows), rtol=1e-10)


class _Odd(nn.Module):
    """Leaves that return a tuple, a dict, nothing, or a batch-independent tensor."""

    class Pair(nn.Linear):
        def forward(self, x):
            return super().forward(x), "aux"

    class Named(nn.Linear):
        def forward(self, x):
            return {"last_hidden_state": super().forward(x), "extra": None}

    class Log(nn.Module):
        def forward(self, x):
            return None

    class Bias(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.randn(1, 4))

        def forward(self, x):
            return self.b

    def __init__(self):
        super().__init__()
        self.pair, self.named, self.log, self.bias = (
            self.Pair(3, 4),
            self.Named(4, 4),
            self.Log(),
            self.Bias(),
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h, _ = self.pair(x)
        h = torch.tanh(self.named(h)["last_hidden_state"])
        self.log(h)
        return self.head(h + self.bias(h))


def test_embedding_kernel_outputs_that_are_not_one_tensor():
    torch.manual_seed(0)
    net = _Odd()
    X = np.random.default_rng(0).normal(size=(5, 3))
    em = NTKFeaturizer(net, kernel="embedding", device="cpu", dtype="float64")
    K = em.fit_transform(X)
    assert em.layers_ == ["pair", "named", "head"]  # no tensor / not per sample: left out
    x = torch.as_tensor(X)
    net = net.double()
    with torch.no_grad():
        a = net.pair(x)[0]
        b = net.named(a)["last_hidden_state"]
        c = net.head(torch.tanh(b) + net.bias.b)
    np.testing.assert_allclose(K, sum((t @ t.T).numpy() for t in (a, b, c)), rtol=1e-10)
    with pytest.raises(ValueError, match=r"Layer 'log' gives no tensor.*one row per sample"):
        NTKFeaturizer(net, kernel="embedding", layers=["log"], device="cpu").fit(X)
    with pytest.raises(ValueError, match=r"'bias' gives a float\d+ tensor of shape \(1, 4\)"):
        NTKFeaturizer(net, kernel="ck", layers=["bias", "head"], device="cpu").fit(X)
