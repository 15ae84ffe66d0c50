"""Interaction genes against matched in-silico doublets: the calibrated test of
`interaction_genes` (``method="matched"``).

The published chi2 (PICSEQ.md section 8) sums a group's UMIs and treats them as Poisson around an
exactly known expectation, so the cell-to-cell variation inside a reference group, which real
PICs carry, reads as induction. Here every usable PIC n (assigned groups a_n, b_n, A share
alpha_n, depth N_n) gets `n_matched` synthetic doublets built the way a PIC is built, from
reference singlets of a_n and b_n: round(alpha_n N_n) UMIs of a random A cell and the rest from a
random B cell, drawn without replacement (with replacement where a cell holds fewer UMIs than
asked). If nothing is induced, the PIC and its doublets are exchangeable, so for each gene the
PIC's count is, for each gene, equally likely to be any of the n_matched + 1 counts of its set
(its own and its doublets'). The test is a stratified permutation test (each PIC a stratum): per
gene and PIC group k, T_k = sum_n x_n, whose null distribution is the convolution of the PICs'
uniform distributions over their sets. Its normal approximation (z_k = (T_k - E T_k) /
sqrt(Var T_k)) is far too optimistic in the tails for sparse genes: a PIC holding one UMI where
its ten doublets hold none scores z = 3.2 on its own, and a few such PICs in a small group gave
hundreds of false calls per null run. So every (group, gene) with |z_k| > `_EXACT_FROM` gets the
exact two-sided p-value of T_k (`exact_pvalue`), the rest keep the normal one (too large to
matter). The gene's p-value is Simes' combination of
its groups' p-values after genomic control of each group (see `matched_test`); BH across genes.
Before that, each group's variance gets the part the permutation cannot see: all doublets of a
group are drawn from the same few reference cells, whose mean is itself a sample
(`reference_variance`, `widen`). With replicates (mice, patients: `replicate_key`), a group's
p-value is then raised to that of a t test of the same sum against the spread of its units' sums
(`unit_pvalues`): the permutation test takes every PIC as an independent draw, so a sum carried
by the PICs of one unit that share what the reference lacks reads as the group's programme.

Which pair a PIC's doublets come from: its assigned one and, where deconvolve kept a pair
posterior, pairs drawn from that posterior (a second set of doublets, `doublet_groups`); the
gene's p-value is the larger of the two tests' (`least_significant`). Against the assigned pair
alone, a wrong call makes the genes that tell the PIC's true group from the assigned one read as
induced; against posterior draws alone, the alternative groups' genes read as depleted wherever
the posterior spreads mass over pairs the PIC is not (ml's posterior is somewhat under-confident
on cells outside the reference). The larger p-value is valid under either null and calls only
what neither explains. Measured (benchmarks/pic_interaction.py, 1,500 PICs where nothing is
induced, seeds 1-2, groups of 150 cells): TNBC 44-46 false calls with ml's calls, 28-59 with
picseq's, against 54-85 and 64-136 with the assigned pairs alone; pbmc4k 0-3 against 1-7; a 3x
programme recalled 1.0 with 0-9 % of up-calls elsewhere (assigned alone: 5-20 %). What is left on
TNBC is its simulation's reuse of 18 held-out immune cells (the true pairs themselves give 56-84
calls): with those cells as the units (`replicate_key`), 0-1 false calls over the same runs
(benchmarks/pic_interaction.py --replicate-key source_a). A reused cell's own genes enter the
sum once per PIC it is in, while the doublets carry the between-cell variation once: on pbmc68k,
tested on the same ~700 genes at every cap (--max-reuse), 0-1, 1-3 and 7 false calls with each
source cell in at most 3, 10 and about 25 PICs. Alpha's uncertainty is left out: the
true alpha instead of the estimate changed nothing (58 vs 56 calls).

The null compares counts at the PIC's own depth and alpha, so no expected layer and no
normalisation enter; the matched doublets' mean is reported as the 'expected' count. Counts, not
ranks, are summed: with ten doublets a rank caps each PIC's evidence, and a programme planted 3x
in one pair was found half as often by ranks as by counts on pbmc4k (benchmarks/pic_interaction.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy import signal, stats

from .._backend import sparse_module, to_host
from ._pic_rows import PicRows
from ._umi_draws import draw_rows, keyed_bits, keyed_uniforms

_CHI2_1_MEDIAN = float(stats.chi2.ppf(0.5, 1))
#: PICs whose matched doublets are held at once, ten rows each (15,000 PICs of 800 UMIs peaked at
#: 2.6 GiB in chunks of 5,000, 1.5 GiB of 2,000, 6.5 GiB in one; each chunk past the first costs
#: its draws twice: 158 s and 150 s against 130)
_CHUNK_PICS = 5000
# the keyed draws' streams (`keyed_bits`): a doublet's cells, their UMIs, its pair from the posterior
_CELLS, _UMIS, _PAIRS = 1, 2, 3
#: |z| of the normal approximation from which a (group, gene) gets its exact p-value
_EXACT_FROM = 2.0
#: pmf lengths from which two are convolved by FFT instead of directly
_FFT_FROM = 512
#: widest support of T_k computed exactly; wider ones (deep counts) are near normal
_EXACT_SPAN = 1 << 21
#: smallest exact p-value an FFT-convolved null resolves: its round-off is ~1e-16 a point, so a
#: tail over many points below this is noise (ten genes planted ever higher in 200 PICs came out
#: 1e-23, 0, 3e-14, 0, ... instead of falling); beyond it the normal approximation ranks genes
_FFT_RESOLUTION = 1e-10
#: the smallest p-value turned into a z (0 would give an infinite z, which chi2 would then drop)
_P_TINY = np.finfo(np.float64).tiny


def a_umis(alpha: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The UMIs a matched doublet takes from its A cell (the rest from its B cell)."""
    return np.rint(alpha * depth)


def matched_doublets(ref: sp.csr_matrix, ref_codes: np.ndarray, code_a: np.ndarray, code_b: np.ndarray,
                     alpha: np.ndarray, depth: np.ndarray, n_matched: int, keys: np.ndarray,
                     seed: int, ref_order: np.ndarray | None = None) -> sp.csr_matrix:  # fmt: skip
    """CSR (len(code_a) * n_matched, genes): PIC i's doublets in rows i * n_matched + m.

    ref: host CSR counts of the singlets; ref_codes: each singlet's group (-1: none); code_a /
    code_b: (PICs, n_matched) A and B group of each doublet (`doublet_groups`); alpha, depth:
    each PIC's A share and total UMIs; keys: each PIC's key (`name_keys` of its name). Each
    doublet takes round(alpha N) UMIs of a random cell of its A group and the rest of a random
    cell of its B group (`_umi_draws`), all drawn from (seed, its PIC's key), so that a PIC's
    doublets do not change when the PICs are reordered, subset or chunked. ref_order: the
    singlets' rows in the order a group's cells are numbered for the draw (`canonical_rows`, so
    that the doublets do not follow the singlets' row order; None: row order)."""
    n_pics = code_a.shape[0]
    if n_pics == 0:
        return sp.csr_matrix((0, ref.shape[1]))
    order = np.arange(ref_codes.size) if ref_order is None else np.asarray(ref_order)
    order = order[np.argsort(ref_codes[order], kind="stable")]
    order = order[ref_codes[order] >= 0]  # the group members, group by group
    sizes = np.bincount(ref_codes[order], minlength=int(ref_codes.max()) + 1)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_a = a_umis(alpha, depth).astype(np.int64)
    # parts in doublet order, the A part then the B part of each
    codes = np.stack([code_a, code_b], axis=-1).reshape(-1)
    wants = np.stack([np.repeat(n_a[:, None], n_matched, axis=1),
                      np.repeat((np.asarray(depth, np.int64) - n_a)[:, None], n_matched, axis=1)], axis=-1).reshape(-1)
    u = keyed_uniforms(seed, _CELLS, keys, 2 * n_matched).reshape(-1)
    pick = np.minimum((u * sizes[codes]).astype(np.int64), sizes[codes] - 1)
    cells = order[first[codes] + pick]
    # the A and B parts of a doublet summed in its row
    return draw_rows(ref, cells, wants, np.arange(codes.size) // 2, n_pics * n_matched, seed=seed,
                     keys=keyed_bits(seed, _UMIS, keys, 2 * n_matched).reshape(-1))  # fmt: skip


class Doublets:
    """The PICs' matched doublets chunk by chunk, `_CHUNK_PICS` PICs at a time: iterating gives
    (first PIC, end PIC, CSR of their doublets in `matched_doublets` order). A PIC's doublets are
    keyed by the seed and the PIC, so a second pass draws them again identically and memory
    holds one chunk's, not every PIC's (ten doublets a PIC: 100k PICs would hold a million);
    where one chunk holds all PICs it is drawn once."""

    def __init__(self, draw, n_pics: int, n_matched: int, kept: sp.csr_matrix | None = None):
        self._draw, self.n_matched, self._kept = draw, n_matched, kept
        step = n_pics if kept is not None else _CHUNK_PICS
        self.bounds = [(s, min(s + step, n_pics)) for s in range(0, n_pics, max(step, 1))] or [(0, 0)]

    @classmethod
    def drawn(cls, ref: sp.csr_matrix, ref_codes: np.ndarray, code_a: np.ndarray, code_b: np.ndarray,
              alpha: np.ndarray, depth: np.ndarray, n_matched: int, keys: np.ndarray,
              seed: int, ref_order: np.ndarray | None = None) -> Doublets:  # fmt: skip
        """`matched_doublets` of each chunk (arguments as there), drawn when iterated."""

        def draw(start: int, stop: int) -> sp.csr_matrix:
            part = slice(start, stop)
            return matched_doublets(ref, ref_codes, code_a[part], code_b[part], alpha[part], depth[part],
                                    n_matched, keys[part], seed, ref_order)  # fmt: skip

        return cls(draw, code_a.shape[0], n_matched)

    @classmethod
    def given(cls, matrix: sp.csr_matrix, n_matched: int) -> Doublets:
        """Doublets already drawn (all PICs' rows), as one chunk."""
        return cls(None, matrix.shape[0] // max(n_matched, 1), n_matched, kept=matrix)

    def __iter__(self):
        single = len(self.bounds) == 1
        for start, stop in self.bounds:
            if single and self._kept is None:
                self._kept = self._draw(start, stop)
            yield start, stop, self._kept if single else self._draw(start, stop)


def doublet_groups(code_a: np.ndarray, code_b: np.ndarray, posterior: sp.csr_matrix | None,
                   pair_codes: tuple[np.ndarray, np.ndarray] | None, n_matched: int,
                   keys: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(PICs, n_matched) A and B reference group of each matched doublet.

    Without a posterior every doublet takes its PIC's assigned groups (code_a, code_b). With
    one (CSR, PICs x pairs, rows summing to 1; pair_codes: each pair column's A and B reference
    group), each doublet's pair is drawn from its PIC's posterior: a PIC that could as well be
    another pair gets doublets of that pair too, so the genes that tell the two apart are not
    read as induced where the call is wrong. A row without posterior mass keeps the assignment.
    The draws are keyed by (seed, each PIC's key), as `matched_doublets`'."""
    n = code_a.size
    out_a = np.repeat(code_a[:, None], n_matched, axis=1)  # keys are unused without a posterior
    out_b = np.repeat(code_b[:, None], n_matched, axis=1)
    if posterior is None:
        return out_a, out_b
    post = sp.csr_matrix(posterior, dtype=np.float64)
    post.eliminate_zeros()
    mass = np.asarray(post.sum(axis=1)).ravel()
    has = mass > 0
    if not has.any():
        return out_a, out_b
    # every row's cumulative shares, shifted by its row index into (i, i + 1]: one sorted array,
    # so that one searchsorted draws for all rows (a uniform in [i, i + 1) lands in row i)
    row_of = np.repeat(np.arange(n), np.diff(post.indptr))
    cum = np.cumsum(post.data / mass[row_of])
    cum -= np.concatenate([[0.0], cum])[post.indptr[:-1]][row_of]
    cum += row_of
    last = post.indptr[1:][has] - 1
    cum[last] = row_of[last] + 1.0  # no round-off at a row's end
    u = np.arange(n)[:, None] + keyed_uniforms(seed, _PAIRS, keys, n_matched)
    pair = post.indices[np.minimum(np.searchsorted(cum, u, side="right"), post.nnz - 1)]
    out_a = np.where(has[:, None], pair_codes[0][pair], out_a)
    out_b = np.where(has[:, None], pair_codes[1][pair], out_b)
    return out_a, out_b


def reference_variance(ref: sp.csr_matrix, ref_codes: np.ndarray, code_a: np.ndarray, code_b: np.ndarray,
                       alpha: np.ndarray, depth: np.ndarray, groups: np.ndarray, n_groups: int,
                       n_matched: int) -> np.ndarray:  # fmt: skip
    """Per group and gene: the variance of `stratified_sums`' first sum that comes from the
    reference itself, a finite sample of each group's cells.

    Every doublet of every PIC assigned reference group r draws from the same n_r cells, so the
    doublets' expectation rests on those cells' mean share of each gene, which is off the
    population's by a sampling error of variance s_r^2 / n_r (s_r^2: the cells' variance of the
    gene's share of their UMIs) shared by all of them. The permutation test treats the doublets as
    fresh draws, so this term is missing from its variance; it grows with the square of the UMIs
    drawn from r (W_kr, summed over the group's PICs) while the permutation variance grows with
    their number: 1,500 PICs against groups of 30-60 reference cells called a hundred genes or more
    with nothing induced (TNBC, benchmarks/pic_interaction.py). The sum weighs each PIC's doublet
    mean by n_matched / (n_matched + 1) (its set's mean holds the PIC), hence that factor squared.
    Arguments as `matched_doublets` (code_a / code_b per doublet), with groups: each PIC's group
    in [0, n_groups)."""
    n_ref = int(ref_codes.max()) + 1
    totals = np.asarray(ref.sum(axis=1)).ravel()
    cells = np.flatnonzero((ref_codes >= 0) & (totals > 0))
    share = sp.diags(1.0 / totals[cells]) @ ref[cells].astype(np.float64)
    member = _indicator(ref_codes[cells], n_ref)
    n = np.asarray(member.sum(axis=1)).ravel()
    sums = np.asarray((member @ share).todense())
    squares = np.asarray((member @ share.multiply(share)).todense())
    with np.errstate(divide="ignore", invalid="ignore"):  # groups of fewer than two cells: no estimate
        var_mean = np.where((n >= 2)[:, None], (squares - sums**2 / n[:, None]) / (n * (n - 1))[:, None], 0.0)
    n_a = a_umis(alpha, depth)
    weights = np.zeros((n_groups, n_ref))
    per = code_a.shape[1]  # each doublet draws 1 / n_matched of its PIC's UMIs from its groups
    np.add.at(weights, (np.repeat(groups, per), code_a.ravel()), np.repeat(n_a / per, per))
    np.add.at(weights, (np.repeat(groups, per), code_b.ravel()), np.repeat((depth - n_a) / per, per))
    return (n_matched / (n_matched + 1)) ** 2 * (weights**2 @ np.maximum(var_mean, 0.0))


def widen(p: np.ndarray, var: np.ndarray, var_ref: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the permutation test (variance `var`) with the reference's own
    sampling variance `var_ref` added: their normal equivalent |z| scaled by
    sqrt(var / (var + var_ref)) (for the normal approximation, |num| / sqrt(var + var_ref))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.sqrt(var / (var + var_ref))
        return np.where(np.isfinite(p), 2 * stats.norm.sf(stats.norm.isf(p / 2) * shrink), p)


def _stack(obs: sp.csr_matrix, doublets: sp.csr_matrix, genes: np.ndarray, n_matched: int) -> np.ndarray:
    """(PICs, n_matched + 1, genes) counts: each PIC (column 0) and its doublets."""
    n = obs.shape[0]
    stack = np.empty((n, n_matched + 1, genes.size))
    stack[:, 0] = obs[:, genes].toarray()
    stack[:, 1:] = doublets[:, genes].toarray().reshape(n, n_matched, genes.size)
    return stack


class Sums(NamedTuple):
    """`stratified_sums`' per group x gene arrays."""

    num: np.ndarray  #: sum over the group's PICs of x - E x
    var: np.ndarray  #: the permutation variance of `num`: sum of Var x
    mean: np.ndarray  #: sum of the doublets' mean count
    spread: np.ndarray | None  #: the units' own variance of `num` (`unit_pvalues`); None without units
    n_units: np.ndarray | None  #: units per group (vector); None without units


def stratified_sums(obs: PicRows | sp.csr_matrix, doublets: Doublets | sp.csr_matrix, groups: np.ndarray,
                    n_groups: int, n_matched: int, units: np.ndarray | None = None) -> Sums:  # fmt: skip
    """Per group and gene: the permutation test's sums (E and Var over each PIC's set of
    n_matched + 1 counts) and, with `units`, the spread of the residuals r = x - E x between them.

    obs: the tested PICs (`PicRows`, or a scipy or cupyx CSR of them; on the GPU the products
    run there, each chunk of host-drawn doublets copied there, and the results come back);
    doublets: their matched doublets (`Doublets`, or a host CSR in `matched_doublets` order);
    groups: each PIC's group in [0, n_groups); units: each PIC's replicate (mouse, patient) as a
    code in [0, n), or None.
    spread = U / (U - 1) sum_u (R_u - b W_u)^2, the cluster-robust variance of num from the
    units' residual sums R_u and doublet-mean sums W_u, b = num / sum W: the group's shift taken
    in proportion to each unit's expected count (a programme raises a gene in proportion), so that
    differences in size, depth and partners between units are not read as spread.

    All in sparse products over the stored counts: a set's sum S1 and sum of squares S2 (the PIC's
    count plus its doublets', summed by one product) give r = (n x - S1) / n and Var x = (n S2 -
    S1^2) / n^2 (n = n_matched + 1). Their numerators are integers, summed per group (unit) by one
    product each and divided once: exact below 2**53 in any order of summation, however the
    PICs are chunked and on either device, so a gene whose expected count sits on `min_counts` is
    tested or not the same way everywhere. A set of zeros adds nothing, so nothing is made dense
    but the results: at 17,646 genes the dense sets (PICs x 11 x genes) took 6.4 of the test's 16 s."""
    if not isinstance(doublets, Doublets):
        doublets = Doublets.given(doublets, n_matched)
    obs = obs if isinstance(obs, PicRows) else PicRows.of(obs)
    xp, sparse = obs.xp, obs.sparse
    n = n_matched + 1
    n_genes = obs.n_genes
    n_num, n2_var, d_sum = (xp.zeros((n_groups, n_genes)) for _ in range(3))  # integer-valued
    if units is not None:  # residual and doublet sums per (group, unit) cell
        width = int(units.max()) + 1
        cells, cell_of = np.unique(groups.astype(np.int64) * width + units, return_inverse=True)
        cell_of = cell_of.ravel()
        cell_r, cell_d = xp.zeros((cells.size, n_genes)), xp.zeros((cells.size, n_genes))
    for start, stop, chunk in doublets:
        x = sparse.csr_matrix(obs.on_device(start, stop), dtype=np.float64)
        d = sparse.csr_matrix(chunk, dtype=np.float64)  # host draws: copied to the GPU there
        of_pic = _indicator(np.repeat(np.arange(stop - start), n_matched), stop - start, like=x)  # doublet -> PIC
        d1 = of_pic @ d
        s1 = x + d1
        s2 = x.multiply(x) + of_pic @ d.multiply(d)
        resid_n = x * n - s1  # n r
        member = _indicator(groups[start:stop], n_groups, like=x)
        n_num += (member @ resid_n).toarray()
        n2_var += (member @ (s2 * n - s1.multiply(s1))).toarray()  # n^2 Var x
        d_sum += (member @ d1).toarray()
        if units is not None:
            to_cell = _indicator(cell_of[start:stop], cells.size, like=x)
            cell_r += (to_cell @ resid_n).toarray()
            cell_d += (to_cell @ d1).toarray()
    num, var, mean = (to_host(a) for a in (n_num / n, n2_var / n**2, d_sum / n_matched))
    if units is None:
        return Sums(num, var, mean, None, None)
    cell_r, cell_w = to_host(cell_r) / n, to_host(cell_d) / n_matched
    cell_group = cells // width
    n_units = np.bincount(cell_group, minlength=n_groups).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(mean > 0, num / np.where(mean > 0, mean, 1.0), 0.0)
    dev = np.zeros(num.shape)
    np.add.at(dev, cell_group, (cell_r - b[cell_group] * cell_w) ** 2)
    spread = np.where((n_units > 1)[:, None], dev * (n_units / np.maximum(n_units - 1, 1))[:, None], 0.0)
    return Sums(num, var, mean, spread, n_units)


def _indicator(labels: np.ndarray, n_labels: int, like=None):
    """(n_labels, len(labels)) 0/1 CSR: row k sums the columns labelled k; on the device of
    `like` (a scipy or cupyx matrix) when given, else a scipy matrix."""
    host = sp.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))), shape=(n_labels, labels.size))
    return host if like is None or sparse_module(like) is sp else sparse_module(like).csr_matrix(host)


def unit_pvalues(num: np.ndarray, spread: np.ndarray, n_units: np.ndarray) -> np.ndarray:
    """Two-sided p-values (groups x genes) of num against the units' own spread: t = num /
    sqrt(spread) on n_units - 1 degrees of freedom; 1 where a group has one unit or the residuals
    do not spread (nothing to judge a difference by).

    The permutation test takes every PIC as an independent draw; PICs of one mouse or patient
    share what the reference lacks (the donor's own genes, its state), and a sum carried by one
    unit's PICs reads as the group's programme. Alone this test is not valid for sparse genes
    (its variance is small where no PIC of a group holds the gene, which reads as 'down'), hence
    the larger of the two p-values (`guarded`, in `matched_test`). Not the default, PIC by PIC:
    on synthetic PICs that never share a cell (pbmc4k, `--distinct`) it lowered the recall of a
    3x programme from 0.70-0.90 to 0.20-0.65 at no gain in calibration (0 false calls either way):
    its variance is the programme's own, which is wider than the null's."""
    df = n_units - 1.0
    ok = (df >= 1)[:, None] & (spread > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(ok, np.abs(num) / np.sqrt(np.where(ok, spread, 1.0)), 0.0)
    return np.where(ok, 2 * stats.t.sf(t, np.maximum(df, 1.0)[:, None]), 1.0)


def guarded(p: np.ndarray, p_units: np.ndarray) -> np.ndarray:
    """The larger of the permutation p-values and the units' (`unit_pvalues`); NaN stays NaN."""
    return np.where(np.isfinite(p), np.maximum(p, p_units), p)


def exact_pvalue(r2: np.ndarray) -> float | None:
    """Two-sided p-value of the stratified sum from integer counts r2 (PICs, n_matched + 1),
    column 0 the PIC: under the null each PIC's count is any of its n_matched + 1 with equal
    probability, independently, so the sum's distribution is the convolution of those uniforms.
    p = min(1, 2 min(P(T >= t), P(T <= t))); None where the support is wider than _EXACT_SPAN,
    -1 where p lies below what an FFT-convolved null resolves (`_FFT_RESOLUTION`)."""
    total = ExactSum()
    add_sets([total], r2[:, :, None])
    return total.pvalue(r2.shape[1])


class ExactSum:
    """The null distribution of one group's stratified sum of one gene, gathered PIC chunk by PIC
    chunk (`add_sets`): each PIC set as its counts of values above its minimum (its kind: PICs of
    one kind have the same pmf, convolved with itself by squaring; a sparse gene has a few kinds,
    many PICs each), the observed sum above the minima and the support's width. The p-value
    depends on the kinds gathered, not on how the PICs were chunked."""

    __slots__ = ("kinds", "observed", "span")

    def __init__(self):
        self.kinds: dict[bytes, int] = {}
        self.observed = 0
        self.span = 0

    def pvalue(self, n_values: int, squares: dict | None = None) -> float | None:
        """The two-sided p-value (`exact_pvalue`) of sets of `n_values` values each; -1 where it
        lies below what an FFT-convolved null resolves (`_FFT_RESOLUTION`). squares: each kind's
        pmf squared again and again, kept across calls (genes share most kinds)."""
        if self.span > _EXACT_SPAN:
            return None
        if not self.kinds:
            return 1.0
        squares = {} if squares is None else squares
        fft = [False]  # set where a convolution on the way went by FFT (direct ones are exact)
        pmfs = [_power(key, n_values, t, squares, fft) for key, t in sorted(self.kinds.items())]
        while len(pmfs) > 1:  # pairwise: the long convolutions happen few times
            pmfs = [_convolve(pmfs[i], pmfs[i + 1], fft) if i + 1 < len(pmfs) else pmfs[i]
                    for i in range(0, len(pmfs), 2)]  # fmt: skip
        pmf = np.maximum(pmfs[0], 0.0)  # FFT round-off below zero
        upper = pmf[self.observed:].sum()
        lower = pmf[:self.observed + 1].sum()
        p = float(min(1.0, 2 * min(upper, lower)))
        return -1.0 if fft[0] and p < _FFT_RESOLUTION else p


def add_sets(sums: list[ExactSum], counts: np.ndarray) -> None:
    """Gather integer counts (PICs, n_matched + 1, genes), column 0 of axis 1 each PIC's own,
    into `sums` (one `ExactSum` per gene). Each PIC set's kind is its histogram of values above
    its minimum; the kinds of all genes whose histograms fit one integer as digits (sparse genes,
    most of them) are found together by one histogram and one sort, the others gene by gene."""
    sets = np.moveaxis(counts, 2, 0)  # genes, PICs, values
    lo = sets.min(axis=2)
    span = sets.max(axis=2) - lo
    vary = span > 0  # a PIC whose values all tie adds a constant
    own = np.where(vary, sets[:, :, 0] - lo, 0)
    for total, w, o in zip(sums, span.sum(axis=1), own.sum(axis=1), strict=True):
        total.span += int(w)
        total.observed += int(o)
    open_ = np.array([total.span <= _EXACT_SPAN for total in sums]) & vary.any(axis=1)
    base = counts.shape[1] + 1
    narrow = open_ & ((span.max(axis=1) + 1) * np.log2(base) < 62)
    if narrow.any():
        gene, pic = np.nonzero(vary & narrow[:, None])
        _count_kinds(sums, gene, sets[gene, pic] - lo[gene, pic][:, None], base)
    for g in np.flatnonzero(open_ & ~narrow):
        pic = np.flatnonzero(vary[g])
        _count_kinds(sums, np.full(pic.size, g), sets[g, pic] - lo[g, pic][:, None], base)


def _count_kinds(sums: list[ExactSum], gene: np.ndarray, shifted: np.ndarray, base: int) -> None:
    """Add PIC sets (rows of `shifted`: values above the set's minimum) of genes `gene` to
    their `sums`' kinds: histogram of each row, as one integer (its counts the digits, < base)
    where that fits, and counted per (gene, kind)."""
    width = int(shifted.max()) + 1
    flat = (np.arange(gene.size)[:, None] * width + shifted).ravel()
    hist = np.bincount(flat, minlength=gene.size * width).reshape(gene.size, width)
    if width * np.log2(base) < 62:
        code = hist @ base ** np.arange(width, dtype=np.int64)
        order = np.lexsort((code, gene))
        gene_o, code_o = gene[order], code[order]
        new = np.ones(order.size, bool)
        new[1:] = (gene_o[1:] != gene_o[:-1]) | (code_o[1:] != code_o[:-1])
        first = order[new]
        times = np.diff(np.append(np.flatnonzero(new), order.size))
    else:
        _, first, times = np.unique(np.column_stack([gene, hist]), axis=0, return_index=True, return_counts=True)
    kinds = hist[first]
    ends = width - np.argmax(kinds[:, ::-1] > 0, axis=1)  # past each kind's highest value
    for g, kind, end, t in zip(gene[first], kinds, ends, times, strict=True):
        key = kind[:end].astype(np.int64).tobytes()
        table = sums[g].kinds
        table[key] = table.get(key, 0) + int(t)


def _power(key: bytes, n_values: int, k: int, squares: dict, fft: list) -> np.ndarray:
    """The pmf of kind `key` (counts of each value over `n_values`) convolved with itself `k`
    times (k >= 1), by squaring; the squarings are kept in `squares` for other genes. fft[0] is
    set where a convolution behind the result went by FFT."""
    chain = squares.setdefault((key, n_values), [np.frombuffer(key, np.int64) / n_values])
    out, j = None, 0
    while True:
        if k & 1:
            if j and chain[j - 1].size >= _FFT_FROM:  # this square (maybe kept from a gene before) was one
                fft[0] = True
            out = chain[j] if out is None else _convolve(out, chain[j], fft)
        k >>= 1
        if not k:
            return out
        j += 1
        if j == len(chain):
            chain.append(_convolve(chain[-1], chain[-1], [False]))


def _convolve(a: np.ndarray, b: np.ndarray, fft: list) -> np.ndarray:
    if min(a.size, b.size) >= _FFT_FROM:
        fft[0] = True
        return signal.fftconvolve(a, b)
    return np.convolve(a, b)


def exact_pvalues(z: np.ndarray, obs: PicRows | sp.csr_matrix, doublets: Doublets, groups: np.ndarray,
                  tested: np.ndarray) -> np.ndarray:  # fmt: skip
    """Two-sided p-values per group and gene: exact (`exact_pvalue`, gathered over the chunks of
    `doublets`; obs: the tested PICs, `PicRows` or a host CSR) where the tested gene's |z| >
    _EXACT_FROM and the support allows, else from the normal approximation; NaN where z is NaN.
    An exact p-value below what its FFT resolves is the normal one, at most `_FFT_RESOLUTION`."""
    p = np.where(np.isfinite(z), 2 * stats.norm.sf(np.abs(np.nan_to_num(z))), np.nan)
    far = (np.abs(np.nan_to_num(z)) > _EXACT_FROM) & tested[None, :]
    todo = {int(k): np.flatnonzero(far[k]) for k in np.flatnonzero(far.any(axis=1))}
    if not todo:
        return p
    sums = {k: [ExactSum() for _ in genes] for k, genes in todo.items()}
    m = doublets.n_matched
    obs = obs if isinstance(obs, PicRows) else PicRows.of(obs)
    for start, stop, chunk in doublets:
        x = obs.host(start, stop)
        for k, genes in todo.items():
            rows = np.flatnonzero(groups[start:stop] == k)
            if rows.size == 0:
                continue
            drows = (rows[:, None] * m + np.arange(m)).ravel()
            add_sets(sums[k], np.rint(_stack(x[rows], chunk[drows], genes, m)).astype(np.int64))
    squares: dict = {}
    for k, genes in todo.items():
        for g, total in zip(genes, sums[k], strict=True):
            exact = total.pvalue(m + 1, squares)
            if exact is not None:
                p[k, g] = exact if exact >= 0 else min(p[k, g], _FFT_RESOLUTION)
    return p


def matched_test(z: np.ndarray, p: np.ndarray, tested: np.ndarray, p_units: np.ndarray | None = None) -> dict:
    """Per gene from the groups' z (groups x genes, NaN where the group does not vary) and their
    two-sided p-values, each group's p-value after genomic control raised to at least its
    `p_units` (`guarded`, when given): 'pvalue' (Simes' combination of the groups' p-values),
    'chi2' (sum of the groups' z^2 equivalent to their p-values) and 'df' (groups that vary),
    'direction' (sign of z in the group that decides the p-value); 'z' (the groups' z equivalent
    to their final p-values) and 'inflation' per group. NaN where no group varies.

    Genomic control: each group's z are divided by the square root of its inflation, the median
    z^2 over the `tested` genes where the group varies over the median of chi2 with one degree of
    freedom, when above 1. Most genes are not induced, so their z are the group's null; what
    widens it beyond the exchangeable doublets' (PICs that share a cell or a donor, a misassigned
    partner, an alpha off its true value) widens every gene's z, while an induced programme stays
    in the tail. Simes' combination keeps a programme induced in one pair among many as visible
    as one induced in all (a sum of z^2 over 50 groups would drown it). The units' p-values
    enter after the control: they raise the bulk's p-values, which would otherwise lower the
    inflation measured on them and leave the permutation test's own uncorrected."""
    has = np.isfinite(z)
    sign = np.sign(np.nan_to_num(z))
    ze = np.where(has, sign * stats.norm.isf(np.maximum(np.where(has, p, 1.0), _P_TINY) / 2), np.nan)
    inflation = np.ones(z.shape[0])
    for k in range(z.shape[0]):
        bulk = ze[k, has[k] & tested]
        if bulk.size:
            inflation[k] = max(1.0, float(np.median(bulk**2)) / _CHI2_1_MEDIAN)
    ze /= np.sqrt(inflation)[:, None]
    p_group = np.where(has, 2 * stats.norm.sf(np.abs(np.nan_to_num(ze))), np.nan)
    if p_units is not None:  # after the control: the units' p-values are no part of its bulk
        p_group = guarded(p_group, p_units)
        ze = np.where(has, sign * stats.norm.isf(np.maximum(np.where(has, p_group, 1.0), _P_TINY) / 2), np.nan)
    p_group = np.where(has, p_group, np.inf)
    df = has.sum(axis=0)
    order = np.sort(p_group, axis=0)  # groups that do not vary (inf) last, never the minimum
    rank = np.arange(1, z.shape[0] + 1)[:, None]
    with np.errstate(invalid="ignore"):  # inf * 0 where no group varies
        simes = np.where(rank <= df, order * df / rank, np.inf).min(axis=0)
    decisive = np.argmin(p_group, axis=0)
    some = df > 0
    return {
        "z": ze,
        "pvalue": np.where(some, np.minimum(simes, 1.0), np.nan),
        "chi2": np.where(some, np.nansum(np.where(np.isfinite(ze), ze, 0.0) ** 2, axis=0), np.nan),
        "df": np.where(some, df, np.nan).astype(np.float64),
        "direction": sign[decisive, np.arange(z.shape[1])],
        "inflation": inflation,
    }


def least_significant(first: dict, second: dict) -> dict:
    """Per gene, the statistics (p-value, chi2, df, direction and the groups' z) of whichever of
    two `matched_test` results gives it the larger p-value; the groups' inflation: the larger.
    The larger of two valid p-values is valid: a gene is called only where neither null explains
    it (the PICs' assigned pairs, pairs drawn from their posterior)."""
    take = np.nan_to_num(second["pvalue"], nan=-1.0) > np.nan_to_num(first["pvalue"], nan=-1.0)
    out = {key: np.where(take, second[key], first[key]) for key in ("pvalue", "chi2", "df", "direction")}
    out["z"] = np.where(take[None, :], second["z"], first["z"])
    out["inflation"] = np.maximum(first["inflation"], second["inflation"])
    return out
