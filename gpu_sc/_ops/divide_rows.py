"""In-place row scaling by division; rows with a zero divisor stay as they are."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, UPDATE, primitive
from ._layout import Parts, row_pointers, segment_ids


@numba.njit(parallel=True, cache=True)
def _divide_rows(data, indptr, divisors):
    for r in numba.prange(indptr.size - 1):
        d = divisors[r]
        if d != 0:
            for j in range(indptr[r], indptr[r + 1]):
                data[j] = data[j] / d


@primitive(chunked=UPDATE, per_row=("divisors",))
def divide_rows(p: Parts, divisors) -> None:
    """x[r, :] /= divisors[r] in place, as NumPy's in-place division: in float64 where the
    values or the divisors are float64, rounded once to the value dtype (float32 values by
    float32 divisors: in float32). A Dask matrix is not modified: the divided copy is returned,
    lazily."""
    if p.data.dtype == np.float16:
        _divide_rows_float16(p, divisors)
        return
    _divide_rows(p.data, np.asarray(row_pointers(p)), np.asarray(divisors, dtype=_division_dtype(p.data, divisors)))


@divide_rows.register(GPU)
def _(p: Parts, divisors) -> None:
    from .._kernels.scale import divide_rows as gpu_divide_rows

    if p.data.dtype == np.float16:
        _divide_rows_float16(p, divisors)
        return
    gpu_divide_rows(p.data, p.indptr, p.shape, p.xp.asarray(divisors, dtype=_division_dtype(p.data, divisors)))


def _division_dtype(data, divisors) -> np.dtype:
    """The dtype NumPy divides the values by the divisors in (its promotion of the two; a list
    of numbers as float64): the divisors are cast to it, the quotient rounded to the values'."""
    return np.result_type(data.dtype, getattr(divisors, "dtype", np.float64))


def _divide_rows_float16(p: Parts, divisors) -> None:
    """float16 values (neither numba nor our kernels take them), in array operations on either
    device: divided in NumPy's promoted dtype and rounded to float16, as NumPy's in-place
    division in scanpy (float16 divisors: NumPy's float16 division)."""
    xp = p.xp
    divisors = xp.asarray(divisors, dtype=_division_dtype(p.data, divisors))
    per_value = divisors[segment_ids(row_pointers(p))]
    nonzero = per_value != 0
    p.data[nonzero] = (p.data[nonzero] / per_value[nonzero]).astype(p.data.dtype)
