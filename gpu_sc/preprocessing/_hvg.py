"""highly_variable_genes: Seurat, Cell Ranger and Seurat v3 (vst) gene selection, like scanpy.

The per-gene statistics (means, variances, clipped sums, expressed flags) run through the
`_ops` primitives where the data lives; what follows them is per gene (a few thousand values)
and runs on the host: binning, normalisation, the loess fit (scikit-misc, as in scanpy) and
the ranking.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys as K
from .. import _ops
from .._backend import is_dask, is_sparse, to_host, xp_of
from .._ops._chunked import Chunked
from .._ops.clipped_sums import clipped_sums
from .._settings import DEBUG, settings, user_stacklevel
from .._validation import (canonical, check_finite, check_n_top_genes, check_not_empty, check_real, get_matrix,
                           make_actual, old_positionals, sanitize_anndata, warn_not_counts)
from .._values import float_values, not_counts

_STEP = "highly_variable_genes"
_FLAVORS = ("seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")
_V3_DEFAULT_N_TOP = 2000
_CUTOFF_DEFAULTS = {"min_disp": 0.5, "max_disp": np.inf, "min_mean": 0.0125, "max_mean": 3}
_MAD_SCALE = 0.6744897501960817  # standard normal 75th percentile: MAD of a normal is sigma
#: float64 rounding steps per cell below which a variance (E[x^2] - E[x]^2, relative to E[x]^2) is
#: round-off, not spread: a constant gene's sums of n equal values carry about n / 4 steps of error
#: (measured, sequential and blocked sums, n = 700 .. 10^6), in an order that depends on the threads,
#: the Dask blocks or the device; such a variance is 0, as an exact computation gives
_ROUNDOFF_STEPS_PER_CELL = 4
_KINDS = {K.VAR_HIGHLY_VARIABLE: "boolean"} | dict.fromkeys(
    (K.VAR_HVG_RANK, K.VAR_MEANS, K.VAR_VARIANCES, K.VAR_VARIANCES_NORM, K.VAR_DISPERSIONS, K.VAR_DISPERSIONS_NORM),
    "float")  # fmt: skip


@old_positionals("layer", "n_top_genes", "min_disp", "max_disp", "min_mean", "max_mean", "span", "n_bins",
                 "flavor", "subset", "inplace", "batch_key", "check_values")
def highly_variable_genes(
    adata: AnnData,
    *,
    layer: str | None = None,
    n_top_genes: int | None = None,
    min_disp: float = 0.5,
    max_disp: float = np.inf,
    min_mean: float = 0.0125,
    max_mean: float = 3,
    span: float = 0.3,
    n_bins: int = 20,
    flavor: str = "seurat",
    subset: bool = False,
    inplace: bool = True,
    batch_key: str | None = None,
    check_values: bool = True,
) -> pd.DataFrame | None:
    """Annotate highly variable genes, like :func:`scanpy.pp.highly_variable_genes`.

    ``'seurat'`` and ``'cell_ranger'`` expect log-normalised data (``'seurat'`` works on
    ``expm1`` of it, undoing ``log1p`` with ``uns['log1p']['base']``) and rank genes by their
    dispersion (variance / mean) normalised within bins of mean expression: equal-width bins
    of log1p(mean) and mean / standard deviation for ``'seurat'``, percentile bins of the mean
    and median / MAD for ``'cell_ranger'``. ``'seurat_v3'`` and ``'seurat_v3_paper'`` expect
    counts: a loess fit of log10 variance on log10 mean gives each gene a regularised standard
    deviation, values are clipped at mean + sqrt(n_cells) * that deviation, and genes are
    ranked by the variance of the standardised values.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), on the CPU or the GPU.
    layer
        Use ``adata.layers[layer]`` instead of ``X``.
    n_top_genes
        Number of genes to select; then the cutoffs are ignored. Default 2000 for the v3
        flavors (which have no cutoffs).
    min_disp, max_disp, min_mean, max_mean
        Cutoffs on the normalised dispersion and the mean (dispersion flavors, when
        `n_top_genes` is None); a gene is selected when strictly inside all of them.
    span
        Fraction of genes used for each local loess fit (v3 flavors).
    n_bins
        Number of mean-expression bins (``'seurat'``).
    flavor
        ``'seurat'``, ``'cell_ranger'``, ``'seurat_v3'`` or ``'seurat_v3_paper'``.
    subset
        Keep only the highly variable genes (in `adata`, or in the returned frame).
    inplace
        Write the results into ``adata.var``; otherwise return them as a DataFrame.
    batch_key
        ``adata.obs`` column: select within each batch and combine. Dispersion flavors and
        ``'seurat_v3_paper'`` rank genes first by the number of batches they are selected in;
        ``'seurat_v3'`` first by their median rank across batches.
    check_values
        Warn when the v3 flavors get values that are not non-negative integers.

    Returns
    -------
    With ``inplace=False`` a :class:`pandas.DataFrame` indexed by gene, with the columns
    scanpy returns (dispersion flavors: ``means``, ``dispersions``, ``mean_bin`` (without
    batches), ``dispersions_norm``, ``highly_variable``; v3 flavors: ``means``,
    ``variances``, ``gene_name``, ``highly_variable_rank``, ``variances_norm``,
    ``highly_variable``; with batches also ``highly_variable_nbatches`` and, for dispersion
    flavors, ``highly_variable_intersection``). Otherwise ``None``, having set

    ``adata.var['highly_variable']`` (bool)
        The selected genes.
    ``adata.var['means']`` (float64)
        Mean per gene (``'seurat'``: log1p of the mean of expm1 of the data).
    ``adata.var['dispersions']`` (float64), ``adata.var['dispersions_norm']`` (float32)
        Dispersion flavors: (log) dispersion and normalised dispersion per gene.
    ``adata.var['variances']``, ``adata.var['variances_norm']`` (float64)
        v3 flavors: variance and standardised variance (averaged over batches) per gene.
    ``adata.var['highly_variable_rank']`` (float32)
        v3 flavors: rank among the top `n_top_genes` (median over batches; NaN outside).
    ``adata.var['highly_variable_nbatches']`` (int64)
        With `batch_key`: number of batches in which the gene is selected.
    ``adata.var['highly_variable_intersection']`` (bool)
        With `batch_key`, dispersion flavors: selected in every batch.
    ``adata.uns['hvg']``
        ``{'flavor': flavor}``.

    With ``subset=True`` (and ``inplace``) `adata` keeps only the selected genes.

    A Dask array chunked by rows (blocks of scipy / cupyx CSR or numpy / cupy arrays, every
    gene in one column chunk) is accepted as the matrix: the per-gene statistics are computed
    block by block (batches select their rows within each block, all batches in one pass over
    X; seurat_v3 two) and the result equals the in-memory one; the matrix itself is never
    changed or loaded whole.
    """
    start = settings.log("extracting highly variable genes")
    if flavor not in _FLAVORS:
        msg = f"{_STEP}: flavor must be one of {', '.join(map(repr, _FLAVORS))}; got {flavor!r}."
        raise ValueError(msg)
    check_n_top_genes(n_top_genes, step=_STEP)
    v3 = flavor in ("seurat_v3", "seurat_v3_paper")
    if not v3:
        check_n_bins(n_bins, step=_STEP)
    x = numeric_matrix(get_matrix(adata, layer=layer, step=_STEP), step=_STEP)

    if v3:
        n_top = _V3_DEFAULT_N_TOP if n_top_genes is None else int(n_top_genes)
        batches = _batches(adata, batch_key, v3=True)
        df = _seurat_v3(adata, x, flavor=flavor, n_top_genes=n_top, batches=batches,
                        check_values=check_values, span=span)  # fmt: skip
    else:
        cutoffs = dict(min_disp=min_disp, max_disp=max_disp, min_mean=min_mean, max_mean=max_mean)
        cutoffs = {key: check_real(value, key, step=_STEP) for key, value in cutoffs.items()}
        if n_top_genes is not None:
            if cutoffs != _CUTOFF_DEFAULTS:
                msg = "If you pass `n_top_genes`, all cutoffs are ignored."
                warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
            cutoff = int(n_top_genes)
        else:
            cutoff = cutoffs
        base = adata.uns.get(K.UNS_LOG1P, {}).get("base") if flavor == "seurat" else None
        batches = _batches(adata, batch_key, v3=False)
        if batches is not None and not adata.var_names.is_unique:  # before anything changes
            dup = adata.var_names[adata.var_names.duplicated()].unique()
            msg = (f"{_STEP}: with batch_key, flavor={flavor!r} joins the batches' results by gene name, and "
                   f"{dup.size} names occur more than once (e.g. {list(dup[:3])}); call "
                   "adata.var_names_make_unique() first.")  # fmt: skip
            raise ValueError(msg)
        if batches is None:
            df = _dispersion_batch(x, None, flavor=flavor, n_bins=n_bins, cutoff=cutoff,
                                   base=base, owned=False)  # fmt: skip
            df.index = adata.var_names
        else:
            df = _dispersion_batched(adata, x, batches, flavor=flavor, n_bins=n_bins,
                                     cutoff=cutoff, base=base)  # fmt: skip
            sanitize_anndata(adata)  # as scanpy's batched path does
        settings.log("    finished", start=start)  # (scanpy's v3 flavors write no such line)

    var = df if df.index.equals(adata.var_names) else df.reindex(adata.var_names)
    hv = var[K.VAR_HIGHLY_VARIABLE].to_numpy(dtype=bool)
    if not inplace:
        return df.loc[df[K.VAR_HIGHLY_VARIABLE].to_numpy(dtype=bool)] if subset else df

    make_actual(adata)
    if subset:  # before any write: a matrix that cannot be subset (a big-endian CSR, which scipy
        # refuses) leaves adata as it was (scanpy's writes first, and fails before on such a CSR)
        adata._inplace_subset_var(hv)
        var = var.iloc[np.flatnonzero(hv)]
    adata.uns[K.UNS_HVG] = {"flavor": flavor}
    if v3:
        cols = [K.VAR_HIGHLY_VARIABLE, K.VAR_HVG_RANK, K.VAR_MEANS, K.VAR_VARIANCES, K.VAR_VARIANCES_NORM]
    else:
        cols = [K.VAR_HIGHLY_VARIABLE, K.VAR_MEANS, K.VAR_DISPERSIONS, K.VAR_DISPERSIONS_NORM]
    # scanpy's hint names these columns, with or without batches (whose further columns it leaves out)
    settings.log_added_var([(c, _KINDS[c]) for c in cols])
    if batch_key is not None and (v3 or batch_key):
        cols.append(K.VAR_HVG_NBATCHES)
        if not v3:
            cols.append(K.VAR_HVG_INTERSECTION)
    for col in cols:
        values = var[col].to_numpy()
        if col == K.VAR_DISPERSIONS_NORM:
            values = values.astype(np.float32)
        adata.var[col] = values
    return None


def check_n_bins(n_bins, *, step: str) -> None:
    """An integer >= 1 (a bool is one to pandas' cut, which scanpy bins with: True is 1 bin)."""
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        msg = f"{step}: n_bins must be a positive integer, got {n_bins!r}."
        raise ValueError(msg)


def numeric_matrix(x, *, step: str):
    """`x` checked for the per-gene moments: canonical with duplicates summed (they are squared),
    not empty, numeric and finite (a Dask matrix is not read an extra time: see `_check_means`),
    its values float."""
    x = canonical(x, step=step, sum_duplicates=True)
    check_not_empty(x, step=step)
    values = x.data if is_sparse(x) else x
    if values.dtype.kind not in "iubf":  # bools are 0 and 1, as scanpy's numpy sums take them
        msg = f"{step}: expects numeric values, got dtype {values.dtype}."
        raise TypeError(msg)
    x = float_values(x)
    if not is_dask(x):
        check_finite(x, step=step)
    return x


def col_mean_var(x) -> tuple[np.ndarray, np.ndarray]:
    """Host float64 mean and variance (ddof=1) of every column of a `numeric_matrix`."""
    return tuple(to_host(a) for a in _ops.col_mean_var(_ops.parts(x)))


# --------------------------------------------------------------------------- batches


def _batches(adata: AnnData, batch_key, *, v3: bool):
    """None (one batch of all cells), or a list of (label, host row indices) per batch.

    Dispersion flavors take the batches in category order (a string column as sorted
    categories), v3 flavors in sorted order of the values, as scanpy does; cells whose batch is
    missing (NaN) belong to no batch.
    """
    if (batch_key is None) if v3 else (not batch_key):
        return None
    if batch_key not in adata.obs.columns:
        msg = f"{_STEP}: batch_key {batch_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}."
        raise KeyError(msg)
    col = adata.obs[batch_key]
    if v3:
        values = col.to_numpy()
        labels = np.unique(values[~pd.isna(values)])  # (scanpy's np.unique fails on NaN among text)
        members = [col.eq(label).to_numpy(dtype=bool, na_value=False) for label in labels]
    else:
        cat = col.array if isinstance(col.dtype, pd.CategoricalDtype) else pd.Categorical(col)
        labels = cat.categories
        members = [cat.codes == i for i in range(len(labels))]  # missing (NaN, None, pd.NA): code -1
    out = []
    for label, member in zip(labels, members, strict=True):
        rows = np.flatnonzero(member)
        if rows.size == 0:
            msg = f"{_STEP}: batch {label!r} of batch_key {batch_key!r} has no cells; remove unused categories first."
            raise ValueError(msg)
        if rows.size == 1:
            warnings.warn(f"{_STEP}: batch {label!r} of batch_key {batch_key!r} has one cell, whose variance "
                          "(ddof=1) is undefined: its dispersions are NaN here and round-off in scanpy, so "
                          "the selection can differ from scanpy's; drop that cell or merge its batch.",
                          UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        out.append((label, rows))
    return out


def _take_rows(x, rows):
    """The rows `rows` (host int array, or None for all) of CSR / dense `x`, on its device;
    `x` itself when that is every row in order, else a fresh matrix (never densified)."""
    if rows is None or (rows.size == x.shape[0] and np.array_equal(rows, np.arange(x.shape[0]))):
        return x, False
    if is_dask(x):
        return Chunked(x).take_rows(rows), True
    return x[xp_of(x.data if is_sparse(x) else x).asarray(rows)], True


# --------------------------------------------------------------------------- seurat / cell_ranger


def _dispersion_batch(x, rows, *, flavor, n_bins, cutoff, base, owned, filter_unexpressed=False, where="the data"):
    """Dispersion statistics of one batch: a DataFrame in gene order (positional index).

    With `filter_unexpressed`, genes without a positive value in the batch are left out of the
    binning and selection and get zeros, as scanpy's batched path does.
    """
    xb, fresh = _take_rows(x, rows)
    p = _ops.parts(xb)
    keep = None
    if filter_unexpressed:
        keep = to_host(p.reduce(_expressed) if isinstance(p, Chunked) else _expressed(p))
    log_base = _log_base(base)
    if flavor == "seurat":  # the statistics of expm1(x), on a copy of the stored values
        if isinstance(p, Chunked):  # lazily, block by block
            p = _ops.parts(p.update(_expm1_, log_base))
        else:
            p = p._replace(data=p.data if (fresh or owned) else p.data.copy())
            _expm1_(p, log_base)
    mean, var = (to_host(a) for a in _ops.col_mean_var(p))
    return _dispersion_frame(mean, var, keep, flavor=flavor, n_bins=n_bins, cutoff=cutoff, where=where,
                             n_cells=p.shape[0])  # fmt: skip


def _dask_batch_stats(x, batches, *, flavor, base) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(mean, variance, expressed) per batch of a Dask matrix, as `_dispersion_batch` computes
    them, in one pass over X (a batch at a time read it twice per batch)."""
    codes = _batch_codes(x.shape[0], batches)
    sums = Chunked(x).reduce_groups(_batch_moments, codes, flavor == "seurat", _log_base(base))
    stats = []
    for i, (_, rows) in enumerate(batches):
        expressed, total, squares = (to_host(a) for a in sums[i])
        stats.append((*_ops.mean_var(total, squares, rows.size), expressed))
    return stats


def _batch_codes(n: int, batches, rest: int = -1) -> np.ndarray:
    """Each cell's batch number (`Chunked.reduce_groups`' codes); `rest` for cells in none."""
    codes = np.full(n, rest, dtype=np.int64)
    for i, (_, rows) in enumerate(batches):
        codes[rows] = i
    return codes


def _batch_moments(p, _batch, seurat: bool, log_base):
    """One batch's rows of a block (a copy): (expressed, column sums, sums of squares), of
    expm1(x) for 'seurat'."""
    expressed = _expressed(p)
    if seurat:
        _expm1_(p, log_base)
    return (expressed, *_ops.col_moments(p))


def _log_base(base):
    """ln(base) that `_expm1_` multiplies by to undo log1p's base; None for the natural log."""
    return None if base is None else math.log(base)


def _dispersion_frame(mean, var, keep, *, flavor, n_bins, cutoff, log=None, step=_STEP, where="the data",
                      lone_repr=str, n_cells: int) -> pd.DataFrame:  # fmt: skip
    """One batch's dispersion statistics from its genes' mean and variance (host float64); with
    `keep` (genes with a positive value), the others are left out of the binning and get zeros
    (`where` names the batch for the error where there are none).

    `log`: whether dispersions and means are logged; None for highly_variable_genes' rule (for
    'seurat', whose statistics are of expm1 of the data). `cutoff` None: no selection.
    `lone_repr`: how scanpy's debug line writes the positions (among the genes binned) of genes
    alone in their bin ('seurat'): a NumPy array's str for highly_variable_genes.
    """
    n_genes = mean.size
    _check_means(mean, flavor if log is None else "", step=step)
    if keep is not None and not keep.any():  # nothing to bin (pandas: "Cannot cut empty array")
        msg = (f"{step}: no gene has a positive value in {where}, so it has no dispersions to rank; drop "
               "those cells or merge their batch.")  # fmt: skip
        raise ValueError(msg)
    if log is None:
        log = flavor == "seurat"
    # a constant gene (of `n_cells`): variance 0 (its log dispersion NaN), whatever the sums' order
    var = np.where(var <= _ROUNDOFF_STEPS_PER_CELL * n_cells * np.finfo(np.float64).eps * mean * mean, 0.0, var)
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = var / mean
        if log:
            disp[disp == 0] = np.nan
            disp = np.log(disp)
            mean = np.log1p(mean)
    if keep is not None and not keep.all():
        kept = _dispersion_stats(mean[keep], disp[keep], flavor=flavor, n_bins=n_bins, cutoff=cutoff, step=step,
                                 lone_repr=lone_repr)  # fmt: skip
        full = {}
        for col in (K.VAR_MEANS, K.VAR_DISPERSIONS, K.VAR_DISPERSIONS_NORM, K.VAR_HIGHLY_VARIABLE):
            full[col] = np.zeros(n_genes, dtype=kept[col].dtype)
            full[col][keep] = kept[col].to_numpy()
        return pd.DataFrame(full)
    return _dispersion_stats(mean, disp, flavor=flavor, n_bins=n_bins, cutoff=cutoff, step=step, lone_repr=lone_repr)


def _check_means(mean, flavor, *, step=_STEP) -> None:
    """A per-gene mean (float64 sums) is finite unless the data holds NaN or inf (a Dask matrix
    is checked here only) or, for 'seurat', expm1 overflowed on data not log1p-transformed.
    (The variance is NaN for a single cell, as ddof=1 divides by zero.)"""
    bad = ~np.isfinite(mean)
    if bad.any():
        hint = " or values too large for expm1 (flavor='seurat' expects log1p data)" if flavor == "seurat" else ""
        msg = (f"{step}: the mean of {int(bad.sum())} genes is NaN or inf: the data holds NaN or inf "
               f"values{hint}; fix or drop those entries first.")  # fmt: skip
        raise ValueError(msg)


def _expressed(p):
    """Bool per gene: some cell has a positive value (module level: run on Dask blocks too)."""
    return _ops.flag_cols_above(p, xp_of(p.data).zeros(p.shape[0], dtype=np.float64))


def _expm1_(p, log_base) -> None:
    """expm1 of the values in place, after multiplying by ln(base) to undo log1p's base
    (the product rounded to the values' dtype, as the in-memory path always did)."""
    data = p.data
    xp = xp_of(data)
    if data.size and bool((data == -xp.inf).any()):  # expm1(-inf) = -1 would hide it from the means' check
        # (an in-memory X is checked before; a Dask block here, before anything is written)
        n_bad = int((data == -xp.inf).sum())
        msg = f"{_STEP}: found {n_bad} non-finite values (-inf) in the data; fix or drop those entries first."
        raise ValueError(msg)
    if log_base is not None:
        data[...] = data * np.float64(log_base)
    xp_of(data).expm1(data, out=data)


def _dispersion_stats(mean, disp, *, flavor, n_bins, cutoff, step=_STEP, lone_repr=str) -> pd.DataFrame:
    """Bin genes by mean, normalise dispersions within bins, select (host, per gene)."""
    df = pd.DataFrame({K.VAR_MEANS: mean, K.VAR_DISPERSIONS: disp})
    if flavor == "seurat":
        edges = n_bins
    else:
        edges = np.r_[-np.inf, np.percentile(mean, np.arange(10, 105, 5)), np.inf]
        if np.unique(edges).size != edges.size:
            msg = (
                f"{step}: flavor='cell_ranger' bins genes by the 10th, 15th, ... percentiles of "
                "their means, but at least 5% of the genes share one mean (often genes without "
                "counts), so two bin edges coincide; remove such genes first, e.g. with "
                "filter_genes(adata, min_cells=1)."
            )
            raise ValueError(msg)
    df["mean_bin"] = pd.cut(df[K.VAR_MEANS], bins=edges)
    codes = df["mean_bin"].cat.codes.to_numpy()
    avg = np.full(mean.size, np.nan)
    dev = np.full(mean.size, np.nan)
    lone = np.zeros(mean.size, dtype=bool)
    if flavor == "seurat":  # pandas' group mean and sample std of the defined dispersions, as scanpy's: a
        # bin of one dispersion repeated has std 0 and a mean a rounding off it, so +-inf, or 0 / 0
        bin_stats = df.groupby("mean_bin", observed=True)[K.VAR_DISPERSIONS].agg(["mean", "std"])
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for code in np.unique(codes[codes >= 0]):
            members = codes == code
            if flavor == "seurat":
                a, s = bin_stats.loc[df["mean_bin"].cat.categories[code]]
                if np.isnan(s):  # a lone gene: its normalised dispersion becomes 1
                    a, s = 0.0, a
                    lone |= members
            else:  # median (pandas': of the defined values) and normal-consistent median absolute
                d = disp[members]
                a = np.nanmedian(d)  # deviation (statsmodels': NaN when any value is)
                s = np.median(np.abs(d - np.median(d)) / _MAD_SCALE)
            avg[members] = a
            dev[members] = s
        norm = (disp - avg) / dev
    if lone.any():
        settings.log(f"Gene indices {lone_repr(np.flatnonzero(lone))} fell into a single bin: their normalized "
                     "dispersion was set to 1.\n    Decreasing `n_bins` will likely avoid this effect.", level=DEBUG)
    df[K.VAR_DISPERSIONS_NORM] = norm
    if cutoff is not None:
        df[K.VAR_HIGHLY_VARIABLE] = _select(mean, norm, cutoff)
    return df


def _in_bounds(mean, norm, c) -> np.ndarray:
    return (
        (mean > c["min_mean"]) & (mean < c["max_mean"]) & (norm > c["min_disp"]) & (norm < c["max_disp"])
    )


def _select(mean, norm, cutoff) -> np.ndarray:
    """Genes within the cutoffs, or the `cutoff` genes of highest normalised dispersion (all
    genes tied with the last one included; undefined dispersions never)."""
    if isinstance(cutoff, dict):
        return np.asarray(_in_bounds(mean, np.nan_to_num(norm), cutoff))
    n = cutoff
    if n > norm.size:
        settings.log("`n_top_genes` > `adata.n_var`, returning all genes.")
        n = norm.size
    defined = norm[~np.isnan(norm)]
    shown = n  # scanpy's line gives the number before the one below
    if n > defined.size:
        warnings.warn(
            "`n_top_genes` > number of normalized dispersions, returning all genes with normalized dispersions.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        n = defined.size
    if n == 0:
        return np.zeros(norm.size, dtype=bool)
    threshold = -np.sort(-defined)[n - 1]
    settings.log(f"the {shown} top genes correspond to a normalized dispersion cutoff of {threshold}", level=DEBUG)
    return np.nan_to_num(norm, nan=-np.inf) >= threshold


def _dispersion_batched(adata, x, batches, *, flavor, n_bins, cutoff, base) -> pd.DataFrame:
    """Per-batch selection, combined: means averaged, dispersions averaged over the batches
    where defined, genes ranked by how many batches select them."""
    if is_dask(x):
        stats = _dask_batch_stats(x, batches, flavor=flavor, base=base)
        frames = [_dispersion_frame(mean, var, keep, flavor=flavor, n_bins=n_bins, cutoff=cutoff,
                                    where=f"batch {label!r}", n_cells=rows.size)
                  for (label, rows), (mean, var, keep) in zip(batches, stats, strict=True)]  # fmt: skip
    else:
        frames = [
            _dispersion_batch(x, rows, flavor=flavor, n_bins=n_bins, cutoff=cutoff, base=base,
                              owned=False, filter_unexpressed=True, where=f"batch {label!r}")
            for label, rows in batches
        ]  # fmt: skip
    stack = {c: np.stack([f[c].to_numpy(dtype=np.float64) for f in frames]) for c in
             (K.VAR_MEANS, K.VAR_DISPERSIONS, K.VAR_DISPERSIONS_NORM)}  # fmt: skip
    nbatches = np.stack([f[K.VAR_HIGHLY_VARIABLE].to_numpy(dtype=bool) for f in frames]).sum(axis=0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN genes stay NaN
        df = pd.DataFrame(
            {
                K.VAR_MEANS: stack[K.VAR_MEANS].mean(axis=0),
                K.VAR_DISPERSIONS: np.nanmean(stack[K.VAR_DISPERSIONS], axis=0),
                K.VAR_DISPERSIONS_NORM: np.nanmean(stack[K.VAR_DISPERSIONS_NORM], axis=0),
                K.VAR_HIGHLY_VARIABLE: nbatches,
                K.VAR_HVG_NBATCHES: nbatches,
                K.VAR_HVG_INTERSECTION: nbatches == len(batches),
            },
            index=adata.var_names,
        )
    df = df.sort_index()  # scanpy combines batches by a group-by on gene names: sorted order
    if isinstance(cutoff, int):
        order = df.sort_values([K.VAR_HVG_NBATCHES, K.VAR_DISPERSIONS_NORM], ascending=False, na_position="last").index
        top = pd.Series(np.arange(df.shape[0]) < cutoff, index=order)
        df[K.VAR_HIGHLY_VARIABLE] = top.reindex(df.index).to_numpy()
        return df.loc[adata.var_names]
    df[K.VAR_DISPERSIONS_NORM] = df[K.VAR_DISPERSIONS_NORM].fillna(0)
    df[K.VAR_HIGHLY_VARIABLE] = _in_bounds(
        df[K.VAR_MEANS].to_numpy(), df[K.VAR_DISPERSIONS_NORM].to_numpy(), cutoff
    )
    return df


# --------------------------------------------------------------------------- seurat_v3


def _warn_if_not_counts(bad: bool, flavor) -> None:
    if bad:
        warn_not_counts(f"`{flavor=!r}`")


def _loess():
    try:
        from skmisc.loess import loess
    except ImportError as e:
        msg = f"{_STEP}: the seurat_v3 flavors need scikit-misc: pip install scikit-misc"
        raise ImportError(msg) from e
    return loess


_LOESS_MIN_POINTS = 4  # a degree-2 local fit; skmisc segfaults on 3 points or fewer


def _standardized_variance(x, rows, *, span, loess, mean_var=None) -> np.ndarray:
    """Variance per gene of the values standardised by the loess-regularised deviation and
    clipped at sqrt(n_cells) deviations above the mean (host float64). `mean_var`: the rows'
    col_mean_var where the caller has it (all cells: one pass over a Dask X fewer)."""
    xb, _ = _take_rows(x, rows)
    p = _ops.parts(xb)
    n = p.shape[0]
    mean_, var_ = _ops.col_mean_var(p) if mean_var is None else mean_var
    xp = xp_of(mean_)  # where the data lives (a Dask array's blocks included)
    mean = to_host(mean_)
    reg_std, clip = _v3_clip(mean, to_host(var_), n, span=span, loess=loess, in_batch=rows is not None)
    sums, sumsq = (to_host(a) for a in clipped_sums(p, xp.asarray(clip)))
    return _v3_norm_var(n, mean, reg_std, sums, sumsq)


def _dask_standardized_variances(x, batches, *, span, loess, flavor, check_values):
    """((mean, variance) of all cells, `_standardized_variance` of every batch (batches x
    genes)) of a Dask matrix in two passes over X: the moments of the batches and of the cells
    in none (added up for all cells), then the batches' clipped sums (it took 2 + 2 per batch)."""
    chunked = Chunked(x)
    moments = chunked.reduce_groups(_ops.checked_col_moments, _batch_codes(x.shape[0], batches, rest=len(batches)),
                                    check_values)  # fmt: skip
    _warn_if_not_counts(any(bool(m[2]) for m in moments.values()), flavor)
    total, squares = (sum(to_host(m[k]) for m in moments.values()) for k in (0, 1))
    overall = _ops.mean_var(total, squares, x.shape[0])
    _check_means(overall[0], flavor)
    fits = []
    for i, (_, rows) in enumerate(batches):
        mean, var = _ops.mean_var(*(to_host(a) for a in moments[i][:2]), rows.size)
        fits.append((mean, *_v3_clip(mean, var, rows.size, span=span, loess=loess, in_batch=True)))
    clips = [chunked.xp.asarray(clip) for _, _, clip in fits]
    sums = chunked.reduce_groups(_clipped, _batch_codes(x.shape[0], batches), clips)
    norm_vars = [_v3_norm_var(rows.size, mean, reg_std, *(to_host(a) for a in sums[i]))
                 for i, ((_, rows), (mean, reg_std, _)) in enumerate(zip(batches, fits, strict=True))]  # fmt: skip
    return overall, np.stack(norm_vars)


def _clipped(p, batch, clips):
    return clipped_sums(p, clips[batch])


def _v3_clip(mean, var, n, *, span, loess, in_batch: bool):
    """(regularised deviation, clip) per gene: the loess trend of log variance on log mean over
    the genes that vary, and sqrt(n) such deviations above the mean."""
    varies = var > 0
    if n < 2 or varies.sum() < _LOESS_MIN_POINTS:  # fewer points crash skmisc (a segfault)
        msg = (f"{_STEP}: the seurat_v3 flavors fit a loess trend of variance on mean, which needs at "
               f"least 2 cells and {_LOESS_MIN_POINTS} genes that vary; got {n} cells and "
               f"{int(varies.sum())} varying genes{' in a batch' if in_batch else ''}.")  # fmt: skip
        raise ValueError(msg)
    fitted = np.zeros(mean.size)
    model = loess(np.log10(mean[varies]), np.log10(var[varies]), span=span, degree=2)
    try:
        model.fit()
    except ValueError as e:  # skmisc's own words are bytes from its Fortran (e.g. b'svddc failed')
        msg = (f"{_STEP}: the seurat_v3 flavors could not fit their loess trend of variance on mean over "
               f"{int(varies.sum())} varying genes and {n} cells (skmisc: {e}); it needs more cells "
               "(or a larger span).")  # fmt: skip
        raise ValueError(msg) from e
    fitted[varies] = model.outputs.fitted_values
    reg_std = np.sqrt(10**fitted)
    return reg_std, reg_std * np.sqrt(n) + mean


def _v3_norm_var(n, mean, reg_std, sums, sumsq):
    """Sum over cells of (min(x, clip) - mean)^2, zeros included, over (n - 1) reg_std^2."""
    return (n * mean**2 + sumsq - 2 * sums * mean) / ((n - 1) * reg_std**2)


def _seurat_v3(adata, x, *, flavor, n_top_genes, batches, check_values, span) -> pd.DataFrame:
    loess = _loess()
    if check_values and not is_dask(x):  # a Dask X: checked in the first pass over it
        _warn_if_not_counts(not_counts(x.data if is_sparse(x) else x), flavor)
    if batches is not None and is_dask(x):
        (mean, var), norm_vars = _dask_standardized_variances(x, batches, span=span, loess=loess, flavor=flavor,
                                                              check_values=check_values)  # fmt: skip
    else:
        if is_dask(x):
            total, squares, bad = Chunked(x).reduce(_ops.checked_col_moments, None, check_values)
            _warn_if_not_counts(bool(bad), flavor)
            mean_var = _ops.mean_var(total, squares, x.shape[0])
        else:
            mean_var = _ops.col_mean_var(_ops.parts(x))
        mean, var = (to_host(a) for a in mean_var)
        _check_means(mean, flavor)
        if batches is None:
            norm_vars = _standardized_variance(x, None, span=span, loess=loess, mean_var=mean_var)[None]
        else:
            norm_vars = np.stack([_standardized_variance(x, rows, span=span, loess=loess) for _, rows in batches])
    ranks = np.argsort(np.argsort(-norm_vars, axis=1), axis=1).astype(np.float32)  # 0: most variable
    nbatches = (ranks < n_top_genes).sum(axis=0, dtype=np.int64)
    ranks[ranks >= n_top_genes] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # genes never in the top: NaN
        median_rank = np.nanmedian(ranks, axis=0).astype(np.float32)

    df = pd.DataFrame(index=adata.var_names)
    df[K.VAR_MEANS] = mean
    df[K.VAR_VARIANCES] = var
    df["gene_name"] = df.index
    df[K.VAR_HVG_NBATCHES] = nbatches
    df[K.VAR_HVG_RANK] = median_rank
    df[K.VAR_VARIANCES_NORM] = norm_vars.mean(axis=0)
    if flavor == "seurat_v3":
        by, ascending = [K.VAR_HVG_RANK, K.VAR_HVG_NBATCHES], [True, False]
    else:
        by, ascending = [K.VAR_HVG_NBATCHES, K.VAR_HVG_RANK], [False, True]
    order = df[by].reset_index(drop=True).sort_values(by, ascending=ascending, na_position="last").index
    hv = np.zeros(df.shape[0], dtype=bool)
    hv[order.to_numpy()[:n_top_genes]] = True
    df[K.VAR_HIGHLY_VARIABLE] = hv
    if batches is None:
        df = df.drop(columns=K.VAR_HVG_NBATCHES)
    return df
