"""Launch wrapper for kernels/top_sums.cu (one warp per row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, device, function, ptr, register, warp_rows_grid

register("top_sums.cu", "row_top_sums", ("value", "index"))


def row_top_sums(data, indptr, shape, ns):
    """(n_rows, len(ns)) float64: per row, the sum of its n largest values for each n in `ns`.

    `ns` must be ascending and the values finite (negative ones allowed).
    """
    import cupy as cp

    itype = check(data, None, indptr)
    n_rows, n_cols = shape
    out = cp.empty((n_rows, len(ns)), dtype=cp.float64)
    if n_rows and len(ns):
        function("row_top_sums", data.dtype, itype)(
            warp_rows_grid(n_rows), (THREADS,),
            (data, ptr(indptr), np.int64(n_rows), np.int64(n_cols),
             device(np.asarray(ns, dtype=np.int64), cp.int64), np.int32(len(ns)), out),
        )  # fmt: skip
    return out
