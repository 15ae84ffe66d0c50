"""PIC-seq downstream: expected expression, interaction genes, doublet/triplet QC and plots, on
synthetic PICs made here from real PBMC T cells, dendritic cells and monocytes with known
pair and alpha (independent of the deconvolution code)."""

from __future__ import annotations

import copy
import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import ULPS, as_type, assert_close, assert_same
from scipy import stats

import gpu_sc as gsc
from gpu_sc.pic._deconvolve import deconvolve
from gpu_sc.pic._expected import expected_expression
from gpu_sc.pic._interaction import bh_fdr, interaction_genes
from gpu_sc.pic._plot import alpha_hist, interaction_plot, pair_heatmap
from gpu_sc.pic._qc import EPS, doublet_test, group_profiles, pic_loglik, triplet_scan
from gpu_sc.pic._simulate import simulate_pics

T_GROUPS = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic", "CD4+/CD45RO+ Memory"]
DC, MONO = "Dendritic", "CD14+ Monocyte"
GROUPBY = "bulk_labels"


def make_pics(singlets, n, *, kinds=("TB",), b_groups=(DC,), seed=0):
    """Synthetic PICs: sums of real singlets' counts. 'TB' = T + B cell (pair and alpha known),
    'T' / 'B' = one cell alone (alpha 1 / 0), 'TBB' = T + DC + monocyte (assigned B: b_groups)."""
    rng = np.random.default_rng(seed)
    x = singlets.X.tocsr()
    lab = singlets.obs[GROUPBY].astype(str).to_numpy()
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    t_idx = np.flatnonzero(np.isin(lab, T_GROUPS))
    rows, obs = [], []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        bg = b_groups[k % len(b_groups)]
        i = rng.choice(t_idx)
        j = rng.choice(np.flatnonzero(lab == bg))
        cells = {"TB": [i, j], "T": [i], "B": [j]}.get(kind)
        if kind == "TBB":
            other = MONO if bg == DC else DC
            cells = [i, j, rng.choice(np.flatnonzero(lab == other))]
        rows.append(np.asarray(x[cells].sum(axis=0)).ravel())
        alpha = {"T": 1.0, "B": 0.0}.get(kind, totals[i] / totals[cells].sum())
        obs.append({"pic_a": lab[i], "pic_b": bg, "pic_alpha": alpha, "true_alpha": alpha,
                    "pic_status": "ok", "kind": kind})  # fmt: skip
    pics = ad.AnnData(
        sp.csr_matrix(np.array(rows, dtype=np.float32)),
        obs=pd.DataFrame(obs, index=[f"pic{k}" for k in range(n)]),
        var=pd.DataFrame(index=singlets.var_names.copy()),
    )
    pics.uns["pic"] = {"groups_a": np.array(T_GROUPS), "groups_b": np.array([DC, MONO])}
    return pics


def snapshot(a):
    return (a.obs.copy(), {k: a.layers[k].copy() for k in a.layers}, copy.deepcopy(dict(a.uns)), a.X.copy(),
            {k: a.obsm[k].copy() for k in a.obsm})


def assert_deep_equal(got, want, where="uns"):
    """Deep equality of what a step may have written: dicts, arrays (sparse too), frames, scalars."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for k in want:
            assert_deep_equal(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, pd.DataFrame | pd.Series):
        (pd.testing.assert_frame_equal if isinstance(want, pd.DataFrame) else pd.testing.assert_series_equal)(got, want)
    elif sp.issparse(want):
        assert sp.issparse(got) and got.shape == want.shape and (got != want).nnz == 0, where
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert got == want or (got != got and want != want), where  # NaN equals NaN here


def assert_unchanged(a, snap):
    obs, layers, uns, x, obsm = snap
    pd.testing.assert_frame_equal(a.obs, obs)
    assert_deep_equal(dict(a.layers), layers, "layers")
    assert_deep_equal(dict(a.uns), uns, "uns")
    assert_deep_equal(dict(a.obsm), obsm, "obsm")
    assert (abs(a.X - x)).sum() == 0


# --------------------------------------------------------------------------- expected expression
def naive_expected(pics, singlets):
    x = singlets.X.toarray().astype(np.float64)
    lab = singlets.obs[GROUPBY].astype(str).to_numpy()
    q = {g: x[lab == g].sum(0) / x[lab == g].sum() for g in np.unique(lab)}
    u = pics.X.toarray().astype(np.float64)
    n, g = u.shape
    e_a, e_b = np.full((n, g), np.nan), np.full((n, g), np.nan)
    for i, (a, b, al, st) in enumerate(pics.obs[["pic_a", "pic_b", "pic_alpha", "pic_status"]].itertuples(index=False)):
        if st == "ok":
            e_a[i] = u[i].sum() * al * q[a]
            e_b[i] = u[i].sum() * (1 - al) * q[b]
    return e_a + e_b, e_a, e_b


@pytest.mark.parametrize("kind", ["numpy", "csr", "csc"])
def test_expected_matches_naive(pbmc, kind):
    pics = make_pics(pbmc, 60, b_groups=(DC, MONO))
    pics.obs.loc[pics.obs_names[[3, 7]], "pic_status"] = "alpha_out_of_range"
    pics.obs.loc[pics.obs_names[3], "pic_a"] = None  # not read for a PIC that is not 'ok'
    want = naive_expected(pics, pbmc)
    pics.X = as_type(pics.X, kind)
    pbmc.X = as_type(pbmc.X, kind)
    expected_expression(pics, pbmc, groupby=GROUPBY)
    for key, w in zip(("pic_expected", "pic_expected_a", "pic_expected_b"), want, strict=True):
        got = pics.layers[key]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        if key == "pic_expected":  # the float32 sum of the two parts, each rounded to float32
            assert_close(got, w, dtype=np.float32, n_terms=2, err_msg=key)
        else:  # float64 group sums over cells and genes in another order, rounded once to float32
            assert_close(got, w, dtype=np.float64, n_terms=pbmc.n_obs * pbmc.n_vars, out=np.float32, err_msg=key)
    assert np.isnan(pics.layers["pic_expected"][[3, 7]]).all()
    ok = pics.obs["pic_status"].eq("ok").to_numpy()
    totals = np.asarray(pics.X.sum(axis=1)).ravel()  # integer counts: exact
    # a float32 sum over the genes of float32 values (each within 1.5 steps of its share of N)
    assert_close(pics.layers["pic_expected"][ok].sum(1), totals[ok], dtype=np.float32, n_terms=pics.n_vars)
    assert list(pics.uns["pic_expected"]["groups"]) == list(pbmc.obs[GROUPBY].cat.categories)


@pytest.mark.parametrize(("prefix", "layer", "match"), [
    ("pic", None, "layer_prefix must be a non-empty string other than 'pic'"),  # deconvolve's record
    ("pic_interaction", None, "other than 'pic', 'pic_interaction'"),
    ("", None, "got ''"),
    (3, None, "got 3"),
    ("counts", "counts", "would overwrite the counts layer 'counts' that it reads"),
    ("counts", "counts_a", "would overwrite the counts layer 'counts_a'"),
])
def test_expected_refuses_a_layer_prefix_that_overwrites_what_others_read(pbmc, prefix, layer, match):
    """layer_prefix='pic' replaced deconvolve's uns['pic'] (every later step then failed), an int
    wrote keys h5ad cannot store, and the prefix of the counts layer overwrote the counts; now
    refused before any write. A non-bool inplace is refused too."""
    pics = make_pics(pbmc, 20)
    ref = pbmc
    if layer is not None:
        pics.layers[layer] = pics.X.copy()
    snap = snapshot(pics)
    with pytest.raises(ValueError, match=re.escape(match)):
        expected_expression(pics, ref, groupby=GROUPBY, layer_prefix=prefix, layer=layer)
    with pytest.raises(TypeError, match="inplace must be True or False, got 'no'"):
        expected_expression(pics, ref, groupby=GROUPBY, inplace="no")
    assert_unchanged(pics, snap)


@pytest.mark.parametrize("step", ["interaction_genes", "doublet_test", "triplet_scan"])
def test_inplace_must_be_a_bool(pbmc, step):
    """inplace="no" read as on (interaction_genes wrote its table); now refused, nothing written."""
    pics = make_pics(pbmc, 20)
    snap = snapshot(pics)
    fn = {"interaction_genes": interaction_genes, "doublet_test": doublet_test, "triplet_scan": triplet_scan}[step]
    with pytest.raises(TypeError, match=f"{step}: inplace must be True or False, got 'no' \\(str\\)"):
        fn(pics, pbmc, groupby=GROUPBY, inplace="no")
    assert_unchanged(pics, snap)


def test_integer_counts(pbmc):
    pics = make_pics(pbmc, 30, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    ints, ref = pics.copy(), pbmc.copy()
    ints.X = ints.X.astype(np.int32)
    ref.X = ref.X.astype(np.int64)
    expected_expression(pics, pbmc, groupby=GROUPBY)
    expected_expression(ints, ref, groupby=GROUPBY)
    # integer counts are read as float64 holding the same values: the same sums in the same order
    assert_same(ints.layers["pic_expected"], pics.layers["pic_expected"])
    doublet_test(pics, pbmc, groupby=GROUPBY)
    doublet_test(ints, ref, groupby=GROUPBY)
    assert_same(ints.obs["pic_doublet_llr"], pics.obs["pic_doublet_llr"])


def test_expected_gene_subset(pbmc):
    pics = make_pics(pbmc, 30)
    full = expected_expression(pics, pbmc, groupby=GROUPBY, inplace=False)
    genes = list(pbmc.var_names[[5, 40, 41, 300]])
    expected_expression(pics, pbmc, groupby=GROUPBY, genes=genes)
    sub = pics.layers["pic_expected"]
    assert sp.issparse(sub) and sub.format == "csr" and sub.shape == pics.shape
    cols = pbmc.var_names.get_indexer(genes)
    np.testing.assert_array_equal(sub.toarray()[:, cols], full[0][:, cols])
    assert list(pics.uns["pic_expected"]["genes"]) == genes
    # interaction genes then tests only these genes
    pics.obs["pic_a"] = "CD8+ Cytotoxic T"
    tab = interaction_genes(pics, method="chi2", min_pics=5, min_counts=0)
    assert list(tab.index) == genes


# --------------------------------------------------------------------------- chi2 and BH
def test_bh_against_scipy_and_statsmodels():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-3, 40), [0.5, 0.5, 0.5, 0.0, 1.0]])
    q = bh_fdr(p)
    # p m / j against p (m / j) or p / (j / m): two roundings each side, no sums
    assert_close(q, stats.false_discovery_control(p, method="bh"), dtype=np.float64)
    sm = pytest.importorskip("statsmodels.stats.multitest")
    assert_close(q, sm.multipletests(p, method="fdr_bh")[1], dtype=np.float64)
    with_nan = np.insert(p, [0, 10], np.nan)
    q2 = bh_fdr(with_nan)
    assert np.isnan(q2[[0, 11]]).all()
    assert_same(np.delete(q2, [0, 11]), q)  # NaNs left out: the same p-values, the same arithmetic
    for bad in (1.5, -0.1, np.inf, -np.inf):  # inf was taken as missing (NaN)
        with pytest.raises(ValueError, match=r"\[0, 1\].*1 outside"):
            bh_fdr([0.1, bad])
    with pytest.raises(TypeError, match="pvalues must be numbers"):
        bh_fdr(["x", 0.1])
    for bad in (None, 0.5, [[0.1, 0.2]]):  # None and a scalar gave a 0-d NaN array
        with pytest.raises(ValueError, match="must be a 1-D array"):
            bh_fdr(bad)


def test_chi2_on_constructed_example():
    """Three groups (one too small), hand-computed O, E, chi2, df, p and effects."""
    groups = [("A1", "B1")] * 3 + [("A2", "B1")] * 3 + [("A1", "B2")] * 2
    obs = pd.DataFrame(groups, columns=["pic_a", "pic_b"], index=[f"p{i}" for i in range(8)])
    obs["pic_status"] = "ok"
    o = np.array([[4, 0, 1], [6, 1, 1], [5, 0, 1], [1, 3, 9], [2, 2, 9], [0, 4, 9], [7, 7, 7], [7, 7, 7]], np.float32)
    e = np.array([[3, 1, 1], [3, 1, 1], [3, 1, 1], [1, 3, 9], [1, 3, 9], [1, 3, 9], [1, 1, 1], [1, 1, 1]], np.float32)
    pics = ad.AnnData(sp.csr_matrix(o), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
    pics.layers["pic_expected"] = e
    tab = interaction_genes(pics, method="chi2", min_pics=3, min_counts=5)
    # kept groups: A1|B1 (O = 15, 1, 3; E = 9, 3, 3) and A2|B1 (O = 3, 9, 27; E = 3, 9, 27)
    chi2 = np.array([(15 - 9) ** 2 / 9 + 0, (1 - 3) ** 2 / 3 + 0, 0.0])
    np.testing.assert_allclose(tab["observed"], [18, 10, 30])
    np.testing.assert_allclose(tab["expected"], [12, 12, 30])
    np.testing.assert_allclose(tab["chi2"], chi2)
    np.testing.assert_array_equal(tab["df"], [1, 1, 1])
    assert tab["direction"].tolist() == ["up", "down", ""]  # sign of O - E: 18 > 12, 10 < 12, 30 = 30
    np.testing.assert_allclose(tab["pvalue"], stats.chi2.sf(chi2, 1))
    np.testing.assert_allclose(tab["fdr"], stats.false_discovery_control(stats.chi2.sf(chi2, 1)))
    np.testing.assert_allclose(tab["log2_effect"], np.log2((np.array([18, 10, 30]) + 5) / (np.array([12, 12, 30]) + 5)))
    np.testing.assert_allclose(tab["log2_effect:A1|B1"], np.log2(np.array([20, 6, 8]) / np.array([14, 8, 8])))
    groups = pics.uns["pic_interaction"]["groups"]
    assert groups["label"].tolist() == ["A1|B1", "A2|B1"] and groups["n_pics"].tolist() == [3, 3]
    # min_counts: g1 has max(O, E) = 12 -> untested at 13
    tab2 = interaction_genes(pics, method="chi2", min_pics=3, min_counts=13, inplace=False)
    assert tab2["tested"].tolist() == [True, False, True] and np.isnan(tab2.loc["g1", "pvalue"])
    # ... and tested at 12 (max(O, E) >= min_counts)
    assert interaction_genes(pics, method="chi2", min_pics=3, min_counts=12, inplace=False)["tested"].all()
    # significant: fdr strictly below the threshold
    q = tab["fdr"].min()
    assert not interaction_genes(pics, method="chi2", min_pics=3, min_counts=5, fdr=q, inplace=False)["significant"].any()
    assert interaction_genes(pics, method="chi2", min_pics=3, min_counts=5, fdr=q * 1.01, inplace=False)["significant"].any()
    # a condition splits groups: each (A1, B1) PIC gets its own condition -> too small
    pics.obs["cond"] = ["x", "x", "y", "x", "x", "x", "x", "x"]
    tab3 = interaction_genes(pics, method="chi2", min_pics=2, min_counts=0, condition_key="cond", inplace=False)
    assert [c for c in tab3 if c.startswith("log2_effect:")] == [
        "log2_effect:A1|B1|x", "log2_effect:A1|B2|x", "log2_effect:A2|B1|x"]  # fmt: skip
    np.testing.assert_array_equal(tab3["df"], [2, 2, 2])
    # PICs without a condition are left out with a word, as pair_frequencies says (silent before)
    pics.obs["cond"] = ["x", "x", "y", "x", None, "x", "x", "x"]
    with pytest.warns(UserWarning, match=r"1 ok PICs have no value in pics.obs\['cond'\] and are left out"):
        interaction_genes(pics, method="chi2", min_pics=2, min_counts=0, condition_key="cond", inplace=False)


def test_chi2_of_a_gene_expected_in_one_group_only():
    """A gene expected (E > 0) in one of two kept groups: chi2 is that group's term alone,
    (6 - 3)^2 / 3 = 3, on df = 1 (not NaN); a gene expected nowhere is not tested."""
    obs = pd.DataFrame([("A1", "B1")] * 3 + [("A2", "B1")] * 3, columns=["pic_a", "pic_b"],
                       index=[f"p{i}" for i in range(6)])
    obs["pic_status"] = "ok"
    o = np.array([[2, 1], [2, 0], [2, 0], [1, 0], [0, 1], [0, 0]], np.float32)
    e = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0]], np.float32)
    pics = ad.AnnData(sp.csr_matrix(o), obs=obs, var=pd.DataFrame(index=["g0", "g1"]))
    pics.layers["pic_expected"] = e
    tab = interaction_genes(pics, method="chi2", min_pics=3, min_counts=0, inplace=False)
    assert tab.loc["g0", "chi2"] == pytest.approx(3.0) and tab.loc["g0", "df"] == 1
    assert tab.loc["g0", "pvalue"] == pytest.approx(stats.chi2.sf(3.0, 1))
    assert tab["tested"].tolist() == [True, False] and tab.loc["g0", "direction"] == "up"


def test_planted_interaction_gene_found(pbmc):
    pics = make_pics(pbmc, 320, b_groups=(DC, DC, MONO))
    totals = np.asarray(pbmc.X.sum(0)).ravel()
    gene = pbmc.var_names[np.flatnonzero((totals > 50) & (totals < 300))[0]]
    j = pbmc.var_names.get_loc(gene)
    target = (pics.obs["pic_a"] == "CD8+ Cytotoxic T") & (pics.obs["pic_b"] == DC)
    rows = np.flatnonzero(target.to_numpy())
    extra = sp.csr_matrix((np.full(rows.size, 4, np.float32), (rows, np.full(rows.size, j))), shape=pics.shape)
    pics.X = (pics.X + extra).tocsr()
    before = snapshot(pics)
    expected_expression(pics, pbmc, groupby=GROUPBY)
    tab = interaction_genes(pics, method="chi2", min_pics=10)
    ranked = tab[tab["tested"]].sort_values("pvalue")
    assert ranked.index[0] == gene
    assert ranked["fdr"].iloc[0] < 0.05
    other = ranked.drop(gene)
    assert (other["fdr"] < 0.1).mean() < 0.25  # overdispersion: a few real genes pass
    effects = tab.loc[gene, [c for c in tab if c.startswith("log2_effect:")]]
    assert effects.idxmax() == f"log2_effect:CD8+ Cytotoxic T|{DC}" and effects.max() > 0.5
    assert (before[3] != pics.X).nnz == 0  # inputs other than the new slots untouched
    pd.testing.assert_frame_equal(pics.obs, before[0])


# --------------------------------------------------------------------------- QC
def test_loglik_matches_dense(pbmc):
    pics = make_pics(pbmc, 25, b_groups=(DC, MONO))
    lab = pbmc.obs[GROUPBY].astype(str)
    names = list(lab.astype("category").cat.categories)
    codes = lab.astype("category").cat.codes.to_numpy().astype(np.int64)
    mask = np.asarray(pbmc.X.sum(0)).ravel() > 10
    prof = group_profiles(pbmc.X.tocsr(), codes, len(names), mask)
    x = pbmc.X.toarray().astype(np.float64)[:, mask]
    # float64 means of log1p over a group's cells (bincount against NumPy's pairwise order), then
    # expm1, which scales a relative error by at most 1 + the mean (<= 1 + log1p(max count)), then
    # the normalisation over the genes
    grow = 1 + np.log1p(x.max())
    for k in (0, names.index(DC)):
        gm = np.expm1(np.log1p(x[codes == k]).mean(0))
        assert_close(prof[:, k], gm / gm.sum(), dtype=np.float64, n_terms=max(x.shape), ulps=ULPS * grow)
    ia = np.array([names.index(a) for a in pics.obs["pic_a"]])
    ib = np.array([names.index(b) for b in pics.obs["pic_b"]])
    al = pics.obs["pic_alpha"].to_numpy(dtype=np.float64)
    u = pics.X.toarray().astype(np.float64)[:, mask]
    want = (u * np.log(al[:, None] * prof[:, ia].T + (1 - al[:, None]) * prof[:, ib].T + 1e-4)).sum(1)
    got = pic_loglik(sp.csr_matrix(u), prof, ia, ib, al)
    # the same log arguments; float64 sums over the genes (terms of one sign) in another order
    assert_close(got, want, dtype=np.float64, n_terms=u.shape[1])
    assert_close(pic_loglik(np.ascontiguousarray(u), prof, ia, ib, al), want, dtype=np.float64, n_terms=u.shape[1])
    for other in (sp.csc_matrix(u), sp.coo_matrix(u), sp.csc_array(u)):  # CSC read as CSR swapped rows and genes
        assert_close(pic_loglik(other, prof, ia, ib, al), want, dtype=np.float64, n_terms=u.shape[1])


def test_loglik_profiles_on_either_device(device, pbmc):
    """pic_loglik with the counts on the device and the profiles on the host, or the other way
    round: the profiles follow the counts (NumPy profiles indexed by CuPy arrays would raise)."""
    import cupy as cp
    from _helpers import to_host

    pics = make_pics(pbmc, 25, b_groups=(DC, MONO))
    names = list(pbmc.obs[GROUPBY].astype("category").cat.categories)
    codes = pbmc.obs[GROUPBY].astype("category").cat.codes.to_numpy().astype(np.int64)
    mask = np.asarray(pbmc.X.sum(0)).ravel() > 10
    prof = group_profiles(pbmc.X.tocsr(), codes, len(names), mask)
    ia = np.array([names.index(a) for a in pics.obs["pic_a"]])
    ib = np.array([names.index(b) for b in pics.obs["pic_b"]])
    al = pics.obs["pic_alpha"].to_numpy(dtype=np.float64)
    u = sp.csr_matrix(pics.X.toarray().astype(np.float64)[:, mask])
    want = pic_loglik(u, prof, ia, ib, al)
    got = pic_loglik(as_type(u, "cupyx_csr"), prof, ia, ib, al)
    assert type(got).__module__.startswith("cupy")
    # float64 sums over each PIC's genes, in another order on the device
    assert_close(to_host(got), want, dtype=np.float64, n_terms=u.shape[1])
    assert_close(pic_loglik(u, cp.asarray(prof), ia, ib, al), want, dtype=np.float64, n_terms=u.shape[1])


def test_doublet_test_separates_doublets_from_singlets(pbmc):
    pics = make_pics(pbmc, 180, kinds=("TB", "T", "B"), b_groups=(DC, MONO))
    pics.obs.loc[pics.obs_names[0], "pic_status"] = "too_few_umis"
    kind = pics.obs["kind"]
    doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit")
    llr = pics.obs["pic_doublet_llr"]
    assert np.isnan(llr.iloc[0]) and not pics.obs["pic_is_doublet"].iloc[0]
    d, s = llr[(kind == "TB")].dropna(), llr[kind != "TB"]
    assert (s >= -1e-9).all()  # with fitted alpha the singlet model is nested
    assert np.quantile(s, 0.9) < np.quantile(d, 0.1)
    assert stats.mannwhitneyu(d, s, alternative="greater").pvalue < 1e-12
    # published rule (observed alpha, threshold 0): true singlets have alpha 0/1 -> LLR 0, no call
    doublet_test(pics, pbmc, groupby=GROUPBY)
    called = pics.obs["pic_is_doublet"]
    assert not called[kind != "TB"].any()
    assert called[kind == "TB"].mean() > 0.9
    assert pics.uns["pic_qc"]["doublet"]["alpha"] == "obs"


def _split_entries(x) -> sp.csr_matrix:
    """The same counts with every stored value split into two duplicate CSR entries."""
    x = sp.csr_matrix(x, dtype=np.float32)
    half = np.floor(x.data / 2)
    pairs = np.repeat(np.arange(x.indptr[-1]), 2)
    data = np.column_stack([half, x.data - half]).ravel()
    return sp.csr_matrix((data, x.indices[pairs], x.indptr * 2), shape=x.shape)


def test_qc_sums_duplicate_entries_of_the_singlets(pbmc):
    """doublet_test and triplet_scan score singlets whose CSR stores a gene's count as several
    entries as the summed matrix (their geometric-mean profiles took log1p of each entry: LLRs
    up to 33 apart, from an audit)."""
    pics = make_pics(pbmc, 60, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    split = pbmc.copy()
    split.X = _split_entries(pbmc.X)
    assert not split.X.has_canonical_format
    np.testing.assert_array_equal(split.X.toarray(), pbmc.X.toarray())
    for step, col in ((doublet_test, "pic_doublet_llr"), (triplet_scan, "pic_triplet_llr")):
        want = step(pics, pbmc, groupby=GROUPBY, inplace=False)[col]
        got = step(pics, split, groupby=GROUPBY, inplace=False)[col]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert not split.X.has_canonical_format  # the user's matrix is left as it was


def test_triplet_scan_flags_triplets_more_than_doublets(pbmc):
    pics = make_pics(pbmc, 160, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    # bulk_labels' 'Dendritic' cells are partly monocyte-like, so a DC/monocyte mixture also
    # fits some true T + DC doublets: at min_llr=20, 84 % of the triplets and 34 % of the doublets
    triplet_scan(pics, pbmc, groupby=GROUPBY, min_llr=20)
    kind = pics.obs["kind"]
    llr = pics.obs["pic_triplet_llr"]
    flagged = pics.obs["pic_is_triplet"]
    np.testing.assert_array_equal(flagged, llr > 20)
    assert flagged[kind == "TBB"].mean() > flagged[kind == "TB"].mean() + 0.3
    assert flagged[kind == "TB"].mean() < 0.45  # the doublets' false flags (34 % measured) stay bounded
    assert llr[kind == "TBB"].median() > llr[kind == "TB"].median() + 50
    trip = pics.obs[(kind == "TBB") & flagged]
    assert (trip["pic_triplet_side"] == "b").mean() > 0.6
    assert set(trip["pic_triplet_groups"][trip["pic_triplet_side"] == "b"]) == {f"{MONO}|{DC}"}
    assert list(pics.uns["pic_qc"]["triplet"]["groups_b"]) == [MONO, DC]  # reference-group order


def test_triplet_scan_weights_and_obs_alpha(pbmc):
    pics = make_pics(pbmc, 40, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    res = triplet_scan(pics, pbmc, groupby=GROUPBY, alpha="obs", weights=(0.3, 0.5), inplace=False)
    assert "pic_triplet_llr" not in pics.obs
    res5 = triplet_scan(pics, pbmc, groupby=GROUPBY, alpha="obs", inplace=False)
    # a finer weight grid can only raise the best triplet LL
    assert (res["pic_triplet_llr"] >= res5["pic_triplet_llr"] - 1e-9).all()
    with pytest.raises(ValueError, match="weights"):
        triplet_scan(pics, pbmc, groupby=GROUPBY, weights=(1.0,))
    one = triplet_scan(pics, pbmc, groupby=GROUPBY, alpha="obs", weights=0.3, inplace=False)  # a bare number
    pd.testing.assert_frame_equal(one, triplet_scan(pics, pbmc, groupby=GROUPBY, alpha="obs", weights=(0.3,),
                                                    inplace=False))  # fmt: skip
    # the B population's groups passed as A's: refused (every A side had become a DC mixture)
    with pytest.raises(ValueError, match="groups_a holds groups the PICs have on their other side"):
        triplet_scan(pics, pbmc, groupby=GROUPBY, groups_a=[DC, MONO], inplace=False)


def test_doublet_test_level_calls_against_singlets(pbmc):
    """With `level` each PIC's fitted-alpha LLR gets a p-value against reference singlets drawn
    to the PICs' depths (cross-fitted halves): singlets are called at about the level, doublets
    nearly all; the p-values follow neither the singlets' nor the PICs' row order."""
    pics = make_pics(pbmc, 180, kinds=("TB", "T", "B"), b_groups=(DC, MONO))
    pics.obs.loc[pics.obs_names[0], "pic_status"] = "too_few_umis"
    res = doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, inplace=False)
    p, kind = res["pic_doublet_p"], pics.obs["kind"]
    assert np.isnan(p.iloc[0]) and not res["pic_is_doublet"].iloc[0]
    np.testing.assert_array_equal(res["pic_is_doublet"], p.fillna(2) <= 0.05)
    assert (p[kind != "TB"] <= 0.05).mean() <= 0.1  # measured 0.05 (T) and 0.017 (B)
    assert (p[kind == "TB"].dropna() <= 0.05).mean() >= 0.85  # measured 0.95
    assert ((p.dropna() > 0) & (p.dropna() <= 1)).all()
    for other_pics, other_ref in ((pics, pbmc[::-1].copy()), (pics[::-1].copy(), pbmc)):
        got = doublet_test(other_pics, other_ref, groupby=GROUPBY, alpha="fit", level=0.05, inplace=False)
        pd.testing.assert_series_equal(got["pic_doublet_p"].loc[pics.obs_names], p)
    with pytest.warns(UserWarning, match=r"population A holds 50 reference cells, so a call at level=0.05 needs "
                      r"an LLR above all but 1 of them: one unusual reference cell"):
        doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, n_null=50, seed=3)
    qc = pics.uns["pic_qc"]["doublet"]
    assert qc["level"] == 0.05 and qc["n_null"] == 50 and qc["markers"] == "footprint"
    assert 20 <= qc["n_markers"] <= 200  # up to 100 genes raised on each side, 2-fold or more
    assert (pics.obs["pic_doublet_p"].dropna() >= 1 / 51).all()  # at most 50 cells a side: p >= 1 / 51
    doublet_test(pics, pbmc, groupby=GROUPBY)  # without a level the earlier call's p-values go
    assert "pic_doublet_p" not in pics.obs and "level" not in pics.uns["pic_qc"]["doublet"]
    with pytest.warns(UserWarning, match=r"population A holds 50 reference cells.*no PIC nearer that end can be called"):
        doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", level=0.01, n_null=50, inplace=False)
    none_ok = pics.copy()  # no PIC to test: no null (numpy's "a cannot be empty" before)
    none_ok.obs["pic_status"] = "too_few_umis"
    with pytest.warns(UserWarning, match="no PIC has status 'ok'"):
        res = doublet_test(none_ok, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, inplace=False)
    assert res["pic_doublet_p"].isna().all() and not res["pic_is_doublet"].any()
    counts = pics.copy()  # the null's depths are the counts the test reads: a layer's, not X's
    counts.layers["counts"] = counts.X.copy()
    counts.X = counts.X * 0.5
    got = doublet_test(counts, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, layer="counts", inplace=False)
    pd.testing.assert_series_equal(got["pic_doublet_p"], p)
    for kw, match in (({"level": 0.05}, "pass alpha='fit' and leave min_llr at 0"),
                      ({"level": 0.05, "alpha": "fit", "min_llr": 3.3}, "leave min_llr at 0"),
                      ({"level": 1.5, "alpha": "fit"}, r"level must be a number in \(0, 1\)"),
                      ({"level": 0.05, "alpha": "fit", "n_null": 0}, "n_null must be a positive integer")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            doublet_test(pics, pbmc, groupby=GROUPBY, **kw)


def test_doublet_test_calls_above_min_llr(pbmc):
    """A doublet is called where its LLR exceeds `min_llr`, not 0: at min_llr = 3.3 (the
    docstring's p ~ 0.005 with a fitted alpha) the PICs with 0 < LLR <= 3.3 are not called."""
    pics = make_pics(pbmc, 60, kinds=("TB", "T", "B"), b_groups=(DC, MONO))
    res = doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", min_llr=3.3, inplace=False)
    llr = res["pic_doublet_llr"].to_numpy()
    assert ((llr > 0) & (llr <= 3.3)).any() and (llr > 3.3).any()  # both sides of the threshold occur
    np.testing.assert_array_equal(res["pic_is_doublet"].to_numpy(), llr > 3.3)


def _dense_profiles(singlets, mask):
    """Per reference group name: its geometric-mean profile over the genes of `mask` (dense,
    float64: exp of the mean log1p over the group's cells, less 1, normalised)."""
    x = singlets.X.toarray().astype(np.float64)[:, mask]
    lab = singlets.obs[GROUPBY].astype(str).to_numpy()
    out = {}
    for g in np.unique(lab):
        gm = np.expm1(np.log1p(x[lab == g]).mean(0))
        out[g] = gm / gm.sum()
    return out


def _dense_ll(u, pa, pb, alpha):
    """LL per row of `u` of the mixture alpha * pa + (1 - alpha) * pb (rows of profiles)."""
    return (u * np.log(alpha[:, None] * pa + (1 - alpha[:, None]) * pb + EPS)).sum(1)


def test_doublet_test_llr_by_hand(pbmc):
    """With alpha='obs' the LLR is LL at the observed alpha less LL at the nearer end: 1 where
    alpha >= 0.5 (alpha = 0.5 exactly too), else 0; over every gene of more than 10 UMIs."""
    pics = make_pics(pbmc, 24, kinds=("TB", "T", "B"), b_groups=(DC, MONO))
    alpha = pics.obs["pic_alpha"].to_numpy(dtype=np.float64).copy()
    alpha[::4] = 0.5
    pics.obs["pic_alpha"] = alpha
    res = doublet_test(pics, pbmc, groupby=GROUPBY, inplace=False)
    mask = np.asarray(pbmc.X.sum(0)).ravel() > 10
    prof = _dense_profiles(pbmc, mask)
    u = pics.X.toarray().astype(np.float64)[:, mask]
    pa = np.array([prof[g] for g in pics.obs["pic_a"]])
    pb = np.array([prof[g] for g in pics.obs["pic_b"]])
    want = _dense_ll(u, pa, pb, alpha) - _dense_ll(u, pa, pb, np.where(alpha >= 0.5, 1.0, 0.0))
    assert (np.abs(want[::4]) > 1).all()  # at alpha 0.5 the two ends' LLs differ
    np.testing.assert_allclose(res["pic_doublet_llr"], want, rtol=1e-9, atol=1e-8)


def test_triplet_scan_level_calls_against_reference_doublets(pbmc):
    """By default (no min_llr) a PIC is flagged by a p-value against doublets drawn from the
    reference (cross-fitted halves, the PICs' depths), each PIC scored as they are, at its pair
    of highest likelihood: true doublets are flagged at about the level (LLR > 0 flagged most of
    them), triplets much more often; the p-values follow neither row order."""
    pics = make_pics(pbmc, 160, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    pics.obs.loc[pics.obs_names[0], "pic_status"] = "too_few_umis"
    kind = pics.obs["kind"]
    res = triplet_scan(pics, pbmc, groupby=GROUPBY, level=0.05, n_null=400, inplace=False)
    p = res["pic_triplet_p"]
    assert np.isnan(p.iloc[0]) and not res["pic_is_triplet"].iloc[0]
    np.testing.assert_array_equal(res["pic_is_triplet"], p.fillna(2) <= 0.05)
    assert ((p.dropna() >= 1 / 401) & (p.dropna() <= 1)).all()
    assert (p[kind == "TB"] <= 0.05).mean() <= 0.1  # measured 0.03-0.04 (160-240 PICs)
    assert (p[kind == "TBB"] <= 0.05).mean() >= 0.35  # measured 0.53-0.56
    old = triplet_scan(pics, pbmc, groupby=GROUPBY, min_llr=0, inplace=False)
    assert old["pic_is_triplet"][kind == "TB"].mean() > 0.4  # the LLR > 0 rule: 0.59 measured
    for other_pics, other_ref in ((pics, pbmc[::-1].copy()), (pics[::-1].copy(), pbmc)):
        got = triplet_scan(other_pics, other_ref, groupby=GROUPBY, level=0.05, n_null=400, inplace=False)
        pd.testing.assert_series_equal(got["pic_triplet_p"].loc[pics.obs_names], p)
    triplet_scan(pics, pbmc, groupby=GROUPBY, n_null=400, seed=2)  # the default: level 0.01
    qc = pics.uns["pic_qc"]["triplet"]
    assert qc["level"] == 0.01 and qc["n_null"] == 400 and qc["seed"] == 2
    np.testing.assert_array_equal(pics.obs["pic_is_triplet"], pics.obs["pic_triplet_p"].fillna(2) <= 0.01)
    triplet_scan(pics, pbmc, groupby=GROUPBY, min_llr=0)  # the p-values of the earlier call go
    assert "pic_triplet_p" not in pics.obs and "level" not in pics.uns["pic_qc"]["triplet"]
    for kw, match in (({"level": 0.05, "min_llr": 3.0}, "not both"),
                      ({"level": 0.05, "alpha": "obs"}, "pass alpha='fit'"),
                      ({"level": 1.5}, r"level must be a number in \(0, 1\)"),
                      ({"n_null": 0}, "n_null must be a positive integer")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            triplet_scan(pics, pbmc, groupby=GROUPBY, **kw)
    none_ok = pics.copy()  # no PIC to test: no null
    none_ok.obs["pic_status"] = "too_few_umis"
    with pytest.warns(UserWarning, match="no PIC has status 'ok'"):
        res = triplet_scan(none_ok, pbmc, groupby=GROUPBY, inplace=False)
    assert res["pic_triplet_p"].isna().all() and not res["pic_is_triplet"].any()
    with pytest.warns(UserWarning, match=r"a null of 50 doublets gives no p-value below 1/51, so no PIC can be"):
        triplet_scan(pics, pbmc, groupby=GROUPBY, n_null=50, inplace=False)
    with pytest.warns(UserWarning, match=r"needs an LLR above all but 1 of them"):
        triplet_scan(pics, pbmc, groupby=GROUPBY, level=0.05, n_null=50, inplace=False)
    lone = pbmc.copy()  # one reference cell: a lone group warns, a lone population is refused
    lone.obs[GROUPBY] = lone.obs[GROUPBY].astype(str)
    dc = np.flatnonzero(lone.obs[GROUPBY] == DC)
    lone.obs.iloc[dc[0], lone.obs.columns.get_loc(GROUPBY)] = "one DC"
    one = pics.copy()
    one.uns["pic"] = {"groups_a": np.array(T_GROUPS), "groups_b": np.array([DC, MONO, "one DC"])}
    with pytest.warns(UserWarning, match=r"groups \['one DC'\] of population B have one reference cell"):
        triplet_scan(one, lone, groupby=GROUPBY, n_null=200, inplace=False)
    solo = lone[~lone.obs[GROUPBY].isin([DC, MONO])].copy()
    one.uns["pic"] = {"groups_a": np.array(T_GROUPS), "groups_b": np.array(["one DC"])}
    one.obs["pic_b"] = "one DC"
    snap = one.obs.copy()
    with pytest.raises(ValueError, match=r"population B has 1 reference cell\(s\).*pass min_llr="):
        triplet_scan(one, solo, groupby=GROUPBY)
    pd.testing.assert_frame_equal(one.obs, snap)


def test_null_pvalues_by_hand():
    """A p-value counts the null's values at or above the LLR, plus one, over the null's size
    plus one; NaN stays NaN; each PIC against its nearer end's side's null."""
    from gpu_sc.pic._doublet_null import null_pvalues, upper_pvalues

    null = np.array([0.0, 1.0, 1.0, 3.0])
    np.testing.assert_allclose(upper_pvalues(np.array([1.0, 2.0, np.nan, 4.0, -1.0]), null),
                               [4 / 5, 2 / 5, np.nan, 1 / 5, 1.0])  # fmt: skip
    got = null_pvalues(np.array([1.0, 1.0]), np.array([True, False]), (null, np.array([5.0])))
    np.testing.assert_allclose(got, [4 / 5, 2 / 2])


def test_best_pairs_take_the_highest_likelihood_and_ties_go_to_the_first_pair():
    """best_pairs (the QC steps' pair search): each row's pair of highest fitted-alpha
    likelihood; a row at an alpha end (one cell alone: the other side's profile unused) ties
    over that side's groups, and takes the first pair, as documented."""
    from gpu_sc.pic._doublet_null import best_pairs
    from gpu_sc.pic._qc import _fit_alpha, _ll

    prof = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # genes x groups: A 0, B 1 and 2
    u = sp.csr_matrix(np.array([[10.0, 0, 0], [0, 0, 10.0], [4.0, 0, 4.0]]))
    rows, cols = np.repeat(np.arange(3), np.diff(u.indptr)), u.indices
    ia, ib, llr = best_pairs(np, rows, cols, u.data, 3, prof, [(0, 1), (0, 2)], EPS, _fit_alpha, _ll)
    np.testing.assert_array_equal(ia, [0, 0, 0])
    np.testing.assert_array_equal(ib, [1, 2, 2])  # row 0: alpha 1 under both pairs, a tie: the first
    assert llr[0] == 0 and llr[1] == 0 and llr[2] > 1  # row 2: half A, half B 2


def _tiny_reference(sizes, *, n_genes=12, seed=0):
    """Host float64 CSR of integer counts, `sizes[g]` cells of group g (group-specific
    expression, 30-160 UMIs a cell, every row distinct), and the cells' group codes."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    base = rng.gamma(0.6, size=(len(sizes), n_genes)) + 0.02
    x = np.array([rng.multinomial(rng.integers(30, 160), base[g] / base[g].sum()) for g in codes], float)
    assert len({r.tobytes() for r in x}) == len(x)
    return sp.csr_matrix(x), codes


def _row_ids(x: sp.csr_matrix) -> dict:
    """Each row's index, keyed by its counts (rows of `_tiny_reference` are distinct)."""
    return {r.tobytes(): i for i, r in enumerate(x.toarray())}


def test_singlet_null_scores_whole_cells_against_profiles_without_them(monkeypatch):
    """singlet_null: each drawn reference cell is scored against profiles built from the
    population's cells outside its half (cross-fitted), not from itself; a cell with fewer UMIs
    than its drawn depth is taken whole; the A null is the A cells' LLRs and the B null the B
    cells', sorted; the cells and the depths drawn follow `seed`."""
    import gpu_sc.pic._doublet_null as dn
    from gpu_sc.pic._qc import _fit_alpha, _ll

    s, codes = _tiny_reference([3, 2, 2, 2])  # A: groups 0, 1 (5 cells); B: groups 2, 3 (4 cells)
    sides = (np.array([0, 1]), np.array([2, 3]))
    ids = _row_ids(s)
    kept, scored = [], []

    def profiles(sm, c, n_groups, markers):
        kept.append({ids[r.tobytes()] for r in sm.toarray()})
        return group_profiles(sm, c, n_groups, markers)

    real = dn._best_pair_llr

    def best_pair_llr(u, *args):
        out = real(u, *args)
        scored.append(dict(zip([ids.get(r.tobytes(), -1) for r in u.toarray()], out, strict=True)))
        return out

    monkeypatch.setattr(dn, "_best_pair_llr", best_pair_llr)

    def run(n_null, depths, seed):
        kept.clear()
        scored.clear()
        return dn.singlet_null(s, codes, 4, np.arange(s.shape[0]), sides, np.ones(s.shape[1], bool),
                               np.asarray(depths, float), n_null=n_null, seed=seed, eps=EPS, profiles=profiles,
                               fit_alpha=_fit_alpha, loglik=_ll)  # fmt: skip

    for seed in (0, 1, 2):
        null_a, null_b = run(100, [1e6], seed)  # every cell drawn, each taken whole
        assert len(kept) == len(scored) == 2
        used = set(range(s.shape[0]))
        for keep, llr in zip(kept, scored, strict=True):
            assert -1 not in llr  # whole cells
            assert not keep & set(llr) and keep | set(llr) == used  # profiles without the scored half
        llr = {c: v for half in scored for c, v in half.items()}
        np.testing.assert_array_equal(null_a, np.sort([llr[c] for c in np.flatnonzero(codes < 2)]))
        np.testing.assert_array_equal(null_b, np.sort([llr[c] for c in np.flatnonzero(codes >= 2)]))
    drawn, whole = set(), set()
    for seed in range(8):
        run(2, [1e6], seed)  # 2 cells of each population
        drawn.add(frozenset(c for half in scored for c in half))
        run(100, [0, 1e6], seed)  # each cell of 0 UMIs or whole
        whole.add(sum(c >= 0 for half in scored for c in half))
    assert len(drawn) > 1 and len(whole) > 1  # the cells drawn and their depths follow the seed


def test_doublet_null_joins_whole_cells_of_one_fold_scored_without_it():
    """doublet_null: each population's groups are dealt round min(10, cells) folds, from where
    the last group stopped (every fold holds cells of both populations, as even as can be);
    a null doublet joins an A and a B cell of one fold, its UMIs the two cells' pooled counts
    where the drawn depth exceeds them (the A share the A cell's), and is scored against
    profiles without that fold's cells; the doublets are spread evenly over the folds, and
    follow `seed`."""
    from gpu_sc.pic._doublet_null import doublet_null
    from gpu_sc.pic._qc import _fit_alpha, _ll

    s, codes = _tiny_reference([3, 3, 2, 2])  # A: groups 0, 1 (6 cells); B: groups 2, 3 (4): 4 folds
    sides = (np.array([0, 1]), np.array([2, 3]))
    x = s.toarray()
    ids = _row_ids(s)
    pooled = {(x[a] + x[b]).tobytes(): (a, b) for a in np.flatnonzero(codes < 2) for b in np.flatnonzero(codes >= 2)}
    assert len(pooled) == 24
    kept, calls = [], []

    def profiles(sm, c, n_groups, markers):
        kept.append({ids[r.tobytes()] for r in sm.toarray()})
        return group_profiles(sm, c, n_groups, markers)

    def triplet_llr(u, prof, ia, ib):
        calls.append([pooled.get(r.tobytes()) for r in u.toarray()])
        return np.zeros(u.shape[0])

    def run(seed):
        kept.clear()
        calls.clear()
        doublet_null(s, codes, 4, np.arange(s.shape[0]), sides, np.ones(s.shape[1], bool), np.array([1e6]),
                     n_null=40, seed=seed, eps=EPS, profiles=profiles, fit_alpha=_fit_alpha, loglik=_ll,
                     triplet_llr=triplet_llr)  # fmt: skip
        return [pair for call in calls for pair in call]

    pairs = run(0)
    assert len(calls) == len(kept) == 4 and [len(c) for c in calls] == [10] * 4
    assert None not in pairs  # whole cells, A's UMIs from the A cell
    out = [set(range(s.shape[0])) - keep for keep in kept]
    assert sorted(c for fold in out for c in fold) == list(range(s.shape[0]))  # the folds part the cells
    for fold, call in zip(out, calls, strict=True):
        assert all(a in fold and b in fold for a, b in call)  # the doublet's cells out of its profiles
        n_a = sum(codes[c] < 2 for c in fold)
        assert n_a in (1, 2) and len(fold) - n_a == 1  # 6 A and 4 B cells dealt round 4 folds
    folds = {frozenset(fold) for fold in out}
    assert run(1) != pairs  # the folds and the cells follow the seed
    assert {frozenset(set(range(s.shape[0])) - keep) for keep in kept} != folds


def test_doublet_test_p_values_against_the_nearer_ends_population(pbmc):
    """Each PIC's p-value is against the null of its nearer end's population: 184 T cells (A)
    and, with n_null=300, 300 of the 369 DCs and monocytes (B); the p-values of PICs of one T
    cell (fitted alpha near 1, mostly) are in steps of 1/185, those of one B cell in steps of
    1/301."""
    pics = make_pics(pbmc, 160, kinds=("T", "B"), b_groups=(DC, MONO))
    p = doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, n_null=300, inplace=False)["pic_doublet_p"]

    def steps_of(q, size):
        steps = q * (size + 1)
        return np.abs(steps - np.round(steps)) < 1e-9

    for kind, size, other in (("T", 184, 300), ("B", 300, 184)):
        q = p[(pics.obs["kind"] == kind) & (p < 1)].to_numpy()  # (1 is a step of both)
        assert q.size >= 10 and (steps_of(q, size) | steps_of(q, other)).all()
        assert (steps_of(q, size) & ~steps_of(q, other)).mean() > 0.8


def test_qc_calls_at_the_level_and_above_min_llr(pbmc):
    """A p-value equal to `level` is called (p <= level), an LLR equal to `min_llr` is not
    (LLR > min_llr), in both QC steps."""
    import warnings

    pics = make_pics(pbmc, 40, kinds=("TB", "T", "B", "TBB"), b_groups=(DC, MONO))
    for step, kw, key in ((doublet_test, {"alpha": "fit", "n_null": 100}, "doublet"),
                          (triplet_scan, {"n_null": 100}, "triplet")):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (a small null for the level)
            p = step(pics, pbmc, groupby=GROUPBY, level=0.5, inplace=False, **kw)[f"pic_{key}_p"]
            at = float(np.sort(p.unique())[len(p.unique()) // 3])
            res = step(pics, pbmc, groupby=GROUPBY, level=at, inplace=False, **kw)
        called = res[f"pic_is_{key}"]
        assert (res[f"pic_{key}_p"] == at).any() and called[res[f"pic_{key}_p"] == at].all()
        np.testing.assert_array_equal(called, res[f"pic_{key}_p"] <= at)
        llr = step(pics, pbmc, groupby=GROUPBY, min_llr=0.0, inplace=False)[f"pic_{key}_llr"]
        cut = float(np.sort(llr)[len(llr) // 2])  # an LLR of a PIC
        res = step(pics, pbmc, groupby=GROUPBY, min_llr=cut, inplace=False)
        assert (llr == cut).any() and not res[f"pic_is_{key}"][llr == cut].any()
        np.testing.assert_array_equal(res[f"pic_is_{key}"], llr > cut)


def test_qc_null_size_warnings_at_their_bounds(pbmc):
    """The warnings on a small null hold at their bounds: with level=0.05, a null of 19 gives
    p = 1/20 = level at most, reachable (the 'above all of them' warning, not 'no p-value');
    of 98 warns (5 / level - 1 = 99 cells or more do not), of 99 does not."""
    import warnings

    pics = make_pics(pbmc, 20, kinds=("TB", "T", "B"), b_groups=(DC, MONO))
    kw = {"groupby": GROUPBY, "level": 0.05, "inplace": False}
    with pytest.warns(UserWarning) as rec:
        doublet_test(pics, pbmc, alpha="fit", n_null=19, **kw)
    text = " ".join(str(r.message) for r in rec)
    assert "needs an LLR above all of them" in text and "no p-value" not in text
    with pytest.warns(UserWarning, match=r"holds 98 reference cells.*above all but 3 of them"):
        doublet_test(pics, pbmc, alpha="fit", n_null=98, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doublet_test(pics, pbmc, alpha="fit", n_null=99, **kw)
    with pytest.warns(UserWarning) as rec:
        triplet_scan(pics, pbmc, n_null=19, **kw)
    text = " ".join(str(r.message) for r in rec)
    assert "needs an LLR above all but 0 of them" in text and "no p-value" not in text


def test_qc_nulls_follow_the_seed_and_only_the_ok_pics_depths(pbmc):
    """The nulls' draws follow `seed` (recorded in uns), and their depths are those of the PICs
    tested: PICs that are not 'ok' (here of a twentieth of their UMIs) change no p-value."""
    import warnings

    pics = make_pics(pbmc, 40, kinds=("TB", "T", "B", "TBB"), b_groups=(DC, MONO))
    pics.obs.loc[pics.obs_names[:4], "pic_status"] = "too_few_umis"
    shallow = pics.copy()
    x = shallow.X.toarray()
    x[:4] = np.floor(x[:4] / 20)
    shallow.X = sp.csr_matrix(x)
    for step, kw, key in ((doublet_test, {"alpha": "fit", "n_null": 200}, "doublet"),
                          (triplet_scan, {"n_null": 200}, "triplet")):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (a small null for the level)
            p = {seed: step(pics, pbmc, groupby=GROUPBY, level=0.05, seed=seed, inplace=False, **kw)[f"pic_{key}_p"]
                 for seed in (0, 1)}  # fmt: skip
            assert not p[0].equals(p[1])
            got = step(shallow, pbmc, groupby=GROUPBY, level=0.05, seed=1, inplace=False, **kw)[f"pic_{key}_p"]
            assert got.equals(p[1])
            step(pics, pbmc, groupby=GROUPBY, level=0.05, seed=1, **kw)
        assert pics.uns["pic_qc"][key]["seed"] == 1


def _copies_reference(seed=0):
    """Reference of 3 A groups and 2 B groups, 4 identical cells each (A cells of 200 UMIs, B
    cells of 400), so that a profile without some of a group's cells is the group's; and PICs
    joining one A and one B cell, 2 of every pair."""
    rng = np.random.default_rng(seed)
    groups = {"a0": 200, "a1": 200, "a2": 200, "b0": 400, "b1": 400}
    cell = {g: rng.multinomial(n, rng.dirichlet(np.full(40, 0.3))).astype(np.float32) for g, n in groups.items()}
    names = [g for g in groups for _ in range(4)]
    ref = ad.AnnData(sp.csr_matrix(np.array([cell[g] for g in names])),
                     obs=pd.DataFrame({"grp": pd.Categorical(names)}, index=[f"c{i}" for i in range(len(names))]))  # fmt: skip
    pairs = [(a, b) for a in ("a0", "a1", "a2") for b in ("b0", "b1")] * 2
    pics = ad.AnnData(sp.csr_matrix(np.array([cell[a] + cell[b] for a, b in pairs])), var=ref.var.copy(),
                      obs=pd.DataFrame({"pic_a": [a for a, _ in pairs], "pic_b": [b for _, b in pairs],
                                        "pic_status": "ok"}, index=[f"p{i}" for i in range(len(pairs))]))  # fmt: skip
    pics.uns["pic"] = {"groups_a": np.array(["a0", "a1", "a2"]), "groups_b": np.array(["b0", "b1"])}
    return ref, pics


def test_triplet_null_doublets_are_scored_as_the_pics_are(monkeypatch):
    """triplet_scan's null doublets are scored as the PICs are (fitted alpha, best pair): with
    groups of identical cells (profiles without a fold's cells are the whole reference's) and
    PICs as deep as two cells (null doublets whole), every null doublet's LLR is that of the PIC
    of its pair; with `level` each PIC is scored at its pair of highest likelihood, here its
    own: the LLR, side and groups of the min_llr rule."""
    import gpu_sc.pic._qc as qc

    ref, pics = _copies_reference()
    seen = []
    real = qc.upper_pvalues
    monkeypatch.setattr(qc, "upper_pvalues", lambda llr, null: seen.append(null) or real(llr, null))
    res = triplet_scan(pics, ref, groupby="grp", level=0.5, n_null=40, inplace=False)
    (null,) = seen
    llr = res["pic_triplet_llr"].to_numpy()
    assert null.size == 40 and np.unique(np.round(llr, 6)).size > 1
    assert np.abs(null[:, None] - llr[None, :]).min(axis=1).max() < 1e-6
    rule = triplet_scan(pics, ref, groupby="grp", min_llr=0.0, inplace=False)
    np.testing.assert_allclose(llr, rule["pic_triplet_llr"], rtol=1e-12, atol=1e-9)
    for col in ("pic_triplet_side", "pic_triplet_groups"):
        assert list(res[col]) == list(rule[col])


def test_triplet_scan_weights_are_symmetric(pbmc):
    """Each weight w comes with 1 - w (g1 and g2 mixed either way round): weights=(0.3,) and
    weights=(0.7,) scan the same triplets and give the same table."""
    pics = make_pics(pbmc, 30, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    kw = {"groupby": GROUPBY, "alpha": "obs", "inplace": False}
    pd.testing.assert_frame_equal(triplet_scan(pics, pbmc, weights=(0.3,), **kw),
                                  triplet_scan(pics, pbmc, weights=(0.7,), **kw))  # fmt: skip


def test_triplet_scan_llr_by_hand(pbmc):
    """alpha='obs', weights=(0.3,): the LLR is the best LL over every pair {g1, g2} of one
    side's groups mixed at 0.3 / 0.7 and 0.7 / 0.3 in place of that side's profile, less the
    doublet LL; the side and the two groups (in reference order) are those of the best."""
    import itertools

    pics = make_pics(pbmc, 30, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    res = triplet_scan(pics, pbmc, groupby=GROUPBY, alpha="obs", weights=(0.3,), inplace=False)
    mask = np.asarray(pbmc.X.sum(0)).ravel() > 10
    prof = _dense_profiles(pbmc, mask)
    u = pics.X.toarray().astype(np.float64)[:, mask]
    al = pics.obs["pic_alpha"].to_numpy(dtype=np.float64)
    pa = np.array([prof[g] for g in pics.obs["pic_a"]])
    pb = np.array([prof[g] for g in pics.obs["pic_b"]])
    lls, labels = [], []
    for side, groups in (("a", sorted(T_GROUPS)), ("b", sorted([DC, MONO]))):
        for g1, g2 in itertools.combinations(groups, 2):
            for w in (0.3, 0.7):
                pm = np.broadcast_to(w * prof[g1] + (1 - w) * prof[g2], pa.shape)
                lls.append(_dense_ll(u, pm, pb, al) if side == "a" else _dense_ll(u, pa, pm, al))
                labels.append((side, f"{g1}|{g2}"))
    lls = np.array(lls)
    np.testing.assert_allclose(res["pic_triplet_llr"], lls.max(0) - _dense_ll(u, pa, pb, al), rtol=1e-9, atol=1e-8)
    top = np.sort(lls, axis=0)
    clear = top[-1] - top[-2] > 1e-6  # (no near tie for the best)
    assert clear.mean() > 0.9
    best = np.array([labels[i] for i in lls.argmax(0)])
    np.testing.assert_array_equal(res["pic_triplet_side"].astype(str).to_numpy()[clear], best[clear, 0])
    np.testing.assert_array_equal(res["pic_triplet_groups"].astype(str).to_numpy()[clear], best[clear, 1])


def test_accuracy_alpha_error_is_the_mean():
    """alpha_mae is the mean absolute error (0, 0, 0.3: 0.1), not the median (0)."""
    obs = pd.DataFrame({"pic_a": ["t1"] * 3, "pic_b": ["d1"] * 3, "true_a": ["t1"] * 3, "true_b": ["d1"] * 3,
                        "pic_alpha": [0.5, 0.4, 0.2], "true_alpha": [0.5, 0.4, 0.5], "pic_status": "ok"},
                       index=["p0", "p1", "p2"])  # fmt: skip
    assert gsc.pic.accuracy(ad.AnnData(obs=obs))["alpha_mae"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("drop", ["pic_a", "pic_b", "pic_alpha"])
def test_missing_obs_keys_are_clear_and_change_nothing(pbmc, drop):
    pics = make_pics(pbmc, 20)
    del pics.obs[drop]
    snap = snapshot(pics)
    for fn in (
        lambda: expected_expression(pics, pbmc, groupby=GROUPBY),
        lambda: doublet_test(pics, pbmc, groupby=GROUPBY),
    ):
        with pytest.raises(KeyError, match=drop):
            fn()
        assert_unchanged(pics, snap)
    with pytest.raises(KeyError, match="not_a_column"):
        expected_expression(pics, pbmc, groupby="not_a_column")
    if drop != "pic_alpha":
        with pytest.raises(KeyError, match=drop):
            interaction_genes(pics, method="chi2")
        with pytest.raises(KeyError, match=drop):
            pair_heatmap(pics)
    assert_unchanged(pics, snap)


def test_bad_inputs_change_nothing(pbmc):
    pics = make_pics(pbmc, 20)
    expected_expression(pics, pbmc, groupby=GROUPBY)
    pics.obs.loc[pics.obs_names[2], "pic_b"] = "Astrocyte"
    snap = snapshot(pics)
    with pytest.raises(ValueError, match="Astrocyte"):
        expected_expression(pics, pbmc, groupby=GROUPBY)
    with pytest.raises(ValueError, match="Astrocyte"):
        triplet_scan(pics, pbmc, groupby=GROUPBY)
    pics.obs.loc[pics.obs_names[2], "pic_b"] = DC
    pics.obs.loc[pics.obs_names[4], "pic_alpha"] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_expression(pics, pbmc, groupby=GROUPBY)
    pics.obs.loc[pics.obs_names[4], "pic_alpha"] = 0.5
    with pytest.raises(ValueError, match="same var_names"):
        doublet_test(pics, pbmc[:, ::-1], groupby=GROUPBY)
    with pytest.raises(ValueError, match="alpha must be"):
        doublet_test(pics, pbmc, groupby=GROUPBY, alpha="mean")
    with pytest.raises(ValueError, match="min_pics"):
        interaction_genes(pics, method="chi2", min_pics=1000)
    first = pics.X.data[0]
    pics.X.data[0] = -1
    with pytest.raises(ValueError, match="negative"):
        interaction_genes(pics, method="chi2", min_pics=2)
    pics.X.data[0] = first  # the test's own edits undone, so anything else a call changed shows
    expected = pics.layers["pic_expected"].copy()
    pics.layers["pic_expected"] = -expected  # log2 of it was NaN: no gene tested, a numpy warning only
    with pytest.raises(ValueError, match=r"pics.layers\['pic_expected'\] holds negative values"):
        interaction_genes(pics, method="chi2", min_pics=2)
    pics.layers["pic_expected"] = expected
    pics.obs.loc[pics.obs_names[2], "pic_b"] = "Astrocyte"
    pics.obs.loc[pics.obs_names[4], "pic_alpha"] = snap[0]["pic_alpha"].iloc[4]
    assert_unchanged(pics, snap)


def _no_counts_in(singlets, group):
    """A copy of the singlets whose `group` cells hold no count."""
    out = singlets.copy()
    x = out.X.tolil()
    x[np.flatnonzero(out.obs[GROUPBY] == group)] = 0
    out.X = x.tocsr()
    return out


_QC_BAD = {  # the QC steps' argument errors: (call, error, message)
    # an assigned group without counts gave LLRs of hundreds from eps alone (an audit)
    "group without counts": (lambda p, s: doublet_test(p, _no_counts_in(s, DC), groupby=GROUPBY), ValueError,
                             rf"doublet_test: reference groups without any counts over the marker genes: \['{DC}'\]"),
    "group without counts (triplets)": (lambda p, s: triplet_scan(p, _no_counts_in(s, DC), groupby=GROUPBY),
                                        ValueError, "triplet_scan: reference groups without any counts"),
    "group without counts (expected)": (lambda p, s: expected_expression(p, _no_counts_in(s, DC), groupby=GROUPBY),
                                        ValueError, rf"expected_expression: reference groups without any counts: \['{DC}'\]"),
    # the matched doublets of such a group hold no UMIs, and deconvolve never called it (an audit)
    "group without counts (matched)": (lambda p, s: interaction_genes(p, _no_counts_in(s, DC), groupby=GROUPBY),
                                       ValueError, rf"interaction_genes: reference groups without any counts: \['{DC}'\]"),
    "group without counts (deconvolve)": (lambda p, s: deconvolve(p, _no_counts_in(s, DC), groupby=GROUPBY, a=T_GROUPS,
                                                                  b=[DC, MONO]), ValueError,
                                          rf"deconvolve: reference groups without any counts: \['{DC}'\]"),
    # picseq's footprints find no gene between two groups: B calls by chance, 'no_counts' PICs
    "picseq with two B groups": (lambda p, s: deconvolve(p, s, groupby=GROUPBY, a=T_GROUPS, b=[DC, MONO],
                                                         method="picseq"), ValueError,
                                 r"method='picseq' finds no marker genes between the two groups of b="),
    "unknown groups_a": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, groups_a=["nope"]), ValueError,
                         r"groups_a names groups that are not reference groups: \['nope'\]"),
    "weight out of (0, 1)": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, weights=(1.5,)), ValueError,
                             r"weights must lie strictly between 0 and 1, got \(1.5,\)"),
    "one group a side": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, groups_a=[T_GROUPS[0]], groups_b=[DC]),
                         ValueError, "fewer than 2 groups; there is no triplet to test"),
    "eps 0": (lambda p, s: doublet_test(p, s, groupby=GROUPBY, eps=0), ValueError,
              r"eps must be a number in \(0.0, inf\), got 0"),
    "eps inf": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, eps=float("inf")), ValueError,
                r"eps must be a number in \(0.0, inf\), got inf"),  # every LLR was NaN, no call
    "unknown marker": (lambda p, s: doublet_test(p, s, groupby=GROUPBY, markers=["NOPE_GENE"]), KeyError,
                       r"1 genes not in var_names, e.g. \['NOPE_GENE'\]"),
    "min_llr NaN": (lambda p, s: doublet_test(p, s, groupby=GROUPBY, min_llr=np.nan), ValueError,
                    r"min_llr must be a number in \(-inf, inf\), got nan"),  # it flagged nothing, silently
    "min_llr text": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, min_llr="3"), ValueError,
                     r"min_llr must be a number"),  # a TypeError from '>' after the scan (None: by level)
    # the audit's: numpy's bare float conversion error; a set taken as one name; an empty list
    # refused as 'population A has 0 reference cells' (or, with min_llr, side A left unscanned)
    "weight text": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, weights="a"), ValueError,
                    r"triplet_scan: weights must lie strictly between 0 and 1, got 'a'"),
    "empty groups_a": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, groups_a=[], min_llr=0.0), ValueError,
                       r"triplet_scan: groups_a is empty"),
    "groups_a of numbers": (lambda p, s: triplet_scan(p, s, groupby=GROUPBY, groups_a=5), TypeError,
                            r"groups_a must be a name or a list of names, got 5"),
}


@pytest.mark.parametrize("case", _QC_BAD)
def test_qc_argument_errors_change_nothing(pbmc, case):
    pics = make_pics(pbmc, 20)
    snap, ref_snap = snapshot(pics), snapshot(pbmc)
    call, err, msg = _QC_BAD[case]
    with pytest.raises(err, match=msg):
        call(pics, pbmc)
    assert_unchanged(pics, snap)
    assert_unchanged(pbmc, ref_snap)


_PIC_STEPS = {  # each public step with a non-AnnData where an AnnData belongs
    "simulate_pics": lambda bad, s: simulate_pics(bad, groupby=GROUPBY, a=T_GROUPS, b=DC, n_pics=5),
    "deconvolve(pics)": lambda bad, s: deconvolve(bad, s, groupby=GROUPBY, a=T_GROUPS, b=DC),
    "deconvolve(singlets)": lambda bad, s: deconvolve(s, bad, groupby=GROUPBY, a=T_GROUPS, b=DC),
    "expected_expression": lambda bad, s: expected_expression(bad, s, groupby=GROUPBY),
    "interaction_genes": lambda bad, s: interaction_genes(bad),
    "doublet_test": lambda bad, s: doublet_test(bad, s, groupby=GROUPBY),
    "triplet_scan": lambda bad, s: triplet_scan(bad, s, groupby=GROUPBY),
    "pair_heatmap": lambda bad, s: pair_heatmap(bad),
    "alpha_hist": lambda bad, s: alpha_hist(bad),
    "interaction_plot": lambda bad, s: interaction_plot(bad),
    "pair_frequencies": lambda bad, s: gsc.pic.pair_frequencies(bad),
    "pair_abundance_test": lambda bad, s: gsc.pic.pair_abundance_test(bad, "cond"),
    "summary": lambda bad, s: gsc.pic.summary(bad),
    "accuracy": lambda bad, s: gsc.pic.accuracy(bad),
    "write_plots": lambda bad, s: gsc.pic.write_plots(bad, "unused-dir"),
}
_NOT_ANNDATA = {"ndarray": np.ones((3, 765)), "DataFrame": pd.DataFrame(np.ones((3, 2))), "list": [[1, 2]]}


def test_write_plots_and_alpha_errors_name_the_step_and_the_values(pbmc, tmp_path):
    """PICs never deconvolved: write_plots says so as itself (the message was pair_heatmap's) and
    makes no folder; an alpha outside [0, 1] is counted and shown with the PIC that holds it."""
    pics = make_pics(pbmc, 20)
    bare = ad.AnnData(pics.X.copy())
    folder = tmp_path / "plots"
    with pytest.raises(KeyError, match="write_plots: pics.obs has no column 'pic_a'"):
        gsc.pic.write_plots(bare, folder)
    assert not folder.exists()
    pics.obs["pic_alpha"] = pics.obs["pic_alpha"].astype(float)
    pics.obs.iloc[[2, 5], pics.obs.columns.get_loc("pic_alpha")] = [1.5, np.nan]
    with pytest.raises(ValueError, match=rf"2 do not, e\.g\. 1\.5 at PIC '{pics.obs_names[2]}'"):
        expected_expression(pics, pbmc, groupby=GROUPBY)


def test_plot_paths_refused_or_made(pbmc, tmp_path):
    """From a CLI audit: save= into a missing folder makes it (as write_plots does; it was a bare
    FileNotFoundError), save= naming no file and write_plots into a file or None are refused
    before anything is written (IsADirectoryError, or a FileExistsError after drawing)."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    pics = make_pics(pbmc, 20)
    gsc.pic.pair_heatmap(pics, save=tmp_path / "new" / "pairs.png")
    gsc.pic.alpha_hist(pics, save=str(tmp_path / "new2" / "alpha.png"))
    assert (tmp_path / "new" / "pairs.png").stat().st_size > 0 and (tmp_path / "new2" / "alpha.png").exists()
    for bad in ("", str(tmp_path), str(tmp_path / "dir") + "/"):
        with pytest.raises(ValueError, match="is no file name; give a file to write"):
            gsc.pic.pair_heatmap(pics, save=bad)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="write_plots: directory '.*afile' is a file; give a folder"):
        gsc.pic.write_plots(pics, afile)
    with pytest.raises(TypeError, match="write_plots: directory must be the path of a folder"):
        gsc.pic.write_plots(pics, None)
    assert afile.read_text() == "x" and not (tmp_path / "dir").exists()
    plt.close("all")


def test_summary_needs_a_deconvolution_and_a_whole_n_top(pbmc):
    """A PIC table never deconvolved is refused (it read as 'n of n ok'); n_top is a count."""
    pics = make_pics(pbmc, 10)
    with pytest.raises(ValueError, match="not deconvolved; run gsc.pic.deconvolve first"):
        gsc.pic.summary(ad.AnnData(obs=pics.obs.drop(columns=["pic_a", "pic_b"])))
    for bad in (2.5, 0, -1):
        with pytest.raises((TypeError, ValueError), match="n_top"):
            gsc.pic.summary(pics, n_top=bad)
    assert gsc.pic.summary(pics, n_top=1)["top pairs (A + B)"].count(";") == 0


@pytest.mark.parametrize("kind", _NOT_ANNDATA)
@pytest.mark.parametrize("step", _PIC_STEPS)
def test_non_anndata_is_a_type_error(pbmc, step, kind):
    snap = snapshot(pbmc)
    with pytest.raises(TypeError, match=f"{step.split('(')[0]}: expected an AnnData, got {kind}"):
        _PIC_STEPS[step](_NOT_ANNDATA[kind], pbmc)
    assert_unchanged(pbmc, snap)


_BAD_LOGLIK = [  # (u, profiles, ia, ib, alpha) changes from a valid call; error; message
    ({"u": [[1.0, 2.0, 0.0, 1.0]] * 3}, TypeError, "u must be a 2-D matrix of counts"),
    ({"profiles": np.full((3, 2), 0.3)}, ValueError, "profiles must be genes x groups over the 4 genes of u, got shape (3, 2)"),
    ({"ia": [0]}, ValueError, "ia must hold one value per PIC (shape (3,)), got shape (1,)"),
    ({"alpha": [0.5, 0.5]}, ValueError, "alpha must hold one value per PIC (shape (3,)), got shape (2,)"),
    ({"ia": [5, 1, 0]}, ValueError, "ia must index the 2 columns (groups) of profiles, 0 to 1, got values from 0 to 5"),
    ({"ib": [-1, 0, 1]}, ValueError, "ib must index the 2 columns (groups) of profiles"),
    ({"ia": [0.0, 1.0, 0.0]}, TypeError, "ia must hold integer column indices of profiles, got dtype float64"),
    ({"alpha": [0.5, 1.5, 0.2]}, ValueError, "alpha is the A share of each PIC and must lie in [0, 1]"),
    ({"u": sp.csr_matrix(-np.ones((3, 4)))}, ValueError, "pic_loglik (u): expects non-negative counts"),
    ({"u": np.full((3, 4), np.nan)}, ValueError, "pic_loglik (u): expects counts but found 12 non-finite values"),
    ({"profiles": np.full((4, 2), np.nan)}, ValueError, "profiles must hold non-negative, finite expression shares"),
    ({"profiles": np.full((4, 2), -0.25)}, ValueError, "got minimum -0.25 and 0 non-finite values"),
    ({"eps": -1.0}, ValueError, "eps must be a number in (0.0, inf), got -1.0"),
]


@pytest.mark.parametrize(("change", "error", "match"), _BAD_LOGLIK,
                         ids=["u-list", "profile-genes", "ia-length", "alpha-length", "ia-range", "ib-negative", "ia-float",
                              "alpha-range", "u-negative", "u-nan", "profiles-nan", "profiles-negative", "eps"])
def test_pic_loglik_refuses_mismatched_arguments(change, error, match):
    args = {"u": sp.csr_matrix(np.ones((3, 4))), "profiles": np.full((4, 2), 0.25), "ia": [0, 1, 0],
            "ib": [1, 0, 1], "alpha": [0.5] * 3}  # fmt: skip
    assert pic_loglik(**args).shape == (3,)
    with pytest.raises(error, match=re.escape(match)):
        pic_loglik(**{**args, **change})


def test_interaction_groupby_keys_one_string(pbmc):
    """One column name is that column (as in pandas' groupby), not a list of its letters."""
    pics = make_pics(pbmc, 40, b_groups=(DC, MONO))
    expected_expression(pics, pbmc, groupby=GROUPBY)
    want = interaction_genes(pics, method="chi2", groupby_keys=("pic_b",), min_pics=1, inplace=False)
    got = interaction_genes(pics, method="chi2", groupby_keys="pic_b", min_pics=1)
    pd.testing.assert_frame_equal(got, want)
    assert pics.uns["pic_interaction"]["params"]["groupby_keys"] == ["pic_b"]


# --------------------------------------------------------------------------- plots
def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_write_to_zarr_and_the_next_steps_read_them_back(pbmc, tmp_path):
    """Group names hold '/' (CD4+/CD25 T Reg): interaction_genes' stored table had a column per
    group, which zarr refused ('Forward slashes are not allowed') and h5py warns it will; the
    per-group effects are stored as an array now. And anndata reads zarr's strings back as
    numpy's StringDType, on which doublet_test, triplet_scan, interaction_plot and
    expected_expression(genes=...) failed ('cannot cast'; from an audit)."""
    import warnings

    pytest.importorskip("matplotlib")
    pics = make_pics(pbmc, 80, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    pics.uns["pic"]["markers"] = list(pbmc.var_names[:40])
    expected_expression(pics, pbmc, groupby=GROUPBY)
    table = interaction_genes(pics, method="chi2", min_pics=3)
    per_group = [c for c in table if c.startswith("log2_effect:")]
    assert any("/" in c for c in per_group)
    stored = pics.uns["pic_interaction"]
    np.testing.assert_array_equal(stored["log2_effects"], table[per_group].to_numpy().T)
    pd.testing.assert_frame_equal(stored["table"], table.drop(columns=per_group))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # h5py's warning on '/' in a key
        pics.write_h5ad(tmp_path / "pics.h5ad")
    pics.write_zarr(tmp_path / "pics.zarr")
    for back in (ad.read_h5ad(tmp_path / "pics.h5ad"), ad.read_zarr(tmp_path / "pics.zarr")):
        res = back.uns["pic_interaction"]
        pd.testing.assert_frame_equal(res["table"], stored["table"], check_index_type=False)
        np.testing.assert_array_equal(res["log2_effects"], stored["log2_effects"])
        for step, col in ((doublet_test, "pic_doublet_llr"), (triplet_scan, "pic_triplet_llr")):
            want = step(pics, pbmc, groupby=GROUPBY, inplace=False)[col]
            np.testing.assert_array_equal(step(back, pbmc, groupby=GROUPBY, inplace=False)[col], want)
        assert interaction_plot(back, n=2).axes
        got = expected_expression(back, pbmc, groupby=GROUPBY, genes=res["genes"][:5], inplace=False)
        want = expected_expression(pics, pbmc, groupby=GROUPBY, genes=stored["genes"][:5], inplace=False)
        np.testing.assert_array_equal(_dense_of(got), _dense_of(want))


def _dense_of(result):
    x = result[0] if isinstance(result, tuple) else result
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_interaction_plot_with_a_repeated_gene_symbol(pbmc):
    """Two loci with one symbol (every earlier step takes them): interaction_plot failed with a
    pandas TypeError (from an audit); each row gets its own panel, titled from its own row."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    pics = make_pics(pbmc, 120, b_groups=(DC, MONO))
    names = list(pbmc.var_names)
    dup = names[0]
    names[1] = dup
    singlets = pbmc.copy()
    singlets.var_names = pics.var_names = names
    expected_expression(pics, singlets, groupby=GROUPBY)
    table = interaction_genes(pics, method="chi2", min_pics=5)
    fig = interaction_plot(pics, genes=[dup])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 2
    for title, (_, row) in zip(titles, table.iloc[:2].iterrows(), strict=True):
        assert title == f"{dup}  log2 O/E {row['log2_effect']:.2f}\nFDR {row['fdr']:.2g}"
    plt.close(fig)
    with pytest.raises(ValueError, match="no tested gene to plot"):
        interaction_plot(pics, genes=[])
    fig = interaction_plot(pics, n=4)
    tested = table[table["tested"]]
    top = tested.sort_values(["fdr", "chi2"], ascending=[True, False], kind="stable").index[:4]
    assert [ax.get_title().split("  ")[0] for ax in fig.axes if ax.get_visible()] == list(top)
    plt.close(fig)


def test_plots_write_png(pbmc, tmp_path):
    pytest.importorskip("matplotlib")
    pics = make_pics(pbmc, 120, b_groups=(DC, MONO))
    pics.obs["pic_alpha"] = np.clip(pics.obs["true_alpha"] + np.random.default_rng(0).normal(0, 0.05, 120), 0, 1)
    expected_expression(pics, pbmc, groupby=GROUPBY)
    interaction_genes(pics, method="chi2", min_pics=5)
    for name, fn in (
        ("pairs.png", lambda p: pair_heatmap(pics, save=p)),
        ("pairs_norm.png", lambda p: pair_heatmap(pics, normalize=True, save=p)),
        ("alpha.png", lambda p: alpha_hist(pics, save=p)),
        ("inter.png", lambda p: interaction_plot(pics, n=6, save=p)),
        ("inter_genes.png", lambda p: interaction_plot(pics, genes=list(pbmc.var_names[:2]), save=p)),
    ):
        fig = fn(tmp_path / name)
        assert fig.axes and _is_png(tmp_path / name)
    pair_heatmap(pics, save=tmp_path / "pairs.pdf")  # the extension's format (a PDF file held PNG bytes)
    assert (tmp_path / "pairs.pdf").read_bytes()[:5] == b"%PDF-"
    del pics.obs["true_alpha"]
    assert len(alpha_hist(pics).axes) == 1
    with pytest.raises(KeyError, match="interaction_genes"):
        interaction_plot(make_pics(pbmc, 5))
    # a bin or gene count that is not a positive integer is named (n=0 drew one gene)
    for call, error in ((lambda: alpha_hist(pics, bins=0), ValueError),
                        (lambda: alpha_hist(pics, bins=2.5), TypeError),
                        (lambda: interaction_plot(pics, n=0), ValueError),
                        (lambda: interaction_plot(pics, n=2.5), TypeError)):
        with pytest.raises(error, match="(alpha_hist: bins|interaction_plot: n) must be a positive"):
            call()
    assert alpha_hist(pics, bins="auto").axes and alpha_hist(pics, bins=[0, 0.5, 1]).axes
    # repeated names (two samples concatenated) count as any others (pandas' reindex error before)
    shown = pair_heatmap(pics).axes[0].get_images()[0].get_array()
    pics.obs_names = np.resize(pics.obs_names[:7].to_numpy(), pics.n_obs)
    np.testing.assert_array_equal(pair_heatmap(pics).axes[0].get_images()[0].get_array(), shown)
    assert shown.sum() == pics.n_obs  # no status column: every PIC counts


# --------------------------------------------------------------------------- GPU
@pytest.mark.parametrize("kind", ["cupy", "cupyx_csr"])
def test_gpu_matches_cpu(device, pbmc, kind):
    from _helpers import to_host

    pics = make_pics(pbmc, 80, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    cpu = pics.copy()
    expected_expression(cpu, pbmc, groupby=GROUPBY)
    t_cpu = interaction_genes(cpu, method="chi2", min_pics=5)
    doublet_test(cpu, pbmc, groupby=GROUPBY, alpha="fit")
    triplet_scan(cpu, pbmc, groupby=GROUPBY)
    gpu, ref = pics.copy(), pbmc.copy()
    gpu.X = as_type(sp.csr_matrix(gpu.X), kind)
    ref.X = as_type(sp.csr_matrix(ref.X), kind)
    expected_expression(gpu, ref, groupby=GROUPBY)
    assert type(gpu.layers["pic_expected"]).__module__.startswith("cupy")
    # float64 group sums in another order on the device: each float32 part may round one step
    # apart, and so their float32 sum
    assert_close(to_host(gpu.layers["pic_expected"]), cpu.layers["pic_expected"], dtype=np.float32, n_terms=2)
    t_gpu = interaction_genes(gpu, method="chi2", min_pics=5)
    # chi2 = sum_k (O_k - E_k)^2 / E_k with each E_k within d (the bound above) moves by at most
    # d (chi2 + 2 sum_k |O_k - E_k|) <= d (chi2 + 2 sqrt(chi2 E)) (Cauchy-Schwarz; E = sum_k E_k)
    chi2, e_tot = t_cpu["chi2"].to_numpy(), t_cpu["expected"].to_numpy()
    assert_close(t_gpu["chi2"], t_cpu["chi2"], dtype=np.float32, n_terms=2,
                 scale=np.nan_to_num(2 * np.sqrt(chi2 * e_tot)))  # fmt: skip
    # eps as a 0-d array, as a reduction gives it: CuPy refuses NumPy arrays in its arithmetic
    doublet_test(gpu, ref, groupby=GROUPBY, alpha="fit", eps=np.array(EPS))
    triplet_scan(gpu, ref, groupby=GROUPBY, eps=np.array(EPS))
    # an LLR is a difference of two float64 sums over a PIC's marker genes, each |LL| <= N log(1 / eps)
    # (N its UMIs; every mixed profile value >= eps), of profiles from sums over each group's cells
    # (whose rounding expm1 scales by less than log(1 / eps)); on the device in another order, with
    # its own log: relative to that magnitude (the fitted alphas sit where the LL is flat)
    mag = 2 * np.log(1 / EPS) * np.asarray(pics.X.sum(axis=1)).ravel()
    for k in ("pic_doublet_llr", "pic_triplet_llr"):
        assert_close(gpu.obs[k], cpu.obs[k], dtype=np.float64, n_terms=pbmc.n_vars, scale=mag, err_msg=k)
    assert gpu.obs["pic_triplet_side"].equals(cpu.obs["pic_triplet_side"])
    # the null is drawn and scored on the host for both; an LLR within round-off of a null
    # value may sit one step apart
    kw = {"groupby": GROUPBY, "alpha": "fit", "level": 0.05, "inplace": False}
    want_p = doublet_test(cpu, pbmc, **kw)["pic_doublet_p"].to_numpy()
    got_p = doublet_test(gpu, ref, **kw)["pic_doublet_p"].to_numpy()
    assert np.mean(got_p != want_p) < 0.05 and np.abs(got_p - want_p).max() < 0.02


def test_views_leave_parent_alone(pbmc):
    import warnings

    parent = make_pics(pbmc, 60, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    before = snapshot(parent)
    view = parent[parent.obs["kind"] == "TB"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ImplicitModificationWarning
        expected_expression(view, pbmc, groupby=GROUPBY)
        interaction_genes(view, method="chi2", min_pics=3)
        doublet_test(view, pbmc, groupby=GROUPBY)
        triplet_scan(view, pbmc, groupby=GROUPBY)
    assert not view.is_view and view.n_obs == 30 and "pic_doublet_llr" in view.obs
    assert_unchanged(parent, before)


def _status(pics, value):
    pics.obs["pic_status"] = value
    return pics


@pytest.mark.parametrize("step", [doublet_test, triplet_scan])
def test_qc_without_an_ok_pic_warns(pbmc, step):
    """No PIC with status 'ok' (a capitalised 'OK'): every column NaN and nothing flagged, as
    for any PIC not 'ok', and now a warning that names the status values (silent before: an
    audit)."""
    pics = _status(make_pics(pbmc, 20, kinds=("TB", "TBB"), b_groups=(DC, MONO)), "OK")
    with pytest.warns(UserWarning, match=rf"{step.__name__}: no PIC has status 'ok' in pics.obs\['pic_status'\] "
                                         r"\(values: \['OK'\]\), so none is scored") as got:
        res = step(pics, pbmc, groupby=GROUPBY, inplace=False)
    assert all(w.filename == __file__ for w in got if "none is scored" in str(w.message))  # the caller's line
    assert res.filter(like="llr").isna().all().all() and not res.filter(like="is_").any().any()


def test_qc_names_the_groups_and_markers_it_read_from_deconvolve(pbmc):
    """Groups and markers read from uns['pic'] are named as deconvolve's when they do not fit
    the given singlets or genes (the errors named an argument doublet_test lacks, or none)."""
    pics = make_pics(pbmc, 20, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    pics.uns["pic"]["markers"] = np.array(list(pbmc.var_names[:30]))
    keep = pbmc.var_names[5:]
    sub, ref = pics[:, keep].copy(), pbmc[:, keep].copy()
    for step in (doublet_test, triplet_scan):
        with pytest.raises(KeyError, match=r"5 genes not in var_names.*deconvolve's markers "
                                           r"\(pics.uns\['pic'\]\['markers'\]\).*pass markers="):
            step(sub, ref, groupby=GROUPBY)
    assert doublet_test(sub, ref, groupby=GROUPBY, markers="footprint", inplace=False) is not None
    no_mono = pbmc[pbmc.obs[GROUPBY] != MONO].copy()
    pics.obs["pic_b"] = DC
    with pytest.raises(ValueError, match=r"doublet_test: pics.uns\['pic'\]\['groups_b'\] names groups that are "
                                         rf"not reference groups: \['{re.escape(MONO)}'\] \(deconvolve's groups\): pass the "
                                         r"singlets and groupby deconvolve used\."):
        doublet_test(pics, no_mono, groupby=GROUPBY, alpha="fit", level=0.05)
    with pytest.raises(ValueError, match=r"triplet_scan: pics.uns\['pic'\]\['groups_b'\].*, or groups_b=\."):
        triplet_scan(pics, no_mono, groupby=GROUPBY)


def test_triplet_scan_takes_any_list_of_groups_and_warns_of_pics_outside_them(pbmc):
    """groups_a as a set or dict keys is a list of names (it was taken as one name); PICs assigned
    to a group outside the lists are scored at the given groups' pairs only: a warning says so."""
    pics = make_pics(pbmc, 40, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    want = triplet_scan(pics, pbmc, groupby=GROUPBY, groups_a=list(T_GROUPS), inplace=False)
    for given in (set(T_GROUPS), dict.fromkeys(T_GROUPS).keys(), np.array(T_GROUPS), pd.Index(T_GROUPS)):
        pd.testing.assert_frame_equal(triplet_scan(pics, pbmc, groupby=GROUPBY, groups_a=given, inplace=False), want)
    n_out = int((pics.obs["pic_a"] != T_GROUPS[0]).sum())
    with pytest.warns(UserWarning, match=rf"{n_out} of the PICs' assigned groups lie outside groups_a / groups_b"):
        triplet_scan(pics, pbmc, groupby=GROUPBY, groups_a=[T_GROUPS[0]], inplace=False)


def test_plots_refuse_what_they_cannot_draw(pbmc, tmp_path):
    """alpha_hist names a column that is not numbers (pandas' bare conversion error), refuses
    PICs without an 'ok' one (an empty 'n = 0, median nan' figure) and says how many alphas lie
    off its [0, 1] axis (counted, not drawn); pair_heatmap refuses an 'ok' PIC without a group
    (a row 'nan') and normalize with frequencies (ignored); write_plots makes no folder when a
    plot fails."""
    pytest.importorskip("matplotlib")
    pics = make_pics(pbmc, 30)
    for key in ("pic_alpha", "true_alpha"):
        bad = pics.copy()
        bad.obs[key] = "x"
        with pytest.raises(ValueError, match=rf"alpha_hist: obs\['{key}'\] must hold numbers"):
            alpha_hist(bad)
    with pytest.raises(ValueError, match="alpha_hist: no PIC with status 'ok'"):
        alpha_hist(_status(pics.copy(), "dropped"))
    off = pics.copy()
    off.obs["pic_alpha"] = np.r_[[-0.2, 1.5], off.obs["pic_alpha"].to_numpy()[2:]]
    title = alpha_hist(off).axes[0].get_title()
    drawn = sum(p.get_height() for p in alpha_hist(off).axes[0].patches)
    assert "n = 30" in title and "2 outside [0, 1], not drawn" in title and drawn == 28
    assert "outside" not in alpha_hist(pics).axes[0].get_title()
    gap = pics.copy()
    gap.obs["pic_a"] = gap.obs["pic_a"].where(np.arange(30) > 0)
    with pytest.raises(ValueError, match="pair_heatmap: 1 PICs with status 'ok' have no assigned group"):
        pair_heatmap(gap)
    with pytest.raises(ValueError, match="normalize=True shows PIC counts as fractions of their row"):
        pair_heatmap(pics, normalize=True, frequencies=pd.DataFrame())
    folder = tmp_path / "plots"
    with pytest.raises(ValueError, match="pair_heatmap"):
        gsc.pic.write_plots(gap, folder)
    assert not folder.exists()
    assert [p.name for p in gsc.pic.write_plots(pics, folder)] == ["pic-pairs.png", "pic-alpha.png"]


def test_markers_from_uns_and_status(pbmc):
    pics = make_pics(pbmc, 40, kinds=("TB", "TBB"), b_groups=(DC, MONO))
    markers = list(pbmc.var_names[:50])
    pics.uns["pic"]["markers"] = np.array(markers)
    pics.obs.loc[pics.obs_names[:5], "pic_status"] = "dropped"
    doublet_test(pics, pbmc, groupby=GROUPBY)
    assert pics.uns["pic_qc"]["doublet"]["n_markers"] == 50
    assert pics.obs["pic_doublet_llr"].isna().sum() == 5
    by_arg = doublet_test(pics, pbmc, groupby=GROUPBY, markers=pbmc.var_names.isin(markers), inplace=False)
    pd.testing.assert_series_equal(by_arg["pic_doublet_llr"], pics.obs["pic_doublet_llr"])
    every = int((np.asarray(pbmc.X.sum(0)).ravel() > 10).sum())
    pics.uns["pic"]["markers"] = []  # deconvolve found no footprint marker (2 groups a side): the same fallback
    doublet_test(pics, pbmc, groupby=GROUPBY)
    assert pics.uns["pic_qc"]["doublet"]["n_markers"] == every
    del pics.uns["pic"]["markers"]
    doublet_test(pics, pbmc, groupby=GROUPBY)
    assert pics.uns["pic_qc"]["doublet"]["n_markers"] == every
    # interaction groups count only PICs with status 'ok'
    expected_expression(pics, pbmc, groupby=GROUPBY)
    interaction_genes(pics, method="chi2", groupby_keys=("pic_b",), min_pics=1)
    groups = pics.uns["pic_interaction"]["groups"]
    assert groups["n_pics"].sum() == 35


def test_accuracy_leaves_out_pics_of_unknown_truth():
    """Real PICs (no true_a / true_b) among synthetic ones are left out of the pair, A and B
    shares, as of alpha's error; a missing call against a known truth is a miss."""
    obs = pd.DataFrame({"pic_a": ["t1", "t1", None, "t2", "t1"], "pic_b": ["d1", "d2", "d1", None, "d1"],
                        "true_a": ["t1", "t1", "t1", None, None], "true_b": ["d1", "d1", "d1", None, "d1"],
                        "pic_alpha": [0.5, 0.5, 0.5, 0.5, 0.5], "true_alpha": [0.5, 0.7, 0.6, np.nan, 0.5],
                        "pic_status": "ok"}, index=[f"p{i}" for i in range(5)])  # fmt: skip
    got = gsc.pic.accuracy(ad.AnnData(obs=obs))
    assert got == pytest.approx({"pair": 1 / 3, "a": 2 / 3, "b": 2 / 3, "alpha_mae": 0.1})
    assert gsc.pic.accuracy(ad.AnnData(obs=obs.iloc[3:])) is None
    # truth named in another grouping than the deconvolution's groups: no score (it read 0.000),
    # while a truth that shares some groups with them is scored
    other = ad.AnnData(obs=obs, uns={"pic": {"groups_a": ["c1", "c2"], "groups_b": ["c3"]}})
    assert gsc.pic.accuracy(other) is None
    other.uns["pic"]["groups_a"] = ["t1", "c2"]
    assert gsc.pic.accuracy(other) == pytest.approx(got)


def test_a_misspelt_status_key_is_refused(pbmc):
    """Only the default status column may be absent (PICs never deconvolved: every PIC); a named
    column that is not there is a KeyError, where it once counted the dropped PICs too."""
    pics = make_pics(pbmc, 20)
    pics.obs.loc[pics.obs_names[:3], "pic_status"] = "too_few_umis"
    snap = snapshot(pics)
    calls = {"pair_heatmap": lambda k: pair_heatmap(pics, status_key=k),
             "alpha_hist": lambda k: alpha_hist(pics, status_key=k),
             "expected_expression": lambda k: expected_expression(pics, pbmc, groupby=GROUPBY, status_key=k),
             "interaction_genes": lambda k: interaction_genes(pics, method="chi2", status_key=k, min_pics=1)}  # fmt: skip
    for step, call in calls.items():
        with pytest.raises(KeyError, match=f"{step}: status_key 'pic_stats' is not a column of pics.obs"):
            call("pic_stats")
        assert_unchanged(pics, snap)
    assert pair_heatmap(pics, status_key=None).axes[0].images[0].get_array().sum() == 20
    assert pair_heatmap(pics).axes[0].images[0].get_array().sum() == 17


def test_groupby_must_be_one_column_name(pbmc):
    """groupby=['bulk_labels'] raised pandas' bare "unhashable type: 'list'" in the steps after
    deconvolve (from a review); now each names the argument, its data untouched."""
    pics = make_pics(pbmc, 20)
    before = pics.copy()
    for step in (doublet_test, triplet_scan, expected_expression):
        with pytest.raises(TypeError, match=r"must be one column name of singlets.obs, got \['bulk_labels'\] \(list\)"):
            step(pics, pbmc, groupby=[GROUPBY])
    with pytest.raises(TypeError, match=r"must be one column name of singlets.obs, got \['bulk_labels'\]"):
        interaction_genes(pics, pbmc, groupby=[GROUPBY])
    assert_unchanged(pics, snapshot(before))


def test_footprint_genes_are_each_populations_most_raised():
    """markers='footprint': ml's genes between populations, the n most raised each way, 2-fold
    or more, more than 10 UMIs, none blacklisted (here the A-only pair and the B-only pair; the
    shared genes and a mitochondrial one raised in A are left out)."""
    from gpu_sc.pic._doublet_null import footprint_genes

    s = sp.csr_matrix(np.array([[9, 8, 0, 0, 5, 5, 9], [7, 9, 1, 0, 5, 5, 9], [0, 0, 9, 8, 5, 5, 0],
                                [0, 1, 8, 9, 5, 5, 0]], dtype=np.float64))  # fmt: skip
    codes, names = np.array([0, 1, 2, 2]), ["G0", "G1", "G2", "G3", "G4", "G5", "MT-X"]
    sides = (np.array([0, 1]), np.array([2]))
    np.testing.assert_array_equal(footprint_genes(s, codes, sides, names, n=3),
                                  [True, True, True, True, False, False, False])  # fmt: skip
    one = footprint_genes(s, codes, sides, names, n=1)
    assert one.sum() == 2 and one[:2].sum() == 1 and one[2:4].sum() == 1


def test_footprint_genes_default_to_100_each_way():
    """footprint_genes' default n: the 100 genes most raised in each population (of 130 raised
    2-fold or more each way)."""
    from gpu_sc.pic._doublet_null import footprint_genes

    a, b = np.full(300, 1.0), np.full(300, 1.0)
    a[:130], b[130:260] = 20.0, 20.0  # genes 0-129 raised in A, 130-259 in B, the rest shared
    s = sp.csr_matrix(np.array([a, a, b, b]))
    mask = footprint_genes(s, np.array([0, 0, 1, 1]), (np.array([0]), np.array([1])), [f"G{i}" for i in range(300)])
    assert mask[:130].sum() == 100 and mask[130:260].sum() == 100 and not mask[260:].any()


def test_null_arguments_without_level_are_warned_of(pbmc):
    """n_null and seed set the null that `level` calls against; without a level they changed
    nothing silently (from an audit): a warning names them, and the result is the same."""
    pics = make_pics(pbmc, 60, kinds=("TB", "T"), b_groups=(DC, MONO))
    want = doublet_test(pics, pbmc, groupby=GROUPBY, inplace=False)
    with pytest.warns(UserWarning, match=r"doublet_test: n_null, seed have no effect here \(used only with level") as seen:
        got = doublet_test(pics, pbmc, groupby=GROUPBY, n_null=50, seed=3, inplace=False)
    assert [w.filename for w in seen if "no effect" in str(w.message)] == [__file__]  # the caller's line
    pd.testing.assert_frame_equal(got, want)
    want = triplet_scan(pics, pbmc, groupby=GROUPBY, min_llr=20, inplace=False)
    with pytest.warns(UserWarning, match=r"triplet_scan: n_null has no effect here \(used only with level"):
        got = triplet_scan(pics, pbmc, groupby=GROUPBY, min_llr=20, n_null=50, inplace=False)
    pd.testing.assert_frame_equal(got, want)


def test_doublet_test_level_warns_of_a_group_of_one_reference_cell(pbmc):
    """As triplet_scan's null: a group of one reference cell has an empty profile beside its
    drawn cell (the null leaves drawn cells out of the profiles), so that cell's LLR is off; the
    doublet test's null said nothing of it (from a mutation round)."""
    pics = make_pics(pbmc, 60, kinds=("TB", "T"), b_groups=(DC, MONO))
    lone = pbmc.copy()
    lone.obs[GROUPBY] = lone.obs[GROUPBY].astype(str)
    dc = np.flatnonzero(lone.obs[GROUPBY] == DC)
    lone.obs.iloc[dc[0], lone.obs.columns.get_loc(GROUPBY)] = "one DC"
    pics.uns["pic"] = {"groups_a": np.array(T_GROUPS), "groups_b": np.array([DC, MONO, "one DC"])}
    with pytest.warns(UserWarning, match=r"doublet_test: groups \['one DC'\] of population B have one reference "
                                         r"cell: a null cell of such a group is scored against an empty profile") as seen:
        doublet_test(pics, lone, groupby=GROUPBY, alpha="fit", level=0.05, n_null=200, inplace=False)
    assert {w.filename for w in seen if "one reference cell" in str(w.message)} == {__file__}  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no lone group: no such warning (nor any other here)
        pics.uns["pic"] = {"groups_a": np.array(T_GROUPS), "groups_b": np.array([DC, MONO])}
        doublet_test(pics, pbmc, groupby=GROUPBY, alpha="fit", level=0.05, n_null=200, inplace=False)



def _tiny_expected_data(group_names=("g", "h"), pic_groups=(("g", "h"), ("h", "g"))):
    """Singlets of `group_names` (two cells each) and one unlabelled cell over 4 genes, and one
    PIC per (A, B) of `pic_groups` at alpha 0.25."""
    s = np.array([[1, 0, 3, 0], [1, 2, 1, 0], [0, 0, 1, 3], [0, 4, 0, 1], [9, 9, 9, 9]], dtype=np.float32)
    labels = [*np.repeat(group_names, 2), None][:5] if len(group_names) == 2 else [group_names[0]] * 4 + [None]
    singlets = ad.AnnData(sp.csr_matrix(s), obs=pd.DataFrame({GROUPBY: pd.Categorical(labels)},
                                                             index=[f"c{i}" for i in range(5)]),
                          var=pd.DataFrame(index=[f"G{i}" for i in range(4)]))  # fmt: skip
    u = np.array([[2, 1, 0, 5], [0, 3, 3, 2]], dtype=np.float32)[: len(pic_groups)]
    obs = pd.DataFrame({"pic_a": [a for a, _ in pic_groups], "pic_b": [b for _, b in pic_groups],
                        "pic_alpha": 0.25, "pic_status": "ok"}, index=[f"p{i}" for i in range(len(pic_groups))])
    pics = ad.AnnData(sp.csr_matrix(u), obs=obs, var=pd.DataFrame(index=singlets.var_names.copy()))
    return pics, singlets, s, u


def test_expected_by_hand_with_a_single_reference_group():
    """One labelled group (every labelled singlet in the first category): each PIC is its
    total times that group's pooled share of each gene, whatever its alpha."""
    pics, singlets, s, u = _tiny_expected_data(("g",), (("g", "g"),))
    expected_expression(pics, singlets, groupby=GROUPBY)
    q = s[:4].sum(0) / s[:4].sum()
    np.testing.assert_allclose(pics.layers["pic_expected"], u.sum(1, keepdims=True) * q, rtol=1e-6)
    np.testing.assert_allclose(pics.layers["pic_expected_a"], 0.25 * u.sum(1, keepdims=True) * q, rtol=1e-6)
    assert list(pics.uns["pic_expected"]["groups"]) == ["g"]


def test_expected_refuses_a_missing_label_even_beside_a_group_named_nan():
    """A used PIC without an A group is an error, also where a reference group is called 'nan'
    (the text of a missing value)."""
    pics, singlets, _, _ = _tiny_expected_data(("nan", "h"), (("nan", "h"), ("h", "nan")))
    expected_expression(pics, singlets, groupby=GROUPBY)  # 'nan' is a group like any other
    pics.obs["pic_a"] = pd.Series([np.nan, "h"], index=pics.obs_names, dtype=object)
    with pytest.raises(ValueError, match="not reference groups"):
        expected_expression(pics, singlets, groupby=GROUPBY)
    pics.obs["pic_a"] = ["nan", " h"]  # names are matched as they are
    with pytest.raises(ValueError, match="not reference groups"):
        expected_expression(pics, singlets, groupby=GROUPBY)


def test_expected_refuses_a_b_group_without_counts_and_reads_only_used_groups():
    pics, singlets, _, _ = _tiny_expected_data()
    singlets.X = sp.csr_matrix(np.where(np.array([[0], [0], [1], [1], [0]]), 0, singlets.X.toarray()))
    pics.obs["pic_a"] = ["g", "g"]  # h (no counts) only as the B group
    with pytest.raises(ValueError, match=r"reference groups without any counts: \['h'\]"):
        expected_expression(pics, singlets, groupby=GROUPBY)
    pics.obs["pic_status"] = ["ok", "no_counts"]
    pics.obs["pic_b"] = pd.Categorical(["g", "h"])  # the unused PIC's h is not read
    expected_expression(pics, singlets, groupby=GROUPBY)
    for key in ("pic_expected", "pic_expected_a", "pic_expected_b"):  # NaN rows in every layer
        assert np.isnan(pics.layers[key][1]).all() and np.isfinite(pics.layers[key][0]).all(), key


def test_expected_gene_mask_is_checked():
    pics, singlets, _, _ = _tiny_expected_data()
    with pytest.raises(ValueError, match="selects no gene"):
        expected_expression(pics, singlets, groupby=GROUPBY, genes=np.zeros(4, bool))
    with pytest.raises(ValueError, match="must have length 4"):
        expected_expression(pics, singlets, groupby=GROUPBY, genes=np.ones(3, bool))
    full = expected_expression(pics, singlets, groupby=GROUPBY, inplace=False)
    every = expected_expression(pics, singlets, groupby=GROUPBY, genes=np.ones(4, bool), inplace=False)
    np.testing.assert_array_equal(every[0].toarray(), full[0])
