"""Per-column sums over every entry (zeros included) of analytic Pearson residuals, clipped:
r = clip((x - mu) / sqrt(mu + mu^2 / theta), -clip, clip) with mu = cell total x gene total /
total; the sum of r, or with `centre` the sum of (r - centre[column])^2 (the variance's second
pass). Columns whose gene total is 0 (no counts: mu is 0 and r undefined) sum to 0."""

from __future__ import annotations

import math

import numba
import numpy as np

from ._dispatch import GPU, REDUCE, primitive
from .._backend import xp_of
from ._layout import Parts, kernel_parts, row_pointers
from .gram import row_blocks


@numba.njit(parallel=True, cache=True)
def _residual_sums(data, indices, indptr, dense, cells, genes, total, theta, clip, centre, squared, n_chunks,
                   out):  # fmt: skip
    """Row chunks accumulate into their own partial rows (no atomics); each scatters its row's
    stored values into a dense buffer, so the indices need not be sorted."""
    n_rows, n_cols = indptr.size - 1, genes.size
    part = np.zeros((n_chunks, n_cols))
    step = (n_rows + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        row = np.zeros(n_cols)
        for r in range(c * step, min(n_rows, (c + 1) * step)):
            begin, end = indptr[r], indptr[r + 1]
            for j in range(begin, end):
                row[j - begin if dense else indices[j]] += data[j]
            for k in range(n_cols):
                if genes[k] > 0:
                    mu = cells[r] * genes[k] / total
                    res = min(max((row[k] - mu) / math.sqrt(mu + mu * mu / theta), -clip), clip)
                    part[c, k] += (res - centre[k]) ** 2 if squared else res
            for j in range(begin, end):
                row[j - begin if dense else indices[j]] = 0.0
    for k in numba.prange(n_cols):
        s = 0.0
        for c in range(n_chunks):
            s += part[c, k]
        out[k] = s


@primitive(chunked=REDUCE, per_row=("cells",))
def residual_sums(p: Parts, cells, genes, total: float, theta: float, clip: float, centre=None):
    """(columns,) float64: the sum over rows of each column's clipped residual (`centre`: of its
    squared deviation from centre[column]). `cells`: the rows' totals; `genes`: the columns'."""
    n_rows, n_cols = p.shape
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    genes = np.ascontiguousarray(genes, dtype=np.float64)
    squared = centre is not None
    centre = np.zeros(n_cols) if centre is None else np.ascontiguousarray(centre, dtype=np.float64)
    out = np.empty(n_cols)
    indptr = np.asarray(row_pointers(p))
    indices = indptr[:1] if p.dense else p.indices  # any int array: unused for dense rows
    n_chunks = max(1, min(numba.get_num_threads(), n_rows))
    _residual_sums(kernel_parts(p).data, indices, indptr, p.dense, cells, genes, float(total), float(theta),
                   float(clip), centre, squared, n_chunks, out)  # fmt: skip
    return out


@residual_sums.register(GPU)
def _(p: Parts, cells, genes, total: float, theta: float, clip: float, centre=None):
    """CuPy: a block of rows made dense at a time (`gram.row_blocks`), its residuals summed per
    column."""
    import cupy as cp

    cells, genes = cp.asarray(cells, dtype=cp.float64), cp.asarray(genes, dtype=cp.float64)
    centre = None if centre is None else cp.asarray(centre, dtype=cp.float64)
    out = cp.zeros(p.shape[1])
    has = genes > 0
    for start, stop, x in row_blocks(p):
        res = dense_residuals(x, cells[start:stop], genes, total, theta, clip)
        res = res if centre is None else (res - centre[None, :]) ** 2
        out += cp.where(has[None, :], res, 0.0).sum(axis=0)  # (columns of no counts: NaN, left out)
    return out


def dense_residuals(counts, cells, genes, total: float, theta: float, clip: float):
    """Clipped residuals of a dense float64 block (NumPy or CuPy; `cells`: its rows' totals,
    `genes`: its columns'), in scanpy's order of operations; NaN in a column of no counts
    (0 / 0), as scanpy's."""
    xp = xp_of(counts)
    mu = cells[:, None] * genes[None, :] / total
    with np.errstate(divide="ignore", invalid="ignore"):
        res = (counts - mu) / xp.sqrt(mu + mu * mu / theta)
    return xp.clip(res, -clip, clip)
