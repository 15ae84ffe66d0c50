"""ml's alpha: a regression learned on simulated PICs, on top of the pair's likelihood.

The likelihood of alpha uses group-mean profiles, but a PIC holds two particular cells whose
profiles deviate from their groups' means (ribosomal and mitochondrial shares above all), and
that deviation biases alpha. How a PIC's composition reveals it is learned instead of modelled:
gradient-boosted trees map features of each PIC to its true alpha on PICs simulated from one half
of the reference and scored against the other half's groups (no PIC meets its own source cells).

Features (per PIC):
- its UMI shares in ``N_BINS`` bins of genes ordered by log(P_A / P_B) of the two populations'
  pooled profiles (bins of equal expression), plus a ribosomal-protein and a mitochondrial bin;
- the posterior mean of alpha for its pair at a few likelihood temperatures, the grid point of
  maximum likelihood, and the prior's mean logit (the partners' log size difference).
Two quantile models give the 5 % and 95 % bounds, widened by split conformal prediction on PICs
of cells the fit never saw: a 90 % prediction interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._stats import r_squared
from . import _posterior

N_BINS = 32
_TAUS = (0.1, 0.3, 1.0)  # likelihood temperatures of the posterior-mean features
STRIDE = 4  # the features read every 4th point of the posterior's alpha grid: ample for means
FEATURE_GRID = _posterior.GRID[::STRIDE]
_QUANTILES = (0.05, 0.95)
_RIBOSOMAL = re.compile(r"^RP[LS]\d", re.IGNORECASE)
_MITOCHONDRIAL = re.compile(r"^MT-", re.IGNORECASE)
MIN_TRAIN = 200  # fewer simulated PICs than this: no regression, the posterior mean stays
# 60 rounds at rate 0.2 fit as well as 150 at 0.1 (held-out alpha R^2 0.804 vs 0.804 on pbmc4k,
# 0.782 vs 0.777 on TNBC, 16,000 PICs) in 2/5 of the time
_TREES = {"max_iter": 60, "learning_rate": 0.2, "l2_regularization": 1.0,
          "early_stopping": False}


def _one_thread():
    """The trees' OpenMP on one thread. Their parallel regions are short (one per node and
    round), so where another process shares the cores, the team's threads spin at every barrier
    waiting for a descheduled one: 15 fold models of 4,000 PICs took 13.7 s beside one busy
    process on 2 cores against 4.0 s on one thread (3.2 s vs 3.8 s quiet). A rule from the load
    average was tried and dropped: it counts this process's own threads (one thread anyway on a
    quiet 2-core machine after a minute's work) and reads 0 under gVisor (the GPU machine, where
    the tests run 8 workers: every thread in each)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def composition_bins(population_profiles: np.ndarray, var_names, n_bins: int = N_BINS):
    """Genes x (n_bins + 2) 0/1 CSR matrix: which composition bin each gene counts in.

    population_profiles: (genes, 2) pooled profiles of population A and B. Genes expressed in
    either population are ordered by log(P_A / P_B) and cut into `n_bins` bins holding equal
    shares of their summed expression; ribosomal-protein and mitochondrial genes get the last two
    bins (their shares vary from cell to cell on their own); unexpressed genes count nowhere.
    """
    pa, pb = population_profiles[:, 0], population_profiles[:, 1]
    names = np.asarray(var_names, dtype=str)
    kind = np.zeros(names.size, dtype=np.int64)
    kind[[bool(_RIBOSOMAL.match(n)) for n in names]] = 1
    kind[[bool(_MITOCHONDRIAL.match(n)) for n in names]] = 2
    expressed = (pa + pb) > 0
    plain = np.flatnonzero(expressed & (kind == 0))
    tiny = 1e-9  # keeps a gene seen in one population only at a finite log ratio
    ratio = np.log((pa[plain] + tiny) / (pb[plain] + tiny))
    order = np.argsort(ratio, kind="stable")
    w = (pa + pb)[plain][order]
    before = (np.cumsum(w) - w) / max(w.sum(), 1e-300)  # expression share of the genes below
    bin_of = np.full(names.size, -1, dtype=np.int64)
    bin_of[plain[order]] = np.minimum((before * n_bins).astype(np.int64), n_bins - 1)
    bin_of[expressed & (kind == 1)] = n_bins
    bin_of[expressed & (kind == 2)] = n_bins + 1
    rows = np.flatnonzero(bin_of >= 0)
    return sp.csr_matrix((np.ones(rows.size), (rows, bin_of[rows])), shape=(names.size, n_bins + 2))


def features(x: sp.csr_matrix, bins: sp.csr_matrix, grid_ll: np.ndarray, prior,
             ia: np.ndarray, ib: np.ndarray, n_a: int) -> np.ndarray:
    """(PICs, n_bins + 2 + len(_TAUS) + 2) features of host CSR PICs `x` scored as pairs
    (ia, ib) with log-likelihoods `grid_ll` on FEATURE_GRID under the size prior `prior`."""
    totals = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    shares = np.asarray((x @ bins).todense()) / totals[:, None]
    log_prior = prior.log_density(ia, ib, n_a, grid=FEATURE_GRID)
    cols = [_posterior.posterior(grid_ll, log_prior, t, grid=FEATURE_GRID)[0] for t in _TAUS]
    cols.append(FEATURE_GRID[np.argmax(grid_ll, axis=1)])
    cols.append(prior.mean[ia] - prior.mean[n_a + ib])
    return np.hstack([shares, np.column_stack(cols)])


@dataclass
class AlphaRegression:
    """One point model and two quantile models per fold of the reference; predictions are the
    folds' average. R^2 and the interval's conformal margin come from every fold's check PICs,
    each predicted by its own fold's models, whose fit never saw their source cells
    (cross-conformal: every reference cell checks once, not a fifth of them)."""

    models: list  # per fold: (mean, 5 % quantile, 95 % quantile) trees
    r2: float = float("nan")
    margin: float = 0.0

    @classmethod
    def fit(cls, f: np.ndarray, alpha: np.ndarray, check_f: np.ndarray, check_alpha: np.ndarray,
            *, seed: int, fold: np.ndarray | None = None,
            check_fold: np.ndarray | None = None) -> AlphaRegression | None:  # fmt: skip
        """Fit per fold (`fold`, `check_fold`: each PIC's fold; None: one fold) on (f, alpha);
        score and calibrate on the check PICs. None when there are too few PICs or alpha does
        not vary."""
        if alpha.size < MIN_TRAIN or check_alpha.size < 10 or np.ptp(alpha) == 0:
            return None
        try:
            from sklearn.ensemble import HistGradientBoostingRegressor
        except ImportError as err:
            msg = ("deconvolve: method='ml' learns alpha with scikit-learn, which is not "
                   "installed; pip install 'gpu_sc[pic]', or pass alpha_model='posterior'.")
            raise ImportError(msg) from err
        fold = np.zeros(alpha.size, np.int64) if fold is None else np.asarray(fold)
        check_fold = np.zeros(check_alpha.size, np.int64) if check_fold is None else np.asarray(check_fold)
        folds = np.unique(fold)
        models, scored, preds = [], [], []
        for g in folds:
            rows, checks = fold == g, np.flatnonzero(check_fold == g)
            if rows.sum() < MIN_TRAIN // folds.size or np.ptp(alpha[rows]) == 0:
                continue  # too few PICs of this fold to learn from: the others predict

            def trees(rows=rows, **kw):
                return HistGradientBoostingRegressor(random_state=seed, **_TREES, **kw).fit(f[rows], alpha[rows])

            with _one_thread():
                models.append((trees(), *(trees(loss="quantile", quantile=q) for q in _QUANTILES)))
            if checks.size:
                scored.append(checks)
                preds.append(cls(models[-1:]).predict(check_f[checks]))
        if not models or sum(c.size for c in scored) < 10:
            return None
        model = cls(models)
        t = check_alpha[np.concatenate(scored)]
        mean, lo, hi = (np.concatenate(v) for v in zip(*preds, strict=True))
        model.r2 = r_squared(t, mean)
        # split conformal: widen both bounds by the finite-sample 90 % quantile of how far
        # the check PICs' alphas fall outside their intervals
        outside = np.sort(np.maximum(lo - t, t - hi))
        k = min(int(np.ceil((t.size + 1) * (_QUANTILES[1] - _QUANTILES[0]))), t.size) - 1
        model.margin = float(max(outside[k], 0.0))
        return model

    def predict(self, f: np.ndarray):
        """alpha, and the bounds of its 90 % interval, clipped to [0, 1] and ordered: the
        folds' models averaged."""
        if f.shape[0] == 0:
            return (np.zeros(0),) * 3
        with _one_thread():
            mean, lo, hi = (np.mean([m[j].predict(f) for m in self.models], axis=0) for j in range(3))
        mean = np.clip(mean, 0.0, 1.0)
        lo = np.clip(np.minimum(lo, mean) - self.margin, 0.0, 1.0)
        hi = np.clip(np.maximum(hi, mean) + self.margin, 0.0, 1.0)
        return mean, lo, hi
