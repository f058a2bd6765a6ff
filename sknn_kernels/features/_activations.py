"""The activations behind ``NTKFeaturizer``'s ``"ck"`` and ``"embedding"`` kernels.

Both kernels are Grams of activations, ``k(x, x') = Σ_ℓ <a_ℓ(x), a_ℓ(x')>`` summed over the
chosen module outputs ``ℓ``; the sum of per-module Grams is the Gram of the concatenated
per-module vectors, so the featurizer stores one concatenated row per sample. The rule:

* **Which outputs.** The ``layers`` given (each must be called and give a floating tensor
  with one row per sample); else ``"ck"``: the input of the readout ``nn.Linear``;
  ``"embedding"`` (the paper's Em): every leaf module but dropout, flatten and identity whose
  output has one row per sample. That is decided on two probe calls (the first sample
  repeated 2 and 3 times): outputs whose first axis does not follow the batch (BERT's
  position embeddings are ``(1, T, d)`` whatever the batch) are the same for every sample
  and are left out, as are modules that return no floating tensor or are not called.
* **Which tensor of an output.** A tensor itself; of a tuple, list, dict or Hugging Face
  ``ModelOutput``, its first tensor (a ``ModelOutput``'s ``last_hidden_state``).
* **One vector per sample.** A token sequence, i.e. an output ``(n, T, ...)`` of a network
  called with a named input ``attention_mask`` of ``T`` tokens, is averaged over the real
  (unmasked) tokens, then flattened; every other output is flattened as it is. The mean,
  rather than the flattened sequence the paper's BERT code uses, compares sentences by
  content rather than token position by token position, does not depend on padding, and
  costs ``d`` numbers per module instead of ``T·d`` (MiniLM: ~37k per text, not ~1.2M at
  ``T = 32``). It is also what sentence encoders such as MiniLM use for their embedding.
"""

import torch

from .embedding import pool

__all__ = ["activation_layers", "activation_rows"]

_SKIPPED_MODULES = (torch.nn.Dropout, torch.nn.Flatten, torch.nn.Identity)
_PROBE_SIZES = (2, 3)


def activation_layers(adapter, kernel, layers, first):
    """The layer specs whose activations enter the kernel (see the module docstring).

    ``first`` is a device batch holding at least the first sample (for the probes).
    """
    if layers is not None:
        return [layers] if isinstance(layers, str) else list(layers)
    if kernel == "ck":
        return [adapter.last_linear(first[:1]) + ":input"]
    modules = dict(adapter.module.named_modules())
    specs = [n for n in adapter.leaf_layers() if not isinstance(modules[n], _SKIPPED_MODULES)]
    kept = set(specs)
    device = first.tensors()[0].device
    for size in _PROBE_SIZES:
        probe = first[torch.zeros(size, dtype=torch.long, device=device)]
        with torch.no_grad(), adapter.capture(specs) as records:
            adapter.call(probe)
        kept &= {s for s in specs if records[s] and all(_rows(t, size) for t in records[s])}
    if not kept:
        raise ValueError(
            "kernel='embedding': no module of the network gives a floating-point output with "
            "one row per sample; name the activations to use in `layers`."
        )
    return [s for s in specs if s in kept]


def activation_rows(adapter, specs, batch):
    """``(n, width)``: the activations ``specs`` of ``batch``, each reduced and concatenated."""
    with adapter.capture(specs) as records:
        adapter.call(batch)
    silent = [s for s in specs if not records[s]]
    if silent:
        raise ValueError(f"Layer(s) {silent} were not called in the forward pass.")
    mask = batch.get("attention_mask")
    parts = []
    for spec in specs:
        for t in records[spec]:
            if not _rows(t, len(batch)):
                raise ValueError(
                    f"Layer {spec!r} gives {_describe(t)}, not a floating-point tensor "
                    f"with one row per sample ({len(batch)} here): its activations cannot "
                    "enter the kernel; name other layers in `layers`."
                )
            parts.append(_reduce(t, mask))
    return torch.cat(parts, dim=1)


def _rows(t, n):
    """Whether ``t`` is a floating-point tensor with one row per sample of a batch of ``n``."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim and t.shape[0] == n


def _describe(t):
    if not isinstance(t, torch.Tensor):
        return "no tensor"
    return f"a {str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"


def _reduce(t, mask):
    """One row per sample: masked mean over the tokens of a token sequence, else flattened."""
    if mask is not None and t.ndim >= 3 and t.shape[1] == mask.shape[1]:
        return pool(t.reshape(t.shape[0], t.shape[1], -1), "mean_tokens", mask=mask)
    return t.reshape(t.shape[0], -1)
