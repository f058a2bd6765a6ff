"""compare_surrogates plumbing, and the NTKFeaturizer -> surrogate pipeline end to end."""

import joblib
import numpy as np
import pytest
from _nets import make_mlp
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from sknn_kernels.compare import _table, compare_surrogates
from sknn_kernels.featurizer import NTKFeaturizer
from sknn_kernels.metrics import make_faithfulness_scorer
from sknn_kernels.metrics._faithfulness import network_proba
from sknn_kernels.surrogate import KernelSurrogateClassifier


@pytest.fixture
def data():
    X, y = make_classification(
        n_samples=90, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y, make_mlp(n_in=5, n_out=3)


# SVC(probability=True) is deprecated in sklearn 1.9; its calibrated replacement does
# not forward the pairwise tag, so precomputed kernels would be mis-sliced.
pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter:FutureWarning")


def test_compare_table(data):
    X, y, net = data
    table = compare_surrogates(
        net,
        X,
        y,
        kernels=("pntk", "ck"),
        cv=KFold(3),
        random_state=0,
        featurizer_params={"device": "cpu"},
    )
    names = ["kernel", "estimator"] + [
        f"{m}_{s}"
        for m in ("accuracy", "tau", "tad", "network_accuracy", "fit_time", "score_time")
        for s in ("mean", "std")
    ]
    assert list(table.columns) == names + ["tau_folds"]
    assert len(table) == 10  # kglm, kglm-logits, ncc, knn, svc per kernel
    net_acc = np.mean(
        [
            np.mean(network_proba(net, X[te], device="cpu").argmax(1) == y[te])
            for _, te in KFold(3).split(X)
        ]
    )
    np.testing.assert_allclose(
        np.asarray(table["network_accuracy_mean"], float), net_acc, atol=1e-12
    )
    tau = np.asarray(table["tau_mean"], float)
    assert np.all((tau >= -1) & (tau <= 1))
    assert np.all(np.asarray(table["fit_time_mean"], float) > 0)


def test_table_without_pandas(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    table = _table([{"kernel": "ck", "estimator": "knn", "tau_mean": 0.5}])
    assert table.dtype.names == ("kernel", "estimator", "tau_mean")
    assert table["tau_mean"][0] == 0.5 and table["kernel"][0] == "ck"


def test_compare_custom_estimators_and_errors(data):
    X, y, net = data
    table = compare_surrogates(
        net,
        X,
        y,
        kernels=("ck",),
        cv=3,
        estimators={"kglm-ovr": (KernelSurrogateClassifier(multi_class="ovr"), "kernel")},
    )
    assert list(table["estimator"]) == ["kglm-ovr"]
    with pytest.raises(ValueError, match="Unknown estimators"):
        compare_surrogates(net, X, y, estimators=("forest",))


def test_pipeline_grid_search_and_joblib_round_trip(data, tmp_path):
    X, y, net = data
    pipe = Pipeline(
        [
            ("ntk", NTKFeaturizer(net, normalize="cosine", device="cpu", dtype="float64")),
            ("clf", KernelSurrogateClassifier(device="cpu")),
        ]
    )
    grid = {"ntk__kernel": ["pntk", "ck"], "clf__alpha": [1e-4, 1e-2]}
    search = GridSearchCV(
        pipe, grid, cv=3, scoring=make_faithfulness_scorer(net, device="cpu")
    ).fit(X, y)
    assert np.isfinite(search.best_score_)
    path = tmp_path / "pipe.joblib"
    joblib.dump(search.best_estimator_, path)
    loaded = joblib.load(path)
    np.testing.assert_allclose(
        loaded.predict_proba(X[:10]), search.best_estimator_.predict_proba(X[:10])
    )
    A = loaded[-1].attribute(loaded[0].transform(X[:4]), target="all")
    np.testing.assert_allclose(
        A.sum(1) + loaded[-1].intercept_, loaded.decision_function(X[:4]), atol=1e-8
    )


def test_compare_all_kernels(data):
    X, y, net = data
    table = compare_surrogates(
        net,
        X,
        y,
        kernels=("pntk", "trntk", "ck", "embedding"),
        cv=3,
        random_state=0,
        featurizer_params={"device": "cpu"},
    )
    assert len(table) == 20
    assert np.all(np.isfinite(np.asarray(table["accuracy_mean"], float)))


def test_summary_skips_folds_where_tau_is_undefined():
    from sknn_kernels.compare import _METRICS, _summarise

    res = {metric: np.array([0.5, 0.7, 0.9]) for metric in _METRICS}
    res["tau"] = np.array([0.2, np.nan, 0.4])
    row = _summarise(res)
    assert row["tau_folds"] == 2
    assert row["tau_mean"] == pytest.approx(0.3) and row["tau_std"] == pytest.approx(0.1)
    assert row["accuracy_mean"] == pytest.approx(0.7)
    res["tau"][:] = np.nan
    assert np.isnan(_summarise(res)["tau_mean"]) and _summarise(res)["tau_folds"] == 0
