"""EmbeddingExtractor: activations of named layers of a trained network as features."""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from ..network._adapter import check_finite_rows, parse_layer
from ..network._base import (
    CALL_CONSTRAINTS,
    DEVICE_CONSTRAINT,
    NETWORK_CONSTRAINT,
    NetworkEstimatorMixin,
    first_rows,
)

__all__ = ["EmbeddingExtractor"]

POOLINGS = ("flatten", "avg", "max", "mean_tokens", "cls", "last")


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
    pooling : {"flatten", "avg", "max", "mean_tokens", "cls", "last"}, default="flatten"
        How a multi-axis activation becomes a vector: flattened, or averaged / maxed
        over every axis except the batch axis and ``channel_axis`` (spatial maps of a
        convolution). For token sequences ``(n, T, D)`` (``batch_first`` hidden states):
        ``"mean_tokens"`` averages over the non-padding tokens (those where the named input
        ``attention_mask`` is non-zero; all tokens without one), ``"cls"`` takes the first
        token (BERT's [CLS]) and ``"last"`` the last non-padding token (GPT-style models).
        2-D activations are returned as they are.
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
    network_output : None, str or callable, default=None
        How the network is called and which tensor of its output holds the logits (only the
        call matters here: activations are read from the layers). ``None`` and strings call
        ``network(x)`` (``network(**X)`` for named inputs); a callable ``network_output(module, batch)``
        calls it any other way, e.g. ``lambda m, b: m(b["image"], b["meta"])`` for a network
        with several positional inputs. See :func:`sknn_kernels.ntk.empirical_ntk`.

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
        Number of features (columns; channels for N-D input) seen during fit. Not set
        when ``X`` is a dict of named inputs.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.
    input_keys_ : tuple of str
        With named (dict) inputs only: their keys; ``transform`` needs the same ones.
    input_shapes_ : dict of str to tuple
        With named inputs only: per-sample shape of each; ``transform`` checks them.

    See Also
    --------
    sknn_kernels.NTKFeaturizer : Kernels (NTK, conjugate, embedding) from a network.

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
        "network": NETWORK_CONSTRAINT,
        "layers": [None, str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS))],
        "channel_axis": [Integral],
        "device": DEVICE_CONSTRAINT,
        **CALL_CONSTRAINTS,
    }

    def __init__(
        self,
        network=None,
        *,
        layers=None,
        pooling="flatten",
        channel_axis=1,
        batch_size=256,
        device="auto",
        dtype="float32",
        input_shape=None,
        network_output=None,
    ):
        self.network = network
        self.layers = layers
        self.pooling = pooling
        self.channel_axis = channel_axis
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape
        self.network_output = network_output

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Resolve the layers and the width of each one's embedding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape), or dict
            Training inputs (float, or integer ids), or a dict / skorch ``SliceDict`` of named
            inputs; one forward pass on a single sample sizes the output.
        y : None
            Ignored.

        Returns
        -------
        self : EmbeddingExtractor
            Fitted transformer.
        """
        X, adapter = self._fit_network(X)
        self.layers_ = self._resolve_layers(adapter, X)
        widths = [block.shape[1] for block in self._embed(adapter, first_rows(X))]
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
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape), or dict
            Inputs of the same form as at fit.

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
            One name per output column.
        """
        check_is_fitted(self)
        _check_input_features(self, input_features)
        return np.asarray(
            [
                f"{spec}__{j}"
                for spec, cols in self.feature_slices_.items()
                for j in range(cols.stop - cols.start)
            ],
            dtype=object,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags

    # ------------------------------------------------------------------ helpers
    def _resolve_layers(self, adapter, X):
        layers = self.layers
        if layers is None:
            first = next(adapter.batches(first_rows(X)))
            return [f"{adapter.last_linear(first)}:input"]
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
        start = 0  # index of the batch's first sample, for the non-finite rows' message
        with torch.no_grad(), adapter.capture(self.layers_) as records:
            for batch in adapter.batches(X):
                for store in records.values():
                    store.clear()
                adapter.call(batch)
                mask = batch.get("attention_mask")
                for out, spec in zip(blocks, self.layers_):
                    calls = records[spec]
                    if not calls:
                        raise ValueError(
                            f"Layer {spec!r} was not called in the forward pass, so it has no "
                            "activation to extract."
                        )
                    pooled = [pool(a, self.pooling, self.channel_axis, mask, spec) for a in calls]
                    block = torch.cat(pooled, dim=1)
                    check_finite_rows(block, f"activations of layer {spec!r}", start)
                    out.append(block.to(adapter.dtype).cpu().numpy())
                start += block.shape[0]
        return [np.concatenate(b, axis=0) for b in blocks]


def pool(activation, pooling, channel_axis=1, mask=None, name="activation"):
    """One ``(n, width)`` row per sample from an activation of shape ``(n, ...)``.

    ``pooling`` as in :class:`EmbeddingExtractor`; ``mask`` ``(n, T)`` marks non-padding
    tokens for the sequence poolings.
    """
    a = activation.reshape(activation.shape[0], -1) if activation.ndim < 2 else activation
    if a.ndim == 2 or pooling == "flatten":
        return a.flatten(1)
    if pooling in ("mean_tokens", "cls", "last"):
        return _pool_tokens(a, pooling, mask, name)
    keep = channel_axis % a.ndim
    if keep == 0:
        raise ValueError("channel_axis must not be the batch axis (0).")
    axes = tuple(ax for ax in range(1, a.ndim) if ax != keep)
    return a.mean(dim=axes) if pooling == "avg" else a.amax(dim=axes)


def _pool_tokens(a, pooling, mask, name):
    if a.ndim != 3:
        raise ValueError(
            f"pooling={pooling!r} needs token sequences (n, T, D); layer {name!r} "
            f"gives activations of shape {tuple(a.shape)}."
        )
    n, T = a.shape[:2]
    if mask is not None and tuple(mask.shape) != (n, T):
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but layer {name!r} has "
            f"{T} tokens per sample: token pooling needs one mask entry per token."
        )
    keep = torch.ones(n, T, dtype=torch.bool, device=a.device) if mask is None else mask != 0
    if pooling == "cls":
        return a[:, 0]
    if pooling == "last":
        # index of the last kept token (right or left padding alike); 0 if none is kept
        last = (keep.long() * torch.arange(1, T + 1, device=a.device)).argmax(1)
        return a[torch.arange(n, device=a.device), last]
    w = keep.to(a.dtype)[..., None]
    return (a * w).sum(1) / w.sum(1).clamp_min(1)


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
