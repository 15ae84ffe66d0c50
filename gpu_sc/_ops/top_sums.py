"""Per-row sum of the n largest values, for several n (the QC 'percent in top n genes')."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, ROWS, primitive
from ._layout import Parts, row_pointers


@numba.njit(parallel=True, cache=True)
def _row_top_sums(data, indptr, ns, out):
    largest = ns[-1]
    for r in numba.prange(indptr.size - 1):
        seg = data[indptr[r] : indptr[r + 1]]
        if seg.size > largest:  # keep the `largest` biggest values, in descending order
            seg = -np.partition(-seg, largest - 1)[:largest]
        top = -np.sort(-seg.astype(np.float64))
        acc = np.cumsum(top)
        for i in range(ns.size):
            n = ns[i]
            out[r, i] = acc[min(n, acc.size) - 1] if acc.size else 0.0


@primitive(chunked=ROWS)
def top_sums(p: Parts, ns):
    """(n_rows, len(ns)) float64; `ns` ascending positive ints; values must be non-negative."""
    ns = np.asarray(ns, dtype=np.int64)
    out = np.empty((p.shape[0], ns.size), np.float64)
    if ns.size:
        _row_top_sums(p.data, np.asarray(row_pointers(p)), ns, out)
    return out


@top_sums.register(GPU)
def _(p: Parts, ns):
    from .._kernels.top_sums import row_top_sums

    return row_top_sums(p.data, p.indptr, p.shape, np.asarray(ns, dtype=np.int64))
