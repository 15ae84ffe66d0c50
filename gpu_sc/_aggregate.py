"""`gsc.get.aggregate`: scanpy's `sc.get.aggregate` (pseudobulk sums, means, variances,
nonzero counts and medians per group of cells or genes), on the CPU, the GPU and Dask blocks.

Every statistic but the median comes from one pass of the `group_sums` primitive. On the CPU it
reproduces scanpy 1.11's arithmetic exactly, quirks included: sums accumulate in float64, or in
float32 when a `mask` is given (scanpy's mask makes its indicator matrix float32); means divide
by the group's size counting masked-out members; the variance is E[x^2] - E[x]^2 with scanpy's
precision cut to zero and the `dof` factor; the median ignores the mask.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from itertools import product

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._backend import is_dask, is_gpu, is_sparse, xp_of
from ._ops import group_sums, parts
from ._validation import UnsupportedMatrixError, canonical, get_matrix, host_bool_mask

FUNCS = ("count_nonzero", "mean", "sum", "var", "median")
STEP = "aggregate"


def _axis(axis, varm) -> int:
    if axis is None:
        return 1 if varm else 0
    if axis in (0, "obs"):
        return 0
    if axis in (1, "var"):
        return 1
    msg = f"{STEP}: axis must be 0, 1, 'obs' or 'var', got {axis!r}."
    raise ValueError(msg)


def _funcs(func) -> set[str]:
    funcs = {func} if isinstance(func, str) else set(func) if isinstance(func, Iterable) else {func}
    unknown = funcs - set(FUNCS)
    if unknown or not funcs:
        msg = f"{STEP}: func must be one or more of {FUNCS}, got {sorted(map(str, unknown)) or func!r}."
        raise ValueError(msg)
    return funcs


def _mask(adata: AnnData, mask, axis: int) -> np.ndarray | None:
    if mask is None:
        return None
    dim = ("obs", "var")[axis]
    if isinstance(mask, str):
        frame = getattr(adata, dim)
        if mask not in frame.columns:
            msg = f"{STEP}: mask {mask!r} is not a column of adata.{dim}; add it or pass a boolean array."
            raise ValueError(msg)  # scanpy's type
        mask = frame[mask].to_numpy()
    return host_bool_mask(mask, adata.shape[axis], what="mask", step=STEP)


def _data(adata: AnnData, axis: int, layer, obsm, varm):
    if sum(v is not None for v in (layer, obsm, varm)) > 1:
        msg = f"{STEP}: pass at most one of layer, obsm, varm (got {layer=}, {obsm=}, {varm=})."
        raise TypeError(msg)
    if varm is not None:
        if axis != 1:
            msg = f"{STEP}: varm={varm!r} aggregates genes; pass axis='var' (or leave axis None)."
            raise ValueError(msg)
        if varm not in adata.varm:
            msg = f"{STEP}: varm {varm!r} not found; adata has varm {list(adata.varm)}."
            raise KeyError(msg)
        return adata.varm[varm]
    if obsm is not None and axis != 0:
        msg = f"{STEP}: obsm={obsm!r} aggregates cells; pass axis='obs'."
        raise ValueError(msg)
    x = get_matrix(adata, layer=layer, obsm=obsm, step=STEP)
    return x.T if axis == 1 else x


def _groups(frame: pd.DataFrame, by, dim: str) -> tuple[pd.Categorical, pd.DataFrame]:
    """scanpy's grouping: every combination of the `by` columns' categories that occurs, named
    by joining the categories with '_', in the order of the categories' product."""
    cols = [by] if isinstance(by, str) else list(by) if isinstance(by, Collection) else [by]
    missing = [c for c in cols if c not in frame.columns]
    if not cols or missing:
        msg = f"{STEP}: by must name columns of adata.{dim}; {missing or cols!r} not found."
        raise KeyError(msg)
    # a list, not a dict: a column named twice groups twice, as scanpy's names ('a_a') show
    cats = [(c, pd.Categorical(frame[c]).remove_unused_categories()) for c in cols]
    for c, v in cats:
        if (v.codes < 0).any():
            msg = (f"{STEP}: adata.{dim}[{c!r}] has {(v.codes < 0).sum()} missing values; "
                   "fill them or subset the data first (every row needs a group).")  # fmt: skip
            raise ValueError(msg)
    sizes = [len(v.categories) for _, v in cats]
    combos = np.indices(sizes).reshape(len(sizes), -1)
    names = pd.Index(["_".join(map(str, t)) for t in product(*[v.categories for _, v in cats])])
    labels = pd.DataFrame({c: pd.Categorical.from_codes(combos[i], v.categories)
                           for i, (c, v) in enumerate(cats)}, index=names)  # fmt: skip
    factors = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)
    codes = sum(f * v.codes.astype(np.int64) for f, v in zip(factors, (v for _, v in cats), strict=True))
    grouping = pd.Categorical.from_codes(codes, categories=names).remove_unused_categories()
    return grouping, labels.loc[grouping.categories]


def _medians(x, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the median of each column over the group's rows (implicit zeros included), as
    scanpy computes it (sklearn's CSC median for sparse, numpy's for dense), on the host."""
    if is_dask(x):
        msg = f"{STEP}: func='median' needs an in-memory matrix; call .compute() on the Dask array first."
        raise NotImplementedError(msg)
    # duplicate entries summed, as for the other funcs (scanpy's median takes each apart)
    x = canonical(x.get() if is_gpu(x) else x, step=STEP, sum_duplicates=True)
    out = []
    for g in range(n_groups):
        block = x[codes == g]
        if is_sparse(block):
            from sklearn.utils.sparsefuncs import csc_median_axis_0

            out.append(csc_median_axis_0(sp.csc_matrix(block)))
        else:
            out.append(np.median(np.asarray(block), axis=0))
    return np.array(out)


def _group_sums(x, codes: np.ndarray, n_groups: int, **kw) -> tuple:
    """group_sums over the rows of `x`. A Dask `x` of one row band split along its columns (the
    transpose of row blocks: genes x cells for axis='var') goes column block by column block,
    each block's rows grouped, the results side by side; made whole rows, it would be one block
    of every cell. Duplicate entries are summed first (counts of stored values, squares)."""
    if is_dask(x) and len(x.chunks[0]) == 1 and len(x.chunks[1]) > 1:
        import dask

        done = dask.compute(*[dask.delayed(_group_sums)(b, codes, n_groups, **kw) for b in x.to_delayed()[0]])
        return tuple(None if r[0] is None else xp_of(r[0]).concatenate(r, axis=1) for r in zip(*done, strict=True))
    return group_sums(parts(canonical(x, step=STEP, sum_duplicates=True)), codes, n_groups, **kw)


def _statistics(x, codes: np.ndarray, n_groups: int, funcs: set[str], mask, dof: int) -> dict:
    """The layers of `funcs` for the matrix x (rows grouped by `codes`), scanpy's arithmetic."""
    weight = np.float32 if mask is not None else np.float64  # scanpy's indicator matrix dtype
    acc = np.result_type(weight, x.dtype)
    use = codes if mask is None else np.where(mask, codes, -1)
    need_sq, need_n = "var" in funcs, "count_nonzero" in funcs
    out = {}
    if funcs - {"median"}:
        # summed in float64, then in scanpy's dtype: with a mask scanpy sums float32 values in
        # float32, which equals this for whole counts up to 2**24 a group and gene and drifts past
        # it (50 counts a cell over a million cells: 49,342,128 for 49,999,950); non-integer
        # values differ from scanpy's float32 sums in their last bits
        sums, sumsq, nnz = _group_sums(x, use, n_groups, dtype=np.float64, squares=need_sq, counts=need_n)
        sums, sumsq = (None if a is None else a.astype(acc, copy=False) for a in (sums, sumsq))
        xp = xp_of(sums)
        size = xp.asarray(np.bincount(codes, minlength=n_groups))[:, None]  # masked rows count too
        if "sum" in funcs:
            out["sum"] = sums
        if need_n:
            out["count_nonzero"] = nnz.astype(weight, copy=False)
        mean = sums / size
        if "mean" in funcs:
            out["mean"] = mean
        if need_sq:
            sq_mean = mean**2
            var = sumsq / size - sq_mean
            precision = 2 << (42 if x.dtype == np.float64 else 20)
            var[precision * var < sq_mean] = 0
            if dof != 0:
                with np.errstate(divide="ignore", invalid="ignore"):
                    var *= size / (size - dof)
            out["var"] = var
    if "median" in funcs:
        med = _medians(x, codes, n_groups)
        out["median"] = xp_of(x).asarray(med) if is_gpu(x) else med  # back where the input lives
    # scanpy's layer order: the mean comes with the variance where both are asked for
    mean_at = ("count_nonzero", "var", "mean") if "var" in funcs else ("mean", "count_nonzero", "var")
    return {k: out[k] for k in ("sum", *mean_at, "median") if k in out}


def aggregate(adata: AnnData, by: str | Collection[str], func: str | Iterable[str], *, axis=None,
              mask=None, dof: int = 1, layer: str | None = None, obsm: str | None = None,
              varm: str | None = None) -> AnnData:  # fmt: skip
    """Aggregate the data matrix by groups of cells (or genes): scanpy's ``sc.get.aggregate``.

    Parameters
    ----------
    adata
        The AnnData; ``X`` (or the `layer`, `obsm` or `varm` entry) may be numpy, scipy sparse,
        cupy / cupyx (the sums run in our GPU kernel) or a row-chunked Dask array (one pass over
        the blocks; not for `median`).
    by
        Column(s) of ``adata.obs`` (``adata.var`` for ``axis='var'``): one group per combination
        of their categories that occurs.
    func
        ``'sum'``, ``'mean'``, ``'count_nonzero'``, ``'var'``, ``'median'`` or several: one
        layer each in the result.
    axis
        ``'obs'`` / 0 (default; ``'var'`` with `varm`) or ``'var'`` / 1.
    mask
        Boolean array (or column name) over the aggregated axis: rows with False are left out
        of the sums (and, as in scanpy, still counted in the group sizes of means and
        variances; the median ignores the mask).
    dof
        Degrees of freedom of the variance.
    layer, obsm, varm
        Aggregate this instead of ``X`` (at most one).

    Returns
    -------
    AnnData with one observation per group (``obs`` holds the `by` columns, indexed by the
    joined category names), ``var`` of the input (a range for `obsm` / `varm`), and
    ``layers[func]`` for each func; transposed for ``axis='var'``. Arrays stay where the input
    lives (cupy for GPU input, numpy for Dask input).
    """
    if not isinstance(adata, AnnData):  # scanpy dispatches on AnnData only: NotImplementedError
        msg = (f"{STEP}: expected an AnnData, got {type(adata).__name__}; wrap the matrix with "
               "anndata.AnnData(X, obs=...) first.")  # fmt: skip
        raise UnsupportedMatrixError(msg)
    ax = _axis(axis, varm)
    funcs = _funcs(func)
    if not isinstance(dof, int | np.integer) or isinstance(dof, bool) or dof < 0:
        msg = f"{STEP}: dof must be a non-negative integer, got {dof!r}."
        raise ValueError(msg)
    m = _mask(adata, mask, ax)
    x = _data(adata, ax, layer, obsm, varm)
    frame = x if isinstance(x, pd.DataFrame) else None
    if frame is not None:
        x = frame.to_numpy()
    grouping, labels = _groups(getattr(adata, ("obs", "var")[ax]), by, ("obs", "var")[ax])
    layers = _statistics(x, np.asarray(grouping.codes, dtype=np.int64), len(grouping.categories),
                         funcs, m, int(dof))  # fmt: skip
    if obsm is not None or varm is not None:
        var = pd.DataFrame(index=frame.columns if frame is not None else pd.RangeIndex(x.shape[1]).astype(str))
    else:
        var = getattr(adata, ("var", "obs")[ax])
    result = AnnData(layers=layers, obs=labels, var=var)
    return result.T if ax == 1 else result
