"""Networks that take what real users hold: token ids, several named inputs, structured outputs.

Plus :func:`autograd_kernel`, a float64 reference kernel built from one ``autograd.grad`` per
sample and output (no vmap, no hooks), which works for any input form.
"""

import copy
import math

import numpy as np
import torch
from torch import nn


class BagOfTokens(nn.Module):
    """Token ids -> nn.Embedding -> masked mean over tokens -> Tanh MLP -> logits (id 0 = padding)."""

    def __init__(self, vocab=20, dim=6, n_out=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, 8)
        self.head = nn.Linear(8, n_out)

    def forward(self, ids):
        mask = (ids != 0).to(self.emb.weight.dtype)[..., None]
        h = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.head(torch.tanh(self.hidden(h)))


class TwoImageFusion(nn.Module):
    """Two image inputs (keyword arguments ``left``, ``right``) fused after one conv each.

    Returns a dict with ``"logits"`` and an auxiliary ``"features"`` entry, like many
    multi-input models; ``unused`` is a parameter the forward pass never touches.
    """

    def __init__(self, n_out=3):
        super().__init__()
        self.left_conv = nn.Conv2d(1, 3, 3)
        self.right_conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Linear(12, n_out)
        self.unused = nn.Linear(4, 4)

    def forward(self, left, right):
        a = torch.relu(self.left_conv(left)).mean((2, 3))
        b = torch.relu(self.right_conv(right)).mean((2, 3))
        z = torch.cat([a, b, a * b, a - b], 1)
        return {"features": z, "logits": self.head(z)}


class TupleInput(nn.Module):
    """A network with two positional inputs: served by ``network_output=callable``."""

    def __init__(self, n_out=2):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 4)
        self.head = nn.Linear(4, n_out)

    def forward(self, x, z):
        return self.head(torch.tanh(self.a(x) + self.b(z))), "aux"


def make_tiny_bert(n_labels=3, seed=0):
    """A randomly initialised 2-layer BERT sequence classifier (no download), eager attention."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=n_labels,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    config._attn_implementation = "eager"
    return BertForSequenceClassification(config)


def token_data(n, T=6, vocab=20, seed=0, min_len=2):
    """Right-padded token ids (0 = padding) and their attention mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(n, T))
    lengths = rng.integers(min_len, T + 1, size=n)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def autograd_kernel(net, X1, X2=None, kind="pntk", *, select=None, names=None):
    """Float64 reference ``K(X1, X2)`` from one backward pass per sample and output.

    ``X`` is an array or a dict of arrays (keyword inputs); ``select`` maps the network's raw
    output to logits (default: itself, or its ``"logits"`` entry); ``names`` restricts θ to the
    parameters whose names start with one of them.
    """
    net = copy.deepcopy(net).double().eval()
    params = [p for n, p in net.named_parameters()
              if names is None or any(n.startswith(k + ".") for k in names)]
    select = select or (lambda out: out["logits"] if isinstance(out, dict) or hasattr(out, "logits") else out)

    def rows(X):
        named = isinstance(X, dict)
        n = len(next(iter(X.values()))) if named else len(X)
        out = []
        for i in range(n):
            if named:
                xi = {k: _as_tensor(v[i : i + 1]) for k, v in X.items()}
                f = select(net(**xi)).reshape(-1)
            else:
                f = select(net(_as_tensor(X[i : i + 1]))).reshape(-1)
            J = []
            for c in range(f.shape[0]):
                gs = torch.autograd.grad(f[c], params, retain_graph=True, allow_unused=True)
                J.append(torch.cat([torch.zeros(p.numel(), dtype=torch.float64) if g is None
                                    else g.reshape(-1) for p, g in zip(params, gs)]))
            out.append(torch.stack(J))
        return torch.stack(out)  # (n, C, P)

    J1 = rows(X1)
    J2 = J1 if X2 is None else rows(X2)
    if kind == "pntk":
        C = J1.shape[1]
        return ((J1.sum(1) / math.sqrt(C)) @ (J2.sum(1) / math.sqrt(C)).T).numpy()
    if kind == "trace":
        return torch.einsum("icp,jcp->ij", J1, J2).numpy()
    raise ValueError(kind)


def _as_tensor(a):
    t = torch.as_tensor(np.asarray(a))
    return t.double() if t.is_floating_point() else t
