"""Launch wrapper for kernels/scale.cu (one warp per row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, device, function, ptr, register, warp_rows_grid

register("scale.cu", "divide_rows", ("value", "index"))


def divide_rows(data, indptr, shape, divisors) -> None:
    """In place: row r divided by `divisors[r]` (cast to the data dtype); zero divisors skip it."""
    itype = check(data, None, indptr)
    n_rows, n_cols = shape
    if n_rows:
        divisors = device(divisors, data.dtype, n_rows, "divisors (one value per row)")
        function("divide_rows", data.dtype, itype)(
            warp_rows_grid(n_rows), (THREADS,),
            (data, ptr(indptr), np.int64(n_rows), np.int64(n_cols), divisors),
        )  # fmt: skip
