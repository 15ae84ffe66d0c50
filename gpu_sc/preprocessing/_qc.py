"""calculate_qc_metrics: per-cell and per-gene quality-control metrics, as scanpy names them."""

from __future__ import annotations

import warnings
from collections.abc import Collection

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys as K
from .. import _ops
from .._backend import blocks_like, is_dask, is_sparse, to_host
from .._ops._chunked import Chunked
from .._settings import user_stacklevel
from .._validation import (block_value_issues, canonical, check_count_dtype, check_counts, get_matrix,
                           sum_dtype)
from .._values import float_values

_STEP = "calculate_qc_metrics"


def calculate_qc_metrics(
    adata: AnnData,
    *,
    expr_type: str = "counts",
    var_type: str = "genes",
    qc_vars: Collection[str] | str = (),
    percent_top: Collection[int] | None = (50, 100, 200, 500),
    layer: str | None = None,
    use_raw: bool = False,
    inplace: bool = False,
    log1p: bool = True,
    parallel: bool | None = None,  # scanpy's deprecated argument, without effect there either
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Calculate quality-control metrics, like :func:`scanpy.pp.calculate_qc_metrics`.

    Runs on the GPU when the matrix is a cupy / cupyx array, on the CPU otherwise. The input
    matrix is never modified (scanpy drops explicit zeros from it; gpu_sc does not need to).
    A Dask array chunked by rows is reduced block by block (the metrics are computed).

    Parameters
    ----------
    adata
        Annotated data matrix with counts (finite; negative values are taken, as scanpy takes
        scaled data).
    expr_type, var_type
        Names used in the metric keys (``total_{expr_type}``, ``n_{var_type}_by_{expr_type}``).
    qc_vars
        Boolean columns of ``adata.var`` (e.g. ``"mt"``) to compute the share of counts for.
    percent_top
        Ranks n for ``pct_{expr_type}_in_top_{n}_{var_type}``; ``None`` or empty skips them.
    layer, use_raw
        Take the counts from ``adata.layers[layer]`` or ``adata.raw.X`` instead of ``X``.
    inplace
        Write the metrics into ``adata.obs`` and ``adata.var`` instead of returning them.
    log1p
        Also write ``log1p_*`` versions of the count metrics.
    parallel
        scanpy's deprecated argument, without effect (a FutureWarning where given, as scanpy's).

    Returns
    -------
    ``(obs_metrics, var_metrics)`` DataFrames when ``inplace=False``, else ``None`` and:

    ``adata.obs``: ``n_{var_type}_by_{expr_type}`` (int; indptr dtype for CSR, else int64), ``total_{expr_type}``
    (value dtype; int64 for integer input), ``pct_{expr_type}_in_top_{n}_{var_type}`` (float64),
    ``total_{expr_type}_{qc_var}`` and ``pct_{expr_type}_{qc_var}`` for each qc var, and the
    ``log1p_`` forms when ``log1p``.

    ``adata.var``: ``n_cells_by_{expr_type}`` (int64; indptr dtype for CSC), ``mean_{expr_type}`` (float64),
    ``pct_dropout_by_{expr_type}`` (float64), ``total_{expr_type}`` and the ``log1p_`` forms.
    """
    if parallel is not None:
        warnings.warn("Argument `parallel` is deprecated, and currently has no effect.", FutureWarning,
                      stacklevel=user_stacklevel())  # scanpy's words
    given = get_matrix(adata, layer=layer, use_raw=use_raw, step=_STEP)
    x = canonical(given, step=_STEP, sum_duplicates=True)  # counts of stored values, top sums
    # scanpy takes scaled data too; a Dask X's values are checked in the statistics' pass (the
    # dtype here, before any read)
    if is_dask(x):
        check_count_dtype(x, step=_STEP)
    else:
        check_counts(x, step=_STEP, negative_ok=True)
    n_cells, n_genes = x.shape
    qc_vars = [qc_vars] if isinstance(qc_vars, str) else list(qc_vars)
    qc_masks = {q: _qc_mask(adata, q, n_genes) for q in qc_vars}
    ns, labels = _check_percent_top(percent_top, n_genes)

    p = _ops.parts(float_values(x))
    out_sum = sum_dtype(x.dtype)
    # scanpy's count dtypes: the index dtype along the compressed axis of a sparse matrix (cells
    # for CSR, genes for a given CSC), int64 along the other and for dense data
    given, layout = blocks_like(given), blocks_like(x)
    csc = is_sparse(given) and given.format == "csc"
    cell_nnz_dtype = layout.indptr.dtype if is_sparse(layout) and not csc else np.dtype(np.int64)
    gene_nnz_dtype = given.indptr.dtype if csc else np.dtype(np.int64)

    masks = list(qc_masks.values())
    if isinstance(p, Chunked):  # every statistic, and the value check, in one pass over the blocks
        per_cell, (gene_sums, gene_nnz, *issues) = p.rows_and_sums(_cell_stats, _gene_stats_and_issues, ns, masks)
        check_counts(x, step=_STEP, negative_ok=True, issues=tuple(issues))
    else:
        per_cell, (gene_sums, gene_nnz) = _cell_stats(p, ns, masks), _ops.col_sums(p)
    totals, nnz, top, *qc_totals = (to_host(a) for a in per_cell)
    gene_sums, gene_nnz = to_host(gene_sums), to_host(gene_nnz)

    obs = pd.DataFrame(index=adata.obs_names.copy())
    _put(obs, K.qc_obs_n_vars(expr_type, var_type), nnz.astype(cell_nnz_dtype), log1p)
    _put(obs, K.qc_total(expr_type), totals.astype(out_sum), log1p)
    if ns.size:
        with np.errstate(invalid="ignore", divide="ignore"):
            for i, label in enumerate(labels):
                obs[K.qc_obs_pct_top(expr_type, var_type, label)] = top[:, i] / totals * 100
    total_col = obs[K.qc_total(expr_type)]
    for q, qc_total in zip(qc_masks, qc_totals, strict=True):
        _put(obs, K.qc_obs_total_qc(expr_type, q), qc_total.astype(out_sum), log1p)
        with np.errstate(invalid="ignore", divide="ignore"):
            obs[K.qc_obs_pct_qc(expr_type, q)] = obs[K.qc_obs_total_qc(expr_type, q)] / total_col * 100

    var = pd.DataFrame(index=adata.var_names.copy() if not use_raw else adata.raw.var_names.copy())
    var[K.qc_var_n_cells(expr_type)] = gene_nnz.astype(gene_nnz_dtype)
    _put(var, K.qc_var_mean(expr_type), gene_sums / n_cells, log1p)
    var[K.qc_var_pct_dropout(expr_type)] = (1 - gene_nnz / n_cells) * 100
    _put(var, K.qc_total(expr_type), gene_sums.astype(out_sum), log1p)

    if not inplace:
        return obs, var
    adata.obs[obs.columns] = obs
    adata.var[var.columns] = var  # with use_raw, as scanpy: aligned on the gene names (NaN for genes not in raw)
    return None


def _gene_stats_and_issues(p) -> tuple:
    """(sums, nonzero counts) per gene and the block's (non-finite, negative) value counts: the
    statistics and the value check of a Dask X in one pass (QC, filter_genes)."""
    return (*_ops.col_sums(p), *block_value_issues(p))


def _cell_stats(p, ns, masks) -> tuple:
    """(totals, nonzero counts, top-n sums, total over each qc mask) per cell."""
    totals, nnz = _ops.row_sums(p)
    top = _ops.top_sums(p, ns) if ns.size else totals[:, None][:, :0]
    return (totals, nnz, top, *(_ops.row_sums(p, col_mask=m)[0] for m in masks))


def _put(df: pd.DataFrame, key: str, values: np.ndarray, log1p: bool) -> None:
    df[key] = values
    if log1p:
        df[K.log1p_of(key)] = np.log1p(values)


def _qc_mask(adata: AnnData, name: str, n_genes: int) -> np.ndarray:
    if not isinstance(name, str):
        msg = (f"{_STEP}: qc_vars takes names of boolean adata.var columns, got an entry of type "
               f"{type(name).__name__}; put a mask in adata.var first, e.g. adata.var['mt'] = mask, "
               "and pass qc_vars=['mt'].")  # fmt: skip
        raise KeyError(msg)
    if name not in adata.var.columns:
        msg = (f"{_STEP}: qc_vars entry {name!r} is not a column of adata.var; add it first, e.g. "
               f"adata.var[{name!r}] = adata.var_names.str.startswith('MT-').")
        raise KeyError(msg)
    mask = adata.var[name].to_numpy()
    if mask.dtype != bool:
        msg = f"{_STEP}: adata.var[{name!r}] must be boolean, got dtype {mask.dtype}."
        raise ValueError(msg)
    if mask.shape != (n_genes,):  # use_raw after a gene filter: raw has more genes than var
        msg = (f"{_STEP}: adata.var[{name!r}] has {mask.size} values but the matrix read has {n_genes} genes "
               "(use_raw=True reads adata.raw, whose genes var no longer lists after a gene filter); mark "
               "the genes over the matrix's genes, or pass use_raw=False.")  # fmt: skip
        raise ValueError(msg)
    return mask


def _check_percent_top(percent_top, n_genes: int) -> tuple[np.ndarray, list]:
    """(the ranks ascending, as ints, and the values as given in that order): scanpy names each
    column after the value given (`..._top_5.0_genes`) and ranks by its integer part."""
    if not percent_top:
        return np.empty(0, np.int64), []
    given = list(percent_top)
    order = np.argsort(np.asarray(given, dtype=np.float64), kind="stable")
    ns = np.asarray(given, dtype=np.float64)[order].astype(np.int64)
    if ns[0] < 1 or ns[-1] > n_genes:
        msg = f"{_STEP}: percent_top ranks must lie in 1..{n_genes} (the number of genes), got {given}."
        raise IndexError(msg)
    return ns, [given[i] for i in order]
