"""Label-dependent kernels with labels of any kind: compare_surrogates passes class indices."""

import numpy as np
import pytest
import torch
from _nets import make_mlp

from sknn_kernels.app._fold_kernels import FoldKernels, class_indices
from sknn_kernels.app.compare import compare_surrogates


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread (see conftest.one_torch_thread)."""


def _data(n=24):
    net = make_mlp(n_in=5, n_out=3)
    X = np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.as_tensor(X)).argmax(1).numpy()
    y[:3] = [0, 1, 2]  # every class present
    return net, X, y


def test_class_indices():
    assert class_indices(np.array(["b", "a", "b"])).tolist() == [1, 0, 1]
    assert class_indices(np.array([9, 2, 5]), classes=np.array([2, 5, 9])).tolist() == [2, 0, 1]
    assert class_indices(np.array(["x", "y"]), classes=np.array(["y", "x"])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"Labels \['c'\] are not among"):
        class_indices(np.array(["a", "c"]), classes=np.array(["a", "b"]))


def test_loss_grad_with_string_and_sparse_labels():
    """Regression: loss_grad failed on string labels ('needs y as class indices ... <U8')."""
    net, X, y = _data()
    kwargs = {
        "kernels": ("loss_grad", "proj-loss_grad"),
        "estimators": ("kglm",),
        "cv": 2,
        "featurizer_params": {"device": "cpu", "dtype": "float64"},
        "projection_dim": 16,
        "random_state": 0,
    }
    base = compare_surrogates(net, X, y, **kwargs)
    for labels in (np.array(["neg", "neu", "pos"])[y], np.array([2, 5, 9])[y]):
        res = compare_surrogates(net, X, labels, **kwargs)
        for key in ("accuracy_mean", "tau_mean", "tad_mean"):
            np.testing.assert_allclose(res[key], base[key], rtol=1e-10)


def test_refit_featurizer_takes_labels():
    """The report's refit path: FoldKernels.featurizer(...).fit(X, labels) of any kind."""
    net, X, y = _data()
    params = {"kernel": "loss_grad", "device": "cpu", "dtype": "float64"}
    labels = np.array(["neg", "neu", "pos"])[y]
    K = FoldKernels(net, None).featurizer(params).fit_transform(X, labels)
    K_ref = FoldKernels(net, None).featurizer(params).featurizer.fit_transform(X, y)
    np.testing.assert_array_equal(K, K_ref)
    K_fold, _ = FoldKernels(net, None, classes=np.array(["neg", "neu", "pos"]))(
        params, X[:6], labels[:6], X[6:]
    )
    np.testing.assert_allclose(K_fold, K_ref[:6, :6], rtol=1e-12)


def test_network_outputs_must_match_the_labels():
    """A 3-output network on 2-label data is refused before any kernel is computed."""
    net, X, y = _data()
    keep = y < 2
    with pytest.raises(ValueError, match=r"network has 3 outputs but y has 2 labels \[0, 1\]"):
        compare_surrogates(
            net,
            X[keep],
            y[keep],
            kernels=("loss_grad",),
            estimators=("kglm",),
            cv=2,
            featurizer_params={"device": "cpu"},
        )
