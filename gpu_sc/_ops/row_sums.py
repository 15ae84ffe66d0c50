"""Per-row sums (float64 accumulation) and nonzero counts, optionally over a column subset."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, ROWS, primitive
from ._layout import Parts


@numba.njit(parallel=True, cache=True)
def _csr_row_sums(data, indptr, sums, nnz):
    for r in numba.prange(indptr.size - 1):
        s = 0.0
        c = 0
        for j in range(indptr[r], indptr[r + 1]):
            s += data[j]
            c += data[j] != 0
        sums[r] = s
        nnz[r] = c


@numba.njit(parallel=True, cache=True)
def _csr_masked_row_sums(data, indices, indptr, col_mask, sums, nnz):
    for r in numba.prange(indptr.size - 1):
        s = 0.0
        c = 0
        for j in range(indptr[r], indptr[r + 1]):
            if col_mask[indices[j]]:
                s += data[j]
                c += data[j] != 0
        sums[r] = s
        nnz[r] = c


@primitive(chunked=ROWS)
def row_sums(p: Parts, col_mask=None):
    """(sums float64, nonzero counts int64) per row; `col_mask` (bool per column) restricts both."""
    n_rows, n_cols = p.shape
    if p.dense:
        x = p.data.reshape(p.shape)
        if col_mask is not None:
            x = x[:, np.asarray(col_mask, dtype=bool)]
        return x.sum(axis=1, dtype=np.float64), np.count_nonzero(x, axis=1).astype(np.int64)
    sums = np.empty(n_rows, np.float64)
    nnz = np.empty(n_rows, np.int64)
    if col_mask is None:
        _csr_row_sums(p.data, p.indptr, sums, nnz)
    else:
        mask = np.asarray(col_mask, dtype=np.bool_)
        _csr_masked_row_sums(p.data, p.indices, p.indptr, mask, sums, nnz)
    return sums, nnz


@row_sums.register(GPU)
def _(p: Parts, col_mask=None):
    from .._kernels.row_reduce import row_sums as gpu_row_sums

    return gpu_row_sums(*p, col_mask=col_mask)
