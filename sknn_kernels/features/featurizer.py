"""NTKFeaturizer: kernels of a trained network against the training set, as an sklearn transformer."""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ..network._adapter import check_finite_rows
from ..network._base import (
    CALL_CONSTRAINTS,
    DEVICE_CONSTRAINT,
    NETWORK_CONSTRAINT,
    NetworkEstimatorMixin,
    first_rows,
    n_samples,
    user_stacklevel,
)
from ..ntk import METHODS, NTKEngine, features_kernel
from ..ntk._tiles import kernel as tiled_kernel
from ..ntk._tiles import projected_features as tiled_features
from ..ntk.gram import contract
from ._activations import activation_layers, activation_rows

__all__ = ["NTKFeaturizer"]

# The gradient kernels, named as empirical_ntk's `kind`; "trntk" is the old name of "trace".
_GRADIENT_KINDS = {"pntk": "pntk", "trace": "trace", "trntk": "trace", "loss_grad": "loss_grad"}
_DISTANCE_ROUNDOFF = 64  # ulps of k(x, x) + k(x', x') below which a squared distance is zero
# Stored features are (n, m, d); every kernel here sums over the m cotangents: "trace" mode.


class NTKFeaturizer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, NetworkEstimatorMixin, BaseEstimator
):
    """Kernel (or distance) of a trained network between samples and the training set.

    ``fit(X)`` keeps what ``transform`` needs; ``transform(X)`` returns ``K(X, X_fit)`` of shape
    ``(n_samples, n_fit)``, ready for estimators with ``kernel="precomputed"`` (or, with
    ``output="distance"``, ``metric="precomputed"``); ``fit_transform(X)`` returns
    ``K(X_fit, X_fit)``, computed once using its symmetry. Because the featurizer takes raw
    features and is refitted per fold, it works unchanged in ``Pipeline``,
    ``cross_validate`` and ``GridSearchCV``.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch NeuralNet or FrozenEstimator, default=None
        The trained network ``f(x; θ) ∈ R^C``; a private eval-mode copy is used. Inside
        ``GridSearchCV`` wrap a fitted skorch net as ``sklearn.frozen.FrozenEstimator(net)``.
    kernel : {"pntk", "trace", "ck", "embedding", "loss_grad"}, default="pntk"
        With ``g_c(x) = ∂f_c(x)/∂θ`` (the gradient kernels take the names of
        :func:`~sknn_kernels.ntk.empirical_ntk`'s ``kind``):

        * ``"pntk"``: ``<Σ_c g_c(x)/√C, Σ_c g_c(x')/√C>`` (pseudo-NTK, sum of logits);
        * ``"trace"``: ``Σ_c <g_c(x), g_c(x')>``, the trace of the NTK (the paper's trNTK;
          ``"trntk"``, its former name here, is accepted with a ``FutureWarning`` until
          0.3);
        * ``"ck"``: conjugate kernel, the Gram of the input to the last ``nn.Linear`` (or of
          the activations named in ``layers``);
        * ``"embedding"``: sum over layers of activation Grams, the paper's Em (default: every
          leaf module but dropout, flatten and identity whose output has one row per sample;
          of a tuple / ``ModelOutput`` output its first tensor; a token sequence ``(n, T,
          ...)`` of a network given an ``attention_mask`` is averaged over its real tokens,
          every other output flattened; the modules used are in ``layers_``; see the user
          guide's kernel page for the rule and why).
        * ``"loss_grad"``: ``<∇θ L(x, y), ∇θ L(x', y')>`` for the softmax cross-entropy ``L``.
          It depends on labels: ``fit`` needs ``y`` (class indices of the network's outputs);
          ``transform`` uses the network's predicted class for new samples, since their
          labels are unknown (using true test labels would leak them into the kernel).
    normalize : {None, "cosine", "std"}, default=None
        ``"cosine"``: ``k(x, x') / √(k(x, x) k(x', x'))``, with the training diagonal from
        ``fit`` and the new samples' diagonal computed in ``transform``. ``"std"``: divide by
        the standard deviation of the training kernel's entries (the paper's "0" kernels);
        ``fit`` then computes the training kernel once to learn it.
    output : {"kernel", "distance", "features"}, default="kernel"
        ``"distance"``: ``√max(k(x, x) + k(x', x') - 2 k(x, x'), 0)`` of the (normalised)
        kernel, for ``KNeighborsClassifier(metric="precomputed")``. ``"features"`` (kernels
        from explicit features: ``"ck"``, ``"embedding"``, or ``projection_dim`` set): the
        features ``Φ`` themselves, ``(n_samples, n_features)``, with ``Φ(X) Φ(X_fit)ᵀ`` the
        kernel ``"kernel"`` gives (rows scaled to unit norm for ``normalize="cosine"``); an
        estimator with ``kernel="linear"`` then solves in feature space, never forming an
        ``n × n`` matrix (see the user guide, "Surrogates at data-set scale").
    layers : str or list of str, default=None
        Gradient kernels: restrict θ to these modules' parameters. ``"ck"``/``"embedding"``:
        the activations to use (``"name"`` for a module's output, ``"name:input"`` for its
        input).
    projection_dim : int, default=None
        Gradient kernels only: use Johnson–Lindenstrauss-projected gradients of this
        dimension (proj-pNTK / proj-trNTK; unbiased). The training features are stored, so
        ``transform`` costs one gradient pass over ``X`` and a GEMM.
    random_state : int, RandomState instance or None, default=None
        Seed of the projection (drawn once in ``fit``, stored in ``seed_``).
    batch_size : int, default=256
        Samples per forward/backward pass.
    block_size : int, default=1024
        Side of the kernel tiles; bounds memory together with ``batch_size``.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where the network runs; ``"auto"`` picks CUDA when available. TF32 is turned off
        for the kernel computations (it would cost ~1e-3 relative precision).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the computation and of the output.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects when ``X`` is 2-D, e.g. ``(1, 28, 28)``.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits: ``None`` takes the output if
        it is a tensor, the first tensor of a tuple or the ``"logits"`` entry of a dict /
        Hugging Face ``ModelOutput``; a string selects that key; a callable
        ``network_output(module, batch) -> (n, C)`` calls the network any other way.
    method : {"auto", "structured", "vmap", "autograd"}, default="auto"
        How the exact gradient kernels are computed; see
        :func:`sknn_kernels.ntk.empirical_ntk`.
    verbose : bool, default=False
        A progress bar over the tiles of exact gradient kernels (when there is more than one).
    n_jobs : int, default=None
        Gradient kernels: kernel tiles (projected features: row blocks) as ``joblib`` tasks on
        the active backend (local processes, or Dask / Ray inside
        ``joblib.parallel_config``); ``None`` runs them in this process. Same kernel bitwise.
    memory_budget : int or str, default=None
        Gradient kernels: memory the NTK engine may use beyond the kernel, in bytes or as a
        string such as ``"4GiB"``; ``None`` keeps its default (``min(1 GiB, available / 4)``
        on the CPU). See ``memory_budget`` in :func:`sknn_kernels.ntk.empirical_ntk`.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_fit, ...), or dict of them
        Training inputs (exact gradient kernels, which are recomputed against new samples).
    fit_features_ : ndarray of shape (n_fit, m, d)
        Training features (``"ck"``, ``"embedding"``, or projected gradients).
    layers_ : list of str
        The activations entering ``"ck"`` / ``"embedding"`` (``"name"`` or
        ``"name:input"``), resolved at fit; not set for the gradient kernels.
    y_fit_ : ndarray of shape (n_fit,)
        Training labels (``"loss_grad"`` only).
    fit_diag_ : ndarray of shape (n_fit,)
        Unnormalised ``k(x, x)`` of the training samples.
    scale_ : float
        Standard deviation of the training kernel (``normalize="std"``), else 1.
    seed_ : int
        Seed of the projection (``projection_dim`` set), else None.
    n_features_in_ : int
        Number of features seen during fit (array inputs; for dict inputs see
        :class:`EmbeddingExtractor`'s ``input_keys_`` and ``input_shapes_``).
    device_ : str
        Device used at fit.
    network_fingerprint_ : str
        Hash of the network at fit; ``transform`` warns if the network has changed.
    input_shape_ : tuple of int
        Per-sample shape fed to the network.

    See Also
    --------
    sknn_kernels.ntk.empirical_ntk : The kernel engine, with every option.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from sknn_kernels.features.featurizer import NTKFeaturizer
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> X = np.random.default_rng(0).normal(size=(30, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> ntk = NTKFeaturizer(net, kernel="trace", normalize="cosine", device="cpu")
    >>> K = ntk.fit_transform(X)
    >>> K.shape, bool(np.allclose(np.diag(K), 1))
    ((30, 30), True)
    >>> ntk.transform(X[:5]).shape
    (5, 30)
    >>> clf = make_pipeline(NTKFeaturizer(net, device="cpu"), SVC(kernel="precomputed"))
    >>> clf.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "network": NETWORK_CONSTRAINT,
        "kernel": [
            StrOptions(
                {"pntk", "trace", "trntk", "ck", "embedding", "loss_grad"}, deprecated={"trntk"}
            )
        ],
        "normalize": [None, StrOptions({"cosine", "std"})],
        "output": [StrOptions({"kernel", "distance", "features"})],
        "layers": [None, str, list, tuple],
        "projection_dim": [None, Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "method": [StrOptions(set(METHODS))],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "device": DEVICE_CONSTRAINT,
        "verbose": ["boolean"],
        "n_jobs": [None, Integral],
        "memory_budget": [None, Interval(Integral, 1, None, closed="left"), str],
        **CALL_CONSTRAINTS,
    }

    def __init__(
        self,
        network=None,
        *,
        kernel="pntk",
        normalize=None,
        output="kernel",
        layers=None,
        projection_dim=None,
        random_state=None,
        batch_size=256,
        block_size=1024,
        device="auto",
        dtype="float32",
        input_shape=None,
        network_output=None,
        method="auto",
        verbose=False,
        n_jobs=None,
        memory_budget=None,
    ):
        self.network = network
        self.kernel = kernel
        self.normalize = normalize
        self.output = output
        self.layers = layers
        self.projection_dim = projection_dim
        self.random_state = random_state
        self.method = method
        self.verbose = verbose
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape
        self.network_output = network_output
        self.n_jobs = n_jobs
        self.memory_budget = memory_budget

    # ------------------------------------------------------------------ sklearn API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store what ``transform`` needs: training inputs or features, diagonal, scale.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            Training inputs.
        y : array-like of shape (n_samples,), default=None
            Class indices; required for ``kernel="loss_grad"``, ignored otherwise.

        Returns
        -------
        self : NTKFeaturizer
            Fitted transformer.
        """
        self._fit(X, y, return_kernel=False)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, and return the training kernel ``K(X, X)`` (computed once, symmetric).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            Training inputs.
        y : array-like of shape (n_samples,), default=None
            Class indices; required for ``kernel="loss_grad"``, ignored otherwise.

        Returns
        -------
        K : ndarray of shape (n_samples, n_samples)
            Kernel (or distances) between the training samples; with ``output="features"``
            their features, ``(n_samples, n_features)``.
        """
        return self._fit(X, y, return_kernel=True)

    def transform(self, X):
        """Kernel (or distances) between ``X`` and the training samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            New inputs.

        Returns
        -------
        K : ndarray of shape (n_samples, n_fit)
            One column per training sample, in ``dtype``; with ``output="features"`` the
            features of ``X``, ``(n_samples, n_features)``.
        """
        X, adapter = self._transform_network(X)
        ctx = self._context(adapter)
        if self._feature_based:
            F = self._features(ctx, X, None)
            if self.output == "features":
                diag = contract(torch.from_numpy(F), torch.from_numpy(F), "trace", paired=True)
                return self._finish_features(F, diag.numpy())
            K = features_kernel(F, self.fit_features_, "trace", block_size=self.block_size)
            diag = contract(torch.from_numpy(F), torch.from_numpy(F), "trace", paired=True).numpy()
        else:
            K = self._gradient_cross(ctx, X)
            needs_diag = self.normalize == "cosine" or self.output == "distance"
            diag = ctx.diagonal(X, block_size=self.block_size) if needs_diag else None
        return self._finish(K, diag, self.fit_diag_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = False
        tags.transformer_tags.preserves_dtype = [self.dtype]
        tags.target_tags.required = self.kernel == "loss_grad"
        return tags

    # ------------------------------------------------------------------ helpers
    @property
    def _feature_based(self):
        return self.kernel in ("ck", "embedding") or self.projection_dim is not None

    def _fit(self, X, y, return_kernel):
        if self.kernel == "trntk":
            warnings.warn(
                "NTKFeaturizer(kernel='trntk') is renamed kernel='trace' (the name "
                "empirical_ntk uses); 'trntk' will be removed in 0.3.",
                FutureWarning,
                stacklevel=user_stacklevel(),
            )
        if self.projection_dim is not None and self.kernel in ("ck", "embedding"):
            raise ValueError(
                "projection_dim applies to the gradient kernels "
                f"('pntk', 'trace', 'loss_grad'), not to kernel={self.kernel!r}."
            )
        if self.output == "features" and not self._feature_based:
            raise ValueError(
                f"output='features' needs a kernel of explicit features: kernel='ck' or "
                f"'embedding', or projection_dim set (kernel={self.kernel!r} has only its exact "
                "n x n form); or use output='kernel'."
            )
        if self.output == "features" and self.normalize == "std":
            raise ValueError(
                "normalize='std' divides by the spread of the n x n training kernel, which "
                "output='features' never forms: use normalize='cosine' or None."
            )
        if self.layers is not None and not isinstance(self.layers, str) and not len(self.layers):
            raise ValueError(
                "`layers` is empty: name at least one layer, or use None for the kernel's default."
            )
        X, adapter = self._fit_network(X)
        for stale in ("X_fit_", "fit_features_", "y_fit_", "layers_"):  # from an earlier fit
            self.__dict__.pop(stale, None)
        if self.kernel in ("ck", "embedding"):  # resolved once: transform uses the same
            first = next(adapter.batches(first_rows(X)))
            self.layers_ = activation_layers(adapter, self.kernel, self.layers, first)
        if self.kernel == "loss_grad":
            if y is None:
                raise ValueError(
                    "NTKFeaturizer(kernel='loss_grad') requires y to be passed, but the "
                    "target y is None: it needs the class indices of the training "
                    "samples, since the kernel is built from loss gradients."
                )
            y = np.asarray(y)
            if y.ndim != 1 or y.shape[0] != n_samples(X):
                raise ValueError(f"y must be 1-D with {n_samples(X)} entries; got shape {y.shape}.")
            self.y_fit_ = _class_indices(y)
        labels = y if self.kernel == "loss_grad" else None
        self.seed_ = None
        if self.projection_dim is not None:
            self.seed_ = int(check_random_state(self.random_state).randint(2**31 - 1))
        ctx = self._context(adapter)
        K = None
        if self._feature_based:
            self.fit_features_ = self._features(ctx, X, labels)
            F = torch.from_numpy(self.fit_features_)
            if self.output == "features":
                self.fit_diag_ = contract(F, F, "trace", paired=True).numpy()
                self.scale_ = 1.0
                self._n_features_out = int(np.prod(self.fit_features_.shape[1:]))
                return self._finish_features(self.fit_features_, self.fit_diag_)
            if return_kernel or self.normalize == "std":
                K = features_kernel(self.fit_features_, None, "trace", block_size=self.block_size)
            diag = (
                np.diag(K).copy() if K is not None else contract(F, F, "trace", paired=True).numpy()
            )
        else:
            self.X_fit_ = X
            if return_kernel or self.normalize == "std":
                K = tiled_kernel(ctx, X, y1=labels, **self._tile_options)
                diag = np.diag(K).copy()
            else:
                diag = ctx.diagonal(X, y=labels, block_size=self.block_size)
        self.fit_diag_ = diag
        self.scale_ = 1.0
        if self.normalize == "std":
            std = float(np.std(K))
            self.scale_ = std if std > 0 else 1.0
        self._n_features_out = n_samples(X)
        return self._finish(K, diag, diag) if return_kernel else None

    def _context(self, adapter):
        """The engine for gradient kernels; the adapter itself for activation kernels."""
        if self.kernel in _GRADIENT_KINDS:
            return NTKEngine(
                adapter,
                _GRADIENT_KINDS[self.kernel],
                layers=self.layers,
                method=self.method,
                memory_budget=self.memory_budget,
            )
        return adapter

    def _features(self, ctx, X, labels):
        """Per-sample features ``(n, m, d)`` as numpy: projected gradients or activations."""
        if self.kernel in _GRADIENT_KINDS:
            return tiled_features(
                ctx,
                X,
                n_jobs=self.n_jobs,
                projection_dim=self.projection_dim,
                random_state=self.seed_,
                y=labels,
                block_size=self.block_size,
            )
        return self._activations(ctx, X)[:, None, :]

    def _gradient_cross(self, engine, X):
        if self.kernel == "loss_grad":  # labels known for the training side only
            return tiled_kernel(engine, self.X_fit_, X, y1=self.y_fit_, **self._tile_options).T
        return tiled_kernel(engine, X, self.X_fit_, **self._tile_options)

    @property
    def _tile_options(self):
        return {"block_size": self.block_size, "progress": self.verbose, "n_jobs": self.n_jobs}

    @torch.no_grad()
    def _activations(self, adapter, X):
        """``(n, width)`` activations of ``layers_`` (module ``_activations`` has the rule)."""
        chunks, start = [], 0
        for batch in adapter.batches(X):
            chunks.append(activation_rows(adapter, self.layers_, batch).cpu())
            if chunks[-1].shape[1] != chunks[0].shape[1]:
                raise ValueError(
                    f"The activations of {self.layers_} have {chunks[0].shape[1]} values per "
                    f"sample in the first batch but {chunks[-1].shape[1]} from sample {start} "
                    "on: inputs of different lengths need an attention_mask (token "
                    "sequences are then averaged over their tokens) or one padded length."
                )
            check_finite_rows(chunks[-1], f"activations of {self.layers_}", start)
            start += len(chunks[-1])
        if not chunks:
            return np.empty((0, 0), dtype=self.dtype)
        return torch.cat(chunks).numpy()

    def _finish_features(self, F, diag):
        """``(n, m, d)`` features as ``(n, m d)`` rows, unit-norm for ``normalize="cosine"``."""
        F = F.reshape(len(F), -1)
        if self.normalize == "cosine":
            F = F / np.sqrt(np.maximum(diag, np.finfo(np.float64).tiny))[:, None]
        return np.ascontiguousarray(F, dtype=self.dtype)

    def _finish(self, K, d_rows, d_cols):
        """Normalise, and turn into distances if asked; ``d_*`` are unnormalised diagonals."""
        if self.normalize == "cosine":
            r = np.sqrt(np.maximum(d_rows, np.finfo(np.float64).tiny))
            c = np.sqrt(np.maximum(d_cols, np.finfo(np.float64).tiny))
            K = K / (r[:, None] * c[None, :])  # one product per entry keeps K exactly symmetric
            d_rows, d_cols = (
                None if d is None else d / (s * s) for d, s in ((d_rows, r), (d_cols, c))
            )
        elif self.normalize == "std":
            K = K / self.scale_
            d_rows, d_cols = (None if d is None else d / self.scale_ for d in (d_rows, d_cols))
        if self.output == "distance":
            scale = d_rows[:, None] + d_cols[None, :]
            d2 = scale - 2 * K
            # d² is a difference of nearly equal numbers: values within a few ulps of zero
            # are rounding noise (it differs with tile and batch position), so they are 0.
            d2[d2 <= _DISTANCE_ROUNDOFF * np.finfo(K.dtype).eps * np.abs(scale)] = 0
            K = np.sqrt(d2)
        return np.ascontiguousarray(K, dtype=self.dtype)


def _class_indices(y):
    """``y`` as int64 class indices, or an error saying how to encode labels."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64, copy=False)
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y)):
        return y.astype(np.int64)
    raise ValueError(
        "NTKFeaturizer(kernel='loss_grad') needs y as class indices 0..C-1 (column j of the "
        f"network's output scores class j); got labels of dtype {y.dtype}, e.g. "
        f"{y[:3].tolist()}. Encode them first, e.g. y = LabelEncoder().fit_transform(labels), "
        "with the classes in the order of the network's outputs."
    )
