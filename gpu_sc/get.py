"""Moving an AnnData's matrices between host and GPU (the only place data changes device), and
scanpy's `sc.get` readers: `aggregate` (in `gpu_sc._aggregate`), `obs_df` / `var_df` (in
`gpu_sc._obs_var_df`) and `rank_genes_groups_df` (in `gpu_sc._rank_genes_groups_df`).

To the GPU: X, every layer and every array in obsm (what the steps read); obs, var, uns and
DataFrames in obsm stay on the host (they are metadata, and `write_h5ad` needs them there).
Back to the host: every array the GPU steps may have written as well (varm, obsp, varp). A Dask
array moves lazily: its blocks are converted when they are computed.

cupyx sparse matrices hold floating-point (or bool) data only, so integer counts become float32
on the way (exact below 2**24; float64 for larger in-memory values, an error in a Dask block).
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._aggregate import aggregate as aggregate  # public: gsc.get.aggregate
from ._obs_var_df import obs_df as obs_df, var_df as var_df  # public: gsc.get.obs_df, var_df
from ._rank_genes_groups_df import rank_genes_groups_df as rank_genes_groups_df  # public
from ._backend import blocks_like, is_dask, is_gpu, is_sparse
from ._settings import settings
from ._validation import check_anndata, make_actual

__all__ = ["aggregate", "obs_df", "var_df", "rank_genes_groups_df", "to_gpu", "to_cpu", "is_on_gpu"]

_EXACT_F32 = 2**24  # integers up to this magnitude are exact in float32


def __dir__() -> list[str]:  # tab completion shows the public readers, not the helpers imported here
    return sorted(__all__)


def _cupy():
    try:
        return importlib.import_module("cupy"), importlib.import_module("cupyx.scipy.sparse")
    except ImportError as e:
        msg = (
            "moving data to the GPU needs CuPy: install gpu_sc with the extra matching your CUDA "
            "('pip install \"gpu_sc[cuda13]\"' or '[cuda12]')."
        )
        raise ImportError(msg) from e


def sparse_float_dtype(x) -> np.dtype:
    """The dtype a scipy sparse matrix gets on the GPU: its own unless integer, then float32
    where every stored value is exact in it, else float64."""
    if x.dtype.kind not in "iu":
        return x.dtype
    big = x.nnz and max(abs(int(x.data.min())), abs(int(x.data.max()))) >= _EXACT_F32
    return np.dtype(np.float64 if big else np.float32)


def _float_sparse(x):
    """`x`, or its float copy when its data is integer (cupyx sparse holds no integers)."""
    dt = sparse_float_dtype(x)
    if dt == x.dtype:
        return x
    settings.info(f"to_gpu: integer sparse data ({x.dtype}) becomes {dt.name} on the GPU (cupyx "
                  "sparse matrices hold no integers; every value is exact).")
    return x.astype(dt)


def array_to_gpu(x):
    """A GPU copy of one array (numpy -> cupy, scipy sparse -> cupyx; a Dask array lazily, block
    by block); GPU arrays and anything else come back as they are."""
    if is_dask(x):
        return _to_gpu_dask(x)
    if x is None or is_gpu(x) or not (sp.issparse(x) or isinstance(x, np.ndarray)):
        return x
    cp, cpsp = _cupy()
    if sp.issparse(x):
        x = _float_sparse(x)
        if x.format == "csc":
            return cpsp.csc_matrix(x)
        return cpsp.csr_matrix(x if x.format == "csr" else x.tocsr())
    return cp.asarray(np.asarray(x))


def array_to_cpu(x):
    """`x` on the host: cupy / cupyx become numpy / scipy, a Dask array maps its blocks lazily;
    anything else is returned as it is."""
    if is_dask(x):
        return _to_cpu_dask(x)
    if not is_gpu(x):
        return x
    return x.get()  # cupy and cupyx sparse both give their numpy / scipy counterpart


def _gpu_block(block):
    """One Dask block on the GPU: scipy sparse as cupyx CSR (the layout the steps take on
    Dask blocks; integer data as float32, checked exact), dense as cupy."""
    if is_gpu(block):
        return block
    cp, cpsp = _cupy()
    if sp.issparse(block):
        if block.dtype.kind in "iu":
            if sparse_float_dtype(block) != np.float32:
                msg = (f"to_gpu: a Dask block holds integers of magnitude >= 2**24 ({block.dtype}), "
                       "which float32 cannot hold exactly; cast the array to float64 "
                       "(x.astype('float64')) before gsc.get.to_gpu.")
                raise ValueError(msg)
            block = block.astype(np.float32)
        return cpsp.csr_matrix(block if block.format == "csr" else block.tocsr())
    return cp.asarray(np.asarray(block))


def _to_gpu_dask(x):
    """A lazy Dask array of `x`'s blocks on the GPU (unchanged if they are there already)."""
    if is_gpu(x._meta):
        return x
    cp, cpsp = _cupy()  # here, so that a missing CuPy fails now and not at compute time
    shape = (0, *x.shape[1:])  # no rows, every column (blocks hold whole rows)
    if is_sparse(x._meta):
        dt = np.dtype(np.float32) if x.dtype.kind in "iu" else x.dtype  # see _gpu_block
        meta = cpsp.csr_matrix(shape, dtype=dt)
    else:
        dt = x.dtype
        meta = cp.empty(shape, dtype=dt)
    return x.map_blocks(_gpu_block, dtype=dt, meta=meta)


def _cpu_block(block):
    return block.get() if is_gpu(block) else block


def _to_cpu_dask(x):
    """A lazy Dask array of `x`'s blocks on the host (unchanged if they are there already)."""
    if not is_gpu(x._meta):
        return x
    meta = x._meta.get()  # an empty scipy / numpy counterpart of the cupyx / cupy meta
    return x.map_blocks(_cpu_block, dtype=x.dtype, meta=meta)


def _move(adata: AnnData, fn, copy: bool, mappings=("layers", "obsm")) -> AnnData | None:
    # every array is moved before any is assigned, so a failure (no CuPy, out of memory) leaves
    # adata as it was; arrays already in place are not reassigned (a view's would share the
    # parent's memory)
    sources = [(("X", None), adata.X)]
    sources += [((name, key), value) for name in mappings for key, value in getattr(adata, name).items()]
    moved = {}
    for where, value in sources:
        out = fn(value)
        if out is not value:
            moved[where] = out
    if copy:
        adata = adata.copy()
    else:
        make_actual(adata)
    for (name, key), value in moved.items():
        if name == "X":
            adata.X = value
        else:
            getattr(adata, name)[key] = value
    return adata if copy else None


def to_gpu(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Move X, layers and obsm arrays to the GPU (cupy arrays, cupyx CSR/CSC matrices).

    COO matrices become CSR; integer sparse data becomes float32 (float64 where a value is too
    large to be exact in float32; cupyx holds no integers). A Dask array is mapped lazily, block
    by block: scipy sparse blocks become cupyx CSR (CSC and COO are converted), numpy blocks
    cupy arrays; nothing is computed or copied until the array is. Returns the moved copy when
    ``copy``, else works in place.
    """
    check_anndata(adata, step="to_gpu")
    if adata.isbacked:  # X is an h5py dataset on disk; moving the rest would split the AnnData
        msg = (f"to_gpu: adata is backed (X stays in {adata.filename}); load it into memory "
               "first with adata = adata.to_memory(), or read it with dask for out-of-core work.")
        raise ValueError(msg)
    try:
        return _move(adata, array_to_gpu, copy)
    except MemoryError as err:  # cupy's OutOfMemoryError is one; adata is unchanged (_move)
        msg = (f"to_gpu: the GPU ran out of memory moving the AnnData ({_nbytes(adata) / 2**30:.1f} "
               "GiB in X, layers and obsm). Move only what the steps need (e.g. drop layers), or "
               "read X as a Dask array chunked by rows and call to_gpu on that AnnData: its blocks "
               "then reach the GPU one at a time (README, 'Data larger than memory: Dask').")
        raise MemoryError(msg) from err


def _nbytes(adata: AnnData) -> int:
    """Bytes of the in-memory arrays to_gpu moves (sparse: values, indices and pointers)."""
    arrays = [adata.X, *adata.layers.values(), *adata.obsm.values()]
    total = 0
    for a in arrays:
        if sp.issparse(a):
            total += sum(getattr(a, n).nbytes for n in ("data", "indices", "indptr", "row", "col")
                         if hasattr(a, n))
        elif isinstance(a, np.ndarray):
            total += a.nbytes
    return total


def to_cpu(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Move every array on the GPU back to the host (numpy arrays, scipy sparse matrices): X,
    layers and obsm, and what GPU steps write besides (varm['PCs'], the obsp graphs, varp).

    A Dask array is mapped lazily, each block brought back with ``.get()`` when computed.
    Returns the moved copy when ``copy``, else works in place.
    """
    check_anndata(adata, step="to_cpu")
    return _move(adata, array_to_cpu, copy, mappings=("layers", "obsm", "varm", "obsp", "varp"))


def is_on_gpu(adata: AnnData) -> bool:
    """True when X lives on the GPU (for a Dask X: its blocks)."""
    check_anndata(adata, step="is_on_gpu")
    return is_gpu(blocks_like(adata.X))
