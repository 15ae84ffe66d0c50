"""scanpy.experimental.pp.highly_variable_genes: genes ranked by the variance of their analytic
Pearson residuals (Lause et al. 2021), within each batch, then merged as scanpy merges them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from anndata import AnnData

from ... import _ops
from ..._backend import is_dask, to_host, xp_of
from ..._validation import canonical, check_n_top_genes, check_not_empty, get_matrix, make_actual
from ._residuals import check_theta_clip, counts_matrix, residual_variances, warn_not_counts

_STEP = "highly_variable_genes"


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
    x, (means, gene_vars), take_rows = _counts(get_matrix(adata, layer=layer, step=_STEP), check_values)
    labels = np.zeros(adata.n_obs, dtype=int) if batch_key is None else adata.obs[batch_key].to_numpy()
    batches = np.unique(labels)
    variances = []
    for batch in batches:
        rows = np.flatnonzero(labels == batch)
        part = x if rows.size == x.shape[0] else take_rows(rows)
        if clip is None:  # scanpy sets it in its first batch and keeps it for the others
            clip = math.sqrt(part.shape[0])
        variances.append(residual_variances(part, float(theta), float(clip)))
    variances = np.vstack(variances)
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
    adata.uns["hvg"] = {"flavor": "pearson_residuals", "computed_on": layer if layer else "adata.X"}
    for column in ("means", "variances", "residual_variances", "highly_variable_rank"):
        adata.var[column] = df[column].to_numpy()
    if batch_key is not None:
        adata.var["highly_variable_nbatches"] = df["highly_variable_nbatches"].to_numpy()
        adata.var["highly_variable_intersection"] = df["highly_variable_intersection"].to_numpy()
    adata.var["highly_variable"] = df["highly_variable"].to_numpy()
    if subset:
        adata._inplace_subset_var(df["highly_variable"].to_numpy())
    return None


def _counts(given, check_values: bool):
    """(the counts as the residual sums read them, the genes' (mean, variance) over all cells as
    scanpy's _get_mean_var, a function giving the counts' rows `rows`). In memory: a
    `counts_matrix`. A Dask array (which scanpy's selection does not take) stays lazy: one pass
    for the value check and the moments, then each batch's rows read three times (the totals,
    the residuals' mean, their variance), block by block."""
    what = "`flavor='pearson_residuals'`"
    if not is_dask(given):
        x = counts_matrix(given, step=_STEP, check_values=check_values, what=what)
        mean_var = tuple(to_host(v) for v in _ops.col_mean_var(_ops.parts(x)))
        return x, mean_var, lambda rows: x[xp_of(x).asarray(rows)]
    x = canonical(given, step=_STEP)
    check_not_empty(x, step=_STEP)
    chunked = _ops.Chunked(x)
    sums, squares, bad = chunked.reduce(_ops.checked_col_moments)
    if check_values and bool(bad):
        warn_not_counts(what)
    mean_var = tuple(to_host(v) for v in _ops.mean_var(sums, squares, x.shape[0]))
    return x, mean_var, chunked.take_rows

