"""Capture of the per-layer rules' inputs ``A`` and output signals ``G`` (see ``rules``).

Signals are captured by adding a zero leaf ``z`` to the layer's output in a forward hook and
differentiating with respect to ``z``: unlike the output tensor itself, ``z`` is not affected
by later in-place operations (``ReLU(inplace=True)``).
"""

import contextlib

import torch

from .rules import rule_for


class Recorder:
    """Forward hooks that record each unit's inputs and a zero leaf on its outputs.

    ``root``: the network; its modules whose rule has a ``decomposed`` forward (attention) run
    it while installed, so that projections they apply to raw parameters are observable.
    """

    def __init__(self, units, expand=True, root=None):
        self.units = units
        self.expand = expand  # see _hook
        self.root = root
        self.batch = None
        self.active = False
        self.records = {}
        self.missing = set()

    @contextlib.contextmanager
    def installed(self):
        with contextlib.ExitStack() as stack:
            for mod in self.root.modules() if self.root is not None and self.units else ():
                rule = rule_for(mod)
                if rule is not None and rule.decomposed is not None:
                    stack.enter_context(rule.decomposed(mod))
            for u in self.units:
                stack.callback(u.install(self._hook(u)).remove)
            yield self

    @contextlib.contextmanager
    def recording(self, batch=None):
        self.records = {u: [] for u in self.units}
        self.batch = batch
        self.active = True
        try:
            yield self.records
        finally:
            self.active = False

    def _hook(self, unit):
        def hook(module, args, output):
            if not self.active:
                return None
            if not args or not isinstance(args[0], torch.Tensor):
                self.missing.add(unit)  # called with keywords only: cannot see its input
                return None
            x, shape = args[0].detach(), output.shape
            if self.expand and self.batch and self.batch > 1 and shape[0] == 1 == x.shape[0]:
                # a module on a batch-1 constant broadcast over the batch (Hugging Face position
                # embeddings): expanding the output makes its signals per-sample; the engine's
                # probe checks the network's output is unchanged
                shape = (self.batch,) + shape[1:]
                x = x.expand((self.batch,) + x.shape[1:])
            # an expanded scalar: no allocation; the add is the one copy in-place safety needs
            z = output.new_zeros((), requires_grad=True).expand(shape)
            self.records[unit].append((x, z))
            return output + z

        return hook

    def signals(self, f, V):
        """``{unit: (A, G)}`` with ``A: (n, T, d_in)`` and ``G: (n, m, T, d_out)``.

        One backward pass over the batch per cotangent; calls of a shared unit are stacked
        along ``T``.
        """
        used = [u for u in self.units if self.records.get(u)]
        zs = [z for u in used for _, z in self.records[u]]
        if not zs:  # no unit was called through its forward (e.g. MultiheadAttention.out_proj)
            return {}
        m = V.shape[1]
        per_cotangent = []
        for a in range(m):
            gs = torch.autograd.grad(
                (f * V[:, a]).sum(), zs, retain_graph=a < m - 1, allow_unused=True
            )
            per_cotangent.append(
                [
                    torch.zeros(z.shape, dtype=z.dtype, device=z.device) if g is None else g
                    for g, z in zip(gs, zs)
                ]
            )
        out, k = {}, 0
        for u in used:
            calls = self.records[u]
            out[u] = u.combine(
                [(x, [g[k + i] for g in per_cotangent]) for i, (x, _) in enumerate(calls)]
            )
            k += len(calls)
        return out
