"""The report's section "Which input drives the prediction": each input's share, overall and by bin.

The players are the named inputs of a multi-input network (``--data`` with ``X_<name>`` arrays), or
groups of channels of one tensor (``--input-groups``). Shares are MM-SHAP shares of exact Shapley
values (:class:`~sknn_kernels.InputShares`) with the training mean as baseline, for the network's
probability of its predicted class (classification) or its output (regression), averaged over the
shown test samples and per class / per bin of the target.
"""

import html

import numpy as np

from ..attribution.input_shares import input_shares
from ..network._base import first_rows, is_named
from ._html import _table

N_BACKGROUND = 256  # training rows whose mean is the baseline
N_BINS = 5  # target bins of a regression network


def parse_groups(text):
    """``"uv=0,1;optical=2-6;ir=7,8"`` -> ``{"uv": [0, 1], "optical": [2, ..., 6], "ir": [7, 8]}``.

    Raises ``ValueError`` with the expected form when ``text`` does not parse.
    """
    groups = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, spec = part.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ValueError(f"{part!r} is not NAME=INDICES (e.g. 'uv=0,1;optical=2-6;ir=7,8')")
        indices = []
        for item in spec.split(","):
            low, dash, high = item.strip().partition("-")
            try:
                indices += list(range(int(low), int(high) + 1)) if dash else [int(low)]
            except ValueError:
                raise ValueError(
                    f"{item.strip()!r} in {part!r} is not an index or a range a-b"
                ) from None
        groups[name.strip()] = indices
    if len(groups) < 2:
        raise ValueError("give at least two groups, e.g. 'uv=0,1;optical=2-6'")
    return groups


def input_share_results(network, X, X_test, y_test, *, task, groups, input_shape, device):
    """Shares of each input of ``network`` on the test samples, overall (bin -1) and per bin.

    Classification: the probability of the predicted class, one bin per class (labels encoded in
    sorted order; ``results["bin_label"]`` names them). Regression: the output, ``N_BINS`` bins of
    the target.
    """
    integer = any(
        np.issubdtype(np.asarray(v).dtype, np.integer) for v in (X.values() if is_named(X) else [X])
    )
    params = {
        "groups": groups,
        "input_shape": None if is_named(X) else input_shape,
        # token ids have no mean: average the explained output over real training rows instead
        "baseline": "background" if integer else "mean",
        "output": "proba" if task == "classification" else "raw",
        "device": device,
        "random_state": 0,
    }
    if task == "classification":
        labels, codes = np.unique(np.asarray(y_test), return_inverse=True)
        bins = np.arange(len(labels) + 1) - 0.5
    else:
        codes, bins, labels = np.asarray(y_test, float).ravel(), N_BINS, None
    res = input_shares(
        network, X_test, codes, X_background=first_rows(X, N_BACKGROUND), bins=bins, **params
    )
    if labels is not None:
        res["bin_label"] = np.array(
            ["all" if b < 0 else str(labels[b]) for b in res["bin"]], dtype=object
        )
    return res


def input_section(r, out):
    """HTML of the section and the figure it writes into ``out``."""
    from .. import plotting

    res = r.input_shares
    players = list(dict.fromkeys(res["player"]))
    bins = list(dict.fromkeys(res["bin"].tolist()))
    by = "true class" if r.task == "classification" else "target bin"

    def label(b):
        i = int(np.flatnonzero(res["bin"] == b)[0])
        if "bin_label" in res:
            return res["bin_label"][i]
        return "all" if b < 0 else f"{res['bin_low'][i]:.3g} to {res['bin_high'][i]:.3g}"

    rows = []
    for b in bins:
        mask = res["bin"] == b
        share = dict(zip(res["player"][mask], res["share"][mask]))
        n = int(res["n_samples"][mask][0])
        rows.append([label(b), n] + [f"{share[p]:.3f}" for p in players])
    explained = "probability of its predicted class" if r.task == "classification" else "output"
    parts = [
        "<h2>Which input drives the prediction</h2>",
        '<p class="muted">'
        + html.escape(
            f"Each input's share of the network's {explained} on the test samples: exact Shapley "
            "values over the inputs (the others replaced by their training mean), as shares of "
            f"their absolute sum (MM-SHAP), over all samples and by {by}. A share near 0 means the "
            "network ignores that input there."
        )
        + "</p>",
        _table(rows, [by, "samples", *players]),
    ]
    fig = plotting.plot_input_shares(res)
    fig.savefig(out / "input_shares.png", dpi=110, bbox_inches="tight")
    caption = f"Each input's mean share by {by}"
    parts.append(
        f'<figure><img src="input_shares.png" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
    return "\n".join(parts), [out / "input_shares.png"]
