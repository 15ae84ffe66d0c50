"""Launch wrapper for kernels/col_reduce.cu."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, function, ptr, register

register("col_reduce.cu", "csr_col_stats", ("value", "index"))
register("col_reduce.cu", "dense_col_stats", ("value",))

_MAX_BLOCKS = 65_536  # CSR launches grid-stride beyond this many blocks
_MAX_CHUNKS = 65_535  # grid y limit for dense row chunks
_MIN_ROWS_PER_CHUNK = 256  # amortises the per-chunk atomics


def col_stats(data, indices, indptr, shape, *, squares: bool = False, counts: bool = True):
    """Per-column float64 sums, and optionally float64 sums of squares and int64 nonzero counts.

    Returns ``(sums, sumsq or None, nnz or None)``.
    """
    import cupy as cp

    itype = check(data, indices, indptr)
    n_rows, n_cols = shape
    sums = cp.zeros(n_cols, dtype=cp.float64)
    sumsq = cp.zeros(n_cols, dtype=cp.float64) if squares else None
    nnz = cp.zeros(n_cols, dtype=cp.uint64) if counts else None
    if indptr is not None:
        if data.size:
            n_blocks = min(-(-data.size // THREADS), _MAX_BLOCKS)
            function("csr_col_stats", data.dtype, itype)(
                (n_blocks,), (THREADS,),
                (data, indices, np.int64(data.size), sums, ptr(sumsq), ptr(nnz)),
            )  # fmt: skip
    elif n_rows and n_cols:
        rows_per_chunk = max(_MIN_ROWS_PER_CHUNK, -(-n_rows // _MAX_CHUNKS))
        grid = (-(-n_cols // THREADS), -(-n_rows // rows_per_chunk))
        function("dense_col_stats", data.dtype)(
            grid, (THREADS,),
            (data, np.int64(n_rows), np.int64(n_cols), np.int64(rows_per_chunk), sums,
             ptr(sumsq), ptr(nnz)),
        )  # fmt: skip
    return sums, sumsq, None if nnz is None else nnz.view(cp.int64)
