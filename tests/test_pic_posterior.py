"""The alpha posterior of `method="ml"`: size prior, grid likelihood, posterior summaries and the
temperatures fitted on PICs of known alpha."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from _helpers import assert_close

from gpu_sc.pic._posterior import GRID, SizePrior, best_tau, grid_loglik, pair_tau, posterior


def test_size_prior_is_logit_normal():
    rng = np.random.default_rng(0)
    tot = np.r_[np.exp(rng.normal(7, 0.3, 400)), np.exp(rng.normal(8, 0.5, 400))]
    labels = np.array(["a"] * 400 + ["b"] * 400)
    prior = SizePrior.from_counts(tot, labels, ["a", "b"])
    dens = np.exp(prior.log_density(np.array([0]), np.array([0]), 1))[0]
    # a density in alpha: integrates to 1, centred at logit^-1(mu_a - mu_b)
    assert np.trapezoid(dens, GRID) == pytest.approx(1.0, abs=0.02)
    m = np.log(tot[:400]).mean() - np.log(tot[400:]).mean()
    assert GRID[np.argmax(dens * GRID * (1 - GRID))] == pytest.approx(1 / (1 + np.exp(-m)), abs=0.01)


def test_single_cell_group_gets_a_proper_prior():
    prior = SizePrior.from_counts(np.array([100.0, 200, 400, 50]), np.array(["a", "b", "b", "c"]),
                                  ["a", "b", "c"])
    assert np.all(prior.var > 0)


def test_grid_loglik_matches_naive_and_chunks():
    rng = np.random.default_rng(1)
    pa, pb = rng.dirichlet(np.ones(40), 3).T, rng.dirichlet(np.ones(40), 2).T
    x = sp.csr_matrix(rng.poisson(0.8, (25, 40)).astype(np.float64))
    ia, ib = rng.integers(0, 3, 25), rng.integers(0, 2, 25)
    ll = grid_loglik(x, pa, pb, ia, ib, eps=1e-4)
    u = x.toarray()
    naive = np.array([[np.sum(u[n] * np.log(g * pa[:, ia[n]] + (1 - g) * pb[:, ib[n]] + 1e-4))
                       for g in GRID] for n in range(25)])
    # alpha (a - b) + b against alpha a + (1 - alpha) b inside the log (a few roundings, no
    # cancellation: both sides positive), then float64 sums of the 40 genes in another order
    assert_close(ll, naive, dtype=np.float64, n_terms=x.shape[1])
    import gpu_sc.pic._posterior as post

    old = post._CHUNK_CELLS
    try:
        post._CHUNK_CELLS = 1  # one PIC per chunk
        np.testing.assert_array_equal(grid_loglik(x, pa, pb, ia, ib, eps=1e-4), ll)
    finally:
        post._CHUNK_CELLS = old


def test_grid_loglik_holds_the_curves_that_occur_not_every_gene_and_pair():
    """Each (gene, pair) curve is taken once, for the pairs and genes the PICs hold: with 50 x 50
    groups over 2,000 genes a table of every gene x pair would take 5 M entries (45 MB), while
    60 PICs of 40 genes hold at most 2,400 curves (of 200 grid points: 3.8 MB, twice while the
    logs are formed)."""
    import tracemalloc

    rng = np.random.default_rng(2)
    genes, k = 2000, 50
    pa, pb = rng.dirichlet(np.ones(genes), k).T, rng.dirichlet(np.ones(genes), k).T
    x = sp.random(60, genes, density=0.02, format="csr", random_state=3)
    x.data = np.ceil(x.data * 5)
    ia, ib = rng.integers(0, k, 60), rng.integers(0, k, 60)
    grid_loglik(x, pa, pb, ia, ib, eps=1e-4)
    tracemalloc.start()
    ll = grid_loglik(x, pa, pb, ia, ib, eps=1e-4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, peak
    u = x.toarray()
    n = 7
    naive = [np.sum(u[n] * np.log(g * pa[:, ia[n]] + (1 - g) * pb[:, ib[n]] + 1e-4)) for g in GRID]
    assert_close(ll[n], np.array(naive), dtype=np.float64, n_terms=genes)


def test_posterior_summaries():
    # a flat prior and a sharp likelihood at 0.3: mean ~0.3, interval narrow around it
    ll = -0.5 * ((GRID - 0.3) / 0.02) ** 2
    mean, lo, hi = posterior(ll[None], np.zeros((1, GRID.size)), 1.0)
    assert mean[0] == pytest.approx(0.3, abs=1e-3)
    assert lo[0] < 0.3 < hi[0] and hi[0] - lo[0] == pytest.approx(2 * 1.645 * 0.02, abs=0.01)
    # tau = 0 returns the prior mean
    prior = np.log(np.where(GRID < 0.5, 1.0, 3.0))[None]
    assert posterior(ll[None], prior, 0.0)[0][0] == pytest.approx(0.625, abs=0.01)


def test_best_tau_recovers_the_noise_level():
    """Likelihood peaks scattered around the truth: the fitted tau weighs them against the prior
    so that the posterior mean beats both the prior mean and the raw peak."""
    rng = np.random.default_rng(2)
    truth = rng.beta(4, 4, 300)
    peak = np.clip(truth + rng.normal(0, 0.1, 300), 0.01, 0.99)
    ll = -0.5 * ((GRID[None] - peak[:, None]) / 0.02) ** 2  # overconfident by 5x
    prior = np.broadcast_to(np.log(GRID**3 * (1 - GRID) ** 3), ll.shape)
    tau, r2 = best_tau(ll, prior, truth)
    assert tau < 1
    raw = 1 - ((peak - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert r2 > raw


def test_pair_tau_prefers_calibrated_softmax():
    rng = np.random.default_rng(3)
    n, k = 400, 6
    true_j = rng.integers(0, k, n)
    ll = rng.normal(0, 1, (n, k)) * 4  # overconfident: the true pair often loses
    ll[np.arange(n), true_j] += 5
    tau = pair_tau(ll, true_j)
    assert tau < 1

    def mean_log_p(t):  # the true pair's mean log probability under softmax(t * LL)
        z = t * ll - (t * ll).max(axis=1, keepdims=True)
        return float((z[np.arange(n), true_j] - np.log(np.exp(z).sum(axis=1))).mean())

    grid = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
    assert tau == max(grid, key=mean_log_p) and tau > min(grid)  # the best of the grid, not its end


def test_credible_interval_is_central():
    """A flat prior and a normal likelihood (mean 0.3, sd 0.05, far from the grid's ends): the
    90 % interval runs from the 5 % to the 95 % normal quantile, each within one grid step
    (0.005), not from the 10 % quantile (0.236, 0.018 above the 5 %)."""
    ll = -0.5 * ((GRID - 0.3) / 0.05) ** 2
    _, lo, hi = posterior(ll[None], np.zeros((1, GRID.size)), 1.0, level=0.9)
    step = GRID[1] - GRID[0]
    assert abs(lo[0] - stats.norm.ppf(0.05, 0.3, 0.05)) <= step
    assert abs(hi[0] - stats.norm.ppf(0.95, 0.3, 0.05)) <= step


def test_single_cell_group_prior_is_the_median_variance():
    """A one-cell group's log-size variance is the median of the other groups' (ddof 0), not
    their largest: three groups of variance v1 < v2 < v3 give the single cell v2."""
    tot = np.array([100.0, 300, 100, 150, 200, 100, 105, 110, 500])
    labels = np.array(["a", "a", "b", "b", "b", "c", "c", "c", "d"])
    prior = SizePrior.from_counts(tot, labels, ["a", "b", "c", "d"])
    var = [np.log(tot[labels == g]).var() for g in "abc"]
    assert len(set(np.round(var, 12))) == 3
    np.testing.assert_allclose(prior.var, var + [np.median(var)], rtol=1e-12)


def test_size_prior_log_density_in_closed_form():
    """logit(alpha) ~ N(mu_a - mu_b, var_a + var_b), carried to alpha by 1 / (alpha (1 - alpha)):
    scipy's normal log density, for A groups and B groups of different means and spreads."""
    prior = SizePrior(np.array([7.0, 8.0, 7.5, 6.0]), np.array([0.1, 0.4, 0.2, 0.9]))
    ia, ib = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    got = prior.log_density(ia, ib, 2)
    z = np.log(GRID / (1 - GRID))
    for n in range(4):
        m = prior.mean[ia[n]] - prior.mean[2 + ib[n]]
        v = prior.var[ia[n]] + prior.var[2 + ib[n]]
        want = stats.norm.logpdf(z, m, np.sqrt(v)) - np.log(GRID * (1 - GRID))
        np.testing.assert_allclose(got[n], want, rtol=1e-12, atol=1e-12)


def test_size_prior_reads_a_cell_without_counts_as_one_umi():
    tot = np.array([0.0, 100, 400, 50, 60])
    prior = SizePrior.from_counts(tot, np.array(["a", "a", "a", "b", "b"]), ["a", "b"])
    lc = np.log([1.0, 100, 400])
    np.testing.assert_allclose(prior.mean, [lc.mean(), np.log([50, 60]).mean()], rtol=1e-12)
    np.testing.assert_allclose(prior.var[0], lc.var(), rtol=1e-12)


def test_size_prior_of_one_cell_groups_only_is_a_quarter():
    prior = SizePrior.from_counts(np.array([100.0, 300]), np.array(["a", "b"]), ["a", "b"])
    np.testing.assert_array_equal(prior.var, [0.25, 0.25])


def test_grid_is_200_midpoints():
    np.testing.assert_allclose(GRID, (np.arange(200) + 0.5) / 200, rtol=0, atol=1e-15)


def test_credible_interval_at_exact_quantiles_and_at_the_grid_end():
    """Four grid points of equal weight (cdf 0.25, 0.5, 0.75, 1 exactly): the 50 % interval
    runs from the first point the cdf reaches 0.25 at to the first it reaches 0.75 at (the
    inverse cdf), not one point further. All weight on the last grid point: mean and both ends
    there. LLs of real PICs run to -1e5 and beyond: only their differences count."""
    ll = np.full((2, GRID.size), -np.inf)
    ll[0, [10, 20, 30, 40]] = 0.0
    ll[1, -1] = 0.0
    for shift in (0.0, -1e5):
        mean, lo, hi = posterior(ll + shift, np.zeros((2, GRID.size)), 1.0, level=0.5)
        np.testing.assert_array_equal(lo, [GRID[10], GRID[-1]])
        np.testing.assert_array_equal(hi, [GRID[30], GRID[-1]])
        np.testing.assert_allclose(mean, [GRID[[10, 20, 30, 40]].mean(), GRID[-1]], rtol=1e-12)
    mean, lo, hi = posterior(np.r_[0.0, np.full(GRID.size - 1, -50.0)][None] - 1e5, np.zeros((1, GRID.size)), 1.0)
    assert lo[0] == hi[0] == GRID[0] and mean[0] == pytest.approx(GRID[0], abs=1e-12)


def test_best_tau_minimises_the_squared_error_and_reports_its_r2():
    rng = np.random.default_rng(5)
    truth = rng.beta(2, 5, 120)
    peak = np.clip(truth + rng.standard_t(1.5, 120) * 0.05, 0.01, 0.99)  # heavy tails
    ll = -0.5 * ((GRID[None] - peak[:, None]) / 0.03) ** 2 - 1e4
    prior = np.broadcast_to(np.log(GRID * (1 - GRID) ** 4), ll.shape)
    tau, r2 = best_tau(ll, prior, truth)
    sse = {}
    for t in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0):
        w = np.exp(prior + t * (ll + 1e4))  # (the constant -1e4 cancels)
        sse[t] = (((w @ GRID) / w.sum(1) - truth) ** 2).sum()
    assert tau == min(sse, key=sse.get)
    assert r2 == pytest.approx(1 - sse[tau] / ((truth - truth.mean()) ** 2).sum(), rel=1e-9)
    # the least absolute error picks another tau on these tails
    sae = {t: np.abs((np.exp(prior + t * (ll + 1e4)) @ GRID) / np.exp(prior + t * (ll + 1e4)).sum(1) - truth).sum()
           for t in sse}  # fmt: skip
    assert min(sae, key=sae.get) != tau
    # PICs of one alpha: no variance to explain, no R^2
    assert np.isnan(best_tau(ll, prior, np.full(120, 0.5))[1])


def test_pair_tau_reads_only_differences_of_ll_and_reaches_2():
    """Underconfident LLs (the true pair always ahead, by little): the largest temperature; LLs
    of real PICs (-1e5 and below) give the same choice as the same LLs near 0."""
    rng = np.random.default_rng(6)
    n, k = 300, 5
    true_j = rng.integers(0, k, n)
    ll = rng.normal(0, 0.05, (n, k))
    ll[np.arange(n), true_j] += 1.0
    assert pair_tau(ll, true_j) == 2.0
    assert pair_tau(ll - 1e5 - 1e3 * rng.random((n, 1)), true_j) == 2.0
    ll = rng.normal(0, 1, (n, k)) * 4
    ll[np.arange(n), true_j] += 5
    assert pair_tau(ll - 2e5, true_j) == pair_tau(ll, true_j) < 1


def test_pair_tau_leaves_out_rows_whose_true_pair_cannot_fit():
    """A true pair at log-likelihood -inf (eps=0) scores -inf at every tau; the choice is the
    other rows' (it was 1.0 whatever they said)."""
    rng = np.random.default_rng(6)
    n, k = 300, 5
    true_j = rng.integers(0, k, n)
    ll = rng.normal(0, 0.05, (n, k))
    ll[np.arange(n), true_j] += 1.0
    bad = ll.copy()
    bad[0, true_j[0]] = -np.inf
    bad[1, :] = -np.inf  # a row no pair fits
    assert pair_tau(bad, true_j) == pair_tau(ll[2:], true_j[2:]) == 2.0
    assert pair_tau(np.full((3, k), -np.inf), true_j[:3]) == 1.0  # nothing to choose by


def test_r_squared_of_a_constant_truth_is_undefined():
    """A constant alpha (0.4: its mean is not exactly 0.4) has no variance to explain: NaN, not
    the -3 that the round-off of SST gave; otherwise 1 - SSE / SST by hand."""
    from gpu_sc._stats import r_squared

    truth = np.full(30, 0.4)
    assert np.isnan(r_squared(truth, truth + 0.01)) and np.isnan(r_squared([0.2], [0.3]))
    t, e = np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.5, 0.8])
    assert r_squared(t, e) == pytest.approx(1 - 0.05 / 0.5)
    rng = np.random.default_rng(0)
    ll = rng.normal(size=(30, GRID.size))
    assert np.isnan(best_tau(ll, np.zeros(GRID.size), truth)[1])
