"""What ml learns from the singlets before any PIC is scored, on small hand-made references
whose answers are worked out here: the F statistic between groups, the genes between the
populations, the designs of the pair search, the reference splits, the profiles and markers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from gpu_sc.pic import _ml_fit, _profiles


def _equal_totals(cols: list[np.ndarray], total: float = 1000.0) -> sp.csr_matrix:
    """Cells x (given genes + one filler gene) whose rows all sum to `total`, so that a
    size normalisation to the median total leaves every count as it is."""
    x = np.column_stack(cols).astype(np.float64)
    filler = total - x.sum(1)
    assert np.all(filler > 0)
    return sp.csr_matrix(np.column_stack([x, filler]))


# --------------------------------------------------------------------------- F statistic
def test_group_f_statistic_is_the_one_way_anova_of_normalised_log_expression():
    rng = np.random.default_rng(0)
    labels = np.array(["g1"] * 7 + ["g2"] * 9 + ["g3"] * 6 + ["other"] * 5)
    x = rng.poisson(rng.gamma(1.0, 3.0, (1, 12)), (labels.size, 12)).astype(np.float64)
    # gene 0: nearly constant within groups, far apart between them (within-group sum of
    # squares ~1e-4: F in the thousands)
    x[:, 0] = np.where(labels == "g1", 100, np.where(labels == "g2", 300, 600)) + np.arange(labels.size) % 2
    x[:, 1] = 50  # a gene flat across the cells (each cell's own total still differs)
    s = sp.csr_matrix(x)
    groups = ["g1", "g2", "g3"]
    f = _ml_fit.group_f_statistic(s, labels, groups)
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    want = stats.f_oneway(*(y[labels == g] for g in groups)).statistic
    with_cells = x[np.isin(labels, groups)].sum(0) > 0
    np.testing.assert_allclose(f[with_cells], want[with_cells], rtol=1e-9)
    np.testing.assert_array_equal(f[~with_cells], 0.0)  # no UMI: no variance either way
    assert f[0] > 1e3


def test_group_f_statistic_is_zero_without_two_groups_or_without_cells_to_spare():
    x = sp.csr_matrix(np.array([[5.0, 1], [1, 5], [3, 3]]))
    labels = np.array(["a", "b", "c"])
    # one cell a group (n == k): no within-group variance to compare with
    np.testing.assert_array_equal(_ml_fit.group_f_statistic(x, labels, ["a", "b", "c"]), [0.0, 0.0])
    np.testing.assert_array_equal(_ml_fit.group_f_statistic(x, labels, ["a"]), [0.0, 0.0])


# --------------------------------------------------------------------------- between populations
def _between_reference():
    """6 A cells and 6 B cells of total 1000. Per-cell counts (A | B): gene 0: 50 | 0, gene 1:
    20 | 0, gene 2: 30 | 10, gene 3: 12 | 10 (under 2-fold), gene 4: 0 | 40, gene 5: 0 | 25,
    gene 6: 2 and 1 in alternate A cells | 1 and 0 (geometric means sqrt(6) - 1 and sqrt(2) - 1:
    1.59 log2 units apart with the 0.1 pseudocount, 0.79 with a pseudocount of 1), gene 7: 10 UMIs in all, in A only (not above 10), gene 8: 4
    UMIs in A only, gene 9 (blacklisted): 60 | 0."""
    a, b = np.ones(6, bool), np.zeros(6, bool)
    is_a = np.r_[a, b]
    col = lambda va, vb: np.where(is_a, va, vb).astype(float)  # noqa: E731
    alt = np.r_[1 + np.arange(6) % 2, np.arange(6) % 2]
    g7 = np.r_[[2, 2, 2, 2, 2, 0], np.zeros(6)]
    g8 = np.r_[[1, 1, 1, 1, 0, 0], np.zeros(6)]
    s = _equal_totals([col(50, 0), col(20, 0), col(30, 10), col(12, 10), col(0, 40), col(0, 25), alt, g7, g8,
                       col(60, 0)])  # fmt: skip
    black = np.zeros(s.shape[1], bool)
    black[9] = True
    return s, is_a, black


def test_between_populations_takes_the_n_most_raised_each_way_at_least_2_fold():
    s, is_a, black = _between_reference()
    between, usable, total = _ml_fit.between_populations(s, is_a, ~is_a, 2, black)
    # A over B by log2 ratio: gene 0 (8.97), gene 1 (7.65); B over A: gene 4, gene 5
    assert sorted(between.tolist()) == [0, 1, 4, 5]
    np.testing.assert_array_equal(total, np.asarray(s.sum(0)).ravel())
    np.testing.assert_array_equal(usable, (total > 10) & ~black)  # gene 7's 10 UMIs are not above 10
    assert not usable[7] and not usable[8] and not usable[9]
    # every usable gene at least 2-fold either way: genes 0, 1, 2 (1.58), 6 (1.59), 4, 5; not
    # gene 3 (0.26) nor the filler, nor the genes of 10 UMIs or fewer, nor the blacklisted one
    between, _, _ = _ml_fit.between_populations(s, is_a, ~is_a, 10, black)
    assert sorted(set(between.tolist())) == [0, 1, 2, 4, 5, 6]  # (each way: the lists overlap)


# --------------------------------------------------------------------------- designs
def _two_population_reference():
    rng = np.random.default_rng(3)
    labels = np.array(["a1"] * 8 + ["a2"] * 8 + ["b1"] * 7 + ["b2"] * 7 + ["none"] * 3)
    mean = rng.gamma(0.8, 4.0, (4, 40))
    rows = {"a1": 0, "a2": 1, "b1": 2, "b2": 3, "none": 0}
    x = np.stack([rng.poisson(mean[rows[g]]) for g in labels]).astype(np.float64)
    x[:, 30] = 0
    x[labels == "a1", 30] = 1  # 8 UMIs, all in a1: a group-specific gene with too few UMIs
    x[:16, 31] = 0
    x[labels == "a2", 31] = 9  # in a2 only, with 72 UMIs
    return sp.csr_matrix(x), labels


def test_informative_design_holds_the_usable_genes_that_tell_groups_apart():
    s, labels = _two_population_reference()
    ga, gb = ["a1", "a2"], ["b1", "b2"]
    markers = np.array([2, 3])
    black = np.zeros(s.shape[1], bool)
    black[31] = True
    d = _ml_fit.MLDesign(s, labels, ga, gb, markers, 3, "informative", black)
    between, usable, _ = _ml_fit.between_populations(s, np.isin(labels, ga), np.isin(labels, gb), 3, black)
    x = s.toarray()
    total = x[np.isin(labels, ga + gb)].sum(0)
    assert np.array_equal(usable, (total > 10) & ~black)
    y = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    want = set(markers) | set(between.tolist())
    for groups in (ga, gb):
        with np.errstate(divide="ignore", invalid="ignore"):
            f = stats.f_oneway(*(y[labels == g] for g in groups)).statistic
        want |= set(np.flatnonzero(usable & (np.nan_to_num(f) > 0)).tolist())
    assert set(d.genes.tolist()) == want
    assert 30 not in want and 31 not in want  # too few UMIs; blacklisted
    assert d.rest is None and d.n_genes(s.shape[1]) == d.genes.size
    np.testing.assert_array_equal(d.counts(s).toarray(), x[:, d.genes])


def test_markers_design_sums_every_other_expressed_gene_into_one_rest_bucket():
    s, labels = _two_population_reference()
    ga, gb = ["a1", "a2"], ["b1", "b2"]
    black = np.zeros(s.shape[1], bool)
    black[31] = True  # the blacklist only keeps genes out of the informative design
    d = _ml_fit.MLDesign(s, labels, ga, gb, np.array([2, 3]), 3, "markers", black)
    between, _, _ = _ml_fit.between_populations(s, np.isin(labels, ga), np.isin(labels, gb), 3)
    assert set(d.genes.tolist()) == {2, 3} | set(between.tolist())
    x = s.toarray()
    total = x[np.isin(labels, ga + gb)].sum(0)
    rest = np.setdiff1d(np.flatnonzero(total > 10), d.genes)
    np.testing.assert_array_equal(d.rest, rest)
    assert 30 not in rest  # 8 UMIs
    assert d.n_genes(s.shape[1]) == d.genes.size + 1
    np.testing.assert_array_equal(d.counts(s).toarray(), np.column_stack([x[:, d.genes], x[:, rest].sum(1)]))
    # pooled-count profiles: the group's share of its UMIs on each gene and on the rest
    p = d.profiles(s, labels, ga + gb)
    for k, g in enumerate(ga + gb):
        c = np.r_[x[labels == g][:, d.genes].sum(0), x[labels == g][:, rest].sum()]
        np.testing.assert_allclose(p[:, k], c / c.sum(), rtol=1e-12)


# --------------------------------------------------------------------------- reference splits
def test_split_reference_halves_every_group_and_keeps_one_cell_groups_in_both():
    labels = np.array(["a"] * 7 + ["b"] + ["c"] * 2 + ["x"] * 3)
    order = np.arange(labels.size)
    for seed in range(20):
        first, second = _ml_fit._split_reference(labels, ["c", "b", "a"], np.random.default_rng(seed), order)
        assert first[labels == "b"].all() and second[labels == "b"].all()
        assert not (first | second)[labels == "x"].any()
        for g, n_first in (("a", 3), ("c", 1)):
            rows = labels == g
            assert first[rows].sum() == n_first and not (first & second)[rows].any()
            assert (first | second)[rows].all()


def test_median_depth_is_over_the_pics_with_counts():
    assert _ml_fit.median_depth(np.array([0, 0, 0, 100, 300.0])) == 200
    assert _ml_fit.median_depth(np.zeros(4)) == 1000


# --------------------------------------------------------------------------- profiles and markers
def test_geomean_by_hand_with_and_without_size_normalisation():
    x = sp.csr_matrix(np.array([[3.0, 0, 1], [8, 2, 0], [0, 0, 0], [1, 1, 6]]))
    labels = np.array(["p", "p", "p", "q"])
    gm = _profiles.geomean(x, labels, ["p", "q"])
    u = x.toarray()
    want_p = np.exp(np.log1p(u[:3]).mean(0)) - 1
    np.testing.assert_allclose(gm, np.column_stack([want_p, u[3]]), rtol=1e-12)
    # normalised: each cell with counts scaled to the median of the totals above 0 (4, 10, 8
    # -> 8); the empty cell stays empty and still counts in its group's mean
    scaled = u * np.array([8 / 4, 8 / 10, 0, 8 / 8])[:, None]
    gm = _profiles.geomean(x, labels, ["p", "q"], normalise=True)
    np.testing.assert_allclose(gm[:, 0], np.exp(np.log1p(scaled[:3]).mean(0)) - 1, rtol=1e-12)
    np.testing.assert_allclose(gm[:, 1], scaled[3], rtol=1e-12)


def test_profiles_leave_an_empty_group_at_zero():
    p = _profiles.profiles(np.array([[1.0, 0, 2], [3, 0, 2]]))
    np.testing.assert_array_equal(p, [[0.25, 0, 0.5], [0.75, 0, 0.5]])


def test_mean_profiles_pool_each_groups_counts_with_a_rest_row():
    x = sp.csr_matrix(np.array([[1.0, 2, 3, 4, 0], [0, 1, 1, 1, 7], [5, 0, 0, 5, 0]]))
    labels = np.array(["p", "p", "q"])
    p = _profiles.mean_profiles(x, labels, ["q", "p"], np.array([0, 3]), np.array([1, 4]))
    np.testing.assert_allclose(p, np.array([[5, 1], [5, 5], [0, 10]]) / np.array([10, 16]), rtol=1e-15)


def test_blacklist_patterns_match_anywhere_in_the_name():
    names = ["MT-CO1", "XCO1", "RPL3", "GAPDH"]
    np.testing.assert_array_equal(_profiles.blacklisted(names, ["CO1"]), [True, True, False, False])
    np.testing.assert_array_equal(_profiles.blacklisted(names, _profiles.DEFAULT_BLACKLIST),
                                  [True, False, True, False])  # fmt: skip
    np.testing.assert_array_equal(_profiles.blacklisted(names, ()), [False] * 4)


def _marker_reference():
    """Three A groups (a1..a3) and three B groups (b1..b3) of 4 cells each, every cell of total
    1000 and every cell of a group alike (geometric means are the counts), so each footprint is
    log2((0.1 + count) / median over the population's groups of (0.1 + count))."""
    ga, gb = ["a1", "a2", "a3"], ["b1", "b2", "b3"]
    labels = np.repeat(ga + gb, 4)
    per_group: list[list[float]] = []
    names: list[str] = []

    def gene(name, *counts):
        names.append(name)
        per_group.append(list(counts))

    for i in range(25):  # 25 a1 genes from 40 down to 16 over 4: footprints 3.29 .. 1.97
        gene(f"A1_{i}", 40 - i, 4, 4, 4, 4, 4)
    gene("MED", 2, 6, 2, 3, 3, 3)  # a2: over the median 2.1: 1.54 (over a mean baseline, 3.43: 0.83)
    gene("PSEUDO", 1.2, 1.2, 3, 0, 0, 0)  # a3: 1.25 (with a pseudocount of 1: 0.86)
    gene("HALF", 1, 1, 1.5, 2, 2, 2)  # a3: 0.54, under min_lfp
    gene("TEN", 0, 2.5, 0, 0, 0, 0)  # a2, 10 UMIs in all: not above min_umis
    gene("MT-ND1", 5, 50, 5, 5, 5, 5)  # a2, blacklisted
    gene("BOTH", 3, 30, 3, 30, 3, 3)  # a2 and b1: a marker in both populations
    gene("DOWN", 3, 30, 3, 10, 0.5, 10)  # up in a2, and down in b2 only (-4.1 there)
    per_cell = np.repeat(np.array(per_group).T, 4, axis=0)
    s = _equal_totals(list(per_cell.T))
    return s, labels, ga, gb, np.array([*names, "FILLER"])


def test_select_markers_by_hand():
    s, labels, ga, gb, names = _marker_reference()
    got = _profiles.select_markers(s, labels, ga, gb, names)
    # a1's 20 largest footprints (A1_0..A1_19), MED and PSEUDO; nothing under 1, nothing of
    # at most 10 UMIs, nothing blacklisted, nothing that marks groups of both populations
    # (BOTH; DOWN, at |-4.1| in b2)
    want = {f"A1_{i}" for i in range(20)} | {"MED", "PSEUDO"}
    assert set(names[got]) == want, sorted(set(names[got]) ^ want)
    assert np.all(np.diff(got) > 0)


def test_select_markers_extra_genes_are_added():
    s, labels, ga, gb, names = _marker_reference()
    got = _profiles.select_markers(s, labels, ga, gb, names, extra=["HALF", "BOTH"])
    assert {"HALF", "BOTH"} <= set(names[got])
    with pytest.raises(KeyError, match="not in var_names"):
        _profiles.select_markers(s, labels, ga, gb, names, extra=["NOPE"])


# --------------------------------------------------------------------------- calibration wiring
def _reference(b_sizes=(25, 25), seed=0):
    """Singlets of three A groups (a0..a2, 25 cells) and B groups of `b_sizes` cells over 120
    genes: Poisson counts of group-specific profiles at log-normal cell sizes around 2,000
    UMIs (each group its own mean size)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    groups = {"a0": 25, "a1": 25, "a2": 25, **{f"b{k}": n for k, n in enumerate(b_sizes)}}
    labels = np.concatenate([[g] * n for g, n in groups.items()])
    prof = {g: rng.dirichlet(np.full(120, 0.3)) for g in groups}
    size = {g: rng.normal(7.6, 0.2) for g in groups}
    x = np.stack([rng.poisson(prof[g] * np.exp(rng.normal(size[g], 0.3))) for g in labels]).astype(np.float32)
    obs = pd.DataFrame({"grp": pd.Categorical(labels)}, index=[f"c{i}" for i in range(labels.size)])
    return ad.AnnData(sp.csr_matrix(x), obs=obs), labels, ["a0", "a1", "a2"], [f"b{k}" for k in range(len(b_sizes))]


def test_calibration_scores_each_pic_at_its_true_pair_and_prior(monkeypatch):
    """The pair temperature is fitted on the column j = i_a + K_A i_b of each simulated PIC's
    true pair, and the alpha temperature under the size prior of its true pair, from the log
    totals of the profile half's cells (worked out here from the split and the names)."""
    from gpu_sc import _keys as K

    singlets, labels, ga, gb = _reference()
    s = sp.csr_matrix(singlets.X, dtype=np.float64)
    seen = {}
    for name in ("pair_tau", "best_tau"):
        real = getattr(_ml_fit._posterior, name)

        def spy(*a, _name=name, _real=real, **kw):
            seen[_name] = a
            return _real(*a, **kw)

        monkeypatch.setattr(_ml_fit._posterior, name, spy)
    real_sim, real_split = _ml_fit.simulate_pics, _ml_fit._split_reference
    monkeypatch.setattr(_ml_fit, "simulate_pics", lambda *a, **kw: seen.setdefault("sim", real_sim(*a, **kw)))
    monkeypatch.setattr(_ml_fit, "_split_reference", lambda *a, **kw: seen.setdefault("split", real_split(*a, **kw)))
    design = _ml_fit.MLDesign(s, labels, ga, gb, np.arange(10), 20, "all")
    tau_pair, tau_alpha, r2 = _ml_fit.calibrate(singlets, s, labels, ga, gb, "grp", design, n_umis=500, eps=1e-4,
                                                seed=3)  # fmt: skip
    sim, (prof, _) = seen["sim"], seen["split"]
    assert sim.n_obs == _ml_fit._N_CALIBRATE
    ll, true_j = seen["pair_tau"]
    a = np.array([ga.index(v) for v in sim.obs[K.OBS_TRUE_A]])
    b = np.array([gb.index(v) for v in sim.obs[K.OBS_TRUE_B]])
    np.testing.assert_array_equal(true_j, a + len(ga) * b)
    assert ll.shape == (sim.n_obs, len(ga) * len(gb)) and tau_pair == _ml_fit._posterior.pair_tau(ll, true_j)
    grid_ll, log_prior, truth = seen["best_tau"]
    np.testing.assert_array_equal(truth, sim.obs[K.OBS_TRUE_ALPHA].to_numpy())
    # the prior's centre, read off the quadratic in logit(alpha) of each row
    tot = np.log(np.asarray(s.sum(1)).ravel())
    mu = {g: tot[prof & (labels == g)].mean() for g in ga + gb}
    z = np.log(_ml_fit._posterior.GRID / (1 - _ml_fit._posterior.GRID))
    q = log_prior + np.log(_ml_fit._posterior.GRID * (1 - _ml_fit._posterior.GRID))
    for n in range(0, sim.n_obs, 37):
        c2, c1, _ = np.polyfit(z, q[n], 2)
        assert -c1 / (2 * c2) == pytest.approx(mu[ga[a[n]]] - mu[gb[b[n]]], abs=1e-6)
    assert (tau_alpha, r2) == _ml_fit._posterior.best_tau(grid_ll, log_prior, truth)


def test_alpha_regression_trains_on_each_half_against_the_other_and_checks_on_its_fold(monkeypatch):
    """Per fold, the PICs that train are simulated from one half of the other folds' cells and
    scored against profiles of the other half, both ways round; the fold's own cells make its
    check PICs; 40 % of n_pics train and 10 % check, the folds' PICs labelled with their fold."""
    from gpu_sc.pic import _alpha_regression

    singlets, labels, ga, gb = _reference()
    s = sp.csr_matrix(singlets.X, dtype=np.float64)
    model_rows, sims = [], []
    real_parts, real_sim = _ml_fit.alpha_parts, _ml_fit.simulate_pics

    def parts_spy(s_, labels_, groups, rows=None, full=None):
        model_rows.append(np.asarray(rows).copy())
        return real_parts(s_, labels_, groups, rows, full)

    def sim_spy(adata, **kw):
        sims.append((set(adata.obs_names), kw["n_pics"]))
        return real_sim(adata, **kw)

    fitted = {}

    def fit_spy(f, y, fc, yc, *, seed, fold, check_fold):
        fitted.update(f=f, y=y, fc=fc, yc=yc, fold=fold, check_fold=check_fold)
        return "model"

    monkeypatch.setattr(_ml_fit, "alpha_parts", parts_spy)
    monkeypatch.setattr(_ml_fit, "simulate_pics", sim_spy)
    monkeypatch.setattr(_alpha_regression.AlphaRegression, "fit", staticmethod(fit_spy))
    pop = np.where(np.isin(labels, ga), "A", "B")
    bins = _alpha_regression.composition_bins(_ml_fit.full_profiles(s, pop, ["A", "B"]), singlets.var_names)
    design = _ml_fit.MLDesign(s, labels, ga, gb, np.arange(10), 20, "markers")
    out = _ml_fit.fit_alpha_regression(singlets, s, labels, ga, gb, "grp", bins, n_pics=500, n_umis=400, eps=1e-4,
                                       seed=2, design=design, tau_pair=0.3)  # fmt: skip
    assert out == "model"
    names = np.asarray(singlets.obs_names)
    assert len(model_rows) == 2 * _ml_fit.N_FOLDS and len(sims) == 4 * _ml_fit.N_FOLDS
    check_cells = []
    for fold in range(_ml_fit.N_FOLDS):
        m0, m1 = model_rows[2 * fold], model_rows[2 * fold + 1]
        (fit0, n_fit), (check0, n_check), (fit1, _), (check1, _) = sims[4 * fold: 4 * fold + 4]
        assert fit0 == set(names[m1]) and fit1 == set(names[m0])  # each half against the other
        assert check0 == check1 and not check0 & (fit0 | fit1)
        assert (n_fit, n_check) == (int(500 * 0.4 / _ml_fit.N_FOLDS), int(500 * 0.1 / _ml_fit.N_FOLDS))
        check_cells.append(check0)
    assert set().union(*check_cells) == set(names) and sum(map(len, check_cells)) == names.size
    per_fold = 2 * int(500 * 0.1 / _ml_fit.N_FOLDS)
    np.testing.assert_array_equal(fitted["check_fold"], np.repeat(np.arange(_ml_fit.N_FOLDS), per_fold))
    np.testing.assert_array_equal(fitted["fold"], np.repeat(np.arange(_ml_fit.N_FOLDS), 2 * int(500 * 0.4 / 5)))
    assert fitted["fc"].shape[0] == fitted["yc"].size == _ml_fit.N_FOLDS * per_fold


def test_alpha_regression_without_check_pics_is_declined():
    """A population of one one-cell group is in no fold (the profiles always need it), so no
    fold's cells make check PICs of both populations: no regression (deconvolve then reports the
    posterior), rather than a model with nothing to check it."""
    from gpu_sc.pic import _alpha_regression

    singlets, labels, ga, gb = _reference(b_sizes=(1,))
    s = sp.csr_matrix(singlets.X, dtype=np.float64)
    pop = np.where(np.isin(labels, ga), "A", "B")
    bins = _alpha_regression.composition_bins(_ml_fit.full_profiles(s, pop, ["A", "B"]), singlets.var_names)
    design = _ml_fit.MLDesign(s, labels, ga, gb, np.arange(10), 20, "markers")
    assert _ml_fit.fit_alpha_regression(singlets, s, labels, ga, gb, "grp", bins, n_pics=300, n_umis=400,
                                        eps=1e-4, seed=0, design=design) is None  # fmt: skip
