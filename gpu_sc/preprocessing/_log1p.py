"""log1p: natural (or base-`base`) logarithm of 1 + x, like scanpy."""

from __future__ import annotations

import math
import warnings

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._backend import describe, is_dask, is_sparse
from .._values import log1p_, value_range
from .._ops._chunked import Chunked
from .._ops._layout import summed_duplicates
from .._validation import (UnsupportedMatrixError, canonical, check_in_memory, check_real, get_matrix, make_actual,
                           renamed_arg, set_matrix, unsupported_matrix)  # fmt: skip

_STEP = "log1p"


@renamed_arg("X", "data")
def log1p(
    data,
    *,
    base: float | None = None,
    copy: bool = False,
    chunked: bool | None = None,
    chunk_size: int | None = None,
    layer: str | None = None,
    obsm: str | None = None,
):
    """Logarithmise the data matrix, like :func:`scanpy.pp.log1p`: X = log(1 + X) / log(base).

    `data` is an AnnData or a matrix (numpy, scipy sparse, cupy, cupyx sparse). Integer input
    becomes float64, as in scanpy. In-memory matrices are transformed in one pass (the same
    values as any chunking); an AnnData backed on disk (``backed='r+'``) is transformed with
    ``chunked=True``, `chunk_size` cells (default 6000) read, transformed and written back at a
    time, after one read pass that checks every value.

    Returns
    -------
    For an AnnData: the copy when ``copy``, else ``None``; the matrix is transformed and
    ``uns['log1p'] = {'base': base}``. For a matrix: the transformed matrix (the same object
    unless ``copy`` or integer input). A Dask array chunked by rows gives a lazy Dask array
    (each block transformed on a copy when computed; a value outside log1p's domain raises
    then, with X already the lazy array).
    """
    given, base = base, check_real(base, "base", step=_STEP)  # uns keeps the value given, as scanpy's
    if base is not None and not (base > 0 and base != 1 and math.isfinite(base)):
        msg = f"{_STEP}: base must be a positive number other than 1, or None; got {base}."
        raise ValueError(msg)
    if not isinstance(data, AnnData):
        if layer is not None or obsm is not None:
            msg = f"{_STEP}: layer and obsm apply to AnnData input only."
            raise ValueError(msg)
        return _log1p_matrix(data, base=base, copy=copy)

    adata = data
    get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)  # validates layer/obsm before any change
    if K.UNS_LOG1P in adata.uns:
        warnings.warn("adata.X seems to be already log-transformed.", UserWarning, stacklevel=2)
    if adata.isbacked and not copy:
        x = get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)
        if layer is not None or obsm is not None:
            check_in_memory(x, step=_STEP, suffix=" from layers")
        elif chunked:
            if adata.file._filemode != "r+":
                msg = ("log1p is not implemented for backed AnnData with backed mode not r+: reopen it with "
                       "anndata.read_h5ad(path, backed='r+') to write the result into the file, or load it "
                       "(adata.to_memory()).")  # fmt: skip
                raise UnsupportedMatrixError(msg)
            _log1p_backed(adata, base=base, chunk_size=chunk_size or 6000)
            adata.uns[K.UNS_LOG1P] = {"base": given}
            return None
        else:
            check_in_memory(x, step=_STEP, suffix=" without `chunked=True`")
    if copy:
        adata = adata.copy()
    view = adata.is_view  # a view's values are logged into a copy: bad ones are refused while it is still a view
    x = _log1p_matrix(get_matrix(adata, layer=layer, obsm=obsm, step=_STEP), base=base, copy=view)
    if view:
        make_actual(adata, warn=True)
    set_matrix(adata, x, layer=layer, obsm=obsm)
    adata.uns[K.UNS_LOG1P] = {"base": given}
    return adata if copy else None


def _log1p_backed(adata: AnnData, *, base, chunk_size: int) -> None:
    """X on disk, `chunk_size` cells at a time: every chunk checked first, so that bad values
    leave the file unchanged, then each transformed and written back."""
    if np.dtype(adata.X.dtype).kind != "f":  # the file's integer dataset would truncate the logs
        msg = (f"{_STEP}: backed X holds {adata.X.dtype} values, and the logs would be truncated when written "
               "back into the file; store X as float (e.g. X.astype('float32') before writing) or load it "
               "(adata.to_memory()).")  # fmt: skip
        raise UnsupportedMatrixError(msg)
    for chunk, _, _ in adata.chunked_X(chunk_size):
        _check_domain(chunk.data if is_sparse(chunk) else np.asarray(chunk), lambda: "backed adata.X")
    for chunk, start, end in adata.chunked_X(chunk_size):
        adata.X[start:end] = _log1p_matrix(chunk, base=base, copy=False)


def _log1p_matrix(x, *, base, copy: bool):
    if is_dask(x):  # lazy, on copies of the blocks
        x = canonical(x, step=_STEP)
        dtype = x.dtype if x.dtype.kind in "fc" else np.float64
        return Chunked(x).update(_log1p_parts, base, dtype=dtype, keep_format=True)  # a CSC stays CSC, as in memory
    matrix = x if isinstance(x, np.matrix) else None  # given back as np.matrix, as scanpy's
    if matrix is not None:
        x = np.asarray(x)  # a view: in place goes into the caller's matrix
    if not (is_sparse(x) or hasattr(x, "flags")):  # e.g. backed X: an on-disk h5py dataset
        raise unsupported_matrix(x, step=_STEP, expected="a numpy/cupy array")
    # the log of duplicate entries' sum, their value (as Dask blocks get; scanpy logs each entry
    # apart): summed into a copy, checked, and only then the caller's matrix's (in place)
    summed = summed_duplicates(x)
    _check_domain(summed.data if is_sparse(summed) else summed, lambda: describe(x))
    if summed is not x:
        if not copy and x.dtype.kind in "fc":
            x.data, x.indices, x.indptr = summed.data, summed.indices, summed.indptr
        else:
            x, copy = summed, False
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)  # scanpy's choice for integer input
    elif copy:
        x = x.copy()
    log1p_(x.data if is_sparse(x) else x, base=base)
    if matrix is not None:
        return matrix if np.may_share_memory(x, matrix) else np.asmatrix(x)
    return x


def _check_domain(values, what) -> None:
    """Refuse, before any change, values where log(1 + x) is NaN (NaN, below -1) and inf (scanpy
    raises on both for sparse input and writes NaN or inf for dense)."""
    if values.dtype.kind not in "iuf" or values.size == 0:
        return
    low, high = value_range(values)  # NaN propagates into both
    if math.isnan(low) or math.isinf(high):
        msg = f"{_STEP}: found NaN or inf values in {what()}; fix or drop those entries first."
        raise ValueError(msg)
    if low < -1:
        msg = (f"{_STEP}: found values below -1 (minimum {low:g}) in {what()}, where log(1 + x) is "
               "undefined; log1p expects non-negative (normalised) counts.")  # fmt: skip
        raise ValueError(msg)


def _log1p_parts(p, base) -> None:
    _check_domain(p.data, lambda: "a block of the Dask array")
    log1p_(p.data, base=base)
