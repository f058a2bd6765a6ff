"""The generic per-sample gradient path of the NTK engine, for parameters no rule covers.

``torch.func`` per-sample gradients, proved on the probe samples against autograd: the path moves
down :data:`GENERIC_PATHS` when it cannot trace the network, returns a wrongly shaped gradient
(a known nested-vmap batching bug, e.g. PReLU's backward) or disagrees with autograd.
"""

import torch

from ._numerics import absmax
from .gradients import GradientShapeError, autograd_grads, n_cotangents, vmap_grads

# Generic per-sample gradient paths, fastest first; the engine moves down this list when a path
# cannot trace the network, returns a wrongly shaped gradient or disagrees with autograd.
GENERIC_PATHS = ("vmap", "vmap_per_cotangent", "autograd")


class GenericPath:
    """Mixin of :class:`~sknn_kernels.ntk.engine.NTKEngine`: its rule-less parameters."""

    def _set_generic(self):
        covered = {i for u in self.units for i in u.param_indices}
        self.generic = [(i, n, p, g) for i, n, p, g in self.params if i not in covered]
        self.generic_numel = sum(p.numel() for _, _, p, _ in self.generic)
        self.generic_path = "autograd" if self.method == "autograd" else "vmap"
        self.generic_notes = []  # why the generic path moved down GENERIC_PATHS

    def _fallback(self, reason, to=None):
        """Move the generic path one step down :data:`GENERIC_PATHS` (or to ``to``)."""
        nxt = to or GENERIC_PATHS[GENERIC_PATHS.index(self.generic_path) + 1]
        self.generic_notes.append(f"{self.generic_path} -> {nxt}: {reason}")
        self.generic_path = nxt

    def _probe_generic(self, x):
        """Check the generic per-sample gradients of the probe against autograd's.

        Shapes are checked on every batch (see ``check_shapes``); values here, on random
        cotangents, because a batching bug can also return well-shaped wrong numbers.
        """
        if not self.generic or self.generic_path == "autograd":
            return
        names = [n for _, n, _, _ in self.generic]
        m = n_cotangents(self.kind, self.n_outputs)
        gen = torch.Generator(device=self.device).manual_seed(1)
        V = torch.randn(
            len(x), m, self.n_outputs, generator=gen, device=self.device, dtype=self.dtype
        )
        truth = autograd_grads(self.adapter, names, x, V)
        tol = 1e-4 if self.dtype == torch.float32 else 1e-9
        while self.generic_path != "autograd":
            path = self.generic_path
            ours = self._generic_grads(x, V)
            if self.generic_path != path:
                continue  # it already fell back while computing
            worst = max(
                absmax(a - b) / (absmax(a) + absmax(b) + 1e-30) for a, b in zip(ours, truth)
            )
            if worst <= tol:
                return
            self._fallback(f"relative difference {worst:.2g} with autograd on the probe")

    def _generic_grads(self, x, V):
        names = [n for _, n, _, _ in self.generic]
        while self.generic_path != "autograd":
            try:
                return self._chunked_vmap(names, x, V, nested=self.generic_path == "vmap")
            except GradientShapeError as exc:
                self._fallback(str(exc))
            except (RuntimeError, NotImplementedError) as exc:
                if self.generic_path == "vmap":  # nested vmap also fails on batching bugs
                    self._fallback(f"nested vmap failed ({exc})")
                elif self.method == "vmap":
                    raise ValueError(
                        "method='vmap': torch.func.vmap cannot trace this network (data-dependent "
                        "control flow, .item(), or an operator without a batching rule, as in "
                        "Hugging Face masking code); use method='auto', which falls back to "
                        f"autograd, or method='autograd'. torch said: {str(exc).splitlines()[0]}"
                    ) from exc
                else:
                    self._fallback(f"vmap cannot trace the network ({exc})")
        return autograd_grads(self.adapter, names, x, V)

    def _chunked_vmap(self, names, x, V, nested):
        m = V.shape[1]
        per = max(1, (64 * 2**20 // V.element_size()) // max(1, m * self.generic_numel))
        parts = [
            vmap_grads(self.adapter, names, x[s : s + per], V[s : s + per], nested=nested)
            for s in range(0, len(x), per)
        ]
        return [torch.cat(ps) for ps in zip(*parts)]
