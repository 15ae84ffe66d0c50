"""Per-column sums and sums of squares of values clipped from above at a per-column limit
(Seurat v3's standardized variance: sum_r min(x, clip_c) and sum_r min(x, clip_c)^2)."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, REDUCE, primitive
from ._layout import Parts, kernel_parts, row_pointers


@numba.njit(parallel=True, cache=True)
def _clipped_sums(data, indices, indptr, dense, n_cols, clip, n_chunks, sums, sumsq):
    """Row chunks accumulate into their own partial rows (no atomics), summed at the end.
    Dense rows (`dense`) take the column from the position in the row; `indices` is unused."""
    n_rows = indptr.size - 1
    part_s = np.zeros((n_chunks, n_cols))
    part_q = np.zeros((n_chunks, n_cols))
    step = (n_rows + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        for r in range(c * step, min(n_rows, (c + 1) * step)):
            begin = indptr[r]
            for j in range(begin, indptr[r + 1]):
                k = j - begin if dense else indices[j]
                v = min(np.float64(data[j]), clip[k])
                part_s[c, k] += v
                part_q[c, k] += v * v
    for k in numba.prange(n_cols):
        s = 0.0
        q = 0.0
        for c in range(n_chunks):
            s += part_s[c, k]
            q += part_q[c, k]
        sums[k] = s
        sumsq[k] = q


@primitive(chunked=REDUCE)
def clipped_sums(p: Parts, clip):
    """(sums, sums of squares) per column in float64 of min(x, clip[column]).

    CSR sums the stored values only (implicit zeros add nothing); dense clips every entry,
    zeros included (they differ only where a clip value is negative).
    """
    n_rows, n_cols = p.shape
    clip = np.ascontiguousarray(clip, dtype=np.float64)
    if clip.shape != (n_cols,):
        msg = f"clip must hold one value per column ({n_cols}), got shape {clip.shape}."
        raise ValueError(msg)
    sums, sumsq = np.empty(n_cols), np.empty(n_cols)
    indptr = np.asarray(row_pointers(p))
    indices = indptr[:1] if p.dense else p.indices  # any int array: unused for dense rows
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    _clipped_sums(p.data, indices, indptr, p.dense, n_cols, clip, n_chunks, sums, sumsq)
    return sums, sumsq


@clipped_sums.register(GPU)
def _(p: Parts, clip):
    from .._kernels.clipped_sums import clipped_sums as gpu_clipped_sums

    return gpu_clipped_sums(*kernel_parts(p), clip=clip)
