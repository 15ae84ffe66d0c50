"""A CSR matrix's kept columns: on the host on numba's threads (scipy's column indexing runs on
one thread, and filter_genes at full width spends most of its time there), on the GPU in CuPy
array operations (`take_cols_arrays`)."""

from __future__ import annotations

import numba
import numpy as np

from .._backend import xp_of


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


def take_cols_arrays(x, keep: np.ndarray):
    """``x[:, keep]`` for a CSR matrix `x` (cupyx on the GPU) and a host boolean mask `keep`, in
    array operations of the matrix's own module, as `take_cols` gives it: values and order within
    rows kept (the index dtype as the class picks it). Five passes over the stored entries, one
    read of the kept count; cupyx's own column indexing takes any index list, and sorts every
    kept entry to rebuild its rows."""
    xp = xp_of(x.data)
    n_kept = int(np.count_nonzero(keep))
    keep = xp.asarray(keep, dtype=bool)
    new_col = xp.cumsum(keep, dtype=x.indices.dtype) - 1
    kept = keep[x.indices]  # per stored entry
    before = xp.concatenate([xp.zeros(1, np.int64), xp.cumsum(kept, dtype=np.int64)])
    indptr = before[x.indptr].astype(x.indptr.dtype, copy=False)  # kept entries before each row
    at = xp.flatnonzero(kept)
    return type(x)((x.data[at], new_col[x.indices[at]], indptr), shape=(x.shape[0], n_kept))
