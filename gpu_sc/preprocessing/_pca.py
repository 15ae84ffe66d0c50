"""pca: principal components with implicit centring (sparse input is never densified), like scanpy."""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from .. import _keys, _ops
from .._backend import is_gpu, is_sparse, to_host, xp_of
from .._ops import gram as _gram
from ._checks import canonical, check_not_empty, float_values, get_matrix, host_bool_mask, make_actual

_STEP = "pca"
_N_PCS = 50  # scanpy's settings.N_PCS
#: above this many genes the covariance matrix is not formed; a randomized subspace iteration
#: on the implicitly centred operator is used instead
WIDE_GENES = 8000
_EMPTY = object()

_SOLVERS = {None, "arpack", "randomized", "auto", "full", "covariance_eigh", "tsqr", "lobpcg"}


def pca(
    data,
    n_comps: int | None = None,
    *,
    layer: str | None = None,
    zero_center: bool = True,
    svd_solver: str | None = None,
    random_state=0,
    mask_var=_EMPTY,
    use_highly_variable: bool | None = None,
    dtype="float32",
    key_added: str | None = None,
    copy: bool = False,
    chunked: bool = False,
    chunk_size: int | None = None,
    return_info: bool = False,
):
    """Principal component analysis, like :func:`scanpy.pp.pca`.

    Computed where the data lives (numpy/scipy: CPU; cupy/cupyx: GPU), in float64.
    ``zero_center=True``: the covariance matrix C = (X^T X - n mu mu^T) / (n - 1) is accumulated
    over row blocks (each expanded to a dense float64 block of at most 64 MB and multiplied by
    BLAS / cuBLAS; sparse X is never densified in full, nor centred), then `eigh` gives the
    leading components; the embedding is X V - mu^T V, computed block by block. With more than
    ``WIDE_GENES`` (8000) genes, C is not formed: a randomized subspace iteration with
    Rayleigh-Ritz on the implicitly centred operator (one pass over X per iteration, run to
    convergence) finds the leading eigenpairs; when there are also at most 8000 cells, the
    small cell-side matrix A A^T (A the implicitly centred X) is formed block by block and
    decomposed instead (exact). ``zero_center=False``: the same on X^T X, i.e. a
    truncated SVD of X. Means and variances come from ``gpu_sc._ops.col_mean_var``.

    Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``, which every scanpy path
    uses (sklearn PCA with 'arpack'/'covariance_eigh'/'full'/'randomized', TruncatedSVD, and
    scanpy's own sparse arpack/lobpcg path with scikit-learn >= 1.5): in each component the
    loading of largest absolute value is positive.

    `svd_solver` names map to ours: every name is accepted and gives the same (exact, up to
    round-off) answer: 'arpack', 'lobpcg', 'covariance_eigh', 'full', 'tsqr', 'auto' and
    ``None`` use the covariance eigendecomposition (or the subspace iteration for wide
    matrices); 'randomized' forces the subspace iteration. `random_state` seeds it.
    `chunked`/`chunk_size`: the computation is always blocked; `chunk_size` sets the rows per
    block (scanpy's incremental PCA gives the same components up to round-off; unlike it,
    `zero_center` is honoured). ``zero_center=False`` is exact: scanpy's default there is a
    5-iteration randomized TruncatedSVD, so it agrees with ours closely only for the leading
    components; with ``svd_solver='arpack'`` scanpy agrees on all of them.

    Parameters
    ----------
    data
        AnnData, or a matrix (numpy / scipy sparse / cupy / cupyx sparse), cells x genes.
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
    if svd_solver not in _SOLVERS:
        msg = f"{_STEP}: unknown svd_solver {svd_solver!r}; choose one of {sorted(s for s in _SOLVERS if s)} or None."
        raise ValueError(msg)
    if layer is not None and chunked:
        msg = f"{_STEP}: cannot use `layer` and `chunked` at the same time."
        raise NotImplementedError(msg)
    if chunked and chunk_size is None:
        msg = f"{_STEP}: chunked=True needs chunk_size."
        raise ValueError(msg)
    is_adata = isinstance(data, AnnData)
    if is_adata:
        adata = data
        x0 = get_matrix(adata, layer=layer, step=_STEP)
        var = adata.var
    else:
        if layer is not None:
            msg = f"{_STEP}: `layer` needs an AnnData, got {type(data).__name__}."
            raise ValueError(msg)
        adata, x0, var = None, data, None
    mask_param, mask = _handle_mask_var(var, mask_var, use_highly_variable, n_vars=x0.shape[1])

    x = canonical(x0, step=_STEP)
    check_not_empty(x, step=_STEP)
    if x.dtype.kind not in "iubf":
        msg = f"{_STEP}: expects a numeric matrix, got dtype {x.dtype}."
        raise TypeError(msg)
    out_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    x = float_values(x)  # integers and bools: float64, as scikit-learn does
    if mask is not None:
        x = x[:, _on_device(mask, x)]
        x = canonical(x, step=_STEP)
    n_obs, n_vars = x.shape
    if n_comps is None:
        min_dim = min(n_obs, n_vars)
        n_comps = min_dim - 1 if min_dim <= _N_PCS else _N_PCS
    n_comps = int(n_comps)
    limit = min(n_obs, n_vars)
    if not 1 <= n_comps < limit:
        msg = (
            f"{_STEP}: n_comps={n_comps} must be at least 1 and strictly less than "
            f"min(n_cells, n_genes)={limit} (after mask_var)."
        )
        raise ValueError(msg)

    p = _ops.parts(x)
    xp = xp_of(p.data)
    mean, gene_var = _ops.col_mean_var(p, ddof=1)
    mean = xp.asarray(mean)
    step_rows = chunk_size if chunked or chunk_size is not None else None
    wide = n_vars > WIDE_GENES or svd_solver == "randomized"
    centre = mean if zero_center else None
    if wide and n_obs <= WIDE_GENES and svd_solver != "randomized":
        evals, v = _cell_side_eigh(p, n_comps, centre, step_rows)
    elif wide:
        evals, v = _subspace_eigh(p, n_comps, centre, random_state, step_rows)
    else:
        g = _gram.gram(p, step_rows)
        if zero_center:
            g -= n_obs * xp.outer(mean, mean)
        g /= max(n_obs - 1, 1)
        w, vecs = xp.linalg.eigh(g)
        evals, v = w[::-1][:n_comps], vecs[:, ::-1][:, :n_comps]
    evals = xp.maximum(evals, 0)  # round-off below zero, as scikit-learn clips
    v = _flip_signs(xp.ascontiguousarray(v))
    offset = None if centre is None else centre @ v
    x_pca = _gram.project(p, v, offset, step_rows)

    if zero_center:
        variance = evals
        total = float(xp.sum(xp.asarray(gene_var)))
    else:  # sklearn TruncatedSVD: ddof-0 variance of the embedding over ddof-0 total variance
        variance = x_pca.var(axis=0)
        total = float(xp.sum(xp.asarray(gene_var))) * (n_obs - 1) / n_obs
    ratio = variance / total if total > 0 else variance * np.nan
    variance_h = to_host(variance).astype(out_dtype)
    ratio_h = to_host(ratio).astype(out_dtype)
    x_pca = x_pca.astype(dtype)
    components = v.T.astype(out_dtype)  # (n_comps, n_genes used)

    if not is_adata:
        if return_info:
            return x_pca, components, ratio_h, variance_h
        return x_pca

    adata = adata.copy() if copy else adata
    make_actual(adata)  # writing into a view must not reach its parent
    key_obsm, key_varm, key_uns = (
        (_keys.OBSM_PCA, _keys.VARM_PCS, _keys.UNS_PCA) if key_added is None else (key_added,) * 3
    )
    if mask is not None:
        loadings = xp.zeros((adata.n_vars, n_comps), dtype=np.float64)
        loadings[_on_device(mask, p.data)] = components.T
    else:
        loadings = xp.ascontiguousarray(components.T)
    params = {
        "zero_center": zero_center,
        "use_highly_variable": isinstance(mask_param, str) and mask_param == _keys.VAR_HIGHLY_VARIABLE,
        "mask_var": mask_param,
    }
    if layer is not None:
        params["layer"] = layer
    adata.obsm[key_obsm] = x_pca
    adata.varm[key_varm] = loadings
    adata.uns[key_uns] = {"params": params, "variance": variance_h, "variance_ratio": ratio_h}
    return adata if copy else None


def _on_device(mask: np.ndarray, like):
    """A host bool mask as an index usable on `like`'s device (cupyx wants integer indices)."""
    if is_gpu(like):
        import cupy as cp

        return cp.asarray(np.flatnonzero(mask)) if is_sparse(like) else cp.asarray(mask)
    return mask


def _handle_mask_var(var, mask_var, use_highly_variable, *, n_vars: int):
    """(mask parameter as scanpy stores it, host bool mask or None), scanpy's rules."""
    hvg = _keys.VAR_HIGHLY_VARIABLE
    if use_highly_variable is not None and mask_var is not _EMPTY:
        msg = f"{_STEP}: use_highly_variable and mask_var are incompatible; use mask_var only."
        raise ValueError(msg)
    has_hvg = var is not None and hvg in var.columns
    if use_highly_variable or (use_highly_variable is None and mask_var is _EMPTY and has_hvg):
        mask_var = hvg
    if mask_var is _EMPTY or mask_var is None:
        return None, None
    if isinstance(mask_var, str):
        if var is None or mask_var not in var.columns:
            msg = f"{_STEP}: mask_var {mask_var!r} is not a column of adata.var."
            raise KeyError(msg)
        return mask_var, host_bool_mask(var[mask_var].to_numpy(), n_vars, what="mask_var", step=_STEP)
    return mask_var, host_bool_mask(mask_var, n_vars, what="mask_var", step=_STEP)


def _flip_signs(v):
    """Each column (component over genes) gets its largest-|value| entry positive (first wins)."""
    xp = xp_of(v)
    idx = xp.argmax(xp.abs(v), axis=0)
    signs = xp.sign(v[idx, xp.arange(v.shape[1])])
    signs[signs == 0] = 1
    return v * signs


def _cell_side_eigh(p, k: int, mean, chunk_size):
    """Top-k eigenpairs of C = A^T A / (n - 1) through the small cell-side matrix A A^T
    (A = X - 1 mean^T implicitly; mean None: A = X), for few cells and many genes."""
    xp = xp_of(p.data)
    n_obs = p.shape[0]
    kk = _gram.cell_gram(p, chunk_size)
    if mean is not None:  # A A^T = X X^T - r 1^T - 1 r^T + (mu.mu) 1 1^T with r = X mu
        r = _gram.project(p, mean[:, None], None, chunk_size)[:, 0]
        kk -= r[:, None]
        kk -= r[None, :]
        kk += float(mean @ mean)
    w, u = xp.linalg.eigh((kk + kk.T) / 2)
    w, u = xp.maximum(w[::-1][:k], 0), xp.ascontiguousarray(u[:, ::-1][:, :k])
    v = _gram.transpose_apply(p, u, chunk_size)  # A^T u = X^T u - mu (1^T u)
    if mean is not None:
        v -= xp.outer(mean, u.sum(axis=0))
    s = xp.sqrt(w)
    v /= xp.where(s > 0, s, 1)
    return w / max(n_obs - 1, 1), v


def _subspace_eigh(p, k: int, mean, random_state, chunk_size, *, tol: float = 1e-10, max_iter: int = 300):
    """Top-k eigenpairs of C = A^T A / (n - 1), A = X - 1 mean^T (mean None: A = X), by
    randomized subspace iteration with Rayleigh-Ritz, without forming C or densifying X."""
    xp = xp_of(p.data)
    n_obs, n_vars = p.shape
    b = min(n_vars, k + max(10, k))
    seed = random_state if isinstance(random_state, int | np.integer) or random_state is None else 0
    rng = np.random.default_rng(seed)
    q, _ = xp.linalg.qr(xp.asarray(rng.standard_normal((n_vars, b))))
    scale = 1.0 / max(n_obs - 1, 1)
    prev = None
    for _ in range(max_iter):
        y = _gram.centred_normal_apply(p, q, mean, chunk_size) * scale
        t = q.T @ y
        w, s = xp.linalg.eigh((t + t.T) / 2)
        top, s = w[::-1][:k], s[:, ::-1][:, :k]
        ritz = q @ s
        if prev is not None and float(xp.max(xp.abs(top - prev))) <= tol * float(abs(top[0])):
            resid = y @ s - ritz * top
            if float(xp.max(xp.linalg.norm(resid, axis=0))) <= 1e-6 * float(abs(top[0])):
                break
        prev = top
        q, _ = xp.linalg.qr(y)
    else:
        warnings.warn(
            f"{_STEP}: the subspace iteration did not converge in {max_iter} passes; the trailing "
            "components may be inaccurate.",
            RuntimeWarning,
            stacklevel=3,
        )
    return top, ritz
