"""Parameter descriptions shared by the NTK functions and :class:`~sknn_kernels.ntk.NTKEngine`.

Written once so that the functions and the engine document each option the same way. A
docstring line holding only ``%(name)s`` is replaced by the entry, re-indented to that line.
"""

import re

_PARAMS = {
    "network": """\
network : torch.nn.Module, fitted skorch NeuralNet, FrozenEstimator or NetworkAdapter
    The network ``f(x; θ) ∈ R^C``; a private eval-mode copy is used (dropout off,
    BatchNorm running statistics), the object passed is never modified. θ is every
    parameter with ``requires_grad=True`` (or those of ``layers``).""",
    "kind": """\
kind : {"pntk", "trace", "diagonal", "full", "loss_grad"}, default="pntk"
    * ``"pntk"``: ``<Σ_c g_c(x)/√C, Σ_c g_c(x')/√C>``, shape ``(n1, n2)``;
    * ``"trace"``: ``Σ_c <g_c(x), g_c(x')>``, shape ``(n1, n2)``;
    * ``"diagonal"``: ``<g_c(x), g_c(x')>``, shape ``(n1, n2, C)``;
    * ``"full"``: ``<g_c(x), g_c'(x')>``, shape ``(n1, n2, C, C)``;
    * ``"loss_grad"``: ``<∇θ L(x, y), ∇θ L(x', y')>`` for the softmax cross-entropy ``L``,
      shape ``(n1, n2)``: the TracIn inner product, cross-logit terms included (the
      paper's Grad-Cos keeps only ``Σ_c w_c K_c w'_c``; build it from ``"diagonal"``).
      It depends on the labels (``y1``, ``y2`` or ``y``).""",
    "layers": """\
layers : str or list of str, default=None
    Restrict θ to the parameters of these modules (names from ``named_modules()``).""",
    "layerwise": """\
layerwise : bool, default=False
    Return a dict layer name -> result whose values sum to the whole result. Layers are
    ``layers`` if given, else each module that owns parameters (biases included).""",
    "projection_dim": """\
projection_dim : int, default=None
    If set, the kernel of Johnson–Lindenstrauss-projected gradients ``Πᵀg/√k`` (Rademacher
    ``Π`` generated from ``random_state``; never a ``P × k`` matrix). ``k`` is the total
    dimension: every layer projects into the same ``k`` coordinates. Unbiased: its
    expectation over seeds is the exact kernel. With ``layerwise`` each layer's component
    is projected on its own (same ``Π`` blocks).""",
    "projection": """\
projection : {"structured", "dense"}, default="structured"
    ``"structured"``: Linear, Conv and Embedding layers project their inputs and output
    signals separately (Kronecker-structured ``Π``, as LoGra), ``O(T (d_in + d_out) k / s)``
    per sample and layer instead of ``O(d_in d_out k)``; slightly higher variance for
    aligned gradients (see :mod:`sknn_kernels.ntk.projection`). ``"dense"``: one dense
    Rademacher ``Π`` over all parameters.""",
    "random_state": """\
random_state : int, numpy Generator/RandomState or None, default=None
    Seed of the projection. Use the same integer for every call whose projected
    features are compared.""",
    "method": """\
method : {"auto", "structured", "vmap", "autograd"}, default="auto"
    How per-layer blocks are computed (all exact). ``"auto"``: layers with a rule
    (:mod:`sknn_kernels.ntk.rules`) use it, a cost model picking for Linear/Conv between
    the Hadamard rule ``(G Gᵀ) ∘ (A Aᵀ)`` and materialised per-sample gradients from the
    same captured signals; other parameters use ``torch.func.vmap``, checked against
    autograd on the first samples (per-cotangent vmap, then a plain autograd loop, when
    it disagrees or cannot trace the network).
    ``"structured"``: prefer the Hadamard rule whenever its memory fits. ``"vmap"`` /
    ``"autograd"``: generic per-sample gradients for every parameter.""",
    "batch_size": """\
batch_size : int, default=256
    Samples per forward/backward pass.""",
    "block_size": """\
block_size : int, default=1024
    Side of the kernel tiles (rows per block for per-sample results); with ``batch_size``
    it bounds the extra memory (the engine may use smaller blocks when per-sample
    representations are large).""",
    "device": """\
device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
    Where the network runs; ``"auto"`` picks CUDA when available. TF32 is turned off
    for the kernel computations (it would cost ~1e-3 relative precision).""",
    "dtype": """\
dtype : {"float32", "float64"}, default="float32"
    Precision of the network copy and the gradients.""",
    "accumulate_dtype": """\
accumulate_dtype : {None, "float32", "float64"}, default=None
    Precision of the kernel products and sums (``None``: ``dtype``); also the output's.""",
    "out": """\
out : np.ndarray, np.memmap, str or path, default=None
    Array to write the kernel into (e.g. a memmap for kernels larger than memory), or a
    path ending in ``.npy`` (a NumPy file, returned as ``np.memmap``) or ``.zarr`` (a Zarr
    array; ``pip install sknn_kernels[zarr]``): the kernel is written there tile by tile
    and finished tiles are logged in ``<out>.tiles.jsonl``, so rerunning the same call
    after an interruption computes only the missing tiles (and returns at once when none
    is). A file holding another kernel (other network, data or options) is refused. See
    :mod:`sknn_kernels.ntk.store`.""",
    "input_shape": """\
input_shape : tuple of int, default=None
    Per-sample shape when ``X`` is 2-D and the network wants N-D inputs.""",
    "network_output": """\
network_output : None, str or callable, default=None
    Which tensor of the network's output is ``f``: ``None`` takes the output if it is a
    tensor, the first tensor of a tuple, or the ``"logits"`` entry of a dict / Hugging
    Face ``ModelOutput``; a string selects that key; a callable ``network_output(module, batch)``
    returning ``(n, C)`` replaces the call (tuple-input networks, custom heads).""",
    "n_jobs": """\
n_jobs : int, default=None
    ``None``: every tile in this process, as a plain loop. An int: tiles (or, with
    ``projection_dim``, row blocks of projected features) run as ``joblib`` tasks, on the
    active joblib backend — local processes by default, a Dask or Ray cluster inside
    ``joblib.parallel_config(backend="dask")`` / ``("ray")`` (``-1``: every worker). The
    network is sent to each worker once and the result is bitwise the serial one; see
    :mod:`sknn_kernels.ntk._tiles` and the "Large kernels" guide.""",
    "memory_budget": """\
memory_budget : int or str, default=None
    Memory the engine may use beyond the output kernel (per-sample representations of the
    blocks, pair tensors), in bytes or as a string such as ``"512MiB"`` or ``"4GiB"``.
    ``None``: ``min(1 GiB, available memory / 4)`` on the CPU, ``max(1 GiB, free GPU memory
    / 4)`` on a GPU. The plan fits in it: a smaller budget gives smaller blocks (column
    blocks recomputed for each row block) and layer forms that keep less per sample; the
    kernel is the same up to rounding. See the "Memory" guide.""",
    "X": """\
X : array-like, tensor, or dict of them, of shape (n, ...)
    Inputs, in any form ``X1`` of :func:`~sknn_kernels.ntk.empirical_ntk` takes.""",
    "y": """\
y : array-like of int of shape (n,), default=None
    Class indices for ``kind="loss_grad"``; ``None`` uses the network's predicted
    classes.""",
}

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)


def fill_doc(obj):
    """Replace the ``%(name)s`` lines of ``obj.__doc__`` by the shared descriptions."""

    def entry(match):
        indent, name = match.groups()
        return "\n".join(indent + line if line else line for line in _PARAMS[name].split("\n"))

    obj.__doc__ = _PLACEHOLDER.sub(entry, obj.__doc__)
    return obj
