"""The report's explanations: the surrogate's decomposition next to the network's influence.

For the same test samples the report shows two answers to "which training samples drive this
prediction": the most faithful kernel GLM's decomposition ``α_i K(x, x_i)`` (how the surrogate
reaches its output) and :class:`~sknn_kernels.attribution.influence.InfluenceAttributor`
(which training samples the network's prediction depends on). For each method it measures
whether the lists depend on the sample explained
(:func:`~sknn_kernels.attribution.evaluation.explanation_overlap`), shows the relative
attributions when the raw lists repeat, and optionally scores every method by the LDS of
retrainings of the reference network (``lds``).
"""

import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_memory

from .._results import from_rows
from ..surrogates._kernel_base import top_attributions

N_SHOWN = 6  # test samples in the panels
N_MEASURED = 50  # test samples the overlap measures use
TOP_K = 5  # proponents and opponents per explanation
LIST_K = 3  # the lists the overlap measures compare (the top-3 a reader looks at)

MEANINGS = {
    "surrogate": "Surrogate: the training samples whose terms α_i K(x, x_i) add most to (+) or "
    "subtract most from (-) the distilled kernel model's logit of the explained class, i.e. how "
    "the surrogate, which reproduces the network's outputs, builds its prediction.",
    "influence": "Influence: the training samples whose removal would lower (+) or raise (-) the "
    "network's margin of the explained class most, to first order in the network's weights "
    "(TRAK-style), i.e. which training samples the network's prediction depends on.",
}


def attribution_options(args, image_shape, task, text):
    """``run_report``'s ``influence_members``, ``lds`` and ``train_fn`` from the CLI's options."""
    from ._cli_inputs import UsageError

    members, lds = args.influence_members, args.lds
    if members == 1 and lds is None:
        return {"influence_members": 1}
    if text or args.model is not None or task != "classification":
        raise UsageError(
            "--influence-members > 1 and --lds retrain the built-in reference network of an "
            "image or feature classification set; they are not available with --model, "
            "texts or regression."
        )
    epochs = args.epochs if args.epochs is not None else 30  # load_network's default
    return {
        "influence_members": members,
        "lds": lds,
        "train_fn": reference_recipe(image_shape, task, epochs),
    }


def reference_recipe(image_shape, task="classification", epochs=30):
    """``train_fn(X, y, seed) -> network``: the CLI's reference network, from scratch.

    A CNN for ``(C, H, W)`` images, an MLP for vectors, trained by
    :func:`~sknn_kernels.datasets.train_reference_network` (picklable, for joblib).
    """
    return partial(_train_reference, image_shape=image_shape, task=task, epochs=epochs)


def _train_reference(X, y, seed, *, image_shape, task, epochs):
    from ..datasets import make_cnn, make_mlp, train_reference_network

    images = image_shape is not None and len(image_shape) == 3
    builder, input_shape = (make_cnn, image_shape) if images else (make_mlp, None)
    return train_reference_network(
        builder, X, y, epochs=epochs, seed=seed, input_shape=input_shape, task=task
    )


def train_members(train_fn, X, y, n_members, *, random_state=0, n_jobs=None, memory=None):
    """``n_members`` networks, each trained by ``train_fn`` on a random half of ``(X, y)``."""
    return check_memory(memory).cache(_train_halves)(
        train_fn, np.asarray(X), np.asarray(y), int(n_members), random_state, n_jobs
    )


def _train_halves(train_fn, X, y, n_members, random_state, n_jobs):
    rng = check_random_state(random_state)
    n, classes = len(y), np.unique(y)
    jobs = []
    for _ in range(n_members):
        for _ in range(100):  # every half holds every class: output j scores classes[j]
            idx = np.sort(rng.choice(n, size=n // 2, replace=False))
            if len(np.unique(y[idx])) == len(classes):
                break
        jobs.append((idx, int(rng.randint(2**31 - 1))))
    return Parallel(n_jobs=n_jobs)(delayed(train_fn)(X[i], y[i], s) for i, s in jobs)


@dataclass
class Method:
    """One attribution method of the report and what was measured of it."""

    name: str
    kind: str  # "surrogate" or "influence"
    attribute: object  # (rows of X_test, targets) -> (n, n_train) attributions
    seconds: float = 0.0
    measured: dict = field(default_factory=dict)


def explain_report(
    r,
    refit,
    network,
    *,
    influence=True,
    train_fn=None,
    influence_members=1,
    lds=None,
    input_shape=None,
    device="auto",
    batch_size=256,
    layers=None,
    n_jobs=None,
    memory=None,
    random_state=0,
):
    """Fill ``r.methods``, ``r.explanations`` and the LDS columns of ``r.table``.

    ``r.explained`` names the surrogate explained (set by the report); ``refit`` refits
    surrogates; ``train_fn`` is the reference network's recipe (needed by
    ``influence_members > 1`` and ``lds``).
    """
    from ..attribution.influence import InfluenceAttributor

    pred = r.labels[r.network_test.argmax(axis=1)]
    n_measured = min(N_MEASURED, len(pred))
    surrogate = refit(*r.explained_row)
    methods = [
        Method(
            f"{' '.join(r.explained_row)} surrogate",
            "surrogate",
            lambda rows, target, s=surrogate: s.estimator.attribute(s.K_test[rows], target=target),
        )
    ]
    options = {
        "classes": r.labels,
        "random_state": random_state,
        "device": device,
        "batch_size": batch_size,
        "input_shape": input_shape,
        "layers": layers,
    }
    ensembles = [("influence", network)] if influence else []
    if influence and influence_members > 1:
        started = time.perf_counter()
        members = train_members(
            train_fn,
            r.X,
            r.y,
            influence_members,
            random_state=random_state,
            n_jobs=n_jobs,
            memory=memory,
        )
        ensembles.append((f"influence x{influence_members}", members))
        r.summary["influence_members_seconds"] = round(time.perf_counter() - started, 1)
    for name, nets in ensembles:
        started = time.perf_counter()
        attributor = InfluenceAttributor(nets, **options).fit(r.X, r.y)
        method = Method(name, "influence", partial(_influence, attributor, r.X_test))
        method.seconds = time.perf_counter() - started
        method.attributor = attributor
        methods.append(method)
    neighbours = _neighbours(surrogate, n_measured)
    r.explanations, rows = [], []
    for method in methods:
        started = time.perf_counter()
        A = method.attribute(np.arange(n_measured), pred[:n_measured])
        method.seconds += time.perf_counter() - started
        rows.append(_measure(method, A, pred[:n_measured], neighbours))
        r.explanations += _json_explanations(method, min(N_SHOWN, n_measured))
    r.methods = methods
    if lds:
        _lds(r, refit, methods, train_fn, lds, input_shape, n_jobs, memory, random_state, rows)
    r.method_table = from_rows(rows)


def _influence(attributor, X_test, rows, target):
    if isinstance(X_test, dict) or hasattr(X_test, "keys"):
        X = {k: np.asarray(v)[rows] for k, v in X_test.items()}
    else:
        X = np.asarray(X_test)[rows]
    return attributor.attribute(X, target=np.asarray(target))


def _neighbours(surrogate, n):
    from ..attribution.evaluation import kernel_neighbours

    return kernel_neighbours(surrogate.K_test[:n], np.diag(surrogate.K_train), LIST_K)


def _measure(method, A, target, neighbours):
    """Raw and relative explanations of ``A``; which one the panel shows, and why."""
    from ..attribution.evaluation import (
        explanation_overlap,
        relative_attributions,
        repeated_proponents,
    )

    shown = min(N_SHOWN, len(A))
    row = {"method": method.name}
    for variant, values in (("raw", A), ("relative", relative_attributions(A))):
        found = top_attributions(values, lambda chunk: 1.0, TOP_K)
        lists = found["proponents"][:, :LIST_K]
        overlap = explanation_overlap(lists, neighbours)
        method.measured[variant] = Bunch(target=np.asarray(target), **found)
        row[f"{variant}_pairwise_overlap"] = overlap.pairwise
        row[f"{variant}_neighbour_overlap"] = overlap.neighbours
        row[f"{variant}_shown_max_share"] = explanation_overlap(lists[:shown]).max_share
    # raw attributions are what predicts retraining: keep them unless their lists repeat
    method.panel = (
        "relative"
        if repeated_proponents(method.measured["raw"].proponents[:shown, :LIST_K])
        else "raw"
    )
    row["panel"] = method.panel
    row["seconds"] = round(method.seconds, 2)
    return row


def _json_explanations(method, n):
    """The shown explanations as JSON-ready rows (test sample, method, variant, lists)."""
    out = []
    for variant, ex in method.measured.items():
        for i in range(n):
            out.append(
                {
                    "test_index": i,
                    "method": method.name,
                    "variant": variant,
                    "shown": variant == method.panel,
                    "target": ex.target[i].item(),
                    "proponents": ex.proponents[i].tolist(),
                    "proponent_scores": ex.proponent_scores[i].tolist(),
                    "opponents": ex.opponents[i].tolist(),
                    "opponent_scores": ex.opponent_scores[i].tolist(),
                }
            )
    return out


def _lds(r, refit, methods, train_fn, n_subsets, input_shape, n_jobs, memory, seed, rows):
    """LDS of every kGLM row of the table and of each influence method, on ``n_subsets``."""
    from ..attribution.evaluation import linear_datamodeling_score, retrain_on_subsets

    started = time.perf_counter()
    retrained = retrain_on_subsets(
        train_fn,
        r.X,
        r.y,
        r.X_test,
        r.y_test,
        n_subsets=n_subsets,
        input_shape=input_shape,
        random_state=seed,
        n_jobs=n_jobs,
        memory=memory,
    )
    r.summary["lds_retraining_seconds"] = round(time.perf_counter() - started, 1)
    r.summary["lds_subsets"] = int(n_subsets)

    def score(A):
        found = linear_datamodeling_score(A, retrained).per_sample
        found = found[np.isfinite(found)]
        return float(found.mean()), float(found.std(ddof=1) / np.sqrt(max(len(found), 1)))

    n_rows = len(r.table["kernel"])
    r.table["lds"], r.table["lds_se"] = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
    for i in range(n_rows):
        kernel, estimator = str(r.table["kernel"][i]), str(r.table["estimator"][i])
        if estimator.startswith("kglm"):
            s = refit(kernel, estimator)
            r.table["lds"][i], r.table["lds_se"][i] = score(
                s.estimator.attribute(s.K_test, target=r.y_test)
            )
    everything = np.arange(len(r.y_test))
    for method, row in zip(methods, rows):
        row["lds"], row["lds_se"] = score(method.attribute(everything, r.y_test))
    r.lds_methods = from_rows(
        [
            {"method": f"{k} {e}", "lds": v, "lds_se": s}
            for k, e, v, s in zip(
                r.table["kernel"], r.table["estimator"], r.table["lds"], r.table["lds_se"]
            )
            if np.isfinite(v)
        ]
        + [
            {"method": row["method"], "lds": row["lds"], "lds_se": row["lds_se"]}
            for row in rows
            if row["method"].startswith("influence")
        ]
    )
