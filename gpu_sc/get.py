"""Moving an AnnData's matrices between host and GPU: the only place data changes device.

X, every layer and every array in obsm move; obs, var, uns and DataFrames in obsm stay on the
host (they are metadata, and `write_h5ad` needs them there). A Dask array moves lazily: its
blocks are converted when they are computed.
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._backend import is_dask, is_gpu, is_sparse


def _cupy():
    try:
        return importlib.import_module("cupy"), importlib.import_module("cupyx.scipy.sparse")
    except ImportError as e:
        msg = (
            "moving data to the GPU needs CuPy: install gpu_sc with the extra matching your CUDA "
            "('pip install \"gpu_sc[cuda13]\"' or '[cuda12]')."
        )
        raise ImportError(msg) from e


def _to_gpu_array(x):
    if is_dask(x):
        return _to_gpu_dask(x)
    if x is None or is_gpu(x) or not (sp.issparse(x) or isinstance(x, np.ndarray)):
        return x
    cp, cpsp = _cupy()
    if sp.issparse(x):
        if x.format == "csc":
            return cpsp.csc_matrix(x)
        return cpsp.csr_matrix(x if x.format == "csr" else x.tocsr())
    return cp.asarray(np.asarray(x))


def _to_cpu_array(x):
    if is_dask(x):
        return _to_cpu_dask(x)
    if not is_gpu(x):
        return x
    return x.get()  # cupy and cupyx sparse both give their numpy / scipy counterpart


def _gpu_block(block):
    """One Dask block on the GPU: scipy sparse as cupyx CSR (the layout the steps take on
    Dask blocks), dense as cupy."""
    if is_gpu(block):
        return block
    cp, cpsp = _cupy()
    if sp.issparse(block):
        return cpsp.csr_matrix(block if block.format == "csr" else block.tocsr())
    return cp.asarray(np.asarray(block))


def _to_gpu_dask(x):
    """A lazy Dask array of `x`'s blocks on the GPU (unchanged if they are there already)."""
    if is_gpu(x._meta):
        return x
    cp, cpsp = _cupy()  # here, so that a missing CuPy fails now and not at compute time
    shape = (0, *x.shape[1:])  # no rows, every column (blocks hold whole rows)
    meta = cpsp.csr_matrix(shape, dtype=x.dtype) if is_sparse(x._meta) else cp.empty(shape, dtype=x.dtype)
    return x.map_blocks(_gpu_block, dtype=x.dtype, meta=meta)


def _cpu_block(block):
    return block.get() if is_gpu(block) else block


def _to_cpu_dask(x):
    """A lazy Dask array of `x`'s blocks on the host (unchanged if they are there already)."""
    if not is_gpu(x._meta):
        return x
    meta = x._meta.get()  # an empty scipy / numpy counterpart of the cupyx / cupy meta
    return x.map_blocks(_cpu_block, dtype=x.dtype, meta=meta)


def _move(adata: AnnData, fn, copy: bool) -> AnnData | None:
    if copy:
        adata = adata.copy()
    elif adata.is_view:
        adata._init_as_actual(adata.copy())
    adata.X = fn(adata.X)
    for key in list(adata.layers):
        adata.layers[key] = fn(adata.layers[key])
    for key in list(adata.obsm):
        adata.obsm[key] = fn(adata.obsm[key])
    return adata if copy else None


def to_gpu(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Move X, layers and obsm arrays to the GPU (cupy arrays, cupyx CSR/CSC matrices).

    COO matrices become CSR. A Dask array is mapped lazily, block by block: scipy sparse
    blocks become cupyx CSR (CSC and COO are converted), numpy blocks cupy arrays; nothing is
    computed or copied until the array is. Returns the moved copy when ``copy``, else works in
    place.
    """
    return _move(adata, _to_gpu_array, copy)


def to_cpu(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Move X, layers and obsm arrays back to the host (numpy arrays, scipy sparse matrices).

    A Dask array is mapped lazily, each block brought back with ``.get()`` when computed.
    Returns the moved copy when ``copy``, else works in place.
    """
    return _move(adata, _to_cpu_array, copy)


def is_on_gpu(adata: AnnData) -> bool:
    """True when X lives on the GPU."""
    return is_gpu(adata.X)
