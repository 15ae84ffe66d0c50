"""sqrt: the square root of every value, like scanpy (NaN for negative values, as NumPy gives)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._backend import is_dask, is_sparse, xp_of
from .._validation import check_anndata, check_index_dtype, make_actual, old_positionals, unsupported_matrix

_STEP = "sqrt"


@old_positionals("copy", "chunked", "chunk_size")
def sqrt(data, *, copy: bool = False, chunked: bool = False, chunk_size: int | None = None):
    """Square root of the data matrix, like :func:`scanpy.pp.sqrt`.

    `data` is an AnnData or a matrix: numpy, scipy sparse, cupy, cupyx sparse, or a Dask array
    (lazy, block by block). Sparse matrices keep their pattern; integer values become floats
    (NumPy's: float16 for 8-bit integers and bools, float32 for 16-bit; sparse ones float32 for
    both, as sparse matrices hold no float16: scanpy's sqrt fails there).
    For an AnnData backed on disk, ``chunked=True`` writes `chunk_size` cells (default 6000) at
    a time, as scanpy does. Returns the new matrix for a matrix; for an AnnData the copy when
    `copy`, else None. A view becomes an actual AnnData first (scanpy's writes the roots into
    the view's parent).
    """
    if not isinstance(data, AnnData):
        return _sqrt(data)
    check_anndata(data, step=_STEP, name="data")
    adata = data.copy() if copy else data
    if chunked and adata.isbacked:
        for chunk, start, end in adata.chunked_X(chunk_size or 6000):
            adata.X[start:end] = _sqrt(chunk)
    else:
        make_actual(adata)
        adata.X = _sqrt(adata.X)
    return adata if copy else None


def _sqrt(x):
    if is_dask(x):
        return x.map_blocks(_sqrt, dtype=_sqrt(x._meta).dtype, meta=_sqrt(x._meta))
    if is_sparse(x):
        check_index_dtype(x, step=_STEP)
        if x.dtype.itemsize == 1 and x.dtype.kind in "iub":  # NumPy's root of these is float16
            x = x.astype(np.float32)
        return x.sqrt()
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise unsupported_matrix(x, step=_STEP, expected="a numpy/cupy array or a sparse matrix")
    return xp_of(x).sqrt(x)
