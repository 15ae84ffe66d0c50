"""The storage layouts the primitives accept, and how to take a matrix apart into them."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._backend import describe, is_dask, is_gpu, is_sparse, sparse_format, to_host, xp_of
from .._values import float_values


class Parts(NamedTuple):
    """A CSR matrix, or a C-contiguous dense one (then `indices` and `indptr` are None and
    `data` is the raveled matrix)."""

    data: Any
    indices: Any
    indptr: Any
    shape: tuple[int, int]

    @property
    def dense(self) -> bool:
        return self.indptr is None

    @property
    def xp(self):
        """numpy or cupy: where the parts live (as `Chunked.xp` for its blocks)."""
        return xp_of(self.data)


def in_layout(x):
    """`x` as CSR or C-contiguous dense on its own device, copied only where the layout differs:
    CSC / COO become CSR, np.matrix an ndarray. (Shape and type are the caller's to check.)"""
    if is_sparse(x):
        return x if sparse_format(x) == "csr" else x.tocsr()
    if isinstance(x, np.matrix):
        x = np.asarray(x)
    return x if x.flags.c_contiguous else xp_of(x).ascontiguousarray(x)


def summed_duplicates(x):
    """An in-memory CSR `x` with its duplicate entries summed, in a copy, where it has any. Such a
    matrix's value is their sum (scipy reads it so), but a count of stored values or a function of
    each (expm1, a square) would take them apart; scanpy's filters and HVG see the sums. A
    duplicate-free CSR with sorted indices (the usual) costs one scan, which scipy caches."""
    if not is_sparse(x) or x.has_canonical_format:
        return x
    y = x.copy()
    y.sum_duplicates()
    return x if y.nnz == x.nnz else y


def parts(x) -> Parts:
    """Split CSR or C-contiguous dense `x` (CPU or GPU) into `Parts` without copying. (A Dask
    array has none: `gpu_sc._ops.parts`, the entry point in `_chunked`, gives its `Chunked`.)"""
    if is_dask(x):
        msg = f"{describe(x)} has no Parts; gpu_sc._ops.parts(x) gives its Chunked"
        raise TypeError(msg)
    if is_sparse(x):
        if sparse_format(x) != "csr":
            msg = f"expected a CSR matrix, got {describe(x)}; convert with .tocsr()"
            raise TypeError(msg)
        indices, indptr = x.indices, x.indptr
        if indices.dtype != indptr.dtype:  # rare mixed index types: one dtype for the kernels
            indices = indices.astype(indptr.dtype)
        return Parts(x.data, indices, indptr, tuple(x.shape))
    if not x.flags.c_contiguous:
        msg = f"expected a C-contiguous dense matrix, got {describe(x)}"
        raise TypeError(msg)
    return Parts(x.reshape(-1), None, None, tuple(x.shape))


def kernel_parts(p: Parts) -> Parts:
    """`p` with values the compiled kernels take: float32/float64 as they are, integers, bools and
    float16 (which the kernels are not compiled for) as float64, exact (a copy of the values)."""
    return p._replace(data=float_values(p.data))


def row_pointers(p: Parts):
    """indptr of `p`, synthesised for dense rows (n_rows + 1 entries) so CPU row loops serve both."""
    if not p.dense:
        return p.indptr
    xp = xp_of(p.data)
    n_rows, n_cols = p.shape
    return xp.arange(n_rows + 1, dtype=np.int64) * n_cols


DENSE_CHUNK = 1 << 20  # values per row band where a dense step makes temporaries (4 MiB of float32)


def row_bands(shape: tuple[int, int], values: int = DENSE_CHUNK):
    """Row slices of a dense (n_rows, n_cols) matrix, each about `values` values: a per-row
    result made band by band is the whole matrix's, with temporaries of one band (a bool mask of
    a 100,000 x 30,000 X is 3 GB)."""
    n_rows, n_cols = shape
    step = max(1, values // max(1, n_cols))
    return [slice(start, min(n_rows, start + step)) for start in range(0, n_rows, step)]


STORED_BAND = 1 << 24  # stored values a banded sparse step takes at a time (its temporaries are a band's)


def stored_bands(n_values: int) -> list[slice]:
    """Slices of `n_values` stored values, STORED_BAND at a time (read when called: tests shrink it)."""
    return [slice(start, min(n_values, start + STORED_BAND)) for start in range(0, n_values, STORED_BAND)]


def value_rows(ptr, band: slice):
    """The row (segment) of each stored value at positions `band`, from the pointer array, on its
    device: a binary search per value, so a band's temporaries, not the matrix's."""
    xp = xp_of(ptr)
    return xp.searchsorted(ptr, xp.arange(band.start, band.stop, dtype=ptr.dtype), side="right") - 1


def segment_ids(ptr):
    """The segment (row of a CSR, column of a CSC) of each stored value, int64, from its pointer
    array, on that array's device: on the host a repeat, on the GPU a searchsorted (cupy.repeat
    takes no array of repeats)."""
    if not is_gpu(ptr):
        ptr = np.asarray(ptr)
        return np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
    return value_rows(ptr, slice(0, int(ptr[-1]))).astype(np.int64)


def nan_replaced(x, value):
    """(`x`, None) where the in-memory CSR or dense matrix `x` holds no NaN; else (a copy with
    `value` in their place, (rows, columns) of those entries as host int64 arrays)."""
    values = x.data if is_sparse(x) else x
    nan = xp_of(values).isnan(values) if values.dtype.kind == "f" else None
    if nan is None or not bool(nan.any()):
        return x, None
    x = x.copy()
    (x.data if is_sparse(x) else x)[nan] = value
    where = (segment_ids(x.indptr)[nan], x.indices[nan]) if is_sparse(x) else xp_of(nan).nonzero(nan)
    return x, tuple(np.asarray(to_host(a), dtype=np.int64) for a in where)


def on_gpu(p: Parts) -> bool:
    return is_gpu(p.data)
