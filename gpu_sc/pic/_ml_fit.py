"""What the ml and mixture methods learn from the singlets before any PIC is scored: the genes
and profiles of the pair search (`MLDesign`), the alpha model's profiles and size prior, the
temperatures of the pair and alpha posteriors (`calibrate`) and the alpha regression
(`fit_alpha_regression`), the last two on PICs simulated from parts of the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._backend import is_gpu, to_host
from . import _alpha_regression, _loglik, _posterior, _profiles
from ._args import derived_seed
from ._simulate import simulate_pics
from ._umi_draws import canonical_rows, in_canonical_order

_N_CALIBRATE = 400  # PICs simulated from the reference to fit the temperatures
N_FOLDS = 5  # folds of the alpha regression's reference: each checks the models fitted beside it


#: Genes per population, by their F statistic between that population's groups, in the
#: "informative" design (on top of the footprint markers and the genes between populations).
N_INFORMATIVE = 500


def group_f_statistic(s, labels, groups) -> np.ndarray:
    """One-way ANOVA F of every gene across `groups` (cells of `labels`): between-group over
    within-group variance of log1p expression normalised to 10,000 UMIs a cell. Large where the
    groups differ more than their cells do among themselves."""
    rows = np.flatnonzero(np.isin(labels, groups))
    x, lab = sp.csr_matrix(s[rows], dtype=np.float64), labels[rows]
    n, k = x.shape[0], len(groups)
    if k < 2 or n <= k:
        return np.zeros(s.shape[1])
    tot = np.asarray(x.sum(1)).ravel()
    y = sp.csr_matrix(sp.diags(1e4 / np.maximum(tot, 1)) @ x)
    y.data = np.log1p(y.data)
    mu = np.asarray(y.mean(0)).ravel()
    ssb = np.zeros(y.shape[1])
    for g in groups:
        r = lab == g
        if r.any():
            ssb += r.sum() * (np.asarray(y[r].mean(0)).ravel() - mu) ** 2
    sst = np.asarray(y.multiply(y).sum(0)).ravel() - n * mu**2
    ssw = np.maximum(sst - ssb, 1e-12)
    return (ssb / (k - 1)) / (ssw / (n - k))


def between_populations(s, is_a: np.ndarray, is_b: np.ndarray, n: int,
                        blacklisted: np.ndarray | None = None) -> tuple[np.ndarray, ...]:  # fmt: skip
    """(the `n` genes most raised in population A over B and the `n` most raised in B over A,
    each at least 2-fold, by the log2 ratio of the populations' size-normalised geometric means
    (pseudocount 0.1); the usable genes: more than 10 UMIs over both populations' cells, none
    blacklisted; those totals). What tells one cell from a pair: the pair search's genes
    between populations, and the doublet test's footprint."""
    in_ref = is_a | is_b
    pop = np.where(is_a, "A", "B")
    e = _profiles.geomean(s[in_ref], pop[in_ref], ["A", "B"], normalise=True)
    lfp = np.log2((0.1 + e[:, 0]) / (0.1 + e[:, 1]))
    total = np.asarray(s[in_ref].sum(0)).ravel()
    usable = total > 10
    if blacklisted is not None:
        usable &= ~np.asarray(blacklisted, bool)
    lfp[~usable] = 0
    between = np.concatenate([np.argsort(-lfp)[:n], np.argsort(lfp)[:n]])
    return between[np.abs(lfp[between]) >= 1], usable, total


class MLDesign:
    """The genes of the ml pair search and the profiles over them.

    ``"informative"`` (ml's default): the footprint markers, the genes that tell population A
    from population B, and per population the `N_INFORMATIVE` genes of largest F statistic
    between its groups, none of them blacklisted (ribosomal, mitochondrial, ...); pooled-count
    profiles over these genes only (no bucket for the rest). The multinomial over every gene
    lets highly expressed genes whose share varies from cell to cell more than from group to
    group (RPL/RPS, MT-, TMSB4X, TRBC1 vs TRBC2, ...) outvote the few genes that define fine
    groups (CD8A, CD8B, NKG7, ...); the F statistic keeps genes by how well they separate groups
    relative to that cell-to-cell noise.
    ``"all"``: every gene, pooled-count profiles (a multinomial over the whole transcriptome).
    ``"markers"``: the footprint markers plus the genes that tell population A from population B,
    and one "rest" bucket summing every other gene with > 10 UMIs, so that the multinomial still
    covers all UMIs (alpha stays the share of all UMIs) at a fraction of the cost per PIC.
    In the search, alpha is the A share of the UMIs on the design's genes; ml's reported alpha
    comes from its alpha model over all genes.
    """

    def __init__(self, s, labels, ga, gb, markers, n_between: int, genes: str,
                 blacklisted: np.ndarray | None = None):
        self.all = genes == "all"
        self.rest = None
        if self.all:
            return
        between, usable, total = between_populations(s, np.isin(labels, ga), np.isin(labels, gb), n_between,
                                                     blacklisted if genes == "informative" else None)  # fmt: skip
        self.genes = np.union1d(markers, between)
        if genes == "informative":
            for groups in (ga, gb):
                f = group_f_statistic(s, labels, groups)
                f[~usable] = 0
                top = np.argsort(-f, kind="stable")[:N_INFORMATIVE]
                self.genes = np.union1d(self.genes, top[f[top] > 0])
            return
        expressed = total > 10
        expressed[self.genes] = False
        self.rest = np.flatnonzero(expressed)

    def n_genes(self, n_all: int) -> int:
        if self.all:
            return n_all
        return int(self.genes.size + (self.rest is not None))

    def counts(self, x: sp.csr_matrix) -> sp.csr_matrix:
        if self.all:
            return x
        if self.rest is None:
            return x[:, self.genes].tocsr()
        return sp.hstack([x[:, self.genes], sp.csr_matrix(np.asarray(x[:, self.rest].sum(1)))],
                         format="csr")

    def profiles(self, s, labels, groups) -> np.ndarray:
        if self.all:
            return full_profiles(s, labels, groups)
        if self.rest is None:
            return _profiles.mean_profiles(s, labels, groups, self.genes,
                                           np.zeros(0, dtype=np.int64))[:-1]
        return _profiles.mean_profiles(s, labels, groups, self.genes, self.rest)


def full_profiles(s, labels, groups) -> np.ndarray:
    """Pooled-count profiles over all genes (genes x groups): the alpha model's reference."""
    return _profiles.mean_profiles(s, labels, groups, np.arange(s.shape[1]),
                                   np.zeros(0, dtype=np.int64))[:-1]


def _split_reference(labels, groups, rng, order, share: float = 0.5):
    """Two parts of the reference cells, `share` and the rest, split within each group (a
    one-cell group is in both parts, so that every group has cells in each). The groups are
    taken in sorted order and each one's cells in `order` (`canonical_rows`), so the parts do not
    depend on the order of the groups given or of the reference's rows."""
    first, second = np.zeros(labels.size, bool), np.zeros(labels.size, bool)
    for g in sorted(groups):
        rows = rng.permutation(order[labels[order] == g])
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


def calibrate(singlets, s, labels, ga, gb, groupby, design, *, n_umis, eps, seed, device: str = "cpu"):
    """Temperatures of the pair posterior and of the alpha likelihood, fitted on PICs simulated
    from one half of the reference against profiles of the other half (no PIC's source cell is
    in the profiles it is scored against). device: where the alpha grid's likelihood runs."""
    rng = np.random.default_rng(seed)
    order = canonical_rows(singlets)
    prof, src = _split_reference(labels, ga + gb, rng, order)
    sim = simulate_pics(in_canonical_order(singlets, src), groupby=groupby, a=ga, b=gb, n_pics=_N_CALIBRATE,
                        n_umis=n_umis, seed=derived_seed(seed, 2))
    if sim.n_obs < 10:
        return 1.0, 1.0, float("nan")
    x = sim.X.tocsr().astype(np.float64)
    ta, tb = _indices(ga, sim.obs[K.OBS_TRUE_A]), _indices(gb, sim.obs[K.OBS_TRUE_B])
    p = design.profiles(s[prof], labels[prof], ga + gb)
    ll = _loglik.all_pairs_loglik(design.counts(x), p[:, :len(ga)], p[:, len(ga):], eps=eps)
    tau_pair = _posterior.pair_tau(ll, ta + len(ga) * tb)
    full, prior = alpha_parts(s, labels, ga + gb, prof, full=p if design.all else None)
    grid_ll = _posterior.grid_loglik(_loglik.on_device(x, device), full[:, :len(ga)], full[:, len(ga):], ta, tb,
                                     eps=eps)  # fmt: skip
    tau_alpha, r2 = _posterior.best_tau(grid_ll, prior.log_density(ta, tb, len(ga)),
                                        sim.obs[K.OBS_TRUE_ALPHA].to_numpy())
    return tau_pair, tau_alpha, r2


def fit_alpha_regression(singlets, s, labels, ga, gb, groupby, bins, *, n_pics, n_umis, eps,
                          seed, device: str = "cpu", design: MLDesign | None = None, tau_pair: float = 1.0):
    """The alpha regression, cross-fitted over `N_FOLDS` folds of the reference cells: per fold,
    the other folds' cells are halved, PICs simulated from each half are scored against the other
    half's profiles and size prior (both ways round) to train that fold's models, and PICs of the
    fold's own cells (scored the same way) check them. So the regression's R^2 and the conformal
    margin of its interval come from cells its models never saw, and every reference cell checks
    once; the folds' models are averaged. None when the reference yields too few PICs.
    device: where the alpha grid's likelihood runs.

    One split into halves (its fifth of source cells checking) made alpha follow the draw: on
    the same pbmc4k PICs (benchmarks/pic_validate.py, seed 1) deconvolve's seeds 0-3 gave alpha
    R^2 0.53-0.67, TNBC interval coverage 0.75-0.90 (27 immune reference cells: a fifth is five).
    Five folds: R^2 0.619-0.635 and 0.795-0.805 (TNBC up from 0.76-0.78), coverage 0.865-0.883
    and 0.865-0.882, at about the same cost (15 models on a fifth of the PICs each instead of 3).

    With `design` (the pair search's genes), every simulated PIC is read at the pair the search
    finds against the other half (`tau_pair`: the search's temperature), as deconvolve reads real
    PICs, not at its true pair: the trees learn what the features say when the pair is wrong,
    and the conformal check PICs are then exchangeable with real ones, as the interval needs. At
    their true pairs the check PICs were easier than real PICs wherever the search errs, and the
    90 % intervals held 83-89 % on pbmc4k (seeds 7-8, groups of 40 and 75; 86-90 % then), while
    alpha R^2 rose from 0.68-0.71 to 0.71-0.74 on pbmc4k, 0.78-0.86 to 0.80-0.85 on TNBC, and
    stayed at 0.50-0.60 on pbmc68k."""
    rng = np.random.default_rng(derived_seed(seed, 5))
    order = canonical_rows(singlets)
    in_ref = np.isin(labels, ga + gb)
    fold_of = _folds(labels, (ga, gb), rng, order, N_FOLDS)
    parts = {"fit": ([], [], []), "check": ([], [], [])}
    for fold in range(N_FOLDS):
        check_rows = fold_of == fold
        halves = _split_reference(np.where(in_ref & ~check_rows, labels, ""), ga + gb, rng, order)
        for k, (model_rows, fit_rows) in enumerate((halves, halves[::-1])):
            full, prior = alpha_parts(s, labels, ga + gb, model_rows)
            search = None if design is None else design.profiles(s[model_rows], labels[model_rows], ga + gb)
            for j, (part, rows) in enumerate((("fit", fit_rows), ("check", check_rows))):
                want = max(1, int(n_pics * (0.4 if part == "fit" else 0.1) / N_FOLDS))
                held = set(labels[rows])  # a fold's check cells need not hold every small group
                a, b = [g for g in ga if g in held], [g for g in gb if g in held]
                if not (a and b):
                    continue
                sim = simulate_pics(in_canonical_order(singlets, rows), groupby=groupby, a=a, b=b, n_pics=want,
                                    n_umis=n_umis, seed=derived_seed(seed, 3 + 2 * (2 * fold + k) + j))
                if sim.n_obs == 0:
                    continue
                x = sim.X.tocsr().astype(np.float64)
                if search is not None:
                    found = _loglik.pair_scores(_loglik.on_device(design.counts(x), device), search[:, :len(ga)],
                                                search[:, len(ga):], eps=eps, temper=tau_pair)  # fmt: skip
                    ta, tb = found.ia, found.ib
                else:
                    ta, tb = _indices(ga, sim.obs[K.OBS_TRUE_A]), _indices(gb, sim.obs[K.OBS_TRUE_B])
                grid_ll = _posterior.grid_loglik(_loglik.on_device(x, device), full[:, :len(ga)], full[:, len(ga):],
                                                 ta, tb, eps=eps, grid=_alpha_regression.FEATURE_GRID)  # fmt: skip
                parts[part][0].append(_alpha_regression.features(x, bins, grid_ll, prior, ta, tb, len(ga)))
                parts[part][1].append(sim.obs[K.OBS_TRUE_ALPHA].to_numpy(float))
                parts[part][2].append(np.full(sim.n_obs, fold))
    if not (parts["fit"][0] and parts["check"][0]):
        return None
    (f, y, g), (fc, yc, gc) = ((np.vstack(v[0]), np.concatenate(v[1]), np.concatenate(v[2])) for v in parts.values())
    return _alpha_regression.AlphaRegression.fit(f, y, fc, yc, seed=seed, fold=g, check_fold=gc)


def _folds(labels, populations, rng, order, n_folds: int) -> np.ndarray:
    """Each reference cell's fold (0..n_folds-1), dealt round robin through each population's
    groups (sorted, each one's cells in a random permutation of `order`) from one random start
    per population: every fold holds cells of both populations once each has n_folds cells,
    and at most one cell more of a group than another fold. -1 for cells of no group and of
    one-cell groups (which the profiles always need). (A start per group left 160 of 200 draws
    of a five-cell population with a fold lacking it, whose check PICs could not be made.)"""
    fold = np.full(labels.size, -1, np.int64)
    for groups in populations:
        start = int(rng.integers(n_folds))
        for g in sorted(groups):
            rows = rng.permutation(order[labels[order] == g])
            if rows.size > 1:
                fold[rows] = (np.arange(rows.size) + start) % n_folds
                start += rows.size
    return fold


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
    return median_depth(tot)


def median_depth(totals: np.ndarray) -> int:
    """Median of the UMI totals above 0 (1,000 where none is)."""
    return int(np.median(totals[totals > 0])) if np.any(totals > 0) else 1000
