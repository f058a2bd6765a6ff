"""PCAProbe: per-layer PCA of a network's representations, probed by simple classifiers.

Following Harlev et al. (2023, arXiv 2309.15328): for each layer, how much of the
representation's variance, and how many principal components, do k-NN, nearest
class centre and linear classifiers need to reach the accuracy they have on the
full-width representation?
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import check_cv, cross_validate
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.extmath import svd_flip
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d

from .._results import from_rows
from ..network._adapter import resolve_device
from ..network._base import CALL_CONSTRAINTS, NetworkEstimatorMixin, n_samples
from .embedding import POOLINGS, EmbeddingExtractor, _check_input_features

__all__ = ["PCAProbe", "make_probe"]

RESULT_COLUMNS = ("layer", "n_components", "explained_variance", "probe", "score_mean", "score_std")


def make_probe(name):
    """Build the classifier behind a probe name.

    Parameters
    ----------
    name : {"knn", "ncc", "linear"}
        ``"knn"``: ``KNeighborsClassifier()`` (5 neighbours, Euclidean);
        ``"ncc"``: ``NearestCentroid()``; ``"linear"``: ``LogisticRegression(max_iter=1000)``,
        an affine linear classifier that converges reliably on unscaled PC scores
        (the paper's linear SVM is available by passing ``{"svm": LinearSVC()}`` as
        ``probes``).

    Returns
    -------
    estimator : sklearn classifier
        A new, unfitted classifier.
    """
    if name == "knn":
        return KNeighborsClassifier()
    if name == "ncc":
        return NearestCentroid()
    if name == "linear":
        return LogisticRegression(max_iter=1000)
    raise ValueError(
        f"Unknown probe {name!r}; use 'knn', 'ncc', 'linear' or pass a dict name -> classifier."
    )


class PCAProbe(TransformerMixin, NetworkEstimatorMixin, BaseEstimator):
    """Per-layer PCA of a trained network's representations, with classifier probes.

    ``fit`` extracts each layer's activations with :class:`EmbeddingExtractor`, fits
    one PCA per layer and, when ``y`` is given, cross-validates probe pipelines
    ``make_pipeline(PCA(k), classifier)`` on each layer for every ``k`` in
    ``probe_components``, plus the classifier on the full-width layer (the
    reference score). ``transform`` returns the concatenated top principal
    components of every layer.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch NeuralNet or FrozenEstimator, default=None
        The trained network (never modified).
    layers : None, "all", str or list of str, default=None
        Layers to probe, as in :class:`EmbeddingExtractor` (``None``: the input of
        the last ``nn.Linear``).
    n_components : int or float, default=0.95
        Components kept per layer for ``transform``: an int, or a float in (0, 1),
        the fraction of variance to keep (the smallest count reaching it, as
        ``sklearn.decomposition.PCA``). A float needs each layer's full spectrum
        (an exact solver): for very wide layers prefer an int, which uses a
        randomized SVD when that is cheaper.
    probe_components : sequence of int, default=(1, 2, 5, 10, 20, 50, 100)
        Numbers of components at which the probes are cross-validated; each is
        capped by the layer's width and by the smallest training fold.
    probes : sequence of {"knn", "ncc", "linear"} or dict, default=("knn", "ncc", "linear")
        Classifiers put after ``PCA(k)``; see :func:`make_probe`. A dict maps a probe
        name to any sklearn classifier (cloned).
    cv : int, cross-validation generator or iterable, default=5
        Folds for the probes, as in ``cross_validate`` (an int means stratified
        k-fold). The same folds serve every layer, probe and ``k``.
    pooling : {"flatten", "avg", "max", "mean_tokens", "cls", "last"}, default="flatten"
        How multi-axis activations become vectors (see :class:`EmbeddingExtractor`); the
        token poolings serve transformers' hidden states ``(n, T, D)``.
    batch_size : int, default=256
        Samples per forward pass.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where the forward passes run. On CUDA the per-layer PCA is computed with
        ``torch.linalg.svd`` / ``torch.svd_lowrank`` on the device; on the CPU with
        ``sklearn.decomposition.PCA``. Both give sklearn's components and signs.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the activations and of ``transform``'s output.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects, for 2-D ``X``.
    network_output : None, str or callable, default=None
        How the network is called (see :class:`EmbeddingExtractor`).
    n_jobs : int, default=None
        Parallel folds in ``cross_validate``.
    random_state : int, RandomState instance or None, default=None
        Seeds the randomized SVD of the PCAs (per layer and inside the probes).

    Attributes
    ----------
    embedding_ : EmbeddingExtractor
        The fitted extractor that produces the layer activations.
    layers_ : list of str
        Probed layers, in order.
    pca_ : dict of str to PCA
        One fitted ``sklearn.decomposition.PCA`` per layer (the ``transform`` step).
    explained_variance_ : dict of str to ndarray
        Per layer, the cumulative explained-variance ratio of the first ``j + 1``
        components, for as many components as were computed (at least
        ``n_components`` and the largest probed ``k``; the whole spectrum when
        ``n_components`` is a float).
    probe_results_ : dict of str to ndarray
        Only when fitted with ``y``. Columns ``layer, n_components, explained_variance,
        probe, score_mean, score_std`` (accuracy over the folds), one entry per layer,
        ``k`` and probe, like sklearn's ``cv_results_`` (``pandas.DataFrame(probe_results_)``
        makes a table of it). The entry with ``n_components`` equal to the layer's width
        is the probe on the full-width layer (no PCA), with ``explained_variance`` 1.
    classes_ : ndarray
        Class labels seen in ``y`` (only when fitted with ``y``).
    feature_slices_ : dict of str to slice
        Columns of ``transform``'s output that hold each layer's components.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.

    See Also
    --------
    sknn_kernels.metrics.neural_collapse : NC1/NC2/NC4 of a layer's representation.
    sknn_kernels.metrics.collapse_onset : First layer whose NCC probe matches the linear one.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.features.probe import PCAProbe
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    >>> probe = PCAProbe(net, layers=["0", "1"], n_components=2, probe_components=(1, 2),
    ...                  cv=3, device="cpu", dtype="float64", random_state=0).fit(X, y)
    >>> probe.transform(X).shape
    (60, 4)
    >>> probe.get_feature_names_out()[:3]
    array(['0__pc0', '0__pc1', '1__pc0'], dtype=object)
    >>> sorted(set(probe.probe_results_["probe"]))
    ['knn', 'linear', 'ncc']
    >>> list(probe.components_needed(0.9))  # doctest: +NORMALIZE_WHITESPACE
    ['layer', 'probe', 'n_components', 'explained_variance', 'score_mean', 'full_score']
    """

    _parameter_constraints = {
        "network": "no_validation",
        "layers": [None, str, list, tuple],
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
        ],
        "probe_components": ["array-like"],
        "probes": [list, tuple, dict],
        "cv": ["cv_object"],
        "pooling": [StrOptions(set(POOLINGS))],
        "device": "no_validation",
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        **CALL_CONSTRAINTS,
    }

    def __init__(
        self,
        network=None,
        *,
        layers=None,
        n_components=0.95,
        probe_components=(1, 2, 5, 10, 20, 50, 100),
        probes=("knn", "ncc", "linear"),
        cv=5,
        pooling="flatten",
        batch_size=256,
        device="auto",
        dtype="float32",
        input_shape=None,
        network_output=None,
        n_jobs=None,
        random_state=None,
    ):
        self.network = network
        self.layers = layers
        self.n_components = n_components
        self.probe_components = probe_components
        self.probes = probes
        self.cv = cv
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape
        self.network_output = network_output
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)  # user probes: validated by their fit
    def fit(self, X, y=None):
        """Fit a PCA per layer and, with ``y``, cross-validate the probes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            Network inputs.
        y : array-like of shape (n_samples,), default=None
            Class labels; without them only the PCAs are fitted.

        Returns
        -------
        self : PCAProbe
            The fitted probe.
        """
        X = self._validate_network_X(X, reset=True)
        n = n_samples(X)
        if n < 2:
            raise ValueError(f"PCAProbe needs at least 2 samples; got {n} sample.")
        probes = self._resolve_probes()
        for stale in ("probe_results_", "classes_"):  # a refit without y must not keep them
            self.__dict__.pop(stale, None)
        if y is not None:
            y = column_or_1d(y, warn=True)
            if y.shape[0] != n:
                raise ValueError(f"X has {n} samples but y has {y.shape[0]}.")
            check_classification_targets(y)
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(
                    "PCAProbe's probes are classifiers and need at least two classes in y; "
                    f"got 1 class ({self.classes_[0]!r}). Fit without y to get only the PCAs."
                )

        self.embedding_ = EmbeddingExtractor(
            self.network,
            layers=self.layers,
            pooling=self.pooling,
            batch_size=self.batch_size,
            device=self.device,
            dtype=self.dtype,
            input_shape=self.input_shape,
            network_output=self.network_output,
        ).fit(X)
        self.layers_ = list(self.embedding_.layers_)
        self.device_ = self.embedding_.device_
        blocks = self._layer_blocks(X)

        splits = None
        if y is not None:
            # split row indices: sklearn's splitters cannot count the rows of a dict
            splits = list(check_cv(self.cv, y, classifier=True).split(np.zeros((n, 1)), y))
        n_fold_train = min(len(train) for train, _ in splits) if splits else n

        random_state = check_random_state(self.random_state)
        # one seed for every PCA, so all layers and probes see the same solver state
        seed = random_state.randint(np.iinfo(np.int32).max)
        self.pca_, self.explained_variance_, rows = {}, {}, []
        for layer, Z in zip(self.layers_, blocks):
            ks = _probe_sizes(self.probe_components, Z.shape[1], n_fold_train) if splits else []
            n_keep = self._check_n_components(layer, Z)
            n_max = min(Z.shape) if n_keep is None else max([n_keep, *ks])
            parts = _pca_parts(Z, n_max, self.device_, seed)
            if n_keep is None:  # variance fraction, chosen as sklearn's PCA does
                cumulative = np.cumsum(parts["ratio"], dtype=np.float64)
                n_keep = int(np.searchsorted(cumulative, self.n_components, side="right") + 1)
                n_keep = min(n_keep, len(parts["ratio"]))
            self.pca_[layer] = _build_pca(parts, n_keep, seed)
            self.explained_variance_[layer] = np.cumsum(parts["ratio"])
            if splits:
                if parts["total"] == 0:
                    raise ValueError(
                        f"Layer {layer!r} is constant over the {Z.shape[0]} samples (zero "
                        "variance, e.g. saturated or dead units): its probes are undefined. Drop "
                        "the layer or check the inputs' scale."
                    )
                rows += self._probe_layer(layer, Z, y, splits, ks, probes, seed)

        if splits:
            self.probe_results_ = from_rows(rows, RESULT_COLUMNS)
        widths = [self.pca_[layer].n_components_ for layer in self.layers_]
        stops = np.cumsum(widths)
        self.feature_slices_ = {
            layer: slice(int(stop - w), int(stop))
            for layer, w, stop in zip(self.layers_, widths, stops)
        }
        return self

    def _resolve_probes(self):
        if isinstance(self.probes, dict):
            if not self.probes:
                raise ValueError("`probes` is empty.")
            return {name: clone(est) for name, est in self.probes.items()}
        if len(self.probes) == 0:
            raise ValueError("`probes` is empty: name at least one of 'knn', 'ncc', 'linear'.")
        return {name: make_probe(name) for name in self.probes}

    def _check_n_components(self, layer, Z):
        """The int number of components to keep, or None for a variance fraction."""
        if not isinstance(self.n_components, (Integral, np.integer)):
            return None
        n_samples, width = Z.shape
        if self.n_components > width:
            raise ValueError(
                f"Layer {layer!r} has width {width}, narrower than "
                f"n_components={self.n_components}: lower n_components, pass a variance "
                "fraction (e.g. 0.95) or drop the layer."
            )
        if self.n_components > n_samples:
            raise ValueError(
                f"n_components={self.n_components} exceeds the number of samples ({n_samples})."
            )
        return int(self.n_components)

    def _probe_layer(self, layer, Z, y, splits, ks, probes, seed):
        """Rows of probe_results_ for one layer: each k, then the full width."""
        ratio = self.explained_variance_[layer]
        rows = []
        for name, classifier in probes.items():
            for k in [*ks, None]:
                steps = [classifier] if k is None else [PCA(k, random_state=seed), classifier]
                with warnings.catch_warnings():
                    # dead ReLU units have zero within-class spread; NearestCentroid warns
                    # about it although the warning only matters for shrink_threshold
                    warnings.filterwarnings(
                        "ignore", message=".*within_class_std_dev_", category=UserWarning
                    )
                    scores = cross_validate(
                        make_pipeline(*steps), Z, y, cv=splits, n_jobs=self.n_jobs
                    )
                scores = scores["test_score"]
                n = Z.shape[1] if k is None else k
                explained = 1.0 if k is None else float(ratio[k - 1])
                rows.append((layer, n, explained, name, float(scores.mean()), float(scores.std())))
        return rows

    # ------------------------------------------------------------- transform
    def transform(self, X):
        """Project each layer on its principal components and concatenate.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
            Network inputs.

        Returns
        -------
        Z : ndarray of shape (n_samples, sum of n_components_ over layers)
            Columns ``feature_slices_[layer]`` hold that layer's PC scores.
        """
        check_is_fitted(self)
        X = self._validate_network_X(X, reset=False)
        blocks = self._layer_blocks(X)
        return np.hstack([self.pca_[layer].transform(Z) for layer, Z in zip(self.layers_, blocks)])

    def get_feature_names_out(self, input_features=None):
        """Output names ``"<layer>__pc<j>"``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked for consistency with the input seen at fit.

        Returns
        -------
        feature_names_out : ndarray of str objects
            One name per column of ``transform``'s output.
        """
        check_is_fitted(self)
        _check_input_features(self, input_features)
        return np.asarray(
            [
                f"{layer}__pc{j}"
                for layer in self.layers_
                for j in range(self.pca_[layer].n_components_)
            ],
            dtype=object,
        )

    def components_needed(self, score_fraction=0.99):
        """Per layer and probe, the fewest components reaching a fraction of the full-width score.

        Parameters
        ----------
        score_fraction : float, default=0.99
            Target as a fraction of the probe's cross-validated accuracy on the
            full-width layer.

        Returns
        -------
        results : dict of str to ndarray
            Columns ``layer, probe, n_components, explained_variance, score_mean,
            full_score`` (one entry per layer and probe): the smallest ``k`` among those probed (the layer's width
            when none of the smaller ones is enough), its cumulative explained
            variance ratio and score, and the full-width score.
        """
        check_is_fitted(self, "probe_results_")
        if not 0 < score_fraction <= 1:
            raise ValueError(f"score_fraction must be in (0, 1]; got {score_fraction!r}.")
        results = self.probe_results_
        rows = []
        for layer in self.layers_:
            width = (
                self.embedding_.feature_slices_[layer].stop
                - self.embedding_.feature_slices_[layer].start
            )
            for name in dict.fromkeys(results["probe"]):
                mask = (results["layer"] == layer) & (results["probe"] == name)
                ks, scores, explained = (
                    results[c][mask] for c in ("n_components", "score_mean", "explained_variance")
                )
                full = scores[ks == width][0]
                order = np.argsort(ks)
                hit = order[np.flatnonzero(scores[order] >= score_fraction * full)[0]]
                rows.append(
                    (
                        layer,
                        name,
                        int(ks[hit]),
                        float(explained[hit]),
                        float(scores[hit]),
                        float(full),
                    )
                )
        return from_rows(
            rows,
            ("layer", "probe", "n_components", "explained_variance", "score_mean", "full_score"),
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags

    # --------------------------------------------------------------- helpers
    def _layer_blocks(self, X):
        """One (n, width) activation block per layer, from the fitted extractor."""
        Z = self.embedding_.transform(X)
        return [Z[:, self.embedding_.feature_slices_[layer]] for layer in self.layers_]


def _probe_sizes(probe_components, width, n_train):
    """Distinct k to probe, each capped by width and training size.

    The width itself is left out: the full-width row (no PCA) stands for it.
    """
    sizes = np.asarray(probe_components, dtype=int).ravel()
    if sizes.size and sizes.min() < 1:
        raise ValueError(f"probe_components must be positive integers; got {list(sizes)}.")
    capped = {int(min(k, width, n_train)) for k in sizes}
    return sorted(k for k in capped if k < width)


def _pca_parts(Z, n_max, device, seed):
    """Mean, top ``n_max`` components, their variances and the total variance of ``Z``.

    sklearn's PCA (solver chosen by its ``"auto"`` rule: exact for small or
    float-fraction problems, randomized for wide layers) on the CPU; torch on CUDA
    with the same sign convention, so both agree.
    """
    if torch.device(device).type == "cuda":
        return _torch_pca_parts(Z, n_max, device)
    pca = PCA(n_max, random_state=seed).fit(Z)
    total = float(np.var(Z, axis=0, ddof=1).sum())
    return {
        "mean": pca.mean_,
        "components": pca.components_,
        "variance": pca.explained_variance_,
        "ratio": pca.explained_variance_ / total
        if total > 0
        else np.zeros_like(pca.explained_variance_),
        "total": total,
        "n_samples": Z.shape[0],
    }


def _torch_pca_parts(Z, n_max, device):
    """:func:`_pca_parts` by torch on ``device``.

    Exact SVD, or a randomized one for few components of a big matrix (sklearn's rule).
    """
    device = resolve_device(device)
    Zt = torch.as_tensor(Z, device=device)
    mean = Zt.mean(0)
    Zc = Zt - mean
    n, d = Zc.shape
    if n_max < 0.8 * min(n, d) and max(n, d) > 500:  # sklearn's "auto" rule for a randomized SVD
        U, S, V = torch.svd_lowrank(Zc, q=min(n_max + 10, min(n, d)), niter=7)
        Vt = V.T
    else:
        U, S, Vt = torch.linalg.svd(Zc, full_matrices=False)
    U, Vt, S = U[:, :n_max].cpu().numpy(), Vt[:n_max].cpu().numpy(), S[:n_max].cpu().numpy()
    _, Vt = svd_flip(U, Vt, u_based_decision=False)
    total = float(Zc.pow(2).sum().item() / (n - 1))
    variance = S**2 / (n - 1)
    return {
        "mean": mean.cpu().numpy(),
        "components": Vt,
        "variance": variance,
        "ratio": variance / total if total > 0 else np.zeros_like(variance),
        "total": total,
        "n_samples": n,
    }


def _build_pca(parts, k, seed):
    """A fitted ``sklearn.decomposition.PCA`` holding the top ``k`` of ``parts``."""
    n_samples, width = parts["n_samples"], parts["components"].shape[1]
    pca = PCA(k, random_state=seed)
    pca.n_components_ = k
    pca.n_samples_ = n_samples
    pca.n_features_in_ = width
    pca.mean_ = parts["mean"]
    pca.components_ = parts["components"][:k].copy()
    pca.explained_variance_ = parts["variance"][:k].copy()
    pca.explained_variance_ratio_ = parts["ratio"][:k].copy()
    pca.singular_values_ = np.sqrt(pca.explained_variance_ * (n_samples - 1))
    rest = min(n_samples, width) - k
    pca.noise_variance_ = (
        max(parts["total"] - pca.explained_variance_.sum(), 0.0) / rest if rest > 0 else 0.0
    )
    return pca
