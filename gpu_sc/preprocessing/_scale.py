"""scale: unit variance (and zero mean) per gene, like scanpy."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .. import _ops
from .._backend import blocks_like, is_dask, is_gpu, is_sparse, sparse_format, sparse_module, to_host, xp_of
from .._ops._chunked import Chunked, row_columns
from .._ops._layout import row_bands, stored_bands, value_rows
from .._settings import settings, user_stacklevel
from .._validation import canonical, get_matrix, make_actual, old_positionals, scanpy_mask, set_matrix

_STEP = "scale"


@old_positionals("zero_center", "max_value", "copy", "layer", "obsm")
def scale(
    data,
    *,
    zero_center: bool = True,
    max_value: float | None = None,
    copy: bool = False,
    layer: str | None = None,
    obsm: str | None = None,
    mask_obs=None,
    return_mean_std: bool = False,
):
    """Scale every gene to unit variance and (by default) zero mean, like :func:`scanpy.pp.scale`.

    Statistics are per gene (column) in float64: the mean and the standard deviation with
    ``ddof=1``; genes with zero standard deviation are divided by 1 (so, zero-centred, they
    become 0). Runs where the matrix lives (numpy/scipy on the CPU, cupy/cupyx on the GPU).

    Parameters
    ----------
    data
        An AnnData, or a matrix (numpy / scipy sparse / cupy / cupyx sparse) of cells x genes.
    zero_center
        Subtract the mean. Sparse input then becomes dense (float64, with a warning, as in
        scanpy). ``False`` divides by the standard deviation only and keeps sparse input sparse
        and in its float dtype, on both backends, as CSR (as every gpu_sc step writes; scanpy
        returns float64 CSC for CSC input there).
    max_value
        Clip the scaled values to at most `max_value` (and, when zero-centring, at least
        ``-max_value``); a positive number (else ValueError). ``None``: no clipping.
    copy
        Work on a copy: of the AnnData (returned), or of the matrix.
    layer, obsm
        Scale ``adata.layers[layer]`` or ``adata.obsm[obsm]`` instead of ``X``.
    mask_obs
        Boolean array over cells, or the name of a boolean ``adata.obs`` column: compute the
        statistics on those cells only and scale only those cells (the others stay as they are).
    return_mean_std
        For a matrix: return ``(scaled, mean, std)``, the genes' statistics as host float64
        arrays, as scanpy's ``scale_array`` does (an AnnData gets them in ``var``).

    Returns
    -------
    For a matrix: the scaled matrix, which is the matrix passed, scaled in place, as scanpy
    does, unless ``copy`` or where scanpy returns a new one too (integers give float64, a sparse
    matrix centred a dense one, a CSC a CSR unless masked rows are centred, a Dask array a lazy
    one). For an AnnData: the copy when ``copy``, else ``None``;
    sets

    ``adata.X`` | ``adata.layers[layer]`` | ``adata.obsm[obsm]``
        The scaled matrix (integers become float64; CSC becomes CSR).
    ``adata.var['mean']``, ``adata.var['std']``
        Mean and standard deviation (float64) per gene before scaling. With `mask_obs` the
        columns are ``'mean of {name}'`` / ``'std of {name}'`` for an obs column name, else
        ``'mean with mask'`` / ``'std with mask'``.

    A Dask array chunked by rows (blocks of scipy / cupyx CSR or numpy / cupy arrays, every
    gene in one column chunk) is scaled lazily: the mean and standard deviation are computed
    at once (block by block), the result is a Dask array with the same row chunks whose
    blocks follow the in-memory rules (sparse blocks become dense float64 when zero-centred,
    stay sparse otherwise or when only `mask_obs` rows are centred), and it computes to the
    in-memory result.
    """
    if max_value is not None and not (isinstance(max_value, Real) and max_value > 0):
        msg = (f"{_STEP}: max_value must be a positive number (the clip is [-max_value, max_value]) "
               f"or None, got {max_value!r}.")  # fmt: skip
        raise ValueError(msg)
    if not isinstance(data, AnnData):
        if layer is not None or obsm is not None:
            msg = f"{_STEP}: `layer` and `obsm` need an AnnData, got {type(data).__name__}."
            raise ValueError(msg)
        _log_notes(data, zero_center=zero_center, max_value=max_value)  # scanpy's precede its mask error
        if isinstance(mask_obs, str):
            msg = (f"{_STEP}: Cannot refer to mask with string without providing anndata object as "
                   f"argument (mask_obs={mask_obs!r}); pass a boolean array, or the AnnData.")  # scanpy's words
            raise ValueError(msg)
        x = _prepare(data, copy=copy)
        mask = None if mask_obs is None else scanpy_mask(mask_obs, x.shape[0], what="mask_obs", step=_STEP)
        out, mean, std = _scale_matrix(x, zero_center=zero_center, max_value=max_value, mask=mask)
        if copy:
            out = _masked_csc_kept(data, out, mask, zero_center=zero_center)
        else:
            out = _into_given(data, out, csc_in_place=mask is not None and zero_center)
        return (out, to_host(mean), to_host(std)) if return_mean_std else out
    if return_mean_std:  # scanpy's AnnData scale takes no such keyword
        msg = (f"{_STEP}: return_mean_std takes a matrix (scanpy's scale_array); an AnnData gets the "
               "statistics in var['mean'] and var['std'].")  # fmt: skip
        raise TypeError(msg)

    adata = data.copy() if copy else data
    keys = (K.VAR_SCALE_MEAN, K.VAR_SCALE_STD)
    mask = None
    if mask_obs is not None:
        if isinstance(mask_obs, str):
            if mask_obs not in adata.obs.columns:
                msg = (f"{_STEP}: Did not find `adata.obs[{mask_obs!r}]`. Either add the mask first to `adata.obs` "
                       f"or consider using the mask argument with an array (mask_obs {mask_obs!r} is not a "
                       "column of adata.obs).")  # scanpy's words and type
                raise ValueError(msg)
            keys = K.scale_mask_keys(mask_obs)
            mask = scanpy_mask(adata.obs[mask_obs].to_numpy(), adata.n_obs, what="mask_obs", step=_STEP)
        else:
            keys = K.scale_mask_keys(None)
            mask = scanpy_mask(mask_obs, adata.n_obs, what="mask_obs", step=_STEP)
    x0 = get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)
    if x0.shape[1] != adata.n_vars:
        msg = (
            f"{_STEP}: obsm {obsm!r} has {x0.shape[1]} columns but adata has {adata.n_vars} genes, "
            "so its statistics cannot be stored in adata.var; scale the array directly instead."
        )
        raise ValueError(msg)
    make_actual(adata, warn=True)  # scanpy's warning (its tests match "view")
    x0 = get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)
    _log_notes(x0, zero_center=zero_center, max_value=max_value)
    x = _prepare(x0, copy=False)
    x, mean, std = _scale_matrix(x, zero_center=zero_center, max_value=max_value, mask=mask)
    set_matrix(adata, _masked_csc_kept(x0, x, mask, zero_center=zero_center), layer=layer, obsm=obsm)
    adata.var[keys[0]] = to_host(mean)
    adata.var[keys[1]] = to_host(std)
    return adata if copy else None


def _masked_csc_kept(data, out, mask, *, zero_center: bool):
    """`out` as CSC where `data` is a CSC whose masked rows were centred: scanpy writes those rows
    into the CSC it holds, so a copy or an AnnData's X stays CSC (ours works on CSR)."""
    masked_csc = mask is not None and zero_center and is_sparse(data) and sparse_format(data) == "csc"
    return out.tocsc() if masked_csc and is_sparse(out) else out


def _into_given(data, out, *, csc_in_place: bool):
    """`out` written into the matrix the caller passed, where scanpy scales that matrix in place
    and ours worked on another object: a copy in our layout (F-ordered or strided dense; CSR with
    duplicate entries; CSC when `csc_in_place`: masked rows centred, where scanpy writes into a
    CSC) or a new CSR (centred masked rows), so that a caller who keeps its matrix
    (``scale(adata.layers['L'])``) sees the result. `out` itself where scanpy returns a new
    matrix too: integers (float64), a sparse matrix centred into a dense one, a CSC otherwise
    (scanpy converts it), Dask."""
    native = data.dtype.newbyteorder("=")  # a big-endian X was scaled in a native copy: written back
    if out is data or is_dask(data) or out.dtype != native or is_sparse(out) != is_sparse(data):
        return out
    if is_sparse(data):
        fmt = sparse_format(data)
        if fmt != "csr" and not (fmt == "csc" and csc_in_place):
            return out
        given = out if fmt == "csr" else out.tocsc()
        data.data, data.indices, data.indptr = given.data, given.indices, given.indptr
        return data
    data[...] = out
    return data


def _log_notes(x, *, zero_center: bool, max_value) -> None:
    """scanpy's two info lines on the arguments, in its order."""
    if not zero_center and max_value is not None:
        settings.log("... be careful when using `max_value` without `zero_center`.")
    if np.issubdtype(getattr(x, "dtype", object), np.integer):  # (what is not a matrix is refused next)
        settings.log("... as scaling leads to float results, integer input is cast to float, returning copy.")


def _prepare(x, *, copy: bool):
    """CSR or C-contiguous dense with float values; a copy when asked or when the layout changes."""
    # 0 cells or 0 genes: scanpy's no-op (NaN statistics for 0 cells); duplicates summed (squares)
    x1 = canonical(x, step=_STEP, sum_duplicates=True)
    if x1.dtype.kind != "f":
        if x1.dtype.kind not in "iubf":
            msg = f"{_STEP}: expects a numeric matrix, got dtype {x1.dtype}."
            raise TypeError(msg)
        return x1.astype(np.float64)  # scanpy casts integers to float64
    return x1.copy() if copy and x1 is x else x1


def _scale_matrix(x, *, zero_center: bool, max_value, mask):
    """Scale `x` (CSR or dense, float; or a row-chunked Dask array of such blocks) in place
    where possible; return (result, mean, std)."""
    mean, std = _mean_std(x, mask)
    sparse = is_sparse(blocks_like(x))
    if sparse and zero_center:
        warnings.warn("zero-centering a sparse array/matrix densifies it.", UserWarning, stacklevel=user_stacklevel())
    kw = dict(mean=mean, std=std, zero_center=zero_center, max_value=max_value)
    if is_dask(x):
        return _scale_dask(x, mask, sparse=sparse, **kw), mean, std
    if sparse and zero_center:
        return _centred_sparse(x, mask, **kw), mean, std
    fn = _divide_stored if sparse else _centre_dense
    fn(_ops.parts(x), *(() if mask is None else (mask,)), **kw)
    return x, mean, std


def _mean_std(x, mask):
    """Mean and standard deviation (ddof=1; 0 replaced by 1) per gene of the rows in `mask`."""
    rows = None if mask is None else np.flatnonzero(mask)
    if rows is None:
        sub = x
    elif is_dask(x):
        sub = Chunked(x).take_rows(rows)
    else:
        sub = x[xp_of(x).asarray(rows)]
        sub = sub.tocsr() if is_sparse(sub) else xp_of(sub).ascontiguousarray(sub)
    mean, var = _ops.col_mean_var(_ops.parts(sub), ddof=1)
    xp = xp_of(mean)
    mean, var = xp.asarray(mean), xp.asarray(var)
    std = xp.sqrt(var)
    std[std == 0] = 1
    return mean, std


def _scale_dask(x, mask, *, sparse: bool, **kw):
    """The lazy scaled Dask array: blocks that keep their kind go through `Chunked.update`
    (on a copy of each block), sparse blocks that become dense through map_blocks."""
    import dask.array as da

    per_row = () if mask is None else (mask,)
    if not (sparse and kw["zero_center"]):
        return Chunked(x).update(_scaled_block, per_row=per_row, **kw)
    columns = row_columns(x, per_row)
    # without a mask every block becomes dense float64; with one the block stays sparse (only
    # its masked rows are filled in), as in memory
    meta = xp_of(x._meta).empty((0, 0), dtype=np.float64) if mask is None else x._meta.tocsr()
    dtype = np.dtype(np.float64) if mask is None else x.dtype
    return da.map_blocks(_centred_sparse_block, x, *columns, dtype=dtype, meta=meta, **kw)


def _scaled_block(p, *mask, **kw) -> None:
    """A Dask block in place, by what it holds: a block may be sparse where the array's meta
    says dense (map_blocks that could not infer it), and stored values are then divided as long
    as nothing is centred."""
    if p.dense:
        _centre_dense(p, *mask, **kw)
    elif not kw["zero_center"]:
        _divide_stored(p, *mask, **kw)
    else:
        msg = (f"{_STEP}: a block of the Dask array is sparse where the array's meta is dense, so the "
               "zero-centred (dense) result cannot be made block by block; give map_blocks/from_array the "
               "blocks' kind (meta=scipy.sparse.csr_matrix((0, 0), dtype=...)) or pass zero_center=False.")  # fmt: skip
        raise TypeError(msg)


_GPU_DENSE_BAND = 1 << 26  # values densified at a time on the GPU (512 MiB of float64)


def _divide_stored(p, *mask, mean, std, zero_center, max_value) -> None:
    """Sparse without centring, in place: stored values / std[column], clipped at max_value
    (of the rows in `mask` only, when given); the matrix stays sparse in its dtype."""
    xp = xp_of(p.data)
    rows = None if not mask else xp.asarray(mask[0])
    # a band of stored values at a time: the float64 temporaries are a band's, not 3 x the matrix's
    for band in stored_bands(p.data.size):
        scaled = (p.data[band].astype(np.float64) / std[p.indices[band]]).astype(p.data.dtype)
        if max_value is not None:
            xp.minimum(scaled, p.data.dtype.type(max_value), out=scaled)
        if rows is None:
            p.data[band] = scaled
            continue
        in_mask = rows[value_rows(p.indptr, band)]
        p.data[band] = xp.where(in_mask, scaled, p.data[band])


def _centre_dense(p, *mask, mean, std, zero_center, max_value) -> None:
    """Dense, in place: every row, or the rows in `mask` only."""
    x = p.data.reshape(p.shape)
    if not mask:
        _center_divide_clip(x, mean, std, zero_center=zero_center, max_value=max_value)
        return
    xp = xp_of(x)
    rows = xp.asarray(np.flatnonzero(mask[0]))
    dense = xp.ascontiguousarray(x[rows])
    _center_divide_clip(dense, mean, std, zero_center=zero_center, max_value=max_value)
    x[rows] = dense


def _centred_sparse(x, mask, *, mean, std, zero_center, max_value):
    """Sparse CSR with zero-centring: dense float64; with `mask` the masked rows are filled in
    and the matrix stays sparse in its dtype (scanpy assigns the dense block into it)."""
    xp = xp_of(x)
    rows = None if mask is None else xp.asarray(np.flatnonzero(mask))
    sub = x if rows is None else x[rows]
    if is_gpu(sub):  # scanpy: sparse - mean gives float64
        # densified band by band into one C-ordered float64 array: cupyx's toarray makes an
        # F-ordered array and then its C-ordered copy, twice the result at the peak
        dense = xp.empty(sub.shape, dtype=np.float64)
        for band in row_bands(sub.shape, _GPU_DENSE_BAND):
            dense[band] = sub[band].astype(np.float64).toarray()
        _center_divide_clip(dense, mean, std, zero_center=zero_center, max_value=max_value)
    else:  # one fused pass instead of densify, cast, centre, divide, clip
        dense = _ops.scaled_dense(_ops.parts(sub), mean, std, zero_center=zero_center,
                                  max_value=max_value)  # fmt: skip
    if rows is None:
        return dense
    spm = sparse_module(x)
    others = xp.asarray(np.flatnonzero(~mask))
    # every entry of the centred rows stored, zeros too, as scanpy's assignment into the matrix does
    n, m = dense.shape
    idx = np.int32 if n * m < 2**31 else np.int64  # the index width the constructor would keep
    indptr = xp.arange(0, n * m + 1, m, dtype=idx) if m else xp.zeros(n + 1, dtype=idx)  # no genes: empty rows
    filled = spm.csr_matrix((dense.astype(x.dtype).ravel(), xp.tile(xp.arange(m, dtype=idx), n), indptr),
                            shape=(n, m))  # fmt: skip
    stacked = spm.vstack([filled, x[others]]).tocsr()
    order = xp.empty(x.shape[0], dtype=np.int64)
    order[rows] = xp.arange(rows.size)
    order[others] = rows.size + xp.arange(others.size)
    return stacked[order]


def _centred_sparse_block(block, *column, **kw):
    """`_centred_sparse` of one Dask block (a new array: the block itself is not changed)."""
    if not is_sparse(block):
        msg = (f"{_STEP}: a block of the Dask array is dense where the array's meta is sparse; give "
               "map_blocks/from_array the blocks' kind (meta=numpy.empty((0, 0), dtype=...), or cupy.empty "
               "for GPU blocks).")  # fmt: skip
        raise TypeError(msg)
    if sparse_format(block) != "csr":
        block = block.tocsr()
    # a block's duplicate entries summed first: the fused densify assigns each stored value, so
    # the last of a duplicate pair won (up to 5.2 off on pbmc)
    return _centred_sparse(_ops.summed_duplicates(block), column[0][:, 0] if column else None, **kw)


def _center_divide_clip(x, mean, std, *, zero_center: bool, max_value) -> None:
    """In place on a dense array, each step rounded to x's dtype as scanpy's in-place ufuncs do."""
    xp = xp_of(x)
    if zero_center:
        xp.subtract(x, mean, out=x)
    xp.divide(x, std, out=x)
    if max_value is not None:
        if zero_center:
            xp.clip(x, -max_value, max_value, out=x)
        else:
            xp.minimum(x, max_value, out=x)
