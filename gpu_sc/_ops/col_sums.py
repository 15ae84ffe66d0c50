"""Per-column statistics: sums, nonzero counts, and mean / variance (float64 accumulation)."""

from __future__ import annotations

import numba
import numpy as np

from ._dispatch import GPU, REDUCE, primitive
from .._values import not_counts
from ._layout import Parts, kernel_parts, row_bands


@numba.njit(parallel=True, cache=True)
def _csr_col_stats(data, indices, indptr, n_cols, n_chunks, squares, round_squares, sums, sumsq, nnz):
    """Row chunks accumulate into their own partial rows, summed at the end: no atomics, no
    nnz-sized temporaries, memory n_chunks x n_cols. The squares only where asked (a third
    scattered write per value)."""
    n_rows = indptr.size - 1
    part_s = np.zeros((n_chunks, n_cols))
    part_q = np.zeros((n_chunks, n_cols if squares else 0))
    part_n = np.zeros((n_chunks, n_cols), np.int64)
    step = (n_rows + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        for r in range(c * step, min(n_rows, (c + 1) * step)):
            for j in range(indptr[r], indptr[r + 1]):
                w = data[j]
                if w != 0:
                    k = indices[j]
                    part_s[c, k] += np.float64(w)
                    part_n[c, k] += 1
                    if squares:  # a float32 value's square rounded to float32, as scanpy's
                        part_q[c, k] += np.float64(w * w) if round_squares else np.float64(w) * np.float64(w)
    for k in numba.prange(n_cols):
        s = 0.0
        q = 0.0
        m = 0
        for c in range(n_chunks):
            s += part_s[c, k]
            m += part_n[c, k]
            if squares:
                q += part_q[c, k]
        sums[k] = s
        sumsq[k] = q
        nnz[k] = m


def _dense_sumsq(x: np.ndarray) -> np.ndarray:
    """Column sums of squares in float64, a float32 value's square rounded to float32 (as scanpy's
    x * x; others exact, as the GPU kernel's), band by band (no matrix-sized temporary)."""
    if x.dtype != np.float32:
        return np.einsum("ij,ij->j", x, x, dtype=np.float64)
    out = np.zeros(x.shape[1])
    for band in row_bands(x.shape):
        xb = x[band]
        out += np.multiply(xb, xb).sum(axis=0, dtype=np.float64)
    return out


@primitive(chunked=REDUCE)
def _col_stats(p: Parts, *, squares: bool, counts: bool):
    """(sums, sums of squares or None, nonzero counts or None) per column, float64 / int64."""
    n_cols = p.shape[1]
    if p.dense:
        x = p.data.reshape(p.shape)
        sums = x.sum(axis=0, dtype=np.float64)
        sumsq = _dense_sumsq(x) if squares else None
        nnz = None
        if counts:  # band by band: the nonzero mask is one band's
            nnz = np.zeros(n_cols, np.int64)
            for band in row_bands(p.shape):
                nnz += np.count_nonzero(x[band], axis=0)
        return sums, sumsq, nnz
    sums, sumsq, nnz = np.empty(n_cols), np.empty(n_cols), np.empty(n_cols, np.int64)
    _csr_col_stats(p.data, p.indices, p.indptr, n_cols, numba.get_num_threads(), squares, p.data.dtype == np.float32,
                   sums, sumsq, nnz)  # fmt: skip
    return sums, sumsq if squares else None, nnz if counts else None


@_col_stats.register(GPU)
def _(p: Parts, *, squares: bool, counts: bool):
    from .._kernels.col_reduce import col_stats

    return col_stats(*kernel_parts(p), squares=squares, counts=counts)


def col_sums(p: Parts):
    """(sums float64, nonzero counts int64) per column."""
    sums, _, nnz = _col_stats(p, squares=False, counts=True)
    return sums, nnz


def col_moments(p: Parts):
    """(sums, sums of squares) per column, float64: what `mean_var` takes, and what adds up
    over any split of the rows (batches read in one pass)."""
    sums, sumsq, _ = _col_stats(p, squares=True, counts=False)
    return sums, sumsq


def checked_col_moments(p: Parts, _group=None, check: bool = True):
    """`col_moments` and whether the values hold a non-count (negative or not whole; False
    without `check`): the value check rides on a pass over a Dask X that reads the moments
    anyway (a block's, or its group's rows' in `Chunked.reduce_groups`)."""
    return (*col_moments(p), np.bool_(check and not_counts(p.data)))


def col_mean_var(p: Parts, *, ddof: int = 1):
    """(mean, variance) per column in float64, variance with `ddof` (1: unbiased, like scanpy):
    `mean_var` of the columns' moments."""
    return mean_var(*col_moments(p), p.shape[0], ddof=ddof)


def mean_var(sums, sumsq, n: int, *, ddof: int = 1):
    """(mean, variance) of `n` rows from their column sums and sums of squares.

    Uses E[x^2] - E[x]^2 with float64 sums, as scanpy does; tiny negative round-off is clipped.
    Where there are no more rows than `ddof` the variance is 0 (one cell: scale gives zeros; scanpy's
    _get_mean_var leaves its float32 square's rounding there, and its scale NaN); no rows: NaN.
    """
    if n == 0:
        return sums * np.nan, sums * np.nan
    mean = sums / n
    var = sumsq / n - mean * mean
    if n > ddof:
        var *= n / (n - ddof)
    else:  # one value: 0 exactly, where scanpy keeps its float32 square's rounding (NaN in scale)
        var = var * 0
    return mean, var.clip(min=0)
