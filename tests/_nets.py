"""Test networks: tiny seeded MLP/CNN/transformer/weight-sharing nets, and networks that take what real
users hold (token ids, several named inputs, structured outputs).

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
    config = BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=n_labels,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
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
    params = [
        p
        for n, p in net.named_parameters()
        if names is None or any(n.startswith(k + ".") for k in names)
    ]
    select = select or (
        lambda out: out["logits"] if isinstance(out, dict) or hasattr(out, "logits") else out
    )

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
                J.append(
                    torch.cat(
                        [
                            torch.zeros(p.numel(), dtype=torch.float64)
                            if g is None
                            else g.reshape(-1)
                            for p, g in zip(params, gs)
                        ]
                    )
                )
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


class AnyWidth(nn.Module):
    """Summarise a 2-D input of any width into 6 differentiable statistics.

    Lets one network serve sklearn's common checks, which feed arrays of many widths and
    dtypes: integer inputs (kept integer by the package, as token ids) are cast here, by the
    network, to the dtype of its buffer (which follows the module's dtype).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("ref", torch.zeros(()))

    def forward(self, x):
        x = x.flatten(1).to(self.ref.dtype)
        d = x.shape[1]
        ramp = torch.linspace(-1.0, 1.0, d, dtype=x.dtype, device=x.device)
        return torch.stack(
            [
                x.mean(1),
                (x * x).mean(1),
                x.abs().mean(1),
                (x * ramp).mean(1),
                torch.tanh(x).mean(1),
                torch.sin(x).mean(1),
            ],
            dim=1,
        )


def make_any_width_net(n_outputs=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(AnyWidth(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, n_outputs))


def make_mlp(n_in=5, hidden=(16, 12), n_out=3, seed=0):
    torch.manual_seed(seed)
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Conv -> ReLU -> avg-pool -> Linear; input (1, 8, 8)."""

    def __init__(self, n_out=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 3 * 3, n_out)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def make_cnn_bn(n_out=3, seed=0):
    """SmallCNN whose BatchNorm has non-trivial running statistics (eval mode matters)."""
    torch.manual_seed(seed)
    net = SmallCNN(n_out)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    return net


class TinyTransformer(nn.Module):
    """Sequence classifier: Linear embedding -> TransformerEncoderLayer -> mean pool -> Linear.

    Input: (n, seq_len=4, 3) tokens of width 3.
    """

    def __init__(self, d_model=8, n_out=3):
        super().__init__()
        self.embed = nn.Linear(3, d_model)
        self.encoder = nn.TransformerEncoderLayer(
            d_model, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True
        )
        self.head = nn.Linear(d_model, n_out)

    def forward(self, x):
        h = self.encoder(self.embed(x))
        return self.head(h.mean(1))


def make_transformer(seed=0):
    torch.manual_seed(seed)
    return TinyTransformer()


class SharedWeights(nn.Module):
    """The same Linear applied twice (weight sharing)."""

    def __init__(self, width=5, n_out=3):
        super().__init__()
        self.shared = nn.Linear(width, width)
        self.out = nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.tanh(self.shared(x))
        h = torch.tanh(self.shared(h))
        return self.out(h)


def make_shared_weights_net(seed=0):
    torch.manual_seed(seed)
    return SharedWeights()


class LateFusion(nn.Module):
    """Two named inputs of different shapes (a coarse 2-band image and a 3-feature table), one
    encoder each, concatenated; ``ignored`` is an input the network never uses (a dummy player)."""

    def __init__(self, n_out=3):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.table = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(8, n_out)

    def forward(self, image, table, ignored):
        return self.head(torch.cat([self.image(image).flatten(1), self.table(table)], 1))


def make_late_fusion(seed=0):
    torch.manual_seed(seed)
    return LateFusion()
