"""Per-sample gradients of a module without a rule, computed through that module alone.

For a module that owns parameters in θ but has no registered rule (``nn.PReLU``, a learned
scale, a custom layer), the engine records, in the same batched forward/backward pass as the
rules, the module's input ``x`` and the signal ``g`` at its output; the per-sample gradient of
its own parameters is then ``∂ <module(x_i), g_i> / ∂θ_module``, a vector-Jacobian product
through the module only: ``torch.func.vmap`` over the samples of one small module (one
cotangent at a time, so nested-vmap batching bugs cannot arise), or a loop over samples of
that module when ``vmap`` cannot trace it. Far cheaper than per-sample passes through the
whole network, and it works when the network as a whole cannot be traced.

The engine uses it for modules called with one positional tensor that return a tensor; the
probe checks each module's per-sample gradient against autograd (a module whose parameters
are also used outside its ``forward``, or that mixes samples, fails it), and parameters it
rejects take the network-wide generic path.
"""

import warnings

import torch
from torch.func import functional_call, grad, vmap

from .base import PerCallRule


class LocalRule(PerCallRule):
    """Module-local per-sample gradients of the module's own parameters (not registered)."""

    summary = "any module called on one tensor: per-sample vector-Jacobian products through it"

    def __init__(self, name, module, group, indices):
        self.slots = tuple(indices)
        super().__init__(name, module, group, indices)
        self.vmap_ok = True

    @classmethod
    def slots_of(cls, module):
        if isinstance(module, torch.jit.ScriptModule):  # no hooks, no functional_call
            return ()
        return tuple(name for name, _ in module.named_parameters(recurse=False))

    @staticmethod
    def signal_width(module):
        return 0

    def install(self, hook):
        def checked(module, args, kwargs, output):
            if len(args) != 1 or kwargs or not isinstance(output, torch.Tensor):
                return hook(module, (), output)  # not a call on one tensor: recorded as missing
            return hook(module, args, output)

        return self.module.register_forward_hook(checked, with_kwargs=True)

    def outer(self, A, G):
        n, m = G[0].shape[:2]
        params = {s: getattr(self.module, s).detach() for s in self.slots}
        total = None
        for x, g in zip(A, G):
            for a in range(m):
                parts = self._vjp(params, x, g[:, a])
                flat = torch.cat([parts[s].reshape(n, 1, -1) for s in self.slots], dim=2)
                if total is None:
                    total = torch.zeros(n, m, flat.shape[2], dtype=flat.dtype, device=flat.device)
                total[:, a : a + 1] += flat
        return total

    def _vjp(self, params, x, g):
        """``{slot: (n, *shape)}``: per-sample ``∂ <module(x_i), g_i> / ∂θ``."""
        module = self.module

        def scalar(p, xi, gi):
            return (functional_call(module, p, (xi.unsqueeze(0),))[0] * gi).sum()

        if self.vmap_ok:
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="There is a performance drop")
                    return vmap(grad(scalar), in_dims=(None, 0, 0))(params, x, g)
            except (RuntimeError, NotImplementedError):
                self.vmap_ok = False  # data-dependent control flow: loop over samples
        out = {s: [] for s in self.slots}
        with torch.enable_grad():
            leaves = {s: p.clone().requires_grad_(True) for s, p in params.items()}
            for xi, gi in zip(x, g):
                value = (functional_call(module, leaves, (xi.unsqueeze(0),))[0] * gi).sum()
                grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
                for s, gr in zip(self.slots, grads):
                    out[s].append(torch.zeros_like(leaves[s]) if gr is None else gr)
        return {s: torch.stack(v) for s, v in out.items()}
