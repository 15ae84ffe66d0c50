"""Blocked products with a CSR or dense matrix X (CPU or GPU), float64, memory bounded.

X is walked in row blocks of at most `BLOCK_BYTES` as dense float64. For the Gram matrix each
block is expanded to dense (sparse input is never densified in full) and multiplied with BLAS
(numpy) or cuBLAS (cupy): X_b^T X_b. Products with a thin dense matrix (projection, the
implicitly centred normal operator) use the sparse block directly (scipy / cuSPARSE), so their
cost follows the number of stored values; the normal operator A^T A q is one fused numba sweep
over CSR on the CPU, and on the GPU takes CSR blocks cut by stored values (`product_ranges`).
One array-namespace version serves both backends; int32 and int64 index pointers both work
(block-local pointers are rebased, int32 where a block's values fit)."""

from __future__ import annotations

import numba
import numpy as np

from .._backend import sparse_module, to_host, xp_of
from .._settings import BLOCK_BYTES
from ._dispatch import REDUCE, ROWS, primitive
from .col_sums import col_moments
from ._layout import Parts


def block_rows(p: Parts, chunk_size: int | None = None) -> int:
    """Rows per block: `chunk_size`, else as many as fit a float64 block of BLOCK_BYTES."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, BLOCK_BYTES // (8 * max(1, p.shape[1])))


def row_blocks(p: Parts, chunk_size: int | None = None, *, densify: bool = True):
    """Yield (start, stop, float64 block of rows start:stop): dense, or for CSR input with
    ``densify=False`` a CSR block (scipy / cupyx) for sparse products."""
    n_rows = p.shape[0]
    step = block_rows(p, chunk_size)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        yield start, stop, _block(p, start, stop, densify)


def product_ranges(p: Parts, width: int, chunk_size: int | None = None) -> list[tuple[int, int]]:
    """Row ranges for products of X with a thin dense matrix of `width` columns: `chunk_size`
    rows each when given; else, for CSR input, cut by stored values so that each block's
    float64 values and int32 indices plus its (rows, width) product stay within BLOCK_BYTES
    (a sparse block of a wide matrix holds far more rows than a dense one would)."""
    n_rows = p.shape[0]
    if chunk_size is not None or p.dense:
        step = block_rows(p, chunk_size)
        return [(s, min(n_rows, s + step)) for s in range(0, n_rows, step)]
    indptr = to_host(p.indptr).astype(np.int64)
    cost = 12 * indptr + 8 * max(1, int(width)) * np.arange(n_rows + 1, dtype=np.int64)
    ranges, start = [], 0
    while start < n_rows:
        stop = int(np.searchsorted(cost, cost[start] + BLOCK_BYTES, side="right")) - 1
        stop = min(n_rows, max(stop, start + 1))
        ranges.append((start, stop))
        start = stop
    return ranges


def _block(p: Parts, start: int, stop: int, densify: bool):
    """Rows start:stop of X as float64: dense, or a CSR block (densify False, CSR input)."""
    xp = xp_of(p.data)
    n_cols = p.shape[1]
    if p.dense:
        return p.data[start * n_cols : stop * n_cols].reshape(stop - start, n_cols).astype(np.float64)
    lo, hi = int(p.indptr[start]), int(p.indptr[stop])
    index = np.int32 if max(hi - lo, n_cols) < 2**31 else np.int64  # int32 where it fits (a large chunk_size may not)
    indptr = (p.indptr[start : stop + 1] - p.indptr[start]).astype(index)
    block = sparse_module(p.data).csr_matrix(
        (p.data[lo:hi].astype(np.float64), p.indices[lo:hi].astype(index), indptr),
        shape=(stop - start, n_cols),
    )
    return xp.asarray(block.toarray()) if densify else block


@primitive(any_device=True, chunked=REDUCE)
def gram(p: Parts, chunk_size: int | None = None):
    """X^T X as a dense (n_cols, n_cols) float64 matrix, accumulated over row blocks.

    Dense blocks through BLAS / cuBLAS do n_rows * n_cols^2 multiply-adds whatever the
    sparsity; a CSR on the CPU whose rows are so sparse that the products of their stored pairs,
    sum of nnz_row^2 / 2, are fewer than SPARSE_GRAM_SHARE of that takes one numba sweep
    over those pairs instead (fewer operations by far, at a slower rate per operation)."""
    if not p.dense and xp_of(p.data) is np and _pairs_cheaper(p):
        return _sparse_gram(p)
    xp = xp_of(p.data)
    n_cols = p.shape[1]
    g = xp.zeros((n_cols, n_cols), dtype=np.float64)
    for _, _, block in row_blocks(p, chunk_size):
        g += block.T @ block
    return g


@primitive(any_device=True, chunked=REDUCE)
def moments_and_gram(p: Parts, chunk_size: int | None = None):
    """(column sums, sums of squares, X^T X): `col_moments` and `gram` of the same rows, so that
    a Dask X is read once for both (PCA's covariance needs the means and the Gram matrix; apart,
    a matrix read from disk was read twice)."""
    return (*col_moments(p), gram(p, chunk_size))


#: the sparse sweep is taken when sum(nnz_row^2) < this share of n_rows * n_cols^2 (set on a
#: 2-core x86 box with the earlier row-by-row sweep: ~68 G multiply-adds/s through BLAS, ~2 G
#: pair updates/s through numba, break-even near 0.06; the column sweep is faster, so 0.03
#: leans to BLAS more than it needs to)
SPARSE_GRAM_SHARE = 0.03
#: stored values per row block of the sparse sweep: its column index (two int64 per value) and
#: the block's values stay in cache while every column's Gram row is updated
SPARSE_GRAM_BLOCK_NNZ = 1 << 18


def _pairs_cheaper(p: Parts) -> bool:
    n_rows, n_cols = p.shape
    per_row = np.diff(np.asarray(p.indptr)).astype(np.float64)
    return float(per_row @ per_row) < SPARSE_GRAM_SHARE * n_rows * float(n_cols) ** 2


def _sparse_gram(p: Parts):
    """X^T X over the stored pairs of each row, in row blocks of SPARSE_GRAM_BLOCK_NNZ values.

    Within a block the stored positions are listed by column; the threads take disjoint
    columns a and add x_a x_b for the positions b after a in the same row to Gram row a, which
    stays in L1 while it is written (the row-by-row sweep scattered over the whole matrix and
    was ~3x slower at 2,000 genes), and no thread shares a Gram row: no partial copies."""
    n_rows, n_cols = p.shape
    indptr = np.asarray(p.indptr)
    upper = np.zeros((n_cols, n_cols))
    colptr = np.zeros(n_cols + 1, np.int64)
    pos = rowend = np.empty(0, np.int64)
    start = 0
    while start < n_rows:
        stop = int(np.searchsorted(indptr, indptr[start] + SPARSE_GRAM_BLOCK_NNZ, side="right")) - 1
        stop = min(n_rows, max(stop, start + 1))
        if indptr[stop] - indptr[start] > pos.size:
            pos, rowend = np.empty((2, int(indptr[stop] - indptr[start])), np.int64)
        _positions_by_column(p.indices, indptr, start, stop, colptr, pos, rowend)
        _column_pair_sums(p.data, p.indices, colptr, pos, rowend, numba.get_num_threads(), upper)
        start = stop
    # each pair of stored values was added once, to [i, j] or [j, i]; the diagonal holds x_i^2
    # (counted twice by the sum, so put back; no further n_cols^2 temporaries)
    diagonal = np.diagonal(upper).copy()
    g = upper + upper.T
    np.fill_diagonal(g, diagonal)
    return g


@numba.njit(cache=True)
def _positions_by_column(indices, indptr, start, stop, colptr, pos, rowend):  # pragma: no cover - compiled
    """Counting sort of the stored positions of rows start:stop by column: column k's positions
    are pos[colptr[k]:colptr[k + 1]] (rows ascending), each with the end of its row."""
    n_cols = colptr.size - 1
    colptr[:] = 0
    for j in range(indptr[start], indptr[stop]):
        colptr[indices[j] + 1] += 1
    for k in range(n_cols):
        colptr[k + 1] += colptr[k]
    fill = colptr[:-1].copy()
    for r in range(start, stop):
        end = indptr[r + 1]
        for j in range(indptr[r], end):
            q = fill[indices[j]]
            pos[q] = j
            rowend[q] = end
            fill[indices[j]] = q + 1


#: columns are dealt to the threads in this many interleaved slices, so that dense and sparse
#: columns spread over the threads
_COLUMN_SLICES = 64


@numba.njit(parallel=True, cache=True)
def _column_pair_sums(data, indices, colptr, pos, rowend, n_threads, upper):  # pragma: no cover - compiled
    """upper[a, b] += x_a x_b for each stored position of column a and each later position b of
    its row (2 x_a x_b where b has column a too, so duplicates count fully), float64. The thread
    count comes in as an argument: numba.get_num_threads() inside made numba refuse to cache
    the function ("dynamic globals"), so it compiled again, with a warning, in every process."""
    n_cols = colptr.size - 1
    for t in numba.prange(n_threads):
        for c in range(t, _COLUMN_SLICES, n_threads):
            for a in range(c * n_cols // _COLUMN_SLICES, (c + 1) * n_cols // _COLUMN_SLICES):
                g = upper[a]
                for q in range(colptr[a], colptr[a + 1]):
                    j = pos[q]
                    va = np.float64(data[j])
                    g[a] += va * va
                    for b in range(j + 1, rowend[q]):
                        ib = indices[b]
                        w = va * np.float64(data[b])
                        g[ib] += 2.0 * w if ib == a else w


@primitive(any_device=True, chunked=ROWS)
def project(p: Parts, v, offset=None, chunk_size: int | None = None):
    """X v - offset (offset broadcast over rows; e.g. mu^T v) as (n_rows, k) float64."""
    xp = xp_of(p.data)
    out = xp.empty((p.shape[0], v.shape[1]), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size, densify=False):
        out[start:stop] = block @ v
    if offset is not None:
        out -= offset
    return out


@primitive(any_device=True, chunked=REDUCE)
def centred_normal_apply(p: Parts, q, mean=None, chunk_size: int | None = None):
    """A^T A q for A = X - 1 mean^T (implicit centring; mean None: A = X), one pass over X.

    CSR on the CPU: one fused numba sweep (each row's X_i q, then X_i^T times it while the row is
    in cache; float64 accumulation, the values read as stored, no block copies). Otherwise
    X (q) then X^T (.) block by block (scipy / cuSPARSE), blocks cut by :func:`product_ranges`.
    A^T A q is a sum over rows, so a `Chunked` X sums it over its Dask blocks."""
    xp = xp_of(p.data)
    q = xp.ascontiguousarray(q, dtype=np.float64)
    shift = xp.zeros(q.shape[1]) if mean is None else mean @ q
    if not p.dense and xp is np and chunk_size is None:
        y, zsum = _normal_csr(p.data, p.indices, p.indptr, q, np.asarray(shift, dtype=np.float64))
        if mean is not None:
            y -= np.outer(mean, zsum)
        return y
    y = xp.zeros((p.shape[1], q.shape[1]), dtype=np.float64)
    for start, stop in product_ranges(p, q.shape[1], chunk_size):
        block = _block(p, start, stop, densify=False)
        z = block @ q
        if mean is not None:
            z -= shift
            y -= xp.outer(mean, z.sum(axis=0))
        y += block.T @ z
    return y


@numba.njit(cache=True)
def _normal_csr(data, indices, indptr, q, shift):  # pragma: no cover - compiled
    n_cols, width = q.shape
    y = np.zeros((n_cols, width))
    zsum = np.zeros(width)
    z = np.empty(width)
    for i in range(indptr.size - 1):
        z[:] = 0.0
        for t in range(indptr[i], indptr[i + 1]):
            a = np.float64(data[t])
            j = indices[t]
            for k in range(width):
                z[k] += a * q[j, k]
        for k in range(width):
            z[k] -= shift[k]
            zsum[k] += z[k]
        for t in range(indptr[i], indptr[i + 1]):
            a = np.float64(data[t])
            j = indices[t]
            for k in range(width):
                y[j, k] += a * z[k]
    return y, zsum


@primitive(any_device=True, chunked=REDUCE, per_row=("u",))
def transpose_apply(p: Parts, u, chunk_size: int | None = None):
    """X^T u as (n_cols, k) float64, accumulated over row blocks (u: (n_rows, k))."""
    xp = xp_of(p.data)
    y = xp.zeros((p.shape[1], u.shape[1]), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size, densify=False):
        y += block.T @ u[start:stop]
    return y


@primitive(any_device=True)
def cell_gram(p: Parts, chunk_size: int | None = None):
    """X X^T as a dense (n_rows, n_rows) float64 matrix (for few rows and many columns): each
    dense row block b gives the columns X X_b^T through a sparse-times-dense product. (Not for
    a Dask matrix: every block of columns needs all of X.)"""
    xp = xp_of(p.data)
    n_rows = p.shape[0]
    k = xp.empty((n_rows, n_rows), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size):
        k[:, start:stop] = project(p, xp.ascontiguousarray(block.T), None, chunk_size)
    return k
