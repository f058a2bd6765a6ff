"""compare_surrogates plumbing, and the NTKFeaturizer -> surrogate pipeline end to end."""

import joblib
import numpy as np
import pytest
from _nets import make_mlp
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline

from sknn_kernels.app.compare import KERNELS, compare_surrogates, make_surrogate_pipeline
from sknn_kernels.features.featurizer import NTKFeaturizer
from sknn_kernels.metrics import make_faithfulness_scorer
from sknn_kernels.metrics._faithfulness import network_proba
from sknn_kernels.surrogates.surrogate import KernelSurrogateClassifier


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
        for m in (
            "accuracy",
            "tau",
            "tad",
            "network_accuracy",
            "kernel_time",
            "fit_time",
            "score_time",
        )
        for s in ("mean", "std")
    ]
    assert list(table) == names + ["tau_folds", "convergence_warnings"]
    # one results format: a dict of equal-length arrays, like cv_results_
    assert all(isinstance(v, np.ndarray) and len(v) == 10 for v in table.values())
    assert table["kernel"].tolist() == ["pntk"] * 5 + ["ck"] * 5
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


def test_results_equal_cross_validated_pipelines(data):
    """The shared fold kernels give what cross_validate gives on each Pipeline."""
    X, y, net = data
    estimators = ("kglm", "kglm-logits", "knn", "svc")
    table = compare_surrogates(
        net,
        X,
        y,
        kernels=("pntk",),
        estimators=estimators,
        cv=KFold(3),
        random_state=0,
        featurizer_params={"device": "cpu"},
    )
    scoring = {"accuracy": "accuracy", "tau": make_faithfulness_scorer(net, device="cpu")}
    for i, name in enumerate(estimators):
        pipe = make_surrogate_pipeline(net, "pntk", name, random_state=0, device="cpu")
        params = {"estimator__network_X": X} if name == "kglm-logits" else None
        ref = cross_validate(pipe, X, y, cv=KFold(3), scoring=scoring, params=params)
        assert table["accuracy_mean"][i] == pytest.approx(ref["test_accuracy"].mean(), abs=1e-12)
        assert table["tau_mean"][i] == pytest.approx(np.nanmean(ref["test_tau"]), abs=1e-12)


def test_each_kernel_is_computed_once_per_fold_and_cached(data, tmp_path, monkeypatch):
    X, y, net = data
    calls = []
    original = NTKFeaturizer.fit_transform

    def counted(self, X, y=None):
        calls.append(self.kernel)
        return original(self, X, y)

    monkeypatch.setattr(NTKFeaturizer, "fit_transform", counted)
    options = {
        "kernels": ("pntk", "ck"),
        "cv": KFold(3),
        "random_state": 0,
        "featurizer_params": {"device": "cpu"},
    }
    first = compare_surrogates(net, X, y, memory=tmp_path / "cache", **options)
    assert sorted(calls) == ["ck"] * 3 + ["pntk"] * 3  # 5 estimators, one kernel per fold
    calls.clear()
    again = compare_surrogates(net, X, y, memory=str(tmp_path / "cache"), **options)
    assert calls == []  # every fold kernel read back from the cache
    for key in ("accuracy_mean", "tau_mean", "tad_mean"):
        np.testing.assert_array_equal(again[key], first[key])
    changed = make_mlp(n_in=5, n_out=3, seed=1)  # other weights: another fingerprint
    compare_surrogates(changed, X, y, memory=joblib.Memory(tmp_path / "cache"), **options)
    assert len(calls) == 6


def test_convergence_warnings_are_counted_not_shown(data, recwarn):
    X, y, net = data
    stopped = KernelSurrogateClassifier(max_iter=1, tol=1e-12)
    table = compare_surrogates(
        net,
        X,
        y,
        kernels=("ck",),
        cv=3,
        estimators={
            "kglm": (KernelSurrogateClassifier(), "kernel"),
            "stopped": (stopped, "kernel"),
        },
        featurizer_params={"device": "cpu"},
    )
    assert table["convergence_warnings"].tolist() == [0, 3]
    assert not [w for w in recwarn if "L-BFGS" in str(w.message)]


def test_kernel_parameters_one_route(data):
    X, y, net = data
    options = {"cv": KFold(2), "estimators": ("ncc",), "featurizer_params": {"device": "cpu"}}
    per_kernel = compare_surrogates(
        net, X, y, kernels={"ck": {"layers": "1"}, "pntk": {}}, **options
    )
    assert per_kernel["kernel"].tolist() == ["ck", "pntk"]
    with pytest.warns(FutureWarning, match="kernels=\\{name: params\\}"):
        old = compare_surrogates(
            net, X, y, kernels=("ck", "pntk"), kernel_params={"ck": {"layers": "1"}}, **options
        )
    np.testing.assert_array_equal(old["accuracy_mean"], per_kernel["accuracy_mean"])
    with pytest.raises(ValueError, match="Unknown kernels \\['ntk'\\]; choose from .*proj-pntk"):
        compare_surrogates(net, X, y, kernels=("ntk",), **options)
    assert "proj-pntk" in KERNELS and "ck0" in KERNELS


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
    assert table["estimator"].tolist() == ["kglm-ovr"]
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
    assert len(table["kernel"]) == 20
    assert np.all(np.isfinite(table["accuracy_mean"]))


def test_summary_skips_folds_where_tau_is_undefined():
    from sknn_kernels.app.compare import _METRICS, _summarise

    res = {metric: np.array([0.5, 0.7, 0.9]) for metric in _METRICS}
    res["tau"] = np.array([0.2, np.nan, 0.4])
    row = _summarise(res)
    assert row["tau_folds"] == 2
    assert row["tau_mean"] == pytest.approx(0.3) and row["tau_std"] == pytest.approx(0.1)
    assert row["accuracy_mean"] == pytest.approx(0.7)
    res["tau"][:] = np.nan
    assert np.isnan(_summarise(res)["tau_mean"]) and _summarise(res)["tau_folds"] == 0
