"""Launch wrappers for kernels/clipped_sums.cu (Seurat v3 clipped per-column sums)."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, device, function, register

register("clipped_sums.cu", "csr_clipped_sums", ("value", "index"))
register("clipped_sums.cu", "dense_clipped_sums", ("value",))

_MAX_BLOCKS = 65_536  # CSR launches grid-stride beyond this many blocks
_MAX_CHUNKS = 65_535  # grid y limit for dense row chunks
_MIN_ROWS_PER_CHUNK = 256  # amortises the per-chunk atomics


def clipped_sums(data, indices, indptr, shape, clip):
    """Per-column float64 (sums, sums of squares) of min(x, clip[column])."""
    import cupy as cp

    itype = check(data, indices, indptr)
    n_rows, n_cols = shape
    clip = device(clip, cp.float64, n_cols, "clip (one value per column)")
    sums = cp.zeros(n_cols, dtype=cp.float64)
    sumsq = cp.zeros(n_cols, dtype=cp.float64)
    if indptr is not None:
        if data.size:
            n_blocks = min(-(-data.size // THREADS), _MAX_BLOCKS)
            function("csr_clipped_sums", data.dtype, itype)(
                (n_blocks,), (THREADS,),
                (data, indices, np.int64(data.size), clip, sums, sumsq),
            )  # fmt: skip
    elif n_rows and n_cols:
        rows_per_chunk = max(_MIN_ROWS_PER_CHUNK, -(-n_rows // _MAX_CHUNKS))
        grid = (-(-n_cols // THREADS), -(-n_rows // rows_per_chunk))
        function("dense_clipped_sums", data.dtype)(
            grid, (THREADS,),
            (data, np.int64(n_rows), np.int64(n_cols), np.int64(rows_per_chunk), clip, sums,
             sumsq),
        )  # fmt: skip
    return sums, sumsq
