"""Explanations that depend on the sample explained, influence in the report, and --lds."""

import json
from functools import partial

import numpy as np
import pytest

from sknn_kernels.attribution.evaluation import (
    explanation_overlap,
    kernel_neighbours,
    relative_attributions,
    repeated_proponents,
)
from sknn_kernels.surrogates._kernel_base import top_attributions


def _dominated(rng, n_test=12, n_train=40):
    """α_i K(x, x_i) with one huge |α|: the raw lists all start with the same sample."""
    K = rng.uniform(0.1, 1.0, size=(n_test, n_train))
    alpha = rng.uniform(0.1, 1.0, size=n_train)
    alpha[7] = 100.0
    return K * alpha


def test_overlap_of_identical_and_disjoint_lists():
    same = explanation_overlap([[1, 2, 3]] * 4)
    assert same.pairwise == 1.0 and same.max_share == 1.0 and same.distinct == 0.25
    apart = explanation_overlap([[0, 1], [2, 3], [4, 5]], neighbours=[[0, 1], [2, 9], [8, 9]])
    assert apart.pairwise == 0.0 and apart.distinct == 1.0
    assert apart.max_share == pytest.approx(1 / 3)
    assert apart.neighbours == pytest.approx((1 + 0.5 + 0) / 3)
    assert np.isnan(explanation_overlap([[1, 2]]).pairwise)  # one list: no pairs
    with pytest.raises(ValueError, match="one row per sample"):
        explanation_overlap([[0, 1]], neighbours=[[0], [1]])


def test_relative_attributions_make_lists_depend_on_the_sample():
    A = _dominated(np.random.default_rng(0))
    raw = top_attributions(A, lambda chunk: 1.0, 3)["proponents"]
    assert (raw[:, 0] == 7).all() and repeated_proponents(raw)
    R = relative_attributions(A)
    rel = top_attributions(R, lambda chunk: 1.0, 3)["proponents"]
    assert not repeated_proponents(rel)
    assert explanation_overlap(rel).pairwise < explanation_overlap(raw).pairwise
    np.testing.assert_array_equal(np.sign(R), np.sign(A))  # signs kept
    # a reference set fixes the scale: rows do not change each other's ranking
    np.testing.assert_allclose(relative_attributions(A[:2], A), R[:2])


def test_kernel_neighbours_discount_long_training_vectors():
    F_train = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, 1.0]])
    x = np.array([[1.0, 0.1]])
    K = x @ F_train.T
    assert kernel_neighbours(K, np.einsum("ij,ij->i", F_train, F_train), 1).tolist() == [[0]]
    assert np.argmax(K) == 1  # the raw kernel would name the long vector


@pytest.fixture(scope="module")
def small_report():
    from sklearn.datasets import make_classification

    from sknn_kernels.app._explanations import _train_reference
    from sknn_kernels.app.report import run_report

    X, y = make_classification(
        n_samples=90, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    recipe = partial(_train_reference, image_shape=None, task="classification", epochs=3)
    results = run_report(
        recipe(X[:60], y[:60], 0),
        *(X[:60], y[:60], X[60:], y[60:]),
        kernels=("ck0",),
        estimators=("kglm", "kglm-logits", "ncc"),
        cv=2,
        probe=False,
        device="cpu",
        verbose=0,
        train_fn=recipe,
        influence_members=2,
        lds=3,
    )
    return results


@pytest.mark.slow
def test_report_shows_surrogate_and_influence_with_lds(small_report, tmp_path):
    from sknn_kernels.app.report import write_report

    r = small_report
    names = r.method_table["method"].tolist()
    assert names[0].endswith("surrogate") and names[1:] == ["influence", "influence x2"]
    for key in ("raw_pairwise_overlap", "relative_pairwise_overlap", "raw_neighbour_overlap"):
        assert np.all((r.method_table[key] >= 0) & (r.method_table[key] <= 1))
    assert np.all(np.abs(r.method_table["lds"]) <= 1)
    kglm = np.char.startswith(r.table["estimator"].astype(str), "kglm")
    assert np.isfinite(r.table["lds"][kglm]).all() and np.isnan(r.table["lds"][~kglm]).all()
    write_report(r, tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    shown = [e for e in payload["explanations"] if e["shown"]]
    assert {e["method"] for e in shown} == set(names)
    assert {e["test_index"] for e in shown} == set(range(6))
    assert len(shown[0]["proponents"]) == len(shown[0]["proponent_scores"]) == 5
    assert [row["method"] for row in payload["method_table"]] == names
    page = (tmp_path / "index.html").read_text()
    assert "Which training samples drive a prediction" in page
    assert "which training samples the network" in page and "LDS ± s.e." in page


def test_retraining_options_need_a_recipe():
    from sknn_kernels.app.report import run_report

    with pytest.raises(ValueError, match="train_fn"):
        run_report(None, None, [0, 1], None, [0, 1], lds=5)


def test_cli_rejects_bad_attribution_options(tmp_path, capsys):
    from sknn_kernels.app.cli import main

    with pytest.raises(SystemExit):
        main(["compare", "--lds", "1"])
    assert "--lds: must be at least 2" in capsys.readouterr().err
    argv = ["compare", "--dataset", "diabetes", "--max-train", "40", "--epochs", "1"]
    argv += ["--quiet", "--no-probe", "--influence-members", "3", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "not available with --model, texts or regression" in capsys.readouterr().err
