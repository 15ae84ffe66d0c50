"""normalize_total: scale each cell to the same total count, like scanpy."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from anndata import AnnData

from .. import _ops
from .._backend import blocks_like, is_dask, is_sparse, to_host, xp_of
from .._settings import DEBUG, settings
from .._validation import (block_value_issues, canonical, check_counts, check_real, get_matrix,
                           make_actual, old_positionals, set_matrix, writable)

_STEP = "normalize_total"


@old_positionals("target_sum", "exclude_highly_expressed", "max_fraction", "key_added", "layer", "inplace",
                 "copy")
def normalize_total(
    adata: AnnData,
    *,
    target_sum: float | None = None,
    exclude_highly_expressed: bool = False,
    max_fraction: float = 0.05,
    key_added: str | None = None,
    layer: str | None = None,
    obsm: str | None = None,
    inplace: bool = True,
    copy: bool = False,
) -> AnnData | dict | None:
    """Normalize counts per cell, like :func:`scanpy.pp.normalize_total`.

    Each cell is divided by its total count over all genes (or over the genes that are not
    highly expressed) divided by `target_sum`, so that afterwards every cell sums to
    `target_sum`. Cells without counts are left as they are (with a warning).

    Parameters
    ----------
    adata
        Annotated data matrix with counts (finite; negative values are taken, as scanpy takes
        scaled data).
    target_sum
        Total per cell after normalisation; ``None`` takes the median of the nonzero totals,
        for every layout (scanpy's rule for dense data; scanpy 1.11's CSR path took the median
        over all cells, zero totals included, until scverse/scanpy#4256 made it this one).
    exclude_highly_expressed
        Leave out of the totals every gene that has more than `max_fraction` of a cell's total
        in at least one cell.
    max_fraction
        See `exclude_highly_expressed`; between 0 and 1.
    key_added
        ``adata.obs`` column for the normalisation factor (total / target_sum) of each cell.
    layer, obsm
        Normalise ``adata.layers[layer]`` or ``adata.obsm[obsm]`` instead of ``X``.
    inplace
        Update `adata`; otherwise return ``{'X': normalised matrix, 'norm_factor': factors}``.
    copy
        Work on and return a copy (not with ``inplace=False``).

    Returns
    -------
    ``adata`` (the copy) when ``copy``, the dict when not ``inplace``, else ``None``. The matrix
    stays on its device and in CSR/dense layout (CSC input becomes CSR); integer input becomes
    float32, as in scanpy.

    A Dask array chunked by rows (whole rows in each block) is accepted. With a `target_sum`, no
    `exclude_highly_expressed`, no `key_added` and `inplace`, nothing is read at the call: the
    result is a lazy Dask array with the same chunks whose blocks are checked, summed and divided
    (on copies) when it is computed, so each block is read once, as in scanpy; a bad value
    (negative, NaN) then raises at compute, and X is already the lazy array. Otherwise the totals
    and the checks take one pass over the blocks first (with `exclude_highly_expressed` it flags
    the genes above `max_fraction` of a cell's total too), and `exclude_highly_expressed` one more
    (the totals without those genes).
    """
    if copy:
        if not inplace:
            msg = f"{_STEP}: `copy=True` cannot be used with `inplace=False`."
            raise ValueError(msg)
        adata = adata.copy()
    max_fraction = check_real(max_fraction, "max_fraction", step=_STEP, none_ok=False)
    target_sum = check_real(target_sum, "target_sum", step=_STEP)
    if not 0 <= max_fraction <= 1:
        msg = f"{_STEP}: max_fraction must lie between 0 and 1, got {max_fraction}."
        raise ValueError(msg)
    if target_sum is not None and not (math.isfinite(target_sum) and target_sum > 0):
        msg = f"{_STEP}: target_sum must be a positive number or None, got {target_sum}."
        raise ValueError(msg)

    x0 = get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)
    x = canonical(x0, step=_STEP)
    totals64, issues = None, None  # float64 row totals where a value check already took them
    high = None  # exclude_highly_expressed's genes, where that pass found them too
    # With a fixed target and nothing to report, a Dask X stays lazy as in scanpy: each block's
    # totals, value check and division happen together when X is computed (one read, not two).
    dask_counts = is_dask(x) and x.dtype.kind in "iuf"
    lazy = dask_counts and target_sum is not None and not exclude_highly_expressed and key_added is None and inplace
    if lazy:
        issues = (0, 0)  # the values are checked block by block (_normalized_block)
    elif dask_counts and exclude_highly_expressed:  # and the genes above max_fraction, in the same pass
        flags = functools.partial(_issues_and_high, max_fraction=max_fraction, dtype=_values_dtype(x.dtype))
        totals64, (*issues, high) = _ops.parts(x).rows_and_sums(_block_row_sums, flags, sums_of_rows=True)
    elif dask_counts:  # the checks and the totals in one pass over the blocks
        totals64, issues = _ops.parts(x).rows_and_sums(_block_row_sums, block_value_issues)
    elif x.dtype.kind == "f":  # in memory: the totals are the value check (one read, not two)
        totals64, issues = _checked_totals(_ops.parts(x))
    check_counts(x, step=_STEP, negative_ok=True, issues=issues)  # scanpy takes scaled data too
    start = settings.log("normalizing counts per cell")
    if inplace and adata.is_view:  # in-place work must never reach the parent of a view
        make_actual(adata, warn=True)
        x0 = get_matrix(adata, layer=layer, obsm=obsm, step=_STEP)
        x = canonical(x0, step=_STEP)
    if x.dtype.kind != "f":  # scanpy's choices: float32 for integer counts, float64 for bools
        x = x.astype(_values_dtype(x.dtype))
    elif not inplace and x is x0:
        x = x.copy()
    else:
        x = writable(x)  # read-only values: divided in a copy that replaces them
    # scanpy divides by totals (in the values' dtype) / target_sum: a float64 target_sum
    # (np.float64, np.int64, a 0-d array; not a Python number) makes them float64, and so its
    # sparse result (a dense X is divided into itself and keeps its dtype)
    dtype0 = x.dtype
    factor_dtype = dtype0 if target_sum is None else np.result_type(dtype0, target_sum)
    if factor_dtype != dtype0 and is_sparse(blocks_like(x)):
        x = x.astype(factor_dtype)
    p = _ops.parts(x)
    if lazy:
        set_matrix(adata, p.update(_normalized_block, target_sum), layer=layer, obsm=obsm)
        _log_finished(start, key_added)
        return adata if copy else None

    totals = (_ops.row_sums(p)[0] if totals64 is None else totals64).astype(dtype0)  # scanpy: value dtype
    xp = xp_of(totals)
    if exclude_highly_expressed:
        high = _ops.flag_cols_above(p, max_fraction * totals.astype(np.float64)) if high is None else xp.asarray(high)
        totals = _ops.row_sums(p, col_mask=~high)[0].astype(dtype0)
        names = adata.var_names[to_host(high)].tolist()
        settings.log("The following highly-expressed genes are not considered during normalization factor "
                     f"computation:\n{names}")  # fmt: skip
    if target_sum is None:
        nonzero = totals[totals > 0]
        if nonzero.size == 0 and totals.size and x.shape[1]:  # no cells or genes: nothing to scale, no median needed
            left = (f" outside the {len(names)} highly expressed genes left out (max_fraction={max_fraction}; "
                    "raise it, or") if exclude_highly_expressed and names else " (so the median total is undefined;"
            msg = f"{_STEP}: every cell has zero counts{left} pass target_sum)."
            raise ValueError(msg)
        target_sum = xp.median(nonzero) if nonzero.size else np.nan  # nothing to scale: scanpy's NaN factors
    norm_factor = (totals / target_sum).astype(factor_dtype, copy=False)  # NumPy's promotion, on a GPU too

    divided = _ops.divide_rows(p, norm_factor)  # in place; a Dask matrix: a lazy divided copy
    x = x if divided is None else divided
    if bool((totals <= 0).any()):  # scanpy's test (totals > 0 everywhere), negative totals included
        warnings.warn("Some cells have zero counts", UserWarning, stacklevel=2)

    if not inplace:
        _log_finished(start, key_added)
        return {"X": x, "norm_factor": norm_factor}
    if key_added is not None:
        adata.obs[key_added] = to_host(norm_factor)
    set_matrix(adata, x, layer=layer, obsm=obsm)
    _log_finished(start, key_added)
    return adata if copy else None


def _log_finished(start: float, key_added) -> None:
    """scanpy's closing lines, the debug one wherever `key_added` is given (written or not)."""
    settings.log("    finished ({time_passed})", start=start)
    if key_added is not None:
        settings.log(f"and added {key_added!r}, counts per cell before normalization (adata.obs)", level=DEBUG)


def _block_row_sums(p):
    return _ops.row_sums(p)[0]


def _values_dtype(dtype) -> np.dtype:
    """The dtype normalize_total divides in: float input's own; scanpy's float32 for integer
    counts, float64 for booleans."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64 if dtype.kind == "b" else np.float32)


def _issues_and_high(p, totals64, *, max_fraction: float, dtype) -> tuple:
    """A block's (non-finite, negative) value counts and its genes above `max_fraction` of a
    cell's total (its float64 `totals64` rounded to the values' `dtype`, as the in-memory flags
    take them, and the values too: integers above 2**24 round in float32): a cell's flags need
    its own total only, so the pass that takes the totals flags them too."""
    issues = block_value_issues(p)
    if p.data.dtype != dtype:
        p = p._replace(data=p.data.astype(dtype))
    return (*issues, _ops.flag_cols_above(p, max_fraction * totals64.astype(dtype).astype(np.float64)))


def _checked_totals(p) -> tuple:
    """The float64 row totals of a matrix's (or block's) parts and its (non-finite, negative)
    value counts, the totals doubling as the check: a NaN or inf makes its row's total
    non-finite, and only then are the values counted (a non-finite total of finite values, an
    overflow of float64 ones, counts none). Where every total is finite, negatives are not
    counted: normalize_total takes them."""
    totals = _block_row_sums(p)
    return totals, (0, 0) if bool(xp_of(totals).isfinite(totals).all()) else block_value_issues(p)


def _normalized_block(p, target_sum) -> None:
    """One block divided by its cells' totals / target_sum in place, as the eager path divides;
    its totals are its value check, as there."""
    totals, (n_bad, _) = _checked_totals(p)
    if n_bad:
        msg = (f"{_STEP}: expects counts but found {n_bad} non-finite values (NaN or inf) in a block of "
               "the Dask array; fix or drop those entries first.")  # fmt: skip
        raise ValueError(msg)
    _ops.divide_rows(p, totals.astype(p.data.dtype) / target_sum)
