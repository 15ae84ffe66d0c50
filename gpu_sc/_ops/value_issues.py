"""Count the values that cannot be counts: non-finite and negative ones (input validation)."""

from __future__ import annotations

import numba
import numpy as np

from .._backend import is_gpu


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
    """(number of NaN/inf values, number of negative finite values) in a 1-D float array."""
    if is_gpu(values):
        import cupy as cp

        finite = cp.isfinite(values)
        return int((~finite).sum()), int((finite & (values < 0)).sum())
    if values.dtype == np.float16:  # numba has no float16; every float16 is exact in float32
        values = values.astype(np.float32)
    return _scan(np.ascontiguousarray(values).reshape(-1))
