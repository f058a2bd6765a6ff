"""EmbeddingExtractor: activations of named layers of a trained network as features."""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._network import NetworkEstimatorMixin, parse_layer

__all__ = ["EmbeddingExtractor"]


class EmbeddingExtractor(TransformerMixin, NetworkEstimatorMixin, BaseEstimator):
    """Activations of named layers of a trained torch network, as an sklearn transformer.

    Forward hooks are registered on a private eval-mode copy of the network only for
    the duration of a call, so the user's network is never modified and the fitted
    estimator pickles without hooks or device tensors.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch NeuralNet or FrozenEstimator, default=None
        The trained network. Inside ``GridSearchCV``/``cross_validate`` wrap a fitted
        skorch net as ``sklearn.frozen.FrozenEstimator(net)`` so that ``clone`` keeps
        its weights.
    layers : None, "all", str or list of str, default=None
        Which activations to return, in this order. A name from
        ``network.named_modules()`` means that module's output; ``"name:input"`` its
        (first positional) input. ``None`` means the input of the last ``nn.Linear``
        (the penultimate representation, i.e. the conjugate-kernel features);
        ``"all"`` means every leaf module.
    pooling : {"flatten", "avg", "max"}, default="flatten"
        How a multi-axis activation becomes a vector: flattened, or averaged / maxed
        over every axis except the batch axis and ``channel_axis`` (spatial maps of a
        convolution, tokens of a sequence).
    channel_axis : int, default=1
        The feature axis kept by ``"avg"``/``"max"`` pooling: ``1`` for PyTorch's
        channels-first convolution maps, ``-1`` for ``batch_first`` sequence models
        whose activations are ``(n, L, D)``. Ignored for 2-D activations.
    batch_size : int, default=256
        Samples per forward pass; bounds memory.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where the forward passes run; ``"auto"`` picks CUDA when available.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the network copy and of the output.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects, e.g. ``(1, 28, 28)``; lets a 2-D ``X``
        of shape ``(n, prod(input_shape))`` feed a convolutional or sequence network.
        N-D arrays ``(n, *input_shape)`` are accepted directly too.

    Attributes
    ----------
    layers_ : list of str
        The resolved layer specs, in output order.
    feature_slices_ : dict of str to slice
        Columns of the output that hold each layer.
    n_features_out_ : int
        Number of output columns.
    device_ : str
        Device used at fit.
    network_fingerprint_ : str
        Hash of the network's parameters and buffers at fit; ``transform`` warns
        (``NetworkChangedWarning``) when the network differs.
    input_shape_ : tuple of int
        Per-sample shape fed to the network.
    n_features_in_ : int
        Number of features (columns; channels for N-D input) seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sknn_kernels.NTKFeaturizer : kernels (NTK, conjugate, embedding) from a network.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels import EmbeddingExtractor
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> X = np.random.default_rng(0).normal(size=(5, 4))
    >>> emb = EmbeddingExtractor(net, layers=["0", "1"], device="cpu").fit(X)
    >>> emb.transform(X).shape
    (5, 16)
    >>> emb.feature_slices_
    {'0': slice(0, 8, None), '1': slice(8, 16, None)}
    >>> emb.get_feature_names_out()[:2]
    array(['0__0', '0__1'], dtype=object)
    """

    _parameter_constraints = {
        "network": "no_validation",
        "layers": [None, str, list, tuple],
        "pooling": [StrOptions({"flatten", "avg", "max"})],
        "channel_axis": [Integral],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": [StrOptions({"float32", "float64"})],
        "input_shape": [None, tuple, list],
    }

    def __init__(
        self,
        network=None,
        layers=None,
        pooling="flatten",
        channel_axis=1,
        batch_size=256,
        device="auto",
        dtype="float32",
        input_shape=None,
    ):
        self.network = network
        self.layers = layers
        self.pooling = pooling
        self.channel_axis = channel_axis
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape

    def fit(self, X, y=None):
        """Resolve the layers and the width of each one's embedding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            Training inputs; one forward pass on a single sample sizes the output.
        y : None
            Ignored.

        Returns
        -------
        self : EmbeddingExtractor
        """
        self._validate_params()
        X, adapter = self._fit_network(X)
        self.layers_ = self._resolve_layers(adapter)
        widths = [block.shape[1] for block in self._embed(adapter, X[:1])]
        stops = np.cumsum(widths)
        self.feature_slices_ = {
            spec: slice(int(stop - width), int(stop))
            for spec, width, stop in zip(self.layers_, widths, stops)
        }
        self.n_features_out_ = int(stops[-1])
        return self

    def transform(self, X):
        """Return the concatenated activations.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_features_out_)
            Activations of ``layers_`` in order, in ``dtype``.
        """
        X, adapter = self._transform_network(X)
        return np.hstack(self._embed(adapter, X))

    def get_feature_names_out(self, input_features=None):
        """Output names ``"<layer>__<j>"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked for consistency with the input seen at fit.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        _check_input_features(self, input_features)
        return np.asarray(
            [f"{spec}__{j}" for spec, cols in self.feature_slices_.items() for j in range(cols.stop - cols.start)],
            dtype=object,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags

    # ------------------------------------------------------------------ helpers
    def _resolve_layers(self, adapter):
        layers = self.layers
        if layers is None:
            return [f"{adapter.last_linear()}:input"]
        if isinstance(layers, str):
            layers = adapter.leaf_layers() if layers == "all" else [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("`layers` is empty: name at least one layer, or use None or 'all'.")
        for spec in layers:
            adapter.get_layer(parse_layer(spec)[0])  # raises, listing valid names
        if len(set(layers)) != len(layers):
            raise ValueError(f"`layers` lists a layer more than once: {layers}.")
        return layers

    def _embed(self, adapter, X):
        """One (n, width_l) numpy block per layer in ``layers_``."""
        blocks = [[] for _ in self.layers_]
        with torch.no_grad(), adapter.capture(self.layers_) as records:
            for batch in adapter.batches(X):
                for store in records.values():
                    store.clear()
                adapter.call(batch)
                for out, spec in zip(blocks, self.layers_):
                    calls = records[spec]
                    if not calls:
                        raise ValueError(
                            f"Layer {spec!r} was not called in the forward pass, so it has no "
                            "activation to extract."
                        )
                    out.append(
                        torch.cat([self._pool(a) for a in calls], dim=1).cpu().numpy()
                    )
        return [np.concatenate(b, axis=0) for b in blocks]

    def _pool(self, activation):
        a = activation.reshape(activation.shape[0], -1) if activation.ndim < 2 else activation
        if a.ndim == 2 or self.pooling == "flatten":
            return a.flatten(1)
        keep = self.channel_axis % a.ndim
        if keep == 0:
            raise ValueError("channel_axis must not be the batch axis (0).")
        axes = tuple(ax for ax in range(1, a.ndim) if ax != keep)
        return a.mean(dim=axes) if self.pooling == "avg" else a.amax(dim=axes)


def _check_input_features(estimator, input_features):
    """sklearn's contract for ``input_features``: consistent with what fit saw."""
    if input_features is None:
        return
    input_features = np.asarray(input_features, dtype=object)
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and not np.array_equal(input_features, names):
        raise ValueError("input_features is not equal to feature_names_in_.")
    if len(input_features) != estimator.n_features_in_:
        raise ValueError(
            f"input_features should have length equal to number of features "
            f"({estimator.n_features_in_}), got {len(input_features)}."
        )
