"""Launch wrappers for kernels/row_reduce.cu (one warp per row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, device, function, ptr, register, warp_rows_grid

register("row_reduce.cu", "row_sums", ("value", "index"))
register("row_reduce.cu", "flag_cols_above", ("value", "index"))


def row_sums(data, indices, indptr, shape, col_mask=None):
    """Per-row float64 sums and int64 nonzero counts, over `col_mask` columns if given."""
    import cupy as cp

    itype = check(data, indices, indptr)
    n_rows, n_cols = shape
    sums = cp.empty(n_rows, dtype=cp.float64)
    nnz = cp.empty(n_rows, dtype=cp.int64)
    if n_rows:
        mask = None if col_mask is None else device(col_mask, cp.uint8, n_cols, "col_mask (a flag per column)")
        function("row_sums", data.dtype, itype)(
            warp_rows_grid(n_rows), (THREADS,),
            (data, ptr(indices), ptr(indptr), np.int64(n_rows), np.int64(n_cols), ptr(mask),
             sums, nnz),
        )  # fmt: skip
    return sums, nnz


def flag_cols_above(data, indices, indptr, shape, limits):
    """Boolean per column: some row r holds a value above `limits[r]`."""
    import cupy as cp

    itype = check(data, indices, indptr)
    n_rows, n_cols = shape
    flags = cp.zeros(n_cols, dtype=cp.int32)
    if n_rows:
        function("flag_cols_above", data.dtype, itype)(
            warp_rows_grid(n_rows), (THREADS,),
            (data, ptr(indices), ptr(indptr), np.int64(n_rows), np.int64(n_cols),
             device(limits, cp.float64, n_rows, "limits (one value per row)"), flags),
        )  # fmt: skip
    return flags.astype(bool)
