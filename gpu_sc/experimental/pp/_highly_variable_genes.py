"""scanpy.experimental.pp.highly_variable_genes: genes ranked by the variance of their analytic
Pearson residuals (Lause et al. 2021), within each batch, then merged as scanpy merges them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from anndata import AnnData

from ... import _ops
from ..._backend import is_dask, to_host, xp_of
from ..._settings import settings
from ..._validation import canonical, check_n_top_genes, check_not_empty, get_matrix, make_actual, warn_not_counts
from ._residuals import check_theta_clip, counts_matrix, residual_variances, without_counts_zero

_STEP = "highly_variable_genes"
_WHAT = "`flavor='pearson_residuals'`"  # the subject of scanpy's non-integer warning


def highly_variable_genes(adata: AnnData, *, theta: float = 100, clip: float | None = None,
                          n_top_genes: int | None = None, batch_key: str | None = None, chunksize: int = 1000,
                          flavor: str = "pearson_residuals", check_values: bool = True, layer: str | None = None,
                          subset: bool = False, inplace: bool = True) -> pd.DataFrame | None:  # fmt: skip
    """Highly variable genes by Pearson residual variance, as scanpy.experimental.pp's.

    Per batch (`batch_key`; None: one), the variance over the batch's cells of each gene's
    clipped residuals (genes without counts in the batch: 0), computed on the CPU (Numba) or
    the GPU (CuPy) where the counts are, in bands of rows (`chunksize` is taken for scanpy's
    signature, whose kernel does not read it either); a Dask X block by block (scanpy's
    selection takes none).
    Genes are ranked by it in each batch; the `n_top_genes` are those in the top `n_top_genes`
    of the most batches, ties broken by their median rank over those batches. `clip=None` clips
    at sqrt(cells of the first batch) in every batch, as scanpy 1.11 does.

    Returns
    -------
    With `inplace`, var columns 'means', 'variances', 'residual_variances' (the batches' mean),
    'highly_variable_rank', 'highly_variable' (and with `batch_key` 'highly_variable_nbatches',
    'highly_variable_intersection'), ``uns['hvg']`` = {'flavor': 'pearson_residuals',
    'computed_on'}, and with `subset` only the selected genes kept; otherwise the DataFrame.
    """
    settings.log("extracting highly variable genes")
    if not isinstance(adata, AnnData):
        msg = ("`pp.highly_variable_genes` expects an `AnnData` argument, pass `inplace=False` if you want to "
               "return a `pd.DataFrame`.")  # fmt: skip
        raise ValueError(msg)
    if flavor != "pearson_residuals":
        msg = "This is an experimental API and only `flavor=pearson_residuals` is available."
        raise ValueError(msg)
    if n_top_genes is None:
        msg = "`pp.highly_variable_genes` requires the argument `n_top_genes` for `flavor='pearson_residuals'`"
        raise ValueError(msg)
    check_n_top_genes(n_top_genes, step=_STEP)
    check_theta_clip(theta, clip, step=_STEP)
    if batch_key is not None and batch_key not in adata.obs:
        msg = f"{_STEP}: batch_key {batch_key!r} is not a column of adata.obs."
        raise KeyError(msg)
    batches, codes = _batches(adata, batch_key)
    sizes = np.bincount(codes[codes >= 0], minlength=batches.size)
    if clip is None:  # scanpy sets it in its first batch and keeps it for the others
        clip = math.sqrt(sizes[0])
    given = get_matrix(adata, layer=layer, step=_STEP)
    select = _dask_variances if is_dask(given) else _variances
    variances, (means, gene_vars) = select(given, codes, sizes, float(theta), float(clip), check_values)
    ranks = np.argsort(np.argsort(-variances, axis=1), axis=1).astype(np.float32)  # scanpy's (unstable) ties
    nbatches = (ranks < n_top_genes).astype(int).sum(axis=0)
    ranks[ranks >= n_top_genes] = np.nan
    median_rank = np.ma.median(np.ma.masked_invalid(ranks), axis=0).filled(np.nan)
    df = pd.DataFrame({"means": means, "variances": gene_vars, "residual_variances": variances.mean(axis=0),
                       "highly_variable_rank": median_rank, "highly_variable_nbatches": nbatches.astype(np.int64),
                       "highly_variable_intersection": nbatches == batches.size}, index=adata.var_names)  # fmt: skip
    # scanpy's order (its sort by labels is stable), taken by position: var names may repeat
    order = df.reset_index(drop=True).sort_values(["highly_variable_nbatches", "highly_variable_rank"],
                                                  ascending=[False, True], na_position="last").index  # fmt: skip
    selected = np.zeros(len(df), dtype=bool)
    selected[order.to_numpy()[:n_top_genes]] = True
    df["highly_variable"] = selected
    if not inplace:
        if batch_key is None:
            df = df.drop(columns=["highly_variable_nbatches", "highly_variable_intersection"])
        return df[df["highly_variable"].to_numpy()] if subset else df
    make_actual(adata, warn=True)
    if subset:  # before any write, so that a failed subset leaves adata as it was
        keep = df["highly_variable"].to_numpy()
        adata._inplace_subset_var(keep)
        df = df.iloc[np.flatnonzero(keep)]
    adata.uns["hvg"] = {"flavor": "pearson_residuals", "computed_on": layer if layer else "adata.X"}
    # scanpy's hint lists the batch columns with or without batch_key (written only with one)
    settings.log_added_var([("highly_variable", "boolean"), ("highly_variable_rank", "float"),
                            ("highly_variable_nbatches", "int"), ("highly_variable_intersection", "boolean"),
                            ("means", "float"), ("variances", "float"), ("residual_variances", "float")])
    for column in ("means", "variances", "residual_variances", "highly_variable_rank"):
        adata.var[column] = df[column].to_numpy()
    if batch_key is not None:
        adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"].to_numpy()
        adata.var["highly_variable_intersection"] = df["highly_variable_intersection"].to_numpy()
    adata.var["highly_variable"] = df["highly_variable"].to_numpy()
    return None


def _batches(adata: AnnData, batch_key: str | None):
    """(scanpy's batches: the sorted labels, each cell's batch number, -1 for none). A float
    NaN label is a batch of no cells, as in scanpy (its cells are those whose label == NaN:
    none); it selects genes by their order, with all residual variances 0. Labels that cannot
    be sorted (strings and NaN) are refused with what to do."""
    if batch_key is None:
        return np.zeros(1), np.zeros(adata.n_obs, dtype=np.int64)
    labels = adata.obs[batch_key].to_numpy()
    try:
        batches = np.unique(labels)
    except TypeError:  # scanpy's np.unique raises a bare "'<' not supported" here
        missing = int(pd.isna(labels).sum())
        msg = (f"{_STEP}: adata.obs[{batch_key!r}] mixes labels that cannot be sorted together ({missing} missing "
               "values among text labels); give those cells a batch or drop them first.")
        raise TypeError(msg) from None
    codes = np.full(labels.size, -1, dtype=np.int64)
    for b, label in enumerate(batches):
        codes[labels == label] = b
    return batches, codes


def _variances(given, codes, sizes, theta: float, clip: float, check_values: bool):
    """(residual variances (batches x genes), the genes' (mean, variance) over all cells as
    scanpy's _get_mean_var) of counts in memory, a batch's rows at a time."""
    x = counts_matrix(given, step=_STEP, check_values=check_values, what=_WHAT)
    variances = [np.zeros(x.shape[1]) if size == 0 else residual_variances(
                     x if size == x.shape[0] else x[xp_of(x).asarray(np.flatnonzero(codes == b))], theta, clip)
                 for b, size in enumerate(sizes)]  # fmt: skip
    return np.vstack(variances), tuple(to_host(v) for v in _ops.col_mean_var(_ops.parts(x)))


def _dask_variances(given, codes, sizes, theta: float, clip: float, check_values: bool):
    """`_variances` of a Dask X (scanpy's selection takes none), all batches in each of two
    passes over the blocks (a pass a batch read every block once per batch, as each holds rows
    of every batch): the batches' column moments (their gene totals; the value check rides on
    them), then the residuals' sums and squared deviations from their mean."""
    x = canonical(given, step=_STEP)
    check_not_empty(x, step=_STEP)
    chunked = _ops.Chunked(x)
    # cells in no batch (a NaN label) as a group of their own: the value check and the genes'
    # moments are over all cells, as scanpy's
    moments = chunked.reduce_groups(_ops.checked_col_moments, np.where(codes < 0, sizes.size, codes), check_values)
    bad = int(np.logical_or.reduce([~np.isfinite(to_host(m[0])) for m in moments.values()]).sum())
    if bad:  # a gene total of NaN / inf: the data hold NaN or inf (refused, as in memory)
        msg = (f"{_STEP}: found NaN or inf values in {bad} gene{'s' if bad != 1 else ''} of the Dask array (their "
               "totals are not finite); fix or drop those entries first.")  # fmt: skip
        raise ValueError(msg)
    if any(bool(m[2]) for m in moments.values()):
        warn_not_counts(_WHAT)
    batches = [b for b in moments if b < sizes.size]  # those with cells (a NaN label's has none: variances 0)
    genes = {b: moments[b][0] for b in batches}
    totals = {b: float(genes[b].sum()) for b in batches}
    # each block's rows of a batch centred on their own mean, the blocks merged by Chan et al.'s
    # update: as stable as centring on the batch's mean, which took a pass of its own
    moments2 = chunked.reduce_groups(_block_residual_moments, codes, genes, totals, theta, clip, merge=_merge)
    variances = np.zeros((sizes.size, x.shape[1]))
    for b in batches:
        variances[b] = without_counts_zero(genes[b], moments2[b][2] / sizes[b])
    total, total_sq = (sum(to_host(m[k]) for m in moments.values()) for k in (0, 1))
    return variances, _ops.mean_var(total, total_sq, x.shape[0])


def _block_residual_moments(p, batch: int, genes, totals, theta: float, clip: float):
    """(rows, residual sums, sums of squared deviations from their mean) of a block's rows of one
    batch (a copy), with the batch's gene totals and matrix total, each row's total its own."""
    cells = _ops.row_sums(p)[0]
    n = p.shape[0]
    sums = _ops.residual_sums(p, cells, genes[batch], totals[batch], theta, clip)
    squares = _ops.residual_sums(p, cells, genes[batch], totals[batch], theta, clip, sums / n)
    return n, sums, squares


def _merge(a, b):
    """Chan, Golub & LeVeque's pairwise update of (count, sum, centred sum of squares)."""
    (na, sa, qa), (nb, sb, qb) = a, b
    n = na + nb
    delta = sb / nb - sa / na
    return n, sa + sb, qa + qb + delta * delta * (na * nb / n)
