"""`gsc.tl.rank_genes_groups`: scanpy's marker-gene ranking (t-test, t-test_overestim_var,
wilcoxon, logreg), with the same arguments and the same `uns` layout, so that
`sc.get.rank_genes_groups_df` and `sc.pl.rank_genes_groups*` read it.

Every group's means, variances and nonzero counts come from one pass of the `group_sums`
primitive (our kernel on the GPU, Dask blocks one by one); the rest of the cells' statistics are
the totals minus the group's. Welch's t statistic and its p value are scipy's
(`ttest_ind_from_stats`) on those, as in scanpy; only the (groups x genes) statistics reach the
host. Wilcoxon's rank sums come from the `rank_sums` primitive (every gene ranked once over all
cells against 'rest', over the group and the reference otherwise; sparse, never densified), and
its z scores and p values from scanpy's formulas in scanpy's order of operations. logreg
delegates, as scanpy does, to a multinomial logistic regression (scikit-learn's on the host, or
cuML's for GPU data where cuML is installed) and ranks by its coefficients.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._backend import blocks_like, is_dask, is_gpu, is_sparse, to_host, xp_of
from .._ops import group_sums, parts
from .._ops._layout import nan_replaced
from .._ops.rank_sums import rank_sums
from .._settings import DEBUG, HINT, settings, user_stacklevel
from .._stats import bh_fdr
from .._validation import (UnsupportedMatrixError, canonical, check_anndata, check_int, check_not_empty, get_matrix,
                           host_bool_mask, old_positionals, sanitize_anndata)
from .._values import not_counts

METHODS = ("t-test", "t-test_overestim_var", "wilcoxon", "logreg")
CORR_METHODS = ("benjamini-hochberg", "bonferroni")
STEP = "rank_genes_groups"
_DTYPES = {"names": "O", "scores": "float32", "logfoldchanges": "float32", "pvals": "float64",
           "pvals_adj": "float64"}  # fmt: skip


def _matrix(adata: AnnData, use_raw, layer, mask_var):
    """(X, var_names, use_raw, whether X was CSC, X's dtype before a float16 one is made float32)
    the test reads: a layer, raw or X, restricted to mask_var."""
    if use_raw is None:  # scanpy's default: raw where there is one (a layer then needs use_raw=False)
        use_raw = adata.raw is not None
        if use_raw and layer is not None:  # get_matrix's 'got layer, use_raw' named what was not passed
            msg = (f"{STEP}: layer={layer!r} with adata.raw set: use_raw defaults to True there, as in scanpy, and a "
                   "layer cannot be read from raw; pass use_raw=False to rank the layer.")
            raise ValueError(msg)
    x = get_matrix(adata, layer=layer, use_raw=bool(use_raw), step=STEP)
    csc = getattr(x, "format", None) == "csc"
    var = adata.raw.var if use_raw else adata.var
    names = var.index
    if mask_var is not None:
        # a column of adata.var, as in scanpy, which applies it to raw's genes by position where raw
        # is ranked (so raw must hold as many genes); else, with raw ranked, a column of raw.var
        if isinstance(mask_var, str):
            frames = [adata.var] + ([adata.raw.var] if use_raw else [])
            found = next((f for f in frames if mask_var in f.columns), None)
            if found is None:
                msg = (f"{STEP}: mask_var {mask_var!r} is not a column of adata.var"
                       + (" or adata.raw.var" if use_raw else "") + ".")
                raise KeyError(msg)
            mask_var = found[mask_var].to_numpy()
        what = "mask_var (over adata.raw's genes, which use_raw=True ranks)" if use_raw else "mask_var"
        keep = host_bool_mask(mask_var, len(names), what=what, step=STEP)
        if not keep.any():  # scanpy ranks nothing without a word; the empty-matrix error named no mask
            msg = (f"{STEP}: mask_var selects none of the {keep.size} genes (it is all False); pass a mask "
                   "with at least one True, or mask_var=None to rank every gene.")
            raise ValueError(msg)
        x, names = x[:, keep], names[keep]
    # duplicate entries summed: squares, nonzero counts and ranks take the matrix's values (Dask
    # blocks are summed too; scanpy's t-test and pts would count each entry apart)
    x = canonical(x, step=STEP, sum_duplicates=True)
    source_dtype = x.dtype  # scanpy squares values in it
    if x.dtype == np.float16:  # scanpy takes it; the group sums are compiled for float32 and up
        x = x.astype(np.float32)
    return x, names, use_raw, csc, source_dtype


def _warn_if_counts(x) -> None:
    """scanpy's warning where every value is a whole number >= 0 (its check_nonnegative_integers;
    an in-memory X only: a Dask array is not read again for a warning)."""
    values = x.data if is_sparse(x) else x
    if not is_dask(x) and values.size and not not_counts(values):
        settings.warning("It seems you use rank_genes_groups on the raw count data. Please logarithmize "
                         "your data before calling rank_genes_groups.")  # fmt: skip


def _as_categories(adata: AnnData, groupby: str) -> pd.Series:
    """`obs[groupby]` as scanpy makes it categorical (its sanitize: strings in natural order),
    without changing adata (scanpy's sanitize does, once all is checked); numbers and bools are
    refused, as scanpy's '.cat accessor' error refuses them."""
    col = adata.obs[groupby]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col
    probe = AnnData(obs=adata.obs[[groupby]].copy())
    probe.strings_to_categoricals()
    col = probe.obs[groupby]
    if not isinstance(col.dtype, pd.CategoricalDtype):  # scanpy: "Can only use .cat accessor ..."
        msg = (f"{STEP}: groupby {groupby!r} holds {col.dtype} values, not categories (scanpy refuses it "
               f"too); make it categorical first, e.g. adata.obs[{groupby!r}] = "
               f"adata.obs[{groupby!r}].astype(str).astype('category').")
        raise TypeError(msg)
    return col


def _groups(adata: AnnData, groupby: str, groups, reference, method: str):
    """The categories tested (in the categories' order), each cell's label, and the reference
    as a category name ('rest', or the category it names: a number names its text, as scanpy's
    int categories take reference=1). Everything is checked before anything changes."""
    if groupby not in adata.obs:
        msg = f"{STEP}: groupby {groupby!r} is not a column of adata.obs."
        raise KeyError(msg)
    col = _as_categories(adata, groupby)
    cats = [str(c) for c in col.cat.categories]
    reference = reference if isinstance(reference, str) else str(reference)
    if reference != "rest" and reference not in cats:
        msg = f"{STEP}: reference {reference!r} must be 'rest' or one of adata.obs[{groupby!r}]'s {cats}."
        raise ValueError(msg)
    if isinstance(groups, str) and groups != "all" or not isinstance(groups, str | Iterable):
        msg = f"{STEP}: groups must be 'all' or a list of groups, got {groups!r}."
        raise ValueError(msg)
    groups = groups if isinstance(groups, str) else list(groups)  # an array or Index of categories too
    chosen = cats if groups == "all" else [str(g) for g in groups]
    if reference != "rest" and reference not in chosen:
        chosen = [*chosen, reference]
    unknown = [g for g in chosen if g not in cats]
    if unknown:
        msg = f"{STEP}: groups {unknown} are not categories of adata.obs[{groupby!r}] ({cats[:10]})."
        raise ValueError(msg)
    tested = [g for g in dict.fromkeys(chosen) if g != reference]
    if not tested or method == "logreg" and len(dict.fromkeys(chosen)) < 2:
        what = "no group to test besides the reference" if not tested else "method='logreg' needs at least two groups"
        msg = (f"{STEP}: {what}; got groups={groups!r}, reference={reference!r}. Choose groups among "
               f"adata.obs[{groupby!r}]'s {cats[:10]}.")  # fmt: skip
        raise ValueError(msg)
    order = [g for g in cats if g in chosen] if groups == "all" else list(dict.fromkeys(chosen))
    labels = col.astype(str).to_numpy(dtype=object)
    labels[col.isna().to_numpy()] = None  # unlabelled cells: in no group (not a group named 'nan')
    sizes = pd.Series(labels).value_counts()
    single = [g for g in order if sizes.get(g, 0) < 2]
    if single:
        msg = (f"{STEP}: Could not calculate statistics for groups {', '.join(single)} since they hold "
               "fewer than 2 cells (no variance can be estimated). Leave them out with groups=[...] or "
               "merge them.")  # fmt: skip
        raise ValueError(msg)
    return order, labels, reference


def _expm1(adata: AnnData):
    base = adata.uns.get("log1p", {}).get("base")
    return np.expm1 if base is None else (lambda v: np.expm1(v * np.log(base)))


def group_codes(labels, order) -> np.ndarray:
    """Each cell's group among `order`; len(order) for the cells in none, one more row of the
    group sums, so that the totals (and each group's rest) come from the same pass."""
    codes = pd.Categorical(labels, categories=order).codes.astype(np.int64)
    codes[codes < 0] = len(order)
    return codes


def log_fold_change(expm1, mean, mean_rest):
    """scanpy's log2 fold change of a group's mean expression over its reference's (expm1 of
    the log means; 1e-9 keeps absent genes finite)."""
    return np.log2((expm1(mean) + 1e-9) / (expm1(mean_rest) + 1e-9))


def _mean_var(s, q, n, one=None):
    """Mean and unbiased variance per row of float64 sums `s` and sums of squares `q` over `n`
    cells. `one`: (where, values, scanpy's one-pass statistics) for the sides that hold one value
    of a gene in all their cells (on scaled data a gene absent from a group, or from the rest):
    there scanpy's E[x^2] - E[x]^2 is a rounding error whose sign decides whether scipy's t is
    NaN (scanpy scores it 0) or the Welch t, so those statistics are scanpy's."""
    n = np.asarray(n, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = q / n - mean**2
    if one is not None:
        where, values, stats = one
        mean[where], var[where] = stats(values[where], np.broadcast_to(n, var.shape)[where])
    return mean, var * np.where(n != 1, n / (n - 1), 1.0)


def _one_values(x, codes, s, q, sizes):
    """Per row of the group sums `s`, `q` (the groups, then the cells in none; `sizes` cells)
    and gene: whether every cell holds one value (the variance within the round-off of the sums;
    no cells: no), and that value, taken exactly: a float32 (float16) mean rounded to its
    dtype, where the sums are exact, else read from X at a cell of the group."""
    n = np.asarray(sizes, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        # within the round-off of n sums of c and c^2 (each off by up to about n eps of itself)
        where = (n > 0) & (q / n - mean**2 <= mean**2 * np.ldexp(n + 1, -48))
    values = np.full(where.shape, np.nan)
    if x.dtype.kind != "f" or x.dtype.itemsize < 8:
        values[where] = mean[where].astype(x.dtype).astype(np.float64) if x.dtype.kind == "f" else mean[where]
        return where, values
    groups = np.flatnonzero(where.any(axis=1))
    if groups.size:
        first = np.array([np.flatnonzero(codes == g)[0] for g in groups])  # (the cells in none: their code)
        rows = x[first if is_dask(x) else xp_of(x).asarray(first)]
        rows = rows.compute() if is_dask(rows) else rows
        rows = to_host(rows.toarray() if is_sparse(rows) else rows).astype(np.float64)
        values[groups] = np.where(where[groups], rows, np.nan)
    return where, values


def _rest_one_values(where, values, sizes):
    """For each group (the rows of `where` but the last, the cells in none): whether all the
    other cells hold one value of a gene (every other non-empty row of one value, all equal),
    and that value."""
    n_groups = where.shape[0] - 1
    rest_where = np.zeros((n_groups, where.shape[1]), dtype=bool)
    rest_values = np.full(rest_where.shape, np.nan)
    filled = np.asarray(sizes) > 0
    for g in range(n_groups):
        others = np.flatnonzero(filled & (np.arange(where.shape[0]) != g))
        if others.size:
            v = values[others[0]]
            rest_where[g] = where[others].all(axis=0) & (values[others] == v).all(axis=0)
            rest_values[g] = np.where(rest_where[g], v, np.nan)
    return rest_where, rest_values


def _scanpy_one_value_stats(square_dtype, layout: str):
    """scanpy's (mean, E[x^2] - E[x]^2) over n cells all holding c (`stats(c, n)`), as its
    `_get_mean_var` sums them: squares of float32 (float16) values round c^2 to that dtype and the
    float64 sums are exact (mean c, variance round(c^2) - c^2); float64 values are summed in float64
    one cell after the other (`layout` 'rows': numpy's reduction over a dense matrix's rows;
    'csc': along a CSC column), pairwise ('column': a dense matrix of one gene), or on CSR ('csr')
    by numba's threads over every T-th row, their T partial sums then added by numpy. Integers
    and bools: variance 0."""
    threads = numba.get_num_threads()

    def total(v, k):
        if layout == "column":
            return np.array([np.full(m, vi).sum() for vi, m in zip(v, k, strict=True)])
        if layout == "csr":
            return np.array([_sequential_sums(np.full(threads, vi), np.array([len(range(t, m, threads))
                                                                               for t in range(threads)])).sum()
                             for vi, m in zip(v, k, strict=True)])  # fmt: skip
        return _sequential_sums(v, k)

    def stats(c, n):
        if square_dtype.kind != "f":
            return c, np.zeros(c.size)
        if square_dtype.itemsize < 8:
            r = c.astype(square_dtype)
            return c, (r * r).astype(np.float64) - c**2
        mean, var = np.zeros(c.size), np.zeros(c.size)
        live = c != 0  # zeros sum to 0 in any order
        k = n[live].astype(np.int64)
        mean[live] = total(c[live], k) / k
        var[live] = total(c[live] ** 2, k) / k - mean[live] ** 2
        return mean, var

    return stats


@numba.njit(cache=True)
def _sequential_sums(values, counts):
    """values[i] added counts[i] times, one addition after the other, in float64."""
    out = np.zeros(values.size)
    for i in range(values.size):
        total = 0.0
        for _ in range(counts[i]):
            total += values[i]
        out[i] = total
    return out


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` largest scores, largest first (a partial sort, then the n sorted)."""
    part = np.argpartition(scores, -n)[-n:]
    return part[np.argsort(scores[part])[::-1]]


@old_positionals("mask_var", "use_raw", "groups", "reference", "n_genes", "rankby_abs", "pts", "key_added",
                 "copy", "method", "corr_method", "tie_correct", "layer")
def rank_genes_groups(adata: AnnData, groupby: str, *, mask_var=None, use_raw: bool | None = None,
                      groups: str | Iterable[str] = "all", reference: str = "rest",
                      n_genes: int | None = None, rankby_abs: bool = False, pts: bool = False,
                      key_added: str | None = None, copy: bool = False, method: str | None = None,
                      corr_method: str = "benjamini-hochberg", tie_correct: bool = False,
                      layer: str | None = None, **kwds) -> AnnData | None:  # fmt: skip
    """Rank genes that characterise groups: scanpy's ``sc.tl.rank_genes_groups``.

    Methods ``'t-test'`` (default), ``'t-test_overestim_var'`` (the rest's variance weighted
    as if it had the group's size) and ``'wilcoxon'`` (rank sums, normal approximation;
    ``tie_correct`` as in scanpy) and ``'logreg'`` (coefficients of a logistic regression on the
    cells of the tested groups; `kwds` go to scikit-learn's ``LogisticRegression`` as in scanpy;
    writes ``names`` and ``scores`` only, like scanpy). Expects log-normalised data (``log1p``'s base in
    ``uns['log1p']`` is honoured for the fold changes). X (or the layer / raw) may be numpy,
    scipy sparse, cupy / cupyx (group statistics in our GPU kernel, Wilcoxon's ranks by CuPy
    sorts) or, for the t-tests, a row-chunked Dask array.

    Writes ``adata.uns[key_added or 'rank_genes_groups']``: ``params`` and the record arrays
    ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj`` (one field per tested
    group, genes sorted by score), and with ``pts=True`` the DataFrames ``pts`` (and
    ``pts_rest`` against 'rest'): each gene's share of cells with a nonzero value.
    """
    check_anndata(adata, step=STEP)
    method = "t-test" if method is None else method
    if use_raw is True and adata.raw is None:  # refused before scanpy's first line, as scanpy does
        get_matrix(adata, use_raw=True, step=STEP)
    start = settings.log("ranking genes")
    if method not in METHODS:
        msg = f"{STEP}: method {method!r} is not available; use one of {METHODS}."
        raise ValueError(msg)
    if corr_method not in CORR_METHODS:
        msg = f"{STEP}: corr_method must be one of {CORR_METHODS}, got {corr_method!r}."
        raise ValueError(msg)
    if "only_positive" in kwds:  # scanpy's backward compatibility
        rankby_abs = not kwds.pop("only_positive")
    if kwds and method != "logreg":  # scanpy ignores them without a word; a typo would go unseen
        warnings.warn(f"{STEP}: {sorted(kwds)} ignored: only method='logreg' takes further keywords (scikit-learn's "
                      "LogisticRegression's), as in scanpy.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        kwds = {}
    x, names, use_raw, csc, source_dtype = _matrix(adata, use_raw, layer, mask_var)
    if csc and method.startswith("t-test") and x.dtype == np.float32:
        # scanpy's t-tests square a CSC matrix's values in float64 (a CSR's or dense one's in
        # float32, as our group sums do): its p values then differed from ours by up to 1.5e-4
        x = x.astype(np.float64)
    check_not_empty(x, step=STEP)
    if method == "logreg" and is_dask(x):
        msg = f"{STEP}: method='logreg' fits all cells at once; compute the Dask array into memory first."
        raise UnsupportedMatrixError(msg)
    model = _logistic_regression(x, kwds) if method == "logreg" else None  # bad kwds: before any change
    if method == "wilcoxon" and is_dask(x):
        msg = (f"{STEP}: method='wilcoxon' ranks each gene over all cells at once, which a Dask "
               "array chunked by cells does not allow; compute X into memory first (or use a t-test).")  # fmt: skip
        raise ValueError(msg)
    n_cells, n_all = x.shape
    n_top = n_all if n_genes is None else min(check_int(n_genes, step=STEP, name="n_genes"), n_all)
    adata = adata.copy() if copy else adata
    order, labels, ref_name = _groups(adata, groupby, groups, reference, method)
    if method != "logreg":
        _warn_if_counts(x)
    codes = group_codes(labels, order)  # each cell's group (len(order): none), for the sizes and the sums
    sizes_all = np.bincount(codes, minlength=len(order) + 1)  # the groups, then the cells in none
    size = sizes_all[: len(order)]
    settings.log(f"consider {groupby!r} groups:", level=DEBUG)
    settings.log(f"with sizes: {size}", level=DEBUG)
    key = key_added or "rank_genes_groups"
    params = {"groupby": groupby, "reference": reference, "method": method, "use_raw": use_raw,
              "layer": layer, "corr_method": corr_method}  # fmt: skip
    if method == "logreg":
        tables = {"names": {}, "scores": {}}
        for name, scores in _logreg_scores(x, _as_categories(adata, groupby), order, model).items():
            idx = _top(np.abs(scores) if rankby_abs else scores, n_top)
            tables["names"][name], tables["scores"][name] = np.asarray(names)[idx], scores[idx]
        _write(adata, key, params, tables)
        _log_finished(start, key, method)
        return adata if copy else None

    # one pass for every group and the totals
    stats_all = [to_host(a) for a in group_sums(parts(x), codes, len(order) + 1, squares=True, counts=True)]
    tot_s, tot_q, tot_n = (a.sum(axis=0) for a in stats_all)
    sums, sumsq, nnz = (a[: len(order)] for a in stats_all)
    # sides whose cells all hold one value of a gene: scanpy's one-pass statistics there
    where, values = _one_values(x, codes, stats_all[0], stats_all[1], sizes_all)
    layout = ("csc" if csc else "csr" if is_sparse(blocks_like(x)) else "column" if x.shape[1] == 1 else "rows")
    scanpy_stats = _scanpy_one_value_stats(np.dtype(np.float64) if csc else source_dtype, layout)
    mean, var = _mean_var(sums, sumsq, size, (where[: len(order)], values[: len(order)], scanpy_stats))
    if ref_name == "rest":
        rest_size = n_cells - size
        rest_where, rest_values = _rest_one_values(where, values, sizes_all)
        mean_rest, var_rest = _mean_var(tot_s - sums, tot_q - sumsq, rest_size, (rest_where, rest_values, scanpy_stats))
    else:
        ref = order.index(ref_name)
        mean_rest, var_rest = np.broadcast_to(mean[ref], mean.shape), np.broadcast_to(var[ref], var.shape)
        rest_size = np.full(len(order), size[ref])
    expm1 = _expm1(adata)
    wilcoxon = _wilcoxon_z(x, codes, order, size, ref_name, tie_correct) if method == "wilcoxon" else None
    tables = {k: {} for k in ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")}  # scanpy's order
    for g, name in enumerate(order):
        if name == ref_name:
            continue
        if wilcoxon is not None:
            scores = wilcoxon[g]
            pvals = 2 * stats.distributions.norm.sf(np.abs(scores))
        else:
            n_rest = size[g] if method == "t-test_overestim_var" else rest_size[g]
            with np.errstate(invalid="ignore", divide="ignore"):
                scores, pvals = stats.ttest_ind_from_stats(mean[g], np.sqrt(var[g]), size[g], mean_rest[g],
                                                           np.sqrt(var_rest[g]), n_rest, equal_var=False)  # fmt: skip
            scores = np.where(np.isnan(scores), 0.0, scores)
        pvals = np.where(np.isnan(pvals), 1.0, pvals)
        adj = bh_fdr(pvals) if corr_method == "benjamini-hochberg" else np.minimum(pvals * n_all, 1.0)
        idx = _top(np.abs(scores) if rankby_abs else scores, n_top)
        lfc = log_fold_change(expm1, mean[g], mean_rest[g])
        for k, v in (("names", np.asarray(names)), ("scores", scores), ("logfoldchanges", lfc),
                     ("pvals", pvals), ("pvals_adj", adj)):  # fmt: skip
            tables[k][name] = v[idx]
    shares = {}
    if pts:
        shares["pts"] = pd.DataFrame((nnz / size[:, None]).T, index=names, columns=order)
        if ref_name == "rest":
            shares["pts_rest"] = pd.DataFrame(((tot_n - nnz) / (n_cells - size)[:, None]).T,
                                              index=names, columns=order)  # fmt: skip
    _write(adata, key, params, tables, shares)
    _log_finished(start, key, method)
    return adata if copy else None


def _log_finished(start: float, key: str, method: str) -> None:
    """scanpy's last line: the record arrays written (logreg's: names and scores)."""
    tables = ("names", "scores") if method == "logreg" else ("names", "scores", "logfoldchanges", "pvals", "pvals_adj")
    listed = "".join(f"\n    {k!r}, sorted np.recarray to be indexed by group ids" for k in tables)
    # (scanpy's list ends in a line break for logreg, which puts the time on a line of its own)
    end = "\n" if method == "logreg" else ""
    settings.log("    finished", start=start, deep=f"added to `.uns[{key!r}]`{listed}{end}")


def _write(adata: AnnData, key: str, params: dict, tables: dict, shares: dict | None = None) -> None:
    """obs[groupby] made categorical as scanpy makes it (the first change to adata: every check
    and computation is done), then uns[key]: the params, the nonzero shares (`pts`), then one
    record array per statistic (a field per group), in scanpy's order."""
    sanitize_anndata(adata)  # scanpy's, always: every string column of obs and var (groupby among them)
    adata.uns[key] = {"params": params, **(shares or {})}
    for k, cols in tables.items():
        frame = pd.DataFrame({g: pd.Series(v) for g, v in cols.items()})
        adata.uns[key][k] = frame.to_records(index=False, column_dtypes=_DTYPES[k])


def _logreg_scores(x, col: pd.Series, order, model) -> dict[str, np.ndarray]:
    """scanpy's logreg: one multinomial fit on the cells of the tested groups (the reference
    included; at least two, `_groups` checked), labelled by their category codes in the column's
    own categories (as scanpy, so the solver sees the same problem); a group's scores are its
    row of coefficients (with two groups, the one row, reported for the first group only)."""
    cats = [str(c) for c in col.cat.categories]
    codes = col.cat.codes.to_numpy()
    rows = np.flatnonzero(np.isin(codes, [cats.index(g) for g in order]))
    coef = to_host(model.fit(x[rows], codes[rows]).coef_)
    if len(order) <= 2:
        return {order[0]: np.asarray(coef[0], dtype=np.float64)}
    present = np.unique(codes[rows])  # coefficient rows follow the codes present
    return {g: np.asarray(coef[np.searchsorted(present, cats.index(g))], dtype=np.float64) for g in order}


def _logistic_regression(x, kwds):
    if is_gpu(x):
        try:
            from cuml.linear_model import LogisticRegression
        except ImportError:  # no cuML: scikit-learn on a host copy, as scanpy
            pass
        else:
            return LogisticRegression(**kwds)
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        msg = f"{STEP}: method='logreg' needs scikit-learn (pip install scikit-learn)."
        raise ImportError(msg) from err
    try:
        model = LogisticRegression(**kwds)
    except TypeError as err:
        msg = f"{STEP}: method='logreg' passes its extra arguments to scikit-learn's LogisticRegression: {err}"
        raise TypeError(msg) from err
    return _HostFit(model) if is_gpu(x) else model


class _HostFit:
    """A scikit-learn model fitted on a host copy of GPU data."""

    def __init__(self, model):
        self.model = model

    def fit(self, x, y):
        host = x.get() if hasattr(x, "get") else x
        return self.model.fit(host, y)


def _wilcoxon_z(x, codes, order, size, reference, tie_correct) -> dict[int, np.ndarray]:
    """Each tested group's Wilcoxon z scores per gene (NaN set to 0), with scanpy's formulas in
    its order of operations (sizes as Python integers, so the products are exact)."""
    n_cells = x.shape[0]
    out = {}
    if reference == "rest":  # one ranking over all cells serves every group
        sums, tie = _rank_sums_nan_last(x, codes, len(order))
        coef = 1.0 - tie / (np.float64(n_cells) ** 3 - n_cells) if tie_correct and n_cells >= 2 else 1
        for g in range(len(order)):
            n_active = int(size[g])
            with np.errstate(invalid="ignore", divide="ignore"):
                std_dev = np.sqrt(coef * n_active * (n_cells - n_active) * (n_cells + 1) / 12.0)
                out[g] = (sums[g] - (n_active * (n_cells + 1) / 2.0)) / std_dev
    else:  # each group ranked together with the reference only
        ref = order.index(reference)
        m_active = int(size[ref])
        for g in range(len(order)):
            if g == ref:
                continue
            rows = np.flatnonzero((codes == g) | (codes == ref))
            block = x[xp_of(x).asarray(rows)]  # a device index for device data
            sums, tie = _rank_sums_nan_last(block, (codes[rows] == ref).astype(np.int64), 1)
            n_active, n = int(size[g]), rows.size
            if n_active <= 25 or m_active <= 25:
                settings.log("Few observations in a group for normal approximation (<=25). Lower test accuracy.",
                             level=HINT)  # fmt: skip
            coef = 1.0 - tie / (np.float64(n) ** 3 - n) if tie_correct else 1
            with np.errstate(invalid="ignore", divide="ignore"):
                std_dev = np.sqrt(coef * n_active * m_active * (n_active + m_active + 1) / 12.0)
                out[g] = (sums[0] - (n_active * ((n_active + m_active + 1) / 2.0))) / std_dev
    for z in out.values():
        z[np.isnan(z)] = 0
    return out


def _rank_sums_nan_last(x, codes, n_groups: int):
    """`rank_sums` (host arrays) as scanpy ranks a gene with NaN values: its rankdata sorts
    them above every value, each its own value (NaN != NaN: no tie). Here they are ranked as
    +inf (a real +inf as the largest finite value: its own tie below them), so they take the
    same top ranks as one tied block, which comes off the tie term; where a gene's NaN cells lie
    in several groups, each gets the block's average rank (scanpy's split of those ranks follows
    its sort's order, so there the scores differ, by about 0.01 measured; an all-NaN gene scores
    0 here and a value set by row order there)."""
    given = x.data if is_sparse(x) else x
    x, nan = nan_replaced(x, np.inf)  # a copy of the same layout where there is any NaN
    if nan is not None:  # real +inf values: tied among themselves below the NaN, as in scanpy
        values = x.data if is_sparse(x) else x
        values[given == np.inf] = np.finfo(values.dtype).max
    sums, tie = (to_host(a) for a in rank_sums(parts(x), codes, n_groups))
    if nan is None:
        return sums, tie
    n_nan = np.bincount(nan[1], minlength=x.shape[1]).astype(np.float64)
    return sums, tie - (n_nan**3 - n_nan)
