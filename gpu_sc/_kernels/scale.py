"""Launch wrapper for kernels/scale.cu (one warp per row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, VALUE_TYPES, check, device, function, ptr, register, warp_rows_grid

register("scale.cu", "divide_rows", ("value", "index", "value"))  # values, index, divisors


def divide_rows(data, indptr, shape, divisors) -> None:
    """In place: row r divided by `divisors[r]` in the wider of the two float dtypes, stored in
    the data dtype (NumPy's in-place division); zero divisors skip it. Divisors of another dtype
    are cast to the data's."""
    itype = check(data, None, indptr)
    n_rows, n_cols = shape
    if n_rows:
        dtype = np.dtype(getattr(divisors, "dtype", data.dtype))
        dtype = dtype if dtype in VALUE_TYPES else data.dtype
        divisors = device(divisors, dtype, n_rows, "divisors (one value per row)")
        function("divide_rows", data.dtype, itype, divisors.dtype)(
            warp_rows_grid(n_rows), (THREADS,),
            (data, ptr(indptr), np.int64(n_rows), np.int64(n_cols), divisors),
        )  # fmt: skip
