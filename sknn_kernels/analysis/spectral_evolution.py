"""Spectra across training: weights, conjugate and neural tangent kernels over checkpoints.

Wang, Engel, Sarwate, Dumitriu & Chiang ("Spectral evolution and invariance in
linear-width neural networks", NeurIPS 2023, arXiv 2211.06506) show that with small
learning rates the bulk of the weight, CK and NTK spectra does not move during training
(gradient descent or SGD), that large learning rates create outliers whose eigenvectors
align with the data, and that adaptive optimisers (Adam) give heavy-tailed spectra.
:func:`spectral_evolution` measures each of these on a list of checkpoints, reusing
:func:`~sknn_kernels.analysis.spectral.weight_spectra`, :func:`~sknn_kernels.analysis.spectral.fit_power_law`
and :func:`~sknn_kernels.analysis.spectral.kernel_alignment`.
"""

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.utils import Bunch
from sklearn.utils.validation import column_or_1d

from ..features.embedding import EmbeddingExtractor
from ..network._adapter import unwrap_network
from ..ntk import empirical_ntk
from .spectral import _center, fit_power_law, kernel_alignment, weight_spectra

__all__ = [
    "SpectralEvolution",
    "label_alignment",
    "marchenko_pastur_edge",
    "spectral_evolution",
]


@dataclass(frozen=True)
class SpectralEvolution:
    """Spectral summaries of a network at each checkpoint.

    Returned by :func:`spectral_evolution`.
    Each parameter is also a read-only attribute of the same name.

    Parameters
    ----------
    steps : ndarray of shape (n_checkpoints,)
        Step (or epoch) of each checkpoint.
    weights : dict of str to Bunch
        Per weight matrix (names of ``named_parameters()``): ``shape``, ``eigenvalues``
        (n_checkpoints, min(shape)) of ``WᵀW`` in descending order, ``bulk_edge`` (the
        Marchenko–Pastur edge of :func:`marchenko_pastur_edge`), ``n_outliers``
        (eigenvalues above it), ``alpha`` (power-law exponent of the eigenvalues' tail,
        NaN when it cannot be fitted) and ``distance`` (``‖W_t − W_0‖_F / ‖W_0‖_F``),
        each of shape (n_checkpoints,).
    kernels : dict of str to Bunch
        Per kernel (``"ck"``, ``"ntk"``) on the fixed batch: ``eigenvalues``
        (n_checkpoints, n_samples) in descending order, ``distance``
        (``‖K_t − K_0‖_F / ‖K_0‖_F``), ``alignment`` (centred alignment with ``K_0``),
        ``label_alignment`` (:func:`label_alignment` of the top eigenvector; NaN without
        labels) and ``alpha``, each of shape (n_checkpoints,).
    """

    steps: np.ndarray
    weights: dict = field(default_factory=dict)
    kernels: dict = field(default_factory=dict)


def marchenko_pastur_edge(W):
    """Upper edge of the Marchenko–Pastur bulk for the eigenvalues of ``WᵀW``.

    For an ``r × c`` matrix with i.i.d. entries of variance ``σ²`` the largest singular
    value tends to ``σ(√r + √c)``, so the bulk of ``WᵀW`` ends at ``σ²(√r + √c)²``. ``σ²``
    is estimated as ``‖W‖_F² / (rc)`` (the entries' mean square; a few spikes barely
    change it). Eigenvalues above the edge are outliers, i.e. structure beyond noise.

    Parameters
    ----------
    W : array-like of shape (r, c)
        A weight matrix.

    Returns
    -------
    edge : float
        ``‖W‖_F² (√r + √c)² / (rc)``: eigenvalues of ``WᵀW`` above it are outliers.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.spectral_evolution import marchenko_pastur_edge
    >>> W = np.random.default_rng(0).normal(scale=0.1, size=(400, 100))
    >>> edge = marchenko_pastur_edge(W)
    >>> round(edge, 2), bool(np.linalg.svd(W, compute_uv=False)[0] ** 2 < 1.05 * edge)
    (9.03, True)
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a matrix; got shape {W.shape}.")
    r, c = W.shape
    return float((W**2).mean() * (np.sqrt(r) + np.sqrt(c)) ** 2)


def label_alignment(K, y):
    """How much of the top eigenvector of the centred kernel lies in the labels' span.

    ``‖Qᵀ v₁‖`` with ``v₁`` the unit top eigenvector of ``H K H`` (``H = I − 11ᵀ/n``) and
    ``Q`` an orthonormal basis of the centred one-hot label matrix: ``1`` when ``v₁`` is
    a combination of class indicators (the kernel's main direction separates classes),
    about ``sqrt((C − 1)/n)`` for a random direction. For two classes it is
    ``|⟨v₁, ỹ⟩| / ‖ỹ‖`` with ``ỹ`` the centred ±1 labels.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Symmetric kernel.
    y : array-like of shape (n,)
        Labels.

    Returns
    -------
    alignment : float
        In ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.spectral_evolution import label_alignment
    >>> y = np.array([0, 0, 1, 1, 1])
    >>> s = np.where(y == 1, 1.0, -1.0)
    >>> round(label_alignment(np.outer(s, s) + 0.1 * np.eye(5), y), 6)
    1.0
    """
    K = np.asarray(K, dtype=np.float64)
    y = column_or_1d(y)
    if K.shape != (y.size, y.size):
        raise ValueError(f"K must be ({y.size}, {y.size}) for {y.size} labels; got {K.shape}.")
    onehot = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)
    onehot -= onehot.mean(axis=0)
    U, s, _ = np.linalg.svd(onehot, full_matrices=False)
    Q = U[:, s > s.max() * 1e-10]
    top = np.linalg.eigh(_center((K + K.T) / 2))[1][:, -1]
    return float(np.linalg.norm(Q.T @ top))


def _modules(checkpoints, template):
    out = []
    for ckpt in checkpoints:
        if isinstance(ckpt, dict):  # a state_dict: loaded into a copy of the template
            if not isinstance(template, torch.nn.Module):
                raise TypeError(
                    "Checkpoints given as state_dicts need template=, the torch.nn.Module "
                    "they load into (e.g. the network at initialisation)."
                )
            module = copy.deepcopy(template)
            module.load_state_dict(ckpt)
            out.append(module)
        else:
            out.append(unwrap_network(ckpt))
    return out


def _tail_exponent(values, min_tail):
    try:
        return fit_power_law(values, min_tail=min_tail).alpha
    except ValueError:  # too few positive or distinct values for a tail
        return np.nan


def _kernel_matrix(kind, network, X, options):
    if kind == "ck":
        Phi = EmbeddingExtractor(
            network,
            layers=options["ck_layers"],
            device=options["device"],
            dtype="float64",
            batch_size=options["batch_size"],
            input_shape=options["input_shape"],
        ).fit_transform(X)
        return Phi @ Phi.T
    return np.asarray(
        empirical_ntk(
            network,
            X,
            kind=options["ntk_kind"],
            device=options["device"],
            dtype="float64",
            batch_size=options["batch_size"],
            input_shape=options["input_shape"],
        )
    )


def spectral_evolution(
    checkpoints,
    X=None,
    y=None,
    *,
    template=None,
    steps=None,
    kernels=("ck", "ntk"),
    ntk_kind="pntk",
    ck_layers=None,
    min_tail=10,
    device="cpu",
    batch_size=256,
    input_shape=None,
):
    """Weight and kernel spectra of a network along its training checkpoints.

    Parameters
    ----------
    checkpoints : list of torch.nn.Module or of state_dicts
        The network at successive times, the first being the reference (usually the
        initialisation). Modules may also be fitted skorch nets or ``FrozenEstimator``.
    X : array-like of shape (n_samples, ...), default=None
        The fixed batch on which the kernels are computed (needed when ``kernels`` is
        not empty). Keep it small: each kernel is ``n × n`` and fully diagonalised.
    y : array-like of shape (n_samples,), default=None
        Labels of ``X`` for :func:`label_alignment`.
    template : torch.nn.Module, default=None
        Architecture the state_dicts are loaded into (a deep copy; it is not modified).
    steps : array-like of shape (n_checkpoints,), default=None
        Step or epoch of each checkpoint (``0, 1, …`` by default).
    kernels : tuple of {"ck", "ntk"}, default=("ck", "ntk")
        ``"ck"``: Gram of the activations of ``ck_layers`` (by default the input of the
        last ``nn.Linear``) via :class:`~sknn_kernels.EmbeddingExtractor`; ``"ntk"``:
        :func:`~sknn_kernels.ntk.empirical_ntk` of kind ``ntk_kind``. Both in float64.
    ntk_kind : str, default="pntk"
        ``kind`` of :func:`~sknn_kernels.ntk.empirical_ntk` (``"pntk"`` or ``"trace"``).
    ck_layers : str or list of str, default=None
        ``layers`` of the conjugate-kernel features.
    min_tail : int, default=10
        Fewest eigenvalues in the power-law tail (:func:`~sknn_kernels.analysis.spectral.fit_power_law`).
    device : str, default="cpu"
        Torch device on which the kernels are computed.
    batch_size : int, default=256
        Samples per forward (and Jacobian) pass when computing the kernels.
    input_shape : tuple of int, default=None
        Per-sample shape for a 2-D ``X`` fed to an N-D network.

    Returns
    -------
    SpectralEvolution
        The checkpoint ``steps`` and, per weight matrix and per kernel, the spectra
        and distances to the first checkpoint, each with one entry per checkpoint.

    Examples
    --------
    >>> import copy, numpy as np, torch
    >>> from sknn_kernels.analysis.spectral_evolution import spectral_evolution
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    >>> X = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    >>> later = copy.deepcopy(net)
    >>> with torch.no_grad():
    ...     _ = later[0].weight.mul_(2.0)
    >>> evo = spectral_evolution([net, later.state_dict()], X, template=net)
    >>> sorted(evo.weights), sorted(evo.kernels)
    (['0.weight', '2.weight'], ['ck', 'ntk'])
    >>> evo.weights["0.weight"].distance.round(6).tolist()
    [0.0, 1.0]
    >>> evo.kernels["ck"].distance[0], bool(evo.kernels["ck"].alignment[1] < 1)
    (np.float64(0.0), True)
    """
    modules = _modules(list(checkpoints), template)
    if not modules:
        raise ValueError("No checkpoints given.")
    T = len(modules)
    steps = np.arange(T) if steps is None else np.asarray(steps)
    if steps.shape != (T,):
        raise ValueError(
            f"steps must have one entry per checkpoint ({T}); got shape {steps.shape}."
        )
    kernels = tuple(kernels)
    if set(kernels) - {"ck", "ntk"}:
        raise ValueError(f"kernels must be among ('ck', 'ntk'); got {kernels}.")
    if kernels and X is None:
        raise ValueError("Kernel spectra need the fixed batch X (or pass kernels=()).")

    weights = {}
    initial = {}
    for t, module in enumerate(modules):
        params = dict(module.named_parameters())
        for name, spec in weight_spectra(module).items():
            W = params[name].detach().double().reshape(spec.shape).numpy()
            if t == 0:
                initial[name] = W
                weights[name] = Bunch(
                    shape=spec.shape,
                    eigenvalues=np.empty((T, spec.singular_values.size)),
                    bulk_edge=np.empty(T),
                    n_outliers=np.empty(T, dtype=int),
                    alpha=np.empty(T),
                    distance=np.empty(T),
                )
            elif name not in weights or weights[name].shape != spec.shape:
                raise ValueError(
                    f"Checkpoint {t} does not have the architecture of checkpoint 0 ({name})."
                )
            rec = weights[name]
            rec.eigenvalues[t] = spec.eigenvalues
            rec.bulk_edge[t] = marchenko_pastur_edge(W)
            rec.n_outliers[t] = int((spec.eigenvalues > rec.bulk_edge[t]).sum())
            rec.alpha[t] = _tail_exponent(spec.eigenvalues, min_tail)
            rec.distance[t] = np.linalg.norm(W - initial[name]) / np.linalg.norm(initial[name])

    options = {
        "ck_layers": ck_layers,
        "ntk_kind": ntk_kind,
        "device": device,
        "batch_size": batch_size,
        "input_shape": input_shape,
    }
    results = {}
    for kind in kernels:
        rec = Bunch(
            eigenvalues=None,
            distance=np.empty(T),
            alignment=np.empty(T),
            label_alignment=np.full(T, np.nan),
            alpha=np.empty(T),
        )
        for t, module in enumerate(modules):
            K = _kernel_matrix(kind, module, X, options)
            K = (K + K.T) / 2
            if t == 0:
                K0 = K
                rec.eigenvalues = np.empty((T, K.shape[0]))
            eigenvalues = np.linalg.eigvalsh(K)[::-1]
            rec.eigenvalues[t] = eigenvalues
            rec.distance[t] = np.linalg.norm(K - K0) / np.linalg.norm(K0)
            rec.alignment[t] = kernel_alignment(K, K0)
            rec.alpha[t] = _tail_exponent(eigenvalues, min_tail)
            if y is not None:
                rec.label_alignment[t] = label_alignment(K, y)
        results[kind] = rec
    return SpectralEvolution(steps=steps, weights=weights, kernels=results)
