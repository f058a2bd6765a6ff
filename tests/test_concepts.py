"""Concepts in embedding space: planted directions and clusters are found and explained."""

import numpy as np
import pytest

from sknn_kernels.analysis.concepts import embedding_concepts


def _planted(n=300, seed=0):
    rng = np.random.default_rng(seed)
    length = rng.uniform(0, 1, n)  # drives the leading direction
    label = rng.integers(0, 3, n)  # drives three clusters
    generated = rng.uniform(size=n) < 0.5  # unrelated to the embedding
    centres = np.array([[0, 0], [40, 0], [0, 40]])
    Z = np.c_[20 * length, centres[label] + 0.3 * rng.normal(size=(n, 2)), rng.normal(size=(n, 2))]
    meta = {
        "length": length,
        "label": label,
        "generated": generated,
        "source": np.where(label == 1, "web", "book"),
    }
    return Z, meta


def test_planted_direction_and_clusters_are_explained():
    Z, meta = _planted()
    res = embedding_concepts(Z, meta, n_components=3, n_clusters=3, random_state=0)
    assert list(res["kind"]) == ["direction"] * 3 + ["cluster"] * 3
    pc1 = int(np.argmax(np.abs(res["assoc_length"][:3])))  # the direction carrying length
    assert abs(res["assoc_length"][pc1]) > 0.95
    # the extremes of PC1 are the longest / shortest samples (up to the sign of the axis)
    top, bottom = np.array(res["top"][pc1]), np.array(res["bottom"][pc1])
    hi, lo = (top, bottom) if res["assoc_length"][pc1] > 0 else (bottom, top)
    assert meta["length"][hi].min() > 0.9 and meta["length"][lo].max() < 0.1
    clusters = res["kind"] == "cluster"
    # each cluster is one label: η = 1 between membership and label, and it favours that label
    np.testing.assert_allclose(res["assoc_label"][clusters], 1.0, atol=1e-9)
    assert sorted(res["favours_label"][clusters]) == ["0", "1", "2"]
    for c in np.flatnonzero(clusters):
        members = meta["label"][list(res["top"][c])]
        assert len(set(members)) == 1 and str(members[0]) == res["favours_label"][c]
    # the flag unrelated to the embedding is weakly associated with everything
    assert np.abs(res["assoc_generated"]).max() < 0.2
    assert res["assoc_generated"].dtype.kind == "f"  # bool: numeric (point-biserial)
    np.testing.assert_allclose(res["weight"][clusters].sum(), 1)
    assert np.all(np.diff(res["weight"][~clusters]) <= 0)
    # the cluster directions are the label's: η(PC, label) is high for the two leading PCs
    assert np.all(res["assoc_label"][:2] > 0.9)


def test_correlation_ratio_by_hand():
    # with scores s = [1, 2, 3, 4] and groups [a, a, b, b]: η² = 2 * 1² / 5 = 0.8
    Z = np.array([[1.0, 0], [2, 0], [3, 0], [4, 0]])
    res = embedding_concepts(Z, {"g": ["a", "a", "b", "b"]}, n_components=1, n_clusters=0)
    assert np.isclose(res["assoc_g"][0], np.sqrt(0.8))
    assert res["favours_g"][0] in {"a", "b"}
    assert res["top"][0] in ((3, 2, 1, 0), (0, 1, 2, 3))


def test_categorical_override_and_errors():
    Z, meta = _planted(n=60)
    res = embedding_concepts(Z, meta, n_clusters=2, categorical=["generated"], random_state=0)
    assert "favours_generated" in res and "favours_label" not in res
    with pytest.raises(ValueError, match="not metadata columns"):
        embedding_concepts(Z, meta, categorical=["nope"])
    with pytest.raises(ValueError, match="has 3 values"):
        embedding_concepts(Z, {"x": [1, 2, 3]})
    no_meta = embedding_concepts(Z, n_components=2, n_clusters=0)
    assert set(no_meta) == {"concept", "kind", "weight", "top", "bottom"}


def test_plot_concepts():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_concepts

    Z, meta = _planted(n=60)
    fig = plot_concepts(embedding_concepts(Z, meta, n_clusters=2, random_state=0))
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="metadata"):
        plot_concepts(embedding_concepts(Z, n_clusters=0))
