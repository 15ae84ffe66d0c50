"""Per-group, per-column sums, sums of squares and nonzero counts: the statistics behind
pseudobulk aggregation (and, next, marker-gene tests and signature scores).

The CPU engine sums each (group, column) over the group's rows in row order, in the dtype of
the output: the order and precision of scanpy's indicator-matrix product (`sc.get.aggregate`),
so its sums are reproduced bit for bit. A square is formed in the input dtype before it is
summed, as scanpy squares a float32 matrix. The GPU kernel and Dask blocks sum in other orders.
"""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, REDUCE, primitive
from ._layout import Parts, kernel_parts, row_pointers


@numba.njit(parallel=True, cache=True)
def _group_sums(data, indices, indptr, dense, order, starts, sums, sumsq, nnz, squares, counts):
    """Groups in parallel, each over its rows (`order[starts[g]:starts[g + 1]]`, ascending):
    no atomics, and every output cell summed in row order. Dense rows (`dense`) take the column
    from the position in the row; `indices` is then unused."""
    for g in numba.prange(starts.size - 1):
        for t in range(starts[g], starts[g + 1]):
            r = order[t]
            begin = indptr[r]
            for j in range(begin, indptr[r + 1]):
                v = data[j]
                k = j - begin if dense else indices[j]
                sums[g, k] += v
                if squares:
                    sumsq[g, k] += v * v
                if counts and v != 0:
                    nnz[g, k] += 1


@primitive(chunked=REDUCE, per_row=("codes",))
def group_sums(p: Parts, codes, n_groups: int, *, dtype=np.float64, squares: bool = False,
               counts: bool = False):  # fmt: skip
    """(sums, sums of squares or None, nonzero counts or None), each (n_groups, n_cols) of
    `dtype`, over the rows of each group; `codes` holds one group per row (-1: in none)."""
    n_rows, n_cols = p.shape
    codes = np.asarray(codes)
    if codes.shape != (n_rows,):
        msg = f"codes must hold one group per row ({n_rows}), got shape {codes.shape}."
        raise ValueError(msg)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    starts = np.searchsorted(codes[order], np.arange(n_groups + 1)).astype(np.int64)
    out = [np.zeros((n_groups, n_cols) if want else (1, 1), dtype=dtype) for want in (True, squares, counts)]
    indptr = np.asarray(row_pointers(p))
    indices = indptr[:1] if p.dense else p.indices  # any int array: unused for dense rows
    data = p.data.astype(np.float32) if p.data.dtype == np.float16 else p.data  # numba has no float16; exact
    _group_sums(data, indices, indptr, p.dense, order, starts, *out, squares, counts)
    return out[0], out[1] if squares else None, out[2] if counts else None


@group_sums.register(GPU)
def _(p: Parts, codes, n_groups: int, *, dtype=np.float64, squares: bool = False, counts: bool = False):
    from .._kernels.group_sums import group_sums as gpu_group_sums

    # integer or bool values (to_gpu keeps dense integers): float64, exact as the CPU's sums of
    # them for values and squares below 2**53
    got = gpu_group_sums(*kernel_parts(p), codes=codes, n_groups=n_groups, squares=squares, counts=counts)
    return tuple(None if a is None else a.astype(dtype, copy=False) for a in got)
