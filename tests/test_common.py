"""sklearn's estimator checks over every public estimator (tiny networks, CPU, float64)."""

from _nets import make_any_width_net
from sklearn.base import clone
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from sknn_kernels import (
    EmbeddingExtractor,
    KernelKNeighborsClassifier,
    KernelNearestCentroid,
    KernelSurrogateClassifier,
    KernelSurrogateRegressor,
    NTKFeaturizer,
    PCAProbe,
)
from sknn_kernels.attribution.influence import InfluenceAttributor

# joblib.hash pickles torch tensors with their storage *address*, so a deepcopy of an
# unchanged network hashes differently and this check fails for any estimator holding a
# torch module. Non-mutation is tested directly instead (test_network.py: parameters,
# buffers and training flag bit-identical after fit/transform).
_TORCH_PARAM_XFAIL = {
    "check_estimators_overwrite_params": "joblib.hash of torch tensors is address-based; "
    "non-mutation is tested in test_network.py",
}


def _tested_estimators():
    net = make_any_width_net()
    # float64 on the CPU: the checks compare batch vs full outputs to 1e-7..1e-9.
    yield EmbeddingExtractor(net, device="cpu", dtype="float64")
    yield EmbeddingExtractor(
        net, layers="all", pooling="avg", device="cpu", dtype="float64", batch_size=3
    )
    yield EmbeddingExtractor(net, layers=["1", "3"], device="cpu", dtype="float32")
    yield NTKFeaturizer(net, device="cpu", dtype="float64")
    yield NTKFeaturizer(
        net,
        kernel="trace",
        normalize="cosine",
        output="distance",
        device="cpu",
        dtype="float64",
        batch_size=3,
        block_size=4,
    )
    yield NTKFeaturizer(net, kernel="ck", normalize="std", device="cpu", dtype="float64")
    yield NTKFeaturizer(net, projection_dim=8, random_state=0, device="cpu", dtype="float64")
    yield NTKFeaturizer(net, kernel="embedding", normalize="cosine", device="cpu", dtype="float32")
    # PCAProbe on named layers (the default layer, a tanh before the last Linear, saturates to a
    # constant on the checks' X ~ N(100, 1), which the probe rejects as a clear error)
    yield PCAProbe(net, layers=["1"], dtype="float64", device="cpu", cv=2, probe_components=(1, 2))
    yield PCAProbe(
        net,
        layers=["0", "1"],
        n_components=2,
        probes=("ncc", "linear"),
        dtype="float32",
        device="cpu",
        cv=2,
        probe_components=(1,),
        batch_size=3,
    )
    # estimators on kernels: precomputed (pairwise) and built-in kernels
    yield KernelSurrogateClassifier(device="cpu")
    yield KernelSurrogateClassifier(kernel="rbf", device="cpu")
    yield KernelSurrogateClassifier(
        kernel="linear", multi_class="ovr", penalty="rkhs", device="cpu"
    )
    # kernel="linear" with n > n_features solves on the features (surrogates/_primal.py)
    yield KernelSurrogateClassifier(kernel="linear", device="cpu")
    yield KernelSurrogateRegressor(device="cpu")
    yield KernelSurrogateRegressor(kernel="linear", alpha=1e-2, device="cpu")
    yield KernelSurrogateRegressor(kernel="rbf", fit_intercept=False, device="cpu")
    yield KernelSurrogateRegressor(kernel="linear", solver="cg", alpha=1e-2, device="cpu")
    # the networks' 4 outputs score labels 0..3 (the checks' y take two to four of them)
    kw = {"classes": [0, 1, 2, 3], "device": "cpu", "dtype": "float64"}
    four = [make_any_width_net(n_outputs=4, seed=seed) for seed in (0, 1)]
    yield InfluenceAttributor(four[0], projection_dim=8, random_state=0, **kw)
    yield InfluenceAttributor(four, projection_dim=None, **kw)
    yield KernelNearestCentroid()
    yield KernelNearestCentroid(kernel="linear")
    yield KernelKNeighborsClassifier()
    yield KernelKNeighborsClassifier(metric="precomputed", weights="distance")
    yield KernelKNeighborsClassifier(kernel="rbf", weights="distance")
    yield KernelKNeighborsClassifier(kernel="linear")


def _expected_failed_checks(estimator):
    failures = {}
    if getattr(estimator, "network", None) is not None:
        failures.update(_TORCH_PARAM_XFAIL)
        if estimator.dtype == "float32":
            # Not strict: it passes or fails with the BLAS build and the CPU.
            failures["check_methods_sample_order_invariance"] = (
                "float32 GEMM rounding depends on a row's position in the batch (BLAS blocking "
                "of the remainder rows): outputs agree to ~1e-6 relative, not the check's 1e-7; "
                "the float64 instances pass it"
            )
    if getattr(estimator, "kernel", None) == "precomputed" and not hasattr(
        estimator, "n_neighbors"
    ):
        # The check feeds raw features, not a kernel, to a pairwise estimator (non-square X).
        failures["check_decision_proba_consistency"] = "passes non-square X to a pairwise estimator"
    if isinstance(estimator, KernelSurrogateClassifier) and estimator.kernel != "precomputed":
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "duplicating a row also duplicates a kernel column (a new coefficient), so weights "
            "and repetitions differ under the l2 penalty; under 'rkhs' they agree only to the "
            "solver tolerance, not 1e-7"
        )
    return failures


@parametrize_with_checks(list(_tested_estimators()), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_declared_tags():
    """The tags say what each estimator honours: N-D and dict inputs, kernels, targets."""
    net = make_any_width_net()
    for est in (EmbeddingExtractor(net), NTKFeaturizer(net), PCAProbe(net)):
        inputs = get_tags(est).input_tags
        assert inputs.two_d_array and inputs.three_d_array and inputs.dict
        assert not inputs.allow_nan and not inputs.pairwise
    for est in (KernelSurrogateClassifier(), KernelNearestCentroid(), KernelSurrogateRegressor()):
        assert get_tags(est).input_tags.pairwise
        assert not get_tags(clone(est).set_params(kernel="rbf")).input_tags.pairwise
    distances = get_tags(KernelKNeighborsClassifier(metric="precomputed")).input_tags
    assert distances.pairwise and distances.positive_only
    assert get_tags(KernelSurrogateRegressor()).target_tags.required
    assert not get_tags(KernelSurrogateRegressor(target="network")).target_tags.required
    assert get_tags(NTKFeaturizer(net, kernel="loss_grad")).target_tags.required


def test_private_sklearn_apis():
    """The private sklearn names the package imports are exactly those pyproject's bound names."""
    import re
    from pathlib import Path

    import sknn_kernels

    found = set()
    for path in Path(sknn_kernels.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for module, names in re.findall(r"from (sklearn[\w.]*) import (\([^)]*\)|.*)", text):
            private_module = any(part.startswith("_") for part in module.split("."))
            for name in re.findall(r"\w+", names):
                if private_module or name.startswith("_"):
                    found.add(module if private_module else f"{module}.{name}")
    assert found == {
        "sklearn.base._fit_context",
        "sklearn.utils._param_validation",
        "sklearn.utils.validation._check_sample_weight",
    }
