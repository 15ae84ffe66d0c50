"""normalize_per_cell: scanpy's deprecated normalisation, which also drops cells below
`min_counts` (default 1: the cells without counts), from our filter and row division, so that it
runs where X lives (scanpy's is broken for Dask X, by its own tests' account)."""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from .. import _ops
from .._backend import blocks_like, describe, is_dask, is_gpu, is_sparse, to_host, xp_of
from .._settings import settings, user_stacklevel
from .._validation import canonical, check_anndata, make_actual, old_positionals
from ._filter import _subset_inplace, cells_above, log_filtered

_STEP = "normalize_per_cell"


@old_positionals("counts_per_cell_after", "counts_per_cell", "key_n_counts", "copy", "layers", "use_rep",
                 "min_counts")  # fmt: skip
def normalize_per_cell(data, *, counts_per_cell_after: float | None = None, counts_per_cell=None,
                       key_n_counts: str = "n_counts", copy: bool = False, layers=(), use_rep: str | None = None,
                       min_counts: int = 1):  # fmt: skip
    """Normalise each cell by its total count, like scanpy's deprecated :func:`scanpy.pp.normalize_per_cell`.

    Prefer :func:`gpu_sc.pp.normalize_total` (plus :func:`gpu_sc.pp.filter_cells`). For an
    AnnData without `counts_per_cell`: the cells with fewer than `min_counts` counts are dropped
    (their totals first stored in ``obs[key_n_counts]``, for every cell), and each remaining
    cell is divided by its total / `counts_per_cell_after` (default: the median total of the
    kept cells). `layers` (names, or ``'all'``) are normalised the same way by their own totals,
    to `counts_per_cell_after` (``use_rep='after'``), the median of X's totals (``'X'``) or
    their own median (None). A matrix is normalised in place (``copy=True`` returns a normalised
    copy, and is needed to drop cells). Integer values become float32; CSC stays CSC. It warns
    as scanpy does. With ``use_rep='X'`` the layers go to the median of X's totals (scanpy's
    takes its totals after dividing them in place, and raises IndexError where cells were dropped).
    """
    warnings.warn("Use sc.pp.normalize_total instead", FutureWarning, stacklevel=user_stacklevel())
    if use_rep not in ("after", "X", None):
        msg = 'use_rep should be "after", "X" or None'
        raise ValueError(msg)
    if counts_per_cell_after is not None and not counts_per_cell_after > 0:
        msg = f"{_STEP}: counts_per_cell_after must be a positive number or None, got {counts_per_cell_after!r}."
        raise ValueError(msg)
    if not isinstance(data, AnnData):
        x = data.copy() if copy else data
        if not copy and not _divisible_in_place(x):
            msg = (f"{_STEP}: a matrix is normalised in place only when it is float CSR, CSC or dense in memory; "
                   f"got {describe(x)}; pass copy=True (the normalised copy is returned).")  # fmt: skip
            raise ValueError(msg)
        if counts_per_cell is None:
            if not copy:
                msg = "Can only be run with copy=True"
                raise ValueError(msg)
            keep, counts_per_cell = _totals(x, min_counts)
            rows = np.flatnonzero(keep)  # positions: Dask and cupyx index by them, not by host masks
            x = x[xp_of(x).asarray(rows) if is_gpu(x) else rows]
            counts_per_cell = counts_per_cell[keep]
        out = _normalized(x, _given_counts(counts_per_cell, x.shape[0]), counts_per_cell_after)
        if not copy and out is not x:  # normalised in a copy of the forms numba takes (big-endian
            # values, int32 pointers beside int64 indices; the same entries): the values go back
            (x.data if is_sparse(x) else x)[...] = out.data if is_sparse(out) else out
        return out if copy else None

    check_anndata(data, step=_STEP, name="data")
    names = list(data.layers.keys() if isinstance(layers, str) and layers == "all" else
                 [layers] if isinstance(layers, str) else layers)  # fmt: skip
    missing = [n for n in names if n not in data.layers]
    if missing:
        msg = f"{_STEP}: no layers {missing} in adata (layers: {list(data.layers.keys())})."
        raise KeyError(msg)
    given = None if counts_per_cell is None else _given_counts(counts_per_cell, data.n_obs)
    start = settings.log("normalizing by total count per cell")
    # every total (and value check) before anything changes: a layer's NaN must not leave X divided
    keep, counts = cells_above(data, min_counts, step=_STEP) if given is None else (None, given)
    layer_totals = {n: _totals(data.layers[n], min_counts, log=False) for n in names}
    layer_counts = {n: c for n, (_, c) in layer_totals.items()}
    for kept, _ in layer_totals.values():  # scanpy filters each layer's cells after X's: those X kept
        log_filtered(np.count_nonzero(~kept if keep is None else keep & ~kept), axis=0, counts=(min_counts, None),
                     nums=(None, None))  # fmt: skip
    adata = data.copy() if copy else data
    make_actual(adata)  # the division is in place: never into a view's parent
    if keep is not None:
        adata.obs[key_n_counts] = counts
        _subset_inplace(adata, keep, axis=0)
        counts = counts[keep]
        layer_counts = {n: c[keep] for n, c in layer_counts.items()}
    adata.X = _normalized(adata.X, counts, counts_per_cell_after)
    # use_rep='X': the median of X's totals, as documented (scanpy's takes it from its totals after
    # dividing them in place, and raises IndexError where cells were dropped)
    after = {"after": counts_per_cell_after, "X": np.median(counts), None: None}[use_rep]
    for name in names:
        adata.layers[name] = _normalized(adata.layers[name].copy(), layer_counts[name], after)
    settings.log("    finished ({time_passed}): normalized adata.X and added\n"
                 f"    {key_n_counts!r}, counts per cell before normalization (adata.obs)", start=start)  # fmt: skip
    return adata if copy else None


def _given_counts(counts, n: int) -> np.ndarray:
    """`counts_per_cell` as a host 1-D array of one total per cell (a column or np.matrix of
    X.sum(1) taken), or a clear error."""
    counts = np.asarray(to_host(counts) if is_gpu(counts) else counts).ravel()
    if counts.size != n:
        msg = f"{_STEP}: counts_per_cell has {counts.size} values for {n} cells; give one total per cell."
        raise ValueError(msg)
    return counts


def _divisible_in_place(x) -> bool:
    """Whether `_normalized` divides `x` itself (float CSR / CSC, float dense in any order)."""
    if is_dask(x) or getattr(x, "dtype", np.dtype(object)).kind != "f":
        return False
    return x.format in ("csr", "csc") if is_sparse(x) else hasattr(x, "flags")


def _totals(x, min_counts, *, log: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(kept, total) per cell, host arrays (a Dask matrix's computed); `log`: scanpy's line on the
    cells left out."""
    keep, counts = cells_above(x, min_counts, step=_STEP, log=False)
    if is_dask(counts):
        import dask

        keep, counts = dask.compute(keep, counts)
    keep, counts = np.asarray(to_host(keep)), np.asarray(to_host(counts))  # a GPU-block Dask matrix's are cupy
    if log:
        log_filtered(np.count_nonzero(~keep), axis=0, counts=(min_counts, None), nums=(None, None))
    return keep, counts


def _normalized(x, counts, after):
    """`x` (its own memory, or a Dask array) with each row divided by its total / `after` (the
    median total where None; a total of 0 counts as 1) as scanpy does it: its factors in the
    totals' dtype (its own totals: the values'; given ones: theirs); a dense X divided by them as
    NumPy's in-place division (float32 values by float64 factors: in float64, rounded once), a
    sparse one multiplied by their reciprocals (scanpy's inplace_row_scale), in NumPy's in-place
    product: the same bits as scanpy's either way, where a division differs in the last bit."""
    if after is None:
        after = np.median(counts)
    counts = counts + (counts == 0)
    own = counts.dtype if counts.dtype.kind == "f" else x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    factors = (counts / after).astype(own)  # scanpy's in-place counts /= after
    sparse = is_sparse(blocks_like(x))
    if x.dtype.kind == "f" and not is_dask(x):  # the layouts our row primitives do not take, in place
        xp = xp_of(x.data if sparse else x)
        if sparse and x.format == "csc":  # kept CSC, as scanpy keeps it
            x.data *= xp.asarray(1 / factors)[x.indices]
            return x
        if not sparse and (isinstance(x, np.matrix) or not x.flags.c_contiguous):  # F-ordered, np.matrix
            x /= xp.asarray(factors)[:, None]
            return x
    x = canonical(x, step=_STEP)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    p = _ops.parts(x)
    if sparse:
        scaled = _ops.times_rows(p, 1 / factors)
    else:
        scaled = _ops.divide_rows(p, factors if is_dask(x) else xp_of(p.data).asarray(factors))
    return x if scaled is None else scaled
