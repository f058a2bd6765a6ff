"""IDX reader, offline loaders, reference networks and the seeded training loop."""

import gzip
import os

import numpy as np
import pytest
import torch

from sknn_kernels.datasets import (
    FASHION_MNIST_ROOT,
    load_digits_images,
    load_fashion_mnist,
    make_cnn,
    make_mlp,
    read_idx,
    train_reference_network,
)


def _write_idx(path, array, code):
    """Write ``array`` in IDX format by hand (big-endian header and data)."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + big.tobytes())


@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)],
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, dtype, code, suffix, rng):
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    _write_idx(path, array, code)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((2, 3), np.uint8), 0x08)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="header announces shape"):
        read_idx(short)


@pytest.fixture
def fake_fashion_root(tmp_path, rng):
    """A miniature Fashion-MNIST: 50 train / 20 test images per class."""
    for prefix, per_class in (("train", 50), ("t10k", 20)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # lets the test check images and labels stay paired
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, 0x08)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x08)
    return tmp_path


def test_load_fashion_mnist_subsets(fake_fashion_root):
    data = load_fashion_mnist(classes=(3, 7), n_train=40, n_test=10, root=fake_fashion_root)
    assert data.X_train.shape == (40, 784) and data.X_train.dtype == np.float32
    assert data.X_test.shape == (10, 784)
    assert np.bincount(data.y_train).tolist()[3::4] == [20, 20]  # stratified: 20 of each class
    np.testing.assert_allclose(data.X_train[:, 0] * 255, data.y_train)  # pairs preserved
    assert data.input_shape == (1, 28, 28) and data.target_names[7] == "Sneaker"
    assert data.X_train.min() >= 0 and data.X_train.max() <= 1
    full = load_fashion_mnist(root=fake_fashion_root)
    assert full.X_train.shape == (500, 784) and full.X_test.shape == (200, 784)
    again = load_fashion_mnist(classes=(3, 7), n_train=40, n_test=10, root=fake_fashion_root)
    np.testing.assert_array_equal(again.X_train, data.X_train)  # seeded subsets
    with pytest.raises(ValueError, match="at least two labels"):
        load_fashion_mnist(classes=(3,), root=fake_fashion_root)


def test_load_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path)


@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_ROOT), reason="Debian package dataset-fashion-mnist absent"
)
def test_real_fashion_mnist():
    data = load_fashion_mnist(classes=(0, 1), n_train=1000, n_test=200)
    assert data.X_train.shape == (1000, 784)
    assert np.bincount(data.y_train).tolist() == [500, 500]
    assert data.X_train.max() == pytest.approx(1.0) and data.X_train.min() == 0.0


def test_load_digits_images():
    data = load_digits_images(classes=(1, 7), test_size=0.5)
    assert set(data.y_train) == {1, 7}
    assert data.X_train.shape[1] == 64 and data.input_shape == (1, 8, 8)
    assert data.X_train.max() <= 1.0 and data.X_train.dtype == np.float32


def test_builders_are_seeded_and_leave_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = make_mlp(10, 3, seed=1), make_mlp(10, 3, seed=1), make_mlp(10, 3, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)
    cnn = make_cnn((1, 28, 28), 10, channels=(4, 8), hidden=16)
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(make_mlp((1, 8, 8), 2)[0], torch.nn.Flatten)
    with pytest.raises(ValueError, match="too small"):
        make_cnn((1, 2, 2), 3)


def test_train_reference_network_is_deterministic_and_learns():
    data = load_digits_images()
    runs = [
        train_reference_network(make_mlp, data.X_train, data.y_train, epochs=5, lr=3e-3, seed=5)
        for _ in range(2)
    ]
    for p, q in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(p, q)
    assert not runs[0].training
    with torch.no_grad():
        accuracy = (runs[0](torch.from_numpy(data.X_test)).argmax(1).numpy() == data.y_test).mean()
    assert accuracy > 0.9
    other = train_reference_network(make_mlp, data.X_train, data.y_train, epochs=1, seed=6)
    assert not torch.equal(other[0].weight, runs[0][0].weight)


def test_train_reference_network_cnn_labels_and_no_mutation():
    data = load_digits_images(classes=(3, 8))
    start = make_cnn((1, 8, 8), 2, channels=(4,), hidden=8)
    before = [p.clone() for p in start.parameters()]
    net = train_reference_network(
        start, data.X_train, data.y_train, epochs=3, input_shape=(1, 8, 8), lr=1e-2
    )
    for p, q in zip(start.parameters(), before):
        assert torch.equal(p, q)  # the argument is not trained in place
    with torch.no_grad():
        out = net(torch.from_numpy(data.X_test).reshape(-1, 1, 8, 8)).argmax(1).numpy()
    assert (np.array([3, 8])[out] == data.y_test).mean() > 0.85  # unit j <-> j-th sorted label
    with pytest.raises(ValueError, match="two classes"):
        train_reference_network(make_mlp, data.X_train, np.zeros(len(data.X_train)))
