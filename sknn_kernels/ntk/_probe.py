"""Which path each parameter of the NTK engine takes, settled on a probe of the first samples.

Parameters in θ are grouped by layer (``layers=``); each module with a registered rule (or, for
modules without one, the local rule) that owns parameters in θ becomes a *unit*; the probe runs
the hooked network on two samples and keeps a unit only where its per-sample gradient equals
autograd's, so a module whose weight is also used outside its ``forward``, or that is not called
batch-first, falls back to the generic path (:mod:`._generic`).
"""

import contextlib

import torch

from ._numerics import absmax
from .rules import rule_for
from .rules.local import LocalRule
from .structured import Recorder


def _agrees(ours, grads):
    """Whether a rule's flat per-sample gradient ``ours`` equals autograd's ``grads`` (a tensor
    per parameter, in order), to 1e-4 of their scale. Overwrites ``ours``; no large copies (a
    word-embedding table's gradient is tens of MB)."""
    if ours.numel() != sum(g.numel() for g in grads):
        return False
    scale = absmax(ours) + max(absmax(g) for g in grads)
    err, k = 0.0, 0
    for g in grads:
        err = max(err, absmax(ours[k : k + g.numel()].sub_(g.reshape(-1))))
        k += g.numel()
    return err <= 1e-4 * scale + 1e-30


def _first(t):
    """Sample 0 of a rule's ``A`` or ``G`` (a tensor, or a list with one per call)."""
    return [x[:1] for x in t] if isinstance(t, list) else t[:1]


class Probe:
    """Mixin of :class:`~sknn_kernels.ntk.engine.NTKEngine`: parameter selection, units, probe."""

    def _select(self, layers):
        """Trainable parameters in θ and their group (layer) names."""
        named = list(self.module.named_parameters())
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None:
            layers = list(layers)
            if not layers:
                raise ValueError(
                    "`layers` is empty: name at least one layer, or use None for every "
                    "parameter of the network."
                )
            for name in layers:
                self.adapter.get_layer(name)  # clear error for a layer that does not exist
        self.params = []  # (index, name, parameter, group)
        for index, (name, p) in enumerate(named):
            if not p.requires_grad:
                continue
            if layers is None:
                group = name.rpartition(".")[0] or name
            else:
                hits = [layer for layer in layers if name.startswith(layer + ".")]
                if len(hits) > 1:
                    raise ValueError(
                        f"layers {hits} overlap (parameter {name!r} is in each); "
                        "each parameter may be counted once."
                    )
                if not hits:
                    continue
                group = hits[0]
            self.params.append((index, name, p, group))
        if layers is not None:
            empty = [layer for layer in layers if not any(g == layer for *_, g in self.params)]
            if empty:
                raise ValueError(f"Layer(s) {empty} have no trainable parameters.")
        if not self.params:
            raise ValueError("The network has no trainable parameters (requires_grad=True).")
        self.groups = list(dict.fromkeys(g for *_, g in self.params))
        self.units = []
        if self.method in ("auto", "structured"):
            self.units = self._find_units()
        self._set_generic()

    def _find_units(self):
        """One rule instance per module with a registered rule that owns parameters in θ."""
        by_id = {id(p): (i, g) for i, _, p, g in self.params}
        owners = {}
        for _, p in self.module.named_parameters(remove_duplicate=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
        units = []
        for name, mod in self.module.named_modules():
            # no rule: per-sample gradients through the module alone (checked on the probe)
            rule = rule_for(mod) or LocalRule
            # parameters shared with another module are not this module's alone: generic path
            indices = {
                slot: by_id[id(p)][0]
                for slot in rule.slots_of(mod)
                if isinstance(p := getattr(mod, slot, None), torch.Tensor)
                and id(p) in by_id
                and owners[id(p)] == 1
            }
            if not indices or (rule.kron and rule.slots[0] not in indices):
                continue
            group = by_id[id(getattr(mod, next(iter(indices))))][1]
            units.append(rule(name, mod, group, indices))
        return units

    def _prepare(self, X):
        """Probe the first samples: output size, positions per layer, structured rule check.

        A unit keeps the structured rule only if its per-sample gradient for sample 0 equals
        autograd's; otherwise (weight also used outside ``forward``, inputs not batch-first,
        keyword-only calls...) its parameters get generic per-sample gradients.
        """
        if self.n_outputs is not None:
            return
        if not len(X):
            raise ValueError("Cannot compute a kernel without samples: X is empty.")
        x = X[:2].to(self.device)
        with torch.no_grad(), self._called_layers() as called:
            plain = self.adapter.forward(x)
        silent = [name for name in self.layers or () if name not in called]
        if silent:
            raise ValueError(
                f"Layer(s) {silent} were not called in the forward pass, so their "
                "parameters have no gradient: name layers on the path to the outputs."
            )
        self.n_outputs = plain.shape[1]
        if not self.units:
            self._probe_generic(x)
            return
        by_index = self.params_by_index
        owned = [u.param_indices for u in self.units]
        tensors = [by_index[i] for ids in owned for i in ids]
        for expand in (True, False):
            recorder = Recorder(self.units, expand=expand, root=self.module)
            try:
                with recorder.installed(), recorder.recording(len(x)), torch.enable_grad():
                    f = self.adapter.forward(x)
                    if f.shape != plain.shape or not torch.allclose(
                        f, plain, rtol=1e-4, atol=1e-6, equal_nan=True
                    ):
                        continue
                    # the same pass is the probe
                    gen = torch.Generator(device=self.device).manual_seed(0)
                    V = torch.randn(
                        f.shape[0], 1, f.shape[1], generator=gen, device=self.device, dtype=f.dtype
                    )
                    V[1:] = 0  # sample 0 only: checks that rows of A and G are samples
                    truth = torch.autograd.grad(
                        (f * V[:, 0]).sum(), tensors, retain_graph=True, allow_unused=True
                    )
                    signals = recorder.signals(f, V)
                    break
            except (RuntimeError, ValueError):
                if not expand:
                    raise
        else:
            raise RuntimeError("The network's output changes when its layers are hooked.")
        self.expand = expand
        kept, k = [], 0
        for u, ids in zip(self.units, owned):
            grads = [
                torch.zeros_like(by_index[i]) if g is None else g
                for i, g in zip(ids, truth[k : k + len(ids)])
            ]
            k += len(ids)
            if u not in signals or u in recorder.missing:
                continue
            A, G = signals[u]
            if u.rows(A, G) != {len(x)}:
                continue  # called on something that is not the batch (sequence-first, constants)
            u.positions = u.count_positions(A)
            try:
                ours = u.outer(*(_first(t) for t in (A, G)))[0, 0]
            except (RuntimeError, ValueError, TypeError, NotImplementedError):
                continue  # a module the local rule cannot re-run on its own: generic path
            if _agrees(ours, grads):
                kept.append(u)
        self.units = kept
        self._set_generic()
        self._probe_generic(x)

    @contextlib.contextmanager
    def _called_layers(self):
        """The names in ``layers`` whose modules run during the ``with`` block."""
        called = set()
        handles = []
        for name in self.layers or ():
            # MultiheadAttention applies out_proj's parameters without calling it
            parent = name.rpartition(".")[0]
            watched = [name] + [parent] * isinstance(
                self.adapter.get_layer(parent) if parent else None, torch.nn.MultiheadAttention
            )
            handles += [
                self.adapter.get_layer(w).register_forward_hook(
                    lambda m, a, o, name=name: called.add(name)
                )
                for w in watched
            ]
        try:
            yield called
        finally:
            for h in handles:
                h.remove()
