"""Interaction genes (PICSEQ.md §8): genes whose observed UMIs in PICs exceed (or fall short of)
what the two assigned partners explain, tested per (A group x B group x condition)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._backend import is_sparse, to_host, xp_of
from .._keys import OBS_PIC_A, OBS_PIC_B, OBS_PIC_STATUS, PIC_EXPECTED, UNS_PIC_INTERACTION
from .._validation import canonical, check_anndata, get_matrix, make_actual
from ._expected import counts_matrix, group_sums, obs_column, ok_mask

_STEP = "interaction_genes"
PSEUDO = 5.0  # pseudocount of the log2 effect


def bh_fdr(pvalues) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN entries stay NaN and are not counted.

    q_(i) = min_{j >= i} p_(j) * m / j over the m finite p-values sorted ascending, capped at 1.
    """
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"bh_fdr: pvalues must be numbers, got {type(pvalues).__name__} ({e}).") from e
    if p.ndim != 1:
        raise ValueError(f"bh_fdr: pvalues must be a 1-D array, got shape {p.shape}.")
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    pf = p[finite]
    if pf.size == 0:
        return q
    if (pf < 0).any() or (pf > 1).any():
        msg = "bh_fdr: p-values must lie in [0, 1]."
        raise ValueError(msg)
    order = np.argsort(pf, kind="stable")
    m = pf.size
    scaled = pf[order] * m / np.arange(1, m + 1)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    q[finite] = out
    return q


def _group_labels(pics: AnnData, keys: Sequence[str], use: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """(int64 group code per PIC, -1 where unused; table of groups with one column per key)."""
    cols = {}
    for k in keys:
        col = obs_column(pics, k, step=_STEP, what="a grouping of the PICs").astype(object)
        cols[k] = col.to_numpy()
    frame = pd.DataFrame(cols, index=pics.obs_names)
    usable = use & frame.notna().all(axis=1).to_numpy()
    sub = frame[usable].astype(str)
    if sub.empty:
        return np.full(pics.n_obs, -1, np.int64), pd.DataFrame(columns=list(keys))
    idx = pd.MultiIndex.from_frame(sub) if len(keys) > 1 else pd.Index(sub.iloc[:, 0])
    codes_u, uniques = pd.factorize(idx, sort=True)
    codes = np.full(pics.n_obs, -1, np.int64)
    codes[usable] = codes_u
    groups = pd.DataFrame(list(uniques) if len(keys) > 1 else [[u] for u in uniques], columns=list(keys))
    return codes, groups


def interaction_genes(
    pics: AnnData,
    *,
    groupby_keys: str | Sequence[str] = (OBS_PIC_A, OBS_PIC_B),
    condition_key: str | None = None,
    min_pics: int = 10,
    min_counts: float = 20,
    layer: str = PIC_EXPECTED,
    counts_layer: str | None = None,
    status_key: str | None = OBS_PIC_STATUS,
    fdr: float = 0.1,
    key_added: str = UNS_PIC_INTERACTION,
    inplace: bool = True,
) -> pd.DataFrame:
    """Genes expressed in PICs more (or less) than their assigned partners explain.

    PICs with status 'ok' and a finite expected row are grouped by ``groupby_keys`` (default
    A group x B group) and, if given, ``condition_key``; groups with fewer than `min_pics` PICs
    are left out. Per gene and kept group k, O_k = observed UMIs (``pics.X`` or
    ``counts_layer``) and E_k = expected UMIs (``pics.layers[layer]``, from
    :func:`expected_expression`) summed over the group's PICs; then

    * chi2 = sum_k (O_k - E_k)^2 / E_k over the groups with E_k > 0 (a group where E_k = 0 adds
      nothing, whatever O_k; such groups are rare: the gene is absent from both references),
    * df = (number of those groups) - 1, or 1 when only one group is left (then the test is a
      one-group goodness of fit),
    * p-value = scipy.stats.chi2.sf(chi2, df); FDR = Benjamini–Hochberg over the tested genes,
    * effect = log2((O + 5) / (E + 5)) over all kept groups, and the same per group.

    A gene is tested when max(sum O, sum E) >= `min_counts`; others get NaN statistics. When
    the expected layer was computed for a subset of genes (``genes=`` of
    :func:`expected_expression`), only those genes are tested.

    Parameters
    ----------
    pics
        PICs with raw counts, obs group columns and the expected layer.
    groupby_keys
        obs columns whose combination defines a PIC group (one name: that column alone).
    condition_key
        Optional obs column (sample, treatment, ...) that splits groups further; PICs without a
        condition are left out.
    min_pics
        Smallest number of PICs in a tested group.
    min_counts
        Smallest max(total observed, total expected) UMIs of a tested gene.
    layer
        Layer with the expected UMIs.
    counts_layer
        Layer with the observed counts instead of X.
    status_key
        obs column with 'ok' or a drop reason (absent column: all PICs are used).
    fdr
        FDR threshold of the 'significant' column.
    key_added
        uns key of the stored result.
    inplace
        Store the result in ``pics.uns[key_added]``.

    Returns
    -------
    DataFrame indexed by gene with columns 'observed', 'expected', 'log2_effect', 'chi2', 'df',
    'pvalue', 'fdr', 'tested', 'significant' (fdr < `fdr`) and 'log2_effect:<group>' per group
    (group label: the group's key values joined by '|'), in var order. With ``inplace`` also
    ``pics.uns[key_added]`` = {'table': that DataFrame, 'groups': DataFrame of the kept groups
    (key columns, 'label', 'n_pics'), 'observed' / 'expected': float64 arrays groups x genes
    (tested-gene columns in var order, see 'genes'), 'genes', 'params'}.
    Nothing changes when an error is raised.
    """
    check_anndata(pics, step=_STEP, name="pics")
    if isinstance(groupby_keys, str):  # one column, as pandas' groupby takes it, not its letters
        groupby_keys = [groupby_keys]
    if min_pics < 1:
        msg = f"{_STEP}: min_pics must be at least 1, got {min_pics}."
        raise ValueError(msg)
    if not 0 < fdr <= 1:
        msg = f"{_STEP}: fdr must lie in (0, 1], got {fdr}."
        raise ValueError(msg)
    keys = list(groupby_keys) + ([condition_key] if condition_key is not None else [])
    if not keys:
        msg = f"{_STEP}: groupby_keys is empty."
        raise ValueError(msg)
    use = ok_mask(pics, status_key=status_key)
    codes, groups = _group_labels(pics, keys, use)

    obs_x = counts_matrix(pics, layer=counts_layer, step=_STEP, what="observed counts")
    exp_x = canonical(get_matrix(pics, layer=layer, step=f"{_STEP} (expected layer; run expected_expression)"),
                      step=_STEP)  # fmt: skip
    xp = xp_of(exp_x)
    genes_meta = pics.uns.get(layer, {}).get("genes") if isinstance(pics.uns.get(layer), dict) else None
    gene_sel = np.ones(pics.n_vars, bool) if genes_meta is None else pics.var_names.isin(list(genes_meta))

    # PICs with NaN expected values (not computed) are left out
    if is_sparse(exp_x):
        from ._expected import nonzeros

        r, _, v = nonzeros(exp_x)
        bad_rows = np.unique(to_host(r[~xp.isfinite(v)]))
    else:
        bad_rows = np.flatnonzero(~to_host(xp.isfinite(exp_x).all(axis=1)))
    codes = codes.copy()
    codes[bad_rows] = -1

    sizes = np.bincount(codes[codes >= 0], minlength=len(groups))
    kept = np.flatnonzero(sizes >= min_pics)
    if kept.size == 0:
        msg = (
            f"{_STEP}: no PIC group has at least min_pics={min_pics} usable PICs (largest: "
            f"{int(sizes.max()) if sizes.size else 0}); lower min_pics or check pics.obs[{status_key!r}]."
        )
        raise ValueError(msg)
    remap = np.full(len(groups), -1, np.int64)
    remap[kept] = np.arange(kept.size)
    gcodes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)

    o_k, _ = group_sums(obs_x, gcodes, kept.size)
    e_k, _ = group_sums(exp_x, gcodes, kept.size)
    o_k = to_host(o_k)[:, gene_sel]
    e_k = to_host(e_k)[:, gene_sel]
    gene_names = pics.var_names[gene_sel]

    table, per_group = _chi2_table(o_k, e_k, min_counts=min_counts, fdr=fdr)
    kept_groups = groups.iloc[kept].reset_index(drop=True)
    labels = kept_groups.astype(str).agg("|".join, axis=1).tolist()
    kept_groups["label"] = labels
    kept_groups["n_pics"] = sizes[kept]
    table.index = gene_names
    effects = pd.DataFrame(per_group.T, index=gene_names, columns=[f"log2_effect:{lab}" for lab in labels])
    table = pd.concat([table, effects], axis=1)
    if inplace:
        make_actual(pics)
        pics.uns[key_added] = {
            "table": table,
            "groups": kept_groups,
            "observed": o_k,
            "expected": e_k,
            "genes": gene_names.to_numpy(dtype=str),
            "params": {
                "groupby_keys": list(groupby_keys),
                "condition_key": condition_key,
                "min_pics": int(min_pics),
                "min_counts": float(min_counts),
                "layer": layer,
                "fdr": float(fdr),
            },
        }
    return table


def _chi2_table(o_k: np.ndarray, e_k: np.ndarray, *, min_counts: float, fdr: float):
    """Per-gene statistics from groups x genes observed / expected sums."""
    o_tot = o_k.sum(axis=0)
    e_tot = e_k.sum(axis=0)
    pos = e_k > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pos, (o_k - e_k) ** 2 / np.where(pos, e_k, 1.0), 0.0)
    chi2 = terms.sum(axis=0)
    n_groups = pos.sum(axis=0)
    df = np.where(n_groups >= 2, n_groups - 1, 1).astype(np.float64)
    tested = (np.maximum(o_tot, e_tot) >= min_counts) & (n_groups >= 1)
    chi2 = np.where(tested, chi2, np.nan)
    df = np.where(tested, df, np.nan)
    p = np.full(chi2.shape, np.nan)
    p[tested] = stats.chi2.sf(chi2[tested], df[tested])
    q = bh_fdr(p)
    table = pd.DataFrame(
        {
            "observed": o_tot,
            "expected": e_tot,
            "log2_effect": np.log2((o_tot + PSEUDO) / (e_tot + PSEUDO)),
            "chi2": chi2,
            "df": df,
            "pvalue": p,
            "fdr": q,
            "tested": tested,
            "significant": tested & (np.nan_to_num(q, nan=1.0) < fdr),
        }
    )
    per_group = np.log2((o_k + PSEUDO) / (e_k + PSEUDO))
    return table, per_group
