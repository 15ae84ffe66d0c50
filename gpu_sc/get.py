"""Moving an AnnData's matrices between host and GPU: the only place data changes device.

X, every layer and every array in obsm move; obs, var, uns and DataFrames in obsm stay on the
host (they are metadata, and `write_h5ad` needs them there).
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._backend import is_gpu


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
    if x is None or is_gpu(x) or not (sp.issparse(x) or isinstance(x, np.ndarray)):
        return x
    cp, cpsp = _cupy()
    if sp.issparse(x):
        if x.format == "csc":
            return cpsp.csc_matrix(x)
        return cpsp.csr_matrix(x if x.format == "csr" else x.tocsr())
    return cp.asarray(np.asarray(x))


def _to_cpu_array(x):
    if not is_gpu(x):
        return x
    return x.get()  # cupy and cupyx sparse both give their numpy / scipy counterpart


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

    COO matrices become CSR. Returns the moved copy when ``copy``, else works in place.
    """
    return _move(adata, _to_gpu_array, copy)


def to_cpu(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Move X, layers and obsm arrays back to the host (numpy arrays, scipy sparse matrices).

    Returns the moved copy when ``copy``, else works in place.
    """
    return _move(adata, _to_cpu_array, copy)


def is_on_gpu(adata: AnnData) -> bool:
    """True when X lives on the GPU."""
    return is_gpu(adata.X)
