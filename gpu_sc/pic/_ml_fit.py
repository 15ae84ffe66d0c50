"""What the ml and mixture methods learn from the singlets before any PIC is scored: the genes
and profiles of the pair search (`MLDesign`), the alpha model's profiles and size prior, the
temperatures of the pair and alpha posteriors (`calibrate`) and the alpha regression
(`fit_alpha_regression`), the last two on PICs simulated from half of the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._backend import is_gpu, to_host
from . import _alpha_regression, _loglik, _posterior, _profiles
from ._simulate import simulate_pics

_N_CALIBRATE = 400  # PICs simulated from the reference to fit the temperatures


class MLDesign:
    """The genes of the ml pair search and the profiles over them.

    ``"all"``: every gene, pooled-count profiles (a multinomial over the whole transcriptome).
    ``"markers"``: the footprint markers plus the genes that tell population A from population B,
    and one "rest" bucket summing every other gene with > 10 UMIs, so that the multinomial still
    covers all UMIs (alpha stays the share of all UMIs) at a fraction of the cost per PIC.
    """

    def __init__(self, s, labels, ga, gb, markers, n_between: int, genes: str):
        self.all = genes == "all"
        if self.all:
            return
        in_ref = np.isin(labels, ga + gb)
        pop = np.where(np.isin(labels, ga), "A", "B")
        e = _profiles.geomean(s[in_ref], pop[in_ref], ["A", "B"], normalise=True)
        lfp = np.log2((0.1 + e[:, 0]) / (0.1 + e[:, 1]))
        total = np.asarray(s[in_ref].sum(0)).ravel()
        lfp[total <= 10] = 0
        between = np.concatenate([np.argsort(-lfp)[:n_between], np.argsort(lfp)[:n_between]])
        self.genes = np.union1d(markers, between[np.abs(lfp[between]) >= 1])
        expressed = total > 10
        expressed[self.genes] = False
        self.rest = np.flatnonzero(expressed)

    def n_genes(self, n_all: int) -> int:
        return n_all if self.all else int(self.genes.size + 1)

    def counts(self, x: sp.csr_matrix) -> sp.csr_matrix:
        if self.all:
            return x
        return sp.hstack([x[:, self.genes], sp.csr_matrix(np.asarray(x[:, self.rest].sum(1)))],
                         format="csr")

    def profiles(self, s, labels, groups) -> np.ndarray:
        if self.all:
            return full_profiles(s, labels, groups)
        return _profiles.mean_profiles(s, labels, groups, self.genes, self.rest)


def full_profiles(s, labels, groups) -> np.ndarray:
    """Pooled-count profiles over all genes (genes x groups): the alpha model's reference."""
    return _profiles.mean_profiles(s, labels, groups, np.arange(s.shape[1]),
                                   np.zeros(0, dtype=np.int64))[:-1]


def _split_reference(labels, groups, rng, share: float = 0.5):
    """Two parts of the reference cells, `share` and the rest, split within each group (a
    one-cell group is in both parts, so that every group has cells in each)."""
    first, second = np.zeros(labels.size, bool), np.zeros(labels.size, bool)
    for g in groups:
        rows = rng.permutation(np.flatnonzero(labels == g))
        if rows.size == 1:
            first[rows] = second[rows] = True
            continue
        cut = min(max(int(rows.size * share), 1), rows.size - 1)
        first[rows[:cut]] = True
        second[rows[cut:]] = True
    return first, second


def alpha_parts(s, labels, groups, rows=None, full=None):
    """All-gene pooled profiles (`full` where the caller has them: search profiles over all
    genes) and the size prior of the reference cells `rows` (None: all)."""
    if rows is not None:
        s, labels = s[rows], labels[rows]
    if full is None:
        full = full_profiles(s, labels, groups)
    return full, _posterior.SizePrior.from_counts(np.asarray(s.sum(1)).ravel(), labels, groups)


def _indices(groups, names) -> np.ndarray:
    return pd.Index(groups).get_indexer(names)


def calibrate(singlets, s, labels, ga, gb, groupby, design, *, n_umis, eps, seed):
    """Temperatures of the pair posterior and of the alpha likelihood, fitted on PICs simulated
    from one half of the reference against profiles of the other half (no PIC's source cell is
    in the profiles it is scored against)."""
    rng = np.random.default_rng(seed)
    prof, src = _split_reference(labels, ga + gb, rng)
    sim = simulate_pics(singlets[src], groupby=groupby, a=ga, b=gb, n_pics=_N_CALIBRATE,
                        n_umis=n_umis, seed=seed + 2)
    if sim.n_obs < 10:
        return 1.0, 1.0, float("nan")
    x = sim.X.tocsr().astype(np.float64)
    ta, tb = _indices(ga, sim.obs[K.OBS_TRUE_A]), _indices(gb, sim.obs[K.OBS_TRUE_B])
    p = design.profiles(s[prof], labels[prof], ga + gb)
    ll = _loglik.all_pairs_loglik(design.counts(x), p[:, :len(ga)], p[:, len(ga):], eps=eps)
    tau_pair = _posterior.pair_tau(ll, ta + len(ga) * tb)
    full, prior = alpha_parts(s, labels, ga + gb, prof, full=p if design.all else None)
    grid_ll = _posterior.grid_loglik(x, full[:, :len(ga)], full[:, len(ga):], ta, tb, eps=eps)
    tau_alpha, r2 = _posterior.best_tau(grid_ll, prior.log_density(ta, tb, len(ga)),
                                        sim.obs[K.OBS_TRUE_ALPHA].to_numpy())
    return tau_pair, tau_alpha, r2


def fit_alpha_regression(singlets, s, labels, ga, gb, groupby, bins, *, n_pics, n_umis, eps,
                          seed):
    """The alpha regression, learned on PICs simulated from each half of the reference and
    scored against the other half's profiles and size prior (both ways round). A fifth of each
    half's source cells make check PICs only: the regression's R^2 and the conformal margin of
    its interval come from cells it never saw. None when the reference yields too few PICs."""
    rng = np.random.default_rng(seed + 5)
    halves = _split_reference(labels, ga + gb, rng)
    parts = {"fit": ([], []), "check": ([], [])}
    for k, (model_rows, source_rows) in enumerate((halves, halves[::-1])):
        full, prior = alpha_parts(s, labels, ga + gb, model_rows)
        fit_rows, check_rows = _split_reference(np.where(source_rows, labels, ""), ga + gb, rng,
                                                share=0.8)
        for j, (part, rows) in enumerate((("fit", fit_rows), ("check", check_rows))):
            want = max(1, int(n_pics * (0.4 if part == "fit" else 0.1)))
            sim = simulate_pics(singlets[rows], groupby=groupby, a=ga, b=gb, n_pics=want,
                                n_umis=n_umis, seed=seed + 3 + 2 * k + j)
            if sim.n_obs == 0:
                continue
            x = sim.X.tocsr().astype(np.float64)
            ta, tb = _indices(ga, sim.obs[K.OBS_TRUE_A]), _indices(gb, sim.obs[K.OBS_TRUE_B])
            grid_ll = _posterior.grid_loglik(x, full[:, :len(ga)], full[:, len(ga):], ta, tb,
                                             eps=eps, grid=_alpha_regression.FEATURE_GRID)
            parts[part][0].append(_alpha_regression.features(x, bins, grid_ll, prior, ta, tb,
                                                             len(ga)))
            parts[part][1].append(sim.obs[K.OBS_TRUE_ALPHA].to_numpy(float))
    if not (parts["fit"][0] and parts["check"][0]):
        return None
    (f, y), (fc, yc) = ((np.vstack(v[0]), np.concatenate(v[1])) for v in parts.values())
    return _alpha_regression.AlphaRegression.fit(f, y, fc, yc, seed=seed)


def _row_totals(block) -> np.ndarray:
    return to_host(np.asarray(block.sum(axis=1)).ravel() if not is_gpu(block)
                   else block.sum(axis=1).ravel())


def median_total(blocks) -> int:
    """Median UMI total of the PICs with any counts (the depth of the calibration PICs)."""
    if isinstance(blocks, list):
        import dask

        tot = np.concatenate(dask.compute(*[dask.delayed(_row_totals)(b) for b in blocks]))
    else:
        tot = _row_totals(blocks)
    return int(np.median(tot[tot > 0])) if np.any(tot > 0) else 1000
