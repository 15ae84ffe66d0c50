"""`gsc.tl.filter_rank_genes_groups`: scanpy's filter of ranked marker genes by the share of
cells expressing each gene in its group and outside it, and by its fold change.

The genes' names stay where they were ranked and those filtered out become NaN, in a copy of
the ranking under `key_added` (scanpy's layout, which `sc.pl.rank_genes_groups*` read). Fold
changes and shares come from the ranking where it stored them for these cells (same groupby,
`reference='rest'`, same `use_raw`); otherwise every group's sums and nonzero counts come from
one pass of the `group_sums` primitive over the matrix (scanpy slices the matrix once per
group): our kernel on the GPU, Dask blocks one by one.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from anndata import AnnData

from .._backend import to_host
from .._ops import group_sums, parts
from .._settings import settings
from .._validation import canonical, check_anndata, get_matrix, old_positionals
from ._rank_genes_groups import _expm1, group_codes, log_fold_change

STEP = "filter_rank_genes_groups"


def _ranking(adata: AnnData, key: str) -> dict:
    ranked = adata.uns.get(key)
    if not isinstance(ranked, dict) or not {"params", "names"} <= set(ranked):
        msg = (f"{STEP}: adata.uns[{key!r}] holds no ranking (params and names); run "
               f"tl.rank_genes_groups(adata, groupby, key_added={key!r}) first, or pass its key=.")  # fmt: skip
        raise KeyError(msg)
    return ranked


def _group_statistics(adata: AnnData, groupby: str, use_raw: bool, names: pd.DataFrame):
    """Per tested group and ranked gene (names' shape): the share of the group's cells with a
    nonzero value, the share of the other cells, and log2 of the ratio of their mean expm1."""
    if groupby not in adata.obs:
        msg = f"{STEP}: groupby {groupby!r} is not a column of adata.obs."
        raise KeyError(msg)
    if use_raw and adata.raw is None:
        msg = f"{STEP}: use_raw=True but adata has no .raw; pass use_raw=False."
        raise ValueError(msg)
    var_names = adata.raw.var_names if use_raw else adata.var_names
    if not var_names.is_unique:
        msg = f"{STEP}: the var names are not unique; call adata.var_names_make_unique() first."
        raise ValueError(msg)
    cols = {g: var_names.get_indexer(names[g].to_numpy()) for g in names.columns}
    # names already filtered out (NaN: a filtered ranking filtered again) stay out whatever their numbers
    missing = sorted({n for g, c in cols.items() for n in names[g].to_numpy()[(c < 0) & names[g].notna().to_numpy()]},
                     key=str)  # fmt: skip
    if missing:
        msg = (f"{STEP}: ranked genes {missing[:5]} are not in adata{'.raw' if use_raw else ''}.var_names; "
               "the ranking was made on other genes (pass the use_raw it was made with).")  # fmt: skip
        raise KeyError(msg)
    x = canonical(get_matrix(adata, use_raw=use_raw, step=STEP), step=STEP, sum_duplicates=True)
    # each tested group and all other cells (a group's outside: the totals minus the group);
    # labels compared as text, as rank_genes_groups names the groups
    labels = adata.obs[groupby].astype(str).where(adata.obs[groupby].notna()).to_numpy()
    groups = list(names.columns)
    codes = group_codes(labels, groups)
    absent = [g for i, g in enumerate(groups) if not np.any(codes == i)]
    if absent:  # (scanpy: ZeroDivisionError; a result of NaN only would hide it)
        msg = (f"{STEP}: the ranked groups {absent[:5]} are not values of obs[{groupby!r}]; pass the groupby the "
               "ranking was made with (its params['groupby']), or rank again with this one.")  # fmt: skip
        raise ValueError(msg)
    sums, _, nnz = group_sums(parts(x), codes, len(groups) + 1, counts=True)
    sums, nnz = to_host(sums), to_host(nnz)
    size = np.bincount(codes, minlength=len(groups) + 1).astype(np.float64)
    tot_s, tot_n = sums.sum(axis=0), nnz.sum(axis=0)
    expm1 = _expm1(adata)
    frac_in, frac_out, lfc = (pd.DataFrame(np.zeros(names.shape), columns=names.columns, index=names.index)
                              for _ in range(3))  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty group: NaN, as scanpy's mean of no cells
        for i, g in enumerate(groups):
            c, n_in, n_out = cols[g], size[i], x.shape[0] - size[i]
            frac_in[g] = nnz[i, c] / n_in
            frac_out[g] = (tot_n[c] - nnz[i, c]) / n_out
            lfc[g] = log_fold_change(expm1, sums[i, c] / n_in, (tot_s[c] - sums[i, c]) / n_out)
    return frac_in, frac_out, lfc


@old_positionals("key", "groupby", "use_raw", "key_added", "min_in_group_fraction", "min_fold_change",
                 "max_out_group_fraction", "compare_abs")  # fmt: skip
def filter_rank_genes_groups(adata: AnnData, *, key: str | None = None, groupby: str | None = None,
                             use_raw: bool | None = None, key_added: str = "rank_genes_groups_filtered",
                             min_in_group_fraction: float = 0.25, min_fold_change: float = 1,
                             max_out_group_fraction: float = 0.5, compare_abs: bool = False) -> None:  # fmt: skip
    """Filter ranked marker genes: scanpy's ``sc.tl.filter_rank_genes_groups``.

    A ranked gene is kept where more than ``min_in_group_fraction`` of its group's cells and
    fewer than ``max_out_group_fraction`` of the other cells have a nonzero value, and its log2
    fold change (absolute with ``compare_abs``) exceeds ``min_fold_change``. Writes
    ``adata.uns[key_added]``: the ranking under ``key`` with the names of filtered genes set to
    NaN. The ranking's stored fold changes (and with ``pts=True`` its shares) are used where
    they describe these cells (same ``groupby``, ``reference='rest'``, same ``use_raw``), as in
    scanpy; the rest is computed in one pass over X (or raw), on the CPU, the GPU or Dask blocks.
    """
    check_anndata(adata, step=STEP)
    key = "rank_genes_groups" if key is None else key
    ranked = _ranking(adata, key)
    for name, v in (("min_in_group_fraction", min_in_group_fraction), ("min_fold_change", min_fold_change),
                    ("max_out_group_fraction", max_out_group_fraction)):  # fmt: skip
        if not isinstance(v, Real) or isinstance(v, bool):
            msg = f"{STEP}: {name} must be a number, got {v!r}."
            raise TypeError(msg)
    params = ranked["params"]
    groupby = params["groupby"] if groupby is None else groupby
    use_raw = params["use_raw"] if use_raw is None else use_raw
    same = params["groupby"] == groupby and params["reference"] == "rest" and params["use_raw"] == use_raw
    names = pd.DataFrame(ranked["names"])
    stored_lfc = same and "logfoldchanges" in ranked
    stored_pts = same and "pts_rest" in ranked
    settings.log(f"Filtering genes using: min_in_group_fraction: {min_in_group_fraction} "
                 f"min_fold_change: {min_fold_change}, max_out_group_fraction: {max_out_group_fraction}")  # fmt: skip
    if not (stored_lfc and stored_pts):
        frac_in, frac_out, lfc = _group_statistics(adata, groupby, bool(use_raw), names)
    if stored_lfc:
        lfc = pd.DataFrame(ranked["logfoldchanges"])
    if stored_pts:
        frac_in, frac_out = (pd.DataFrame({g: ranked[k][g].reindex(names[g]).to_numpy() for g in names.columns})
                             for k in ("pts", "pts_rest"))  # fmt: skip
    if compare_abs:
        lfc = lfc.abs()
    keep = (frac_in > min_in_group_fraction) & (frac_out < max_out_group_fraction) & (lfc > min_fold_change)
    filtered = dict(ranked)
    filtered["names"] = names.where(keep).to_records(index=False)
    adata.uns[key_added] = filtered
