"""sknn_kernels.attribution.evaluation: poisoning, mislabel detection and LDS against hand computations."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.utils import Bunch

from sknn_kernels import KernelSurrogateClassifier
from sknn_kernels.attribution.evaluation import (
    add_trigger,
    attack_success,
    flip_labels,
    linear_datamodeling_score,
    mislabel_detection,
    poison,
    poison_recall,
    retrain_on_subsets,
    self_attribution,
)
from sknn_kernels.attribution.influence import InfluenceAttributor


# ------------------------------------------------------------------ poisoning
@pytest.mark.parametrize(("fraction", "expected"), [(0.01, 2), (0.05, 10), (0.104, 21)])
def test_poison_plants_exactly_the_requested_samples(fraction, expected):
    rng = np.random.default_rng(0)
    X = rng.random((200, 1, 6, 5))
    y = np.arange(200) % 4
    Xp, yp, mask = poison(X, y, fraction, target_class=3, patch_size=2, value=7.0, random_state=1)
    assert mask.sum() == expected
    assert np.all(y[mask] != 3)  # never a sample that already has the target label
    assert np.all(yp[mask] == 3) and np.array_equal(yp[~mask], y[~mask])
    assert np.array_equal(Xp[~mask], X[~mask])
    np.testing.assert_array_equal(Xp[mask][..., -2:, -2:], 7.0)
    np.testing.assert_array_equal(Xp[mask][..., :-2, :], X[mask][..., :-2, :])
    again = poison(X, y, fraction, target_class=3, patch_size=2, value=7.0, random_state=1)[2]
    np.testing.assert_array_equal(again, mask)


def test_trigger_on_flat_rows_with_input_shape_channels_and_corners():
    X = np.zeros((2, 2 * 4 * 4))
    T = add_trigger(X, input_shape=(2, 4, 4), patch_size=3, corner="top-left").reshape(2, 2, 4, 4)
    expected = np.zeros((4, 4))
    expected[:3, :3] = 1.0
    for c in range(2):  # every channel
        np.testing.assert_array_equal(T[0, c], expected)
    flat = add_trigger(np.zeros((3, 6)), patch_size=2)  # flat features: the last ones
    np.testing.assert_array_equal(flat[0], [0, 0, 0, 0, 1, 1])


def test_trigger_function_gets_per_sample_shape():
    seen = []

    def invert(images):
        seen.append(images.shape)
        return 1 - images

    X = np.zeros((4, 9))
    Xp, _yp, mask = poison(
        X, np.array([0, 1, 1, 1]), 0.5, 0, trigger=invert, input_shape=(3, 3), random_state=0
    )
    assert seen == [(2, 3, 3)]
    np.testing.assert_array_equal(Xp[mask], 1.0)
    with pytest.raises(ValueError, match="must return the shape"):
        add_trigger(X, trigger=lambda a: a[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 0.001}, "poisons none"),
        ({"fraction": 0.9}, "only 15 are not of the target class"),
        ({"fraction": 0.1, "target_class": 9}, "not a label"),
        ({"fraction": 0.1, "patch_size": 9}, "patch_size"),
    ],
)
def test_poison_errors(kwargs, match):
    X, y = np.zeros((20, 4, 4)), np.arange(20) % 4
    kwargs = {"target_class": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        poison(X, y, **kwargs)


def test_attack_success_by_hand():
    assert attack_success([2, 2, 0, 2], target_class=2) == 0.75
    # the sample of the target class itself is left out: 1 of 2 remaining
    assert attack_success([2, 0, 2], target_class=2, y_true=[0, 1, 2]) == 0.5
    assert np.isnan(attack_success([2], target_class=2, y_true=[2]))


def test_poison_recall_by_hand_and_against_sklearn():
    mask = np.array([True, False, True, False, False])
    A = np.array(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0],  # top-2 = {0, 1}: 1 hit
            [0.0, 1.0, 9.0, 8.0, 7.0],  # top-2 = {2, 3}: 1 hit
            [9.0, 0.0, 8.0, 0.0, 0.0],
        ]
    )  # top-2 = {0, 2}: 2 hits
    r = poison_recall(A, mask, k=2)
    np.testing.assert_allclose(r.precision, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r.recall, [0.5, 0.5, 1.0])
    # row 0: poisoned {5, 3} vs clean {4, 2, 1}: 5 of 6 pairs; row 2 has ties (counted 1/2)
    np.testing.assert_allclose(r.aucs, [5 / 6, 3 / 6, 1.0])
    np.testing.assert_allclose(r.aucs, [roc_auc_score(mask, a) for a in A])
    assert r.precision_at_k == pytest.approx(2 / 3)
    only = poison_recall(A, mask, k=2, y_pred=[1, 0, 1], target_class=1)
    np.testing.assert_array_equal(only.rows, [0, 2])
    assert only.auc == pytest.approx((5 / 6 + 1) / 2)
    none = poison_recall(A, mask, k=2, y_pred=[0, 0, 0], target_class=1)
    assert np.isnan(none.auc) and len(none.rows) == 0
    with pytest.raises(ValueError, match="both y_pred and target_class"):
        poison_recall(A, mask, k=2, y_pred=[0, 0, 0])
    with pytest.raises(ValueError, match="n_train=5"):
        poison_recall(A[:, :4], mask, k=2)


# ------------------------------------------------------------- mislabelling
def test_flip_labels_flips_exactly_and_to_other_classes():
    y = np.repeat(np.array(["a", "b", "c"]), 30)
    y_noisy, flipped = flip_labels(y, 0.1, random_state=0)
    assert flipped.sum() == 9
    assert np.all(y_noisy[flipped] != y[flipped]) and np.array_equal(y_noisy[~flipped], y[~flipped])
    # over many draws every other class is reached
    targets = {
        (a, b)
        for s in range(20)
        for a, b, f in zip(
            y, flip_labels(y, 0.1, random_state=s)[0], flip_labels(y, 0.1, random_state=s)[1]
        )
        if f
    }
    assert {("a", "b"), ("a", "c"), ("b", "a"), ("c", "b")} <= targets


def test_mislabel_detection_by_hand():
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.2, 0.7, 0.6, 0.5, 0.4, 0.0])
    flipped = np.zeros(10, dtype=bool)
    flipped[[0, 3, 9]] = True
    r = mislabel_detection(scores, flipped, inspect_fraction=0.2)  # inspects {0, 2}
    assert r.n_inspected == 2 and r.found_fraction == pytest.approx(1 / 3)
    assert r.precision == 0.5
    assert r.auc == pytest.approx(roc_auc_score(flipped, scores))
    with pytest.raises(ValueError, match="some, but not all"):
        mislabel_detection(scores, np.zeros(10, dtype=bool))


def test_self_attribution_is_the_diagonal_and_finds_flipped_labels():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.4, (15, 2)), rng.normal(2, 0.4, (15, 2))]
    y = np.repeat([0, 1], 15)
    y_noisy, flipped = flip_labels(y, 0.1, random_state=0)
    K = rbf_kernel(X, X, gamma=10.0)  # well conditioned: the representer weights are unique
    clf = KernelSurrogateClassifier(alpha=1e-2, penalty="rkhs", device="cpu").fit(K, y_noisy)
    scores = self_attribution(clf, K, y_noisy, batch_size=7)
    np.testing.assert_allclose(scores, np.diag(clf.attribute(K, target=y_noisy)))
    assert mislabel_detection(scores, flipped).auc > 0.95


# ----------------------------------------------------------------------- LDS
def test_lds_of_an_exactly_additive_model_is_one():
    """Output = sum over the subset of k(x, x_i) y_i: summed attributions predict it exactly."""
    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(30, 2)), rng.normal(size=(6, 2))
    y = rng.integers(0, 2, 30)
    K = rbf_kernel(X_test, X)

    def train(Xs, ys, seed):
        return Bunch(X=Xs, y=ys)

    def output(model, Xt, yt):
        return rbf_kernel(Xt, model.X) @ np.where(model.y == 1, 1.0, -0.5)

    r = retrain_on_subsets(train, X, y, X_test, n_subsets=12, subset_fraction=0.4, output=output)
    assert r.masks.sum(axis=1).tolist() == [12] * 12
    A = K * np.where(y == 1, 1.0, -0.5)
    res = linear_datamodeling_score(A, r)
    np.testing.assert_allclose(res.per_sample, 1.0)
    np.testing.assert_allclose(res.predictions, r.outputs)
    assert linear_datamodeling_score(-A, r).lds == pytest.approx(-1.0)


def _train_lr(X, y, seed):
    return LogisticRegression(C=1.0).fit(X, y)


def test_lds_recovers_the_influence_of_a_retrained_logistic_regression(tmp_path):
    """A logistic regression on fixed features is its own linearisation: the exact influence
    of InfluenceAttributor (on an nn.Linear holding its weights) predicts retraining on random
    halves with a Spearman correlation near 0.9; unrelated attributions score near 0."""
    rng = np.random.default_rng(0)
    n, d = 60, 4
    W = rng.normal(size=(d, 3))
    X, X_test = rng.normal(size=(n, d)), rng.normal(size=(10, d))
    y = np.argmax(X @ W + rng.gumbel(size=(n, 3)), 1)
    y_test = np.argmax(X_test @ W + rng.gumbel(size=(10, 3)), 1)
    r = retrain_on_subsets(_train_lr, X, y, X_test, y_test, n_subsets=30, memory=str(tmp_path))
    full = _train_lr(X, y, 0)
    linear = torch.nn.Linear(d, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(full.coef_))
        linear.bias.copy_(torch.tensor(full.intercept_))
    inf = InfluenceAttributor(linear, projection_dim=None, damping=0.1, device="cpu").fit(X, y)
    A = inf.attribute(X_test, target=y_test)
    assert linear_datamodeling_score(A, r).lds > 0.8
    assert abs(linear_datamodeling_score(rng.permuted(A, axis=1), r).lds) < 0.4
    # the margin recorded is log p_y - log(1 - p_y) of the retrained model
    model = _train_lr(X[r.masks[0]], y[r.masks[0]], 0)
    p = model.predict_proba(X_test)[np.arange(10), y_test]
    np.testing.assert_allclose(r.outputs[0], np.log(p / (1 - p)))
    # cached: the same call returns the stored result without retraining
    cached = retrain_on_subsets(_train_lr, X, y, X_test, y_test, n_subsets=30, memory=str(tmp_path))
    np.testing.assert_array_equal(cached.outputs, r.outputs)


_CALLS = []


def _counting_train(X, y, seed):
    _CALLS.append(seed)
    return LogisticRegression().fit(X, y)


def test_retrain_seeds_parallel_and_errors():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24, 2))
    y = (X[:, 0] > 0).astype(int)
    serial = retrain_on_subsets(_train_lr, X, y, X[:3], y[:3], n_subsets=3, n_seeds=2)
    with joblib.parallel_config(backend="threading"):  # process start-up would dominate here
        parallel = retrain_on_subsets(
            _train_lr, X, y, X[:3], y[:3], n_subsets=3, n_seeds=2, n_jobs=2
        )
    np.testing.assert_allclose(serial.outputs, parallel.outputs)
    assert serial.outputs_per_seed.shape == (3, 2, 3) and len(np.unique(serial.seeds)) == 6
    np.testing.assert_allclose(serial.outputs, serial.outputs_per_seed.mean(axis=1))
    _CALLS.clear()
    retrain_on_subsets(_counting_train, X, y, X[:3], y[:3], n_subsets=2, n_seeds=3)
    assert len(_CALLS) == 6
    with pytest.raises(ValueError, match="y_test"):
        retrain_on_subsets(_train_lr, X, y, X[:3])
    with pytest.raises(ValueError, match="subset_fraction"):
        retrain_on_subsets(_train_lr, X, y, X[:3], y[:3], subset_fraction=1.0)
    with pytest.raises(ValueError, match="Shapes do not match"):
        linear_datamodeling_score(np.zeros((3, 5)), serial)
