"""Concepts in embedding space: leading directions and clusters, explained by samples and metadata.

Embeddings of any layer (an image network's penultimate layer, a sentence encoder's pooled
output...) often organise the data along a few human-readable concepts. :func:`embedding_concepts`
finds candidates without labels, the leading principal directions and the k-means clusters, and
explains each one twice: by its extreme samples (the top and bottom samples along a direction,
the samples nearest a cluster's centre: look at them) and by its association with metadata
columns the user gives (label, text length, confidence, a "generated" flag...): Pearson's
correlation for numeric columns, the correlation ratio η for categorical ones, with the category
the concept favours. The input is the embedding array, so this is independent of the network;
to ask whether real and generated samples separate in that space, pair it with the two-sample
tests of :mod:`sknn_kernels.analysis.shift`.
"""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.utils import check_array

from .._results import as_columns, from_rows

__all__ = ["embedding_concepts"]


def embedding_concepts(
    embeddings,
    metadata=None,
    *,
    n_components=5,
    n_clusters=8,
    n_extreme=5,
    categorical=None,
    random_state=None,
):
    """Leading directions and clusters of an embedding, each explained by samples and metadata.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        One embedding per sample (any layer; flatten image feature maps first).
    metadata : dict of str to array-like, or DataFrame, default=None
        Columns describing the samples, each of length ``n_samples``.
    n_components : int, default=5
        Principal directions explained (0: none).
    n_clusters : int, default=8
        Number of k-means clusters explained (0: none).
    n_extreme : int, default=5
        Samples listed per concept.
    categorical : list of str, default=None
        Numeric metadata columns to treat as categories (text, categorical and object columns
        always are); ``None``: integer columns with at most 20 distinct values (class
        labels). Other columns, booleans included, are numeric.
    random_state : int, RandomState instance or None, default=None
        Seed of k-means (and of the randomized PCA solver on large inputs).

    Returns
    -------
    results : dict of str to ndarray
        One row per concept: ``concept`` (``"PC1"``..., ``"cluster 0"``...), ``kind``
        (``"direction"`` or ``"cluster"``), ``weight`` (explained-variance ratio, or the
        fraction of samples in the cluster), ``top`` and ``bottom`` (tuples of sample indices:
        highest and lowest scores along a direction; the samples nearest a cluster's centre,
        and an empty ``bottom``), and per metadata column ``m``: ``assoc_m`` (Pearson's ``r``
        of the direction's score, or of the cluster-membership indicator, with a numeric
        column; the correlation ratio η in [0, 1] with a categorical one) and, for categorical
        columns, ``favours_m`` (the category with the highest mean score: at the top end of a
        direction, most enriched in a cluster).

    See Also
    --------
    sknn_kernels.analysis.shift : Two-sample tests in embedding space (real vs generated).
    sknn_kernels.plotting.plot_concepts : A heat map of the associations.

    Examples
    --------
    >>> import numpy as np
    >>> from sknn_kernels.analysis.concepts import embedding_concepts
    >>> rng = np.random.default_rng(0)
    >>> length = rng.uniform(0, 1, 200)
    >>> Z = np.c_[5 * length, rng.normal(size=(200, 3))]
    >>> res = embedding_concepts(Z, {"length": length}, n_components=2, n_clusters=2,
    ...                          random_state=0)
    >>> list(res["concept"])
    ['PC1', 'PC2', 'cluster 0', 'cluster 1']
    >>> bool(abs(res["assoc_length"][0]) > 0.95)
    True
    """
    Z = check_array(embeddings, dtype=np.float64, ensure_min_samples=2)
    n = len(Z)
    columns = {} if metadata is None else as_columns(metadata, what="metadata")
    for name, col in columns.items():
        if len(col) != n:
            raise ValueError(f"metadata column {name!r} has {len(col)} values for {n} embeddings.")
    kinds = _column_kinds(columns, categorical)
    k_pc = min(int(n_components), n, Z.shape[1])
    rows = []
    if k_pc > 0:
        pca = PCA(n_components=k_pc, random_state=random_state).fit(Z)
        scores = pca.transform(Z)
        for j in range(k_pc):
            order = np.argsort(scores[:, j], kind="stable")
            rows.append(
                {
                    "concept": f"PC{j + 1}",
                    "kind": "direction",
                    "weight": float(pca.explained_variance_ratio_[j]),
                    "top": _indices(order[::-1][:n_extreme]),
                    "bottom": _indices(order[:n_extreme]),
                    **_associations(scores[:, j], columns, kinds),
                }
            )
    if int(n_clusters) > 0:
        k = min(int(n_clusters), n)
        km = KMeans(n_clusters=k, n_init=3, random_state=random_state).fit(Z)
        distance = km.transform(Z)
        for c in range(k):
            member = km.labels_ == c
            nearest = np.flatnonzero(member)[np.argsort(distance[member, c], kind="stable")]
            rows.append(
                {
                    "concept": f"cluster {c}",
                    "kind": "cluster",
                    "weight": float(member.mean()),
                    "top": _indices(nearest[:n_extreme]),
                    "bottom": (),
                    **_associations(member.astype(np.float64), columns, kinds),
                }
            )
    names = ["concept", "kind", "weight", "top", "bottom"]
    for name, kind in kinds.items():
        names.append(f"assoc_{name}")
        if kind == "categorical":
            names.append(f"favours_{name}")
    samples = {key: [row.pop(key) for row in rows] for key in ("top", "bottom")}
    results = from_rows(rows, [c for c in names if c not in samples])
    for key, values in samples.items():  # tuples of different lengths: an object column
        col = np.empty(len(values), dtype=object)
        col[:] = values
        results[key] = col
    return {c: results[c] for c in names}


def _indices(idx):
    return tuple(int(i) for i in idx)


def _column_kinds(columns, categorical):
    if categorical is not None:
        unknown = sorted(set(categorical) - set(columns))
        if unknown:
            raise ValueError(f"categorical names {unknown}, which are not metadata columns.")
    kinds = {}
    for name, col in columns.items():
        text = col.dtype.kind in "OUSM" or str(col.dtype) == "category"
        if categorical is None:
            labels = col.dtype.kind in "iu" and len(np.unique(col)) <= 20
        else:
            labels = name in categorical
        kinds[name] = "categorical" if text or labels else "numeric"
    return kinds


def _associations(score, columns, kinds):
    out = {}
    for name, col in columns.items():
        if kinds[name] == "numeric":
            out[f"assoc_{name}"] = _pearson(score, np.asarray(col, dtype=np.float64))
            continue
        labels, codes = np.unique(np.asarray(col).astype(str), return_inverse=True)
        counts = np.bincount(codes, minlength=len(labels))
        means = np.bincount(codes, score, minlength=len(labels)) / np.maximum(counts, 1)
        total = np.sum((score - score.mean()) ** 2)
        between = np.sum(counts * (means - score.mean()) ** 2)
        out[f"assoc_{name}"] = float(np.sqrt(between / total)) if total > 0 else 0.0
        out[f"favours_{name}"] = str(labels[np.argmax(means)])
    return out


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.sum(a**2) * np.sum(b**2))
    return float(np.sum(a * b) / denom) if denom > 0 else 0.0
