"""NTKFeaturizer: every kernel / normalisation / output against float64 references, sklearn use."""

import copy

import joblib
import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils import get_tags
from test_ntk_engine import reference

from sknn_kernels.features.featurizer import NTKFeaturizer

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.one_torch_thread)."""


GRADIENT = {"pntk": "pntk", "trace": "trace", "loss_grad": "loss_grad"}


def _xy(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)


def _activations(net, X, kernel):
    """Reference features of the MLP: input of the last Linear (ck) or every leaf's output."""
    net = copy.deepcopy(net).double().eval()
    h = torch.as_tensor(X, dtype=torch.float64)
    outs = []
    with torch.no_grad():
        for layer in net:
            outs.append(h if kernel == "ck" and layer is net[-1] else None)
            h = layer(h)
            outs[-1] = outs[-1] if kernel == "ck" else h
    feats = [o.numpy() for o in outs if o is not None]
    return np.concatenate(feats, axis=1)


def _reference(net, kernel, Xtr, ytr, Xte):
    """(K_train, K_test, diag_train, diag_test) unnormalised, in float64."""
    if kernel in GRADIENT:
        kind = GRADIENT[kernel]
        both = np.concatenate([Xtr, Xte])
        y = None if kernel != "loss_grad" else np.concatenate([ytr, np.zeros(len(Xte), int)])
        R = reference(net, torch.as_tensor(both), kind=kind, y1=y)
        n = len(Xtr)
        if kernel == "loss_grad":  # test side uses predicted labels
            R_te = reference(net, torch.as_tensor(Xtr), torch.as_tensor(Xte), kind, y1=ytr).T
            pred = net.double()(torch.as_tensor(Xte)).argmax(1).numpy()
            net.float()
            d_te = np.diag(reference(net, torch.as_tensor(Xte), kind=kind, y1=pred))
            return R[:n, :n], R_te, np.diag(R)[:n], d_te
        return R[:n, :n], R[n:, :n], np.diag(R)[:n], np.diag(R)[n:]
    F_tr, F_te = _activations(net, Xtr, kernel), _activations(net, Xte, kernel)
    return F_tr @ F_tr.T, F_te @ F_tr.T, (F_tr**2).sum(1), (F_te**2).sum(1)


def _finish(K, d_r, d_c, normalize, output, scale):
    if normalize == "cosine":
        K = K / np.sqrt(np.outer(d_r, d_c))
        d_r, d_c = np.ones_like(d_r), np.ones_like(d_c)
    elif normalize == "std":
        K, d_r, d_c = K / scale, d_r / scale, d_c / scale
    if output == "distance":
        K = np.sqrt(np.maximum(d_r[:, None] + d_c[None, :] - 2 * K, 0))
    return K


@pytest.mark.parametrize("kernel", ["pntk", "trace", "ck", "embedding", "loss_grad"])
@pytest.mark.parametrize("normalize", [None, "cosine", "std"])
@pytest.mark.parametrize("output", ["kernel", "distance"])
def test_matches_reference(kernel, normalize, output):
    net = make_mlp()
    Xtr, ytr = _xy(8)
    Xte, _ = _xy(5, seed=1)
    Ktr, Kte, dtr, dte = _reference(net, kernel, Xtr, ytr, Xte)
    scale = np.std(Ktr)
    ntk = NTKFeaturizer(
        net,
        kernel=kernel,
        normalize=normalize,
        output=output,
        dtype="float64",
        device="cpu",
        block_size=3,
        batch_size=2,
    )
    A = ntk.fit_transform(Xtr, ytr)
    B = ntk.transform(Xte)
    expected_tr = _finish(Ktr, dtr, dtr, normalize, output, scale)
    expected_te = _finish(Kte, dte, dtr, normalize, output, scale)
    assert A.dtype == B.dtype == np.float64
    atol = 1e-9 * np.abs(expected_tr).max()
    if output == "distance":  # sqrt of a difference: 1e-16 rounding there becomes ~1e-8
        atol = 1e-7 * max(1.0, np.abs(expected_tr).max())
    np.testing.assert_allclose(A, expected_tr, rtol=1e-9, atol=atol)
    np.testing.assert_allclose(B, expected_te, rtol=1e-9, atol=atol)
    if (
        kernel != "loss_grad"
    ):  # loss_grad's transform uses predicted labels, fit_transform true ones
        np.testing.assert_allclose(ntk.fit(Xtr, ytr).transform(Xtr), A, rtol=1e-9, atol=atol)
    if output == "distance":
        assert np.all(np.diag(A) == 0) and np.all(A >= 0)
    else:
        assert np.array_equal(A, A.T)
        eig = np.linalg.eigvalsh(A)
        assert eig.min() >= -1e-9 * eig.max()


@pytest.mark.parametrize("kernel", ["pntk", "trace", "ck", "embedding"])
def test_float32_and_cnn(kernel):
    net = make_cnn_bn()
    X = np.random.default_rng(0).normal(size=(10, 64)).astype(np.float32)
    ntk = NTKFeaturizer(net, kernel=kernel, normalize="cosine", input_shape=(1, 8, 8), device="cpu")
    K = ntk.fit_transform(X)
    assert K.dtype == np.float32
    K64 = (
        NTKFeaturizer(
            net,
            kernel=kernel,
            normalize="cosine",
            input_shape=(1, 8, 8),
            device="cpu",
            dtype="float64",
        )
        .fit(X)
        .transform(X[:4])
    )
    np.testing.assert_allclose(ntk.transform(X[:4]), K64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.diag(K), 1, rtol=1e-5)
    N = X.reshape(10, 1, 8, 8)
    K_nd = NTKFeaturizer(net, kernel=kernel, device="cpu", dtype="float64").fit(N).transform(N[:4])
    raw = NTKFeaturizer(net, kernel=kernel, device="cpu", dtype="float64", input_shape=(1, 8, 8))
    np.testing.assert_allclose(K_nd, raw.fit(X).transform(X[:4]), rtol=1e-12)


def test_cnn_ck_and_layers():
    net = make_cnn_bn().double().eval()
    X = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    x = torch.as_tensor(X)
    with torch.no_grad():
        h1 = torch.relu(net.bn(net.conv1(x)))
        h2 = torch.relu(net.conv2(h1)).flatten(1)
    ck = NTKFeaturizer(net, kernel="ck", device="cpu", dtype="float64").fit_transform(X)
    np.testing.assert_allclose(ck, (h2 @ h2.T).numpy(), rtol=1e-10)
    emb = NTKFeaturizer(
        net, kernel="embedding", layers=["bn", "fc:input"], device="cpu", dtype="float64"
    ).fit_transform(X)
    F = torch.cat([net.bn(net.conv1(x)).flatten(1), h2], 1).detach()
    np.testing.assert_allclose(emb, (F @ F.T).numpy(), rtol=1e-10)
    # layers restrict the NTK's parameters
    K = NTKFeaturizer(
        net, kernel="trace", layers=["fc"], device="cpu", dtype="float64"
    ).fit_transform(X)
    np.testing.assert_allclose(K, reference(net, x, kind="trace", layers=["fc"]), rtol=1e-9)


def test_projection_features_stored():
    net = make_mlp()
    X, y = _xy(12)
    ntk = NTKFeaturizer(
        net, kernel="trace", projection_dim=32, random_state=0, dtype="float64", device="cpu"
    )
    K = ntk.fit_transform(X)
    assert ntk.fit_features_.shape == (12, 3, 32) and not hasattr(ntk, "X_fit_")
    F = ntk.fit_features_.reshape(12, -1)
    np.testing.assert_allclose(K, F @ F.T, rtol=1e-10)
    np.testing.assert_allclose(ntk.transform(X[:3]), K[:3], rtol=1e-10)
    again = clone(ntk).fit(X)
    assert again.seed_ == ntk.seed_
    np.testing.assert_allclose(again.transform(X), K, rtol=1e-12)
    free = NTKFeaturizer(net, projection_dim=32, normalize="cosine", device="cpu", dtype="float64")
    K_free = free.fit_transform(X)  # random_state=None: seed drawn once at fit, used by transform
    np.testing.assert_allclose(free.transform(X), K_free, rtol=1e-10)
    exact = NTKFeaturizer(net, kernel="trace", dtype="float64", device="cpu").fit_transform(X)
    big = NTKFeaturizer(
        net, kernel="trace", projection_dim=4096, random_state=0, dtype="float64", device="cpu"
    ).fit_transform(X)
    assert np.linalg.norm(big - exact) < 0.1 * np.linalg.norm(exact)
    lg = NTKFeaturizer(net, kernel="loss_grad", projection_dim=16, random_state=0, device="cpu")
    assert lg.fit_transform(X, y).shape == (12, 12) and lg.transform(X[:2]).shape == (2, 12)


def test_loss_grad_needs_labels_and_tags():
    net = make_mlp()
    X, y = _xy(6)
    with pytest.raises(ValueError, match="requires y"):
        NTKFeaturizer(net, kernel="loss_grad", device="cpu").fit(X)
    with pytest.raises(ValueError, match="class indices"):
        NTKFeaturizer(net, kernel="loss_grad", device="cpu").fit(X, y + 5)
    assert get_tags(NTKFeaturizer(net, kernel="loss_grad")).target_tags.required
    tags = get_tags(NTKFeaturizer(net, dtype="float64"))
    assert tags.input_tags.pairwise is False
    assert tags.transformer_tags.preserves_dtype == ["float64"]


def test_errors():
    net = make_mlp()
    X, _ = _xy(4)
    with pytest.raises(ValueError, match="projection_dim"):
        NTKFeaturizer(net, kernel="ck", projection_dim=4).fit(X)
    with pytest.raises(ValueError, match="does not exist"):
        NTKFeaturizer(net, layers=["nope"], device="cpu").fit(X)
    with pytest.raises(ValueError, match="does not exist"):
        NTKFeaturizer(net, kernel="embedding", layers=["nope"], device="cpu").fit(X)
    with pytest.raises(ValueError, match="kernel"):
        NTKFeaturizer(net, kernel="rbf").fit(X)
    fitted = NTKFeaturizer(net, device="cpu").fit(X)
    with pytest.raises(ValueError, match="features"):
        fitted.transform(X[:, :3])


def test_pipeline_cross_validate_grid_search_and_knn():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    X, y = _xy(40)
    pipe = make_pipeline(
        NTKFeaturizer(net, normalize="cosine", device="cpu"), SVC(kernel="precomputed")
    )
    assert get_tags(pipe).input_tags.pairwise is False
    scores = cross_validate(pipe, X, y, cv=3)["test_score"]
    assert scores.shape == (3,) and scores.mean() > 0.6
    grid = GridSearchCV(
        pipe,
        {
            "ntkfeaturizer__kernel": ["pntk", "trace", "ck"],
            "ntkfeaturizer__normalize": [None, "cosine"],
        },
        cv=3,
    ).fit(X, y)
    assert grid.best_score_ > 0.6
    knn = make_pipeline(
        NTKFeaturizer(net, kernel="trace", normalize="cosine", output="distance", device="cpu"),
        KNeighborsClassifier(3, metric="precomputed"),
    )
    assert cross_validate(knn, X, y, cv=3)["test_score"].mean() > 0.6


def test_joblib_round_trip_and_network_untouched(tmp_path):
    net = make_cnn_bn()
    net.train()
    before = copy.deepcopy(net.state_dict())
    X = np.random.default_rng(0).normal(size=(7, 64))
    ntk = NTKFeaturizer(
        net,
        kernel="trace",
        normalize="cosine",
        input_shape=(1, 8, 8),
        device="cpu",
        dtype="float64",
    ).fit(X)
    K = ntk.transform(X[:3])
    joblib.dump(ntk, tmp_path / "ntk.joblib")
    loaded = joblib.load(tmp_path / "ntk.joblib")
    np.testing.assert_array_equal(loaded.transform(X[:3]), K)
    assert isinstance(ntk.X_fit_, np.ndarray) and isinstance(ntk.fit_diag_, np.ndarray)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert list(ntk.get_feature_names_out()[:2]) == ["ntkfeaturizer0", "ntkfeaturizer1"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["pntk", "trace", "ck", "embedding", "loss_grad"])
def test_cuda_fit_transform_matches_cpu(kernel):
    net = make_mlp()
    X, y = _xy(9)
    opts = {"kernel": kernel, "normalize": "cosine", "dtype": "float64"}
    gpu = NTKFeaturizer(net, device="cuda", **opts)
    K = gpu.fit_transform(X, y)
    assert gpu.device_.startswith("cuda") and isinstance(gpu.fit_diag_, np.ndarray)
    cpu = NTKFeaturizer(net, device="cpu", **opts)
    np.testing.assert_allclose(K, cpu.fit_transform(X, y), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.transform(X[:3]), cpu.transform(X[:3]), rtol=1e-9, atol=1e-12)


def test_verbose_shows_tile_progress(capsys):
    X, _ = _xy(12)
    net = make_mlp()
    quiet = NTKFeaturizer(net, device="cpu", dtype="float64", block_size=4).fit_transform(X)
    assert "kernel tiles" not in capsys.readouterr().err
    loud = NTKFeaturizer(
        net, device="cpu", dtype="float64", block_size=4, verbose=True
    ).fit_transform(X)
    assert "kernel tiles" in capsys.readouterr().err
    np.testing.assert_array_equal(loud, quiet)


def test_trntk_is_the_old_name_of_trace():
    """The kernel names are empirical_ntk's; the old "trntk" still works, with a FutureWarning."""
    net = make_mlp()
    X, _ = _xy(8)
    K = NTKFeaturizer(net, kernel="trace", device="cpu", dtype="float64").fit_transform(X)
    old = NTKFeaturizer(net, kernel="trntk", device="cpu", dtype="float64")
    with pytest.warns(FutureWarning, match="kernel='trace'") as record:
        K_old = old.fit_transform(X)
    assert record[0].filename == __file__  # points at the user's line
    np.testing.assert_array_equal(K_old, K)
    assert old.get_params()["kernel"] == "trntk"  # the parameter is never rewritten
