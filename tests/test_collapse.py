"""Neural-collapse measures against direct numpy formulas and data with known collapse."""

import numpy as np
import pytest
from _nets import make_mlp

from sknn_kernels.features.probe import PCAProbe
from sknn_kernels.metrics import collapse_onset, neural_collapse


def _nc1_direct(Z, y):
    """Papyan et al. 2020 written out: d x d covariances and a pseudo-inverse."""
    classes = np.unique(y)
    mu_g = Z.mean(0)
    means = np.stack([Z[y == c].mean(0) for c in classes])
    within = Z - means[np.searchsorted(classes, y)]
    sigma_w = within.T @ within / len(Z)
    sigma_b = (means - mu_g).T @ (means - mu_g) / len(classes)
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / len(classes)


def _simplex_etf(n_classes, dim, rng):
    """C unit vectors with pairwise cosine -1/(C-1), randomly rotated into `dim` dimensions."""
    M = np.eye(n_classes) - 1.0 / n_classes
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(rng.normal(size=(dim, n_classes)))
    return M @ Q.T


@pytest.mark.parametrize("dim", [3, 20])  # Σ_B full rank (d < C) and rank-deficient (d > C)
def test_nc1_matches_direct_formula(dim, rng):
    y = rng.choice([2, 5, 7, 9], size=150, p=[0.1, 0.2, 0.3, 0.4])  # unbalanced, non-0..C labels
    Z = rng.normal(size=(150, dim)) + 0.7 * rng.normal(size=(10, dim))[y]
    nc = neural_collapse(Z, y)
    assert nc.nc1 == pytest.approx(_nc1_direct(Z, y), rel=1e-9)
    assert nc.n_classes == 4


def test_nc2_matches_direct_formulas(rng):
    y = np.repeat(np.arange(5), 12)
    Z = rng.normal(size=(60, 8)) + 2 * rng.normal(size=(5, 8))[y]
    nc = neural_collapse(Z, y)
    centred = np.stack([Z[y == c].mean(0) for c in range(5)]) - Z.mean(0)
    norms = np.linalg.norm(centred, axis=1)
    cos = [centred[i] @ centred[j] / norms[i] / norms[j] for i in range(5) for j in range(i + 1, 5)]
    assert nc.equinorm == pytest.approx(np.std(norms) / np.mean(norms))
    assert nc.equiangularity == pytest.approx(np.std(cos))
    assert nc.simplex_deviation == pytest.approx(np.mean(np.abs(np.array(cos) + 1 / 4)))
    assert nc.as_dict()["nc1"] == nc.nc1


def test_collapsed_simplex_etf_gives_zero(rng):
    C = 6
    vertices = 5.0 * _simplex_etf(C, 30, rng)
    y = np.repeat(np.arange(C), 40)
    Z = vertices[y] + 1e-4 * rng.normal(size=(len(y), 30))
    collapsed = neural_collapse(Z, y, predictions=y)
    assert collapsed.nc1 < 1e-6
    assert collapsed.equinorm < 1e-3
    assert collapsed.equiangularity < 1e-3
    assert collapsed.simplex_deviation < 1e-3
    assert collapsed.nc4 == 0.0
    # same means, wide clusters and unequal norms: every statistic grows
    Z_wide = (vertices * np.arange(1, C + 1)[:, None])[y] + 2.0 * rng.normal(size=(len(y), 30))
    loose = neural_collapse(Z_wide, y)
    assert loose.nc1 > 0.1 and loose.equinorm > 0.2 and loose.simplex_deviation > 0.05


def test_nc1_invariant_to_invertible_maps_when_sigma_b_full_rank(rng):
    # d = C - 1: Σ_B is invertible, so tr(Σ_W Σ_B⁻¹) is invariant under Z -> Z A
    y = np.arange(120) % 4
    Z = rng.normal(size=(120, 3)) + rng.normal(size=(4, 3))[y]
    A = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    assert neural_collapse(Z @ A, y).nc1 == pytest.approx(neural_collapse(Z, y).nc1, rel=1e-8)


def test_nc4_counts_disagreements_with_nearest_mean():
    Z = np.array([[0.0], [0.2], [0.9], [1.0], [1.1], [2.0]])
    y = np.array([0, 0, 0, 1, 1, 1])  # means 1/3.7 and 4.1/3
    # the nearest means are 0, 0, 1, 1, 1, 1
    assert neural_collapse(Z, y, predictions=[0, 0, 1, 1, 1, 1]).nc4 == 0.0
    assert neural_collapse(Z, y, predictions=[0, 0, 0, 1, 1, 0]).nc4 == pytest.approx(2 / 6)
    logits = np.array([[2.0, 0], [1, 0], [0, 1], [0, 3], [0, 1], [5, 0]])  # argmax 0 0 1 1 1 0
    assert neural_collapse(Z, y, predictions=logits).nc4 == pytest.approx(1 / 6)
    assert neural_collapse(Z, y).nc4 is None
    with pytest.raises(ValueError, match="columns"):
        neural_collapse(Z, y, predictions=np.zeros((6, 3)))


def test_neural_collapse_errors(rng):
    with pytest.raises(ValueError, match="1 class"):
        neural_collapse(rng.normal(size=(5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="inconsistent"):
        neural_collapse(rng.normal(size=(5, 2)), [0, 1])


def _table(pd, ncc, linear):
    layers = [f"l{i}" for i in range(len(ncc))]
    rows = []
    for layer, a, b in zip(layers, ncc, linear):
        rows += [
            (layer, 3, "ncc", a - 0.05),
            (layer, 10, "ncc", a),
            (layer, 10, "linear", b),
            (layer, 3, "knn", 0.5),
        ]
    return pd.DataFrame(rows, columns=["layer", "n_components", "probe", "score_mean"])


def test_collapse_onset_requires_the_match_to_persist():
    pd = pytest.importorskip("pandas")
    # l1 matches by chance, l2 does not, from l3 on it does: onset is l3
    table = _table(pd, [0.5, 0.9, 0.7, 0.95, 0.97], [0.9, 0.905, 0.9, 0.955, 0.97])
    assert collapse_onset(table) == "l3"
    assert collapse_onset(table, tolerance=0.25) == "l1"
    assert collapse_onset(table, tolerance=0.5) == "l0"
    assert collapse_onset(_table(pd, [0.5, 0.6], [0.9, 0.9])) is None
    # the package's results format (a dict of arrays) and a numpy structured array work the same
    assert collapse_onset({c: table[c].to_numpy() for c in table}) == "l3"
    records = table.to_records(index=False).astype(
        [("layer", object), ("n_components", int), ("probe", object), ("score_mean", float)]
    )
    assert collapse_onset(records) == "l3"
    with pytest.raises(ValueError, match="No 'svm' probe"):
        collapse_onset(table, reference="svm")
    with pytest.raises(TypeError, match="dict of equal-length arrays"):
        collapse_onset(np.zeros(3))
    with pytest.raises(TypeError, match="no column \\['score_mean'\\]"):
        collapse_onset({"layer": ["a"], "probe": ["ncc"]})


def test_collapse_onset_from_fitted_probe(rng):
    y = np.arange(90) % 3
    X = rng.normal(size=(90, 5)) + 2 * np.eye(3, 5)[y]
    probe = PCAProbe(
        make_mlp(), layers=["1", "3"], probe_components=(1, 2), cv=3, device="cpu"
    ).fit(X, y)
    expected = collapse_onset(probe.probe_results_, tolerance=0.05)
    assert collapse_onset(probe, tolerance=0.05) == expected
    assert collapse_onset(probe, tolerance=1.0) == "1"
