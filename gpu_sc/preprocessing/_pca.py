"""pca: principal components with implicit centring (sparse input is never densified), like scanpy."""

from __future__ import annotations

import functools
import re
import warnings
from importlib import metadata

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .. import _ops
from .._backend import blocks_like, describe, is_dask, is_gpu, is_sparse, to_host, xp_of
from .._ops import Chunked, eigh, gram
from .._settings import DEBUG, default_n_pcs, settings, user_stacklevel
from .._validation import (EMPTY, canonical, check_finite, check_in_memory, check_int, check_not_empty, get_matrix,
                           handle_mask_var, make_actual)  # fmt: skip
from .._values import float_values

_STEP = "pca"
#: above this many genes the covariance matrix is not formed: the cell-side matrix is
#: decomposed when there are at most this many cells (and fewer cells than genes, at any width),
#: else a randomized block Krylov solver works on the implicitly centred operator
WIDE_GENES = 8000
_CHUNK_ROWS = 6000  # chunked=True without chunk_size: anndata's chunked_X default, as scanpy

_SOLVERS = {None, "arpack", "randomized", "auto", "full", "covariance_eigh", "tsqr", "lobpcg"}
# the implementations scanpy 1.11 hands `svd_solver` to, as its warnings name them
_SK_PCA = "sklearn.decomposition._pca.PCA"
_SK_TSVD = "sklearn.decomposition._truncated_svd.TruncatedSVD"
_DML_PCA = "dask_ml.decomposition.pca.PCA"
_DML_IPCA = "dask_ml.decomposition.incremental_pca.IncrementalPCA"
_DML_TSVD = "dask_ml.decomposition.truncated_svd.TruncatedSVD"
_DML_PCA_SOLVERS = ("auto", "full", "tsqr", "randomized")


def pca(
    data,
    n_comps: int | None = None,
    *,
    layer: str | None = None,
    zero_center: bool = True,
    svd_solver: str | None = None,
    random_state=0,
    mask_var=EMPTY,
    use_highly_variable: bool | None = None,
    dtype="float32",
    key_added: str | None = None,
    copy: bool = False,
    chunked: bool = False,
    chunk_size: int | None = None,
    return_info: bool = False,
):
    """Principal component analysis, like :func:`scanpy.pp.pca`.

    Computed where the data lives (numpy/scipy: CPU; cupy/cupyx: GPU), in float64, with
    implicit centring: sparse X is never densified in full, nor centred. The solver is chosen by
    shape (see :mod:`gpu_sc._ops.eigh`): fewer cells than genes and at most ``WIDE_GENES``
    (8000) cells, the small cell-side matrix (exact); otherwise up to ``WIDE_GENES`` genes, the
    covariance matrix accumulated over row blocks and decomposed whole; more of both, a randomized block
    Krylov solver on the implicitly centred operator, stopped when every component with a
    relative eigengap of at least 1e-3 is within an angle of sin <= 3e-3 of the exact one and
    every variance within 1e-5 (relative) of an exact eigenvalue. The embedding is
    X V - mu^T V, computed block by block. ``zero_center=False``: the same on X^T X, i.e. a
    truncated SVD of X. Means and variances come from ``gpu_sc._ops.col_moments`` (with the
    covariance matrix's X^T X in the same pass).

    Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``, which every scanpy path
    uses (sklearn PCA with 'arpack'/'covariance_eigh'/'full'/'randomized', TruncatedSVD, and
    scanpy's own sparse arpack/lobpcg path with scikit-learn >= 1.5): in each component the
    loading of largest absolute value is positive.

    `svd_solver` names map to ours: every name is accepted and gives the same answer (exact, or
    within the tolerance above for the Krylov solver): 'arpack', 'lobpcg', 'covariance_eigh',
    'full', 'tsqr', 'auto' and ``None`` choose by shape as above (covariance eigendecomposition,
    cell-side eigendecomposition, or block Krylov for wide matrices with many cells);
    'randomized' forces the randomized block Krylov solver whatever the shape (with fewer genes
    than its basis needs, max(2.5 n_comps, n_comps + 24), it decomposes the small covariance
    matrix instead). `random_state` seeds its start block. scanpy's warnings come where scanpy
    gives them, in its words: a UserWarning "Ignoring svd_solver=... and using ..." for a name
    that scanpy's implementation for the input does not take (scikit-learn's PCA, dense or
    sparse, its TruncatedSVD with ``zero_center=False``, dask-ml's for Dask data), a
    FutureWarning for 'lobpcg' on sparse data, and for sparse Dask data that `random_state` and
    the solver are ignored; the result here is the same either way.
    `chunked`/`chunk_size`: the computation is always blocked; `chunk_size` sets the rows per
    block (default with `chunked`: 6,000, as scanpy). The result is the exact PCA; scanpy's
    incremental PCA only approximates it (measured on 2,500 bundled brain cells, 2,000 HVGs,
    20 components, chunk_size=300: variances off by up to 14 %, |cosine| of components 11 to
    20 with the exact ones 0.10 to 0.77; ours within 1.5e-6 of arpack), and ignores
    `zero_center`, which is honoured here. Its dtypes are kept: float64 variances, and float64
    loadings once more than one chunk is fitted (also float64 from scanpy's sparse lobpcg
    solver). ``zero_center=False`` is exact: scanpy's default there is a
    5-iteration randomized TruncatedSVD, so it agrees with ours closely only for the leading
    components; with ``svd_solver='arpack'`` scanpy agrees on all of them.

    Dask input (a Dask array chunked by rows, blocks scipy / cupyx sparse or numpy / cupy
    dense): the same solvers run over the blocks (means, covariance and products are summed
    block by block; `mask_var` selects columns lazily), and give the in-memory result up to
    round-off, except that for more than ``WIDE_GENES`` genes the block Krylov solver is used
    whatever the number of cells (the cell-side matrix needs the whole of X). The covariance
    solver reads X twice (the means with X^T X, then the embedding); Krylov once for the means,
    once per product and once for the embedding. `chunk_size`
    sets the rows per product within each Dask block. The embedding ``X_pca`` (n_cells x
    n_comps, small; neighbors needs it) is computed into memory: a numpy array, or a cupy array
    for GPU blocks, as are the loadings and variances; X stays a lazy Dask array.

    Parameters
    ----------
    data
        AnnData, or a matrix (numpy / scipy sparse / cupy / cupyx sparse, or a Dask array of
        those chunked by rows), cells x genes.
    n_comps
        Number of components; default 50, or min(n_cells, n_genes) - 1 if that is smaller.
    layer
        Use ``adata.layers[layer]`` instead of ``X``.
    zero_center
        Centre the genes (PCA); ``False`` computes a truncated SVD of X.
    svd_solver, random_state, chunked, chunk_size
        See above.
    mask_var
        Boolean array over genes or the name of a boolean ``adata.var`` column: use only those
        genes. Defaults to ``'highly_variable'`` when that column exists.
    use_highly_variable
        Deprecated in scanpy: ``True`` means ``mask_var='highly_variable'``, ``False`` none.
    dtype
        dtype of the embedding.
    key_added
        Store under ``obsm[key_added]``, ``varm[key_added]``, ``uns[key_added]`` instead.
    copy
        Work on and return a copy of the AnnData.
    return_info
        For a matrix input: also return components, variance ratio and variance.

    Returns
    -------
    For a matrix: the embedding, or ``(embedding, components (n_comps x n_genes),
    variance_ratio, variance)`` with `return_info`. For an AnnData: the copy when `copy`, else
    ``None``; sets

    ``adata.obsm['X_pca' | key_added]``
        (n_cells, n_comps) embedding in `dtype`, on the input's device.
    ``adata.varm['PCs' | key_added]``
        (n_genes, n_comps) loadings on the input's device (input float dtype; float64 and zero
        rows for genes outside `mask_var`).
    ``adata.uns['pca' | key_added]``
        ``{'params': {'zero_center', 'use_highly_variable', 'mask_var'[, 'layer']},
        'variance', 'variance_ratio'}`` (host arrays in the input float dtype;
        `use_highly_variable` is a plain bool, where scanpy stores an all-False array when
        `mask_var` is an array). For ``zero_center=False`` the variance is that of the
        embedding columns (ddof 0) and the ratio divides by the total ddof-0 variance of X, as
        scikit-learn's TruncatedSVD does.
    """
    start = settings.log("computing PCA")
    if svd_solver in ("auto", "randomized") and not chunked:  # scanpy's note on its solvers, whichever runs here
        settings.log("Note that scikit-learn's randomized PCA might not be exactly reproducible across different "
                     "computational platforms. For exact reproducibility, choose `svd_solver='arpack'`.")
    if svd_solver not in _SOLVERS:
        msg = f"{_STEP}: unknown svd_solver {svd_solver!r}; choose one of {sorted(s for s in _SOLVERS if s)} or None."
        raise ValueError(msg)
    if layer is not None and chunked:
        msg = f"{_STEP}: cannot use `layer` and `chunked` at the same time."
        raise NotImplementedError(msg)
    if chunked and chunk_size is None:
        chunk_size = _CHUNK_ROWS
    n_comps = check_int(n_comps, step=_STEP, name="n_comps", none_ok=True)
    check_int(chunk_size, step=_STEP, name="chunk_size", none_ok=True)
    rng = _random_generator(random_state)  # a bad seed is refused before any work
    if not _is_float_dtype(dtype):
        msg = f"{_STEP}: dtype is the embedding's and must be a float dtype, got {dtype!r}."
        raise ValueError(msg)
    is_adata = isinstance(data, AnnData)
    if is_adata:
        adata = data
        x0 = get_matrix(adata, layer=layer, step=_STEP)
        if chunked and layer is None and adata.isbacked:  # X on disk: read in row chunks, as Dask blocks
            x0 = _backed_rows(x0, chunk_size)
        if layer is None:  # X not in memory (backed without chunked): scanpy's words, before the mask
            check_in_memory(x0, step=_STEP, suffix=" with chunked as False")
        var = adata.var
    else:
        if layer is not None:
            msg = f"{_STEP}: `layer` needs an AnnData, got {type(data).__name__}."
            raise ValueError(msg)
        adata, x0, var = None, data, None
        if isinstance(x0, list | tuple):  # "'list' object has no attribute 'shape'" before
            msg = f"{_STEP}: expected an AnnData or a matrix, got a {type(x0).__name__}; pass numpy.asarray(data)."
            raise TypeError(msg)
        check_in_memory(x0, step=_STEP)
    mask_param, mask = handle_mask_var(var, mask_var, use_highly_variable, n_vars=x0.shape[1], step=_STEP)
    if n_comps is None:  # from the shape alone: scanpy logs it before it refuses a layer on disk
        min_dim = min(x0.shape[0], x0.shape[1] if mask is None else int(mask.sum()))
        default = default_n_pcs()
        n_comps = min_dim - 1 if min_dim <= default else default
    settings.log(f"    with {n_comps=}")
    if layer is not None:
        check_in_memory(x0, step=_STEP, suffix=" from layers")

    x = canonical(x0, step=_STEP, sum_duplicates=True)  # squares of stored values
    check_not_empty(x, step=_STEP)
    if x.dtype.kind not in "iubf":
        msg = f"{_STEP}: expects a numeric matrix, got dtype {x.dtype}."
        raise TypeError(msg)
    out_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    x = float_values(x)  # integers and bools: float64, as scikit-learn does
    if mask is not None:
        if not mask.any():
            what = f"adata.var[{mask_param!r}]" if isinstance(mask_param, str) else "the mask"
            msg = (f"{_STEP}: mask_var selects none of the {mask.size} genes ({what} is all False); pass a "
                   "mask with the genes to use (e.g. highly_variable_genes' column).")  # fmt: skip
            raise ValueError(msg)
        x = Chunked(x).take_columns(np.flatnonzero(mask)) if is_dask(x) else x[:, _on_device(mask, x)]
        x = canonical(x, step=_STEP)
    # scanpy's warnings for a solver its implementation for this input does not take (our
    # solvers take every name; see above); the name scanpy would use, for the n_comps error
    solver_name = _scanpy_solver(svd_solver, x, zero_center=zero_center, chunked=chunked, random_state=random_state)
    if not is_dask(x):  # the genes used only, as scanpy; a Dask matrix is not read an extra time
        check_finite(x, step=_STEP)
    n_obs, n_vars = x.shape
    # scanpy's IncrementalPCA takes none of these (an in-memory seed, made a RandomState, is always set)
    if chunked and (not zero_center or random_state or not is_dask(x) or svd_solver not in (None, "arpack")):
        settings.log("Ignoring zero_center, random_state, svd_solver", level=DEBUG)
    limit = min(n_obs, n_vars)
    # the solvers with which scanpy takes all components: on dense data scikit-learn's PCA with
    # 'full', 'covariance_eigh', 'randomized' or 'auto'; on sparse data only 'covariance_eigh'
    # (scanpy's sparse 'full' runs arpack, which takes one fewer); without centring its
    # TruncatedSVD unless by arpack, and chunked its IncrementalPCA
    every = svd_solver in (("covariance_eigh",) if is_sparse(blocks_like(x)) else
                           ("full", "covariance_eigh", "randomized", "auto"))  # fmt: skip
    every = every or chunked or (not zero_center and solver_name != "arpack")
    if not 1 <= n_comps < limit + every:
        # scikit-learn's words (scanpy's tests match them), with our parameter's name
        bound = "strictly less than" if n_comps == limit else "between 1 and"
        with_solver = "" if solver_name is None else f" with svd_solver={solver_name!r}"
        msg = (f"{_STEP}: n_comps={n_comps}: n_components={n_comps} must be {bound} min(n_samples, "
               f"n_features)={limit}{with_solver} (cells and genes, after mask_var).")  # fmt: skip
        raise ValueError(msg)

    p = _ops.parts(x)
    xp = p.xp
    step_rows = chunk_size if chunked or chunk_size is not None else None
    # fewer cells than genes: the smaller, cell-side matrix X X^T (2,000 HVGs of 302 cells: a
    # 302-square eigenproblem, not a 2,000-square one); it needs the whole matrix at each block,
    # so Dask takes Krylov or the covariance
    cell_side = n_obs < n_vars and n_obs <= WIDE_GENES and svd_solver != "randomized" and not isinstance(p, Chunked)
    wide = n_vars > WIDE_GENES or svd_solver == "randomized"
    if cell_side or wide:
        mean, gene_var = _ops.col_mean_var(p, ddof=1)
    else:  # the covariance: the means and X^T X in one pass (a Dask X is read once for both)
        sums, sumsq, g = gram.moments_and_gram(p, step_rows)
        mean, gene_var = _ops.mean_var(sums, sumsq, n_obs, ddof=1)
    mean = xp.asarray(mean)
    if is_dask(x) and not bool(xp.isfinite(mean).all() & xp.isfinite(xp.asarray(gene_var)).all()):
        # a Dask matrix is checked through its column statistics (no extra pass over it)
        msg = (f"{_STEP}: found non-finite values (NaN or inf) in the genes used of {describe(x)}; fix or "
               "drop those entries first.")  # fmt: skip
        raise ValueError(msg)
    centre = mean if zero_center else None
    if cell_side:
        evals, v = eigh.cell_side_eigh(p, n_comps, centre, step_rows)
    elif wide:
        evals, v, _ = eigh.krylov_eigh(p, n_comps, centre, rng, step_rows)
    else:
        evals, v = eigh.covariance_eigh(g, n_obs, n_comps, centre)
    evals = xp.maximum(evals, 0)  # round-off below zero, as scikit-learn clips
    v = _flip_signs(xp.ascontiguousarray(v))
    offset = None if centre is None else centre @ v
    x_pca = gram.project(p, v, offset, step_rows)

    if zero_center:
        variance = evals
        total = float(xp.sum(xp.asarray(gene_var)))
    else:  # sklearn TruncatedSVD: ddof-0 variance of the embedding over ddof-0 total variance
        if not chunked:  # (scanpy's chunked IncrementalPCA writes no such line)
            settings.log("    without zero-centering: \n"
                         "    the explained variance does not correspond to the exact statistical definition\n"
                         "    the first component, e.g., might be heavily influenced by different means\n"
                         "    the following components often resemble the exact PCA very closely", level=DEBUG)
        variance = x_pca.var(axis=0)
        total = float(xp.sum(xp.asarray(gene_var))) * (n_obs - 1) / n_obs
    ratio = variance / total if total > 0 else variance * np.nan
    var_dtype, pcs_dtype = _scanpy_dtypes(out_dtype, chunked=chunked, chunk_size=chunk_size, n_obs=n_obs,
                                          lobpcg_sparse=svd_solver == "lobpcg" and is_sparse(x))  # fmt: skip
    variance_h = to_host(variance).astype(var_dtype)
    ratio_h = to_host(ratio).astype(var_dtype)
    x_pca = x_pca.astype(dtype)
    components = v.T.astype(pcs_dtype)  # (n_comps, n_genes used)

    if not is_adata:
        settings.log("    finished", start=start)
        if return_info:
            return x_pca, components, ratio_h, variance_h
        return x_pca

    adata = adata.copy() if copy else adata
    make_actual(adata)  # writing into a view must not reach its parent
    key_obsm, key_varm, key_uns = K.pca_keys(key_added)
    if mask is not None:
        loadings = xp.zeros((adata.n_vars, n_comps), dtype=np.float64)
        loadings[xp.asarray(np.flatnonzero(mask))] = components.T
    else:
        loadings = xp.ascontiguousarray(components.T)
    params = {
        "zero_center": zero_center,
        "use_highly_variable": isinstance(mask_param, str) and mask_param == K.VAR_HIGHLY_VARIABLE,
        "mask_var": mask_param,
    }
    if layer is not None:
        params["layer"] = layer
    adata.obsm[key_obsm] = x_pca.compute() if adata.isbacked and is_dask(x_pca) else x_pca
    adata.varm[key_varm] = loadings
    adata.uns[key_uns] = {"params": params, "variance": variance_h, "variance_ratio": ratio_h}
    settings.log("    finished", start=start)
    log_added(key_added)
    return adata if copy else None


def log_added(key_added: str | None = None) -> None:
    """scanpy's debug lines naming the keys a PCA of an AnnData wrote."""
    key_obsm, key_varm, key_uns = K.pca_keys(key_added)
    settings.log(f"and added\n    {key_obsm!r}, the PCA coordinates (adata.obs)\n"
                 f"    {key_varm!r}, the loadings (adata.varm)\n"
                 f"    'pca_variance', the variance / eigenvalues (adata.uns[{key_uns!r}])\n"
                 f"    'pca_variance_ratio', the variance ratio (adata.uns[{key_uns!r}])", level=DEBUG)


def _on_device(mask: np.ndarray, like):
    """A host bool mask as an index usable on `like`'s device (cupyx wants integer indices)."""
    if is_gpu(like):
        import cupy as cp

        return cp.asarray(np.flatnonzero(mask)) if is_sparse(like) else cp.asarray(mask)
    return mask


class _RowReader:
    """A backed X (an h5py dataset, or anndata's sparse dataset) as what dask.array.from_array
    reads: row slices come from the file, as in-memory numpy or scipy blocks."""

    def __init__(self, ds):
        self.ds, self.shape, self.dtype, self.ndim = ds, tuple(ds.shape), np.dtype(ds.dtype), 2

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        block = self.ds[rows]
        return block if cols == slice(None) or cols == slice(0, self.shape[1], None) else block[:, cols]


def _backed_rows(ds, chunk_size):
    """`chunked=True` on a backed X: a lazy Dask array of `chunk_size`-row blocks read from the
    file, so that the exact PCA runs block by block (scanpy runs an incremental PCA there)."""
    try:
        import dask.array as da
    except ImportError as err:
        msg = f"{_STEP}: chunked=True on backed data reads the file through Dask: pip install 'dask[array]'."
        raise ImportError(msg) from err
    rows = chunk_size or _CHUNK_ROWS
    return da.from_array(_RowReader(ds), chunks=(rows, ds.shape[1]), asarray=False, fancy=False)


def _scanpy_dtypes(out_dtype, *, chunked: bool, chunk_size, n_obs: int, lobpcg_sparse: bool):
    """(dtype of the variances, dtype of the loadings) as scanpy stores them: the data's float
    dtype, except float64 from its sparse lobpcg solver, and from its incremental PCA
    (chunked) for the variances, and for the loadings once it fits more than one chunk."""
    if lobpcg_sparse:
        return np.dtype(np.float64), np.dtype(np.float64)
    if chunked:
        return np.dtype(np.float64), np.dtype(np.float64) if n_obs > chunk_size else out_dtype
    return out_dtype, out_dtype


def _scanpy_solver(svd_solver, x, *, zero_center: bool, chunked: bool, random_state) -> str | None:
    """The solver name scanpy 1.11.5 would hand to its implementation for `x` (after mask_var),
    with the warnings it gives there (same category and words; attributed to the user's line):
    "Ignoring svd_solver=... and using ..." (UserWarning) for a name that implementation
    does not take, the FutureWarning for 'lobpcg' on sparse data, and for sparse Dask data the
    notes that `random_state` and `svd_solver` are ignored. Only the warnings: every name gives
    the same (exact) result here. scikit-learn's PCA for in-memory data, its TruncatedSVD with
    ``zero_center=False``; dask-ml's for Dask data; no warning with `chunked` (scanpy's
    incremental PCA takes no solver; dask-ml's does). cupy / cupyx data: as numpy / scipy."""
    dask = is_dask(x)
    sparse = is_sparse(x._meta if dask else x)
    if chunked:
        return _supported(svd_solver, _DML_IPCA, _DML_PCA_SOLVERS, "auto") if dask else svd_solver
    if not zero_center:
        if not dask:
            return _supported(svd_solver, _SK_TSVD, ("arpack", "randomized"), "randomized")
        return svd_solver if sparse else _supported(svd_solver, _DML_TSVD, ("tsqr", "randomized"), "tsqr")
    sklearn = _sklearn_version()
    sparse_solvers = ("arpack", "covariance_eigh") if sklearn >= (1, 5) else ("arpack",)
    if dask:
        if sparse or svd_solver == "covariance_eigh":  # scanpy's own covariance solver
            if not (isinstance(random_state, int | np.integer) and random_state == 0):
                warnings.warn(f"Ignoring {random_state=} when using a sparse dask array", UserWarning,
                              stacklevel=user_stacklevel())  # fmt: skip
            if svd_solver not in {None, "covariance_eigh"}:
                warnings.warn(f"Ignoring {svd_solver=} when using a sparse dask array", UserWarning,
                              stacklevel=user_stacklevel())  # fmt: skip
            return "covariance_eigh"
        return _supported(svd_solver, _DML_PCA, _DML_PCA_SOLVERS, "auto")
    if sparse and (sklearn < (1, 4) or svd_solver == "lobpcg"):  # scanpy's own sparse arpack / lobpcg
        if svd_solver == "lobpcg":
            msg = (f"{svd_solver=} for sparse relies on legacy code and will not be supported in the future. "
                   "Also the lobpcg solver has been observed to be inaccurate. Please use 'arpack' instead.")
            warnings.warn(msg, FutureWarning, stacklevel=user_stacklevel())
            return svd_solver
        if svd_solver not in {None, *sparse_solvers}:
            msg = (f"Ignoring {svd_solver=} and using 'arpack', "
                   "sparse PCA with sklearn < 1.4 only supports 'lobpcg' and 'arpack'.")
            warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
        return "arpack"
    if sparse:
        return _supported(svd_solver, _SK_PCA, sparse_solvers, "arpack", suffix=" (with sparse input)")
    return _supported(svd_solver, _SK_PCA, ("auto", "full", "randomized", *sparse_solvers), "arpack")


def _supported(svd_solver, method: str, solvers: tuple[str, ...], default: str, *, suffix: str = "") -> str:
    """`svd_solver` when `method` takes it, else `default` (with scanpy's warning, unless None)."""
    if svd_solver in solvers:
        return svd_solver
    if svd_solver is not None:
        msg = (f"Ignoring {svd_solver=} and using {default}, "
               f"{method}{suffix} only supports {dict.fromkeys(solvers).keys()}.")  # scanpy prints dict_keys
        warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
    return default


@functools.cache
def _sklearn_version() -> tuple[int, int]:
    """scikit-learn's (major, minor): which solvers scanpy's PCA takes depends on it (newest
    when it is not installed)."""
    try:
        found = re.match(r"(\d+)\.(\d+)", metadata.version("scikit-learn"))
    except metadata.PackageNotFoundError:
        found = None
    return (int(found[1]), int(found[2])) if found else (999, 0)


def _flip_signs(v):
    """Each column (component over genes) gets its largest-|value| entry positive (first wins)."""
    xp = xp_of(v)
    idx = xp.argmax(xp.abs(v), axis=0)
    signs = xp.sign(v[idx, xp.arange(v.shape[1])])
    signs[signs == 0] = 1
    return v * signs


def _is_float_dtype(dtype) -> bool:
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def _random_generator(random_state):
    """random_state: None, a non-negative int or a numpy RandomState, as scanpy takes it; a numpy
    Generator is taken too (scanpy 1.11 refuses one)."""
    if isinstance(random_state, np.random.RandomState | np.random.Generator):
        return random_state  # both draw standard_normal
    seed = check_int(random_state, step=_STEP, name="random_state", minimum=0, none_ok=True,
                     hint=" (or a numpy RandomState / Generator)")  # fmt: skip
    return np.random.default_rng(seed)
