"""Blocked products with a CSR or dense matrix X (CPU or GPU), float64, memory bounded.

X is walked in row blocks of at most `BLOCK_BYTES` as dense float64. For the Gram matrix each
block is expanded to dense (sparse input is never densified in full) and multiplied with BLAS
(numpy) or cuBLAS (cupy): X_b^T X_b. Products with a thin dense matrix (projection, the
implicitly centred normal operator) use the sparse block directly (scipy / cuSPARSE), so their
cost follows the number of stored values. One array-namespace version serves both backends; int32 and int64 index
pointers both work (block-local pointers are rebased and fit in int32).
"""

from __future__ import annotations

import numpy as np

from .._backend import sparse_module, xp_of
from ._layout import Parts

BLOCK_BYTES = 64 * 2**20  # one dense float64 row block


def block_rows(p: Parts, chunk_size: int | None = None) -> int:
    """Rows per block: `chunk_size`, else as many as fit a float64 block of BLOCK_BYTES."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, BLOCK_BYTES // (8 * max(1, p.shape[1])))


def row_blocks(p: Parts, chunk_size: int | None = None, *, densify: bool = True):
    """Yield (start, stop, float64 block of rows start:stop): dense, or for CSR input with
    ``densify=False`` a CSR block (scipy / cupyx) for sparse products."""
    xp = xp_of(p.data)
    n_rows, n_cols = p.shape
    step = block_rows(p, chunk_size)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        if p.dense:
            block = p.data[start * n_cols : stop * n_cols].reshape(stop - start, n_cols)
            yield start, stop, block.astype(np.float64)
            continue
        lo, hi = int(p.indptr[start]), int(p.indptr[stop])
        indptr = (p.indptr[start : stop + 1] - p.indptr[start]).astype(np.int32)
        block = sparse_module(p.data).csr_matrix(
            (p.data[lo:hi].astype(np.float64), p.indices[lo:hi].astype(np.int32), indptr),
            shape=(stop - start, n_cols),
        )
        yield start, stop, (xp.asarray(block.toarray()) if densify else block)


def gram(p: Parts, chunk_size: int | None = None):
    """X^T X as a dense (n_cols, n_cols) float64 matrix, accumulated over row blocks."""
    xp = xp_of(p.data)
    n_cols = p.shape[1]
    g = xp.zeros((n_cols, n_cols), dtype=np.float64)
    for _, _, block in row_blocks(p, chunk_size):
        g += block.T @ block
    return g


def project(p: Parts, v, offset=None, chunk_size: int | None = None):
    """X v - offset (offset broadcast over rows; e.g. mu^T v) as (n_rows, k) float64."""
    xp = xp_of(p.data)
    out = xp.empty((p.shape[0], v.shape[1]), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size, densify=False):
        out[start:stop] = block @ v
    if offset is not None:
        out -= offset
    return out


def centred_normal_apply(p: Parts, q, mean=None, chunk_size: int | None = None):
    """A^T A q for A = X - 1 mean^T (implicit centring; mean None: A = X), one pass over X."""
    xp = xp_of(p.data)
    y = xp.zeros((p.shape[1], q.shape[1]), dtype=np.float64)
    shift = None if mean is None else mean @ q
    for _, _, block in row_blocks(p, chunk_size, densify=False):
        z = block @ q
        if shift is not None:
            z -= shift
            y -= xp.outer(mean, z.sum(axis=0))
        y += block.T @ z
    return y


def transpose_apply(p: Parts, u, chunk_size: int | None = None):
    """X^T u as (n_cols, k) float64, accumulated over row blocks (u: (n_rows, k))."""
    xp = xp_of(p.data)
    y = xp.zeros((p.shape[1], u.shape[1]), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size, densify=False):
        y += block.T @ u[start:stop]
    return y


def cell_gram(p: Parts, chunk_size: int | None = None):
    """X X^T as a dense (n_rows, n_rows) float64 matrix (for few rows and many columns): each
    dense row block b gives the columns X X_b^T through a sparse-times-dense product."""
    xp = xp_of(p.data)
    n_rows = p.shape[0]
    k = xp.empty((n_rows, n_rows), dtype=np.float64)
    for start, stop, block in row_blocks(p, chunk_size):
        k[:, start:stop] = project(p, xp.ascontiguousarray(block.T), None, chunk_size)
    return k
