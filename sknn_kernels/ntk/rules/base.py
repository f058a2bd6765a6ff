"""The :class:`Rule` interface, the registry, and the pair-sum contraction shared by rules.

For a module applied at positions ``t`` (tokens, conv patches, the several calls of a shared
module), a rule reads per-sample inputs ``A`` (``(n, T, ...)``, from the module's input in a
forward hook) and signals ``G`` (``(n, m, T, d_out)``: the gradient of ``vᵀf`` for each of the
``m`` cotangents with respect to the module's output). Its per-sample gradient is then a
cheap function of ``(A, G)``; for the Kronecker-factored layers (Linear, Conv, Embedding)

    <grad(x), grad(x')> = Σ_{t,s} (g_t · g'_s) κ(a_t, a'_s),

a "pair sum" that never forms a parameter-sized gradient (``κ`` is the dot product, or token
equality for an embedding). Calls of a shared module are more positions of the same sum,
which is what keeps weight sharing right.
"""

import torch

from ..gram import broadcast_to, contract

_REGISTRY = {}

# Elements of the (rows, n2, T, S) pair tensors a pair-sum contraction may hold at once.
PAIR_ELEMENTS = 2**24


def register(rule):
    """Class decorator: use ``rule`` for the module types in ``rule.types`` (and subclasses)."""
    for module_type in rule.types:
        _REGISTRY[module_type] = rule
    return rule


def rule_for(module):
    """The rule class for ``module`` (nearest registered base class), or ``None``."""
    for cls in type(module).__mro__:
        rule = _REGISTRY.get(cls)
        if rule is not None:
            return rule if rule.eligible(module) else None
    return None


def supported_layers():
    """Rule classes in registration order (one per layer family)."""
    return list(dict.fromkeys(_REGISTRY.values()))


class Rule:
    """How one module's parameters get their NTK blocks from ``(A, G)``.

    Subclasses set ``types`` (module classes), ``summary`` (one line for the docs) and
    ``choices`` (forms they support, preferred first: ``"hadamard"`` pair sums, ``"outer"``
    materialised per-sample gradients, ``"factored"`` both kept as ``(A, G)`` and materialised
    per tile), and implement :meth:`inputs`,
    :meth:`signals` and :meth:`outer` (plus :meth:`pair_inputs` for ``"hadamard"``).

    Attributes set by the engine: ``positions`` (``T`` per sample over all calls, measured on
    a probe) and ``choice``.
    """

    types = ()
    summary = ""
    slots = ("weight", "bias")
    choices = ("outer",)
    kron = False  # gradient Σ_t g_t ⊗ a_t with a_t ∈ R^d_in: cost model, pair sums
    sketchable = False  # has project_inputs / sketch_width: the structured projection applies
    counter_inputs = False  # project_inputs takes a function of row ids (counter-based P_in)

    def __init__(self, name, module, group, indices):
        self.name = name
        self.module = module
        self.group = group
        self.indices = indices  # {slot: parameter index in the engine} for the slots in θ
        self.positions = None
        self.choice = self.choices[0]
        self.side = None  # block side of the structured projection (None: dense)
        self.d_out = self.signal_width(module)

    @classmethod
    def eligible(cls, module):
        """Whether this module instance can use the rule (configuration checks)."""
        return True

    @classmethod
    def slots_of(cls, module):
        """Names of the module's parameters the rule may cover."""
        return cls.slots

    def combine(self, calls):
        """``(A, G)`` from ``[(input, [output signal per cotangent])]``, one entry per call.

        Calls of a shared module are more positions: stacked along ``T``.
        """
        A = _cat([self.inputs(x) for x, _ in calls], dim=1)
        G = _cat([_stack([self.signals(g) for g in gs], dim=1) for _, gs in calls], dim=2)
        return A, G

    @staticmethod
    def rows(A, G):
        """The set of leading (sample) sizes of ``A`` and ``G``."""
        return {A.shape[0], G.shape[0]}

    @staticmethod
    def count_positions(A):
        return A.shape[1]

    @classmethod
    def signal_width(cls, module):
        return getattr(module, cls.slots[0]).shape[0]

    def install(self, hook):
        """Attach the Recorder's ``hook(module, args, output)``; returns a removable handle."""
        return self.module.register_forward_hook(hook)

    # ``decomposed(module)``, where set: a context manager making the module run a forward whose
    # parameter uses are observable (see rules.attention); applied while the engine records.
    decomposed = None

    @property
    def param_indices(self):
        """Engine indices of the parameters this rule covers, in :attr:`slots` order."""
        return [self.indices[s] for s in self.slots if s in self.indices]

    def slot_sizes(self):
        return [(s, getattr(self.module, s).numel()) for s in self.slots if s in self.indices]

    @property
    def numel(self):
        return sum(size for _, size in self.slot_sizes())

    def inputs(self, x):
        """Module input -> ``A`` of shape ``(n, T, ...)``."""
        raise NotImplementedError

    def signals(self, g):
        """Gradient w.r.t. the module output -> ``(n, T, d_out)``."""
        return g.reshape(g.shape[0], -1, self.d_out)

    def outer(self, A, G):
        """Per-sample gradient of the covered parameters, concatenated: ``(n, m, numel)``."""
        raise NotImplementedError

    def outer_into(self, A, G, out):
        """:meth:`outer` written into ``out`` (rules that can write in place override this)."""
        return out.copy_(self.outer(A, G))

    def pair_inputs(self, A1, A2, paired):
        """Forward Gram ``κ(a_t, a'_s)``: ``(n1, n2, T, S)`` (``(n, T, S)`` if ``paired``)."""
        raise NotImplementedError

    def rep_size(self, m):
        """Per-sample elements kept for this rule between passes (for block sizing)."""
        if self.choice in ("hadamard", "factored"):  # (A, G) kept
            return self.positions * (self.input_width + m * self.d_out)
        return m * self.numel

    @property
    def input_width(self):
        return 1

    def hadamard(self, A1, G1, A2, G2, mode, paired=False):
        """NTK block ``Σ_{t,s} (g_t·g'_s) κ(a_t, a'_s)`` reduced over cotangents as ``mode``."""
        return pair_sum(
            lambda a1, a2: self.pair_inputs(a1, a2, paired), A1, G1, A2, G2, mode, paired
        )

    def sources(self, A, G, J):
        """``[(index, n_rows, row_len, read)]`` per parameter for the dense projection.

        ``read(samples, start, stop)`` returns rows ``start:stop`` of the per-sample gradient,
        flattened: ``(len(samples), m, (stop - start) * row_len)``. ``J`` is :meth:`outer`'s
        result when the rule materialised it (``choice == "outer"``), else ``None``.
        """
        out, offset = [], 0
        for slot, size in self.slot_sizes():
            p = getattr(self.module, slot)
            rows = p.shape[0] if p.ndim else 1
            row_len = size // rows
            out.append(
                (
                    self.indices[slot],
                    rows,
                    row_len,
                    lambda s, a, b, J=J, o=offset, r=row_len: J[s, :, o + a * r : o + b * r],
                )
            )
            offset += size
        return out


class PerCallRule(Rule):
    """A rule whose ``A`` and ``G`` are lists with one entry per call of the module (inputs
    ``(n, ...)`` and signals ``(n, m, ...)`` as they are): its :meth:`outer` adds the calls'
    per-sample gradients up (weight sharing), for modules whose positions are not rows."""

    def combine(self, calls):
        return [x for x, _ in calls], [torch.stack(gs, dim=1) for _, gs in calls]

    @staticmethod
    def rows(A, G):
        return {t.shape[0] for t in A + G}

    @staticmethod
    def count_positions(A):
        return len(A)


def pair_sum(kappa, A1, G1, A2, G2, mode, paired):
    """``Σ_{t,s} (g_t·g'_s) κ_ts`` for ``G: (n, m, T, d)``, in row chunks bounding memory."""
    n1, m, T = G1.shape[:3]
    if paired:
        return _pair_sum(kappa(A1, A2), G1, G2, mode, True)
    S, n2 = G2.shape[2], G2.shape[0]
    per = max(1, PAIR_ELEMENTS // max(1, n2 * T * S * (1 + (m * m if mode == "full" else m))))
    if per >= n1:
        return _pair_sum(kappa(A1, A2), G1, G2, mode, False)
    return torch.cat(
        [
            _pair_sum(kappa(A1[r : r + per], A2), G1[r : r + per], G2, mode, False)
            for r in range(0, n1, per)
        ]
    )


def _pair_sum(aa, G1, G2, mode, paired):
    if aa.shape[-1] == 1 and aa.shape[-2] == 1:  # one position: the Hadamard rule proper
        gg = contract(G1[:, :, 0], G2[:, :, 0], mode, paired)
        return gg * broadcast_to(aa[..., 0, 0], gg)
    i, j = ("i", "i") if paired else ("i", "j")
    ij = "i" if paired else "ij"
    if mode == "trace":
        gg = torch.einsum(f"{i}atd,{j}asd->{ij}ts", G1, G2)
        return (gg * aa).sum((-2, -1))
    if mode == "diag":
        gg = torch.einsum(f"{i}atd,{j}asd->{ij}ats", G1, G2)
        return (gg * aa.unsqueeze(-3)).sum((-2, -1))
    gg = torch.einsum(f"{i}atd,{j}bsd->{ij}abts", G1, G2)
    return (gg * aa.unsqueeze(-3).unsqueeze(-3)).sum((-2, -1))


def _cat(tensors, dim):
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def _stack(tensors, dim):
    return tensors[0].unsqueeze(dim) if len(tensors) == 1 else torch.stack(tensors, dim=dim)
