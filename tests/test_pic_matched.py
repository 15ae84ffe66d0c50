"""interaction_genes(method="matched"): PICs against matched in-silico doublets.

The exact p-value against brute-force enumeration; a null (PICs simulated from the reference's
own groups, assigned their true pair: nothing induced) gives almost no calls; a gene planted in
one pair is called 'up'; the draws follow the seed; bad input is refused without changing it."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from _helpers import PIC_DC, PIC_T, _load, as_type, t_dc_cells

from gpu_sc.pic import _matched
from gpu_sc.pic._interaction import interaction_genes
from gpu_sc.pic._simulate import simulate_pics

FDR = 0.1


def _enumerated_p(values: np.ndarray) -> float:
    """Two-sided p of the stratified sum by listing every choice of one value per row."""
    sums = np.array([sum(c) for c in itertools.product(*values.tolist())])
    t = values[:, 0].sum()
    return min(1.0, 2 * min((sums >= t).mean(), (sums <= t).mean()))


@pytest.mark.parametrize("seed", range(6))
def test_exact_pvalue_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    values = rng.poisson(rng.uniform(0.2, 3), size=(5, 4))
    values[rng.integers(5)] = 2  # a row whose values all tie adds nothing
    assert _matched.exact_pvalue(values) == pytest.approx(_enumerated_p(values), rel=1e-12)


def test_exact_pvalue_fft_path_agrees(monkeypatch):
    values = np.random.default_rng(0).poisson(4.0, size=(40, 11))
    direct = _matched.exact_pvalue(values)
    monkeypatch.setattr(_matched, "_FFT_FROM", 2)  # every convolution through the FFT
    assert _matched.exact_pvalue(values) == pytest.approx(direct, rel=1e-9, abs=1e-14)


def test_exact_pvalue_is_none_beyond_the_span_limit(monkeypatch):
    monkeypatch.setattr(_matched, "_EXACT_SPAN", 10)
    assert _matched.exact_pvalue(np.arange(44).reshape(4, 11)) is None


@pytest.fixture(scope="module")
def reference_and_null():
    """Reference T + DC cells and 400 PICs simulated from them, assigned their true pair and
    alpha (a null: the PICs are doublets of the reference's own groups)."""

    ref = t_dc_cells(_load("pbmc68k_reduced_counts.h5ad"))
    pics = simulate_pics(ref, groupby="grp", a=PIC_T, b=PIC_DC, n_pics=400, n_umis=800, seed=3)
    pics.obs["pic_a"] = pics.obs["true_a"].astype(str)
    pics.obs["pic_b"] = pics.obs["true_b"].astype(str)
    pics.obs["pic_alpha"] = pics.obs["true_alpha"].astype(float)
    pics.obs["pic_status"] = "ok"
    return ref, pics


def _matched_table(pics, ref, **kw):
    return interaction_genes(pics, ref, groupby="grp", min_pics=10, fdr=FDR, inplace=False, **kw)


def test_null_gives_almost_no_calls(reference_and_null):
    ref, pics = reference_and_null
    tab = _matched_table(pics, ref)
    assert tab["tested"].sum() > 200
    assert tab["significant"].sum() <= 2  # BH at 0.1 over hundreds of null genes
    p = tab.loc[tab["tested"], "pvalue"]
    assert (p < 0.05).mean() < 0.1  # no pile-up of small p-values either
    assert set(tab["direction"]) <= {"up", "down", ""}


def test_planted_gene_is_called_up(reference_and_null):
    ref, pics = reference_and_null
    pics = pics.copy()
    pair = (pics.obs["pic_a"] == PIC_T[1]) & (pics.obs["pic_b"] == PIC_DC[0])
    rows = np.flatnonzero(pair.to_numpy())
    assert rows.size >= 10
    totals = np.asarray(ref.X.sum(axis=0)).ravel()
    j = int(np.flatnonzero((totals > 100) & (totals < 400))[0])
    x = sp.csr_matrix(pics.X, dtype=np.float32).tolil()
    for r in rows:
        x[r, j] = x[r, j] + 3
    pics.X = sp.csr_matrix(x)
    tab = _matched_table(pics, ref)
    gene = pics.var_names[j]
    assert tab.loc[gene, "significant"] and tab.loc[gene, "direction"] == "up"
    assert tab.loc[tab["tested"], "pvalue"].idxmin() == gene
    assert tab["significant"].sum() <= 3


def test_seed_fixes_the_draws(reference_and_null):
    ref, pics = reference_and_null
    a = _matched_table(pics, ref, seed=5)
    b = _matched_table(pics, ref, seed=5)
    c = _matched_table(pics, ref, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["expected"], c["expected"])


def test_uns_holds_the_test(reference_and_null):
    ref, pics = reference_and_null
    pics = pics.copy()
    interaction_genes(pics, ref, groupby="grp", min_pics=10)
    out = pics.uns["pic_interaction"]
    assert out["params"]["method"] == "matched" and out["params"]["n_matched"] == 10
    assert out["z"].shape == (len(out["groups"]), pics.n_vars)
    assert (out["groups"]["inflation"] >= 1).all()


def test_bad_input_is_refused_and_changes_nothing(reference_and_null):
    ref, pics = reference_and_null
    pics = pics.copy()
    before = pics.obs.copy(), pics.X.copy()
    with pytest.raises(TypeError, match="needs the singlets and their groupby column"):
        interaction_genes(pics)
    with pytest.raises(TypeError, match="needs the singlets"):
        interaction_genes(pics, ref)
    with pytest.raises(ValueError, match="method must be one of"):
        interaction_genes(pics, ref, groupby="grp", method="wilcoxon")
    with pytest.raises((TypeError, ValueError), match="n_matched"):
        interaction_genes(pics, ref, groupby="grp", n_matched=0)
    with pytest.raises(ValueError, match="same var_names"):
        interaction_genes(pics, ref[:, :100], groupby="grp")
    pd.testing.assert_frame_equal(pics.obs, before[0])
    assert (before[1] != pics.X).nnz == 0 and "pic_interaction" not in pics.uns


@pytest.mark.parametrize("kind", ["cupyx_csr"])
def test_gpu_input_gives_the_cpu_table(device, reference_and_null, kind):
    ref, pics = reference_and_null
    gpu, gref = pics.copy(), ref.copy()
    gpu.X = as_type(sp.csr_matrix(gpu.X), kind)
    gref.X = as_type(sp.csr_matrix(gref.X), kind)
    pd.testing.assert_frame_equal(_matched_table(gpu, gref), _matched_table(pics, ref))


def test_reference_variance_is_the_spread_of_the_doublets_expectation():
    """The variance `reference_variance` adds is that of the doublets' expected sum over fresh
    draws of the reference's cells (Monte Carlo over 1,500 references of 2 x 30 cells)."""
    rng = np.random.default_rng(0)
    n_cells, n_genes, n_pics, n_matched = 30, 12, 40, 10
    base = rng.uniform(0.5, 20, size=(2, n_genes))
    codes = np.repeat([0, 1], n_cells)
    alpha, depth = rng.uniform(0.2, 0.8, n_pics), rng.integers(300, 900, n_pics).astype(float)
    n_a = np.rint(alpha * depth)
    predicted, drawn = [], []
    for _ in range(1500):
        ref = sp.csr_matrix(rng.poisson(rng.gamma(1.5, base[codes] / 1.5)).astype(float))
        predicted.append(_matched.reference_variance(ref, codes, np.zeros(n_pics, int), np.ones(n_pics, int),
                                                     alpha, depth, np.zeros(n_pics, int), 1, n_matched)[0])
        share = ref.toarray() / ref.sum(axis=1)
        mean = np.stack([share[codes == k].mean(axis=0) for k in (0, 1)])
        drawn.append(n_matched / (n_matched + 1) * (n_a.sum() * mean[0] + (depth - n_a).sum() * mean[1]))
    ratio = np.mean(predicted, axis=0) / np.var(drawn, axis=0, ddof=1)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    two = _matched.reference_variance(ref, codes, np.zeros(n_pics, int), np.ones(n_pics, int), alpha, depth,
                                      np.repeat([0, 1], n_pics // 2), 2, n_matched)  # fmt: skip
    assert np.all(two.sum(axis=0) < predicted[-1])  # shared draws add up squared: split, they add less


def test_widen_adds_the_reference_variance():
    p = np.array([[1e-6, 0.2, np.nan]])
    var, var_ref = np.array([[1.0, 1.0, 0.0]]), np.array([[3.0, 0.0, 1.0]])
    got = _matched.widen(p, var, var_ref)
    assert got[0, 0] == pytest.approx(2 * stats.norm.sf(stats.norm.isf(5e-7) / 2))
    assert got[0, 1] == pytest.approx(0.2) and np.isnan(got[0, 2])
