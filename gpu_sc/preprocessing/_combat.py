"""combat: ComBat batch correction (Johnson, Li & Rabinovic 2007), with scanpy's arithmetic.

scanpy densifies X, copies it into pandas frames and forms five or more dense cells x genes
float64 arrays. Every quantity ComBat fits is a per-gene function of a few sums, so here:

- X's first row is read (the shift of the sums below);
- one pass over X (CSR never densified; float64 row blocks) gives each batch's per-gene sum and
  sum of squares (`_ops.group_sums`) and, with covariates, each batch's sums of covariate x
  value (one product with an n x batches*covariates matrix); for a Dask X it counts the
  non-finite values too (in memory they are checked first);
- the least-squares fit of the design, the pooled variance, the standardised data's per-batch
  mean and variance, the empirical-Bayes priors and scanpy's iterative solution (`_it_sol`,
  the same loop and stopping rule) are small (batches x genes) arrays on the host;
- one more pass writes the corrected matrix, element by element in scanpy's order of
  operations: ((x - m) / s - gamma) / sqrt(delta) * s + m, with m the cell's standardised mean
  (grand mean plus its covariates' effect) and s the pooled standard deviation.

The sums of squares give variances as differences of moments (float64, of x minus each gene's
value in the first cell, so that genes far from 0 keep their digits): results within
about 1e-13 of scanpy's on log-normalised data. A gene whose residual is round-off (one value in
every cell, or one value within each batch) has zero variance here (scanpy's rule for an exact
0: standardised values 0); scanpy's direct sums give such non-zero genes the round-off of their
means as a variance, whose huge standardised values then enter the priors and move every other
gene (by 0.004 for one constant gene in pbmc68k, 0.09 for one constant within each batch).
The round-off bound grows with the cells summed (`_ROUNDOFF`); past about 5e7 cells it would take
a gene held by the first cell alone (the shift) for one of zero variance (its residual sum is 1/n
of its shifted sum of squares; a review's 6e7-cell check).
Numeric covariates are centred and scaled first: the same column space beside the batches, so
the same fit, with a well-conditioned design.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from .. import _ops
from .._backend import describe, is_dask, is_gpu, is_sparse, to_host, xp_of
from .._ops import gram
from .._ops._chunked import block_parts, row_columns
from .._ops._layout import row_pointers
from .._settings import settings
from .._validation import (block_value_issues, canonical, check_anndata, check_finite, check_flag, check_not_empty,
                           finite_obs_values, get_matrix, make_actual, obs_categories, old_positionals,
                           sanitize_anndata)

_STEP = "combat"
_CONV = 1e-4  # scanpy's (combat.py's) convergence bound of the iterative solution
#: relative round-off of a residual sum from moments, per cell summed: sums of n squares carry up
#: to ~n eps of their size (a gene of one value within each batch: 233 eps at 2,170 cells, 6,120 at
#: 108,500; genes of real data sit above 1e12 eps)
_ROUNDOFF = 2 * np.finfo(np.float64).eps


@old_positionals("covariates", "inplace")
def combat(adata: AnnData, key: str = "batch", *, covariates=None, inplace: bool = True):
    """ComBat batch-effect correction, like :func:`scanpy.pp.combat` (same keywords, same result).

    Fits a location/scale model of every gene per batch, shrinks the batch effects towards
    their mean across genes (empirical Bayes) and removes them. Runs where X lives (numpy /
    scipy on the CPU, cupy / cupyx on the GPU, or a row-chunked Dask array): sparse X is read
    as it is stored, and only the corrected matrix is dense.

    Parameters
    ----------
    adata
        The annotated data matrix (log-normalised expression, as for scanpy).
    key
        The ``adata.obs`` column of the batches (categorical, or values that are grouped as
        such). Every cell needs a batch, and every batch at least 2 cells (its variance).
    covariates
        Further ``adata.obs`` columns of the design (biological conditions to keep): numeric
        columns enter as they are, others (categories, strings, booleans) as one indicator per
        level but the first. scanpy codes the first categorical covariate with every level,
        which repeats the batches' columns: its inverse of that singular matrix raises
        "Singular matrix" or returns wrong values (off by up to 13 on log data in our test);
        here such a design has full rank (numeric covariates give scanpy's result). A design
        that is singular all the same (a covariate constant within every batch) is refused.
    inplace
        Replace ``adata.X`` (default) or return the corrected matrix.

    Returns
    -------
    ``None``, setting ``adata.X`` to the corrected matrix, or that matrix when ``inplace=False``:
    dense float64 (as scanpy's) on X's device; for a Dask X a lazy Dask array of its row chunks
    (dense blocks). String columns of obs and var become categoricals (scanpy's
    sanitize_anndata), as in scanpy.
    """
    check_anndata(adata, step=_STEP)
    check_flag(inplace, "inplace", step=_STEP)
    covariates = _covariate_list(adata.obs, key, covariates)
    if adata.X is None:
        msg = f"{_STEP}: adata.X is None; ComBat corrects X: set adata.X = adata.layers[name] first."
        raise ValueError(msg)
    # duplicate CSR entries summed: each value is their sum (its square too)
    x = canonical(get_matrix(adata, step=_STEP), step=_STEP, sum_duplicates=True)
    check_not_empty(x, step=_STEP)
    if x.dtype.kind not in "iubf":  # bools are 0 and 1 (scanpy densifies them to float64)
        msg = f"{_STEP}: expects a numeric matrix (integers or floats), got {describe(x)}."
        raise TypeError(msg)
    codes, n_batches, cov, design_gram = _design(adata.obs, key, covariates)
    if not is_dask(x):  # a Dask X: in the moments' pass (so the design's errors come first in both)
        check_finite(x, step=_STEP)
    moments = _moments(x, codes, n_batches, cov)
    # everything checked: only now is the user's AnnData changed (scanpy sanitizes it, inplace or not)
    sanitize_anndata(adata)
    _log_design(adata.obs, n_batches, covariates)
    fit = _fit(moments, codes, n_batches, cov, design_gram)
    settings.log("Adjusting data\n")
    out = _corrected(x, codes, cov, fit)
    if not inplace:
        return out
    make_actual(adata)  # a view's X written back would land in its parent (scanpy's does)
    adata.X = out
    return None


# --------------------------------------------------------------------------- checks, design
def _covariate_list(obs: pd.DataFrame, key, covariates) -> list:
    """scanpy's checks of the key and covariates, in scanpy's words first."""
    if not isinstance(key, str) or key not in obs.columns:
        shown = ", ".join(map(repr, list(obs.columns)[:20])) + (", ..." if obs.shape[1] > 20 else "")
        msg = f"Could not find the key {key!r} in adata.obs ({_STEP}: obs columns: {shown or 'none'})."
        raise ValueError(msg)
    if covariates is None:
        return []
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    missing = [c for c in covariates if c not in obs.columns]
    if missing:
        msg = f"Could not find the covariate(s) {missing!r} in adata.obs"
        raise ValueError(msg)
    if key in covariates:
        msg = f"Batch key and covariates cannot overlap ({_STEP}: {key!r} is both; drop it from covariates)."
        raise ValueError(msg)
    if len(covariates) != len(set(covariates)):
        msg = f"Covariates must be unique ({_STEP}: got {covariates})."
        raise ValueError(msg)
    return covariates


def _design(obs: pd.DataFrame, key: str, covariates: list):
    """(batch code per cell, number of batches, covariate columns n x k float64, `_design_gram`),
    or a clear error for a singular design: batches in scanpy's order (its groupby: categories in
    order, other values sorted; unused ones dropped)."""
    batch = obs_categories(obs[key], key, step=_STEP, what="batch").remove_unused_categories()
    sizes = np.bincount(batch.codes, minlength=len(batch.categories))
    small = [str(c) for c, n in zip(batch.categories, sizes, strict=True) if n < 2]
    if small:
        msg = (f"{_STEP}: batch(es) {small} of obs[{key!r}] hold a single cell; ComBat needs each batch's "
               "variance (scanpy returns NaN everywhere here). Merge or drop those cells first.")  # fmt: skip
        raise ValueError(msg)
    columns = [_covariate_columns(obs[c], c) for c in covariates if not _numeric(obs[c])]
    columns += [_numeric_column(obs[c], c) for c in covariates if _numeric(obs[c])]  # scanpy's order
    cov = np.concatenate(columns, axis=1) if columns else np.zeros((len(batch), 0))
    codes = np.asarray(batch.codes, dtype=np.int64)
    gram_ = _design_gram(codes, len(batch.categories), cov)
    if np.linalg.matrix_rank(gram_[0]) < gram_[0].shape[0]:
        msg = (f"{_STEP}: the design of batches obs[{key!r}] and covariates {covariates} is singular: a covariate "
               "is constant, constant within every batch, or a combination of the others. Drop it, or "
               "correct within the levels it separates.")  # fmt: skip
        raise ValueError(msg)
    return codes, len(batch.categories), cov, gram_


def _log_design(obs: pd.DataFrame, n_batches: int, covariates: list) -> None:
    """scanpy's info lines on the design, as its ComBat writes them (each ends in a newline, so
    a blank line follows; the numeric covariates' pair even where there are none)."""
    settings.log("Standardizing Data across genes.\n")
    settings.log(f"Found {n_batches} batches\n")
    numeric = [c for c in covariates if _numeric(obs[c])]
    others = [c for c in covariates if c not in numeric]
    if others:
        settings.log(f"Found {len(others)} categorical variables:")
        settings.log(f"\t{', '.join(others)}\n")
    settings.log(f"Found {len(numeric)} numerical variables:")
    settings.log(f"\t{', '.join(numeric)}\n")


def _numeric(col: pd.Series) -> bool:
    dtype = col.dtype
    return is_numeric_dtype(dtype) and not is_bool_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)


def _numeric_column(col: pd.Series, name: str) -> np.ndarray:
    values = finite_obs_values(col, name, step=_STEP)
    sd = values.std()
    # centred and scaled: the same column space with the batches (whose indicators sum to one),
    # so the same fit, with a well-conditioned D^T D (epoch seconds or 1e8-scale values are fine)
    return ((values - values.mean()) / (sd if sd > 0 else 1.0))[:, None]


def _covariate_columns(col: pd.Series, name: str) -> np.ndarray:
    """One indicator per level but the first (the batches' columns already sum to one)."""
    cat = obs_categories(col, name, step=_STEP, what="level").remove_unused_categories()
    return (cat.codes[:, None] == np.arange(1, len(cat.categories))[None, :]).astype(np.float64)


def _design_gram(codes: np.ndarray, n_batches: int, cov: np.ndarray):
    """(D^T D of the design [batch indicators, covariates], each batch's covariate sums (batches
    x k), each batch's C_b^T C_b (batches x k x k)), from sums over the cells: the n x batches
    indicator matrix is never formed."""
    k = cov.shape[1]
    n_b = np.bincount(codes, minlength=n_batches).astype(np.float64)
    batch_cov = np.zeros((n_batches, k))
    np.add.at(batch_cov, codes, cov)
    cov_gram = np.zeros((n_batches, k, k))
    np.add.at(cov_gram, codes, cov[:, :, None] * cov[:, None, :])
    dtd = np.block([[np.diag(n_b), batch_cov], [batch_cov.T, cov_gram.sum(0)]])
    return dtd, batch_cov, cov_gram


# --------------------------------------------------------------------------- the fit
def _fit(moments, codes: np.ndarray, n_batches: int, cov: np.ndarray, design_gram) -> dict:
    """scanpy's estimates from per-batch sums (`_moments`): {'grand', 'beta', 'sd', 'zero',
    'gamma', 'sqrt_delta'}; `design_gram` is `_design_gram`'s."""
    n_b = np.bincount(codes, minlength=n_batches).astype(np.float64)
    n, k = float(n_b.sum()), cov.shape[1]
    dtd, batch_cov, cov_gram = design_gram
    shift, sums, sumsq, cross = moments
    cross = np.asarray(cross).T.reshape(n_batches, k, shift.size)
    # least squares on the design [batches, covariates], as scanpy: inv(D^T D) D^T X
    dtx = np.concatenate([sums, cross.sum(0)], axis=0)
    b_hat = np.linalg.inv(dtd) @ dtx
    grand = (n_b / n) @ b_hat[:n_batches]
    beta = b_hat[n_batches:]
    rss = sumsq.sum(0) - 2 * np.einsum("rg,rg->g", b_hat, dtx) + np.einsum("rg,rs,sg->g", b_hat, dtd, b_hat)
    # a residual sum below the round-off of the moments' difference is a gene of one value
    var_pooled = np.where(rss > _ROUNDOFF * n * sumsq.sum(0), rss, 0.0) / n
    zero = var_pooled == 0
    if zero.any():
        settings.info(f"{_STEP}: Found {int(zero.sum())} genes with zero variance.")
    sd = np.sqrt(var_pooled)
    settings.log("Fitting L/S model and finding priors\n")
    # per batch, the sums over its cells of (x - m) and (x - m)^2, m = grand + c . beta
    cb = batch_cov @ beta  # sum over b's cells of c . beta
    dev = sums - n_b[:, None] * grand - cb
    dev2 = (sumsq - 2 * (grand * sums + np.einsum("bjg,jg->bg", cross, beta))
            + n_b[:, None] * grand**2 + 2 * grand * cb + np.einsum("jg,bjl,lg->bg", beta, cov_gram, beta))  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = np.where(zero, 0.0, dev / n_b[:, None] / sd)
        ss = np.where(zero, 0.0, dev2 / var_pooled)  # sum of the standardised values' squares
    delta_hat = np.maximum(ss - n_b[:, None] * gamma_hat**2, 0.0) / (n_b[:, None] - 1)
    gamma, delta = _eb_estimates(gamma_hat, delta_hat, n_b)
    return {"grand": grand + shift, "beta": beta, "sd": sd, "zero": zero, "gamma": gamma, "sqrt_delta": np.sqrt(delta)}


def _shift(x) -> np.ndarray:
    """Each gene's value in the first cell: the fit runs on x - shift (which moves the batch means
    and nothing else), so the sums of squares of genes far from 0 relative to their spread
    (X + 1e7, dense or every value stored) keep their digits."""
    first = x[:1].compute() if is_dask(x) else x[:1]
    first = first.toarray() if is_sparse(first) else first
    return to_host(first).astype(np.float64).ravel()


def _moments(x, codes: np.ndarray, n_batches: int, cov: np.ndarray):
    """(shift, and per batch and gene: sum and sum of squares of x - shift; (x - shift)^T u), one
    pass over X's rows (each Dask block's, which also counts a Dask X's non-finite values: refused
    here). u: per batch b and covariate j, the sum over b's cells of c_j * x is X^T U, U's
    column b * k + j holding c_j in b's cells (n x batches*k: small beside X for a few covariates)."""
    k = cov.shape[1]
    u = np.zeros((len(codes), n_batches, k))
    u[np.arange(len(codes)), codes] = cov
    u = u.reshape(len(codes), -1)
    shift = _shift(x)
    if not is_dask(x):
        return shift, *_block_moments(_ops.parts(x), codes, u, shift, n_batches=n_batches)
    *moments, n_bad = _ops.Chunked(x).reduce(_checked_block_moments, shift, n_batches=n_batches, per_row=(codes, u))
    check_finite(x, step=_STEP, n_bad=n_bad)
    return shift, *moments


def _checked_block_moments(p, codes, u, shift, *, n_batches: int):
    """`_block_moments` and the block's non-finite value count."""
    return (*_block_moments(p, codes, u, shift, n_batches=n_batches), block_value_issues(p)[0])


def _block_moments(p, codes, u, shift, *, n_batches: int):
    """`_moments` of the rows of `p`, in float64 row blocks (group_sums squares in the matrix's
    dtype, as scanpy's aggregate: float32 squares would cost ComBat's variances 7 digits). A CSR
    block's stored values are shifted; its implicit zeros, -shift each, are added from the count
    of stored values per batch and gene."""
    xp = p.xp
    shift_d, u_d = xp.asarray(shift), xp.asarray(u)
    sums = sumsq = cross = 0.0
    for start, stop, block in gram.row_blocks(p, densify=False):
        rows, ub = np.asarray(codes[start:stop]), u_d[start:stop]
        if is_sparse(block):  # a float64 copy of the rows: shifted in place
            stored = block.copy()
            stored.data[:] = 1.0
            block.data -= shift_d[block.indices]
            n_b = np.bincount(rows, minlength=n_batches).astype(np.float64)[:, None]
            zeros = n_b - to_host(_ops.group_sums(_ops.parts(stored), rows, n_batches)[0])
            zero_cross = to_host(shift_d[:, None] * (ub.sum(axis=0)[None, :] - stored.T @ ub))
        else:
            block = block - shift_d
            zeros, zero_cross = 0.0, 0.0
        got = _ops.group_sums(_ops.parts(block), rows, n_batches, squares=True)
        sums = sums + to_host(got[0]) - zeros * shift
        sumsq = sumsq + to_host(got[1]) + zeros * shift**2
        cross = cross + to_host(block.T @ ub) - zero_cross
    return sums, sumsq, cross


def _eb_estimates(gamma_hat: np.ndarray, delta_hat: np.ndarray, n_b: np.ndarray):
    """scanpy's empirical-Bayes batch effects (gamma*, delta*), batches x genes: the priors from
    the spread of the first estimates across genes, then `_it_sol` per batch."""
    gamma_bar = gamma_hat.mean(axis=1)
    t2 = gamma_hat.var(axis=1)
    m, s2 = delta_hat.mean(axis=1), delta_hat.var(axis=1, ddof=1)  # scanpy: pandas' mean and var
    with np.errstate(divide="ignore", invalid="ignore"):
        a_prior, b_prior = (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2
    settings.log("Finding parametric adjustments\n")
    gamma, delta = np.empty_like(gamma_hat), np.empty_like(delta_hat)
    for b in range(gamma_hat.shape[0]):
        gamma[b], delta[b] = _it_sol(gamma_hat[b], delta_hat[b], n_b[b], gamma_bar[b], t2[b], a_prior[b], b_prior[b])
    return gamma, delta


def _it_sol(g_hat, d_hat, n: float, g_bar: float, t2: float, a: float, b: float):
    """scanpy's iteration for one batch, on its sums: the sum over the batch's cells of
    (s - g)^2 is (n - 1) * d_hat + n * (g_hat - g)^2, s the standardised values."""
    g_old, d_old = g_hat.copy(), d_hat.copy()
    g_new, d_new = g_old, d_old
    change = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        while change > _CONV:
            g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
            sum2 = (n - 1) * d_hat + n * (g_hat - g_new) ** 2
            d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
            # Python's max on numpy's maxima, as scanpy: a NaN first operand ends the loop
            change = max((abs(g_new - g_old) / g_old).max(), (abs(d_new - d_old) / d_old).max())
            g_old, d_old = g_new, d_new
    return g_new, d_new


# --------------------------------------------------------------------------- the corrected matrix
def _corrected(x, codes: np.ndarray, cov: np.ndarray, fit: dict):
    if is_dask(x):
        return _dask_corrected(x, codes, cov, fit)
    if not is_gpu(x):
        return _cpu_corrected(_ops.parts(x), codes, cov, fit)
    xp = xp_of(x)
    arrays = _device(fit, xp)
    codes_d, cov_d = xp.asarray(codes), xp.asarray(cov)
    out = xp.empty(x.shape, dtype=np.float64)
    for start, stop, block in gram.row_blocks(_ops.parts(x)):
        out[start:stop] = _block(block, codes_d[start:stop], cov_d[start:stop], arrays)
    return out


def _device(fit: dict, xp) -> dict:
    return {k: xp.asarray(v) for k, v in fit.items()}


def _block(values, codes, cov, f: dict):
    """Corrected rows from their dense float64 values, in scanpy's order of operations."""
    xp = xp_of(values)
    mean = f["grand"] + cov @ f["beta"] if cov.shape[1] else f["grand"]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = xp.where(f["zero"], 0.0, (values - mean) / f["sd"])
        return (s - f["gamma"][codes]) / f["sqrt_delta"][codes] * f["sd"] + mean


def _dask_corrected(x, codes: np.ndarray, cov: np.ndarray, fit: dict):
    """The lazy corrected matrix of a row-chunked Dask array (same row chunks, dense blocks)."""
    import dask.array as da

    xp = _ops.Chunked(x).xp
    per_row = (codes, *(cov[:, j] for j in range(cov.shape[1])))
    return da.map_blocks(_dask_block, x, *row_columns(x, per_row), fit=fit, dtype=np.float64,
                         meta=xp.empty((0, 0), dtype=np.float64))  # fmt: skip


def _dask_block(block, codes, *cov, fit):
    p = block_parts(block)
    xp = p.xp
    if p.shape[0] == 0:  # a block of no rows (Dask keeps explicit zero-size chunks)
        return xp.empty(p.shape, dtype=np.float64)
    values = next(gram.row_blocks(p, chunk_size=p.shape[0]))[2]
    cov = xp.asarray(np.stack([to_host(c[:, 0]) for c in cov], axis=1)) if cov else xp.zeros((p.shape[0], 0))
    return _block(values, xp.asarray(to_host(codes[:, 0])), cov, _device(fit, xp))


# --------------------------------------------------------------------------- CPU kernel
def _cpu_corrected(p, codes: np.ndarray, cov: np.ndarray, fit: dict) -> np.ndarray:
    """The corrected matrix of CPU `Parts` (CSR or dense) in one parallel pass (Numba): the
    arithmetic of `_block`, without its dense float64 copies of each block."""
    out = np.empty(p.shape, dtype=np.float64)
    out.fill(0.0)  # touched once in this thread: parallel first-touch page faults are slow (scaled_dense)
    indptr = np.asarray(row_pointers(p)).astype(np.int64, copy=False)
    indices = indptr[:1] if p.dense else p.indices  # unused for dense rows
    data = p.data.astype(np.float32) if p.data.dtype == np.float16 else p.data  # numba has no float16
    _corrected_rows(data, indices, indptr, p.dense, codes, np.ascontiguousarray(cov), fit["grand"], fit["beta"],
                    fit["sd"], fit["zero"], fit["gamma"], fit["sqrt_delta"], out)  # fmt: skip
    return out


@numba.njit(parallel=True, cache=True)
def _corrected_rows(data, indices, indptr, dense, codes, cov, grand, beta, sd, zero, gamma, sqrt_delta, out):
    n_rows, n_cols = out.shape
    for i in numba.prange(n_rows):
        b = codes[i]
        mean = grand.copy()
        for k in range(cov.shape[1]):
            for j in range(n_cols):
                mean[j] += cov[i, k] * beta[k, j]
        row = out[i]
        begin, end = indptr[i], indptr[i + 1]
        if dense:
            for j in range(n_cols):
                row[j] = _value(np.float64(data[begin + j]), mean[j], sd[j], zero[j], gamma[b, j], sqrt_delta[b, j])
        else:
            for j in range(n_cols):
                row[j] = _value(0.0, mean[j], sd[j], zero[j], gamma[b, j], sqrt_delta[b, j])
            for q in range(begin, end):
                j = indices[q]
                row[j] = _value(np.float64(data[q]), mean[j], sd[j], zero[j], gamma[b, j], sqrt_delta[b, j])


@numba.njit(inline="always")
def _value(v, mean, sd, zero, gamma, sqrt_delta):
    s = 0.0 if zero else (v - mean) / sd
    return (s - gamma) / sqrt_delta * sd + mean
