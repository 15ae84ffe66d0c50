"""Per-column statistics: sums, nonzero counts, and mean / variance (float64 accumulation)."""

from __future__ import annotations

import numpy as np

from ._layout import Parts, on_gpu


def _col_stats(p: Parts, *, squares: bool, counts: bool):
    """(sums, sums of squares or None, nonzero counts or None) per column, float64 / int64."""
    if on_gpu(p):
        from .._kernels.col_reduce import col_stats

        return col_stats(*p, squares=squares, counts=counts)
    n_cols = p.shape[1]
    if p.dense:
        x = p.data.reshape(p.shape)
        sums = x.sum(axis=0, dtype=np.float64)
        sumsq = np.einsum("ij,ij->j", x, x, dtype=np.float64) if squares else None
        nnz = np.count_nonzero(x, axis=0).astype(np.int64) if counts else None
        return sums, sumsq, nnz
    values = p.data.astype(np.float64, copy=False)
    sums = np.bincount(p.indices, weights=values, minlength=n_cols)
    sumsq = np.bincount(p.indices, weights=values * values, minlength=n_cols) if squares else None
    nnz = np.bincount(p.indices[p.data != 0], minlength=n_cols).astype(np.int64) if counts else None
    return sums, sumsq, nnz


def col_sums(p: Parts):
    """(sums float64, nonzero counts int64) per column."""
    sums, _, nnz = _col_stats(p, squares=False, counts=True)
    return sums, nnz


def col_mean_var(p: Parts, *, ddof: int = 1):
    """(mean, variance) per column in float64, variance with `ddof` (1: unbiased, like scanpy).

    Uses E[x^2] - E[x]^2 with float64 sums, as scanpy does; tiny negative round-off is clipped.
    """
    n = p.shape[0]
    sums, sumsq, _ = _col_stats(p, squares=True, counts=False)
    mean = sums / n
    if n <= ddof:  # undefined, as numpy's var says
        return mean, mean * np.nan
    var = (sumsq / n - mean * mean) * (n / (n - ddof))
    return mean, var.clip(min=0)
