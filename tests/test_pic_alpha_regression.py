"""ml's alpha regression: composition bins, features, the fitted model and its interval."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import PIC_DC as DC
from _helpers import PIC_T as T
from _helpers import t_dc_reference_and_pics

from gpu_sc.pic import _alpha_regression as ar
from gpu_sc.pic import _posterior
from gpu_sc.pic._deconvolve import deconvolve

pytest.importorskip("sklearn")


def _profiles(rng, n_genes=300):
    pa, pb = rng.gamma(0.3, size=n_genes), rng.gamma(0.3, size=n_genes)
    pa[5] = pb[5] = 0.0  # expressed nowhere
    pb[7] = 0.0  # A only
    names = [f"G{i}" for i in range(n_genes)]
    names[0], names[1], names[2] = "RPL3", "Rps27", "MT-CO1"
    return np.column_stack([pa / pa.sum(), pb / pb.sum()]), names


def test_composition_bins_order_and_shares():
    p, names = _profiles(np.random.default_rng(0))
    n = 8
    m = ar.composition_bins(p, names, n_bins=n).toarray()
    assert m.shape == (p.shape[0], n + 2)
    assert m[5].sum() == 0  # unexpressed: counted nowhere
    assert m[0, n] == m[1, n] == 1 and m[2, n + 1] == 1  # ribosomal, mitochondrial
    plain = np.setdiff1d(np.arange(p.shape[0]), [0, 1, 2, 5])
    assert np.all(m[plain, :n].sum(1) == 1) and m[plain, n:].sum() == 0
    ratio = np.log((p[:, 0] + 1e-9) / (p[:, 1] + 1e-9))
    b = m[plain, :n].argmax(1)
    for k in range(n - 1):  # bins follow the A-to-B log ratio
        assert ratio[plain][b == k].max() <= ratio[plain][b == k + 1].min()
    w = p[plain].sum(1)
    share = np.bincount(b, weights=w, minlength=n) / w.sum()
    assert np.all(np.abs(share - 1 / n) <= w.max() / w.sum() + 1e-12)  # equal expression
    assert b[np.flatnonzero(plain == 7)[0]] == n - 1  # seen in A only: the most A-like bin


def test_composition_bins_of_equal_genes_by_hand():
    """Eight plain genes of equal pooled expression, ordered by log(P_A / P_B): with 4 bins the
    share of expression below gene i is i / 8, so genes 2k and 2k + 1 (in ratio order) fill bin
    k; ribosomal and mitochondrial genes take bins 4 and 5 wherever their ratio lies."""
    pa = np.array([2, 13, 5, 10, 3, 8, 12, 6, 14, 1]) / 16  # dyadic: the shares are exact
    p = np.column_stack([pa, 1.0 - pa]) / 4.0
    names = [f"G{i}" for i in range(8)] + ["RPS2", "MT-ND1"]
    got = ar.composition_bins(p, names, n_bins=4).toarray()
    rank = np.argsort(np.argsort(np.log(pa[:8] / (1 - pa[:8]))))
    np.testing.assert_array_equal(got[:8].argmax(axis=1), rank // 2)
    np.testing.assert_array_equal(got.sum(axis=1), np.ones(10))
    assert got[8, 4] == 1 and got[9, 5] == 1


def test_features_shapes_and_ranges():
    rng = np.random.default_rng(1)
    p, names = _profiles(rng)
    bins = ar.composition_bins(p, names)
    x = sp.csr_matrix(rng.poisson(0.5 * (p[:, :1] + p[:, 1:]).T * 300, size=(40, p.shape[0]))
                      .astype(float))
    ia = ib = np.zeros(40, dtype=np.int64)
    ll = _posterior.grid_loglik(x, p[:, :1], p[:, 1:], ia, ib, eps=1e-4, grid=ar.FEATURE_GRID)
    full = _posterior.grid_loglik(x, p[:, :1], p[:, 1:], ia, ib, eps=1e-4)
    np.testing.assert_array_equal(full[:, ::ar.STRIDE], ll)  # what deconvolve passes
    prior = _posterior.SizePrior(np.array([8.0, 8.5]), np.array([0.2, 0.3]))
    f = ar.features(x, bins, ll, prior, ia, ib, 1)
    assert f.shape == (40, ar.N_BINS + 2 + 5)
    tot = np.asarray(x.sum(1)).ravel()
    expressed = np.asarray(x[:, np.flatnonzero(p.sum(1) > 0)].sum(1)).ravel()
    np.testing.assert_allclose(f[:, :ar.N_BINS + 2].sum(1), expressed / tot)
    assert np.all((f[:, -5:-1] > 0) & (f[:, -5:-1] < 1))  # posterior means and the MLE
    np.testing.assert_allclose(f[:, -1], -0.5)  # the prior's mean logit: 8.0 - 8.5
    np.testing.assert_array_equal(f[:, -2], ar.FEATURE_GRID[np.argmax(ll, axis=1)])  # the grid's MLE
    empty = ar.features(sp.csr_matrix((1, p.shape[0])), bins, np.zeros((1, ll.shape[1])), prior, ia[:1], ib[:1], 1)
    assert np.all(empty[0, :ar.N_BINS + 2] == 0)  # a PIC without counts: no share anywhere, not NaN


def _toy(rng, n):
    f = rng.random((n, 4))
    return f, np.clip(0.2 + 0.6 * f[:, 0] + rng.normal(0, 0.05, n), 0, 1)


def test_regression_learns_and_its_interval_covers():
    rng = np.random.default_rng(2)
    (f, y), (fc, yc), (fn, yn) = _toy(rng, 3000), _toy(rng, 400), _toy(rng, 2000)
    m = ar.AlphaRegression.fit(f, y, fc, yc, seed=0)
    assert m.r2 > 0.9
    mean, lo, hi = m.predict(fn)
    assert np.all((lo >= 0) & (lo <= mean) & (mean <= hi) & (hi <= 1))
    assert 1 - ((yn - mean) ** 2).sum() / ((yn - yn.mean()) ** 2).sum() > 0.9
    assert ((lo <= yn) & (yn <= hi)).mean() > 0.85  # a 90 % interval on new data
    assert [len(v) for v in m.predict(fn[:0])] == [0, 0, 0]


def test_folds_are_averaged_and_check_out_of_fold():
    """Cross-conformal: one model set per fold, each scored on its own fold's check PICs only;
    the folds' average predicts, and its interval covers new data."""
    rng = np.random.default_rng(4)
    (f, y), (fc, yc), (fn, yn) = _toy(rng, 3000), _toy(rng, 500), _toy(rng, 2000)
    fold, check_fold = np.arange(3000) % 5, np.arange(500) % 5
    m = ar.AlphaRegression.fit(f, y, fc, yc, seed=0, fold=fold, check_fold=check_fold)
    assert len(m.models) == 5 and m.r2 > 0.85  # (noise caps it at 0.92)
    mean, lo, hi = m.predict(fn)
    each = np.mean([fold_models[0].predict(fn) for fold_models in m.models], axis=0)
    np.testing.assert_allclose(mean, np.clip(each, 0, 1))
    assert ((lo <= yn) & (yn <= hi)).mean() > 0.85
    # a fold's check PICs are predicted by that fold's models alone: shuffling which models
    # score which checks changes the R^2 (here: every check scored by fold 0's models)
    one = ar.AlphaRegression.fit(f, y, fc, yc, seed=0, fold=fold, check_fold=np.zeros(500, int))
    assert one.r2 != m.r2 and len(one.models) == 5


class _Const:
    def __init__(self, value):
        self.value = value

    def predict(self, f):
        return np.full(f.shape[0], self.value)


def test_predict_averages_the_folds_and_orders_and_widens_the_bounds_by_hand():
    """Fold models (mean, 5 %, 95 %) of (0.5, 0.6, 0.9) and (0.7, 0.4, 1.2): mean 0.6, bounds
    0.5 and 1.05, widened by the margin 0.1 and clipped: (0.4, 1.0). Quantiles that cross the
    mean ((0.75, 0.2) around 0.6) are first put on its side of it: (0.5, 0.7)."""
    m = ar.AlphaRegression([(_Const(0.5), _Const(0.6), _Const(0.9)), (_Const(0.7), _Const(0.4), _Const(1.2))],
                           margin=0.1)  # fmt: skip
    mean, lo, hi = m.predict(np.zeros((2, 3)))
    np.testing.assert_allclose([mean, lo, hi], [[0.6] * 2, [0.4] * 2, [1.0] * 2])
    crossed = ar.AlphaRegression([(_Const(0.6), _Const(0.75), _Const(0.2))], margin=0.1)
    np.testing.assert_allclose([v[0] for v in crossed.predict(np.zeros((1, 3)))], [0.6, 0.5, 0.7])


def test_conformal_margin_and_small_folds_by_hand():
    """The margin is the ceil((n + 1) 0.9)-th smallest of how far each check PIC's alpha falls
    outside its fold models' interval, 0 where that is negative (check PICs the models were fit
    on fall inside); five folds of 60 PICs each (above MIN_TRAIN / 5 a fold) each fit models."""
    rng = np.random.default_rng(6)
    (f, y), (fc, yc) = _toy(rng, 300), _toy(rng, 50)
    fold = np.arange(300) % 5
    for cf, cy, c_fold, sign in ((fc, yc, np.arange(50) % 5, 1), (f[:100], y[:100], fold[:100], -1)):
        m = ar.AlphaRegression.fit(f, y, cf, cy, seed=0, fold=fold, check_fold=c_fold)
        assert len(m.models) == 5
        outside = []
        for g in range(5):
            checks = np.flatnonzero(c_fold == g)
            _, lo, hi = ar.AlphaRegression(m.models[g:g + 1]).predict(cf[checks])
            outside.append(np.maximum(lo - cy[checks], cy[checks] - hi))
        outside = np.sort(np.concatenate(outside))
        k = int(np.ceil((cy.size + 1) * 0.9))  # 1-based rank: the 46th of 50, the 91st of 100
        assert np.sign(outside[k - 1]) == sign and outside[k - 1] != outside[k - 2]  # the rank matters
        assert m.margin == pytest.approx(max(outside[k - 1], 0.0), rel=1e-12, abs=1e-15)


def test_reference_folds_deal_each_population_evenly():
    """Dealt round each population's groups from one start: a fold holds at most one cell more
    of a group, and of a population, than another; five cells of a population in groups of two
    and three reach all five folds (a start per group left a fold without them in 160 of 200
    draws, so its check PICs could not be made)."""
    from gpu_sc.pic._ml_fit import _folds

    labels = np.array(["a"] * 13 + ["b"] * 2 + ["c"] + ["x"] * 4 + ["d"] * 2 + ["e"] * 3)
    order = np.arange(labels.size)
    for seed in range(50):
        fold = _folds(labels, (["a", "b", "c"], ["d", "e"]), np.random.default_rng(seed), order, 5)
        assert (fold[labels == "x"] == -1).all() and fold[labels == "c"][0] == -1  # no group; one cell
        assert sorted(np.bincount(fold[labels == "a"], minlength=5)) == [2, 2, 3, 3, 3]
        assert len(set(fold[labels == "b"])) == 2
        assert sorted(fold[np.isin(labels, ["d", "e"])]) == [0, 1, 2, 3, 4]
        assert sorted(np.bincount(fold[np.isin(labels, ["a", "b"])], minlength=5)) == [3, 3, 3, 3, 3]


def test_regression_declines_too_little_data():
    rng = np.random.default_rng(3)
    f, y = _toy(rng, 500)
    assert ar.AlphaRegression.fit(f[:ar.MIN_TRAIN - 1], y[:ar.MIN_TRAIN - 1], f, y, seed=0) is None
    assert ar.AlphaRegression.fit(f, np.full(500, 0.3), f, y, seed=0) is None
    assert ar.AlphaRegression.fit(f, y, f[:5], y[:5], seed=0) is None


def test_alpha_model_choices(pbmc):
    ref, pics = t_dc_reference_and_pics(pbmc, 120)
    before = pics.copy()
    with pytest.raises(ValueError, match="alpha_model must be one of"):
        deconvolve(pics, ref, groupby="grp", a=T, b=DC, alpha_model="lasso")
    assert pics.obs.equals(before.obs) and (pics.X != before.X).nnz == 0
    for kw in ({"alpha_model": "posterior"}, {"calibrate": False}):
        p = pics.copy()
        deconvolve(p, ref, groupby="grp", a=T, b=DC, **kw)
        assert p.uns["pic"]["alpha_model"] == "posterior"
        np.testing.assert_array_equal(p.obs["pic_alpha"], p.obs["pic_alpha_posterior"])
    p = pics.copy()
    deconvolve(p, ref, groupby="grp", a=T, b=DC, n_train=4000)
    info = p.uns["pic"]
    assert info["alpha_model"] == "regression" and info["n_train"] == 4000
    assert 0 < info["alpha_regression_r2"] <= 1 and info["alpha_interval_margin"] >= 0
    assert not np.array_equal(p.obs["pic_alpha"], p.obs["pic_alpha_posterior"])


def test_training_pics_are_read_at_their_searched_pair(pbmc, monkeypatch):
    """With the search's design, every simulated PIC's features come from the pair the search
    finds against the other half (as a real PIC's do), not from its true pair."""
    from gpu_sc.pic import _loglik, _ml_fit

    ref, _ = t_dc_reference_and_pics(pbmc, 10)
    s = sp.csr_matrix(ref.X, dtype=np.float64)
    labels = ref.obs["grp"].astype(str).to_numpy()
    design = _ml_fit.MLDesign(s, labels, T, DC, np.zeros(0, np.int64), 20, "informative")
    pop = np.where(np.isin(labels, T), "A", "B")
    bins = ar.composition_bins(_ml_fit.full_profiles(s, pop, ["A", "B"]), ref.var_names)
    searched, real = [], _loglik.pair_scores

    def spy(x, pa, pb, **kw):
        out = real(x, pa, pb, **kw)
        searched.append((x.shape[0], kw["temper"], out.ia.copy(), out.ib.copy()))
        return out

    monkeypatch.setattr(_loglik, "pair_scores", spy)
    kw = dict(n_pics=2000, n_umis=1000, eps=1e-4, seed=0)
    truth = _ml_fit.fit_alpha_regression(ref, s, labels, T, DC, "grp", bins, **kw)
    assert searched == []  # no design: the true pairs
    found = _ml_fit.fit_alpha_regression(ref, s, labels, T, DC, "grp", bins, design=design, tau_pair=0.3, **kw)
    assert len(searched) == 4 * _ml_fit.N_FOLDS  # fit and check PICs of each half of each fold
    assert all(t == 0.3 for _, t, _, _ in searched)
    assert sum(n for n, _, _, _ in searched) > 1500
    # the search errs on some, so the check PICs (and the model) differ from the true pairs'
    assert found.r2 != truth.r2 or found.margin != truth.margin


def test_trees_fit_and_predict_on_one_openmp_thread(monkeypatch):
    """The trees' short OpenMP regions spin at every barrier when another process shares the
    cores (a 3.4x slowdown beside one busy process on 2 cores): fit and predict run on one,
    whatever OpenMP would use around the call."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []

    def openmp_threads():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"}

    for name in ("fit", "predict"):
        original = getattr(HistGradientBoostingRegressor, name)

        def spy(self, *args, _original=original, **kw):
            seen.append(openmp_threads())
            return _original(self, *args, **kw)

        monkeypatch.setattr(HistGradientBoostingRegressor, name, spy)
    rng = np.random.default_rng(2)
    (f, y), (fc, yc) = _toy(rng, 600), _toy(rng, 100)
    with threadpool_limits(4, user_api="openmp"):  # (OMP_NUM_THREADS=1 or one core: one already)
        ar.AlphaRegression.fit(f, y, fc, yc, seed=0).predict(fc)
    assert len(seen) >= 6 and all(threads == {1} for threads in seen), seen  # (every OpenMP library loaded)
