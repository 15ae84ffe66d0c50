"""Which columns hold, in some row, a value above that row's limit (highly expressed genes)."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, REDUCE, primitive
from ._layout import Parts, kernel_parts, row_bands


@numba.njit(parallel=True, cache=True)
def _csr_flag_cols_above(data, indices, indptr, limits, flags):
    # racing writes all store True, so parallel rows are safe
    for r in numba.prange(indptr.size - 1):
        for j in range(indptr[r], indptr[r + 1]):
            if data[j] > limits[r]:
                flags[indices[j]] = True


@primitive(chunked=REDUCE, per_row=("limits",))
def flag_cols_above(p: Parts, limits):
    """Bool per column: some row r has a value > `limits[r]` (float64) in it."""
    limits = np.asarray(limits, dtype=np.float64)
    if p.dense:  # band by band: the comparison's bool matrix is one band's
        x, flags = p.data.reshape(p.shape), np.zeros(p.shape[1], np.bool_)
        for band in row_bands(p.shape):
            flags |= (x[band] > limits[band, None]).any(axis=0)
        return flags
    flags = np.zeros(p.shape[1], np.bool_)
    _csr_flag_cols_above(p.data, p.indices, p.indptr, limits, flags)
    return flags


@flag_cols_above.register(GPU)
def _(p: Parts, limits):
    from .._kernels.row_reduce import flag_cols_above as gpu_flag_cols_above

    return gpu_flag_cols_above(*kernel_parts(p), limits=limits)
