"""Elementwise work on a value array (a sparse matrix's `.data` or a dense array, any layout),
CPU or GPU: these need no matrix structure, so they take the values, not `Parts`."""

from __future__ import annotations

import math

import numba
import numpy as np

from ._backend import is_gpu, xp_of


def log1p_(values, base=None) -> None:
    """In place: values = log1p(values) [/ log(base)]. Implicit zeros stay zero (log1p(0) = 0).
    One array-namespace version serves CPU and GPU."""
    xp = xp_of(values)
    xp.log1p(values, out=values)
    if base is not None:
        xp.divide(values, math.log(base), out=values)


@numba.njit(parallel=True, cache=True)
def _scan(values):
    n_bad = 0
    n_neg = 0
    for i in numba.prange(values.size):
        v = values[i]
        if not np.isfinite(v):
            n_bad += 1
        elif v < 0:
            n_neg += 1
    return n_bad, n_neg


def value_issues(values) -> tuple[int, int]:
    """(number of NaN/inf values, number of negative finite values) in a 1-D float array: the
    values that cannot be counts (input validation)."""
    if is_gpu(values):
        import cupy as cp

        finite = cp.isfinite(values)
        return int((~finite).sum()), int((finite & (values < 0)).sum())
    if values.dtype == np.float16:  # numba has no float16; every float16 is exact in float32
        values = values.astype(np.float32)
    return _scan(np.ascontiguousarray(values).reshape(-1))
