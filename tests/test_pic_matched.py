"""interaction_genes(method="matched"): PICs against matched in-silico doublets.

The exact p-value against brute-force enumeration; a null (PICs simulated from the reference's
own groups, assigned their true pair: nothing induced) gives almost no calls; a gene planted in
one pair is called 'up'; the draws follow the seed; bad input is refused without changing it."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from _helpers import PIC_DC, PIC_T, _load, as_type, t_dc_cells

from gpu_sc.pic import _matched
from gpu_sc.pic._expected import expected_expression
from gpu_sc.pic._interaction import interaction_genes
from gpu_sc.pic._umi_draws import name_keys
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


@pytest.mark.parametrize("seed", range(4))
def test_exact_pvalue_of_repeated_sets_matches_enumeration(seed):
    """A sparse gene's sets repeat (most PICs: ten zeros and a one, in any order); each kind is
    convolved with itself by squaring, which must give the enumerated sum's distribution."""
    rng = np.random.default_rng(seed)
    common = np.array([0, 0, 1])
    rows = [rng.permutation(common) for _ in range(7)] + [rng.poisson(1.0, 3) for _ in range(4)]
    values = np.array(rows)
    values[0] = [1, 0, 0]  # a PIC holding the count
    assert _matched.exact_pvalue(values) == pytest.approx(_enumerated_p(values), rel=1e-12)


def test_exact_pvalue_fft_path_agrees(monkeypatch):
    values = np.random.default_rng(0).poisson(4.0, size=(40, 11))
    direct = _matched.exact_pvalue(values)
    monkeypatch.setattr(_matched, "_FFT_FROM", 2)  # every convolution through the FFT
    assert _matched.exact_pvalue(values) == pytest.approx(direct, rel=1e-9, abs=1e-14)


def test_sets_of_all_genes_are_gathered_as_gene_by_gene():
    """`add_sets` gathers many genes' PIC sets at once (sparse genes whose set histograms fit
    one integer together, the others gene by gene): each gene's kinds, observed sum and span
    are those of its sets taken one by one."""
    rng = np.random.default_rng(7)
    pics, m = 40, 6
    scales = [0.2, 0.5, 1, 3, 20, 60]  # from sparse genes to counts of span > 17 (no digits)
    counts = np.stack([rng.poisson(s, (pics, m + 1)) for s in scales], axis=2)
    counts[:5, :, 0] = 4  # sets whose values tie
    sums = [_matched.ExactSum() for _ in scales]
    _matched.add_sets(sums, counts[:25])
    _matched.add_sets(sums, counts[25:])  # in two chunks
    for j, total in enumerate(sums):
        kinds, observed, span = {}, 0, 0
        for row in counts[:, :, j]:
            lo, hi = row.min(), row.max()
            span += int(hi - lo)
            if hi > lo:
                observed += int(row[0] - lo)
                key = np.bincount(row - lo).astype(np.int64).tobytes()
                kinds[key] = kinds.get(key, 0) + 1
        assert (total.kinds, total.observed, total.span) == (kinds, observed, span), scales[j]


def test_exact_pvalue_is_none_beyond_the_span_limit(monkeypatch):
    monkeypatch.setattr(_matched, "_EXACT_SPAN", 10)
    assert _matched.exact_pvalue(np.arange(44).reshape(4, 11)) is None


@pytest.fixture(scope="module")
def reference_and_null():
    """Reference T + DC cells and 400 PICs simulated from them, assigned their true pair and
    alpha (a null: the PICs are doublets of the reference's own groups)."""

    ref = t_dc_cells(_load("pbmc68k_reduced_counts.h5ad"))
    pics = simulate_pics(ref, groupby="grp", a=PIC_T, b=PIC_DC, n_pics=400, n_umis=800, seed=3)
    return ref, _as_assigned_truly(pics)


def _matched_table(pics, ref, **kw):
    return interaction_genes(pics, ref, groupby="grp", min_pics=10, fdr=FDR, inplace=False, **kw)


def _as_assigned_truly(pics):
    pics.obs["pic_a"] = pics.obs["true_a"].astype(str)
    pics.obs["pic_b"] = pics.obs["true_b"].astype(str)
    pics.obs["pic_alpha"] = pics.obs["true_alpha"].astype(float)
    pics.obs["pic_status"] = "ok"
    return pics


@pytest.mark.parametrize("split", [0, 1, 2])
def test_null_gives_almost_no_calls(reference_and_null, split):
    """Against the reference the PICs came from (in sample) and, harder and as real data are,
    against a reference that holds none of their cells: 30 % of the cells held out as the
    sources, each in at most 3 PICs (more reuse of few held-out cells makes their own genes
    a shared 'programme': 0-6 calls at about 7 uses each)."""
    ref, pics = reference_and_null
    tables = [_matched_table(pics, ref)]
    cells = t_dc_cells(_load("pbmc68k_reduced_counts.h5ad"))
    src = np.random.default_rng(split).random(cells.n_obs) < 0.3
    held = simulate_pics(cells[src], groupby="grp", a=PIC_T, b=PIC_DC, n_pics=400, n_umis=800, seed=3, max_uses=3)
    tables.append(_matched_table(_as_assigned_truly(held), cells[~src].copy()))
    for tab in tables:
        assert tab["tested"].sum() > 200
        assert tab["significant"].sum() <= 2  # BH at 0.1 over hundreds of null genes
        p = tab.loc[tab["tested"], "pvalue"]
        assert (p < 0.05).mean() < 0.1  # no pile-up of small p-values either
        assert set(tab["direction"]) <= {"up", "down", ""}


def _with_counts(pics, rows, j, counts):
    """A copy of `pics` with `counts` UMIs added to gene `j` in `rows`."""
    x = sp.csr_matrix(pics.X, dtype=np.float32).tolil()
    for r in rows:
        x[r, j] = x[r, j] + counts
    out = pics.copy()
    out.X = sp.csr_matrix(x)
    return out


def _gene_with_total(ref, lo, hi) -> int:
    """The first gene whose total over the reference lies in (lo, hi)."""
    totals = np.asarray(ref.X.sum(axis=0)).ravel()
    return int(np.flatnonzero((totals > lo) & (totals < hi))[0])


def test_planted_gene_is_called_up(reference_and_null):
    ref, pics = reference_and_null
    rows = np.flatnonzero(((pics.obs["pic_a"] == PIC_T[1]) & (pics.obs["pic_b"] == PIC_DC[0])).to_numpy())
    assert rows.size >= 10
    j = _gene_with_total(ref, 100, 400)
    pics = _with_counts(pics, rows, j, 3)
    tab = _matched_table(pics, ref)
    gene = pics.var_names[j]
    assert tab.loc[gene, "significant"] and tab.loc[gene, "direction"] == "up"
    assert tab.loc[tab["tested"], "pvalue"].idxmin() == gene
    assert tab["significant"].sum() <= 3


def test_doublet_groups_follow_the_posterior():
    post = sp.csr_matrix(np.array([[0.2, 0.8, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.25, 0.25]]))
    pair_codes = (np.array([0, 1, 2]), np.array([10, 11, 12]))
    assigned = (np.full(4, 7), np.full(4, 17))
    a, b = _matched.doublet_groups(*assigned, post, pair_codes, 20_000, np.arange(4, dtype=np.uint64), 0)
    shares = np.stack([np.bincount(row, minlength=8)[:3] / row.size for row in a])
    np.testing.assert_allclose(shares[[0, 2, 3]], post.toarray()[[0, 2, 3]], atol=0.015)
    assert set(a[1]) == {7} and set(b[1]) == {17}  # no posterior mass: the assignment
    assert np.array_equal(b[[0, 2, 3]] - 10, a[[0, 2, 3]])  # a and b of one drawn pair
    a0, b0 = _matched.doublet_groups(*assigned, None, None, 3)
    assert a0.shape == (4, 3) and set(a0.ravel()) == {7} and set(b0.ravel()) == {17}


def test_least_significant_takes_each_genes_larger_p_value():
    first = {"pvalue": np.array([0.01, 0.5, np.nan]), "chi2": np.array([9.0, 1.0, np.nan]),
             "df": np.array([2.0, 2.0, np.nan]), "direction": np.array([1.0, -1.0, 0.0]),
             "z": np.array([[3.0, -1.0, np.nan]]), "inflation": np.array([1.2])}
    second = {"pvalue": np.array([0.2, 0.1, 0.3]), "chi2": np.array([2.0, 4.0, 1.0]),
              "df": np.array([1.0, 1.0, 1.0]), "direction": np.array([1.0, 1.0, -1.0]),
              "z": np.array([[1.5, 2.0, -1.0]]), "inflation": np.array([1.0])}
    out = _matched.least_significant(first, second)
    np.testing.assert_array_equal(out["pvalue"], [0.2, 0.5, 0.3])
    np.testing.assert_array_equal(out["direction"], [1.0, -1.0, -1.0])
    np.testing.assert_array_equal(out["z"], [[1.5, -1.0, -1.0]])
    assert out["inflation"][0] == 1.2


def _with_posterior(pics, groups_a, groups_b, post):
    out = pics.copy()
    out.obsm["pic_pair_posterior"] = sp.csr_matrix(post)
    out.uns["pic"] = {"groups_a": list(groups_a), "groups_b": list(groups_b)}
    return out


def _one_hot(pics, groups_a, groups_b):
    ia = pd.Index(groups_a).get_indexer(pics.obs["pic_a"].astype(str))
    ib = pd.Index(groups_b).get_indexer(pics.obs["pic_b"].astype(str))
    n = pics.n_obs
    return sp.csr_matrix((np.ones(n), (np.arange(n), ia + len(groups_a) * ib)),
                         shape=(n, len(groups_a) * len(groups_b)))  # fmt: skip


def test_a_certain_posterior_gives_the_assigned_pairs_table(reference_and_null):
    """Doublet pairs are drawn from a stream of their own: a posterior sure of the assigned
    pair draws the same cells, so the table is the assigned pairs' to the bit."""
    ref, pics = reference_and_null
    certain = _with_posterior(pics, PIC_T, PIC_DC, _one_hot(pics, PIC_T, PIC_DC))
    pd.testing.assert_frame_equal(_matched_table(certain, ref), _matched_table(pics, ref))
    pd.testing.assert_frame_equal(_matched_table(certain, ref, pair_uncertainty=False), _matched_table(pics, ref))


def test_picseq_pairs_are_warned_of(reference_and_null):
    """picseq's pair posterior is its likelihood's softmax (over-confident): on the hgmm barnyard
    the matched test on its pairs called 28-93 genes where nothing was induced (ml: 0-1), so
    the test says so; the table is the same."""
    ref, pics = reference_and_null
    picseq = pics.copy()
    picseq.uns["pic"] = {"method": "picseq"}
    with pytest.warns(UserWarning, match=r"method='picseq'.*not calibrated.*method='ml'"):
        got = _matched_table(picseq, ref, pair_uncertainty=False)
    pd.testing.assert_frame_equal(got, _matched_table(pics, ref, pair_uncertainty=False))


def test_pair_uncertainty_keeps_misassigned_groups_genes_from_being_called(reference_and_null):
    """Null PICs, all of one T group's called as another: against the assigned pair's doublets
    the genes telling the two apart read as induced; against doublets drawn from a posterior
    that splits those PICs between the two pairs they do not. (Measured over six draws of the
    PICs, four of the doublets each: 6-11 calls against the assigned pairs, 0 with the
    posterior. With half the group's PICs moved, 0-16 over four doublet draws together.)"""
    ref, pics = reference_and_null
    wrong = pics.copy()
    moved = np.flatnonzero((wrong.obs["pic_a"] == PIC_T[1]).to_numpy())
    col = wrong.obs["pic_a"].astype(str).to_numpy().copy()
    col[moved] = PIC_T[2]
    wrong.obs["pic_a"] = col
    post = _one_hot(wrong, PIC_T, PIC_DC).tolil()
    ib = pd.Index(PIC_DC).get_indexer(wrong.obs["pic_b"].astype(str))
    for r in moved:
        post[r, :] = 0
        post[r, 2 + len(PIC_T) * ib[r]] = 0.5
        post[r, 1 + len(PIC_T) * ib[r]] = 0.5  # the true group
    wrong = _with_posterior(wrong, PIC_T, PIC_DC, post.tocsr())
    hard = _matched_table(wrong, ref, pair_uncertainty=False)["significant"].sum()
    soft = _matched_table(wrong, ref)["significant"].sum()
    assert moved.size >= 10 and hard >= 3 and soft <= 1, (moved.size, hard, soft)


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
    pics.uns["pic"] = {"groups_a": list(PIC_T), "groups_b": list(PIC_DC)}
    pics.obsm["pic_pair_posterior"] = sp.csr_matrix((pics.n_obs, 3))
    with pytest.raises(ValueError, match="pair_uncertainty=False"):
        interaction_genes(pics, ref, groupby="grp")
    pics.obsm["pic_pair_posterior"] = sp.csr_matrix((pics.n_obs, 4 * len(PIC_DC)))
    pics.uns["pic"] = {"groups_a": ["x0", "x1", "x2", "x3"], "groups_b": list(PIC_DC)}
    with pytest.warns(UserWarning, match=r"groups \['x0'.*assigned pairs only"):
        interaction_genes(pics, ref, groupby="grp", min_pics=10, inplace=False)
    del pics.uns["pic"]  # as anndata.concat leaves it: the posterior kept, uns dropped (silent before)
    with pytest.warns(UserWarning, match=r"a pair posterior .* but no uns\['pic'\].*assigned pairs only"):
        interaction_genes(pics, ref, groupby="grp", min_pics=10, inplace=False)
    del pics.obsm["pic_pair_posterior"]
    for kw, err in (({"fdr": "0.1"}, ValueError), ({"min_pics": "3"}, TypeError), ({"min_pics": 2.5}, TypeError),
                    ({"min_counts": -1}, ValueError)):  # fmt: skip
        with pytest.raises(err, match=list(kw)[0]):
            interaction_genes(pics, ref, groupby="grp", **kw)
    with pytest.raises(ValueError, match="condition_key 'pic_a' is one of groupby_keys"):
        interaction_genes(pics, ref, groupby="grp", condition_key="pic_a")
    # pandas' or Python's bare errors before, and an OverflowError in the doublets' draws (an audit)
    for kw, err, match in (({"groupby_keys": ["pic_a", "pic_b", "pic_a"]}, ValueError, r"names \['pic_a'\] more than once"),
                           ({"condition_key": ["pic_a"]}, TypeError, "condition_key must be one column name"),
                           ({"groupby_keys": 5}, TypeError, r"groupby_keys and condition_key must be one column name"),
                           ({"replicate_key": 1}, ValueError, "replicate_key must be a column name of pics.obs"),
                           ({"seed": 2**63}, ValueError, r"seed must be below 2\*\*32")):  # fmt: skip
        with pytest.raises(err, match=match):
            interaction_genes(pics, ref, groupby="grp", **kw)
    clash = pics.copy()  # two groups, one label: two effect columns of one name before
    even = np.arange(clash.n_obs) % 2 == 0
    clash.obs["k1"], clash.obs["k2"] = np.where(even, "x", "x|y"), np.where(even, "y|z", "z")
    with pytest.raises(ValueError, match=r"groups \('x', 'y\|z'\) and \('x\|y', 'z'\) are both labelled 'x\|y\|z'"):
        interaction_genes(clash, ref, groupby="grp", groupby_keys=["k1", "k2"])
    emptied = ref.copy()  # a category no singlet holds is no reference group
    emptied.obs["grp"] = emptied.obs["grp"].astype("category")
    emptied.obs.loc[emptied.obs["grp"] == PIC_DC[0], "grp"] = np.nan
    for frame in (emptied, emptied[np.argsort(emptied.obs["grp"].cat.codes.to_numpy())[::-1]]):
        with pytest.raises(ValueError, match=rf"pic_b'\] values that are not reference groups \(e.g. \['{PIC_DC[0]}'\]"):
            interaction_genes(pics, frame, groupby="grp")
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
        predicted.append(_matched.reference_variance(ref, codes, np.zeros((n_pics, 1), int), np.ones((n_pics, 1), int),
                                                     alpha, depth, np.zeros(n_pics, int), 1, n_matched)[0])
        share = ref.toarray() / ref.sum(axis=1)
        mean = np.stack([share[codes == k].mean(axis=0) for k in (0, 1)])
        drawn.append(n_matched / (n_matched + 1) * (n_a.sum() * mean[0] + (depth - n_a).sum() * mean[1]))
    ratio = np.mean(predicted, axis=0) / np.var(drawn, axis=0, ddof=1)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    two = _matched.reference_variance(ref, codes, np.zeros((n_pics, 1), int), np.ones((n_pics, 1), int), alpha, depth,
                                      np.repeat([0, 1], n_pics // 2), 2, n_matched)  # fmt: skip
    assert np.all(two.sum(axis=0) < predicted[-1])  # shared draws add up squared: split, they add less


def test_widen_adds_the_reference_variance():
    p = np.array([[1e-6, 0.2, np.nan]])
    var, var_ref = np.array([[1.0, 1.0, 0.0]]), np.array([[3.0, 0.0, 1.0]])
    got = _matched.widen(p, var, var_ref)
    assert got[0, 0] == pytest.approx(2 * stats.norm.sf(stats.norm.isf(5e-7) / 2))
    assert got[0, 1] == pytest.approx(0.2) and np.isnan(got[0, 2])


def _residual_spread(resid, expected, groups, units):
    """Cluster-robust variance of each group's residual sum around a shift in proportion to the
    doublets' mean, written out loop by loop."""
    out = []
    for k in np.unique(groups):
        r, e, u = resid[groups == k], expected[groups == k], units[groups == k]
        sums = np.stack([r[u == v].sum(axis=0) for v in np.unique(u)])
        weights = np.stack([e[u == v].sum(axis=0) for v in np.unique(u)])
        b = r.sum(axis=0) / e.sum(axis=0)
        out.append(len(sums) / (len(sums) - 1) * ((sums - b * weights) ** 2).sum(axis=0))
    return np.stack(out)


@pytest.mark.parametrize("n_units", [5, 60])
def test_stratified_sums_spread_is_the_units_variance(n_units):
    rng = np.random.default_rng(1)
    n, m, genes = 60, 4, 7
    obs = sp.csr_matrix(rng.poisson(1.5, (n, genes)).astype(float))
    doublets = sp.csr_matrix(rng.poisson(1.5, (n * m, genes)).astype(float))
    groups = rng.integers(0, 3, n)
    units = rng.permutation(n) if n_units == n else rng.integers(0, n_units, n)  # 60: a PIC a unit
    sums = _matched.stratified_sums(obs, doublets, groups, 3, m, units)
    stack = np.concatenate([obs.toarray()[:, None], doublets.toarray().reshape(n, m, genes)], axis=1)
    resid = stack[:, 0] - stack.mean(axis=1)
    np.testing.assert_allclose(sums.num, np.stack([resid[groups == k].sum(axis=0) for k in range(3)]))
    for got, per_pic in ((sums.var, stack.var(axis=1)), (sums.mean, stack[:, 1:].mean(axis=1))):
        np.testing.assert_allclose(got, np.stack([per_pic[groups == k].sum(axis=0) for k in range(3)]), rtol=1e-12)
    np.testing.assert_allclose(sums.spread, _residual_spread(resid, stack[:, 1:].mean(axis=1), groups, units),
                               rtol=1e-10)  # fmt: skip
    assert list(sums.n_units) == [len(np.unique(units[groups == k])) for k in range(3)]
    p = _matched.unit_pvalues(sums.num, sums.spread, sums.n_units)
    t = np.abs(sums.num) / np.sqrt(sums.spread)
    np.testing.assert_allclose(p, 2 * stats.t.sf(t, (sums.n_units - 1)[:, None]))
    assert (_matched.unit_pvalues(sums.num, sums.spread, np.ones(3)) == 1).all()  # one unit: no test
    plain = _matched.stratified_sums(obs, doublets, groups, 3, m)
    assert plain.spread is None and np.array_equal(plain.num, sums.num) and np.array_equal(plain.var, sums.var)
    # integer numerators, one division: the same sums whatever the order of the PICs
    order = rng.permutation(n)
    drows = (order[:, None] * m + np.arange(m)).ravel()
    moved = _matched.stratified_sums(obs[order], doublets[drows], groups[order], 3, m)
    assert all(np.array_equal(getattr(moved, f), getattr(plain, f)) for f in ("num", "var", "mean"))


def test_replicate_key_judges_a_group_by_its_units(reference_and_null):
    """Eight donors: one donor's own gene in all its PICs reads as induced PIC by PIC, and as a
    donor, not a contact, with replicate_key; a gene raised in every PIC (all donors, all pairs)
    is still found, though with 8 units a group its evidence is 8 numbers: the same gene in one
    pair's 26 PICs alone is not (p about 1e-3 there, 1e-15 PIC by PIC)."""
    ref, pics = reference_and_null
    pics = pics.copy()
    pics.obs["donor"] = pd.Categorical(np.random.default_rng(0).integers(0, 8, pics.n_obs).astype(str))
    j = _gene_with_total(ref, 0, 5)  # a gene the reference nearly lacks
    donor = _with_counts(pics, np.flatnonzero((pics.obs["donor"] == "0").to_numpy()), j, 4)
    gene = pics.var_names[j]
    assert _matched_table(donor, ref).loc[gene, "significant"]
    tab = _matched_table(donor, ref, replicate_key="donor")
    assert tab.loc[gene, "pvalue"] > 0.1 and tab["significant"].sum() <= 2
    k = _gene_with_total(ref, 100, 400)
    tab = _matched_table(_with_counts(pics, np.arange(pics.n_obs), k, 3), ref, replicate_key="donor")
    assert tab.loc[pics.var_names[k], "significant"] and tab.loc[pics.var_names[k], "direction"] == "up"
    assert tab["significant"].sum() <= 3


def test_replicate_key_is_checked(reference_and_null):
    ref, pics = reference_and_null
    pics = pics.copy()
    with pytest.raises(KeyError, match="'mouse' is not a column"):
        _matched_table(pics, ref, replicate_key="mouse")
    with pytest.raises(ValueError, match="needs method='matched'"):
        interaction_genes(pics, method="chi2", replicate_key="pic_a")
    with pytest.raises(ValueError, match=r"a column name of pics.obs \(one column\), got"):
        _matched_table(pics, ref, replicate_key=["pic_a", "pic_b"])
    pics.obs["mouse"] = np.where(np.arange(pics.n_obs) < 5, None, "m1")
    with pytest.raises(ValueError, match="missing for 5 PICs"):
        _matched_table(pics, ref, replicate_key="mouse")


def test_replicate_key_of_one_unit_a_group_is_refused_or_warned(reference_and_null):
    """A group drawn from one unit can call nothing: every group one unit (the condition used
    as the units too) is refused before the test, some such groups are named in a warning;
    before, every p-value came out 1 without a word (an audit)."""
    ref, pics = reference_and_null
    pics = pics.copy()
    pics.obs["sample"] = np.where(np.arange(pics.n_obs) % 2, "s1", "s2")
    before = pics.copy()
    with pytest.raises(ValueError, match="every tested group's PICs come from one unit of replicate_key 'sample'"):
        interaction_genes(pics, ref, groupby="grp", min_pics=5, condition_key="sample", replicate_key="sample")
    pics.obs["mouse"] = "m0"
    with pytest.raises(ValueError, match="one unit of replicate_key 'mouse'"):
        _matched_table(pics, ref, replicate_key="mouse")
    assert "pic_interaction" not in pics.uns and pics.X.nnz == before.X.nnz
    one = pics.obs["pic_a"].astype(str) == PIC_T[0]  # that A group's PICs all of one mouse
    pics.obs["mouse"] = np.where(one, "m0", np.where(np.arange(pics.n_obs) % 2, "m1", "m2"))
    with pytest.warns(UserWarning, match=r"group\(s\) have PICs of one unit of replicate_key 'mouse'") as got:
        tab = _matched_table(pics, ref, replicate_key="mouse")
    named = [str(w.message) for w in got if "one unit" in str(w.message)][0]
    assert all((PIC_T[0] in name) == (name in named) for name in (f"{a}|{b}" for a in PIC_T for b in PIC_DC))
    assert tab["tested"].any()


def test_key_added_and_pair_uncertainty_are_checked(reference_and_null):
    """key_added must not replace deconvolve's uns['pic'] (the frequency steps then failed with a
    bare KeyError) nor be a non-string (h5ad writing failed later); pair_uncertainty is a bool
    ('no' ran as True)."""
    ref, pics = reference_and_null
    pics = pics.copy()
    for bad in ("pic", 5, "", "pic_qc", "pic_pair_abundance", "pic_expected"):  # (the last: the expected layer's)
        with pytest.raises(ValueError, match="key_added must be a non-empty string other than 'pic', 'pic_qc'"):
            interaction_genes(pics, ref, groupby="grp", min_pics=10, key_added=bad)
    with pytest.raises(TypeError, match="pair_uncertainty must be True or False, got 'no'"):
        _matched_table(pics, ref, pair_uncertainty="no")
    assert "pic_interaction" not in pics.uns


@pytest.mark.parametrize("want", [0, 1, 10, 50, 99, 100, 150])
def test_umi_draws_are_hypergeometric(want):
    """A part (a PIC's member, a matched doublet's cell, a down-sampled PIC) takes `want` UMIs of
    its cell without replacement (the multivariate hypergeometric: the mean and variance of each
    gene's count, both branches: the kept slots drawn, or the dropped), all of them at `want` =
    total, none at 0, and with replacement (multinomial) beyond; the same seed, the same draws."""
    from gpu_sc.pic._umi_draws import draw_parts

    c = np.array([5, 1, 0, 12, 3, 40, 2, 7, 1, 29])
    ref = sp.csr_matrix(np.vstack([np.zeros_like(c), c]).astype(float))  # row 1 the cell
    n, total = 20000, c.sum()
    parts = (np.ones(n, np.int64), np.full(n, want))
    cols, vals, lens = draw_parts(ref.indptr, ref.indices, ref.data.astype(np.int64), ref.sum(axis=1).A1, *parts, seed=3)
    drawn = sp.csr_matrix((vals, (np.repeat(np.arange(n), lens), cols)), shape=(n, c.size)).toarray()
    assert (drawn.sum(axis=1) == want).all() and not drawn[:, c == 0].any()
    p = c / total
    var = want * p * (1 - p) * ((total - want) / (total - 1) if want <= total else 1.0)
    genes = (c > 0) & (var > 0)
    if genes.any():
        z = (drawn.mean(axis=0) - want * p)[genes] / np.sqrt(var[genes] / n)
        assert np.abs(z).max() < 4.5
        wide = genes & (var > 0.1)  # rarer events: the variance's own noise is wider than the test
        np.testing.assert_allclose(drawn.var(axis=0)[wide], var[wide], rtol=0.1)
    else:
        assert (drawn == (c if want else 0)).all()
    again = draw_parts(ref.indptr, ref.indices, ref.data.astype(np.int64), ref.sum(axis=1).A1, *parts, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((cols, vals, lens), again, strict=True))


def test_sums_on_the_gpu_are_the_hosts(reference_and_null, device):
    """PICs on the GPU: the stratified sums are taken there (integer numerators: the same to the
    bit in any order), with and without units, and the table is the host's."""
    import anndata as ad

    import gpu_sc as gsc
    from gpu_sc._backend import is_gpu
    from gpu_sc.pic._matched import stratified_sums

    ref, pics = reference_and_null
    gpu = gsc.get.to_gpu(pics, copy=True)
    assert is_gpu(gpu.X)
    pd.testing.assert_frame_equal(_matched_table(gpu, ref), _matched_table(pics, ref))
    rng = np.random.default_rng(5)
    n, m, genes = 60, 4, 30
    obs = sp.csr_matrix(rng.poisson(0.8, (n, genes)).astype(float))
    doublets = sp.csr_matrix(rng.poisson(0.6, (n * m, genes)).astype(float))
    groups, units = rng.integers(0, 3, n), rng.integers(0, 5, n)
    on_gpu = gsc.get.to_gpu(ad.AnnData(obs), copy=True).X
    for u in (None, units):
        host = stratified_sums(obs, doublets, groups, 3, m, u)
        dev = stratified_sums(on_gpu, doublets, groups, 3, m, u)
        for field in _SUMS_FIELDS:
            a, b = getattr(host, field), getattr(dev, field)
            assert (a is None and b is None) or (type(b) is np.ndarray and np.array_equal(a, b)), field


def test_umi_draws_do_not_depend_on_how_parts_are_split_between_threads():
    """Each part's generator is keyed by the seed and the part's index: the same draws whether
    the parts run as one sequence or in runs of any size, and other draws for another seed."""
    from gpu_sc.pic._umi_draws import draw_parts

    rng = np.random.default_rng(2)
    x = sp.csr_matrix(rng.poisson(3, (40, 300)).astype(float))
    cells, wants = rng.integers(0, 40, 500), rng.integers(0, 1500, 500)  # some beyond a cell's total
    args = (x.indptr, x.indices, x.data, x.sum(axis=1).A1, cells, wants)
    one = draw_parts(*args, seed=9, runs=1)
    for runs in (2, 3, 7, 499, 500):
        assert all(np.array_equal(a, b) for a, b in zip(one, draw_parts(*args, seed=9, runs=runs), strict=True))
    other = draw_parts(*args, seed=10, runs=3)
    assert not np.array_equal(one[1], other[1])


def test_umi_draws_read_a_large_reference_in_place():
    """Drawing a few parts from a reference of many stored counts copies none of its arrays (a
    reference of a million cells would be gigabytes): the draws' own allocations are those of
    the parts, and the counts of a float32 matrix with int32 indices are the float64 one's."""
    import tracemalloc

    from gpu_sc.pic._umi_draws import draw_rows

    x = sp.random(20000, 2000, density=0.05, format="csr", dtype=np.float32, random_state=0)
    x.data = np.ceil(x.data * 9)
    cells, wants = np.array([3, 17, 19999]), np.array([50, 5000, 10])
    draw_rows(x, cells, wants, np.arange(3), 3, seed=1)  # compiled before measuring
    tracemalloc.start()
    small = draw_rows(x, cells, wants, np.arange(3), 3, seed=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.indices.dtype == np.int32 and peak < x.data.nbytes / 4, (peak, x.data.nbytes)
    wide = draw_rows(sp.csr_matrix(x, dtype=np.float64), cells, wants, np.arange(3), 3, seed=1)
    assert (small != wide).nnz == 0 and small.sum(axis=1).A1.tolist() == [50, 5000, 10]


_SUMS_FIELDS = ("num", "var", "mean", "spread", "n_units")


def test_chunked_doublets_give_the_same_sums_and_exact_pvalues(monkeypatch):
    """The PICs' doublets are held a chunk at a time: the sums (integer numerators) and the exact
    p-values (set kinds gathered over the chunks) are those of all the doublets at once, and a
    chunk drawn again for the second pass is the chunk drawn for the first."""
    rng = np.random.default_rng(4)
    n, m, genes = 90, 5, 12
    obs = sp.csr_matrix(rng.poisson(0.6, (n, genes)).astype(float))
    full = sp.csr_matrix(rng.poisson(0.4, (n * m, genes)).astype(float))
    groups, units = rng.integers(0, 3, n), rng.integers(0, 7, n)
    monkeypatch.setattr(_matched, "_CHUNK_PICS", 16)
    chunked = _matched.Doublets(lambda s, e: full[s * m:e * m], n, m)
    assert len(chunked.bounds) == 6
    whole = _matched.Doublets.given(full, m)
    a = _matched.stratified_sums(obs, chunked, groups, 3, m, units)
    b = _matched.stratified_sums(obs, whole, groups, 3, m, units)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in _SUMS_FIELDS)
    z = np.full((3, genes), 3.0)  # every (group, gene) exactly
    tested = np.ones(genes, bool)
    np.testing.assert_array_equal(_matched.exact_pvalues(z, obs, chunked, groups, tested),
                                  _matched.exact_pvalues(z, obs, whole, groups, tested))  # fmt: skip


def test_doublets_drawn_again_are_the_same(reference_and_null, monkeypatch):
    """Several chunks: drawn identically on a second pass, and as one chunk draws them (each
    PIC's doublets are keyed by the seed and the PIC); one chunk: drawn once and kept, as
    matched_doublets draws them. Reordered PICs keep their doublets."""
    ref, pics = reference_and_null
    x = sp.csr_matrix(ref.X, dtype=np.float64)
    codes = pd.Index(PIC_T + PIC_DC).get_indexer(ref.obs["grp"].astype(str))
    n, m = 40, 3
    ca = np.repeat(pd.Index(PIC_T + PIC_DC).get_indexer(pics.obs["true_a"][:n].astype(str))[:, None], m, axis=1)
    cb = np.repeat(pd.Index(PIC_T + PIC_DC).get_indexer(pics.obs["true_b"][:n].astype(str))[:, None], m, axis=1)
    alpha, depth = pics.obs["true_alpha"].to_numpy()[:n], np.full(n, 800.0)
    keys = name_keys(pics.obs_names[:n])
    one = _matched.Doublets.drawn(x, codes, ca, cb, alpha, depth, m, keys, seed=3)
    (_, _, first), = list(one)
    direct = _matched.matched_doublets(x, codes, ca, cb, alpha, depth, m, keys, 3)
    assert (first != direct).nnz == 0 and next(iter(one))[2] is first
    monkeypatch.setattr(_matched, "_CHUNK_PICS", 15)
    many = _matched.Doublets.drawn(x, codes, ca, cb, alpha, depth, m, keys, seed=3)
    passes = [[c for _, _, c in many] for _ in range(2)]
    assert len(passes[0]) == 3 and all((a != b).nnz == 0 for a, b in zip(*passes, strict=True))
    assert (sp.vstack(passes[0]) != first).nnz == 0
    flip = np.arange(n)[::-1]
    flipped = _matched.matched_doublets(x, codes, ca[flip], cb[flip], alpha[flip], depth[flip], m, keys[flip], 3)
    rows = (flip[:, None] * m + np.arange(m)).ravel()
    assert (flipped != first[rows]).nnz == 0



def test_pic_order_does_not_change_the_table(reference_and_null):
    """Each PIC's doublets follow its name: the PICs in reverse order give the same table (the
    draws once followed the rows: p-values moved by up to 0.76 on 294 PICs)."""
    ref, pics = reference_and_null
    tab = _matched_table(pics, ref)
    rev = _matched_table(pics[::-1].copy(), ref)
    pd.testing.assert_frame_equal(rev.loc[tab.index], tab, rtol=1e-9)


def test_singlet_order_does_not_change_the_table(reference_and_null):
    """The doublets draw each group's cells in the order of their names: the singlets' rows
    permuted give the same table (they once moved 'expected' in 754 of 765 genes)."""
    ref, pics = reference_and_null
    tab = _matched_table(pics, ref)
    perm = _matched_table(pics, ref[np.random.default_rng(2).permutation(ref.n_obs)].copy())
    pd.testing.assert_frame_equal(perm.loc[tab.index], tab, rtol=1e-9)


def test_missing_values_are_refused_only_where_tested(reference_and_null):
    """A missing replicate on PICs outside every tested group (no condition) is no error; a
    condition column with no value on any usable PIC says so."""
    ref, pics = reference_and_null
    pics = pics.copy()
    pics.obs["cond"] = np.where(np.arange(pics.n_obs) < 30, None, "x")
    pics.obs["mouse"] = np.where(np.arange(pics.n_obs) < 30, None, np.where(np.arange(pics.n_obs) % 2, "m1", "m2"))
    _matched_table(pics, ref, condition_key="cond", replicate_key="mouse")
    pics.obs["cond"] = None
    with pytest.raises(ValueError, match=r"no usable PIC .* has a value in every one of \['pic_a', 'pic_b', 'cond'\]"):
        _matched_table(pics, ref, condition_key="cond")


def test_null_in_chunks(reference_and_null, monkeypatch):
    """400 null PICs tested 100 at a time (each chunk's doublets from a generator of its own):
    as few calls as in one chunk, about the same genes tested (their doublets' draws differ)."""
    ref, pics = reference_and_null
    whole = _matched_table(pics, ref)
    monkeypatch.setattr(_matched, "_CHUNK_PICS", 100)
    chunked = _matched_table(pics, ref)
    n_whole, n_chunked = whole["tested"].sum(), chunked["tested"].sum()
    assert chunked["significant"].sum() <= 2 and abs(n_chunked - n_whole) <= 0.02 * n_whole


def test_tails_beyond_the_fft_resolution_and_zero_pvalues():
    """A tail below what FFT round-off resolves is not read from it (-1: the caller ranks such
    genes by the normal approximation); direct convolutions stay exact; a p-value of 0 still
    counts in chi2, most of all."""
    sets = np.zeros((20, 11), np.int64)
    sets[:, 0] = 50  # each PIC above all its doublets: P(T >= t) = 11^-20, convolved directly
    assert _matched.exact_pvalue(sets) == pytest.approx(2 * 11.0**-20, rel=1e-9)
    sets = np.zeros((30, 11), np.int64)
    sets[:, 0] = 50  # the last convolution (701 by 801 points) goes by FFT
    assert _matched.exact_pvalue(sets) == -1.0
    sets[:, 0] = 1  # a narrow support (31 points), convolved directly: exact however small
    assert _matched.exact_pvalue(sets) == pytest.approx(2 * 11.0**-30, rel=1e-9)
    z = np.array([[40.0, 30.0, 5.0, 1.0]] * 2)
    p = np.array([[0.0, 1e-200, 6e-7, 0.3]] * 2)
    out = _matched.matched_test(z, p, np.ones(4, bool))
    assert np.all(np.isfinite(out["chi2"])) and np.all(np.diff(out["chi2"]) < 0)


def test_pics_sharing_a_name_draw_apart(reference_and_null):
    """Two PICs of one name (samples concatenated without unique names) get their own doublets,
    not one stream twice; unique names keep their keys (pandas' hash of the name)."""
    ref, pics = reference_and_null
    names = np.array(["a", "b", "a", "c", "a"], dtype=object)
    keys = name_keys(names)
    assert len(set(keys.tolist())) == 5
    for odd in (["a", "a", "a\x1f1"], [None, None, None]):  # a name like a tagged one; missing names
        assert len(set(name_keys(np.array(odd, dtype=object)).tolist())) == 3
    np.testing.assert_array_equal(keys[[0, 1, 3]], pd.util.hash_array(names[[0, 1, 3]]))
    x = sp.csr_matrix(ref.X, dtype=np.float64)
    codes = pd.Index(PIC_T + PIC_DC).get_indexer(ref.obs["grp"].astype(str))
    ca = np.full((2, 3), codes[0])
    cb = np.full((2, 3), codes[-1])
    twins = name_keys(np.array(["same", "same"], dtype=object))
    d = _matched.matched_doublets(x, codes, ca, cb, np.full(2, 0.5), np.full(2, 800.0), 3, twins, 3)
    assert (d[:3] != d[3:]).nnz > 0  # the same groups, alpha and depth: drawn apart


def test_least_significant_takes_the_larger_inflation_from_either():
    """The groups' inflation is the larger of the two tests', whichever argument holds it."""
    first = {"pvalue": np.array([0.2]), "chi2": np.array([2.0]), "df": np.array([1.0]),
             "direction": np.array([1.0]), "z": np.array([[1.5], [0.5]]), "inflation": np.array([1.0, 1.4])}
    second = {"pvalue": np.array([0.1]), "chi2": np.array([4.0]), "df": np.array([1.0]),
              "direction": np.array([-1.0]), "z": np.array([[-2.0], [0.1]]), "inflation": np.array([1.3, 1.1])}
    np.testing.assert_array_equal(_matched.least_significant(first, second)["inflation"], [1.3, 1.4])
    np.testing.assert_array_equal(_matched.least_significant(second, first)["inflation"], [1.3, 1.4])


def test_matched_test_direction_and_simes_by_hand():
    """Two groups, 201 genes whose bulk (z = 0.1) leaves no inflation (median z^2 = 0.01 < the
    chi2_1 median): gene 0 (z -1, 4) is decided by its second group (p = 2 sf(4)): direction +1,
    Simes p = min(2 p_(1), p_(2)); gene 1 (p 0.02 in a group going down, 0.03 in one going up):
    direction -1, Simes p = min(2 * 0.02 / 1, 2 * 0.03 / 2) = 0.03 (Bonferroni would say 0.04)."""
    n = 201
    z = np.full((2, n), 0.1)
    p = np.full((2, n), 2 * stats.norm.sf(0.1))
    z[:, 0], p[:, 0] = (-1.0, 4.0), 2 * stats.norm.sf([1.0, 4.0])
    z[:, 1], p[:, 1] = (-2.3, 2.2), (0.02, 0.03)
    out = _matched.matched_test(z, p, np.ones(n, bool))
    np.testing.assert_array_equal(out["inflation"], [1.0, 1.0])
    np.testing.assert_array_equal(out["direction"][:2], [1.0, -1.0])
    want0 = min(2 * 2 * stats.norm.sf(4.0), 2 * stats.norm.sf(1.0))
    assert out["pvalue"][0] == pytest.approx(want0, rel=1e-9)
    assert out["pvalue"][1] == pytest.approx(0.03, rel=1e-9)
    np.testing.assert_array_equal(out["df"][:2], [2.0, 2.0])
    assert out["chi2"][0] == pytest.approx(1.0 + 16.0, rel=1e-9)


def test_matched_test_genomic_control_by_hand():
    """One group, 201 genes, bulk z = 1: inflation = 1 / median(chi2_1) (about 2.2); gene 0
    (z = 3) is divided by its square root: z = 3 / sqrt(inflation), p = 2 sf(|z|)."""
    n = 201
    z = np.ones((1, n))
    z[0, 0] = 3.0
    p = 2 * stats.norm.sf(np.abs(z))
    out = _matched.matched_test(z, p, np.ones(n, bool))
    inflation = 1.0 / stats.chi2.ppf(0.5, 1)
    assert out["inflation"][0] == pytest.approx(inflation, rel=1e-9)
    z0 = 3.0 / np.sqrt(inflation)
    assert out["z"][0, 0] == pytest.approx(z0, rel=1e-9)
    assert out["pvalue"][0] == pytest.approx(2 * stats.norm.sf(z0), rel=1e-9)
    assert out["chi2"][0] == pytest.approx(z0**2, rel=1e-9)


def test_reference_variance_closed_form():
    """Per the docstring: (n_matched / (n_matched + 1))^2 sum_r W_kr^2 s_r^2 / n_r, s_r^2 the
    cells' sample variance (ddof 1) of a gene's share. Group 0's shares of gene 0 are 0.1, 0.2,
    0.4: sum of squared deviations 0.21 - 0.7^2 / 3 = 7/150, s^2 / n = 7/150 / (3 * 2) = 7/900;
    group 1's 0.5, 0.5, 0.8: 1.14 - 1.8^2 / 3 = 3/50, / 6 = 1/100 (gene 1's shares are 1 minus
    these: the same variances). One PIC of alpha 0.25 and 100 UMIs: W = 25 from group 0 (A) and
    75 from group 1 (B). (10/11)^2 (25^2 * 7/900 + 75^2 / 100) = (100/121)(550/9) = 5000/99."""
    ref = sp.csr_matrix(np.array([[1, 9], [2, 8], [4, 6], [5, 5], [5, 5], [8, 2]], float))
    codes = np.array([0, 0, 0, 1, 1, 1])
    m = 10
    got = _matched.reference_variance(ref, codes, np.zeros((1, m), int), np.ones((1, m), int), np.array([0.25]),
                                      np.array([100.0]), np.zeros(1, int), 1, m)  # fmt: skip
    np.testing.assert_allclose(got, [[5000 / 99, 5000 / 99]], rtol=1e-12)


def test_exact_pvalues_below_three_sigma_are_exact():
    """A sparse gene whose z lies between 2 and 3 (three PICs hold its one UMI where their three
    doublets hold none, one PIC holds none where a doublet holds one: z = 2 / sqrt(0.75) = 2.31)
    gets the exact p-value (T: four Bernoulli(1/4) draws, observed 3: 2 P(T >= 3) = 2 * 13/256 =
    0.10), not the normal one (0.021); `_EXACT_FROM` is this threshold."""
    m = 3
    sets = np.array([[1, 0, 0, 0]] * 3 + [[0, 0, 1, 0]] + [[0, 0, 0, 0]] * 2, float)
    obs = sp.csr_matrix(sets[:, :1])
    doublets = sp.csr_matrix(sets[:, 1:].reshape(-1, 1))
    groups = np.zeros(sets.shape[0], int)
    sums = _matched.stratified_sums(obs, doublets, groups, 1, m)
    z = sums.num / np.sqrt(sums.var)
    assert 2.0 < z[0, 0] < 3.0
    got = _matched.exact_pvalues(z, obs, _matched.Doublets.given(doublets, m), groups, np.ones(1, bool))
    want = _enumerated_p(sets.astype(np.int64))
    assert want == pytest.approx(2 * 13 / 256)
    assert got[0, 0] == pytest.approx(want, rel=1e-12)


def test_reference_variance_widens_the_tables_pvalues(reference_and_null, monkeypatch):
    """The groups' p-values handed to `matched_test` carry the reference's own sampling variance
    (`widen`): against the same run with that variance set to zero (monkeypatched), none is
    smaller and many are larger. (The table's p-values need not all rise: genomic control then
    measures a smaller inflation on the widened bulk.)"""
    import gpu_sc.pic._interaction as interaction

    ref, pics = reference_and_null
    seen = []

    def spy(z, p, tested, p_units=None):
        seen.append(np.array(p))
        return _matched.matched_test(z, p, tested, p_units)

    monkeypatch.setattr(interaction, "matched_test", spy)
    _matched_table(pics, ref)
    monkeypatch.setattr(interaction, "reference_variance", lambda *a, **k: 0.0 * _matched.reference_variance(*a, **k))
    _matched_table(pics, ref)
    real, bare = seen
    ok = np.isfinite(real)
    np.testing.assert_array_equal(ok, np.isfinite(bare))
    assert np.all(real[ok] >= bare[ok] * (1 - 1e-9))
    assert np.mean(real[ok] > bare[ok] * 1.01) > 0.1


def test_arguments_the_method_does_not_use_are_warned_of(reference_and_null):
    """An argument only the other method reads (layer for matched; singlets, groupby, n_matched,
    pair_uncertainty, seed for chi2) changed nothing without a word (from an audit); now a
    warning names it and the result is the same. Defaults, given or not, say nothing."""
    ref, pics = reference_and_null
    sub = pics[:120].copy()
    want = _matched_table(sub, ref)
    with pytest.warns(UserWarning, match=r"layer has no effect here \(used only by method='chi2'\)"):
        got = _matched_table(sub, ref, layer="mine")
    pd.testing.assert_frame_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _matched_table(sub, ref, layer="pic_expected", seed=0, n_matched=10)
    p = sub.copy()
    expected_expression(p, ref, groupby="grp")
    plain = interaction_genes(p, method="chi2", min_pics=10, inplace=False)
    with pytest.warns(UserWarning, match=r"singlets, groupby, n_matched, seed have no effect here \(used only by "
                                         r"method='matched'\)"):
        got = interaction_genes(p, ref, groupby="grp", method="chi2", min_pics=10, n_matched=20, seed=3,
                                inplace=False)  # fmt: skip
    pd.testing.assert_frame_equal(got, plain)


def test_matched_doublets_take_round_alpha_n_umis_of_the_a_cell():
    """A doublet takes round(alpha N) UMIs of its A cell and the rest of its B cell: with one
    cell a group, each holding one gene only, the doublet's row is (round(alpha N), N - that)
    (0.66 * 10 = 6.6 -> 7, 0.25 * 30 = 7.5 -> 8 (half to even), 0.049 * 40 = 1.96 -> 2)."""
    ref = sp.csr_matrix(np.array([[100, 0], [0, 100]], float))
    alpha, depth = np.array([0.66, 0.25, 0.049]), np.array([10.0, 30.0, 40.0])
    d = _matched.matched_doublets(ref, np.array([0, 1]), np.zeros((3, 2), int), np.ones((3, 2), int), alpha, depth,
                                  2, np.arange(3, dtype=np.uint64), 0)  # fmt: skip
    np.testing.assert_array_equal(d.toarray(), np.repeat([[7, 3], [8, 22], [2, 38]], 2, axis=0))


def test_a_tail_from_fft_squares_is_below_the_resolution():
    """1,024 PICs of one kind: their pmf is the kind's squared ten times, the last square (513
    by 513 points) by FFT; a tail from it (here 2 * 2^-1024) is below what it resolves (-1), even
    though no convolution after the squares went by FFT."""
    sets = np.zeros((1024, 2), np.int64)
    sets[:, 0] = 1
    assert _matched.exact_pvalue(sets) == -1.0
    assert _matched.exact_pvalue(sets[:20]) == pytest.approx(2 * 0.5**20, rel=1e-12)  # direct: exact


def test_reference_variance_leaves_out_empty_cells_and_one_cell_groups():
    """The closed form above with an empty cell added to group 0 (no share to measure: left out,
    not a share of 0 that widens the spread) and a group 2 of one cell (no spread to measure:
    adds 0). PIC 0 as above: 5000/99; PIC 1 (its own test group) draws its 75 B UMIs from group
    2: (10/11)^2 * 25^2 * 7/900 = 4375/1089."""
    ref = sp.csr_matrix(np.array([[1, 9], [2, 8], [0, 0], [4, 6], [5, 5], [5, 5], [8, 2], [3, 3]], float))
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    m = 10
    code_b = np.array([[1] * m, [2] * m])
    got = _matched.reference_variance(ref, codes, np.zeros((2, m), int), code_b, np.array([0.25, 0.25]),
                                      np.array([100.0, 100.0]), np.array([0, 1]), 2, m)  # fmt: skip
    np.testing.assert_allclose(got, [[5000 / 99] * 2, [4375 / 1089] * 2], rtol=1e-12)


def test_simes_counts_only_the_groups_where_the_gene_varies():
    """Three groups, the gene varying in two (NaN z in the third): Simes' p = min over the two
    of p_(i) * 2 / i = min(2 * 0.01, 0.04) = 0.02 (over three groups it would be 0.03); df 2."""
    n = 201
    z = np.full((3, n), 0.1)
    p = np.full((3, n), 2 * stats.norm.sf(0.1))
    z[:, 0], p[:, 0] = (2.6, 2.05, np.nan), (0.01, 0.04, np.nan)
    out = _matched.matched_test(z, p, np.ones(n, bool))
    np.testing.assert_array_equal(out["inflation"], [1.0, 1.0, 1.0])
    assert out["pvalue"][0] == pytest.approx(0.02, rel=1e-12) and out["df"][0] == 2.0


def test_units_raise_the_groups_z_to_their_p_value():
    """With the units' p-values, a group's z is the normal equivalent of the larger p-value,
    two-sided: permutation p 0.01 (z 2.58), units' p 0.2 -> z = isf(0.1) = 1.28, chi2 its square."""
    n = 201
    z = np.full((1, n), 0.1)
    p = np.full((1, n), 2 * stats.norm.sf(0.1))
    z[0, 0], p[0, 0] = 2.58, 0.01
    p_units = np.full((1, n), 0.2)
    out = _matched.matched_test(z, p, np.ones(n, bool), p_units)
    assert out["z"][0, 0] == pytest.approx(stats.norm.isf(0.1), rel=1e-12)
    assert out["pvalue"][0] == pytest.approx(0.2, rel=1e-12)
    assert out["chi2"][0] == pytest.approx(stats.norm.isf(0.1) ** 2, rel=1e-12)


def test_a_tail_below_the_fft_resolution_takes_the_smaller_normal_p_value():
    """30 PICs each far above its ten doublets (as above: the exact tail is FFT noise): the
    p-value is the normal approximation's, 2 sf(z), where that is below _FFT_RESOLUTION."""
    m = 10
    obs = sp.csr_matrix(np.full((30, 1), 50.0))
    doublets = sp.csr_matrix((30 * m, 1))
    groups = np.zeros(30, int)
    sums = _matched.stratified_sums(obs, doublets, groups, 1, m)
    z = sums.num / np.sqrt(sums.var)  # 30 * 50 * 10/11 over sqrt(30 * 10 * 50^2 / 121): sqrt(300)
    assert z[0, 0] == pytest.approx(np.sqrt(300.0), rel=1e-12)
    got = _matched.exact_pvalues(z, obs, _matched.Doublets.given(doublets, m), groups, np.ones(1, bool))
    assert got[0, 0] == pytest.approx(2 * stats.norm.sf(np.sqrt(300.0)), rel=1e-9)
    assert got[0, 0] < _matched._FFT_RESOLUTION


def test_the_exact_tails_and_genomic_control_read_the_tables_tested_genes(reference_and_null, monkeypatch):
    """The genes given exact tails and taken into genomic control are those the table tests:
    max(observed, expected) >= min_counts, with min_counts set on a gene whose observed total
    sits on it and on one held only by the doublets (observed < expected)."""
    import gpu_sc.pic._interaction as interaction

    ref, pics = reference_and_null
    seen = []

    def spy(z, obs, doublets, groups, tested):
        seen.append(np.array(tested))
        return _matched.exact_pvalues(z, obs, doublets, groups, tested)

    monkeypatch.setattr(interaction, "exact_pvalues", spy)
    base = _matched_table(pics, ref, pair_uncertainty=False)
    o, e = base["observed"].to_numpy(), base["expected"].to_numpy()
    for cut in (np.median(o[(o > e) & (o >= 20)]), np.median(e[(e > o + 5) & (e >= 20)])):
        seen.clear()
        _matched_table(pics, ref, min_counts=float(cut), pair_uncertainty=False)
        want = np.maximum(o, e) >= cut
        assert want.sum() > np.sum(np.maximum(o, e) > cut)  # a gene sits on the cut
        np.testing.assert_array_equal(seen[0], want)


def test_a_wrong_posterior_does_not_make_calls_the_assigned_pairs_explain(reference_and_null):
    """Null PICs assigned their true pair, with a posterior that puts one T group's PICs all on
    another T group: against its doublets the genes telling the two apart read as induced, but
    a gene's p-value is the larger of the two tests', and the assigned pairs explain them."""
    ref, pics = reference_and_null
    post = _one_hot(pics, PIC_T, PIC_DC).tolil()
    moved = np.flatnonzero((pics.obs["pic_a"] == PIC_T[1]).to_numpy())
    ib = pd.Index(PIC_DC).get_indexer(pics.obs["pic_b"].astype(str))
    for r in moved:
        post[r, :] = 0
        post[r, 2 + len(PIC_T) * ib[r]] = 1.0
    wrong = _with_posterior(pics, PIC_T, PIC_DC, post.tocsr())
    assert moved.size >= 10 and _matched_table(wrong, ref)["significant"].sum() <= 1


def test_keyed_uniforms_are_uniform_on_the_unit_interval():
    """The keyed draws (a doublet's cells, its pair from the posterior) read uniforms in [0, 1):
    20,000 of them (100 keys x 200) lie there and pass a KS test against U(0, 1); a key's row does
    not depend on the keys beside it."""
    from gpu_sc.pic._umi_draws import keyed_uniforms

    keys = np.arange(100, dtype=np.uint64) * np.uint64(7919)
    u = keyed_uniforms(3, 1, keys, 200)
    assert u.shape == (100, 200) and u.min() >= 0 and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    np.testing.assert_array_equal(keyed_uniforms(3, 1, keys[[5, 0]], 200), u[[5, 0]])
