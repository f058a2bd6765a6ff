"""Input shares: the Shapley axioms, a brute-force reference, planted truths, Captum, the NTK view."""

import itertools
from math import factorial

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from sknn_kernels.attribution.branches import branch_parameters, kernel_shares
from sknn_kernels.attribution.input_shares import InputShares, input_shares
from sknn_kernels.ntk import empirical_ntk

KW = {"device": "cpu", "dtype": "float64"}


class Late(nn.Module):
    """One encoder per named input, a shared head (late fusion)."""

    def __init__(self, dims=(2, 3, 4), hidden=5, out=3, ignore=()):
        super().__init__()
        self.keys = [f"x{i}" for i in range(len(dims))]
        self.enc = nn.ModuleDict({k: nn.Linear(d, hidden) for k, d in zip(self.keys, dims)})
        self.head = nn.Linear(hidden * len(dims), out)
        self.ignore = set(ignore)

    def forward(self, **inputs):
        parts = [
            torch.tanh(self.enc[k](inputs[k])) * (0.0 if k in self.ignore else 1.0)
            for k in self.keys
        ]
        return self.head(torch.cat(parts, 1))


def named(n=12, dims=(2, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    return {f"x{i}": rng.normal(size=(n, d)) for i, d in enumerate(dims)}


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return Late(**kw).double()


def brute_force(f, x, base, m):
    """Shapley values by averaging marginal contributions over all m! orders."""
    phi = np.zeros(m)
    for order in itertools.permutations(range(m)):
        present = set()
        for p in order:
            before = f(x, base, present)
            present = present | {p}
            phi[p] += f(x, base, present) - before
    return phi / factorial(m)


@pytest.mark.parametrize("baseline", ["zeros", "mean", "background"])
@pytest.mark.parametrize("output", ["raw", "proba", "expected"])
def test_efficiency_named_inputs(baseline, output):
    net, X = _net(), named()
    est = InputShares(
        net, baseline=baseline, output=output, bin_centers=[0.1, 0.5, 0.9], random_state=0, **KW
    ).fit(X)
    phi = est.attribute(X)
    fx = est.explained_output(X)
    t = est._targets(est._current_adapter(), X, None)
    base = est.baseline_
    # f at the baseline rows for each sample's target column
    logits = net(**{k: torch.as_tensor(v) for k, v in base.items()}).detach()
    vals = {"raw": logits, "proba": logits.softmax(1)}.get(output)
    if output == "expected":
        fb = (logits.softmax(1) @ torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).mean()
        fb = np.full(len(fx), float(fb))
    else:
        fb = vals[:, t].mean(0).numpy()
    np.testing.assert_allclose(phi.sum(1), fx - fb, atol=1e-10)
    assert est.players_ == ("x0", "x1", "x2")


def test_matches_brute_force_on_channel_groups():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(6, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 25, 2)
    ).double()
    X = np.random.default_rng(1).normal(size=(3, 6, 5, 5))
    groups = {"uv": [0, 1], "opt": [2, 3], "ir": [4], "x": [5]}
    est = InputShares(net, groups=groups, baseline="zeros", **KW).fit(X)
    phi = est.attribute(X, target=1)
    owner = np.array([0, 0, 1, 1, 2, 3])

    def f(x, base, present):
        keep = np.isin(owner, sorted(present))[:, None, None]
        z = torch.as_tensor(np.where(keep, x, base)[None])
        return float(net(z).detach()[0, 1])

    for i in range(3):
        np.testing.assert_allclose(phi[i], brute_force(f, X[i], 0 * X[i], 4), atol=1e-10)


def test_symmetry_and_dummy():
    net = _net(dims=(3, 3, 2), ignore={"x2"})
    with torch.no_grad():  # x0 and x1 enter through the same encoder weights and head slice
        net.enc["x1"].load_state_dict(net.enc["x0"].state_dict())
        w = net.head.weight
        w[:, 5:10] = w[:, 0:5]
    X = named(dims=(3, 3, 2))
    X["x1"] = X["x0"].copy()
    est = InputShares(net, baseline="zeros", **KW).fit(X)
    phi = est.attribute(X, target=0)
    np.testing.assert_allclose(phi[:, 0], phi[:, 1], atol=1e-12)  # symmetry
    np.testing.assert_allclose(phi[:, 2], 0, atol=1e-12)  # dummy
    assert np.all(est.shares(X, target=0)[:, 2] < 1e-12)


class Additive(nn.Module):
    """f(x) = 3 tanh(a) + b^2 - c (summed over features): planted per-input contributions."""

    def forward(self, a, b, c):
        return (3 * torch.tanh(a).sum(1) + (b**2).sum(1) - c.sum(1))[:, None]


def test_planted_additive_truth():
    X = named(n=20, dims=(2, 2, 3), seed=3)
    X = {"a": X["x0"], "b": X["x1"], "c": X["x2"]}
    est = InputShares(Additive(), baseline="background", n_background=8, random_state=0, **KW)
    phi = est.fit(X).attribute(X)
    bg = est.baseline_
    truth = np.stack(
        [
            3 * np.tanh(X["a"]).sum(1) - (3 * np.tanh(bg["a"]).sum(1)).mean(),
            (X["b"] ** 2).sum(1) - (bg["b"] ** 2).sum(1).mean(),
            -X["c"].sum(1) + bg["c"].sum(1).mean(),
        ],
        1,
    )
    np.testing.assert_allclose(phi, truth, atol=1e-10)


def test_grouped_named_inputs_and_integer_ids():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.lin = nn.Linear(4 + 2, 2)

        def forward(self, ids, mask, side):
            h = (self.emb(ids) * mask[..., None]).mean(1)
            return self.lin(torch.cat([h, side], 1))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = {
        "ids": rng.integers(0, 10, size=(5, 6)),
        "mask": np.ones((5, 6)),
        "side": rng.normal(size=(5, 2)),
    }
    est = InputShares(
        Tokens(),
        groups={"text": ["ids", "mask"], "side": ["side"]},
        baseline="background",
        n_background=3,
        random_state=0,
        **KW,
    ).fit(X)
    phi = est.attribute(X)
    assert phi.shape == (5, 2)
    bg_out = est.explained_output(est.baseline_)
    fx = est.explained_output(X)
    # efficiency with per-sample targets: f(x) - mean_b f_t(b) using the same target column
    t = est._targets(est._current_adapter(), X, None).numpy()
    logits = est._current_adapter().predict(est.baseline_).numpy()
    np.testing.assert_allclose(phi.sum(1), fx - logits[:, t].mean(0), atol=1e-10)
    assert bg_out.shape == (3,)
    with pytest.raises(ValueError, match="floating-point"):
        InputShares(Tokens(), baseline="mean", **KW).fit(X)
    pytest.importorskip("captum")
    with pytest.raises(ValueError, match="floating point"):
        est.attribute(X, method="integrated_gradients")


def test_share_results_table_and_function():
    net, X = _net(), named(n=30)
    y = np.linspace(0, 1, 30)
    est = InputShares(net, baseline="mean", **KW).fit(X)
    res = est.share_results(X, y, bins=3)
    assert set(res["bin"].tolist()) == {-1, 0, 1, 2}
    assert len(res["player"]) == 4 * 3
    for b in range(-1, 3):
        rows = res["bin"] == b
        assert np.isclose(res["share"][rows].sum(), 1)
    assert res["n_samples"][res["bin"] == -1][0] == 30
    assert res["n_samples"][res["bin"] >= 0].sum() == 3 * 30
    by_pred = input_shares(net, X, by="prediction", bins=[-10, 0, 10], **KW)
    assert set(by_pred["bin"].tolist()) == {-1, 0, 1}
    with pytest.raises(ValueError, match="needs y"):
        est.share_results(X, by="target")


def test_errors_name_the_fix():
    X = np.random.default_rng(0).normal(size=(4, 14))
    net = nn.Linear(14, 2).double()
    with pytest.raises(ValueError, match="at most max_players=12"):
        InputShares(net, **KW).fit(X)
    with pytest.raises(ValueError, match="belong to no player"):
        InputShares(net, groups={"a": list(range(13))}, **KW).fit(X)
    with pytest.raises(ValueError, match="belongs to two players"):
        InputShares(net, groups={"a": list(range(14)), "b": [0]}, **KW).fit(X)
    with pytest.raises(ValueError, match="bin_centers"):
        InputShares(net, groups={"a": list(range(14))}, output="expected", **KW).fit(X)
    est = InputShares(net, groups={"a": list(range(7)), "b": list(range(7, 14))}, **KW).fit(X)
    with pytest.raises(ValueError, match="target must be"):
        est.attribute(X, target=5)


def test_network_is_not_modified():
    net, X = _net(), named()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    InputShares(net, **KW).fit(X).attribute(X)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training


# ------------------------------------------------------------------ Captum
def test_integrated_gradients_completeness_and_dummy():
    pytest.importorskip("captum")
    net, X = _net(ignore={"x1"}), named()
    for baseline in ["mean", "background"]:
        est = InputShares(net, baseline=baseline, n_background=3, random_state=0, n_steps=64, **KW)
        est.fit(X)
        ig = est.attribute(X, method="integrated_gradients", target=2)
        exact = est.attribute(X, target=2)
        np.testing.assert_allclose(ig.sum(1), exact.sum(1), atol=1e-6)  # both sum to f - f(b)
        np.testing.assert_allclose(ig[:, 1], 0, atol=1e-12)
    gs = est.attribute(X, method="gradient_shap", target=2)
    assert gs.shape == (12, 3) and np.allclose(gs[:, 1], 0)
    np.testing.assert_array_equal(gs, est.attribute(X, method="gradient_shap", target=2))


def test_captum_grouped_shapley_values_agree():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    X = np.random.default_rng(2).normal(size=(4, 6))
    groups = {"a": [0, 1], "b": [2], "c": [3, 4, 5]}
    est = InputShares(net, groups=groups, baseline="mean", **KW).fit(X)
    ours = est.attribute(X, target=1)
    mask = torch.tensor([[0, 0, 1, 2, 2, 2]])
    theirs = captum_attr.ShapleyValues(net).attribute(
        torch.as_tensor(X),
        baselines=torch.as_tensor(est.baseline_),
        target=1,
        feature_mask=mask,
    )
    np.testing.assert_allclose(ours, theirs[:, [0, 2, 3]].numpy(), atol=1e-10)


# ------------------------------------------------------------------ the NTK view
def test_branch_probe_and_kernel_shares():
    net, X = _net(), named(n=8)
    branches = branch_parameters(net, X)
    assert branches["x0"] == ["enc.x0.weight", "enc.x0.bias"]
    assert branches["shared"] == ["head.weight", "head.bias"]
    res = kernel_shares(net, X)
    assert list(res["component"]) == ["x0", "x1", "x2", "shared"]
    parts = empirical_ntk(net, X, layerwise=True, device="cpu", dtype="float64")
    K = sum(parts.values())
    want = np.trace(parts["enc.x1"]) / np.trace(K)
    assert np.isclose(res["trace_share"][1], want)
    assert np.isclose(res["trace_share"].sum(), 1)
    # an input the network ignores has no kernel in its branch
    res0 = kernel_shares(_net(ignore={"x2"}), X)
    assert res0["trace_share"][2] == 0
    binned = kernel_shares(net, X, y=np.arange(8), bins=2)
    assert set(binned["player"]) == {"x0", "x1", "x2", "shared"}


def test_branch_probe_needs_named_float_inputs():
    with pytest.raises(ValueError, match="named inputs"):
        branch_parameters(nn.Linear(3, 1), np.ones((2, 3)))


def test_plot_input_shares():
    pytest.importorskip("matplotlib")
    from sknn_kernels.plotting import plot_input_shares

    net, X = _net(), named(n=20)
    res = input_shares(net, X, np.linspace(0, 1, 20), bins=4, **KW)
    fig = plot_input_shares(res)
    bars = fig.axes[0].patches
    assert len(bars) == 4 * 3  # one bar per bin and player, stacked to the shares
    tops = np.array([b.get_y() + b.get_height() for b in bars]).reshape(3, 4)
    np.testing.assert_allclose(tops[-1], 1.0)
    overall = {k: v[res["bin"] == -1] for k, v in res.items()}
    assert len(plot_input_shares(overall).axes[0].patches) == 3
    with pytest.raises(TypeError, match="share_results"):
        plot_input_shares({"bin": np.zeros(2)})


def _common_estimators():
    from _nets import make_any_width_net

    # baseline="zeros": sklearn's checks also pass integer X, for which a mean is refused
    yield InputShares(make_any_width_net(), baseline="zeros", device="cpu", dtype="float64")


@parametrize_with_checks(
    list(_common_estimators()),
    expected_failed_checks=lambda est: {
        "check_estimators_overwrite_params": "joblib.hash of torch tensors is address-based"
    },
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_given_baseline_rows_equal_a_background():
    net, X = _net(), named(n=10)
    rows = {k: v[[2, 5]] for k, v in X.items()}
    given = InputShares(net, baseline=rows, **KW).fit(X)
    drawn = InputShares(net, baseline="background", n_background=2, random_state=0, **KW).fit(X)
    drawn.baseline_ = rows  # the same two rows, drawn instead of given
    np.testing.assert_allclose(given.attribute(X), drawn.attribute(X), atol=1e-12)
    one = InputShares(net, baseline={k: v[:1] for k, v in X.items()}, **KW).fit(X)
    assert one.attribute(X).shape == (10, 3)


def test_binned_table_edges():
    from sknn_kernels.attribution.input_shares import binned_table

    values = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])
    res = binned_table(values, ["a", "b"], [0.0, 0.5, 1.0, 2.0], [0, 0.5, 1])
    n = dict(zip(res["bin"][::2].tolist(), res["n_samples"][::2].tolist()))
    assert n == {-1: 4, 0: 1, 1: 2}  # 1.0 is in the last bin, 2.0 in none
    overall = res["bin"] == -1
    np.testing.assert_allclose(
        res["share"][overall], [(1 + 0 + 0.5 + 0.75) / 4, (0 + 1 + 0.5 + 0.25) / 4]
    )
    np.testing.assert_allclose(res["abs_attribution"][overall], [1.25, 1.0])
    with pytest.raises(ValueError, match="increasing edges"):
        binned_table(values, ["a", "b"], np.zeros(4), [1, 0])
