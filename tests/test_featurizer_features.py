"""NTKFeaturizer(output="features"): the features whose Gram matrix is the kernel, for primal fits."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sknn_kernels import KernelSurrogateClassifier, NTKFeaturizer
from tests._nets import make_mlp

OPTIONS = [
    {"kernel": "pntk", "projection_dim": 32, "random_state": 0},
    {"kernel": "trace", "projection_dim": 16, "random_state": 0},
    {"kernel": "ck"},
    {"kernel": "embedding"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o["kernel"])
@pytest.mark.parametrize("normalize", ["cosine", None])
def test_features_are_the_kernel_factors(rng, options, normalize):
    X = rng.normal(size=(30, 8))
    X_new = rng.normal(size=(7, 8))
    net = make_mlp(8, n_out=3)
    common = {"device": "cpu", "dtype": "float64", "normalize": normalize, **options}
    kern = NTKFeaturizer(net, **common).fit(X)
    feat = NTKFeaturizer(net, output="features", **common)
    F = feat.fit_transform(X)
    F_new = feat.transform(X_new)
    assert F.shape[0] == 30 and F.shape[1] == F_new.shape[1] == feat.get_feature_names_out().size
    np.testing.assert_allclose(F @ F.T, kern.transform(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F_new @ F.T, kern.transform(X_new), rtol=1e-10, atol=1e-12)


def test_features_need_explicit_features(rng):
    X = rng.normal(size=(10, 8))
    with pytest.raises(ValueError, match="needs a kernel of explicit features"):
        NTKFeaturizer(make_mlp(8, n_out=3), output="features", device="cpu").fit(X)
    with pytest.raises(ValueError, match="normalize='std'"):
        NTKFeaturizer(
            make_mlp(8, n_out=3), kernel="ck", output="features", normalize="std", device="cpu"
        ).fit(X)


def test_pipeline_on_features_equals_pipeline_on_the_kernel(rng):
    """The same kGLM, fitted in feature space or on K = Φ Φᵀ, inside a grid search over alpha."""
    X = rng.normal(size=(60, 8))
    y = np.arange(60) % 3
    net = make_mlp(8, n_out=3)
    opts = {"kernel": "pntk", "projection_dim": 16, "random_state": 0, "device": "cpu"}
    opts["dtype"] = "float64"
    on_features = make_pipeline(
        NTKFeaturizer(net, output="features", **opts),
        KernelSurrogateClassifier(kernel="linear", penalty="rkhs", device="cpu"),
    )
    on_kernel = make_pipeline(
        NTKFeaturizer(net, **opts),
        KernelSurrogateClassifier(kernel="precomputed", penalty="rkhs", device="cpu"),
    )
    grid = {"kernelsurrogateclassifier__alpha": [1e-2, 1e-1]}
    a = GridSearchCV(on_features, grid, cv=2).fit(X, y)
    b = GridSearchCV(on_kernel, grid, cv=2).fit(X, y)
    assert a.best_params_ == b.best_params_
    # the two L-BFGS runs stop within their default tolerance of the same optimum
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=2e-4, atol=1e-6)
