"""sklearn's estimator checks over every public estimator (tiny networks, CPU, float64)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import make_any_width_net
from sknn_kernels import EmbeddingExtractor

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
    yield EmbeddingExtractor(net, layers="all", pooling="avg", device="cpu", dtype="float64", batch_size=3)
    yield EmbeddingExtractor(net, layers=["1", "3"], device="cpu", dtype="float32")


def _expected_failed_checks(estimator):
    failures = {}
    if hasattr(estimator, "network"):
        failures.update(_TORCH_PARAM_XFAIL)
    return failures


@parametrize_with_checks(list(_tested_estimators()), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
