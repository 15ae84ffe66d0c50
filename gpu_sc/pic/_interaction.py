"""Interaction genes (PICSEQ.md §8): genes whose observed UMIs in PICs exceed (or fall short of)
what the two assigned partners explain, tested per (A group x B group x condition)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .. import _ops
from .._backend import is_dask, is_sparse, to_host
from .._settings import user_stacklevel
from .._stats import bh_fdr
from .._keys import (OBS_PIC_A, OBS_PIC_ALPHA, OBS_PIC_B, OBS_PIC_STATUS, OBSM_PAIR_POSTERIOR, PIC_EXPECTED,
                     UNS_PIC, UNS_PIC_INTERACTION, UNS_PIC_STEPS)  # fmt: skip
from .._validation import (canonical, check_anndata, check_flag, check_int, check_number, check_seed, get_matrix,
                           make_actual)
from ..get import array_to_cpu
from ._args import check_posterior_shape, column_name, replicate_codes, warn_unused
from ._expected import (alpha_values, check_groups_counted, check_same_genes, counts_matrix, group_sums, label_codes,
                        obs_column, ok_mask, reference_groups)  # fmt: skip
from ._loglik import pair_columns
from ._matched import (Doublets, doublet_groups, exact_pvalues, least_significant, matched_test,
                       reference_variance, stratified_sums, unit_pvalues, widen)  # fmt: skip
from ._pic_rows import PicRows
from ._simulate import _counts_csr
from ._umi_draws import canonical_rows, name_keys

_STEP = "interaction_genes"
_METHODS = ("matched", "chi2")
PSEUDO = 5.0  # pseudocount of the log2 effect


def _group_labels(pics: AnnData, keys: Sequence[str], use: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """(int64 group code per PIC, -1 where unused; table of groups with one column per key)."""
    cols = {}
    for k in keys:
        col = obs_column(pics, k, step=_STEP, what="a grouping of the PICs").astype(object)
        cols[k] = col.to_numpy()
    frame = pd.DataFrame(cols, index=pics.obs_names)
    usable = use & frame.notna().all(axis=1).to_numpy()
    if (use & ~usable).any():  # as pair_frequencies says of a missing condition
        missing = [k for k in keys if frame[k][use].isna().any()]
        warnings.warn(f"{_STEP}: {int((use & ~usable).sum())} ok PICs have no value in pics.obs{missing} and are "
                      "left out.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
    sub = frame[usable].astype(str)
    if sub.empty:
        return np.full(pics.n_obs, -1, np.int64), pd.DataFrame(columns=list(keys))
    idx = pd.MultiIndex.from_frame(sub) if len(keys) > 1 else pd.Index(sub.iloc[:, 0])
    codes_u, uniques = pd.factorize(idx, sort=True)
    codes = np.full(pics.n_obs, -1, np.int64)
    codes[usable] = codes_u
    groups = pd.DataFrame(list(uniques) if len(keys) > 1 else [[u] for u in uniques], columns=list(keys))
    return codes, groups


def _labels(groups: pd.DataFrame) -> list[str]:
    """Each group's label, its key values joined by '|'; refused where two groups' labels are
    one ((x, y|z) and (x|y, z)): their effect columns would share a name."""
    labels = groups.astype(str).agg("|".join, axis=1).tolist()
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if lab in seen:
            msg = (f"{_STEP}: the groups {tuple(groups.iloc[seen[lab]])} and {tuple(groups.iloc[i])} are both "
                   f"labelled {lab!r} (values joined by '|'); rename the values that hold '|'.")  # fmt: skip
            raise ValueError(msg)
        seen[lab] = i
    return labels


def interaction_genes(
    pics: AnnData,
    singlets: AnnData | None = None,
    *,
    groupby: str | None = None,
    method: str = "matched",
    groupby_keys: str | Sequence[str] = (OBS_PIC_A, OBS_PIC_B),
    condition_key: str | None = None,
    replicate_key: str | None = None,
    min_pics: int = 10,
    min_counts: float = 20,
    n_matched: int = 10,
    pair_uncertainty: bool = True,
    seed: int = 0,
    layer: str = PIC_EXPECTED,
    counts_layer: str | None = None,
    status_key: str | None = OBS_PIC_STATUS,
    fdr: float = 0.1,
    key_added: str = UNS_PIC_INTERACTION,
    inplace: bool = True,
) -> pd.DataFrame:
    """Genes expressed in PICs more (or less) than their assigned partners explain.

    PICs with status 'ok' are grouped by ``groupby_keys`` (default A group x B group) and, if
    given, ``condition_key``; groups with fewer than `min_pics` PICs are left out. Per gene and
    kept group k, O_k = observed UMIs (``pics.X`` or ``counts_layer``) summed over the group's
    PICs. Two tests:

    * ``method="matched"`` (default; calibrated): each PIC is compared with `n_matched`
      in-silico doublets built from reference singlets of its assigned groups (``singlets``,
      ``groupby``: what :func:`deconvolve` used) at its alpha (``obs['pic_alpha']``) and depth;
      with `pair_uncertainty`, a second set of doublets whose pairs are drawn from the PIC's
      pair posterior (``obsm['pic_pair_posterior']``, kept by deconvolve's ml and picseq) is
      tested too, and a gene's p-value is the larger of the two: it is called only where
      neither the assigned pairs nor the pairs the PICs could as well be explain it. Calibrated
      on ml's pairs; picseq's posterior is over-confident, so its wrong pairs make calls (a
      warning says so).
      Per gene and group k, O_k is tested against the stratified permutation null in which
      each PIC's count is any one of its set (its own and its doublets') with equal
      probability: exact p-values in the tail, genomic control per group, and the gene's
      p-value Simes' combination of its groups' (so a programme induced in one pair is not
      drowned by the others); chi2 = sum_k z_k^2 and df = the groups where the gene varies are
      reported beside it. PICs on the GPU: the sums over the doublets (sparse products) run
      there, the doublets are drawn and the exact tails taken on the host. PICs and doublets
      are held 5,000 PICs at a time; a Dask X's row blocks are computed as those chunks need
      them (in each of the test's passes over its chunks). The null carries the cell-to-cell
      variation within groups and the depth that real PICs have; with `replicate_key`, a
      group's p-value is at least that of a t test across its replicates. E_k is the
      doublets' mean count summed over the group's PICs.
    * ``method="chi2"`` (the published test: Giladi et al. 2020, Cohen et al. 2022): E_k =
      expected UMIs (``pics.layers[layer]``, from :func:`expected_expression`; PICs with NaN
      expected rows are left out), chi2 = sum_k (O_k - E_k)^2 / E_k over the groups with
      E_k > 0, df = (number of those groups) - 1, or 1 when only one group is left. It treats summed UMIs as Poisson
      around an exact expectation and calls many genes where nothing is induced.

    chi2's p-value = scipy.stats.chi2.sf(chi2, df). Either way FDR = Benjamini–Hochberg over the tested
    genes; effect = log2((O + 5) / (E + 5)) over all kept groups, and the same per group. A gene is
    tested when max(sum O, sum E) >= `min_counts` (and, for chi2, when computed in the expected
    layer: ``genes=`` of :func:`expected_expression`); others get NaN statistics.

    Parameters
    ----------
    pics
        PICs with raw counts, obs group columns (and, for chi2, the expected layer).
    singlets, groupby
        matched: the reference singlets (raw counts, the PICs' genes) and their obs column of
        reference groups, as given to :func:`deconvolve`.
    method
        ``"matched"`` or ``"chi2"`` (see above).
    groupby_keys
        obs columns whose combination defines a PIC group (one name: that column alone).
    condition_key
        Optional obs column (sample, treatment, ...) that splits groups further; PICs without a
        condition are left out.
    replicate_key
        matched: obs column of the unit each PIC was sampled in (mouse, patient, sample). The
        permutation test takes PICs as independent draws; PICs of one unit share what the
        reference does not hold (the donor's own genes, its state). With it, a group's p-value
        (after genomic control) is raised to that of a t test of its residual sum against the
        spread of its units' sums, on units - 1 degrees of freedom, so a sum carried by one
        unit's PICs is not the group's programme. A group drawn from fewer than two units can
        call nothing (a warning names such groups; where every group is one, the call is
        refused); with few units a group's evidence is as many numbers (8 mice: a gene
        raised 3 UMIs in the 26 PICs of one pair gave p = 7e-4 there, against 7e-16 without). Holds
        a (group, unit) x genes float64 array: meant for mice or patients, not one unit a PIC.
    min_pics
        Smallest number of PICs in a tested group.
    min_counts
        Smallest max(total observed, total expected) UMIs of a tested gene.
    n_matched, seed
        matched: doublets per PIC, and the seed (a non-negative integer) of their draws; each
        PIC's draws follow the seed and its name (obs_names), not its row, so reordered or
        subset PICs keep their doublets (PICs that share a name are told apart by their order
        among its holders, as obs_names_make_unique() would).
    pair_uncertainty
        matched: also test against doublets of pairs drawn from the PICs' pair posterior, where
        deconvolve kept one, and keep each gene's larger p-value (False, or no posterior: the
        assigned pairs' doublets only, as in ``obs['pic_a']``/``['pic_b']``). Otherwise the
        genes that tell similar groups apart read as induced in PICs whose call is wrong: on
        1,500 TNBC PICs where nothing is induced, 54-136 false calls with the assigned pairs,
        28-59 with both (benchmarks/pic_interaction.py). Costs a second set of doublets.
    layer
        chi2: layer with the expected UMIs.
    counts_layer
        Layer with the observed counts instead of X.
    status_key
        obs column with 'ok' or a drop reason (None, or the default column absent: all PICs are
        used; another name that is not a column is a KeyError).
    fdr
        FDR threshold of the 'significant' column.
    key_added
        uns key of the stored result (a non-empty string; not what other steps wrote and read: 'pic',
        'pic_qc', 'pic_pair_abundance' or the expected `layer`'s record).
    inplace
        Store the result in ``pics.uns[key_added]``.

    Returns
    -------
    DataFrame indexed by gene with columns 'observed', 'expected', 'log2_effect', 'chi2', 'df',
    'pvalue', 'fdr', 'tested', 'significant' (fdr < `fdr`), 'direction' ('up' where the PICs hold
    more than their partners explain, 'down' where less, '' where untested) and
    'log2_effect:<group>' per group (group label: the group's key values joined by '|'), in var
    order. With ``inplace`` also ``pics.uns[key_added]`` = {'table': that DataFrame without the
    per-group columns, 'groups': DataFrame of the kept groups (key columns, 'label', 'n_pics'),
    'observed' / 'expected' / 'log2_effects': float64 arrays groups x genes (the per-group
    columns' values; genes in var order, see 'genes'), 'genes', 'params'; for matched also 'z':
    float64 groups x genes, each group's signed z after genomic control (and the replicates'
    test), whose squares sum to the table's 'chi2'; NaN where the gene does not vary in the
    group}: the stored result writes to h5ad and zarr whatever the group names hold. Nothing
    changes when an error is raised.
    """
    check_anndata(pics, step=_STEP, name="pics")
    if method not in _METHODS:
        msg = f"{_STEP}: method must be one of {_METHODS}, got {method!r}."
        raise ValueError(msg)
    if isinstance(groupby_keys, str) or not np.iterable(groupby_keys):  # one column (its name, not its letters)
        groupby_keys = [groupby_keys]
    groupby_keys = list(groupby_keys)
    for key in groupby_keys + ([] if condition_key is None else [condition_key]):
        column_name(key, step=_STEP, name="pics", what="each of groupby_keys and condition_key")
    repeated = sorted({k for k in groupby_keys if groupby_keys.count(k) > 1})
    if repeated:
        msg = f"{_STEP}: groupby_keys names {repeated} more than once; name each column once."
        raise ValueError(msg)
    min_pics = check_int(min_pics, step=_STEP, name="min_pics", hint=" (smallest PICs in a tested group)")
    check_number(fdr, "fdr", step=_STEP, low=0, high=1)
    inplace = check_flag(inplace, "inplace", step=_STEP)
    # deconvolve's record, the other steps' and the expected layer's (all but this step's own)
    reserved = (UNS_PIC, *(k for k in UNS_PIC_STEPS if k not in (PIC_EXPECTED, UNS_PIC_INTERACTION)), layer)
    if inplace and (not isinstance(key_added, str) or not key_added or key_added in reserved):
        msg = (f"{_STEP}: key_added must be a non-empty string other than {', '.join(map(repr, reserved))} (the "
               f"records of deconvolve, the QC, the pair test and the expected layer, which steps read), got "
               f"{key_added!r}.")  # fmt: skip
        raise ValueError(msg)
    check_number(min_counts, "min_counts", step=_STEP, low=0, high=math.inf, low_open=False)
    if condition_key is not None and condition_key in groupby_keys:
        msg = (f"{_STEP}: condition_key {condition_key!r} is one of groupby_keys {list(groupby_keys)}; a "
               "condition splits the groups further, so pass a column that is not a group key.")
        raise ValueError(msg)
    keys = list(groupby_keys) + ([condition_key] if condition_key is not None else [])
    if not keys:
        msg = f"{_STEP}: groupby_keys is empty."
        raise ValueError(msg)
    use = ok_mask(pics, status_key=status_key, step=_STEP)
    if method == "matched":
        check_flag(pair_uncertainty, "pair_uncertainty", step=_STEP)
        n_matched = check_int(n_matched, step=_STEP, name="n_matched")
        seed = check_seed(seed, step=_STEP)
        reference = _matched_reference(pics, singlets, groupby, use, pair_uncertainty)
        replicate_codes(pics, replicate_key, step=_STEP, max_columns=1, use=np.zeros(pics.n_obs, bool))  # the key
    elif replicate_key is not None:
        msg = (f"{_STEP}: replicate_key={replicate_key!r} needs method='matched'; the published chi2 "
               "test has no replicates.")
        raise ValueError(msg)
    if method == "matched":
        warn_unused(interaction_genes, {"layer": layer}, step=_STEP, needs="by method='chi2'")
    else:
        warn_unused(interaction_genes, {"singlets": singlets, "groupby": groupby, "n_matched": n_matched,
                                        "pair_uncertainty": pair_uncertainty, "seed": seed},
                    step=_STEP, needs="by method='matched'")  # fmt: skip
    codes, groups = _group_labels(pics, keys, use)
    if groups.empty:
        msg = (f"{_STEP}: no usable PIC (obs[{status_key!r}] 'ok') has a value in every one of {keys}; "
               "fill those columns, or check the status column.")
        raise ValueError(msg)
    obs_x = counts_matrix(pics, layer=counts_layer, step=_STEP, what="observed counts")
    if method == "chi2":
        exp_x, gene_sel = _expected_layer(pics, layer)
        codes = codes.copy()
        codes[_rows_not_computed(exp_x)] = -1  # PICs with NaN expected values are left out
    else:
        gene_sel = np.ones(pics.n_vars, bool)

    sizes = np.bincount(codes[codes >= 0], minlength=len(groups))
    kept = np.flatnonzero(sizes >= min_pics)
    if kept.size == 0:
        msg = (
            f"{_STEP}: no PIC group has at least min_pics={min_pics} usable PICs (largest: "
            f"{int(sizes.max()) if sizes.size else 0}); lower min_pics or check pics.obs[{status_key!r}]."
        )
        raise ValueError(msg)
    kept_groups = groups.iloc[kept].reset_index(drop=True)
    labels = _labels(kept_groups)
    remap = np.full(len(groups), -1, np.int64)
    remap[kept] = np.arange(kept.size)
    gcodes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
    if method == "matched":  # a missing replicate is refused only in the PICs tested
        units = replicate_codes(pics, replicate_key, step=_STEP, max_columns=1, use=gcodes >= 0)
        if units is not None:
            _check_units(units[:, 0], gcodes, labels, replicate_key)

    o_k = to_host(group_sums(obs_x, gcodes, kept.size)[0])[:, gene_sel]
    if method == "chi2":
        e_k = to_host(group_sums(exp_x, gcodes, kept.size)[0])[:, gene_sel]
        test = _chi2_statistic(o_k, e_k)
    else:
        e_k, test = _matched_statistic(obs_x, gcodes, kept.size, reference, units=units, n_matched=n_matched,
                                       seed=seed, observed=o_k.sum(axis=0), min_counts=min_counts)  # fmt: skip
    gene_names = pics.var_names[gene_sel]
    table, per_group = _table(o_k, e_k, test, min_counts=min_counts, fdr=fdr)
    kept_groups["label"] = labels
    kept_groups["n_pics"] = sizes[kept]
    if method == "matched":
        kept_groups["inflation"] = test["inflation"]
    table.index = gene_names
    effects = pd.DataFrame(per_group.T, index=gene_names, columns=[f"log2_effect:{lab}" for lab in labels])
    stored, table = table, pd.concat([table, effects], axis=1)
    if inplace:
        make_actual(pics)
        params = {
            "method": method,
            "groupby_keys": list(groupby_keys),
            "condition_key": condition_key,
            "min_pics": int(min_pics),
            "min_counts": float(min_counts),
            "fdr": float(fdr),
        }
        params.update({"layer": layer} if method == "chi2" else
                      {"groupby": groupby, "n_matched": n_matched, "seed": seed, "replicate_key": replicate_key,
                       "pair_uncertainty": reference["posterior"] is not None})  # fmt: skip
        # the per-group effects as an array, not as the table's columns: group names hold '/'
        # (CD4+/CD25 T Reg), which zarr refuses in a key and h5py warns it soon will
        pics.uns[key_added] = {
            "table": stored,
            "groups": kept_groups,
            "observed": o_k,
            "expected": e_k,
            "log2_effects": np.asarray(per_group, dtype=np.float64),
            "genes": gene_names.to_numpy(dtype=str),
            "params": params,
        }
        if method == "matched":
            pics.uns[key_added]["z"] = test["z"]
    return table


def _check_units(units: np.ndarray, gcodes: np.ndarray, labels: list[str], replicate_key: str) -> None:
    """With replicates, a group drawn from one unit can call nothing (its units' spread is
    unknown): refuse a test in which every kept group is one, warn of the groups that are."""
    tested = gcodes >= 0
    pairs = np.unique(np.column_stack([gcodes[tested], units[tested]]), axis=0)
    n_units = np.bincount(pairs[:, 0], minlength=len(labels))
    one = np.flatnonzero(n_units < 2)
    if one.size == len(labels):
        msg = (f"{_STEP}: every tested group's PICs come from one unit of replicate_key {replicate_key!r}, "
               f"so no gene can be called (a group's p-value is judged against its units' spread); give "
               f"a column with two or more units a group (mice, patients), or replicate_key=None.")
        raise ValueError(msg)
    if one.size:
        names = [labels[i] for i in one]
        warnings.warn(f"{_STEP}: {one.size} tested group(s) have PICs of one unit of replicate_key "
                      f"{replicate_key!r} and can call no gene: {names[:10]}.", UserWarning,
                      stacklevel=user_stacklevel())


def _expected_layer(pics: AnnData, layer: str):
    """chi2: the expected layer (canonical) and the genes it was computed for."""
    exp_x = canonical(get_matrix(pics, layer=layer, step=f"{_STEP} (expected layer; run expected_expression)"),
                      step=_STEP)  # fmt: skip
    if not is_dask(exp_x):  # expected UMIs (NaN: a PIC not computed); a negative one made log2 NaN, no test
        values = exp_x.data if is_sparse(exp_x) else exp_x
        if bool((values < 0).any()):
            msg = (f"{_STEP}: pics.layers[{layer!r}] holds negative values; it must hold the expected UMIs "
                   "expected_expression writes: run it again.")
            raise ValueError(msg)
    meta = pics.uns.get(layer)
    genes = meta.get("genes") if isinstance(meta, dict) else None
    return exp_x, np.ones(pics.n_vars, bool) if genes is None else pics.var_names.isin(list(genes))


def _rows_not_computed(exp_x) -> np.ndarray:
    """Rows of the expected layer holding a NaN (PICs whose expectation was not computed): a
    NaN makes its row's sum NaN (expected values are finite otherwise), block by block on Dask."""
    return np.flatnonzero(np.isnan(to_host(_ops.row_sums(_ops.parts(exp_x))[0])))


def _matched_reference(pics: AnnData, singlets, groupby, use: np.ndarray, pair_uncertainty: bool) -> dict:
    """matched: the singlets' host counts and groups, each used PIC's A / B group and alpha, and
    (with `pair_uncertainty`, where deconvolve kept one) the pair posterior with each pair's
    reference groups (checked before any work)."""
    if singlets is None or groupby is None:
        msg = (f"{_STEP}: method='matched' compares PICs with doublets built from the reference, so it "
               "needs the singlets and their groupby column given to deconvolve "
               "(interaction_genes(pics, singlets, groupby=...)); method='chi2' needs neither.")
        raise TypeError(msg)
    check_same_genes(pics, singlets, step=_STEP)
    names, ref_codes = reference_groups(singlets, groupby, step=_STEP)
    what = "the assigned {} group of each PIC, a reference group"
    code_a = label_codes(pics, OBS_PIC_A, names, use, step=_STEP, what=what.format("A"))
    code_b = label_codes(pics, OBS_PIC_B, names, use, step=_STEP, what=what.format("B"))
    alpha = alpha_values(pics, OBS_PIC_ALPHA, use, step=_STEP)
    ref = _counts_csr(singlets.X, step=_STEP, what="singlets")  # on the host: the doublets are drawn there
    counted = ref_codes >= 0
    totals = np.bincount(ref_codes[counted], weights=np.asarray(ref.sum(1)).ravel()[counted], minlength=len(names))
    check_groups_counted(totals, names, code_a[use], code_b[use], step=_STEP)  # doublets of no UMIs
    info = pics.uns.get(UNS_PIC)
    if isinstance(info, dict) and info.get("method") == "picseq":
        warnings.warn(f"{_STEP}: these PICs' pairs are deconvolve's method='picseq', whose pair posterior is its "
                      "likelihood's softmax, not calibrated (over-confident), so the matched test cannot allow for "
                      "its wrong pairs: on the hgmm barnyard (gpu_sc's benchmarks/pic_validate.py, groups of 75 "
                      "cells) it called 28-93 genes where nothing was induced, against 0-1 with method='ml'. "
                      "Deconvolve with method='ml' for calibrated interaction genes.", UserWarning,
                      stacklevel=user_stacklevel())  # fmt: skip
    posterior, pair_codes = _pair_posterior(pics, names) if pair_uncertainty else (None, None)
    return {"ref": ref, "ref_codes": ref_codes, "ref_order": canonical_rows(singlets), "code_a": code_a,
            "code_b": code_b, "alpha": alpha,
            "posterior": posterior, "pair_codes": pair_codes, "keys": name_keys(pics.obs_names)}


def _pair_posterior(pics: AnnData, names: Sequence[str]):
    """deconvolve's pair posterior (CSR, PICs x pairs) and each pair column's A and B reference
    group code; (None, None) where there is none, or (with a warning) where its groups are not
    all reference groups. A posterior of the wrong shape is an error, not a silent fallback."""
    info = pics.uns.get(UNS_PIC)
    if OBSM_PAIR_POSTERIOR not in pics.obsm:
        return None, None
    if not isinstance(info, dict) or "groups_a" not in info:  # e.g. anndata.concat dropped uns
        msg = (f"{_STEP}: pics has a pair posterior (obsm[{OBSM_PAIR_POSTERIOR!r}]) but no uns[{UNS_PIC!r}] naming "
               "its pairs' groups (anndata.concat drops uns unless given uns_merge='same'); the test uses the "
               "assigned pairs only (pair_uncertainty off).")  # fmt: skip
        warnings.warn(msg, UserWarning, stacklevel=user_stacklevel())
        return None, None
    ga, gb = [str(g) for g in info["groups_a"]], [str(g) for g in info["groups_b"]]
    post = pics.obsm[OBSM_PAIR_POSTERIOR]
    check_posterior_shape(post.shape, pics.n_obs, len(ga), len(gb), step=_STEP,
                          fix="rerun deconvolve, or pass pair_uncertainty=False to test against the assigned "
                              "pairs only.")  # fmt: skip
    index = pd.Index(list(names))
    ca, cb = index.get_indexer(ga), index.get_indexer(gb)
    if (ca < 0).any() or (cb < 0).any():
        missing = [g for g, c in zip(ga + gb, np.concatenate([ca, cb]), strict=True) if c < 0]
        warnings.warn(f"{_STEP}: the pair posterior's groups {missing[:5]} are not groups of the singlets' "
                      f"groupby column; the test uses the assigned pairs only (pair_uncertainty off).",
                      UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        return None, None
    return sp.csr_matrix(array_to_cpu(post)), pair_columns(ca, cb)


def _matched_statistic(obs_x, gcodes: np.ndarray, n_groups: int, reference: dict, *, units, n_matched: int,
                       seed: int, observed: np.ndarray, min_counts: float):  # fmt: skip
    """matched: (expected groups x genes, `matched_test`'s statistics) from the PICs' matched
    doublets: those of the assigned pairs and, with a pair posterior, those of pairs drawn from
    it; a gene's p-value is then the larger of the two. units: (n_obs, 1) replicate codes or
    None (every PIC its own unit); observed: the tested PICs' UMIs per gene."""
    rows = np.flatnonzero(gcodes >= 0)
    # PICs on the GPU: the sums run there (the doublets are drawn, and the exact tails taken,
    # on the host); a Dask X is read a chunk of PICs at a time
    obs, groups = PicRows(obs_x, rows, step=_STEP), gcodes[rows]
    depth = to_host(_ops.row_sums(_ops.parts(obs_x))[0])[rows]
    code_a, code_b, alpha = reference["code_a"][rows], reference["code_b"][rows], reference["alpha"][rows]
    keys = reference["keys"][rows]  # each PIC's draws follow its name, not its row
    units = None if units is None else units[rows, 0]
    mean, test, candidates = _matched_null(obs, groups, n_groups, reference, alpha, depth,
                                           *doublet_groups(code_a, code_b, None, None, n_matched), keys,
                                           units=units, n_matched=n_matched, seed=seed,
                                           observed=observed, min_counts=min_counts)  # fmt: skip
    if reference["posterior"] is not None:
        # the pairs from a stream of their own: the cells drawn are the assigned pairs' where
        # the posterior is sure of them
        drawn = doublet_groups(code_a, code_b, reference["posterior"][rows], reference["pair_codes"], n_matched,
                               keys, seed)  # fmt: skip
        _, other, _ = _matched_null(obs, groups, n_groups, reference, alpha, depth, *drawn, keys, units=units,
                                    n_matched=n_matched, seed=seed, candidates=candidates)  # fmt: skip
        test = least_significant(test, other)
    return mean, test


def _matched_null(obs: PicRows, groups, n_groups: int, reference: dict, alpha, depth, code_a, code_b, keys, *,
                  n_matched: int, seed: int, units=None, observed=None, min_counts: float = 0.0,
                  candidates=None):  # fmt: skip
    """The matched test of the PICs `obs` (groups: their group; alpha, depth: their A share and
    total; keys: their draw keys; units: their replicate codes or None) against doublets of the
    reference groups (code_a, code_b) (PICs x n_matched): the doublets' mean count per group,
    `matched_test`'s statistics and the tested genes (`candidates`, or those with at least `min_counts` UMIs
    `observed` or expected). A group's p-value is the permutation test's (widened by the
    reference's sampling error), with units at least theirs (`unit_pvalues`)."""
    doublets = Doublets.drawn(reference["ref"], reference["ref_codes"], code_a, code_b, alpha, depth, n_matched,
                              keys, seed, reference["ref_order"])  # fmt: skip
    sums = stratified_sums(obs, doublets, groups, n_groups, n_matched, units)
    num, var, mean = sums.num, sums.var, sums.mean
    if candidates is None:
        candidates = np.maximum(observed, mean.sum(axis=0)) >= min_counts  # the genes the table tests
    has = var > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(has, num / np.sqrt(np.where(has, var, 1.0)), np.nan)
    p = exact_pvalues(z, obs, doublets, groups, candidates)
    var_ref = reference_variance(reference["ref"], reference["ref_codes"], code_a, code_b, alpha, depth, groups,
                                 n_groups, n_matched)  # fmt: skip
    p_units = None if units is None else unit_pvalues(num, sums.spread, sums.n_units)
    return mean, matched_test(z, widen(p, var, var_ref), candidates, p_units), candidates


def _chi2_statistic(o_k: np.ndarray, e_k: np.ndarray) -> dict:
    """chi2: the statistic, df, p-value and direction per gene from groups x genes observed /
    expected sums."""
    pos = e_k > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pos, (o_k - e_k) ** 2 / np.where(pos, e_k, 1.0), 0.0)
    n_groups = pos.sum(axis=0)
    has = n_groups >= 1
    chi2 = np.where(has, terms.sum(axis=0), np.nan)
    df = np.where(has, np.where(n_groups >= 2, n_groups - 1, 1), np.nan).astype(np.float64)
    p = np.full(chi2.shape, np.nan)
    p[has] = stats.chi2.sf(chi2[has], df[has])
    return {"chi2": chi2, "df": df, "pvalue": p, "direction": np.sign(o_k.sum(axis=0) - e_k.sum(axis=0))}


def _table(o_k: np.ndarray, e_k: np.ndarray, test: dict, *, min_counts: float, fdr: float):
    """Per-gene table from groups x genes observed / expected sums and a test's per-gene 'chi2',
    'df', 'pvalue' and 'direction' (NaN: not testable), and the per-group log2 effects."""
    o_tot = o_k.sum(axis=0)
    e_tot = e_k.sum(axis=0)
    tested = (np.maximum(o_tot, e_tot) >= min_counts) & np.isfinite(test["pvalue"])
    p = np.where(tested, test["pvalue"], np.nan)
    q = bh_fdr(p)
    direction = test["direction"]
    table = pd.DataFrame(
        {
            "observed": o_tot,
            "expected": e_tot,
            "log2_effect": np.log2((o_tot + PSEUDO) / (e_tot + PSEUDO)),
            "chi2": np.where(tested, test["chi2"], np.nan),
            "df": np.where(tested, test["df"], np.nan),
            "pvalue": p,
            "fdr": q,
            "tested": tested,
            "significant": tested & (np.nan_to_num(q, nan=1.0) < fdr),
            "direction": np.where(tested, np.where(direction > 0, "up", np.where(direction < 0, "down", "")), ""),
        }
    )
    per_group = np.log2((o_k + PSEUDO) / (e_k + PSEUDO))
    return table, per_group
