"""regress_out: remove the linear effect of obs covariates from every gene, like scanpy.

scanpy fits one Gaussian GLM per gene (statsmodels) or, for numeric keys with a non-singular
design, solves the normal equations once. Both are least squares, so both are projections:

- numeric keys: every gene shares the design R = [1, obs[keys]], so the residual of all genes
  at once is Y - Q (Q^T Y), Q an orthonormal basis of R's columns (an SVD of the small n x p
  design on the host). Q^T Y is summed over row blocks (CSR is never densified as a whole).
- one categorical key: scanpy's regressor for a gene is its mean within the cell's category
  (stored as float32), fitted with an intercept: the residual is y - ybar - b (m - mbar), with b
  the slope of y on m, all from the per-category sums of the gene (`_ops.group_sums`, which
  sums in scanpy's order and precision on the CPU, so the means are scanpy's bit for bit; the
  GPU kernel and Dask blocks sum in another order, so their float32 means may differ by a
  rounding step).

On the CPU one Numba pass per matrix forms every residual in float64 and rounds it once; on the
GPU the same arithmetic runs in row blocks through CuPy (cuBLAS for the products).

Where scanpy takes its per-gene GLM path (a categorical key, or a singular numeric design) its
two rules are kept: a gene with one value in every cell is returned as it is, and a gene the fit
predicts perfectly (every |residual| <= 1e-8, statsmodels' perfect-prediction test) becomes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype

from .. import _ops
from .._ops import gram
from .._settings import BLOCK_BYTES, DEBUG, settings
from .._backend import describe, is_dask, is_gpu, is_sparse, sparse_module, to_host, xp_of
from .._ops._chunked import row_columns
from .._ops._layout import in_layout, row_pointers
from .._validation import (block_value_issues, canonical, check_anndata, check_finite, check_not_empty,
                           finite_obs_values, get_matrix, obs_categories, old_positionals, sanitize_anndata,
                           set_matrix, writable)

_STEP = "regress_out"
_PERFECT_FIT = 1e-8  # statsmodels' GLM: np.allclose(mu - endog, 0) flags a perfect prediction


@old_positionals("layer", "n_jobs", "copy")
def regress_out(adata: AnnData, keys, *, layer: str | None = None, n_jobs: int | None = None,
                copy: bool = False):  # fmt: skip
    """Regress out (mostly) unwanted sources of variation, like :func:`scanpy.pp.regress_out`.

    Simple linear regression of every gene on ``adata.obs[keys]`` (with an intercept), replaced
    by its residual. Runs where the matrix lives (numpy/scipy on the CPU, cupy/cupyx on the GPU)
    and gives scanpy's residuals: one least-squares projection for all genes at once instead of
    a statsmodels GLM per gene.

    Parameters
    ----------
    adata
        The annotated data matrix.
    keys
        Name(s) of ``adata.obs`` columns to regress on: numeric columns (one or several), or a
        single categorical column (string columns that repeat values count as categorical, as
        scanpy turns them into categoricals), whose per-category mean of each gene is then the
        regressor. No missing values.
    layer
        Regress ``adata.layers[layer]`` instead of ``X``.
    n_jobs
        Accepted for scanpy's signature; the work is a few matrix products, which use the
        BLAS's (or the GPU's) own threads.
    copy
        Return a corrected copy of `adata` instead of working in place.

    Returns
    -------
    ``None``, or the copy when ``copy``. Sets

    ``adata.X`` | ``adata.layers[layer]``
        The residuals, dense (sparse input is densified, as in scanpy) on the matrix's device.
        Numeric keys: in the matrix's float dtype (integers become float32, or float64 for
        64-bit integers; float16, which scanpy refuses, float32), computed in float64; a dense
        float matrix is overwritten in place.
        A categorical key, or numeric keys whose design is singular (scanpy's GLM path):
        float64.
    ``adata.obs``, ``adata.var``
        String columns that repeat values become categoricals (scanpy's sanitize_anndata).

    A key that adds nothing to the others (a constant column, a repeated key) is dropped by the
    rank of the design (its SVD), as statsmodels does where scanpy's determinant test sends it.
    Where that test misses (a determinant that rounds away from 0, as for a constant key), scanpy
    inverts a singular matrix and its residuals are off (by 0.5 on Poisson counts of mean 1 in a
    300-cell check); ours are then the least-squares residuals, not scanpy's. So too for a
    categorical key of one category (one batch): ours are y - mean(y), where scanpy's GLM on
    the design [1, constant] is off by up to 0.5 % (0.015 on log-normalised pbmc68k genes).

    A Dask array chunked by rows (blocks of scipy / cupyx sparse or numpy / cupy arrays) gives a
    lazy Dask array of the same row chunks (dense blocks), which computes to the in-memory
    result: to the bit for numeric keys; for a categorical key the blocks' float32 category
    means may differ by a rounding step (as on the GPU), which moves residuals by about 1e-6 on
    log-normalised data (2.7e-6 on pbmc68k by phase). The fit reads the blocks before that:
    once for numeric keys (Q^T Y, the first row and the check that the values are finite),
    twice for a categorical key or a singular design (then scanpy's perfect-fit rule, which
    needs the residuals).
    """
    start = settings.log(f"regressing out {keys}")
    check_anndata(adata, step=_STEP)
    keys = _key_list(keys)
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer)):
        msg = f"{_STEP}: n_jobs must be an integer or None, got {n_jobs!r} ({type(n_jobs).__name__})."
        raise TypeError(msg)
    design = _design(adata.obs, keys)
    given = _checked_matrix(get_matrix(adata, layer=layer, step=_STEP))
    x = _as_float(given)
    fit = _fit(x, design, given)  # a Dask X's finiteness is checked in the fit's pass over it
    cast = x is not given
    del given  # a copy where canonical made one: not kept beside the matrix read below
    # everything checked: only now is anything changed (the copy, or the user's AnnData)
    adata = adata.copy() if copy else adata
    sanitize_anndata(adata, warn=True)
    if not cast:  # the residuals of the matrix returned (a dense float X is overwritten, as scanpy's)
        x = None
        x = writable(canonical(get_matrix(adata, layer=layer, step=_STEP), step=_STEP))
    if is_sparse(x):
        settings.log("    sparse input is densified and may lead to high memory use")
    if design[0] == "categorical":
        settings.log("... regressing on per-gene means within categories", level=DEBUG)
    set_matrix(adata, _residuals(x, fit), layer=layer)
    settings.log("    finished", start=start)
    return adata if copy else None


# --------------------------------------------------------------------------- checks
def _key_list(keys) -> list[str]:
    if isinstance(keys, str):
        return [keys]
    try:
        out = list(keys)
    except TypeError:
        out = None
    if not out or not all(isinstance(k, str) for k in out):
        msg = (f"{_STEP}: keys must be an obs column name or a non-empty list of them, got {keys!r}; "
               "e.g. keys=['total_counts', 'pct_counts_mt'].")  # fmt: skip
        raise ValueError(msg)
    return out


def _is_categorical(col: pd.Series) -> bool:
    """Categorical, or strings that scanpy's sanitize_anndata makes categorical (fewer distinct
    values than cells)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return True
    return infer_dtype(col) == "string" and len(pd.Categorical(col).categories) < len(col)


def _design(obs: pd.DataFrame, keys: list[str]):
    """("categorical", codes, n_categories) or ("numeric", R), R = [1, obs[keys]] as scanpy
    builds it; a clear error for a missing key, missing values or a key of another kind."""
    missing = [k for k in keys if k not in obs.columns]
    if missing:
        shown = ", ".join(map(repr, list(obs.columns)[:20])) + (", ..." if obs.shape[1] > 20 else "")
        msg = (f"{_STEP}: key(s) {missing} not found in adata.obs (columns: {shown or 'none'}); "
               "run calculate_qc_metrics for total_counts / pct_counts_*, or add the column first.")  # fmt: skip
        raise KeyError(msg)
    if _is_categorical(obs[keys[0]]):
        if len(keys) > 1:
            msg = (f"{_STEP}: If providing categorical variable, only a single one is allowed. For this "
                   f"one we regress on the mean for each category. Got keys {keys}, the first "
                   f"categorical; pass {keys[0]!r} alone, or numeric keys only.")  # scanpy's words first
            raise ValueError(msg)
        cat = obs_categories(obs[keys[0]], keys[0], step=_STEP)
        return "categorical", np.asarray(cat.codes, dtype=np.int64), len(cat.categories)
    for k in keys:
        col = obs[k]
        if _is_categorical(col):
            msg = (f"{_STEP}: obs[{k!r}] is categorical but is not the first of keys {keys}; a "
                   "categorical key must be the only key (regress on it alone).")  # fmt: skip
            raise ValueError(msg)
        if is_bool_dtype(col.dtype) or not is_numeric_dtype(col.dtype):
            msg = (f"{_STEP}: obs[{k!r}] has dtype {col.dtype}, neither numeric nor categorical; "
                   f"convert it (adata.obs[{k!r}] = adata.obs[{k!r}].astype(float) for a number, "
                   "or .astype('category') for groups) first.")  # fmt: skip
            raise ValueError(msg)
        finite_obs_values(col, k, step=_STEP)
    regressors = obs[keys].copy()
    regressors.insert(0, "ones", 1.0, allow_duplicates=True)  # as scanpy: its singularity test's numbers
    return "numeric", regressors.to_numpy(dtype=np.float64)


def _checked_matrix(x):
    """`x` in a layout the steps take, numeric, with cells and, in memory, finite (a Dask X is
    checked in the fit's pass); nothing is modified."""
    x = canonical(x, step=_STEP)
    if x.shape[0] == 0 or x.shape[1] > 0:  # no gene: the empty matrix densified, scanpy's result for
        # numeric keys (its GLM path, a categorical key or a singular design, fails there)
        check_not_empty(x, step=_STEP)
    if x.dtype.kind not in "iuf":
        msg = f"{_STEP}: expects a numeric matrix (integers or floats), got {describe(x)}."
        raise TypeError(msg)
    if not is_dask(x):  # a Dask X: in the fit's pass (`_fit`)
        check_finite(x, step=_STEP)
    return x


# --------------------------------------------------------------------------- the fit
def _float_dtype(dtype) -> np.dtype:
    """scanpy's cast of an integer matrix: float32 up to 32-bit integers, float64 beyond."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    return np.dtype(np.float32 if dtype.itemsize <= 4 else np.float64)


def _as_float(x):
    """scanpy's cast of an integer matrix (float16, which scanpy refuses: float32), else `x`."""
    if x.dtype.kind != "f" or x.dtype == np.float16:
        return x.astype(_float_dtype(x.dtype) if x.dtype.kind != "f" else np.float32)
    return x


@dataclass(frozen=True)
class _Fit:
    """What the residuals need: `rows` the design's rows (category codes, or Q: n x rank) and
    `model` the fitted values per category (K x genes) or Q^T Y (rank x genes), float64; `glm`
    scanpy's per-gene GLM path (a categorical key or a singular design), whose rules need X's
    first row and give float64. `first`: that row of a Dask X, read in the fit's pass (None in
    memory, where the residuals' own pass reads it)."""

    kind: str
    glm: bool
    rows: np.ndarray
    model: np.ndarray
    out_dtype: np.dtype
    first: np.ndarray | None


def _fit(x, design, given) -> _Fit:
    """The least-squares fit of every gene of float `x` (CSR or dense, CPU or GPU, or a
    row-chunked Dask array, read once: the fit's sums, the first row, the values' check, whose
    error names the matrix `given`, before scanpy's cast)."""
    kind = design[0]
    if kind == "categorical":
        rows, n_categories = design[1:]
        glm, out_dtype = True, np.dtype(np.float64)
    else:
        regressors = design[1]
        glm = bool(np.linalg.det(regressors.T @ regressors) == 0)  # scanpy's test for its GLM fallback
        rows, n_categories = _basis(regressors), 0
        out_dtype = np.dtype(np.float64) if glm else _float_dtype(x.dtype)
    if is_dask(x):
        is_first = np.zeros(x.shape[0], dtype=bool)
        is_first[0] = glm  # the GLM rules' first row (else every block gives -0.0s)
        per_row = (rows, is_first) if kind == "categorical" else (*rows.T, is_first)
        *sums, first, n_bad, _ = _ops.Chunked(x).reduce(_block_fit_sums, per_row=per_row, n_categories=n_categories,
                                                        acc=x.dtype)  # fmt: skip
        check_finite(given, step=_STEP, n_bad=n_bad)
        first = to_host(first)
    else:
        sums = _fit_sums(_ops.parts(x), rows, n_categories, x.dtype)
        first = None
    sums = [None if a is None else to_host(a) for a in sums]
    if kind == "categorical":
        sums64, sums_acc = sums
        counts = np.bincount(rows, minlength=n_categories).astype(np.float64)[:, None]
        model = _category_model(sums64, sums64 if sums_acc is None else sums_acc, counts)
    else:
        model = sums[0].T
    return _Fit(kind, glm, rows, model, out_dtype, first)


def _fit_sums(p, rows, n_categories: int, acc):
    """The sums a fit reads: per category its float64 sums and its sums in X's dtype (scanpy's
    mean sums in it; None for float64 data, whose sums they are), or gram's X^T Q over row
    blocks (CSR never densified)."""
    if n_categories:
        sums64 = _ops.group_sums(p, rows, n_categories, dtype=np.float64)[0]
        return sums64, None if acc == np.float64 else _ops.group_sums(p, rows, n_categories, dtype=acc)[0]
    return (gram.transpose_apply(p, p.xp.asarray(rows)),)


def _block_fit_sums(p, *per_row, n_categories: int, acc):
    """One Dask block's part of the fit: `_fit_sums` of its rows, its share of X's first row
    (the row itself in the block that holds it, -0.0s elsewhere: the blocks' sum is the row) and
    its (non-finite, negative) value counts."""
    *rows, is_first = per_row
    rows = rows[0] if n_categories else np.stack(rows, axis=1)
    first = p.xp.full(p.shape[1], -0.0)  # the additive identity: a -0.0 of the row stays -0.0
    at = np.flatnonzero(is_first)
    if at.size:
        first += _dense64(_matrix(p)[int(at[0]) : int(at[0]) + 1])[0]
    return (*_fit_sums(p, rows, n_categories, acc), first, *block_value_issues(p))


def _basis(regressors: np.ndarray) -> np.ndarray:
    """An orthonormal basis (n x rank, float64) of the design's columns: its left singular
    vectors above numpy's rank tolerance, so a column that repeats others adds nothing."""
    u, s, _ = np.linalg.svd(regressors, full_matrices=False)
    tol = s.max(initial=0.0) * max(regressors.shape) * np.finfo(np.float64).eps
    return np.ascontiguousarray(u[:, s > tol])


def _row_blocks(n_rows: int, n_cols: int):
    step = max(1, BLOCK_BYTES // (8 * max(n_cols, 1)))
    for lo in range(0, n_rows, step):
        yield lo, min(lo + step, n_rows)


def _category_model(sums64, sums_acc, counts):
    """F[c, g] the fitted value of gene g in category c (float64, K x genes) from the category
    sums in float64 and in X's dtype and the category sizes (K x 1)."""
    n = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        # scanpy's regressor: the category mean, summed in x's dtype, stored as float32
        means = (sums_acc.astype(np.float64) / counts).astype(np.float32).astype(np.float64)
    means[counts[:, 0] == 0] = 0.0  # categories without cells: never used
    ybar = sums64.sum(0) / n
    mbar = (counts * means).sum(0) / n
    dm = means - mbar
    smm = (counts * dm**2).sum(0)
    smy = (dm * (sums64 - counts * ybar)).sum(0)
    slope = np.divide(smy, smm, out=np.zeros_like(smy), where=smm > 0)  # m constant: y - ybar
    return ybar + slope * dm


# --------------------------------------------------------------------------- residuals
def _matrix(p):
    """The matrix of `Parts` (CSR or a dense view)."""
    if p.dense:
        return p.data.reshape(p.shape)
    return sparse_module(p.data).csr_matrix((p.data, p.indices, p.indptr), shape=p.shape)


def _dense64(y):
    y = y.toarray() if is_sparse(y) else y
    return y.astype(np.float64)


def _block_residuals(y, rows, model, *, kind: str):
    """(float64 residuals, float64 values) of one row block `y`; `rows` the block's design rows
    (Q's rows or category codes), `model` Q^T Y or the per-category fitted values."""
    values = _dense64(y)
    fitted = model[rows] if kind == "categorical" else rows @ model
    return values - fitted, values


def _residuals(x, fit: _Fit):
    """The residual matrix of `x` under `fit` (a lazy one for a Dask X)."""
    return _dask_residuals(x, fit) if is_dask(x) else _memory_residuals(x, fit)


def _memory_residuals(x, fit: _Fit):
    kind, glm, rows, model, out_dtype = fit.kind, fit.glm, fit.rows, fit.model, fit.out_dtype
    xp = xp_of(x)
    n_rows, n_cols = x.shape
    in_place = not glm and not is_sparse(x) and x.dtype == out_dtype  # scanpy writes into X too
    out = x if in_place else xp.empty((n_rows, n_cols), dtype=out_dtype)
    first = _dense64(x[0:1])[0] if glm else None
    if is_gpu(x):
        rows, model = xp.asarray(rows), xp.asarray(model)
        varies = xp.zeros(n_cols, dtype=bool)
        fits = xp.zeros(n_cols, dtype=bool)
        for lo, hi in _row_blocks(n_rows, n_cols):
            res, values = _block_residuals(x[lo:hi], rows[lo:hi], model, kind=kind)
            if glm:
                varies |= (values != first).any(axis=0)
                fits |= (xp.abs(res) > _PERFECT_FIT).any(axis=0)
            out[lo:hi] = res
    else:  # one fused pass over the rows (Numba)
        varies, fits = _cpu_residuals(_ops.parts(x), rows, model, kind=kind, first=first, out=out)
    if not glm:
        return out
    zero, constant = (xp.flatnonzero(m) for m in _glm_rules(varies, fits))  # integer indices:
    out[:, zero] = 0  # what every array library takes beside a slice
    out[:, constant] = first[constant]
    if not bool(varies.any()):  # every gene kept as it is: scanpy's result keeps X's dtype
        out = out.astype(x.dtype)
    return out


def _cpu_residuals(p, rows, model, *, kind: str, first, out):
    """Fill `out` with the residuals of `p` (CSR or dense, CPU); (varies, fits) per gene when
    `first` (the first row) is given, for scanpy's GLM rules."""
    n_rows, n_cols = p.shape
    glm = first is not None
    n_tasks = max(1, min(-(-n_rows // _ROWS), 4 * numba.get_num_threads())) if glm else 1
    varies = np.zeros((n_tasks, n_cols), dtype=np.bool_)
    fits = np.zeros((n_tasks, n_cols), dtype=np.bool_)
    indptr = np.asarray(row_pointers(p)).astype(np.int64, copy=False)  # one kernel signature for
    indices = np.zeros(1, dtype=np.int32) if p.dense else p.indices  # dense and CSR (unused here)
    categorical = kind == "categorical"
    codes = rows if categorical else np.zeros(1, dtype=np.int64)
    q = np.zeros((1, 1)) if categorical else rows
    _residual_rows(p.data, indices, indptr, p.dense, categorical, codes, model, q,
                   np.zeros(n_cols) if first is None else first, glm, out, varies, fits)  # fmt: skip
    return varies.any(axis=0), fits.any(axis=0)


def _glm_rules(varies, fits):
    """scanpy's per-gene GLM rules: (genes predicted perfectly -> 0, constant genes -> kept)."""
    return varies & ~fits, ~varies


def _dask_residuals(x, fit: _Fit):
    """The lazy residual matrix of a row-chunked Dask array (same row chunks, dense blocks)."""
    import dask.array as da

    xp = _ops.Chunked(x).xp
    kind, rows, model, out_dtype, first = fit.kind, fit.rows, fit.model, fit.out_dtype, fit.first
    per_row = (rows,) if kind == "categorical" else tuple(rows.T)
    zero = constant = None
    if fit.glm:
        varies, fits = _ops.Chunked(x).reduce(_block_flags, model, first, kind=kind,
                                              per_row=(rows,))  # fmt: skip
        varies, fits = to_host(varies), to_host(fits)
        zero, constant = (np.flatnonzero(m) for m in _glm_rules(varies, fits))
        if not varies.any():
            out_dtype = x.dtype
    meta = xp.empty((0, 0), dtype=out_dtype)
    return da.map_blocks(_dask_block, x, *row_columns(x, per_row), model=model, kind=kind,
                         zero=zero, constant=constant, first=first if fit.glm else None, out_dtype=out_dtype,
                         dtype=out_dtype, meta=meta)  # fmt: skip


def _block_flags(p, rows, model, first, *, kind: str):
    """(varies, fits) of one Dask block: genes not equal to the first row's value somewhere,
    genes with a residual above the perfect-fit bound somewhere."""
    xp = p.xp
    res, values = _block_residuals(_matrix(p), xp.asarray(rows), xp.asarray(model), kind=kind)
    return (values != xp.asarray(first)).any(axis=0), (xp.abs(res) > _PERFECT_FIT).any(axis=0)


def _dask_block(block, *columns, model, kind, zero, constant, first, out_dtype):
    block = in_layout(block)
    xp = xp_of(block)
    host_rows = columns[0][:, 0] if kind == "categorical" else np.stack([c[:, 0] for c in columns], axis=1)
    res, _ = _block_residuals(block, xp.asarray(to_host(host_rows)), xp.asarray(model), kind=kind)
    if zero is not None:
        res[:, xp.asarray(zero)] = 0
        res[:, xp.asarray(constant)] = xp.asarray(first)[xp.asarray(constant)]
    return res.astype(out_dtype)


# --------------------------------------------------------------------------- CPU kernels
_ROWS = 64  # rows per task of the residual kernels


@numba.njit(parallel=True, cache=True)
def _residual_rows(data, indices, indptr, dense, categorical, codes, model, q, first, glm, out, varies, fits):
    """out[i] = y[i] - fitted[i], formed in float64 and rounded once to out's dtype (out may be
    y's own memory: each row is read before it is written). fitted[i] is model[codes[i]]
    (categorical) or q[i] @ model. Rows of CSR (`indices`) or dense (`dense`: the position in
    the row) data. With `glm`, task t marks varies[t, j] (y[i, j] != first[j]) and fits[t, j]
    (|residual| above statsmodels' perfect-fit bound)."""
    n_rows, n_cols = out.shape
    n_tasks = varies.shape[0] if glm else -(-n_rows // _ROWS)
    step = -(-n_rows // n_tasks)
    rank = q.shape[1]
    for t in numba.prange(n_tasks):
        y = np.empty(n_cols, dtype=np.float64)
        fit = np.empty(n_cols, dtype=np.float64)
        for i in range(t * step, min((t + 1) * step, n_rows)):
            begin, end = indptr[i], indptr[i + 1]
            if dense:
                for j in range(n_cols):
                    y[j] = data[begin + j]
            else:
                y[:] = 0.0
                for p in range(begin, end):
                    y[indices[p]] += data[p]
            if categorical:
                row = model[codes[i]]
                for j in range(n_cols):
                    fit[j] = row[j]
            else:
                fit[:] = 0.0
                for k in range(rank):
                    w = q[i, k]
                    for j in range(n_cols):
                        fit[j] += w * model[k, j]
            for j in range(n_cols):
                r = y[j] - fit[j]
                out[i, j] = r
                if glm:
                    if y[j] != first[j]:
                        varies[t, j] = True
                    if abs(r) > _PERFECT_FIT:
                        fits[t, j] = True
