"""PCAProbe against sklearn's PCA and the probe pipelines run by hand on the same embeddings."""

import pickle

import numpy as np
import pandas as pd
import pytest
from _nets import make_cnn_bn, make_mlp
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from sknn_kernels import EmbeddingExtractor
from sknn_kernels.features.probe import PCAProbe, _torch_pca_parts, make_probe


def _data(rng, n=90, d=5, n_classes=3):
    y = np.arange(n) % n_classes
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(n_classes, d)[y]
    return X, y


def _assert_equal_up_to_sign(A, B, atol=1e-8):
    """Columns of A equal columns of B up to one sign each."""
    signs = np.sign((A * B).sum(0))
    np.testing.assert_allclose(A * signs, B, atol=atol)


def _probe(net, **kwargs):
    params = {"device": "cpu", "dtype": "float64", "random_state": 0, "cv": 3}
    params.update(kwargs)
    return PCAProbe(net, **params)


@pytest.mark.parametrize("n_components", [3, 0.8])
def test_per_layer_pca_matches_sklearn(n_components, rng):
    net = make_mlp(hidden=(16, 12))
    X, y = _data(rng)
    layers = ["1", "3"]
    probe = _probe(net, layers=layers, n_components=n_components, probe_components=(1, 2, 10)).fit(
        X, y
    )
    Z = EmbeddingExtractor(net, layers=layers, device="cpu", dtype="float64").fit_transform(X)
    out = probe.transform(X)
    start = 0
    for layer, cols in zip(layers, [slice(0, 16), slice(16, 28)]):
        reference = PCA(n_components).fit(Z[:, cols])
        k = reference.n_components_
        assert probe.pca_[layer].n_components_ == k
        assert probe.feature_slices_[layer] == slice(start, start + k)
        _assert_equal_up_to_sign(out[:, start : start + k], reference.transform(Z[:, cols]))
        np.testing.assert_allclose(
            probe.pca_[layer].explained_variance_, reference.explained_variance_
        )
        np.testing.assert_allclose(
            probe.explained_variance_[layer][:k], np.cumsum(reference.explained_variance_ratio_)
        )
        start += k
    # the stored PCA is a working sklearn PCA: inverse_transform of all components is exact
    full = _probe(net, layers=["3"], n_components=12).fit(X)
    np.testing.assert_allclose(
        full.pca_["3"].inverse_transform(full.transform(X)), Z[:, 16:], atol=1e-10
    )


@pytest.mark.parametrize(
    "n_max", [4, 30]
)  # randomized (few components of a big matrix) and exact branches
def test_torch_pca_path_matches_sklearn(n_max, rng):
    # a clear spectral gap so the randomized SVD is exact to round-off
    scales = np.r_[np.linspace(20, 5, 6), np.full(54, 0.05)]
    Z = rng.normal(size=(600, 60)) * scales + 3.0
    parts = _torch_pca_parts(Z, n_max, "cpu")
    reference = PCA(n_max, svd_solver="full").fit(Z)
    np.testing.assert_allclose(parts["mean"], reference.mean_)
    k = min(n_max, 6)
    np.testing.assert_allclose(parts["variance"][:k], reference.explained_variance_[:k], rtol=1e-6)
    np.testing.assert_allclose(
        parts["ratio"][:k], reference.explained_variance_ratio_[:k], rtol=1e-6
    )
    # same sign convention as sklearn, so no sign fix is needed
    np.testing.assert_allclose(parts["components"][:k], reference.components_[:k], atol=1e-6)


def test_probes_equal_hand_pipelines(rng):
    net = make_mlp(hidden=(16, 12))
    X, y = _data(rng, n=120)
    probe = _probe(net, layers=["3"], probe_components=(1, 3, 7), cv=4).fit(X, y)
    Z = EmbeddingExtractor(net, layers=["3"], device="cpu", dtype="float64").fit_transform(X)
    folds = StratifiedKFold(4)
    hand = {
        "knn": KNeighborsClassifier(),
        "ncc": NearestCentroid(),
        "linear": LogisticRegression(max_iter=1000),
    }
    results = pd.DataFrame(probe.probe_results_)  # a dict of arrays, like cv_results_
    assert list(results.columns) == [
        "layer",
        "n_components",
        "explained_variance",
        "probe",
        "score_mean",
        "score_std",
    ]
    for name, clf in hand.items():
        rows = results[results["probe"] == name].sort_values("n_components")
        assert rows["n_components"].tolist() == [1, 3, 7, 12]  # 12: the full-width layer
        for k, mean, std in zip(rows["n_components"], rows["score_mean"], rows["score_std"]):
            pipe = make_pipeline(clf) if k == 12 else make_pipeline(PCA(k), clf)
            scores = cross_validate(pipe, Z, y, cv=folds)["test_score"]
            assert mean == pytest.approx(scores.mean(), abs=1e-12)
            assert std == pytest.approx(scores.std(), abs=1e-12)
        np.testing.assert_allclose(
            rows["explained_variance"].iloc[:-1], probe.explained_variance_["3"][[0, 2, 6]]
        )
        assert rows["explained_variance"].iloc[-1] == 1.0


def test_custom_probe_dict_and_caps(rng):
    net = make_mlp(hidden=(16, 4))
    X, y = _data(rng, n=30)
    probe = _probe(
        net,
        layers=["3"],
        n_components=2,
        probe_components=(1, 3, 50, 100),
        probes={"svm": LinearSVC()},
    ).fit(X, y)
    # width 4 caps 50 and 100; the full-width row has k = 4
    assert probe.probe_results_["n_components"].tolist() == [1, 3, 4]
    assert set(probe.probe_results_["probe"]) == {"svm"}
    # few samples cap k below a wide layer's width: 30 samples, 3 folds -> 20 training rows
    wide = _probe(net, layers=["1"], n_components=2, probe_components=(5, 50), probes=("ncc",)).fit(
        rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5)), y
    )
    assert wide.probe_results_["n_components"].tolist() == [5, 16]
    assert make_probe("ncc").__class__ is NearestCentroid
    with pytest.raises(ValueError, match="Unknown probe"):
        _probe(net, probes=("svm",)).fit(X, y)


def test_components_needed_reads_the_table(rng):
    net = make_mlp(hidden=(16, 12))
    X, y = _data(rng, n=120)
    probe = _probe(net, layers=["1", "3"], probe_components=(1, 2, 4, 8)).fit(X, y)
    needed = probe.components_needed(0.95)
    assert all(len(column) == 2 * 3 for column in needed.values())
    needed, results = pd.DataFrame(needed), pd.DataFrame(probe.probe_results_)
    for row in needed.itertuples():
        rows = results[(results["layer"] == row.layer) & (results["probe"] == row.probe)]
        rows = rows.sort_values("n_components")
        full = rows["score_mean"].iloc[-1]
        enough = rows[rows["score_mean"] >= 0.95 * full]
        assert row.n_components == enough["n_components"].iloc[0]
        assert row.full_score == full
        assert row.explained_variance == enough["explained_variance"].iloc[0]
    assert len(needed) == 2 * 3
    with pytest.raises(ValueError, match="score_fraction"):
        probe.components_needed(1.5)


def test_cnn_layers_with_input_shape(rng):
    net = make_cnn_bn()
    X = rng.normal(size=(40, 64))
    y = np.arange(40) % 2
    probe = _probe(
        net,
        layers=["conv1", "conv2"],
        pooling="avg",
        n_components=2,
        input_shape=(1, 8, 8),
        probe_components=(1, 2),
        probes=("ncc",),
    ).fit(X, y)
    assert probe.transform(X).shape == (40, 4)
    assert probe.probe_results_["n_components"].tolist() == [1, 2, 4, 1, 2, 6]


def test_set_output_pandas_and_names(rng):
    net = make_mlp()
    X, _ = _data(rng)
    probe = _probe(net, layers=["1", "3"], n_components=2).set_output(transform="pandas")
    out = probe.fit_transform(pd.DataFrame(X, columns=list("abcde")))
    assert list(out.columns) == ["1__pc0", "1__pc1", "3__pc0", "3__pc1"]
    assert not hasattr(probe, "probe_results_")  # no y, no probes
    np.testing.assert_array_equal(probe.feature_names_in_, list("abcde"))


def test_pickle_round_trip(rng):
    net = make_mlp()
    X, y = _data(rng)
    probe = _probe(net, n_components=3, probe_components=(1,)).fit(X, y)
    loaded = pickle.loads(pickle.dumps(probe))
    np.testing.assert_array_equal(loaded.transform(X), probe.transform(X))
    for key, column in probe.probe_results_.items():
        np.testing.assert_array_equal(loaded.probe_results_[key], column)


def test_clear_errors(rng):
    net = make_mlp(hidden=(16, 4))
    X, _ = _data(rng)
    with pytest.raises(ValueError, match="at least two classes.*1 class"):
        _probe(net).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Layer '3' has width 4, narrower than n_components=6"):
        _probe(net, layers=["1", "3"], n_components=6).fit(X)
    with pytest.raises(ValueError, match="at least 2 samples"):
        _probe(net).fit(X[:1])
    unfitted = _probe(net)
    for call in (
        lambda: unfitted.transform(X),
        unfitted.get_feature_names_out,
        unfitted.components_needed,
    ):
        with pytest.raises(NotFittedError):
            call()
    without_y = _probe(net).fit(X)
    with pytest.raises(NotFittedError):
        without_y.components_needed()
    refit = _probe(net, probe_components=(1,)).fit(X, np.arange(len(X)) % 2).fit(X)
    assert not hasattr(refit, "probe_results_") and not hasattr(refit, "classes_")
    with pytest.raises(ValueError, match="does not exist"):
        _probe(net, layers=["nope"]).fit(X)
