"""The NTK view of late fusion: each input branch's share of the network's tangent kernel.

The empirical NTK ``K(x, x') = <∇θ f(x), ∇θ f(x')>`` is a sum over parameters, so it splits into
the kernels of disjoint parameter sets. In a late-fusion network (one encoder per input, a shared
head) the parameters that only one input reaches form that input's branch: the share of
``K_branch(x, x)`` in ``K(x, x)`` says how much of the network's sensitivity at ``x`` lives in that
encoder, and the trace share how much over the data. :func:`branch_parameters` finds the branches
by following the autograd graph from the output back to the inputs (which inputs each parameter's
operations depend on); :func:`kernel_shares` sums the layer-wise pNTK components
(:func:`sknn_kernels.ntk.empirical_ntk` with ``layerwise=True``) per branch.
"""

import numpy as np
import torch

from .._results import from_rows
from ..network._base import first_rows, make_adapter
from ..ntk import empirical_ntk
from .input_shares import binned_table

__all__ = ["branch_parameters", "kernel_shares"]

SHARED = "shared"


def branch_parameters(network, X, *, network_output=None, device="cpu"):
    """Which named input each parameter of the network depends on.

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        A network taking named inputs (a dict passed as keyword arguments).
    X : dict of str to array-like
        A few input rows (the first two are used); floating-point entries.
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits.
    device : str, default="cpu"
        Where the probe runs.

    Returns
    -------
    branches : dict of str to list of str
        Input key -> names of the parameters reached by that input only, plus ``"shared"``
        -> the parameters that several inputs (or none) reach, such as a fusion head.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.branches import branch_parameters
    >>> class Late(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(2, 3), torch.nn.Linear(4, 3)
    ...         self.head = torch.nn.Linear(6, 2)
    ...     def forward(self, a, b):
    ...         return self.head(torch.cat([self.a(a).tanh(), self.b(b).tanh()], 1))
    >>> X = {"a": np.ones((2, 2), np.float32), "b": np.ones((2, 4), np.float32)}
    >>> branch_parameters(Late(), X)
    {'a': ['a.weight', 'a.bias'], 'b': ['b.weight', 'b.bias'], 'shared': ['head.weight', 'head.bias']}
    """
    if not isinstance(X, dict) and not hasattr(X, "keys"):
        raise ValueError(
            "The branch probe needs named inputs (a dict of arrays, one per encoder): with one "
            "tensor every parameter after the first layer sees all channels."
        )
    adapter = make_adapter(network, device=device, dtype="float32", output=network_output)
    batch = adapter.inputs(first_rows(dict(X), 2)).to(adapter.device)
    leaves = {}
    for key, value in batch.data.items():
        if not value.is_floating_point():
            raise ValueError(
                f"Input {key!r} holds integers (token ids): the branch probe follows gradients, "
                "so it needs floating-point inputs (probe the embedding outputs instead)."
            )
        value.requires_grad_(True)
        leaves[id(value)] = key
    names = {id(p): n for n, p in adapter.module.named_parameters() if p.requires_grad}
    with torch.enable_grad():
        out = adapter.forward(batch)
    reach = _reach(out.grad_fn, leaves, names)
    branches = {key: [] for key in batch.data}
    branches[SHARED] = []
    for name in names.values():
        keys = reach.get(name, set())
        branches[next(iter(keys)) if len(keys) == 1 else SHARED].append(name)
    return branches


def _reach(root, leaves, names):
    """Parameter name -> the inputs met first on its way to the output.

    ``deps`` holds, per autograd node, the inputs its value depends on (iterative post-order);
    a parameter is reached by the inputs of the first nodes above it that depend on any
    (climbing over input-free nodes such as the transpose of a weight).
    """
    deps, parents, params, stack = {}, {}, {}, [(root, False)]
    while stack:
        node, done = stack.pop()
        if node is None or (not done and node in deps):
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if not hasattr(c, "variable"))
            continue
        found = set()
        for child in children:
            var = getattr(child, "variable", None)
            if var is None:
                found |= deps.get(child, set())
                parents.setdefault(child, []).append(node)
            elif id(var) in leaves:
                found.add(leaves[id(var)])
            elif id(var) in names:
                params.setdefault(names[id(var)], []).append(node)
        deps[node] = found
    reach = {}
    for name, consumers in params.items():
        seen, frontier, found = set(), list(consumers), set()
        while frontier:
            node = frontier.pop()
            if node in seen:
                continue
            seen.add(node)
            if deps[node]:
                found |= deps[node]
            else:
                frontier.extend(parents.get(node, []))
        reach[name] = found
    return reach


def kernel_shares(network, X, y=None, *, bins=None, kind="pntk", network_output=None, device="cpu"):
    """Each input branch's share of the network's empirical NTK (late fusion).

    Parameters
    ----------
    network : torch.nn.Module, fitted skorch net or FrozenEstimator
        A network taking named inputs, each through parameters of its own.
    X : dict of str to array-like
        The samples (the kernel is ``n × n``: a few hundred at most).
    y : array-like of shape (n_samples,), default=None
        A value to bin the samples by (the target); ``None``: overall rows only.
    bins : int or array-like, default=None
        Equal-width bins of ``y`` or their edges (5 if ``y`` is given and ``bins`` is None).
    kind : {"pntk", "trace"}, default="pntk"
        The kernel (see :func:`sknn_kernels.ntk.empirical_ntk`).
    network_output : None, str or callable, default=None
        Which tensor of the network's output holds the logits.
    device : str, default="cpu"
        Where the kernel is computed.

    Returns
    -------
    results : dict of str to ndarray
        One row per component (each input's branch and ``"shared"``): ``component``,
        ``n_parameters``, ``layers`` (comma-separated), ``trace_share`` (``tr K_b / tr K``)
        and ``share`` / ``share_std`` (mean and spread of ``K_b(x, x) / K(x, x)`` over the
        samples). With ``y``, :func:`~sknn_kernels.attribution.input_shares.binned_table`'s
        per-bin table of the per-sample shares is returned instead (column ``player`` naming
        the component).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sknn_kernels.attribution.branches import kernel_shares
    >>> class Late(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(2, 3), torch.nn.Linear(4, 3)
    ...         self.head = torch.nn.Linear(6, 2)
    ...     def forward(self, a, b):
    ...         return self.head(torch.cat([self.a(a).tanh(), self.b(b).tanh()], 1))
    >>> rng = np.random.default_rng(0)
    >>> X = {"a": rng.normal(size=(6, 2)), "b": rng.normal(size=(6, 4))}
    >>> res = kernel_shares(Late(), X)
    >>> list(res["component"]), bool(np.isclose(res["trace_share"].sum(), 1))
    (['a', 'b', 'shared'], True)
    """
    branches = branch_parameters(network, X, network_output=network_output, device=device)
    module_of = {}
    for component, params in branches.items():
        for name in params:
            module = name.rsplit(".", 1)[0] if "." in name else ""
            # a module whose parameters fall in two branches counts as shared
            previous = module_of.get(module, component)
            module_of[module] = component if previous == component else SHARED
    parts = empirical_ntk(
        network,
        dict(X),
        kind=kind,
        layerwise=True,
        device=device,
        dtype="float64",
        network_output=network_output,
    )
    n = len(next(iter(parts.values())))
    diag = {c: np.zeros(n) for c in branches}
    layers = {c: [] for c in branches}
    for layer, K in parts.items():
        component = module_of.get(layer, SHARED)
        diag[component] += np.diagonal(np.asarray(K))
        layers[component].append(layer)
    components = list(branches)
    D = np.stack([diag[c] for c in components], 1)
    total = D.sum(1, keepdims=True)
    per_sample = D / np.where(total > 0, total, 1)
    if y is not None:
        return binned_table(per_sample, components, y, 5 if bins is None else bins, share=False)
    trace = D.sum(0) / max(D.sum(), np.finfo(float).tiny)
    return from_rows(
        [
            {
                "component": c,
                "n_parameters": _count(network, branches[c]),
                "layers": ",".join(layers[c]),
                "trace_share": float(trace[i]),
                "share": float(per_sample[:, i].mean()),
                "share_std": float(per_sample[:, i].std()),
            }
            for i, c in enumerate(components)
        ]
    )


def _count(network, names):
    from ..network._adapter import unwrap_network

    params = dict(unwrap_network(network).named_parameters())
    return int(sum(params[n].numel() for n in names))
