"""Regression faithfulness metrics against hand computations and scipy/sklearn."""

import numpy as np
import pytest
from _nets import make_mlp
from scipy.stats import kendalltau
from sklearn.model_selection import GridSearchCV

from sknn_kernels import KernelSurrogateRegressor
from sknn_kernels.metrics import (
    kendall_outputs,
    make_regression_faithfulness_scorer,
    network_outputs,
    output_r2,
    relative_test_loss,
)


def test_output_r2_by_hand():
    f_net = np.array([[1.0, 0.0], [2.0, 1.0], [4.0, 5.0]])
    f_sur = np.array([[1.5, 0.0], [2.0, 2.0], [3.0, 5.0]])
    ss_res = ((f_net - f_sur) ** 2).sum(0)
    ss_tot = ((f_net - f_net.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(
        output_r2(f_net, f_sur, multioutput="raw_values"), 1 - ss_res / ss_tot
    )
    assert output_r2(f_net[:, 0], f_net[:, 0]) == 1.0
    with pytest.raises(ValueError, match="2 outputs but the surrogate 1"):
        output_r2(f_net, f_sur[:, 0])


def test_relative_test_loss_by_hand():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    ck, ntk = y + [0.1, -0.1, 0.2, 0.0], y + [0.2, 0.2, -0.2, 0.2]
    expected = np.mean((ck - y) ** 2) / np.mean((ntk - y) ** 2)
    assert relative_test_loss(y, ck, ntk) == pytest.approx(expected)
    w = np.array([1.0, 2.0, 0.0, 1.0])
    expected_w = np.average((ck - y) ** 2, weights=w) / np.average((ntk - y) ** 2, weights=w)
    assert relative_test_loss(y, ck, ntk, sample_weight=w) == pytest.approx(expected_w)
    assert relative_test_loss(y, ck, y) == np.inf


def test_kendall_outputs_per_output():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    taus = kendall_outputs(a, b, multioutput="raw_values")
    np.testing.assert_allclose(taus, [kendalltau(a[:, j], b[:, j]).statistic for j in range(3)])
    assert kendall_outputs(a, b) == pytest.approx(taus.mean())
    assert kendall_outputs(a, 2 * a + 1) == pytest.approx(1.0)


def test_scorers_in_grid_search():
    net = make_mlp(n_in=4, hidden=(8,), n_out=2, seed=0)
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    Z = network_outputs(net, X, device="cpu")
    y = Z + 0.01 * np.random.default_rng(1).normal(size=Z.shape)
    reg = KernelSurrogateRegressor(kernel="rbf", device="cpu")
    scorers = {
        m: make_regression_faithfulness_scorer(net, m, device="cpu")
        for m in ("r2", "kendall", "relative_loss", "neg_relative_loss")
    }
    search = GridSearchCV(reg, {"alpha": [1e-4, 1.0]}, cv=2, scoring=scorers, refit="r2").fit(X, y)
    res = search.cv_results_
    np.testing.assert_allclose(res["mean_test_relative_loss"], -res["mean_test_neg_relative_loss"])
    assert search.best_params_["alpha"] == 1e-4 and res["mean_test_r2"].max() > 0.5
    fitted = search.best_estimator_
    assert scorers["r2"](fitted, X, y) == pytest.approx(output_r2(Z, fitted.predict(X)))
    with pytest.raises(ValueError, match="metric must be one of"):
        make_regression_faithfulness_scorer(net, "mse")
