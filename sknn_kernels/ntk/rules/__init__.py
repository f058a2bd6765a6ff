"""Per-layer NTK rules, registered by module type.

A rule says, for one module, how to read per-sample inputs ``A`` (from the module's input) and
output signals ``G`` (from the gradient at its output), and how to form from them the
module's per-sample gradient, its NTK block and its projection (see :class:`Rule`). Modules
without a rule get per-sample gradients through the module alone (:mod:`.local`), or, when
that fails its probe, generic per-sample gradients of the whole network (``torch.func.vmap``,
autograd as the last resort). Adding a layer type is one module here that subclasses :class:`Rule` and decorates
it with :func:`register`, plus its float64 reference test.

Every rule is verified on a probe against autograd before it is used (a module whose weight is
also used outside its ``forward``, or that is not called batch-first, falls back to the
generic path), so a rule may be registered for a base class whose subclasses usually behave.
"""

from .base import Rule, register, rule_for, supported_layers

# importing the rule modules registers them
from . import attention, conv, conv_transpose, embedding, linear, norm  # noqa: F401  isort:skip

__all__ = ["Rule", "register", "rule_for", "supported_layers", "supported_layers_rst"]


def supported_layers_rst():
    """The reStructuredText list of the layers with a rule (the docs include it)."""
    lines = []
    for rule in supported_layers():
        names = ", ".join(
            f"``nn.{t.__name__}``"
            if t.__module__.startswith("torch.nn")
            else f"``{t.__module__}.{t.__qualname__}``"
            for t in rule.types
        )
        lines.append(f"* {names}: {rule.summary}")
    return "\n".join(lines) + "\n"
