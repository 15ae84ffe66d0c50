"""Dense float64 (x - mean) / std, clipped, straight from CSR in one pass (scale's densifying
path). Same float64 arithmetic as densify -> subtract -> divide -> clip, without three
full-size intermediate passes."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import primitive
from ._layout import Parts


@numba.njit(parallel=True, cache=True)
def _csr_scaled_dense(data, indices, indptr, mean, std, lo, hi, zero_center, out):
    n_cols = mean.size
    base = np.empty(n_cols)  # the value of an implicit zero in each column
    for c in range(n_cols):
        v = (0.0 - mean[c]) / std[c] if zero_center else 0.0 / std[c]
        base[c] = min(max(v, lo), hi)
    for r in numba.prange(indptr.size - 1):
        out[r, :] = base
        for j in range(indptr[r], indptr[r + 1]):
            c = indices[j]
            v = np.float64(data[j])
            v = (v - mean[c]) / std[c] if zero_center else v / std[c]
            out[r, c] = min(max(v, lo), hi)


@primitive()
def scaled_dense(p: Parts, mean, std, *, zero_center: bool = True, max_value=None):
    """float64 dense matrix of (x - mean) / std (or x / std), clipped to +-max_value (to
    max_value only without centring, as scanpy does). CPU CSR only; GPU callers densify with
    cupy, whose elementwise passes are bandwidth-bound anyway."""
    if p.dense:
        msg = "scaled_dense takes a CPU CSR matrix"
        raise TypeError(msg)
    hi = np.inf if max_value is None else float(max_value)
    lo = -hi if zero_center else -np.inf
    # touch every page once in this thread before the parallel kernel writes: first-touch page
    # faults from several threads at once made the kernel up to 25x slower here (10k x 500)
    out = np.empty(p.shape, dtype=np.float64)
    out.fill(0.0)
    _csr_scaled_dense(p.data, p.indices, p.indptr, np.asarray(mean, np.float64),
                      np.asarray(std, np.float64), lo, hi, zero_center, out)  # fmt: skip
    return out
