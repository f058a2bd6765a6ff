"""Faithfulness of regression surrogates, and the relative test loss of Qadeer et al.

Arguments come in the order ``(reference, compared)``: the network's outputs first when a
surrogate is compared with the network, the true targets first for losses.
"""

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.utils.validation import _check_sample_weight, check_consistent_length

from ._faithfulness import _NetworkScorer, _undefined, network_options, network_outputs

__all__ = [
    "kendall_outputs",
    "make_regression_faithfulness_scorer",
    "output_r2",
    "relative_test_loss",
]


def _as_2d(a, name):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D (n_samples, n_outputs); got shape {a.shape}.")
    return a.reshape(len(a), -1)


def _paired(y_network, y_surrogate):
    a, b = _as_2d(y_network, "y_network"), _as_2d(y_surrogate, "y_surrogate")
    check_consistent_length(a, b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"The network has {a.shape[1]} outputs but the surrogate {b.shape[1]}.")
    return a, b


def output_r2(y_network, y_surrogate, *, multioutput="uniform_average"):
    """R² of the surrogate's outputs as predictions of the network's outputs.

    ``1 - sum (f_net - f_sur)^2 / sum (f_net - mean f_net)^2`` per output
    (:func:`sklearn.metrics.r2_score` with the network as the truth): 1 when the surrogate
    reproduces the network exactly, 0 for a constant at the network's mean.

    Parameters
    ----------
    y_network, y_surrogate : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of the network and of the surrogate on the same points.
    multioutput : {"uniform_average", "raw_values"}, default="uniform_average"
        As in ``r2_score``.

    Returns
    -------
    r2 : float or ndarray of shape (n_outputs,)
        One for an exact reproduction of the network.

    Examples
    --------
    >>> from sknn_kernels.metrics import output_r2
    >>> output_r2([1.0, 2.0, 3.0], [1.0, 2.0, 3.5])
    0.875
    """
    a, b = _paired(y_network, y_surrogate)
    return r2_score(a, b, multioutput=multioutput)


def relative_test_loss(y_true, y_pred, y_reference, *, sample_weight=None):
    """Test loss of ``y_pred`` relative to that of ``y_reference``: ``L(pred) / L(reference)``.

    ``L`` is the mean squared error against ``y_true`` (averaged over outputs). The ratio
    Qadeer et al. report: ``L(CK) / L(NTK)`` for kernel regressions on the conjugate kernel
    and on the NTK (``y_pred`` the CK regression's predictions, ``y_reference`` the NTK's),
    or ``L(surrogate) / L(network)`` for how much accuracy a surrogate loses. Below 1: the
    compared predictions are better; ``(ratio - 1)`` is the paper's relative difference.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True targets.
    y_pred, y_reference : array-like of the same shape
        The compared and the reference predictions.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights of the squared errors.

    Returns
    -------
    ratio : float
        ``inf`` when the reference is exact and ``y_pred`` is not; NaN when both are exact.

    Examples
    --------
    >>> from sknn_kernels.metrics import relative_test_loss
    >>> relative_test_loss([0.0, 1.0], [0.0, 0.5], [0.0, 1.5])
    1.0
    """
    y = _as_2d(y_true, "y_true")
    p, r = _as_2d(y_pred, "y_pred"), _as_2d(y_reference, "y_reference")
    check_consistent_length(y, p, r)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, y, ensure_non_negative=True)
    loss = mean_squared_error(y, p, sample_weight=sample_weight)
    ref = mean_squared_error(y, r, sample_weight=sample_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(loss) / np.float64(ref))


def kendall_outputs(y_network, y_surrogate, *, multioutput="uniform_average"):
    """Kendall τ between the network's and the surrogate's outputs, per output.

    τ = 1 when the surrogate orders the test points exactly as the network does (for a
    regression network, the analogue of the classifiers' true-class τ).

    Parameters
    ----------
    y_network, y_surrogate : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of the network and of the surrogate on the same points.
    multioutput : {"uniform_average", "raw_values"}, default="uniform_average"
        Mean over outputs, or one τ per output.

    Returns
    -------
    tau : float or ndarray of shape (n_outputs,)
        The τ-b of scipy; NaN, with an ``UndefinedMetricWarning`` saying why, for fewer than
        two points or an output with no variation.

    Examples
    --------
    >>> from sknn_kernels.metrics import kendall_outputs
    >>> round(float(kendall_outputs([1.0, 2.0, 3.0], [0.1, 0.5, 0.4])), 4)
    0.3333
    """
    if multioutput not in ("uniform_average", "raw_values"):
        raise ValueError(
            f"multioutput must be 'uniform_average' or 'raw_values'; got {multioutput!r}."
        )
    a, b = _paired(y_network, y_surrogate)
    if len(a) < 2:
        return _undefined("Kendall tau", f"{len(a)} point(s); it needs at least 2")
    flat = [j for j in range(a.shape[1]) if np.ptp(a[:, j]) == 0 or np.ptp(b[:, j]) == 0]
    if flat:
        _undefined(
            f"Kendall tau of output(s) {flat}",
            "one model's output is constant over the points, so there is no order",
        )
    taus = np.array([kendalltau(a[:, j], b[:, j]).statistic for j in range(a.shape[1])])
    return float(taus.mean()) if multioutput == "uniform_average" else taus


_METRICS = {"r2", "kendall", "relative_loss", "neg_relative_loss"}


class _RegressionFaithfulnessScorer(_NetworkScorer):
    _factory = "make_regression_faithfulness_scorer"

    def _score(self, estimator, X, y, sample_weight):
        f_net = network_outputs(self.network, X, "logits", **self.network_options)
        f_sur = _as_2d(estimator.predict(X), "predictions")
        if self.metric == "r2":
            return float(output_r2(f_net, f_sur))
        if self.metric == "kendall":
            return kendall_outputs(f_net, f_sur)
        ratio = relative_test_loss(y, f_sur, f_net, sample_weight=sample_weight)
        return ratio if self.metric == "relative_loss" else -ratio


def make_regression_faithfulness_scorer(
    network, metric="r2", *, device="auto", batch_size=256, input_shape=None, network_output=None
):
    """An sklearn scorer measuring a regression surrogate's faithfulness to ``network``.

    Called as ``scorer(estimator, X, y)`` with the *network's* inputs ``X`` (``estimator``
    is typically ``Pipeline(NTKFeaturizer, KernelSurrogateRegressor)``); the network's
    outputs on that fold are computed by :func:`network_outputs`, so it works in
    ``cross_validate`` and ``GridSearchCV``.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        The regression network the surrogate imitates.
    metric : {"r2", "kendall", "relative_loss", "neg_relative_loss"}, default="r2"
        :func:`output_r2` and :func:`kendall_outputs` (greater is better), or the
        surrogate's test loss relative to the network's, :func:`relative_test_loss`
        (``"relative_loss"``, lower is better: report it; ``"neg_relative_loss"``, its
        negative, to select with).
    device : str, default="auto"
        Where the network runs.
    batch_size : int, default=256
        Samples per forward pass.
    input_shape : tuple of int, default=None
        Per-sample shape to reshape a 2-D ``X`` for the network.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds its predictions (see
        :func:`network_outputs`).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None) -> float``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.linear_model import Ridge
    >>> from sknn_kernels.metrics import make_regression_faithfulness_scorer
    >>> X = np.random.default_rng(0).normal(size=(30, 3))
    >>> net = torch.nn.Linear(3, 1)
    >>> y = net(torch.tensor(X, dtype=torch.float32)).detach().numpy().ravel()
    >>> scorer = make_regression_faithfulness_scorer(net, device="cpu")
    >>> round(scorer(Ridge(alpha=1e-8).fit(X, y), X, y), 6)
    1.0
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
    options = network_options(device, batch_size, input_shape, network_output)
    return _RegressionFaithfulnessScorer(network, metric, options)
