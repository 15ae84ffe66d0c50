"""`gsc.get.rank_genes_groups_df`: scanpy's long table of a marker-gene ranking (one row per
group and ranked gene, in the ranking's order), read from `uns` alone, so it is the same for a
ranking made on any backend."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from anndata import AnnData

from ._validation import check_anndata

STEP = "rank_genes_groups_df"
_SHARES = {"pts": "pct_nz_group", "pts_rest": "pct_nz_reference"}


def rank_genes_groups_df(adata: AnnData, group: str | Iterable[str] | None, *, key: str = "rank_genes_groups",
                         pval_cutoff: float | None = None, log2fc_min: float | None = None,
                         log2fc_max: float | None = None, gene_symbols: str | None = None) -> pd.DataFrame:  # fmt: skip
    """A ranking of ``tl.rank_genes_groups`` as a DataFrame: scanpy's ``sc.get.rank_genes_groups_df``.

    Columns ``group`` (where more than one group is asked for), ``names``, ``scores`` and, but
    for logreg, ``logfoldchanges``, ``pvals``, ``pvals_adj``; ``gene_symbols`` adds that ``var``
    column, and a ranking with ``pts=True`` adds ``pct_nz_group`` (and ``pct_nz_reference``).
    ``group=None`` takes every ranked group. ``pval_cutoff`` keeps adjusted p values below it,
    ``log2fc_min`` / ``log2fc_max`` fold changes above / below them.
    """
    check_anndata(adata, step=STEP)
    ranked = adata.uns.get(key)
    if not isinstance(ranked, dict) or not {"params", "names"} <= set(ranked):
        msg = f"{STEP}: adata.uns[{key!r}] holds no ranking; run tl.rank_genes_groups(adata, groupby) first."
        raise KeyError(msg)
    ranked_groups = list(ranked["names"].dtype.names)
    one = isinstance(group, str) or not isinstance(group, Iterable)
    groups = ranked_groups if group is None else [group] if one else list(group)
    groups = [g if isinstance(g, str) else str(g) for g in groups]  # 1 names integer category '1'
    unknown = [g for g in groups if g not in ranked_groups]
    if unknown:
        msg = f"{STEP}: groups {unknown} were not ranked under {key!r}; it holds {ranked_groups}."
        raise KeyError(msg)
    if gene_symbols is not None and gene_symbols not in adata.var:
        msg = f"{STEP}: gene_symbols {gene_symbols!r} is not a column of adata.var."
        raise KeyError(msg)
    logreg = ranked["params"]["method"] == "logreg"
    fields = ["names", "scores"] if logreg else ["names", "scores", "logfoldchanges", "pvals", "pvals_adj"]
    frames = [pd.DataFrame({"group": g, **{f: ranked[f][g] for f in fields}}) for g in groups]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"group": [], **{
        f: np.array([], dtype=ranked[f].dtype[0]) for f in fields}})  # group=[]: no rows, as scanpy  # fmt: skip
    table["group"] = pd.Categorical(table["group"], categories=groups)
    if not logreg:
        keep = np.ones(len(table), dtype=bool)
        for col, bound, below in (("pvals_adj", pval_cutoff, True), ("logfoldchanges", log2fc_min, False),
                                  ("logfoldchanges", log2fc_max, True)):  # fmt: skip
            if bound is not None:
                keep &= (table[col] < bound) if below else (table[col] > bound)
        table = table[keep]
    if gene_symbols is not None:
        table = table.join(adata.var[gene_symbols], on="names")
    for k, column in _SHARES.items():
        if k in ranked:  # a gene's share in its group; a ranked name without one (NaN) leaves the table
            shares = ranked[k][groups]
            if not shares.index.is_unique:  # (scanpy's merge gives a row per pairing of the duplicates)
                dup = shares.index[shares.index.duplicated()].unique().tolist()
                msg = (f"{STEP}: the genes of uns[{key!r}][{k!r}] repeat names ({dup[:5]}), so the shares cannot "
                       "be matched to the ranked names; run adata.var_names_make_unique() and rank again.")  # fmt: skip
                raise ValueError(msg)
            rows = shares.index.get_indexer(table["names"])
            found = rows >= 0
            merged_rows = len(table)  # scanpy's merge with its text column makes 'group' text, if it has rows
            table = table[found]
            cols = shares.columns.get_indexer(table["group"].astype(object))
            table[column] = shares.to_numpy()[rows[found], cols]
            if merged_rows:
                table["group"] = table["group"].astype(object)
    if len(groups) == 1:
        table = table.drop(columns="group")
    return table.reset_index(drop=True)
