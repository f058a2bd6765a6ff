"""Tiny, seeded networks shared by the test-suite (CPU, trained or random)."""

import numpy as np
import pytest
import torch
from torch import nn


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


@pytest.fixture
def one_torch_thread():
    """Tiny networks gain nothing from threads, and OpenMP spinning on a busy machine costs 50x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def cnn_bn():
    return make_cnn_bn()


@pytest.fixture
def transformer():
    return make_transformer()


@pytest.fixture
def shared_weights_net():
    return make_shared_weights_net()
