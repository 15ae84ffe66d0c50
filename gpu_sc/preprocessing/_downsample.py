"""downsample_counts: thin each cell's counts (or the whole matrix's) to a target, as scanpy does.

scanpy draws each cell's kept counts with Numba's Mersenne Twister, reseeded with `random_state`
for every cell, in a Python loop over the cells. The same draw (the same compiled NumPy calls in
the same order per cell) runs here for all cells at once in a parallel Numba loop: Numba's
generator is per thread and each cell reseeds it, so the counts are scanpy's exactly, whatever
the threads. Dask blocks are thinned one by one (a cell's draw needs only its own row). GPU
arrays are drawn on the host and moved back: scanpy's random stream is the CPU's.
"""

from __future__ import annotations

import contextlib
from numbers import Real

import numba
import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._backend import describe, is_dask, is_gpu, is_sparse, to_host
from .._settings import settings
from .._validation import canonical, check_anndata, check_counts, get_matrix, make_actual, set_matrix, writable
from ..get import array_to_gpu

_STEP = "downsample_counts"


def downsample_counts(adata: AnnData, counts_per_cell=None, total_counts: int | None = None, *,
                      random_state: int = 0, replace: bool = False, copy: bool = False):  # fmt: skip
    """Downsample counts, like :func:`scanpy.pp.downsample_counts` (same keywords, same draws).

    Parameters
    ----------
    adata
        Annotated data matrix of counts (non-negative whole numbers).
    counts_per_cell
        Target total per cell (one integer, or one per cell): a cell with more counts keeps that
        many, drawn without (or with, ``replace``) replacement from its counts.
    total_counts
        Target total of the whole matrix (in memory only: its draw spans every cell).
    random_state
        Seed (an integer, taken modulo 2**32 as Numba does); as in scanpy, each cell's draw
        starts from it.
    replace
        Draw with replacement.
    copy
        Return a thinned copy instead of changing ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy``. Sets ``adata.X``: its values thinned in place (CSR,
    dense), or a new matrix of X's format (CSC, COO through CSR; a Dask array lazily, block by
    block), explicit zeros removed from sparse X, as scanpy. Exactly one of ``counts_per_cell``
    and ``total_counts`` is given. Negative or non-finite values are refused (scanpy's draw walks
    the cumulative sums, which they break; a Dask X's blocks are checked when computed, X
    already the lazy array); fractional values are thinned as scanpy does.
    """
    check_anndata(adata, step=_STEP)
    if (total_counts is None) == (counts_per_cell is None):
        msg = (f"Must specify exactly one of `total_counts` or `counts_per_cell`. ({_STEP}: got "
               f"counts_per_cell={counts_per_cell!r}, total_counts={total_counts!r}.)")  # fmt: skip
        raise ValueError(msg)
    seed = _seed(random_state)
    if total_counts is not None and (isinstance(total_counts, bool) or not isinstance(total_counts, Real)
                                     or not total_counts >= 0):  # fmt: skip
        msg = f"{_STEP}: total_counts must be a number of counts, 0 or more, got {total_counts!r}."
        raise ValueError(msg)
    x = canonical(get_matrix(adata, step=_STEP), step=_STEP, sum_duplicates=True)
    if x.dtype.kind not in "iubf" or x.dtype == np.float16:
        msg = (f"{_STEP}: expects a matrix of counts as integers, float32 or float64, got {describe(x)}"
               f"{'; cast it first: adata.X = adata.X.astype(np.float32)' if x.dtype == np.float16 else ''}.")
        raise TypeError(msg)
    if total_counts is not None and is_dask(x):
        msg = (f"{_STEP}: total_counts draws over every cell at once; a Dask X is thinned block by block. "
               "Use counts_per_cell, or load X into memory (adata.X = adata.X.compute()).")  # fmt: skip
        raise ValueError(msg)
    targets = None if counts_per_cell is None else _targets(counts_per_cell, adata.n_obs)
    if not is_dask(x):
        check_counts(x, step=_STEP)
    adata = adata.copy() if copy else adata
    make_actual(adata, warn=True)  # a view's dense X is its parent's memory: thinned in place otherwise
    original = get_matrix(adata, step=_STEP)
    x = writable(canonical(original, step=_STEP, sum_duplicates=True))  # thinned in place
    if is_dask(x):
        out = _dask_per_cell(x, targets, seed, replace)
    else:
        out = _in_memory(x, targets, int(total_counts) if targets is None else None, seed, replace)
        out = _like(out, original)
    set_matrix(adata, out)
    return adata if copy else None


# --------------------------------------------------------------------------- checks
def _seed(random_state) -> int:
    """scanpy's seed as Numba's generator takes it: any integer, modulo 2**32."""
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        msg = (f"{_STEP}: random_state must be an integer (scanpy's draw seeds Numba's generator with it), "
               f"got {random_state!r}.")  # fmt: skip
        raise TypeError(msg)
    return int(random_state) % 2**32


def _targets(counts_per_cell, n_obs: int) -> np.ndarray:
    if isinstance(counts_per_cell, int | np.integer) and not isinstance(counts_per_cell, bool):
        counts_per_cell = np.full(n_obs, int(counts_per_cell), dtype=np.int64)
    targets = np.asarray(to_host(counts_per_cell) if is_gpu(counts_per_cell) else counts_per_cell)  # made on a GPU
    if targets.dtype == object:  # scanpy's astype(int) takes numbers held as objects
        with contextlib.suppress(TypeError, ValueError):
            targets = targets.astype(np.int64)
    if targets.shape != (n_obs,) or targets.dtype.kind not in "iuf":
        msg = ("If provided, 'counts_per_cell' must be either an integer, or coercible to an `np.ndarray` of "
               f"length as number of observations by `np.asarray(counts_per_cell)`. ({_STEP}: got shape "
               f"{targets.shape}, dtype {targets.dtype}; expected {n_obs} numbers.)")  # fmt: skip
        raise ValueError(msg)
    targets = targets.astype(np.int64)  # scanpy: astype(np.int_), truncating
    if targets.size and targets.min() < 0:
        msg = f"{_STEP}: counts_per_cell must be 0 or more, got {int(targets.min())} for some cell."
        raise ValueError(msg)
    return targets


# --------------------------------------------------------------------------- the draws
def _in_memory(x, targets, total: int | None, seed: int, replace: bool):
    """X thinned (CSR or dense, host or GPU): in place on the host; GPU data through the host."""
    if x.dtype == bool:  # counts of 0 and 1, thinned as integers; bools again after (as scanpy's)
        host = x.get() if is_gpu(x) else x  # (cupyx sparse matrices hold no integers)
        out = _in_memory(host.astype(np.int64), targets, total, seed, replace).astype(bool)
        return array_to_gpu(out) if is_gpu(x) else out
    on_gpu = is_gpu(x)
    if on_gpu:
        settings.info(f"{_STEP}: drawn on the host (scanpy's random stream), the result moved back to the GPU.")
        x = x.get()
    if targets is not None:
        _per_cell(x, targets, seed, replace)
    elif x.sum() >= total:  # scanpy thins unless the matrix holds fewer counts than the target
        _draw(x.data if is_sparse(x) else x.reshape(-1), total, seed, replace)
    if is_sparse(x):
        x.eliminate_zeros()
    if on_gpu:
        x = array_to_gpu(x)
    return x


def _per_cell(x, targets: np.ndarray, seed: int, replace: bool) -> None:
    """Thin in place every row whose total exceeds its target (scanpy's row sums, in X's dtype)."""
    totals = np.ravel(x.sum(axis=1))
    rows = np.flatnonzero(totals > targets)
    if is_sparse(x):
        data, indptr = x.data, x.indptr.astype(np.int64, copy=False)
    else:
        data, indptr = x.reshape(-1), np.arange(x.shape[0] + 1, dtype=np.int64) * x.shape[1]
    _draw_rows(data, indptr, rows, targets[rows], seed, replace)


_FLOAT32_EXACT = 2.0**24  # float32 counts' running total is exact below this


@numba.njit(cache=True)
def _draw(col, target, seed, replace):
    """scanpy's `_downsample_array`, step for step: its seed, cumulative sums in the values'
    dtype, Numba's choice of `target` of the `total` counts, and the walk that tallies them.
    Past 2**24 counts in all the sums run in float64: float32 ones stall there (adding 1 to 2**24
    gives 2**24), so scanpy's could never draw the last cells."""
    np.random.seed(seed)
    total = 0.0
    for v in col:
        total += v
    if col.itemsize < 8 and total >= _FLOAT32_EXACT:
        _walk(col, _cumsum64(col), target, replace)
    else:  # scanpy's own sums (fractional values round as in scanpy's)
        _walk(col, col.cumsum(), target, replace)


@numba.njit(cache=True)
def _cumsum64(col):
    out = np.empty(col.size, np.float64)
    acc = 0.0
    for i in range(col.size):
        acc += col[i]
        out[i] = acc
    return out


@numba.njit(cache=True)
def _walk(col, cumcounts, target, replace):
    """Draw `target` of the int(total) counts (the global stream seeded by the caller) and tally
    them into `col`, which is zeroed first."""
    col[:] = 0
    total = np.int_(cumcounts[-1])
    sample = np.random.choice(total, target, replace=replace)
    sample.sort()
    geneptr = 0
    for count in sample:
        while count >= cumcounts[geneptr]:
            geneptr += 1
        col[geneptr] += 1


@numba.njit(parallel=True, cache=True)
def _draw_rows(data, indptr, rows, targets, seed, replace):
    for t in numba.prange(rows.size):
        r = rows[t]
        _draw(data[indptr[r] : indptr[r + 1]], targets[t], seed, replace)


def _dask_per_cell(x, targets: np.ndarray, seed: int, replace: bool):
    """The lazily thinned Dask array: each block's copy thinned with its cells' targets."""
    import dask.array as da

    from .._ops._chunked import row_columns

    (column,) = row_columns(x, (targets,))
    return da.map_blocks(_dask_block, x, column, seed=seed, replace=replace, dtype=x.dtype, meta=x._meta)


def _dask_block(block, targets, *, seed: int, replace: bool):
    fmt = block.format if is_sparse(block) else None
    x = canonical(block.copy(), step=_STEP, sum_duplicates=True)  # Dask blocks may be shared: a copy
    check_counts(x, step=_STEP)
    out = _in_memory(x, np.asarray(targets[:, 0].get() if is_gpu(targets) else targets[:, 0]), None, seed, replace)
    return out.asformat(fmt) if fmt not in (None, "csr") else out


def _like(out, original):
    """`out` (CSR or dense) in the format of the matrix the user had (scanpy converts back)."""
    if sp.issparse(original) and not is_gpu(original) and original.format != "csr":
        return type(original)(out)
    return out
