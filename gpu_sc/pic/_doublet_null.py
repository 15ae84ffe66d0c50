"""The QC tests' nulls: the LLR that singlets sorted as PICs get (doublet_test's `level`), and the
triplet LLR that doublets drawn from the reference get (triplet_scan's `level`).

The LLR of a PIC that is one cell is not chi2-distributed: cells differ from their group's
profile, and that difference reads as a second cell (on held-out pbmc4k cells at 800 UMIs,
`min_llr=3.3`, nominally p = 0.005, called 7.5-8.5 % of singlets). So the null is drawn from
the reference itself: cells of each population, down-sampled to depths drawn from the PICs',
each scored as a PIC would be (its best pair over the A x B groups by the fitted-alpha
likelihood, then the LLR at that pair) against profiles built without it (cross-fitted over two
halves of the drawn cells: a cell inside its own profile fits it too well). A PIC's p-value is
the share of the null of its nearer end's population (alpha >= 0.5: an A cell alone) at or
above its LLR.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._expected import nonzeros
from ._ml_fit import between_populations
from ._profiles import DEFAULT_BLACKLIST, blacklisted
from ._umi_draws import draw_rows

FOOTPRINT = 100  # genes raised in each population over the other (markers="footprint")
NULL_FOLDS = 10  # folds of the reference behind the triplet null's profiles


def singlet_null(s: sp.csr_matrix, codes: np.ndarray, n_groups: int, order: np.ndarray,
                 sides: tuple[np.ndarray, np.ndarray], markers: np.ndarray, depths: np.ndarray, *, n_null: int,
                 seed: int, eps: float, profiles, fit_alpha, loglik) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(sorted null LLRs of A cells, of B cells). s: the singlets' counts (host float64 CSR);
    codes: their group codes (of `n_groups`); order: their rows in canonical order (draws
    independent of the row order); sides: the A and B group codes; markers: the LL's gene mask; depths: the tested
    PICs' UMIs; n_null: cells drawn per side (at most its cells); profiles, fit_alpha, loglik:
    the test's own (group_profiles, _fit_alpha, _ll) so the null is scored as the PICs are."""
    groups_a, groups_b = sides
    pairs = [(a, b) for a in groups_a for b in groups_b]
    used = np.isin(codes, np.concatenate(sides))
    drawn, side_of = [], []
    for k, groups in enumerate(sides):
        rows = order[np.isin(codes[order], groups)]
        rng = np.random.default_rng([seed, k])
        drawn.append(rows[rng.permutation(rows.size)[:n_null]])
        side_of.append(np.full(drawn[-1].size, k))
    cells, side_of = np.concatenate(drawn), np.concatenate(side_of)
    half = np.arange(cells.size) % 2
    totals = np.rint(np.asarray(s[cells].sum(axis=1)).ravel())
    # depths drawn from the sorted PICs' depths: the draw does not follow the PICs' row order
    wants = np.minimum(np.random.default_rng([seed, 2]).choice(np.sort(depths), size=cells.size), totals)
    null = draw_rows(s, cells, wants, np.arange(cells.size), cells.size, seed)[:, np.flatnonzero(markers)].tocsr()
    llr = np.empty(cells.size)
    for h in (0, 1):
        out = np.zeros(s.shape[0], bool)
        out[cells[half == h]] = True
        keep = used & ~out
        prof = np.asarray(profiles(s[keep], codes[keep], n_groups, markers))
        mine = np.flatnonzero(half == h)
        llr[mine] = _best_pair_llr(null[mine], prof, pairs, eps, fit_alpha, loglik)
    return np.sort(llr[side_of == 0]), np.sort(llr[side_of == 1])


def _best_pair_llr(u: sp.csr_matrix, prof: np.ndarray, pairs, eps: float, fit_alpha, loglik) -> np.ndarray:
    """Each row's LLR (fitted alpha against its nearer end) at the pair whose fitted-alpha
    likelihood is the highest, as a search would assign the cell."""
    return _best_pairs(u, prof, pairs, eps, fit_alpha, loglik)[2]


def _best_pairs(u: sp.csr_matrix, prof: np.ndarray, pairs, eps: float, fit_alpha, loglik):
    """`best_pairs` of the rows of a host CSR matrix."""
    rows, cols, vals = nonzeros(u)
    return best_pairs(np, rows, cols, vals.astype(np.float64), u.shape[0], prof, pairs, eps, fit_alpha, loglik)


def best_pairs(xp, rows, cols, vals, n: int, prof, pairs, eps: float, fit_alpha, loglik):
    """(A group, B group, LLR against the nearer end) of each of `n` rows (their nonzeros
    `rows`, `cols`, `vals`, arrays of namespace `xp`) at its pair of highest fitted-alpha
    likelihood among `pairs`, as a search would assign the row; ties to the first pair."""
    best, llr = xp.full(n, -xp.inf), xp.zeros(n)
    ia, ib = xp.zeros(n, xp.int64), xp.zeros(n, xp.int64)
    for a, b in pairs:
        pa, pb = prof[cols, a], prof[cols, b]
        alpha = fit_alpha(xp, rows, vals, n, pa, pb, eps)
        ll = loglik(xp, rows, vals, n, pa, pb, alpha, eps)
        end = loglik(xp, rows, vals, n, pa, pb, xp.where(alpha >= 0.5, 1.0, 0.0), eps)
        better = ll > best
        best, llr = xp.where(better, ll, best), xp.where(better, ll - end, llr)
        ia, ib = xp.where(better, a, ia), xp.where(better, b, ib)
    return ia, ib, llr


def doublet_null(s: sp.csr_matrix, codes: np.ndarray, n_groups: int, order: np.ndarray,
                 sides: tuple[np.ndarray, np.ndarray], markers: np.ndarray, depths: np.ndarray, *, n_null: int,
                 seed: int, eps: float, profiles, fit_alpha, loglik, triplet_llr) -> np.ndarray:  # fmt: skip
    """Sorted triplet LLRs of `n_null` doublets drawn from the reference, scored as PICs are
    (triplet_scan's `level`). Each group's cells (canonical `order`) are dealt into
    `NULL_FOLDS` folds (fewer where a population has fewer cells); a doublet joins an A cell and
    a B cell of one fold, its UMIs drawn without replacement from the two cells' pooled counts
    to a depth drawn from the tested PICs' `depths` (so alpha follows the cells' sizes, as in
    simulate_pics), and is scored against profiles built without that fold's cells (nearly the
    whole reference, as the PICs' profiles are: two halves' noisier profiles made the null
    conservative, p <= 0.1 for 2-2.5 % of true doublets): its pair the one of highest
    fitted-alpha likelihood, then `triplet_llr(u, prof, ia, ib)` at that pair. Each population
    needs 2 reference cells or more (its doublets' cells are left out of its profiles)."""
    pairs = [(a, b) for a in sides[0] for b in sides[1]]
    used = np.isin(codes, np.concatenate(sides))
    rng = np.random.default_rng([seed, 3])
    pops = [order[np.isin(codes[order], groups)] for groups in sides]
    n_folds = int(min(NULL_FOLDS, *(rows.size for rows in pops)))
    fold_of = np.full(s.shape[0], -1)
    start = 0
    for rows in pops:  # each group dealt round the folds, from where the last group stopped
        for g in np.unique(codes[rows]):
            mine = rows[codes[rows] == g]
            fold_of[mine[rng.permutation(mine.size)]] = (start + np.arange(mine.size)) % n_folds
            start = (start + mine.size) % n_folds
    fold = np.arange(n_null) % n_folds
    cells = np.empty((n_null, 2), np.int64)
    for f in range(n_folds):
        mine = np.flatnonzero(fold == f)
        for k, rows in enumerate(pops):
            pool = rows[fold_of[rows] == f]
            cells[mine, k] = pool[rng.integers(pool.size, size=mine.size)]
    totals = np.rint(np.asarray(s.sum(axis=1)).ravel())
    t_a, t_b = totals[cells[:, 0]], totals[cells[:, 1]]
    want = np.minimum(rng.choice(np.sort(depths), size=n_null), t_a + t_b).astype(np.int64)
    from_a = rng.hypergeometric(t_a.astype(np.int64), t_b.astype(np.int64), want)
    parts = np.concatenate([cells[:, 0], cells[:, 1]])
    wants = np.concatenate([from_a, want - from_a])
    u = draw_rows(s, parts, wants, np.tile(np.arange(n_null), 2), n_null, seed)[:, np.flatnonzero(markers)].tocsr()
    llr = np.empty(n_null)
    for f in range(n_folds):
        keep = used & (fold_of != f)
        prof = np.asarray(profiles(s[keep], codes[keep], n_groups, markers))
        mine = np.flatnonzero(fold == f)
        ia, ib, _ = _best_pairs(u[mine], prof, pairs, eps, fit_alpha, loglik)
        llr[mine] = triplet_llr(u[mine], prof, ia, ib)
    return np.sort(llr)


def null_pvalues(llr: np.ndarray, near_a: np.ndarray, null: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each PIC's p-value against the null of its nearer end's side (`upper_pvalues`)."""
    p = np.full(llr.shape, np.nan)
    for k, side in enumerate(null):
        sel = near_a if k == 0 else ~near_a
        p[sel] = upper_pvalues(llr[sel], side)
    return p


def upper_pvalues(llr: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + values of the sorted `null` at or above each LLR) / (1 + the null's size); NaN where
    the LLR is."""
    p = np.full(llr.shape, np.nan)
    sel = ~np.isnan(llr)
    p[sel] = (1 + null.size - np.searchsorted(null, llr[sel], side="left")) / (1 + null.size)
    return p


def footprint_genes(s: sp.csr_matrix, codes: np.ndarray, sides: tuple[np.ndarray, np.ndarray], var_names,
                    n: int = FOOTPRINT) -> np.ndarray:  # fmt: skip
    """Mask of the genes that tell one cell from a pair: ml's genes between populations
    (`between_populations`: the `n` most raised in A over B and in B over A, 2-fold or more,
    none blacklisted by deconvolve's default). deconvolve's markers tell groups apart within a
    population, and a population of one group has none: the test then saw a pair by one side's
    genes only."""
    genes, _, _ = between_populations(s, np.isin(codes, sides[0]), np.isin(codes, sides[1]), n,
                                      blacklisted(var_names, DEFAULT_BLACKLIST))  # fmt: skip
    mask = np.zeros(s.shape[1], bool)
    mask[genes] = True
    return mask
