"""Launch wrappers for kernels/group_sums.cu (per-group, per-column sums)."""

from __future__ import annotations

import numpy as np

from . import ROWS_PER_BLOCK, THREADS, check, device, function, ptr, register

register("group_sums.cu", "csr_group_sums", ("value", "index"))
register("group_sums.cu", "dense_group_sums", ("value",))

_MAX_BLOCKS = 65_536  # CSR launches grid-stride beyond this many blocks
_MAX_CHUNKS = 65_535  # grid y limit for dense row chunks
_MIN_ROWS_PER_CHUNK = 256  # amortises the per-chunk atomics


def group_sums(data, indices, indptr, shape, *, codes, n_groups: int, squares: bool, counts: bool):
    """Float64 (n_groups, n_cols) sums, and optionally sums of squares and nonzero counts, of the
    rows of each group (`codes`: one int32 group per row, -1 for none).

    Returns ``(sums, sumsq or None, nnz or None)`` as cupy arrays.
    """
    import cupy as cp

    itype = check(data, indices, indptr)
    n_rows, n_cols = shape
    codes = device(codes, cp.int32, n_rows, "codes (one group per row)")
    out = [cp.zeros((n_groups, n_cols), dtype=cp.float64) if want else None
           for want in (True, squares, counts)]  # fmt: skip
    sums, sumsq, nnz = out
    if indptr is not None:
        if n_rows and data.size:
            n_blocks = min(-(-n_rows // ROWS_PER_BLOCK), _MAX_BLOCKS)
            function("csr_group_sums", data.dtype, itype)(
                (n_blocks,), (THREADS,),
                (data, indices, indptr, np.int64(n_rows), np.int64(n_cols), codes, sums,
                 ptr(sumsq), ptr(nnz)),
            )  # fmt: skip
    elif n_rows and n_cols:
        rows_per_chunk = max(_MIN_ROWS_PER_CHUNK, -(-n_rows // _MAX_CHUNKS))
        grid = (-(-n_cols // THREADS), -(-n_rows // rows_per_chunk))
        function("dense_group_sums", data.dtype)(
            grid, (THREADS,),
            (data, np.int64(n_rows), np.int64(n_cols), np.int64(rows_per_chunk), codes, sums,
             ptr(sumsq), ptr(nnz)),
        )  # fmt: skip
    return sums, sumsq, nnz
