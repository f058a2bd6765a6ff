"""The kernels of one featurizer on one fold, cached on disk, with labels as class indices.

:class:`FoldKernels` serves :func:`~sknn_kernels.compare_surrogates` (one call per fold and
kernel) and the report's refits on all training data.
"""

import os

import numpy as np
from joblib import Memory
from sklearn.utils.validation import check_memory

from ..features.featurizer import NTKFeaturizer
from ..network._adapter import fingerprint, unwrap_network

__all__ = ["FoldKernels", "class_indices"]


def _check_memory(memory):
    """sklearn's ``check_memory``, also taking a ``pathlib.Path``."""
    return check_memory(os.fspath(memory) if isinstance(memory, os.PathLike) else memory)


def _fold_kernels(network, fingerprint, params, X_train, y_train, X_test, verbose=False):
    """``(K_train, K_test)`` of one featurizer on one fold.

    ``network`` and ``verbose`` are left out of the cache key (``fingerprint`` stands for the
    network); ``y_train`` is None unless the kernel depends on labels.
    """
    featurizer = NTKFeaturizer(network, verbose=verbose, **params)
    return featurizer.fit_transform(X_train, y_train), featurizer.transform(X_test)


class FoldKernels:
    """``(K(X_train, X_train), K(X_test, X_train))`` of a featurizer, cached in ``memory``.

    The fold kernels of :func:`compare_surrogates`, and the report's kernels on all training
    data: with a ``memory`` location a rerun reads them back instead of computing them.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The network; its parameters' fingerprint stands for it in the cache key.
    memory : None, str, pathlib.Path or joblib.Memory
        Where the kernels are cached (``None``: nowhere).
    verbose : bool, default=False
        The featurizer's tile progress bars.
    classes : ndarray, default=None
        The labels in the order of the network's outputs, for the kernels that read labels
        (``"loss_grad"``): labels of any kind become the class indices they need. ``None``:
        the sorted labels given to each call (right when they hold every class).
    """

    def __init__(self, network, memory, verbose=False, classes=None):
        self.network, self.verbose, self.classes = network, verbose, classes
        memory = _check_memory(memory)
        self.cached = memory.cache(_fold_kernels, ignore=["network", "verbose"])
        #: Whether kernels are kept (in ``memory``) for later calls and runs.
        self.stores = not (isinstance(memory, Memory) and memory.location is None)
        # hashing the weights is for the key: skipped when nothing is stored
        self.fingerprint = fingerprint(unwrap_network(network)) if self.stores else None

    def __call__(self, params, X_train, y_train, X_test):
        """The two kernels of :meth:`featurizer` (labels only if the kernel reads them)."""
        labels = class_indices(y_train, self.classes) if _reads_labels(params) else None
        return self.cached(
            self.network, self.fingerprint, params, X_train, labels, X_test, self.verbose
        )

    def featurizer(self, params):
        """The unfitted ``NTKFeaturizer`` the kernels of ``params`` come from.

        For a kernel that reads labels, it is wrapped so that ``fit(X, y)`` takes labels of
        any kind (see ``classes``).
        """
        featurizer = NTKFeaturizer(self.network, verbose=self.verbose, **params)
        return _ClassIndexed(featurizer, self.classes) if _reads_labels(params) else featurizer


def _reads_labels(params):
    return params["kernel"] == "loss_grad"


def class_indices(y, classes=None):
    """Labels ``y`` as int64 indices into ``classes`` (default: the sorted labels of ``y``).

    Column ``j`` of a classifier network scores ``classes[j]``; the label-dependent kernels
    need that index, whatever the labels are (strings, non-contiguous integers, a subset).
    """
    y = np.asarray(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    order = np.argsort(classes, kind="stable")
    pos = np.searchsorted(classes, y, sorter=order)
    found = pos < len(classes)
    idx = np.zeros(len(y), dtype=np.int64)
    idx[found] = order[pos[found]]
    found[found] = classes[idx[found]] == y[found]
    if not found.all():
        raise ValueError(
            f"Labels {np.unique(y[~found])[:5].tolist()} are not among the network's classes "
            f"{classes.tolist()}."
        )
    return idx.astype(np.int64)


class _ClassIndexed:
    """A featurizer whose ``fit`` takes labels of any kind: it passes their class indices."""

    def __init__(self, featurizer, classes):
        self.featurizer, self.classes = featurizer, classes

    def fit(self, X, y=None):
        self.featurizer.fit(X, class_indices(y, self.classes))
        return self

    def fit_transform(self, X, y=None):
        return self.featurizer.fit_transform(X, class_indices(y, self.classes))

    def transform(self, X):
        return self.featurizer.transform(X)
