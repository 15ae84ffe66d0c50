"""Posterior of alpha for a chosen pair, with a prior from the partners' cell sizes.

A PIC's alpha is its A cell's share of UMIs, alpha = c_A / (c_A + c_B) for cell totals c_A, c_B
(the simulation of PICSEQ.md section 6 is built exactly so). The reference singlets of groups a
and b therefore give a prior on logit(alpha) = log c_A - log c_B: normal with mean mu_a - mu_b and
variance var_a + var_b, from the groups' log totals. Group-mean profiles are a coarse model of one
cell's profile, so the likelihood is overconfident; it is tempered, L(alpha)^tau, with tau fitted
on PICs simulated from one half of the reference against profiles of the other half
(`calibrate`). The estimate is the posterior mean on a grid, with a central credible interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._backend import sparse_module, to_host, xp_of
from .._ops._layout import value_rows
from .._stats import r_squared

GRID = np.linspace(0.0025, 0.9975, 200)
TAUS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
_CHUNK_CELLS = 2**24  # nonzeros x grid points held at once (128 MB of float64)


@dataclass
class SizePrior:
    """Per group: mean and variance of log total UMIs of the reference singlets."""

    mean: np.ndarray
    var: np.ndarray

    @classmethod
    def from_counts(cls, totals: np.ndarray, labels: np.ndarray, groups: list[str]) -> SizePrior:
        mean = np.empty(len(groups))
        var = np.empty(len(groups))
        for k, g in enumerate(groups):
            lc = np.log(np.maximum(totals[labels == g], 1.0))
            mean[k] = lc.mean()
            var[k] = lc.var() if lc.size > 1 else 0.0
        # a group of one cell (or identical totals) still gets a proper prior
        floor = np.median(var[var > 0]) if np.any(var > 0) else 0.25
        return cls(mean, np.where(var > 0, var, floor))

    def log_density(self, ia: np.ndarray, ib: np.ndarray, n_a: int,
                    grid: np.ndarray = GRID) -> np.ndarray:
        """log prior density of alpha on `grid` for pairs (ia, ib): (n, len(grid))."""
        m = self.mean[ia] - self.mean[n_a + ib]
        v = self.var[ia] + self.var[n_a + ib]
        z = np.log(grid / (1 - grid))
        # density of logit(alpha) ~ N(m, v), carried to alpha by the Jacobian 1 / (a (1 - a))
        return (-0.5 * (z[None] - m[:, None]) ** 2 / v[:, None]
                - 0.5 * np.log(2 * np.pi * v)[:, None] - np.log(grid * (1 - grid))[None])


def grid_loglik(x, pa: np.ndarray, pb: np.ndarray, ia: np.ndarray, ib: np.ndarray, *,
                eps: float, grid: np.ndarray = GRID) -> np.ndarray:
    """LL_n(alpha) = sum_g u_ng log(alpha P[g,a_n] + (1 - alpha) P[g,b_n] + eps) on `grid`.

    x: CSR PICs (n, genes), scipy or cupyx (then the work runs on the GPU); pa (genes, K_A),
    pb (genes, K_B); ia, ib the pair of each PIC. Returns a host (n, len(grid)) array; rows are
    streamed so that nonzeros x grid stays bounded.

    A gene's log curve depends only on the gene and the pair, which PICs of one pair share: the
    curves are taken once per (gene, pair) that occurs, and each PIC sums its genes' curves
    weighted by its counts, as one sparse (PICs x curves) by dense (curves x grid) product.
    Per nonzero that is a multiply-add a grid point instead of a log (20,000 training PICs of 9
    pairs: 0.2 M curves for 10 M nonzeros), and the same sums in the same order.
    """
    xp = xp_of(x.data)
    n = x.shape[0]
    out = np.zeros((n, grid.size))
    n_b = pb.shape[1]
    pa, pb, ia, ib, g_ = (xp.asarray(v) for v in (pa, pb, ia, ib, grid))
    indptr = x.indptr.astype(np.int64)
    rows_per = max(1, int(_CHUNK_CELLS // grid.size // max(1, x.nnz / max(n, 1))))
    n_pairs = pa.shape[1] * n_b
    for r0 in range(0, n, rows_per):
        r1 = min(n, r0 + rows_per)
        s, e = int(indptr[r0]), int(indptr[r1])
        ptr = indptr[r0:r1 + 1] - s
        row = value_rows(ptr, slice(0, e - s)) + r0
        # each nonzero's (gene, pair) as one key, numbered in key order (a sort of the chunk's
        # keys, not a table of every gene x pair: 33,694 genes x 2,500 pairs would be 84 M)
        key = x.indices[s:e].astype(np.int64) * n_pairs + ia[row] * n_b + ib[row]
        keys, number = xp.unique(key, return_inverse=True)
        g, pair = keys // n_pairs, keys % n_pairs
        a, b = pa[g, pair // n_b], pb[g, pair % n_b]
        logs = xp.log(g_[None] * (a - b)[:, None] + (b + eps)[:, None])
        # per PIC: its counts on its genes' curves
        seg = sparse_module(x.data).csr_matrix(
            (x.data[s:e].astype(np.float64), number.ravel(), ptr), shape=(r1 - r0, keys.size))
        out[r0:r1] = to_host(seg @ logs)
    return out


def posterior(ll: np.ndarray, log_prior: np.ndarray, tau: float, *, grid: np.ndarray = GRID,
              level: float = 0.9):
    """Posterior mean of alpha and a central `level` credible interval, per row."""
    w = log_prior + tau * ll
    w = np.exp(w - w.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    mean = w @ grid
    cdf = np.cumsum(w, axis=1)
    lo = grid[np.minimum((cdf < (1 - level) / 2).sum(1), grid.size - 1)]
    hi = grid[np.minimum((cdf < (1 + level) / 2).sum(1), grid.size - 1)]
    return mean, lo, hi


def best_tau(ll: np.ndarray, log_prior: np.ndarray, truth: np.ndarray, taus=TAUS):
    """The tau whose posterior mean has the least squared error on PICs of known alpha,
    and the R^2 it reaches."""
    means = [posterior(ll, log_prior, t)[0] for t in taus]
    k = int(np.argmin([((m - truth) ** 2).sum() for m in means]))
    return float(taus[k]), r_squared(truth, means[k])


def pair_tau(ll_pairs: np.ndarray, true_j: np.ndarray, taus=TAUS + (1.5, 2.0)):
    """The tau for which softmax(tau * LL) over pairs gives the true pair the highest mean log
    probability (a calibrated pair posterior). ll_pairs: (n, n_pairs); true_j: column of the
    true pair. A row whose true pair has log-likelihood -inf (a zero-probability fit, possible
    with eps=0) scores -inf at every tau: it says nothing about tau and is left out, as it
    would otherwise make every tau tie at -inf and return 1.0 whatever the other rows say."""
    best, best_score = 1.0, -np.inf
    finite = np.isfinite(ll_pairs[np.arange(ll_pairs.shape[0]), true_j])
    if not finite.any():
        return best
    ll_pairs, true_j = ll_pairs[finite], np.asarray(true_j)[finite]
    rows = np.arange(ll_pairs.shape[0])
    for t in taus:
        z = t * ll_pairs
        z = z - z.max(axis=1, keepdims=True)
        logp = z[rows, true_j] - np.log(np.exp(z).sum(axis=1))
        score = logp.mean()
        if score > best_score:
            best, best_score = float(t), score
    return best
