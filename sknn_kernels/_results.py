"""The package's one results format: a dict of equal-length numpy arrays (column -> array).

Like scikit-learn's ``cv_results_``: ``pandas.DataFrame(results)`` wraps it directly, and
``results["column"][mask]`` selects rows without pandas. :func:`~sknn_kernels.compare_surrogates`,
``PCAProbe.probe_results_``, ``PCAProbe.components_needed``, the collapse metrics and the report
all return or read this form.
"""

import numpy as np

__all__ = ["as_columns", "from_rows"]


def from_rows(rows, columns=None):
    """Column -> ndarray from row dicts (or tuples, named by ``columns``).

    Parameters
    ----------
    rows : list of dict or list of tuple
    columns : sequence of str, default=None
        Column names, in order; required for tuple rows and when ``rows`` is empty.

    Returns
    -------
    results : dict of str to ndarray
        Text columns hold Python ``str`` objects (``dtype=object``, as pandas does), ints
        are ``int64`` and floats ``float64``.
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    if rows and not isinstance(rows[0], dict):
        rows = [dict(zip(columns, row)) for row in rows]
    return {name: _column([row[name] for row in rows]) for name in columns}


def _column(values):
    """An ndarray; text as Python ``str`` objects, so values print and compare as pandas' do."""
    array = np.asarray(values)
    if array.dtype.kind == "U":
        return array.astype(object)
    return array


def as_columns(results, required=(), what="results"):
    """Column -> ndarray of a results dict, a ``pandas.DataFrame`` or a structured array.

    Parameters
    ----------
    results : mapping of str to array-like, DataFrame or numpy structured array
    required : iterable of str, default=()
        Columns that must be present.
    what : str, default="results"
        How the input is named in the error message.

    Returns
    -------
    results : dict of str to ndarray

    Raises
    ------
    TypeError
        When ``results`` is not a table, lacks a required column, or its columns differ in
        length.
    """
    names = getattr(getattr(results, "dtype", None), "names", None)
    if names is None and hasattr(results, "keys"):
        names = list(results.keys())
    if names is None:
        raise TypeError(
            f"Pass {what}: a dict of equal-length arrays (column -> array); got "
            f"{type(results).__name__}."
        )
    columns = {str(name): _column(results[name]) for name in names}
    missing = sorted(set(required) - set(columns))
    if missing:
        raise TypeError(f"Pass {what}: the table has no column {missing}; it has {list(columns)}.")
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise TypeError(f"Pass {what}: its columns differ in length ({lengths}).")
    return columns
