"""filter_cells / filter_genes: keep cells (genes) by their counts or number of expressed genes
(cells), like scanpy."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .. import _ops
from .._ops.take_cols import take_cols, take_cols_arrays
from .._ops._layout import in_layout
from .._backend import is_dask, is_gpu, is_sparse, to_host
from .._settings import INFO, settings
from .._validation import (block_value_issues, canonical, check_count_dtype, check_counts, check_real, old_positionals,
                           sum_dtype)
from .._values import float_values
from ._qc import _gene_stats_and_issues


@old_positionals("min_counts", "min_genes", "max_counts", "max_genes", "inplace", "copy")
def filter_cells(
    data,
    *,
    min_counts: int | None = None,
    min_genes: int | None = None,
    max_counts: int | None = None,
    max_genes: int | None = None,
    inplace: bool = True,
    copy: bool = False,
):
    """Filter cells on total counts or number of expressed genes (one criterion per call).

    Like :func:`scanpy.pp.filter_cells`. `data` is an AnnData or a matrix (numpy, scipy sparse,
    cupy, cupyx sparse). As in scanpy, a gene counts as expressed where its value is above zero,
    so scaled data (negative values) are taken too.

    Returns
    -------
    For an AnnData with ``inplace=True``: ``None`` (or the filtered copy with ``copy=True``); the
    cells are subset and ``obs['n_counts']`` (value dtype) or ``obs['n_genes']`` (int64) holds
    the number each cell was judged on. Otherwise ``(cell_subset, number_per_cell)``: host numpy
    arrays (bool, number).

    From verbosity 2 (ours or scanpy's) it writes scanpy's line on the cells it left out
    ("filtered out 655 cells that have less than 300 genes expressed"); for a bare Dask array,
    whose results are lazy, that count is computed only where the line shows (scanpy's computes
    it at any verbosity, and its line shows the lazy array's repr, not the number).
    """
    return _filter(data, axis=0, counts=(min_counts, max_counts), nums=(min_genes, max_genes),
                   inplace=inplace, copy=copy)  # fmt: skip


@old_positionals("min_counts", "min_cells", "max_counts", "max_cells", "inplace", "copy")
def filter_genes(
    data,
    *,
    min_counts: int | None = None,
    min_cells: int | None = None,
    max_counts: int | None = None,
    max_cells: int | None = None,
    inplace: bool = True,
    copy: bool = False,
):
    """Filter genes on total counts or number of cells expressing them (one criterion per call).

    Like :func:`scanpy.pp.filter_genes`; see :func:`filter_cells` for `data` and the returns,
    with ``var['n_counts']`` / ``var['n_cells']``.
    """
    return _filter(data, axis=1, counts=(min_counts, max_counts), nums=(min_cells, max_cells),
                   inplace=inplace, copy=copy)  # fmt: skip


# axis 0 filters cells (obs), axis 1 genes (var)
_WHAT = {0: ("filter_cells", "genes", K.OBS_N_COUNTS, K.OBS_N_GENES),
         1: ("filter_genes", "cells", K.VAR_N_COUNTS, K.VAR_N_CELLS)}  # fmt: skip


def cells_above(data, min_counts, *, step: str, log: bool = True) -> tuple:
    """(kept, total) per cell of an AnnData's X or a matrix: filter_cells(min_counts=...,
    inplace=False) for another step, whose name its errors give; `log`: scanpy's line on the
    cells filtered out (for a bare Dask matrix, whose results are lazy, only where it shows)."""
    return _filter(data, axis=0, counts=(min_counts, None), nums=(None, None), inplace=False, copy=False, step=step,
                   log=log)  # fmt: skip


def log_filtered(n_out, *, axis: int, counts, nums) -> None:
    """scanpy's info line on the cells (axis 0) or genes (axis 1) a filter left out, where it
    left any: "filtered out 655 cells that have less than 300 genes expressed", "filtered out
    57 genes that are detected in less than 30 cells" (`counts`, `nums`: the (min, max) bounds
    as given, one of the four set)."""
    n_out = int(n_out)
    if n_out <= 0:
        return
    (min_counts, max_counts), (min_num, max_num) = counts, nums
    if axis == 0:
        head, where, num_unit = f"filtered out {n_out} cells that have ", "", "genes expressed"
    else:
        head, where, num_unit = f"filtered out {n_out} genes that are detected ", "in ", "cells"
    if min_num is not None or min_counts is not None:
        head += f"{where}less than " + (f"{min_num} {num_unit}" if min_counts is None else f"{min_counts} counts")
    if max_num is not None or max_counts is not None:
        head += f"{where}more than " + (f"{max_num} {num_unit}" if max_counts is None else f"{max_counts} counts")
    settings.log(head)


def _filter(data, *, axis, counts, nums, inplace, copy, step=None, log=True, negative_ok=True):
    """`negative_ok=False`: a step that needs counts (a recipe that logs) refuses negative values
    in the filter's own check, on a Dask X in its statistics' pass, before adata changes."""
    name, unit, key_counts, key_num = _WHAT[axis]
    step = step or name
    given_bounds = {"counts": counts, "nums": nums}  # as given: scanpy's log line writes them so
    keys = ("min_counts", "max_counts", f"min_{unit}", f"max_{unit}")
    bounds = [check_real(v, k, step=step) for k, v in zip(keys, (*counts, *nums), strict=True)]
    counts, nums = tuple(bounds[:2]), tuple(bounds[2:])
    if copy:  # scanpy's log line
        settings.warning("`copy` is deprecated, use `inplace` instead.")
    given = [v for v in (*counts, *nums) if v is not None]
    if len(given) != 1:
        msg = (
            f"{step}: give exactly one of min_counts, min_{unit}, max_counts, max_{unit} per "
            f"call; got {len(given)}."
        )
        raise ValueError(msg)
    by_counts = any(v is not None for v in counts)
    low, high = counts if by_counts else nums

    adata = data if isinstance(data, AnnData) else None
    x = canonical(adata.X if adata is not None else data, step=step, sum_duplicates=True)  # stored counts
    in_pass = adata is not None and is_dask(x)  # values checked in the statistics' pass (one read)
    if in_pass:
        check_count_dtype(x, step=step)
    else:
        n_neg = check_counts(x, step=step, negative_ok=negative_ok)
    if adata is None and is_dask(x):  # a bare Dask array: lazy results, as scanpy returns
        number = _lazy_numbers(x, axis, by_counts=by_counts, positives=bool(n_neg))
        keep = number >= low if low is not None else number <= high
        if log and settings.shows(INFO):  # the count costs a pass: only for a line shown
            log_filtered((~keep).sum().compute(), axis=axis, **given_bounds)
        return keep, number
    p = _ops.parts(float_values(x))
    if in_pass:
        if axis == 0:
            (sums, nnz), issues = p.rows_and_sums(_ops.row_sums, block_value_issues)
        else:
            sums, nnz, *issues = p.reduce(_gene_stats_and_issues)
        n_neg = check_counts(x, step=step, negative_ok=negative_ok, issues=tuple(issues))
    else:
        sums, nnz = _ops.row_sums(p) if axis == 0 else _ops.col_sums(p)
    sums, nnz = to_host(sums), to_host(nnz)
    if n_neg and not by_counts:  # scanpy counts the values above zero (scaled data): X > 0
        q = _ops.parts(_positives(x))
        nnz = to_host((_ops.row_sums(q) if axis == 0 else _ops.col_sums(q))[1])
    number = sums.astype(sum_dtype(x.dtype)) if by_counts else nnz.astype(np.int64)
    keep = number >= low if low is not None else number <= high
    if log:
        log_filtered(keep.size - np.count_nonzero(keep), axis=axis, **given_bounds)

    if adata is None or not inplace:
        return keep, number
    if copy:
        adata = adata.copy()
    (adata.obs if axis == 0 else adata.var)[key_counts if by_counts else key_num] = number
    # scanpy counts expressed genes (cells) with `X > 0`, and scipy's comparison sums a sparse X's
    # duplicates and sorts its indices in place, so scanpy's filtered X is canonical (a view's X
    # is a new matrix at each access: its result is not). The filtered X here is a new matrix:
    # the same there, and the caller's matrix is left as given.
    canonicalise = not by_counts and not adata.is_view and not adata.isbacked
    _subset_inplace(adata, keep, axis)
    if canonicalise and sp.issparse(adata.X) and not adata.X.has_canonical_format:
        adata.X.sum_duplicates()
    return adata if copy else None


def _block_numbers(b, axis: int, by_counts: bool, positives: bool, dtype) -> np.ndarray:
    """One in-memory block's per-cell (axis 0) or per-gene (axis 1, as a 1 x genes row) totals:
    the sums, or the number of values above zero (stored nonzeros where nothing is negative)."""
    b = _ops.summed_duplicates(b)  # a count of stored values needs them summed (as in memory)
    v = b if by_counts else (_positives(b) if positives or not is_sparse(b) else _nonzero_ones(b))
    # float64 adding through our primitives, as the in-memory path: scipy's and cupyx's
    # sum(dtype=float64) add float32 data in float32 and cast the sum (a block's gene total past
    # 2**24 would be off)
    p = _ops.parts(float_values(in_layout(v)))
    out = (_ops.row_sums(p) if axis == 0 else _ops.col_sums(p))[0].ravel().astype(dtype)
    return out if axis == 0 else out[None, :]


def _nonzero_ones(b):
    y = b.copy()
    y.data = (b.data != 0).astype(np.float32)
    return y


def _lazy_numbers(x, axis: int, *, by_counts: bool, positives: bool):
    """Per-cell or per-gene totals of a row-chunked Dask array, lazily: per-cell ones block by
    block, per-gene ones summed over the blocks (float64 within a block, as the in-memory path)."""
    dtype = sum_dtype(x.dtype) if by_counts else np.int64
    if axis == 0:
        return x.map_blocks(_block_numbers, 0, by_counts, positives, dtype, drop_axis=1, dtype=dtype)
    rows = x.map_blocks(_block_numbers, 1, by_counts, positives, np.float64,
                        chunks=((1,) * x.numblocks[0], (x.shape[1],)), dtype=np.float64)  # fmt: skip
    return rows.sum(axis=0).astype(dtype)


def _positives(x):
    """1.0 where `x` is above zero, 0 elsewhere, in `x`'s storage (lazily for Dask)."""
    if is_dask(x):
        return x.map_blocks(_positives, dtype=np.float32)
    if is_sparse(x):
        y = x.copy()
        y.data = (x.data > 0).astype(np.float32)
        return y
    return (x > 0).astype(np.float32)


def _subset_inplace(adata: AnnData, keep, axis: int) -> None:
    """anndata's in-place subset, with X taken out first and subset once by scipy where it is an
    in-memory scipy matrix: anndata subsets it into a view and then copies that, two allocations
    and two passes over the largest array (the rest, layers included, is anndata's as usual). A
    CSR's columns are taken on all threads (`take_cols`), or on the GPU by `take_cols_arrays`
    in a few passes (filter took 1.16 s at 1M cells on an H200 against qc's 0.08, 2026-12-04;
    which half costs it is not measured yet, and cupyx's column indexing sorts what it keeps)."""
    subset = adata._inplace_subset_obs if axis == 0 else adata._inplace_subset_var
    x = adata.X
    gpu_csr = is_gpu(x) and is_sparse(x) and x.format == "csr"
    # host sparse (is_gpu, not sp.issparse: the kernel emulator's device matrices are scipy's
    # subclasses, so that test took a path a real GPU's cupyx matrix never takes), or GPU CSR columns
    host_sparse = is_sparse(x) and not is_gpu(x)
    if adata.is_view or adata.isbacked or not (host_sparse or (gpu_csr and axis == 1)):
        subset(keep)
        return
    if axis == 0:
        x_kept = x[keep]
    elif x.format == "csr":
        x_kept = take_cols_arrays(x, keep) if gpu_csr else take_cols(x, keep)
    else:
        x_kept = x[:, keep]
    adata.X = None
    try:
        subset(keep)
    except BaseException:
        adata.X = x
        raise
    adata.X = x_kept
