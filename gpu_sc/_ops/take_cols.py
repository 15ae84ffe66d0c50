"""A host CSR matrix's kept columns, on numba's threads (scipy's column indexing runs on one
thread, and filter_genes at full width spends most of its time there)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def _kept_per_row(indptr, indices, new_col, counts):
    for r in numba.prange(indptr.size - 1):
        m = 0
        for j in range(indptr[r], indptr[r + 1]):
            m += new_col[indices[j]] >= 0
        counts[r] = m


@numba.njit(parallel=True, cache=True)
def _fill(indptr, indices, data, new_col, out_indptr, out_indices, out_data):
    for r in numba.prange(indptr.size - 1):
        o = out_indptr[r]
        for j in range(indptr[r], indptr[r + 1]):
            c = new_col[indices[j]]
            if c >= 0:
                out_indices[o] = c
                out_data[o] = data[j]
                o += 1


def take_cols(x, keep: np.ndarray):
    """``x[:, keep]`` for a scipy CSR matrix or array `x` and a boolean mask `keep` over its
    columns: the same class, values, order within rows (explicit zeros and duplicates kept) and
    index dtype as scipy's (int64 for both index arrays where either is int64)."""
    idx_dtype = np.result_type(x.indices.dtype, x.indptr.dtype, np.int32)
    kept = np.flatnonzero(keep)
    new_col = np.full(x.shape[1], -1, idx_dtype)
    new_col[kept] = np.arange(kept.size, dtype=idx_dtype)
    counts = np.empty(x.shape[0], idx_dtype)
    _kept_per_row(x.indptr, x.indices, new_col, counts)
    indptr = np.zeros(x.shape[0] + 1, idx_dtype)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indices, data = np.empty(nnz, idx_dtype), np.empty(nnz, x.data.dtype)
    _fill(x.indptr, x.indices, x.data, new_col, indptr, indices, data)
    return type(x)((data, indices, indptr), shape=(x.shape[0], kept.size))
