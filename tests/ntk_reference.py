"""Independent float64 references for NTK-family kernels (shared by the NTK test modules).

Per-sample Jacobians come from ``torch.func.jacrev`` (one call per sample) or, with
``loop=True``, from one ``torch.autograd.grad`` per sample and output: no ``vmap`` at all, so
a torch.func batching bug cannot hide in the reference. Inputs may be integer token ids.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev


def _as_input(X):
    X = torch.as_tensor(X)
    return X if not X.is_floating_point() else X.to(torch.float64)


def jacobian(net, X, layers=None, owned=None, loop=False):
    """Per-sample Jacobians ``(n, C, P)`` in float64 and the logits ``(n, C)``.

    ``layers``: parameters under these modules; ``owned``: parameters owned by this module.
    """
    net = copy.deepcopy(net).double().eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    if layers is not None:
        params = {
            k: v for k, v in params.items() if any(k.startswith(layer + ".") for layer in layers)
        }
    if owned is not None:
        params = {k: v for k, v in params.items() if (k.rpartition(".")[0] or k) == owned}
    X = _as_input(X)
    with torch.no_grad():
        out = net(X).reshape(len(X), -1)
    if loop:
        named = dict(net.named_parameters())
        chosen = [named[k] for k in params]
        rows = []
        for x in X:
            f = net(x.unsqueeze(0)).reshape(-1)
            per_output = []
            for c in range(f.shape[0]):
                gs = torch.autograd.grad(f[c], chosen, retain_graph=True, allow_unused=True)
                per_output.append(
                    torch.cat(
                        [
                            torch.zeros(p.numel(), dtype=torch.float64)
                            if g is None
                            else g.reshape(-1)
                            for g, p in zip(gs, chosen)
                        ]
                    )
                )
            rows.append(torch.stack(per_output))
        return torch.stack(rows), out
    rest = {k: v.detach() for k, v in net.named_parameters() if k not in params}
    buffers = dict(net.named_buffers())

    def f(p, x):
        return functional_call(net, (p, rest, buffers), (x.unsqueeze(0),)).reshape(-1)

    rows = []
    for x in X:
        jac = jacrev(f)(params, x)
        rows.append(torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1))
    return torch.stack(rows), out


def reference(net, X1, X2=None, kind="pntk", layers=None, y1=None, y2=None, owned=None, loop=False):
    """The ``kind`` kernel from float64 Jacobians (see :func:`jacobian`)."""
    J1, f1 = jacobian(net, X1, layers, owned, loop)
    J2, f2 = (J1, f1) if X2 is None else jacobian(net, X2, layers, owned, loop)
    C = J1.shape[1]
    if kind == "pntk":
        s1, s2 = J1.sum(1) / math.sqrt(C), J2.sum(1) / math.sqrt(C)
        return (s1 @ s2.T).numpy()
    if kind == "trace":
        return torch.einsum("icp,jcp->ij", J1, J2).numpy()
    if kind == "diagonal":
        return torch.einsum("icp,jcp->ijc", J1, J2).numpy()
    if kind == "full":
        return torch.einsum("icp,jdp->ijcd", J1, J2).numpy()
    y2 = y1 if X2 is None else (f2.argmax(1).numpy() if y2 is None else y2)

    def loss_grad(J, f, y):
        v = torch.softmax(f, 1) - F.one_hot(torch.as_tensor(y), C).double()
        return torch.einsum("ic,icp->ip", v, J)

    return (loss_grad(J1, f1, y1) @ loss_grad(J2, f2, y2).T).numpy()


def rel_err(K, R):
    """Largest absolute difference relative to the largest entry of the reference."""
    return float(np.abs(np.asarray(K, dtype=np.float64) - R).max() / np.abs(R).max())
