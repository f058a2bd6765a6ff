"""Which input drives the prediction: Shapley values and MM-SHAP shares of named inputs or channel groups.

A network with several inputs (one encoder per survey, a text and an image...) or one tensor whose
channels come from different sources (bands of several surveys stacked after resampling) raises the
question of how much each input contributes. :class:`InputShares` treats each named input, or each
group of channels, as a player of a cooperative game whose value is the explained output ``f``
(a class logit or probability, a regression output, or the expected value ``Σ_c t_c p_c(x)`` of a
distribution over target bins with centres ``t_c``) when the players outside a coalition are
replaced by a baseline (zeros, the training mean, or each row of a background set, averaged over):

* exact Shapley values over the ``2^m`` coalitions (batched through the network; ``m ≤ 12``),
  which sum to ``f(x) - E_b f(b)`` (efficiency);
* per-element integrated gradients or gradient SHAP (Captum, optional extra) summed per player;
* each player's share of the total absolute attribution, ``|φ_g| / Σ_h |φ_h|`` (MM-SHAP,
  Parcalabescu & Frank, ACL 2023), per sample and averaged over samples or bins of the target or
  of the prediction (:meth:`InputShares.share_results`, :func:`input_shares`).

:func:`~sknn_kernels.attribution.branches.kernel_shares` gives the NTK view of late fusion: each
input branch's share of the network's tangent kernel.
"""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from .._results import from_rows
from ..network._adapter import Inputs
from ..network._base import CALL_CONSTRAINTS, NetworkEstimatorMixin, first_rows, is_named, n_samples
from ._players import coalitions, group_sums, resolve_players, shapley_weights

__all__ = ["InputShares", "input_shares"]

_METHODS = ("shapley", "integrated_gradients", "gradient_shap")


class InputShares(NetworkEstimatorMixin, BaseEstimator):
    """Shapley values and MM-SHAP shares of a network's inputs (named inputs or channel groups).

    See the module docstring. ``fit`` resolves the players and stores the baseline (or the
    background rows); :meth:`attribute` returns one value per sample and player, :meth:`shares`
    their absolute shares, :meth:`share_results` the shares averaged overall and per bin.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The trained network (never modified).
    groups : dict of str to list, default=None
        The players. Dict inputs: player name -> list of input keys (``None``: each key is a
        player). One tensor: player name -> list of indices along ``group_axis``, e.g.
        ``{"uv": [0, 1], "optical": [2, 3, 4, 5, 6], "ir": [7, 8]}`` (``None``: each channel).
        Every key or channel must belong to exactly one player.
    group_axis : int, default=1
        The axis of the network's input tensor that ``groups`` indexes (1: channels of
        ``(n, C, H, W)`` images, features of ``(n, d)`` tables).
    baseline : {"zeros", "mean", "background"}, array-like or dict, default="mean"
        What replaces a player outside a coalition: zeros, the mean of ``X`` at fit, each of
        ``n_background`` rows of ``X`` drawn at fit (values averaged over them: interventional
        SHAP), or given rows (one sample or several, in the form of ``X``).
    n_background : int, default=16
        Rows drawn for ``baseline="background"`` (``n_background × 2^m`` forward passes per
        sample for exact Shapley values).
    output : {"raw", "proba", "expected"}, default="raw"
        The explained scalar: ``"raw"`` the network's output column ``target`` (a class logit,
        or a regression output), ``"proba"`` its softmax probability, ``"expected"`` the
        expected value ``Σ_c bin_centers[c] softmax(f)_c`` of a distribution over target bins.
    bin_centers : array-like of shape (n_outputs,), default=None
        The bin centres for ``output="expected"``.
    method : {"shapley", "integrated_gradients", "gradient_shap"}, default="shapley"
        Default method of :meth:`attribute`: exact Shapley values over the players, or
        per-element gradient attributions (Captum) summed per player.
    max_players : int, default=12
        Refuse exact Shapley values for more players (``2^m`` coalitions).
    n_steps : int, default=32
        Integration steps of integrated gradients; samples per input of gradient SHAP.
    random_state : int, RandomState instance or None, default=None
        Draw of the background rows and of gradient SHAP's noise.
    batch_size : int, default=256
        Rows per forward pass (coalitions and background rows are batched together).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where the network runs.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the network copy and its inputs.
    input_shape : tuple of int, default=None
        Per-sample shape the network expects when ``X`` is 2-D.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits (see
        :class:`~sknn_kernels.EmbeddingExtractor`).

    Attributes
    ----------
    players_ : tuple of str
        Player names, in the order of the columns of :meth:`attribute`.
    baseline_ : ndarray or dict of ndarray
        Baseline rows ``(n_rows, ...)`` in the form of ``X`` (one row except for a background).
    n_outputs_ : int
        Number of network outputs.
    device_ : str
        Device the network runs on.
    n_features_in_ : int
        Number of features of ``X`` at fit (array inputs).
    input_keys_ : tuple of str
        Names of the inputs at fit (dict inputs, instead of ``n_features_in_``).

    See Also
    --------
    input_shares : Fit and tabulate in one call.
    sknn_kernels.attribution.branches.kernel_shares : Each input branch's share of the NTK.

    Notes
    -----
    Exact Shapley values cost ``2^m × n_rows`` forward passes per sample (``n_rows`` baseline
    rows); integrated gradients ``n_steps × n_rows`` forward and backward passes. Shapley
    values depend on the baseline: the training mean answers "what does this input add to an
    average one", zeros "to no signal at all".

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.input_shares import InputShares
    >>> class Fuse(torch.nn.Module):
    ...     def forward(self, a, b):
    ...         return 2 * a.sum(1, keepdim=True) + 0 * b.sum(1, keepdim=True)
    >>> X = {"a": np.ones((4, 3), np.float32), "b": np.ones((4, 2), np.float32)}
    >>> est = InputShares(Fuse(), baseline="zeros", device="cpu").fit(X)
    >>> est.players_
    ('a', 'b')
    >>> est.attribute(X)[0]
    array([6., 0.])
    >>> est.shares(X)[0]
    array([1., 0.])
    """

    _parameter_constraints = {
        "network": "no_validation",
        "groups": [dict, None],
        "group_axis": [Interval(Integral, 1, None, closed="left")],
        "baseline": [StrOptions({"zeros", "mean", "background"}), "array-like", dict],
        "n_background": [Interval(Integral, 1, None, closed="left")],
        "output": [StrOptions({"raw", "proba", "expected"})],
        "bin_centers": ["array-like", None],
        "method": [StrOptions(set(_METHODS))],
        "max_players": [Interval(Integral, 1, 20, closed="both")],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "device": "no_validation",
        **CALL_CONSTRAINTS,
    }

    def __init__(
        self,
        network=None,
        *,
        groups=None,
        group_axis=1,
        baseline="mean",
        n_background=16,
        output="raw",
        bin_centers=None,
        method="shapley",
        max_players=12,
        n_steps=32,
        random_state=None,
        batch_size=256,
        device="auto",
        dtype="float32",
        input_shape=None,
        network_output=None,
    ):
        self.network = network
        self.groups = groups
        self.group_axis = group_axis
        self.baseline = baseline
        self.n_background = n_background
        self.output = output
        self.bin_centers = bin_centers
        self.method = method
        self.max_players = max_players
        self.n_steps = n_steps
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.input_shape = input_shape
        self.network_output = network_output

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Resolve the players and store the baseline (mean or background rows of ``X``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or dict of them
            Representative inputs (the training set, or a sample of it).
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X, adapter = self._fit_network(X)
        first = adapter.inputs(first_rows(X))
        self._players = resolve_players(first, self.groups, self.group_axis, self.max_players)
        self.players_ = self._players.names
        self.n_outputs_ = int(adapter.predict(first).shape[1])
        if self.output == "expected":
            centers = (
                np.asarray(self.bin_centers, dtype=np.float64).ravel()
                if (self.bin_centers is not None)
                else None
            )
            if centers is None or len(centers) != self.n_outputs_:
                raise ValueError(
                    f"output='expected' needs bin_centers with one value per network output "
                    f"({self.n_outputs_}); got {self.bin_centers!r}."
                )
            self._centers = torch.as_tensor(centers)
        self.baseline_ = self._make_baseline(X)
        return self

    def _make_baseline(self, X):
        if isinstance(self.baseline, str):
            if self.baseline == "background":
                rng = check_random_state(self.random_state)
                n = n_samples(X)
                idx = np.sort(rng.choice(n, size=min(n, self.n_background), replace=False))
                return _apply(X, lambda a: a[idx])
            if self.baseline == "zeros":
                return _apply(X, lambda a: np.zeros_like(a[:1]))
            ints = [a.dtype.kind != "f" for a in (X.values() if is_named(X) else [X])]
            if any(ints):
                raise ValueError(
                    "baseline='mean' needs floating-point inputs; for token ids or category "
                    "codes use baseline='background' or a given baseline row (e.g. pad tokens)."
                )
            return _apply(X, lambda a: a.mean(0, keepdims=True, dtype=np.float64).astype(a.dtype))
        return self._validate_network_X(self.baseline, reset=False)

    # ------------------------------------------------------------------ outputs
    def _scalar(self, logits, target):
        """The explained output of each row of ``logits`` (a 1-D tensor)."""
        if self.output == "expected":
            p = torch.softmax(logits.double(), dim=1)
            return p @ self._centers.to(p.device)
        values = torch.softmax(logits, dim=1) if self.output == "proba" else logits
        return values.gather(1, target[:, None].to(values.device)).squeeze(1)

    def _targets(self, adapter, X, target):
        """Per-sample output column (long tensor): given, or the predicted class."""
        n = n_samples(X)
        if target is None:
            if self.n_outputs_ == 1 or self.output == "expected":
                return torch.zeros(n, dtype=torch.long)
            return adapter.predict(X).argmax(1)
        t = np.asarray(target)
        t = np.full(n, int(t)) if t.ndim == 0 else t.ravel()
        if len(t) != n or t.dtype.kind not in "iu" or t.min() < 0 or t.max() >= self.n_outputs_:
            raise ValueError(
                f"target must be an output index in [0, {self.n_outputs_}) or one per sample "
                f"({n}); got {target!r}."
            )
        return torch.as_tensor(t, dtype=torch.long)

    def explained_output(self, X, *, target=None):
        """The explained scalar ``f(x)`` of each sample (see ``output``).

        Parameters
        ----------
        X : array-like or dict
            Inputs in the form seen at fit.
        target : int or array-like of int, default=None
            Output column (``None``: the predicted class; ignored for ``output="expected"``).

        Returns
        -------
        values : ndarray of shape (n_samples,)
            The value Shapley values decompose (minus its mean over the baseline rows).
        """
        X, adapter = self._transform_network(X)
        t = self._targets(adapter, X, target)
        return self._scalar(adapter.predict(X), t).double().numpy()

    # ------------------------------------------------------------------ attributions
    def attribute(self, X, *, method=None, target=None):
        """One attribution per sample and player.

        Parameters
        ----------
        X : array-like or dict
            Inputs in the form seen at fit.
        method : {"shapley", "integrated_gradients", "gradient_shap"}, default=None
            ``None``: the ``method`` parameter. The first two satisfy efficiency: each row sums
            to ``f(x)`` minus the mean of ``f`` over the baseline rows.
        target : int or array-like of int, default=None
            Output column explained (``None``: each sample's predicted class).

        Returns
        -------
        phi : ndarray of shape (n_samples, n_players)
            Columns in the order of ``players_``.
        """
        method = self.method if method is None else method
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
        X, adapter = self._transform_network(X)
        t = self._targets(adapter, X, target)
        if method == "shapley":
            return self._coalition_values(adapter, X, t) @ shapley_weights(len(self.players_))
        return self._gradient_attributions(adapter, X, t, method)

    def _coalition_values(self, adapter, X, t):
        """``v(S)`` of every sample and coalition, averaged over the baseline rows: ``(n, 2^m)``."""
        x, base = adapter.inputs(X), adapter.inputs(self.baseline_)
        Z = coalitions(len(self.players_))
        n, K, nb = len(x), len(Z), len(base)
        total, out = n * K * nb, np.empty(n * K * nb)
        with torch.no_grad():
            for start in range(0, total, self.batch_size):
                flat = torch.arange(start, min(total, start + self.batch_size))
                i, k, j = flat // (K * nb), (flat // nb) % K, flat % nb
                batch = self._players.mix(x[i], base[j], Z[k]).to(adapter.device)
                values = self._scalar(adapter.forward(batch), t[i])
                out[start : start + len(flat)] = values.double().cpu().numpy()
        return out.reshape(n, K, nb).mean(2)

    def _gradient_attributions(self, adapter, X, t, method):
        try:
            import captum.attr as cattr
        except ImportError as exc:
            raise ImportError(
                f"method={method!r} uses Captum: pip install 'sknn-kernels[attribution]' (or "
                "captum); method='shapley' needs nothing more."
            ) from exc
        x, base = adapter.inputs(X), adapter.inputs(self.baseline_)
        if any(not v.is_floating_point() for v in x.tensors()):
            raise ValueError(
                f"method={method!r} differentiates the inputs, which must be floating point; "
                "for token ids use method='shapley'."
            )
        keys = list(x.data) if x.named else None

        def forward(*args):
            *tensors, target = args
            batch = dict(zip(keys, tensors)) if keys else tensors[0]
            return self._scalar(adapter.forward(Inputs(batch)), target)

        inputs = tuple(v.to(adapter.device) for v in x.tensors())
        bases = tuple(v.to(adapter.device) for v in base.tensors())
        target = t.to(adapter.device)
        if method == "gradient_shap":
            seed = check_random_state(self.random_state).randint(2**31 - 1)
            # Captum draws from both global generators: seed them, then restore the user's
            state = np.random.get_state()  # noqa: NPY002
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(seed))
                    np.random.seed(int(seed))  # noqa: NPY002
                    attr = cattr.GradientShap(forward).attribute(
                        inputs, bases, n_samples=self.n_steps, additional_forward_args=(target,)
                    )
            finally:
                np.random.set_state(state)  # noqa: NPY002
            return group_sums(self._players, [a.detach().cpu() for a in attr], keys)
        ig, total = cattr.IntegratedGradients(forward), 0
        for j in range(len(base)):  # IG is linear in the baseline's averaging: one pass per row
            row = tuple(b[j : j + 1].expand_as(v) for b, v in zip(bases, inputs))
            attr = ig.attribute(
                inputs,
                row,
                n_steps=self.n_steps,
                method="gausslegendre",
                additional_forward_args=(target,),
                internal_batch_size=self.batch_size,
            )
            total = total + group_sums(self._players, [a.detach().cpu() for a in attr], keys)
        return total / len(base)

    def shares(self, X, *, method=None, target=None):
        """MM-SHAP shares: each player's part of the sample's total absolute attribution.

        Parameters
        ----------
        X : array-like or dict
            Inputs in the form seen at fit.
        method : str, default=None
            As in :meth:`attribute`.
        target : int or array-like of int, default=None
            As in :meth:`attribute`.

        Returns
        -------
        shares : ndarray of shape (n_samples, n_players)
            Non-negative rows summing to 1 (rows with no attribution at all are uniform).
        """
        return _shares(self.attribute(X, method=method, target=target))

    def share_results(self, X, y=None, *, by="target", bins=5, method=None, target=None):
        """Shares and attributions averaged over all samples and per bin of ``y`` or ``f(x)``.

        Parameters
        ----------
        X : array-like or dict
            Inputs in the form seen at fit.
        y : array-like of shape (n_samples,), default=None
            The target (e.g. the redshift) for ``by="target"``.
        by : {"target", "prediction"}, default="target"
            Bin the samples by ``y`` or by the explained output ``f(x)``.
        bins : int or array-like, default=5
            Number of equal-width bins over the range of the binned values, or bin edges.
        method : str, default=None
            As in :meth:`attribute`.
        target : int or array-like of int, default=None
            As in :meth:`attribute`.

        Returns
        -------
        results : dict of str to ndarray
            One row per bin and player (bin ``-1``: all samples), columns ``bin``,
            ``bin_low``, ``bin_high``, ``n_samples``, ``player``, ``share`` (mean MM-SHAP
            share), ``share_std``, ``attribution`` (mean signed value) and ``abs_attribution``.
        """
        phi = self.attribute(X, method=method, target=target)
        if by == "target":
            if y is None:
                raise ValueError("by='target' needs y; pass y or use by='prediction'.")
            key = np.asarray(y, dtype=np.float64).ravel()
        elif by == "prediction":
            key = self.explained_output(X, target=target)
        else:
            raise ValueError(f"by must be 'target' or 'prediction'; got {by!r}.")
        if len(key) != len(phi):
            raise ValueError(f"X has {len(phi)} samples but y has {len(key)}.")
        return binned_table(phi, self.players_, key, bins)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.requires_fit = True
        return tags


def _apply(X, fn):
    return {k: fn(v) for k, v in X.items()} if is_named(X) else fn(X)


def _shares(phi):
    a = np.abs(phi)
    total = a.sum(1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[1])
    return np.where(total > 0, a / np.where(total > 0, total, 1), uniform)


def binned_table(values, names, key, bins, *, share=True):
    """Rows per bin of ``key`` and column of ``values`` (bin ``-1``: all samples).

    The last bin includes its upper edge; samples outside the edges count only in bin ``-1``.

    ``values`` ``(n, m)`` are attributions (``share=True``: their MM-SHAP shares are averaged
    too) or already shares (``share=False``).
    """
    key = np.asarray(key, dtype=np.float64)
    edges = (
        np.linspace(key.min(), key.max(), int(bins) + 1)
        if np.ndim(bins) == 0
        else np.asarray(bins, dtype=np.float64)
    )
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be a positive int or increasing edges; got {bins!r}.")
    which = np.clip(np.searchsorted(edges, key, side="right") - 1, 0, len(edges) - 2)
    which[(key < edges[0]) | (key > edges[-1])] = -1  # outside the edges: overall row only
    s = _shares(values) if share else values
    rows = []
    masks = [(-1, np.ones(len(key), bool), key.min(), key.max())]
    masks += [(b, which == b, edges[b], edges[b + 1]) for b in range(len(edges) - 1)]
    for b, mask, low, high in masks:
        count = int(mask.sum())
        for p, name in enumerate(names):
            v, sp_ = values[mask, p], s[mask, p]
            rows.append(
                {
                    "bin": b,
                    "bin_low": float(low),
                    "bin_high": float(high),
                    "n_samples": count,
                    "player": str(name),
                    "share": float(sp_.mean()) if count else np.nan,
                    "share_std": float(sp_.std()) if count else np.nan,
                    "attribution": float(v.mean()) if count else np.nan,
                    "abs_attribution": float(np.abs(v).mean()) if count else np.nan,
                }
            )
    return from_rows(rows)


def input_shares(network, X, y=None, *, X_background=None, by="target", bins=5, **params):
    """Fit :class:`InputShares` and tabulate the shares overall and per bin, in one call.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The trained network.
    X : array-like or dict
        The explained samples.
    y : array-like of shape (n_samples,), default=None
        Their target, for ``by="target"``.
    X_background : array-like or dict, default=None
        Where the baseline (mean or background rows) comes from; ``None``: ``X``.
    by : {"target", "prediction"}, default="target"
        As in :meth:`InputShares.share_results`; ``"target"`` without ``y`` falls back to
        ``"prediction"``.
    bins : int or array-like, default=5
        As in :meth:`InputShares.share_results`.
    **params : dict
        Parameters of :class:`InputShares` (``groups``, ``baseline``, ``output``, ...).

    Returns
    -------
    results : dict of str to ndarray
        See :meth:`InputShares.share_results`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.input_shares import input_shares
    >>> net = torch.nn.Linear(3, 1)
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> res = input_shares(net, X, groups={"a": [0], "bc": [1, 2]}, bins=2, device="cpu")
    >>> sorted(set(res["player"])), sorted(set(res["bin"].tolist()))
    (['a', 'bc'], [-1, 0, 1])
    """
    est = InputShares(network, **params)
    est.fit(X if X_background is None else X_background)
    if by == "target" and y is None:
        by = "prediction"
    return est.share_results(X, y, by=by, bins=bins)
