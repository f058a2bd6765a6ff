"""Hard edges: every bad input gets a clear error (or warning) naming the problem and the fix."""

import re

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression, Ridge
from torch import nn

from sknn_kernels import (
    EmbeddingExtractor,
    KernelSurrogateClassifier,
    KernelSurrogateRegressor,
    NTKFeaturizer,
    PCAProbe,
)
from sknn_kernels.metrics import (
    accuracy_difference,
    kendall_faithfulness,
    kendall_outputs,
    logit_r2,
    make_faithfulness_scorer,
    make_regression_faithfulness_scorer,
    network_proba,
    relative_test_loss,
)


class NaNRows(nn.Module):
    """Finite everywhere except the samples with ``x[:, 0] < 0`` (square root of a negative)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)  # never called in forward

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)) * torch.sqrt(x[:, :1]))


class NaNGradient(nn.Module):
    """Finite outputs; the gradient of ``scale`` is NaN where ``x[:, 0] == 0``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.scale = nn.Parameter(torch.ones(1))
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(x) * torch.sqrt(self.scale * x[:, :1] ** 2)


def _inputs():
    X = np.abs(np.random.default_rng(0).normal(size=(10, 3))) + 0.1
    X_bad = X.copy()
    X_bad[[2, 7], 0] = -1.0
    return X, X_bad


Y10 = np.arange(10) % 2
NON_FINITE = re.escape("not finite (NaN or infinity) for 2 sample(s), first at indices [2, 7]")


# ------------------------------------------------------------------ non-finite networks
@pytest.mark.parametrize(
    "compute",
    [
        lambda X: NTKFeaturizer(NaNRows(), kernel="pntk", device="cpu").fit_transform(X),
        lambda X: NTKFeaturizer(NaNRows(), kernel="trace", device="cpu").fit_transform(X),
        lambda X: NTKFeaturizer(NaNRows(), projection_dim=4, device="cpu").fit_transform(X),
        lambda X: NTKFeaturizer(NaNRows(), kernel="loss_grad", device="cpu").fit(X, Y10),
        lambda X: NTKFeaturizer(NaNRows(), kernel="ck", device="cpu").fit_transform(X),
        lambda X: NTKFeaturizer(NaNRows(), kernel="embedding", device="cpu").fit_transform(X),
        lambda X: EmbeddingExtractor(NaNRows(), device="cpu").fit_transform(X),
        lambda X: EmbeddingExtractor(NaNRows(), layers="out", device="cpu").fit_transform(X),
        lambda X: network_proba(NaNRows(), X, device="cpu"),
    ],
    ids=["pntk", "trace", "projected", "loss_grad", "ck", "embedding", "emb", "emb-out", "proba"],
)
def test_non_finite_outputs_name_the_samples(compute):
    _, X_bad = _inputs()
    with pytest.raises(ValueError, match=NON_FINITE):
        compute(X_bad)


def test_non_finite_outputs_at_transform_name_the_samples():
    X, X_bad = _inputs()
    for kernel in ("pntk", "ck"):
        featurizer = NTKFeaturizer(NaNRows(), kernel=kernel, device="cpu").fit(X)
        with pytest.raises(ValueError, match=NON_FINITE):
            featurizer.transform(X_bad)


def test_non_finite_gradients_name_the_samples():
    X, _ = _inputs()
    X[3, 0] = 0.0  # finite output, NaN gradient
    assert np.isfinite(network_proba(NaNGradient(), X, device="cpu")).all()
    with pytest.raises(
        ValueError, match=r"per-sample gradients.*not finite.* 1 sample\(s\).*indices \[3\]"
    ):
        NTKFeaturizer(NaNGradient(), device="cpu").fit_transform(X)


# ------------------------------------------------------------------ metrics
P_OK = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
Y4 = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (P_OK * 0.9, "must sum to 1; 4 do not"),
        (np.log(P_OK), "outside \\[0, 1\\].*not logits"),
        (np.where(np.eye(4, 2) == 1, np.nan, P_OK), "NaN"),
        (P_OK[:3], "inconsistent numbers of samples"),
        (P_OK[:, :, None], "must be \\(n_samples, n_classes\\)"),
    ],
    ids=["sum", "range", "nan", "length", "ndim"],
)
@pytest.mark.parametrize("metric", [kendall_faithfulness, logit_r2])
def test_metrics_reject_what_is_not_probabilities(metric, bad, match):
    with pytest.raises(ValueError, match=match):
        metric(Y4, P_OK, bad)
    with pytest.raises(ValueError, match=match):
        metric(Y4, bad, P_OK)


@pytest.mark.parametrize(
    ("p", "kwargs", "why"),
    [
        (np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), {}, "saturated"),
        (P_OK[:1], {}, "1 point\\(s\\) left of 1; it needs at least 2"),
        (np.tile([[0.5, 0.5]], (4, 1)), {}, "same probability"),
    ],
    ids=["all-saturated", "one-point", "constant"],
)
def test_undefined_tau_warns_why(p, kwargs, why):
    with pytest.warns(UndefinedMetricWarning, match=why):
        assert np.isnan(kendall_faithfulness(Y4[: len(p)], p, p, labels=[0, 1], **kwargs))
    with pytest.warns(UndefinedMetricWarning, match=why):
        assert np.isnan(logit_r2(Y4[: len(p)], p, p, labels=[0, 1]))


def test_undefined_regression_tau_warns_why():
    with pytest.warns(UndefinedMetricWarning, match="at least 2"):
        assert np.isnan(kendall_outputs([1.0], [2.0]))
    with pytest.warns(UndefinedMetricWarning, match=re.escape("output(s) [1]") + ".*constant"):
        kendall_outputs([[1.0, 1.0], [2.0, 1.0]], [[1.0, 3.0], [2.0, 4.0]])


def test_scorers_do_not_let_nan_vanish_into_a_cv_mean():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(int)
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    scorer = make_faithfulness_scorer(net, device="cpu")
    clf = LogisticRegression().fit(X, y)
    assert np.isfinite(scorer(clf, X, y))
    with pytest.warns(UndefinedMetricWarning, match="cross-validation mean.*NaN") as record:
        assert np.isnan(scorer(clf, X[:1], y[:1]))
    assert len(record) == 1 and "1 point(s)" in str(record[0].message)  # one warning, with why
    reg_net = nn.Linear(3, 1)
    reg_scorer = make_regression_faithfulness_scorer(reg_net, metric="kendall", device="cpu")
    with pytest.warns(UndefinedMetricWarning, match="cross-validation mean"):
        assert np.isnan(reg_scorer(Ridge().fit(X, y), X[:1], y[:1]))


# ------------------------------------------------------------------ labels and weights
@pytest.mark.parametrize(
    "estimator",
    [KernelSurrogateClassifier(device="cpu"), KernelSurrogateRegressor(device="cpu")],
    ids=["classifier", "regressor"],
)
def test_negative_sample_weight_rejected(estimator):
    X = np.random.default_rng(0).normal(size=(8, 3))
    K = X @ X.T
    weights = np.ones(8)
    weights[3] = -1.0
    with pytest.raises(ValueError, match="Negative values in data passed to"):
        estimator.fit(K, np.arange(8) % 2, sample_weight=weights)


@pytest.mark.parametrize(
    "metric",
    [
        lambda w: accuracy_difference([0, 1, 1], [0, 1, 0], [0, 1, 1], sample_weight=w),
        lambda w: relative_test_loss(
            [0.0, 1.0, 2.0], [0.0, 1.0, 1.0], [0.0, 2.0, 2.0], sample_weight=w
        ),
    ],
    ids=["accuracy_difference", "relative_test_loss"],
)
def test_negative_sample_weight_rejected_by_metrics(metric):
    assert np.isfinite(metric([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="Negative values in data passed to"):
        metric([1.0, -1.0, 1.0])


@pytest.mark.parametrize("labels", [np.array(list("ababababab")), np.full(10, 0.5)])
def test_loss_grad_labels_must_be_class_indices(labels):
    X, _ = _inputs()
    with pytest.raises(ValueError, match="class indices 0..C-1.*LabelEncoder"):
        NTKFeaturizer(NaNRows(), kernel="loss_grad", device="cpu").fit(X, labels)


# ------------------------------------------------------------------ layers
@pytest.mark.parametrize(
    "make",
    [
        lambda layers: NTKFeaturizer(NaNRows(), kernel="pntk", layers=layers, device="cpu"),
        lambda layers: NTKFeaturizer(NaNRows(), kernel="ck", layers=layers, device="cpu"),
        lambda layers: NTKFeaturizer(NaNRows(), kernel="embedding", layers=layers, device="cpu"),
        lambda layers: EmbeddingExtractor(NaNRows(), layers=layers, device="cpu"),
        lambda layers: PCAProbe(NaNRows(), layers=layers, cv=2, device="cpu"),
    ],
    ids=["pntk", "ck", "embedding", "extractor", "probe"],
)
def test_empty_and_uncalled_layers(make):
    X, _ = _inputs()
    with pytest.raises(ValueError, match="`layers` is empty: name at least one layer"):
        make([]).fit(X, Y10)
    with pytest.raises(ValueError, match="'unused'.* not called in the forward pass"):
        make(["unused"]).fit(X, Y10)


# ------------------------------------------------------------------ input shape
def test_input_shape_hint_only_when_the_shape_is_the_problem():
    mlp = make_mlp(n_in=8)
    with pytest.raises(ValueError, match="expects 8 features, got 5") as info:
        NTKFeaturizer(mlp, device="cpu").fit(np.ones((4, 5)))
    assert "input_shape" not in str(info.value)
    with pytest.raises(ValueError, match="expects 4-D batches.*Pass input_shape=\\(C, H, W\\)"):
        EmbeddingExtractor(make_cnn_bn(), device="cpu").fit(np.ones((4, 64)))


@pytest.mark.parametrize(
    ("budget", "match"),
    [("plenty", r"memory_budget='plenty' is not a size.*'4GiB'"), (0, "at least one byte")],
)
def test_memory_budget_that_is_not_a_size(budget, match):
    from sknn_kernels.ntk import empirical_ntk

    with pytest.raises(ValueError, match=match):
        empirical_ntk(make_mlp(), torch.randn(3, 5), device="cpu", memory_budget=budget)


def test_one_byte_memory_budget_still_gives_the_kernel():
    """The smallest budget plans one-sample blocks, recomputed for every tile: same kernel."""
    from sknn_kernels.ntk import empirical_ntk

    net, X = make_cnn_bn(), torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    base = empirical_ntk(net, X, dtype="float64", device="cpu")
    K = empirical_ntk(net, X, dtype="float64", device="cpu", memory_budget=1)
    np.testing.assert_allclose(K, base, rtol=1e-12, atol=1e-12)


def test_stored_kernel_whose_file_is_unreadable_is_refused(tmp_path):
    from sknn_kernels.ntk import empirical_ntk

    path = str(tmp_path / "K.npy")
    net, X = make_mlp(), torch.randn(6, 5)
    empirical_ntk(net, X, device="cpu", out=path)
    with open(path, "wb") as fh:
        fh.write(b"not an array")
    with pytest.raises(ValueError, match=r"K\.npy' is not a readable \.npy file.*delete"):
        empirical_ntk(net, X, device="cpu", out=path)


@pytest.mark.parametrize(
    "y", [["a", "b", "c", "d"], np.array(["1.5", "x", "2", "3"], dtype=object)]
)
def test_regressor_needs_numeric_targets(y):
    from sknn_kernels import KernelSurrogateRegressor

    with pytest.raises(ValueError, match="needs numeric targets.*KernelSurrogateClassifier"):
        KernelSurrogateRegressor(device="cpu").fit(np.eye(4), y)
    # numbers held in an object array are numbers
    KernelSurrogateRegressor(device="cpu").fit(np.eye(4), np.array([1, 2.5, 3, 4], dtype=object))
