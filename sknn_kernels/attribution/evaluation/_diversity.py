"""Do explanations depend on the sample explained? Overlap of top-k lists, and a remedy.

A decomposition ``A(x, i) = α_i K(x, x_i)`` is dominated by the training samples of largest
``|α_i|`` whatever ``x`` is: every test sample then gets the same proponents, and a reader
learns nothing about a single prediction. :func:`explanation_overlap` measures it;
:func:`relative_attributions` divides each training sample's attributions by their typical
size (as RelatIF does for influence, Barshan et al., AISTATS 2020), so that a list names the
samples that matter *unusually much* for this ``x``.
"""

from itertools import combinations

import numpy as np
from sklearn.utils import Bunch


def explanation_overlap(proponents, neighbours=None):
    """How much the top-k lists of different samples share, and their overlap with neighbours.

    Parameters
    ----------
    proponents : array-like of int, shape (n_samples, k)
        Top-k training indices per explained sample (e.g. ``explain(...).proponents``).
    neighbours : array-like of int, shape (n_samples, k_nn), default=None
        Each sample's nearest training samples (e.g. by :func:`kernel_neighbours`).

    Returns
    -------
    overlap : :class:`~sklearn.utils.Bunch`
        ``pairwise`` (mean over pairs of samples of ``|P_a ∩ P_b| / k``: 0 when every
        sample gets its own list, 1 when all lists are the same), ``max_share`` (the largest
        fraction of samples whose list holds one same training sample), ``distinct`` (distinct
        indices over ``n_samples * k``) and ``neighbours`` (mean ``|P_a ∩ N_a| / k``, NaN
        without ``neighbours``).

    Examples
    --------
    >>> from sknn_kernels.attribution.evaluation import explanation_overlap
    >>> o = explanation_overlap([[0, 1], [0, 2], [0, 3]], neighbours=[[1, 5], [2, 6], [7, 8]])
    >>> float(o.pairwise), float(o.max_share), float(o.neighbours)
    (0.5, 1.0, 0.3333333333333333)
    """
    P = np.asarray(proponents)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ValueError(f"proponents must be a 2-D (n_samples, k) array; got shape {P.shape}.")
    n, k = P.shape
    sets = [set(row.tolist()) for row in P]
    pairs = [len(a & b) / k for a, b in combinations(sets, 2)]
    _, counts = np.unique(np.concatenate([list(s) for s in sets]), return_counts=True)
    near = float("nan")
    if neighbours is not None:
        N = np.asarray(neighbours)
        if N.ndim != 2 or len(N) != n:
            raise ValueError(
                f"neighbours must be a 2-D array with one row per sample ({n}); got {N.shape}."
            )
        near = float(np.mean([len(s & set(row.tolist())) / k for s, row in zip(sets, N)]))
    return Bunch(
        pairwise=float(np.mean(pairs)) if pairs else float("nan"),
        max_share=float(counts.max() / n),
        distinct=float(len(counts) / (n * k)),
        neighbours=near,
    )


def kernel_neighbours(K, train_diagonal, k):
    """The ``k`` training samples most similar to each sample in a kernel (cosine).

    Parameters
    ----------
    K : array-like of shape (n_samples, n_train)
        ``K(x, x_i)``.
    train_diagonal : array-like of shape (n_train,)
        ``K(x_i, x_i)``: an unnormalised kernel is ranked by ``K(x, x_i) / sqrt(K(x_i, x_i))``,
        so that large-norm samples are not everybody's neighbours.
    k : int
        Number of neighbours.

    Returns
    -------
    neighbours : ndarray of shape (n_samples, k)
        Indices, most similar first.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import kernel_neighbours
    >>> kernel_neighbours(np.array([[1.0, 4.0, 2.0]]), np.array([1.0, 16.0, 1.0]), 2).tolist()
    [[2, 0]]
    """
    scale = np.sqrt(np.clip(np.asarray(train_diagonal, dtype=float), 1e-300, None))
    S = np.asarray(K, dtype=float) / scale
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def relative_attributions(A, reference=None):
    """Attributions divided by each training sample's typical attribution size.

    ``R(x, i) = A(x, i) / rms_z A(z, i)``, the root mean square taken over the rows of
    ``reference`` (e.g. the attributions of a whole test set). A training sample whose
    attributions are large for every ``x`` (a large ``|α_i|``, a large loss gradient) no
    longer heads every list; what remains is how unusually much it matters for this ``x``.
    The sign of each attribution is kept; sums of ``R`` no longer predict outputs (use ``A``
    for that).

    Parameters
    ----------
    A : array-like of shape (n_samples, n_train)
        Attributions to rescale.
    reference : array-like of shape (n_reference, n_train), default=None
        Attributions that set each column's scale; ``None``: ``A`` itself.

    Returns
    -------
    R : ndarray of shape (n_samples, n_train)
        Rescaled attributions (columns whose reference is all zero stay 0).

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.attribution.evaluation import relative_attributions
    >>> relative_attributions(np.array([[10.0, 1.0], [-10.0, 3.0]])).round(3).tolist()
    [[1.0, 0.447], [-1.0, 1.342]]
    """
    A = np.asarray(A, dtype=float)
    ref = A if reference is None else np.asarray(reference, dtype=float)
    if ref.ndim != 2 or A.ndim != 2 or ref.shape[1] != A.shape[1]:
        raise ValueError(
            f"A {A.shape} and reference {ref.shape} must be 2-D with the same number of "
            "training columns."
        )
    scale = np.sqrt(np.mean(ref * ref, axis=0))
    return np.divide(A, scale, out=np.zeros_like(A), where=scale > 0)


def repeated_proponents(proponents, max_share=1 / 3):
    """Whether some training sample heads the lists of more than ``max_share`` of the samples.

    Parameters
    ----------
    proponents : array-like of int, shape (n_samples, k)
        Top-k training indices per explained sample.
    max_share : float, default=1/3
        The largest acceptable fraction of samples sharing one proponent.

    Returns
    -------
    repeated : bool
        True when the lists do not depend enough on the sample explained.

    Examples
    --------
    >>> from sknn_kernels.attribution.evaluation import repeated_proponents
    >>> repeated_proponents([[0, 1], [0, 2], [3, 4]]), repeated_proponents([[0, 1], [2, 3], [4, 5]])
    (True, False)
    """
    return bool(explanation_overlap(proponents).max_share > max_share + 1e-12)
