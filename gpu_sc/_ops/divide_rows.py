"""In-place row scaling by division; rows with a zero divisor stay as they are."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, UPDATE, primitive
from ._layout import Parts, row_pointers


@numba.njit(parallel=True, cache=True)
def _divide_rows(data, indptr, divisors):
    for r in numba.prange(indptr.size - 1):
        d = divisors[r]
        if d != 0:
            for j in range(indptr[r], indptr[r + 1]):
                data[j] = data[j] / d


@primitive(chunked=UPDATE, per_row=("divisors",))
def divide_rows(p: Parts, divisors) -> None:
    """x[r, :] /= divisors[r] in place, in the value dtype (divisors are cast to it first); a
    Dask matrix is not modified: the divided copy is returned, lazily."""
    divisors = np.asarray(divisors, dtype=p.data.dtype)
    if p.data.dtype == np.float16:  # numba has no float16; numpy divides as scanpy does
        per_value = np.repeat(divisors, np.diff(np.asarray(row_pointers(p))))
        nonzero = per_value != 0
        p.data[nonzero] /= per_value[nonzero]
        return
    _divide_rows(p.data, np.asarray(row_pointers(p)), divisors)


@divide_rows.register(GPU)
def _(p: Parts, divisors) -> None:
    from .._kernels.scale import divide_rows as gpu_divide_rows

    gpu_divide_rows(p.data, p.indptr, p.shape, divisors)
