"""Networks as users hold them: token ids, named (dict) inputs, tuple/dict/ModelOutput outputs.

Every estimator that takes a ``network`` goes through the same adapter, so these tests drive
the public estimators and functions; kernels are checked against a float64 per-sample autograd
reference (``_nets.autograd_kernel``).
"""

import copy
import io
import warnings

import joblib
import numpy as np
import pytest
import torch
from _nets import (
    BagOfTokens,
    TupleInput,
    TwoImageFusion,
    autograd_kernel,
    make_mlp,
    make_tiny_bert,
    token_data,
)
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from skorch.helper import SliceDict
from torch import nn

from sknn_kernels import EmbeddingExtractor, KernelSurrogateClassifier, NTKFeaturizer, PCAProbe
from sknn_kernels.exceptions import NetworkChangedWarning
from sknn_kernels.metrics import network_proba
from sknn_kernels.ntk import empirical_ntk, ntk_diagonal, projected_ntk_features


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}, net.training


def _assert_untouched(net, before):
    state, training = before
    assert net.training == training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"left": rng.normal(size=(n, 1, 5, 5)), "right": rng.normal(size=(n, 1, 5, 5))}


# --------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("kernel", ["pntk", "trace"])
def test_token_id_kernel_matches_reference(kernel):
    net = BagOfTokens()
    before = _state(net)
    ids, _ = token_data(7, seed=1)
    ids_test, _ = token_data(3, seed=2)
    assert ids.dtype.kind == "i"
    ntk = NTKFeaturizer(net, kernel=kernel, device="cpu", dtype="float64").fit(ids)
    kind = "pntk" if kernel == "pntk" else "trace"
    np.testing.assert_allclose(
        ntk.transform(ids_test), autograd_kernel(net, ids_test, ids, kind), rtol=1e-9, atol=1e-12
    )
    _assert_untouched(net, before)


def test_token_ids_keep_their_dtype_through_every_path():
    net = BagOfTokens()
    ids, _ = token_data(6, seed=3)
    seen = []
    net.emb.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    EmbeddingExtractor(net, layers=["hidden"], device="cpu").fit(ids).transform(ids)
    network_proba(net, ids.astype(np.int32), device="cpu")
    empirical_ntk(net, ids.astype(np.uint8), device="cpu")
    # the user's own hook travels with the private copy, and sees every path's ids as long
    assert len(seen) >= 3 and set(seen) == {torch.int64}
    emb = EmbeddingExtractor(net, layers=["emb:input"], device="cpu").fit(ids)
    np.testing.assert_array_equal(emb.transform(ids), ids.astype(np.float32))  # ids read as given


def test_projected_and_layer_restricted_kernels_on_token_ids():
    net = BagOfTokens()
    ids, _ = token_data(6, seed=4)
    exact = autograd_kernel(net, ids, names=["emb", "head"])
    K = empirical_ntk(net, ids, layers=["emb", "head"], device="cpu", dtype="float64")
    np.testing.assert_allclose(K, exact, rtol=1e-9, atol=1e-12)
    # projection: unbiased, so the mean over seeds approaches the exact kernel
    mean = np.mean(
        [
            empirical_ntk(
                net, ids, projection_dim=256, random_state=s, device="cpu", dtype="float64"
            )
            for s in range(30)
        ],
        axis=0,
    )
    full = autograd_kernel(net, ids)
    assert np.linalg.norm(mean - full) / np.linalg.norm(full) < 0.05


def test_embedding_ids_out_of_range_name_the_layer():
    ids, _ = token_data(4, vocab=20)
    ids[2, 1] = 25
    with pytest.raises(ValueError, match=r"Layer 'emb' \(nn.Embedding with 20 rows\).*0\.\.19"):
        network_proba(BagOfTokens(), ids, device="cpu")
    with pytest.raises(ValueError, match="Layer 'emb'"):
        NTKFeaturizer(BagOfTokens(), device="cpu").fit(ids)


def test_dtype_mismatches_say_what_to_fix():
    X = np.arange(20).reshape(4, 5)  # integers given to a float MLP
    with pytest.raises(
        ValueError, match=r"integer dtype.*expects floating-point.*astype\(np.float32\)"
    ):
        EmbeddingExtractor(make_mlp(), device="cpu").fit(X)
    with pytest.raises(ValueError, match=r"token ids.*nn.Embedding.*integer arrays"):
        network_proba(BagOfTokens(), np.random.default_rng(0).normal(size=(3, 6)), device="cpu")


def test_shape_errors_hint_only_at_the_shape():
    X = np.random.default_rng(0).normal(size=(4, 7))
    with pytest.raises(
        ValueError, match=r"layer '0' \(nn.Linear\) expects 5 features, got 7"
    ) as err:
        EmbeddingExtractor(make_mlp(), device="cpu").fit(X)
    assert "input_shape" not in str(err.value)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match=r"Conv2d\) expects 4-D.*Pass input_shape=\(C, H, W\)"):
        EmbeddingExtractor(conv, layers=["1"], device="cpu").fit(np.zeros((2, 64)))


# --------------------------------------------------------------------------- named inputs
def test_dict_inputs_kernel_matches_reference_and_unused_parameters_are_zero():
    net = TwoImageFusion()
    before = _state(net)
    X, X_test = _images(6), _images(3, seed=1)
    for kind in ("pntk", "trace"):
        K = empirical_ntk(net, X_test, X, kind=kind, device="cpu", dtype="float64")
        np.testing.assert_allclose(K, autograd_kernel(net, X_test, X, kind), rtol=1e-9, atol=1e-12)
    parts = empirical_ntk(net, X, layerwise=True, device="cpu", dtype="float64")
    assert np.all(parts["unused"] == 0)
    d = ntk_diagonal(net, X, device="cpu", dtype="float64")
    np.testing.assert_allclose(d, np.diag(autograd_kernel(net, X)), rtol=1e-9)
    F = projected_ntk_features(net, X, projection_dim=8, random_state=0, device="cpu")
    assert F.shape == (6, 1, 8)
    _assert_untouched(net, before)


def _pipeline_case(name):
    """(network, training X, new X, readout layer) for the Pipeline/CV/GridSearch/joblib test."""
    if name == "fusion":
        return TwoImageFusion(), SliceDict(**_images(24)), _images(5, seed=3), "head:input"
    if name == "token_ids":
        return BagOfTokens(), token_data(24, seed=6)[0], token_data(5, seed=7)[0], "head:input"
    pytest.importorskip("transformers")
    ids, mask = token_data(24, T=6, vocab=30, seed=8)
    new_ids, new_mask = token_data(5, T=6, vocab=30, seed=9)
    return (
        make_tiny_bert(n_labels=2),
        SliceDict(input_ids=ids, attention_mask=mask),
        {"input_ids": new_ids, "attention_mask": new_mask},
        "classifier:input",
    )


@pytest.mark.parametrize("case", ["fusion", "token_ids", "hugging_face"])
def test_inputs_in_pipeline_cross_validate_grid_search_and_joblib(case):
    net, X, X_new, readout = _pipeline_case(case)
    before = _state(net)
    y = np.random.default_rng(0).integers(0, 2, size=24)
    pipe = make_pipeline(
        NTKFeaturizer(net, normalize="cosine", device="cpu"),
        KernelSurrogateClassifier(alpha=1e-2, device="cpu"),
    )
    res = cross_validate(pipe, X, y, cv=3)
    assert res["test_score"].shape == (3,) and np.all(np.isfinite(res["test_score"]))
    grid = GridSearchCV(pipe, {"ntkfeaturizer__kernel": ["pntk", "ck"]}, cv=2, error_score="raise")
    grid.fit(X, y)
    buffer = io.BytesIO()
    joblib.dump(grid.best_estimator_, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_allclose(
        loaded.predict_proba(X_new), grid.best_estimator_.predict_proba(X_new)
    )
    probe = make_pipeline(
        EmbeddingExtractor(net, layers=[readout], device="cpu"), LogisticRegression()
    )
    assert cross_validate(probe, X, y, cv=3, error_score="raise")["test_score"].shape == (3,)
    _assert_untouched(net, before)


def test_dict_inputs_fitted_state_and_checks():
    emb = EmbeddingExtractor(TwoImageFusion(), layers=["head:input"], device="cpu").fit(_images(4))
    assert emb.input_keys_ == ("left", "right")
    assert emb.input_shapes_ == {"left": (1, 5, 5), "right": (1, 5, 5)}
    assert not hasattr(emb, "n_features_in_")
    assert emb.get_feature_names_out().shape == (12,)
    with pytest.raises(ValueError, match=r"named inputs \['left'\]; the estimator was fitted on"):
        emb.transform({"left": np.zeros((2, 1, 5, 5))})
    with pytest.raises(ValueError, match="Per-sample shapes differ"):
        emb.transform({"left": np.zeros((2, 1, 6, 6)), "right": np.zeros((2, 1, 6, 6))})
    with pytest.raises(ValueError, match="pass a dict with the same keys"):
        emb.transform(np.zeros((2, 25)))
    with pytest.raises(ValueError, match="one row per sample each"):
        EmbeddingExtractor(TwoImageFusion(), device="cpu").fit(
            {"left": np.zeros((3, 1, 5, 5)), "right": np.zeros((2, 1, 5, 5))}
        )
    with pytest.raises(ValueError, match=r"does not take the named inputs \['left', 'middle'\]"):
        network_proba(
            TwoImageFusion(),
            {"left": np.zeros((2, 1, 5, 5)), "middle": np.zeros((2, 1, 5, 5))},
            device="cpu",
        )
    bad = _images(3)
    bad["right"][1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X\['right'\] contains NaN"):
        network_proba(TwoImageFusion(), bad, device="cpu")


# --------------------------------------------------------------------------- outputs
def test_output_selection():
    X = _images(4)
    net = TwoImageFusion()
    logits = net(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in X.items()})["logits"]
    np.testing.assert_allclose(
        network_proba(net, X, device="cpu"), torch.softmax(logits, 1).detach().numpy(), rtol=1e-5
    )
    K_feat = empirical_ntk(net, X, network_output="features", device="cpu", dtype="float64")
    assert K_feat.shape == (4, 4)
    with pytest.raises(ValueError, match=r"output='scores'.*has \['features', 'logits'\]"):
        network_proba(net, X, network_output="scores", device="cpu")

    class NoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return {"a": self.lin(x), "b": x}

    with pytest.raises(
        ValueError,
        match=r"keys \['a', 'b'\] and none is 'logits': pass network_output|output='<key>'",
    ):
        network_proba(NoLogits(), np.zeros((2, 3)), device="cpu")

    class NoTensor(nn.Module):
        def forward(self, x):
            return "nothing"

    with pytest.raises(TypeError, match="not a tensor of logits"):
        network_proba(NoTensor(), np.zeros((2, 3)), device="cpu")


def test_tuple_input_network_through_a_callable():
    net = TupleInput()
    rng = np.random.default_rng(0)
    X = {"x": rng.normal(size=(5, 3)), "z": rng.normal(size=(5, 2))}

    def call(module, batch):
        return module(batch["x"], batch["z"])[0]

    K = empirical_ntk(net, X, network_output=call, device="cpu", dtype="float64")
    ref = _tuple_reference(net, X)
    np.testing.assert_allclose(K, ref, rtol=1e-9, atol=1e-12)
    proba = network_proba(net, X, network_output=call, device="cpu")
    assert proba.shape == (5, 2)
    emb = EmbeddingExtractor(net, layers=["head:input"], network_output=call, device="cpu")
    assert emb.fit_transform(X).shape == (5, 4)


def _tuple_reference(net, X):
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(net)

        def forward(self, x, z):
            return self.net(x, z)[0]

    return autograd_kernel(Wrap(), X)


# --------------------------------------------------------------------------- transformers
def test_hugging_face_classifier_kernels_pooling_and_probe():
    pytest.importorskip("transformers")
    bert = make_tiny_bert()
    before = _state(bert)
    ids, mask = token_data(6, T=6, vocab=30, seed=5)
    X = {"input_ids": ids, "attention_mask": mask}
    K = empirical_ntk(bert, X, device="cpu", dtype="float64")
    np.testing.assert_allclose(K, autograd_kernel(bert, X), rtol=1e-8, atol=1e-12)
    head = ["classifier", "bert.encoder.layer.1"]
    K_head = empirical_ntk(bert, X, layers=head, device="cpu", dtype="float64")
    np.testing.assert_allclose(K_head, autograd_kernel(bert, X, names=head), rtol=1e-8, atol=1e-12)
    for method in ("auto", "autograd"):  # auto: vmap fails on HF masking code, falls back
        np.testing.assert_allclose(
            empirical_ntk(
                bert, X, layers=["bert.embeddings"], method=method, device="cpu", dtype="float64"
            ),
            autograd_kernel(bert, X, names=["bert.embeddings"]),
            rtol=1e-8,
            atol=1e-12,
        )
    with pytest.raises(ValueError, match="method='vmap': torch.func.vmap cannot trace"):
        empirical_ntk(bert, X, layers=["bert.embeddings"], method="vmap", device="cpu")
    # sequence poolings on the last hidden states, against a hand computation
    layer = "bert.encoder.layer.1"
    hidden = []
    copy_ = copy.deepcopy(bert).eval()
    copy_.bert.encoder.layer[1].register_forward_hook(
        lambda m, a, out: hidden.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        copy_(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask))
    H = hidden[0].numpy()
    m = mask[..., None].astype(np.float32)
    expected = {
        "mean_tokens": (H * m).sum(1) / m.sum(1),
        "cls": H[:, 0],
        "last": H[np.arange(len(H)), mask.sum(1) - 1],
    }
    for pooling, want in expected.items():
        got = EmbeddingExtractor(bert, layers=[layer], pooling=pooling, device="cpu").fit_transform(
            X
        )
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    y = np.array([0, 1, 0, 1, 0, 1])
    probe = PCAProbe(
        bert,
        layers=["bert.encoder.layer.0", layer],
        pooling="mean_tokens",
        cv=2,
        probe_components=(1, 2),
        probes=("ncc",),
        device="cpu",
    ).fit(X, y)
    assert set(probe.layers_) == {"bert.encoder.layer.0", layer}
    _assert_untouched(bert, before)


# --------------------------------------------------------------------------- adapter cache
def test_transform_reuses_the_adapter_until_the_network_changes(monkeypatch):
    import sknn_kernels.network._adapter as adapter_module

    net = make_mlp()
    X = np.random.default_rng(0).normal(size=(6, 5))
    emb = EmbeddingExtractor(net, device="cpu").fit(X)
    copies = []
    original = adapter_module._private_copy
    monkeypatch.setattr(
        adapter_module, "_private_copy", lambda *a: copies.append(1) or original(*a)
    )
    Z = emb.transform(X)
    emb.transform(X)
    assert copies == []  # no deep copy of the network per call
    with torch.no_grad():
        net[0].weight.add_(1.0)
    with pytest.warns(NetworkChangedWarning):
        Z_changed = emb.transform(X)
    assert copies == [1] and not np.allclose(Z, Z_changed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged since the last call: no new copy, same warning
        with pytest.raises(NetworkChangedWarning):
            emb.transform(X)
    assert copies == [1]


def test_non_finite_network_outputs_are_caught():
    net = make_mlp()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    X = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises(
        ValueError,
        match=r"network outputs are not finite.*4 sample\(s\), first at indices \[0, 1, 2",
    ):
        network_proba(net, X, device="cpu")
    with pytest.raises(ValueError, match="not finite"):
        empirical_ntk(net, X, device="cpu")


# --------------------------------------------------------------------------- hard edges
def test_empty_and_silent_layers_and_string_labels_are_clear_errors():
    X = _images(4)
    for kernel in ("pntk", "ck"):
        with pytest.raises(ValueError, match="`layers` is empty"):
            NTKFeaturizer(TwoImageFusion(), kernel=kernel, layers=[], device="cpu").fit(X)
    with pytest.raises(
        ValueError, match=r"Layer\(s\) \['unused'\] were not called in the forward pass"
    ):
        NTKFeaturizer(TwoImageFusion(), layers=["unused", "head"], device="cpu").fit(X)
    with pytest.raises(ValueError, match=r"\['unused'\] were not called"):
        empirical_ntk(TwoImageFusion(), X, layers="unused", device="cpu")
    with pytest.raises(ValueError, match="LabelEncoder"):
        NTKFeaturizer(TwoImageFusion(), kernel="loss_grad", device="cpu").fit(
            X, np.array(["cat", "dog", "cat", "dog"])
        )
