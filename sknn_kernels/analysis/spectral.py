"""Spectra of kernels and weights, heavy-tail fits, and kernel alignment.

Tools for the spectral view of a trained network (Wang et al. 2023, "Spectral
evolution and invariance in linear-width neural networks"): the eigenvalues of a
conjugate or neural tangent kernel Gram matrix, the singular values of each weight
matrix and the empirical spectral density of ``WᵀW``, a power-law fit to their
tails, and the centred alignment between two kernels (how far a trained network's
kernel has moved from the one at initialisation).
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_array

from ..network._adapter import unwrap_network

__all__ = [
    "KernelSpectrum",
    "PowerLawFit",
    "WeightSpectrum",
    "fit_power_law",
    "kernel_alignment",
    "kernel_spectrum",
    "weight_spectra",
]


@dataclass(frozen=True)
class KernelSpectrum:
    """Eigen-summary of a symmetric positive semi-definite kernel matrix.

    Returned by :func:`kernel_spectrum`.
    Each parameter is also a read-only attribute of the same name.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n,)
        All eigenvalues, in descending order (tiny negative ones from round-off are kept).
    effective_rank : float
        Roy & Vetterli (2007): ``exp(H(p))`` with ``p = λ / Σλ`` over the positive
        eigenvalues and ``H`` the Shannon entropy; between 1 (one direction) and
        ``n`` (flat spectrum).
    participation_ratio : float
        ``(Σλ)² / Σλ²``, another effective dimension, more sensitive to the top
        eigenvalues; also between 1 and ``n``.
    condition_number : float
        ``λ_max / λ_min``; ``inf`` when the smallest eigenvalue is not positive
        (a singular kernel, as any Gram matrix with more samples than features).
    """

    eigenvalues: np.ndarray
    effective_rank: float
    participation_ratio: float
    condition_number: float


def kernel_spectrum(K):
    """Eigenvalues, effective rank and condition number of a kernel matrix.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Symmetric kernel (Gram) matrix, e.g. ``NTKFeaturizer().fit_transform(X)``.
        It is symmetrised as ``(K + Kᵀ) / 2`` before ``numpy.linalg.eigvalsh``.

    Returns
    -------
    KernelSpectrum
        The eigenvalues in descending order, effective rank, participation ratio and
        condition number.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.spectral import kernel_spectrum
    >>> spec = kernel_spectrum(np.diag([4.0, 1.0, 1.0, 1.0]))
    >>> spec.eigenvalues
    array([4., 1., 1., 1.])
    >>> round(spec.participation_ratio, 3), spec.condition_number
    (2.579, 4.0)
    """
    K = check_array(K, dtype=np.float64)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"A kernel matrix must be square; got shape {K.shape}.")
    scale = max(np.abs(K).max(), np.finfo(np.float64).tiny)
    if not np.allclose(K, K.T, rtol=1e-6, atol=1e-8 * scale):
        raise ValueError("The kernel matrix is not symmetric; pass K(X, X), not K(X_test, X_fit).")
    eigenvalues = np.linalg.eigvalsh((K + K.T) / 2)[::-1].copy()
    positive = eigenvalues[eigenvalues > 0]
    if positive.size == 0:
        raise ValueError("The kernel matrix has no positive eigenvalue.")
    p = positive / positive.sum()
    effective_rank = float(np.exp(-(p * np.log(p)).sum()))
    participation_ratio = float(positive.sum() ** 2 / (positive**2).sum())
    smallest = eigenvalues[-1]
    condition_number = float(eigenvalues[0] / smallest) if smallest > 0 else float("inf")
    return KernelSpectrum(eigenvalues, effective_rank, participation_ratio, condition_number)


@dataclass(frozen=True)
class WeightSpectrum:
    """Singular values of one weight matrix.

    Returned by :func:`weight_spectra`.
    Each parameter is also a read-only attribute of the same name.

    Parameters
    ----------
    name : str
        Parameter name in ``network.named_parameters()``.
    shape : tuple of int
        ``(rows, columns)`` of the matrix analysed: ``(out_features, in_features)``
        for a linear layer, ``(out_channels, in_channels * prod(kernel_size))`` for a
        convolution.
    singular_values : ndarray
        In descending order, ``min(shape)`` of them.
    """

    name: str
    shape: tuple
    singular_values: np.ndarray

    @property
    def eigenvalues(self):
        """Non-zero-rank eigenvalues of ``WᵀW`` (the squared singular values), descending."""
        return self.singular_values**2

    def density(self, bins=50, log=False):
        """Empirical spectral density of the eigenvalues of ``WᵀW``.

        Parameters
        ----------
        bins : int, default=50
            Number of histogram bins.
        log : bool, default=False
            Logarithmically spaced bins (for heavy tails).

        Returns
        -------
        density : ndarray of shape (bins,)
            Normalised so that it integrates to 1 over the bins.
        edges : ndarray of shape (bins + 1,)
            Bin edges, as returned by :func:`numpy.histogram`.
        """
        values = self.eigenvalues
        if log:
            positive = values[values > 0]
            edges = np.geomspace(positive.min(), positive.max(), bins + 1)
            values = positive
        else:
            edges = bins
        return np.histogram(values, bins=edges, density=True)


def weight_spectra(network):
    """Singular values of every weight matrix of a network.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch NeuralNet or FrozenEstimator
        Only read; parameters named ``*weight`` with two or more axes are analysed
        (linear, convolution, attention projections...). A convolution kernel
        ``(out, in, *k)`` is reshaped to ``out × (in · prod(k))``.

    Returns
    -------
    spectra : dict of str to WeightSpectrum
        In ``named_parameters()`` order.

    Examples
    --------
    >>> import torch
    >>> from sknn_kernels.analysis.spectral import weight_spectra
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(36, 2))
    >>> {name: s.shape for name, s in weight_spectra(net).items()}
    {'0.weight': (4, 9), '2.weight': (2, 36)}
    """
    module = unwrap_network(network)
    spectra = {}
    for name, param in module.named_parameters():
        if param.ndim < 2 or not name.split(".")[-1].endswith("weight"):
            continue
        W = param.detach().to("cpu", torch.float64).reshape(param.shape[0], -1)
        s = torch.linalg.svdvals(W).numpy()
        spectra[name] = WeightSpectrum(name, tuple(W.shape), s)
    if not spectra:
        raise ValueError(
            "The network has no weight matrix (no parameter '*weight' with two or more axes)."
        )
    return spectra


@dataclass(frozen=True)
class PowerLawFit:
    """A continuous power law ``p(x) ∝ x^(−alpha)`` for ``x ≥ xmin``, fitted to a tail.

    Returned by :func:`fit_power_law`.
    Each parameter is also a read-only attribute of the same name.

    Parameters
    ----------
    alpha : float
        Maximum-likelihood exponent.
    xmin : float
        Start of the tail, chosen by the Kolmogorov–Smirnov distance.
    ks_distance : float
        KS distance between the tail and the fitted law.
    n_tail : int
        Values ``≥ xmin`` used in the fit.
    sigma : float
        Asymptotic standard error of ``alpha``: ``(alpha − 1) / sqrt(n_tail)``.
    """

    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    sigma: float


def fit_power_law(values, xmin=None, min_tail=10):
    """Fit a power law to the tail of positive values (Clauset, Shalizi & Newman 2009).

    For a tail start ``xmin`` the maximum-likelihood exponent of the continuous law
    is ``alpha = 1 + n / Σ log(x_i / xmin)`` over the ``n`` values ``x_i ≥ xmin``.
    Unless given, ``xmin`` is the observed value minimising the Kolmogorov–Smirnov
    distance ``max |S(x) − P(x)|`` between the tail's empirical CDF ``S`` and the
    fitted CDF ``P(x) = 1 − (x / xmin)^(1 − alpha)``. Typical use: the eigenvalues of
    ``WᵀW`` (:func:`weight_spectra`) or of a kernel (:func:`kernel_spectrum`); an
    ``alpha`` between 2 and 4 is the heavy-tailed regime of trained networks.

    Parameters
    ----------
    values : array-like of shape (n,)
        Samples; non-positive ones are dropped.
    xmin : float, default=None
        Fixed tail start; ``None`` chooses it by the KS distance.
    min_tail : int, default=10
        Fewest values a candidate tail must hold.

    Returns
    -------
    PowerLawFit
        The exponent ``alpha`` and its standard error, the tail start ``xmin``, the
        number of tail values and the KS distance of the fit.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.spectral import fit_power_law
    >>> u = np.random.default_rng(0).uniform(size=5000)
    >>> x = (1 - u) ** (-1 / (2.5 - 1))  # Pareto samples, alpha = 2.5, xmin = 1
    >>> fit = fit_power_law(x)
    >>> abs(fit.alpha - 2.5) < 0.15
    True
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    x = x[np.isfinite(x) & (x > 0)]
    if xmin is not None:
        if xmin <= 0:
            raise ValueError(f"xmin must be positive; got {xmin!r}.")
        tail = x[x >= xmin]
        if tail.size < 2:
            raise ValueError(f"Fewer than 2 values are >= xmin={xmin!r}.")
        alpha, ks = _fit_tail(tail, float(xmin))
        return PowerLawFit(alpha, float(xmin), ks, tail.size, (alpha - 1) / np.sqrt(tail.size))
    min_tail = max(int(min_tail), 2)
    if x.size < min_tail:
        raise ValueError(f"Need at least min_tail={min_tail} positive values; got {x.size}.")
    # every distinct value leaving at least min_tail points is a candidate tail start
    starts = np.unique(np.searchsorted(x, x[: x.size - min_tail + 1], side="left"))
    best = None
    for start in starts:
        alpha, ks = _fit_tail(x[start:], x[start])
        if np.isfinite(alpha) and (best is None or ks < best[1]):
            best = (alpha, ks, start)
    if best is None:
        raise ValueError("All candidate tails are constant; a power law cannot be fitted.")
    alpha, ks, start = best
    n = x.size - start
    return PowerLawFit(
        float(alpha), float(x[start]), float(ks), int(n), float((alpha - 1) / np.sqrt(n))
    )


def _fit_tail(tail, xmin):
    """MLE exponent and KS distance for sorted ``tail`` values ``≥ xmin``."""
    n = tail.size
    log_sum = np.log(tail / xmin).sum()
    if log_sum <= 0:
        return np.nan, np.inf
    alpha = 1.0 + n / log_sum
    model = 1.0 - (tail / xmin) ** (1.0 - alpha)
    # the empirical CDF jumps at each point: compare on both sides of the jump
    above = np.arange(1, n + 1) / n - model
    below = model - np.arange(0, n) / n
    return float(alpha), float(max(above.max(), below.max()))


def kernel_alignment(K1, K2, center=True):
    """Centred kernel alignment (CKA) between two kernel matrices on the same samples.

    ``A(K1, K2) = <H K1 H, H K2 H>_F / (‖H K1 H‖_F ‖H K2 H‖_F)`` with the centring
    matrix ``H = I − 11ᵀ/n`` (Cortes, Mohri & Rostamizadeh 2012). For linear kernels
    ``K = X Xᵀ`` it is the linear CKA of Kornblith et al. (2019), invariant to
    orthogonal transforms and isotropic scaling of the features. ``1`` means the
    kernels agree up to a scale factor; compare a trained network's kernel with the
    one at initialisation to see how far it moved.

    Parameters
    ----------
    K1, K2 : array-like of shape (n, n)
        Kernel matrices on the same samples in the same order.
    center : bool, default=True
        ``False`` gives the uncentred alignment of Cristianini et al. (2002).

    Returns
    -------
    alignment : float
        In ``[-1, 1]`` (in ``[0, 1]`` for positive semi-definite kernels).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.spectral import kernel_alignment
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> K = X @ X.T
    >>> round(kernel_alignment(K, 5 * K), 6)
    1.0
    """
    K1 = check_array(K1, dtype=np.float64)
    K2 = check_array(K2, dtype=np.float64)
    if K1.shape != K2.shape or K1.shape[0] != K1.shape[1]:
        raise ValueError(
            f"Both kernels must be square and of the same shape; got {K1.shape} and {K2.shape}."
        )
    if center:
        K1, K2 = _center(K1), _center(K2)
    norms = np.linalg.norm(K1) * np.linalg.norm(K2)
    if norms == 0:
        raise ValueError(
            "A kernel is zero after centring (constant kernel): the alignment is undefined."
        )
    return float((K1 * K2).sum() / norms)


def _center(K):
    """``H K H`` without forming ``H``."""
    return K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()
