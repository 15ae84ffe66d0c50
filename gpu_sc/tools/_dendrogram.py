"""`gsc.tl.dendrogram`: scanpy's hierarchical clustering of the categories of `groupby` by the
correlation of their mean profiles (which `sc.pl` dot plots and heat maps order groups by).

The means come from one pass of the `group_sums` primitive over the representation (X_pca by
scanpy's rule, an obsm entry) or, with `var_names`, over every gene of X or raw, sparse as it is
(scanpy makes a dense cells x genes table first); on the CPU, the GPU or Dask blocks. The
correlation of the few category profiles and the linkage are pandas' and scipy's, as in scanpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import pandas as pd
from anndata import AnnData

from .._backend import is_dask, is_sparse, sparse_module, to_host, xp_of
from .._ops import group_sums, parts
from .._ops._layout import in_layout, nan_replaced
from .._representation import representation
from .._settings import default_n_pcs, settings
from .._validation import canonical, check_anndata, check_in_memory, get_matrix, old_positionals, sanitize_anndata

STEP = "dendrogram"
COR_METHODS = ("pearson", "kendall", "spearman")  # pandas' DataFrame.corr
LINKAGE_METHODS = ("single", "complete", "average", "weighted", "centroid", "median", "ward")


def _labels(adata: AnnData, groupby, *, by_genes: bool) -> pd.Series:
    """The category of each cell: the column, or the columns' values joined with '_' (their
    categories sorted as text, or in the order of the categories' product where scanpy's gene
    table makes them; a combination with a missing label, 'nan_x', after those)."""
    if len(groupby) == 1:
        return adata.obs[groupby[0]]
    joined = adata.obs[groupby[0]].astype(str)
    for g in groupby[1:]:
        joined = joined + "_" + adata.obs[g].astype(str)
    labels = joined.astype("category")
    if by_genes:
        combos = product(*(adata.obs[g].cat.categories for g in groupby))
        order = {"_".join(map(str, k)): i for i, k in enumerate(combos)}
        labels = labels.cat.reorder_categories(sorted(labels.cat.categories, key=lambda c: order.get(c, len(order))))
    return labels


def _representation(adata: AnnData, use_rep, n_pcs):
    """scanpy's choice of matrix, with its PCA (of n_pcs components, or 50) where X_pca is missing."""
    rep = representation(adata, use_rep, n_pcs, step=STEP)
    if rep is None:
        from ..preprocessing import pca

        pca(adata, n_comps=n_pcs if n_pcs is not None else default_n_pcs())
        with settings.muted():  # scanpy: no line after its PCA
            rep = representation(adata, use_rep, n_pcs, step=STEP)
    return rep


def _gene_matrix(adata: AnnData, use_raw):
    """(matrix, columns of it to correlate over): scanpy's gene table takes raw's values where
    there is raw (use_raw=None) over X's genes (raw's own with use_raw=True)."""
    raw_values = adata.raw is not None if use_raw is None else bool(use_raw)
    x = get_matrix(adata, use_raw=raw_values, step=STEP)
    genes = adata.raw.var_names if use_raw else adata.var_names
    if not raw_values:
        return x, None
    cols = adata.raw.var_names.get_indexer(genes)
    if (cols < 0).any():
        msg = (f"{STEP}: genes {list(genes[cols < 0][:5])} of adata.var_names are not in adata.raw; "
               "pass use_raw=False to use X.")  # fmt: skip
        raise KeyError(msg)
    return x, cols


@old_positionals("n_pcs", "use_rep", "var_names", "use_raw", "cor_method", "linkage_method", "optimal_ordering",
                 "key_added", "inplace")
def dendrogram(adata: AnnData, groupby: str | Sequence[str], *, n_pcs: int | None = None, use_rep: str | None = None,
               var_names: Sequence[str] | None = None, use_raw: bool | None = None, cor_method: str = "pearson",
               linkage_method: str = "complete", optimal_ordering: bool = False, key_added: str | None = None,
               inplace: bool = True) -> dict | None:  # fmt: skip
    """Hierarchical clustering of `groupby`'s categories: scanpy's ``sc.tl.dendrogram``.

    Each category's mean profile over the representation scanpy picks (``use_rep`` /
    ``n_pcs``: X_pca above 50 genes, made by ``pp.pca`` where missing) or, when `var_names` is
    given, over every gene of X, with raw's values where there is raw (``use_raw=True``: over
    raw's genes; scanpy uses `var_names` only as this switch); their correlation (``cor_method``: pearson, kendall,
    spearman) and scipy's linkage (``linkage_method``, ``optimal_ordering``) of 1 - correlation.
    Stores ``uns[key_added or 'dendrogram_' + '_'.join(groupby)]`` (scanpy's keys: linkage,
    categories_ordered, categories_idx_ordered, dendrogram_info, correlation_matrix, ...), or
    returns that dict with ``inplace=False``.
    """
    import scipy.cluster.hierarchy as sch
    from scipy.spatial import distance

    check_anndata(adata, step=STEP)
    if adata.isbacked:  # refused first, as scanpy does (not by the PCA it would run for a representation)
        check_in_memory(adata.X, step=STEP)
    groupby = [groupby] if isinstance(groupby, str) else groupby
    for g in groupby:  # scanpy's checks and words
        if g not in adata.obs:
            msg = (f"groupby has to be a valid observation. Given value: {g}, valid observations: "
                   f"{adata.obs.columns.tolist()}")
            raise ValueError(msg)
        if not isinstance(adata.obs[g].dtype, pd.CategoricalDtype):
            msg = f"groupby has to be a categorical observation. Given value: {g}, Column type: {adata.obs[g].dtype}"
            raise ValueError(msg)
    if not (callable(cor_method) or cor_method in COR_METHODS):
        msg = f"{STEP}: cor_method must be one of {COR_METHODS} or a callable, got {cor_method!r}."
        raise ValueError(msg)
    if linkage_method not in LINKAGE_METHODS:
        msg = f"{STEP}: linkage_method must be one of {LINKAGE_METHODS} (scipy's linkage), got {linkage_method!r}."
        raise ValueError(msg)
    labels = _labels(adata, list(groupby), by_genes=var_names is not None)
    categories = labels.cat.categories
    codes = labels.cat.codes.to_numpy().astype(np.int64)
    size = np.bincount(codes[codes >= 0], minlength=len(categories))
    empty = [str(c) for c, n in zip(categories, size, strict=True) if n == 0]
    if empty:  # before anything is written (scanpy's PCA, sanitize)
        msg = (f"{STEP}: categories {empty} of {'_'.join(groupby)!r} hold no cells, so they have no mean "
               "profile; drop them first (obs[key] = obs[key].cat.remove_unused_categories()).")  # fmt: skip
        raise KeyError(msg)
    if len(categories) < 2:  # scipy's linkage: "cannot be determined on an empty distance matrix"
        msg = (f"{STEP}: {'_'.join(groupby)!r} has {len(categories)} category ({list(categories)}); a dendrogram "
               "joins two or more.")  # fmt: skip
        raise ValueError(msg)
    cols = None
    if var_names is None:
        x = canonical(_representation(adata, use_rep, n_pcs), step=STEP)
    else:
        x, cols = _gene_matrix(adata, use_raw)
        x = canonical(x, step=STEP)
    width = x.shape[1] if cols is None else len(cols)
    if width < 2:  # a correlation over one value is NaN, and scipy: "Distance matrix 'X' must be symmetric"
        what, fix = (("genes", "X (or raw) needs at least two genes") if var_names is not None else
                     ("components or columns of the representation", "pass more n_pcs, or another use_rep"))
        msg = f"{STEP}: the groups' profiles have {width} value(s) each ({what}); their correlation needs two: {fix}."
        raise ValueError(msg)
    if var_names is not None:
        sanitize_anndata(adata)  # as scanpy's gene table does
    if var_names is None and not is_dask(x) and not is_sparse(x):
        # a few dense columns on the host: pandas' means, scanpy's to the bit (ties in the
        # correlations of a 2-D embedding follow them), put in order by label (bool categories too)
        rep = to_host(x)
        means = pd.DataFrame(rep, index=pd.CategoricalIndex(labels)).groupby(level=0, observed=True).mean()
        means = means.reindex(categories)
    else:  # genes (or a sparse or Dask use_rep='X'): sums in one pass, where scanpy makes a dense table
        sums, counts = _nan_skipping_sums(x, codes, size)
        means = pd.DataFrame(sums / counts if cols is None else sums[:, cols] / counts[:, cols], index=categories)
    corr = means.T.corr(method=cor_method).clip(-1, 1)
    flat = [str(c) for c in corr.index[corr.isna().all(axis=1).to_numpy()]]
    if flat:  # a constant profile has no correlation: scipy's 'must be symmetric' or NaN linkage
        msg = (f"{STEP}: the mean profiles of {flat[:5]} are constant over the {width} values correlated, so "
               "they have no correlation with the others; use more components or genes.")
        raise ValueError(msg)
    linkage = sch.linkage(distance.squareform(1 - corr), method=linkage_method, optimal_ordering=optimal_ordering)
    info = sch.dendrogram(linkage, labels=list(categories), no_plot=True)
    dat = {"linkage": linkage, "groupby": groupby, "use_rep": use_rep, "cor_method": cor_method,
           "linkage_method": linkage_method, "categories_ordered": info["ivl"],
           "categories_idx_ordered": info["leaves"], "dendrogram_info": info,
           "correlation_matrix": corr.values}  # fmt: skip
    if not inplace:
        return dat
    key = key_added or f"dendrogram_{'_'.join(groupby)}"
    settings.log(f"Storing dendrogram info using `.uns[{key!r}]`")
    adata.uns[key] = dat
    return None


def _nan_skipping_sums(x, codes, size) -> tuple[np.ndarray, np.ndarray]:
    """Per-category sums of `x`'s columns and the number of values summed, NaN values skipped
    as pandas' mean (scanpy's) skips them; host arrays. A Dask matrix's blocks carry their NaN
    marks beside their values, so one pass sums both."""
    n = x.shape[1]
    counts = np.broadcast_to(size[:, None].astype(np.float64), (len(size), n))
    if is_dask(x):
        both = x.map_blocks(_with_nan_marks, chunks=(x.chunks[0], (2 * n,)), dtype=_marked_dtype(x.dtype),
                            meta=x._meta.astype(_marked_dtype(x.dtype)))  # fmt: skip
        out = to_host(group_sums(parts(both), codes, len(size))[0])
        return out[:, :n], counts - out[:, n:]
    x, nan = nan_replaced(x, 0)
    sums = to_host(group_sums(parts(x), codes, len(size))[0])
    if nan is None:
        return sums, counts
    rows, cols = nan
    inside = codes[rows] >= 0
    missing = np.zeros(counts.shape)
    np.add.at(missing, (codes[rows][inside], cols[inside]), 1.0)
    return sums, counts - missing


def _marked_dtype(dtype) -> np.dtype:
    """Values and NaN marks in one dtype that counts a block's rows exactly (not float16)."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def _with_nan_marks(block):
    """The block with its NaN values 0 and, beside its columns, a 1 where each NaN was."""
    block = in_layout(block)  # nan_replaced reads rows from CSR pointers (a CSC block's are columns)
    clean, nan = nan_replaced(block, 0)
    dtype = _marked_dtype(block.dtype)
    xp = xp_of(block.data if is_sparse(block) else block)
    rows, cols = (np.zeros(0, np.int64),) * 2 if nan is None else nan
    rows, cols = xp.asarray(rows), xp.asarray(cols)
    if is_sparse(block):
        spm = sparse_module(block)
        marks = spm.csr_matrix((xp.ones(rows.size, dtype=dtype), (rows, cols)), shape=block.shape)
        return spm.hstack([clean.astype(dtype), marks], format="csr")
    marks = xp.zeros(block.shape, dtype=dtype)
    marks[rows, cols] = 1
    return xp.concatenate([clean.astype(dtype), marks], axis=1)
