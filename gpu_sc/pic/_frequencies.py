"""How often each pair of states meets, per condition, with uncertainty; and which pairs differ
in abundance between two conditions.

Hard calls count a PIC for one pair even where its posterior is split between similar pairs,
and at fine groups most calls are wrong. The composition is instead the mean of the PICs' pair
posteriors that ``deconvolve`` keeps (``obsm['pic_pair_posterior']``). (The maximum-likelihood
mixture of pairs, EM over the same posteriors, was measured and dropped: the pair likelihood is
misspecified enough that its optimum sits far from the truth, total-variation distance 0.34 vs
0.10 for the mean on 600 pbmc68k T + DC PICs, ml.) Given the singlets, the mean is corrected
for the confusion between similar groups (`_confusion`), and the estimate is the blend of the
mean, that correction and the hard calls' shares of least estimated squared error
(`blend_weights`): ml's posterior is tempered for its log score, so on fine groups its mean is
pulled further towards confused pairs than the calls are (benchmarks/pic_frequencies.py: TV of
the calls 0.07-0.09 against the mean's 0.11-0.13 on CD8 + NK x MNP), while the correction's noise
is that of its confusion matrix. Intervals: percentile bootstrap over
PICs, or over the units they come from (`replicate_key`), and with the correction over the
reference cells behind the simulated PICs.
Standard errors and the test between conditions: the mean's own variance, s^2 / n per pair (the
bootstrap's standard deviation agrees within a few per cent, without its noise); with replicates
(mice, patients), Welch's t test of the replicates' compositions.
"""

from __future__ import annotations

import datetime
import itertools
import math
import numbers
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .. import _keys as K
from .._settings import Progress, user_stacklevel
from .._validation import check_anndata, check_flag, check_int, check_number, check_seed, make_actual
from ._args import column_name, population_groups, replicate_codes, warn_unused
from ._confusion import (Simulated, confusion, deconvolved_depth, kept_posterior, label_means, pic_depths,
                         simulated_posteriors, unmix)  # fmt: skip
from ._expected import check_same_genes, obs_column
from .._stats import bh_fdr

_CELLS = 2**23  # PICs x replicates held at once (64 MB of float64)
_NOTHING_OK = "no PIC with pic_status 'ok' and a pair posterior; nothing to count."


def _units(codes: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Per column of `codes` (n, u): each row's unit (0..U-1) and the number of units U."""
    out = []
    for col in np.asarray(codes).reshape(codes.shape[0], -1).T:
        _, inv = np.unique(col, return_inverse=True)
        out.append((inv.ravel(), int(inv.max()) + 1 if inv.size else 0))
    return out


def _weights(units: list[tuple[np.ndarray, int]], size: int, rng) -> np.ndarray:
    """(n, size) bootstrap weights of the rows: per column of `units`, its units drawn with
    replacement (multinomial counts), and each row weighing the product of its units' counts.
    One column of one unit per row is the plain bootstrap; rows that share a unit (PICs of one
    mouse, or of one source cell) are not independent, and two columns is the bootstrap of a
    crossed design (A cells x B cells: Owen's pigeonhole bootstrap, slightly conservative)."""
    w = None
    for inv, n_units in units:
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=size).T.astype(np.float64)
        w = counts[inv] if w is None else w * counts[inv]
    return w


def _bootstrap(post: sp.csr_matrix, n_boot: int, rng, track, units=None) -> np.ndarray:
    """(K, n_boot) mean posteriors of the PICs resampled with replacement (by `units`: see
    `_weights`; None: each PIC its own unit), in blocks of replicates."""
    n, k = post.shape
    units = [(np.arange(n), n)] if units is None else units
    out = np.empty((k, n_boot))
    pt = post.T.tocsr()
    per = max(1, min(n_boot, _CELLS // max(n, 1)))
    for b0 in range(0, n_boot, per):
        b1 = min(n_boot, b0 + per)
        w = _weights(units, b1 - b0, rng)
        total = w.sum(axis=0)
        w[:, total == 0] = 1.0  # (crossed units only) no PIC drawn: the sample itself
        out[:, b0:b1] = np.asarray(pt @ w) / np.where(total == 0, n, total)
        track(b1)
    return out


def _conditions(pics: AnnData, condition_key: str | None, step: str):
    if condition_key is None:
        return [(None, np.ones(pics.n_obs, bool))]
    column_name(condition_key, step=step, name="pics", what="condition_key")
    if condition_key not in pics.obs:
        msg = (f"{step}: condition_key {condition_key!r} is not a column of pics.obs "
               f"(columns: {list(pics.obs.columns)[:10]}).")  # fmt: skip
        raise KeyError(msg)
    col = pics.obs[condition_key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        values = list(col.cat.categories)
    else:  # sorted, so that the order (the test's default groups) does not follow the rows'
        values = list(pd.unique(col.dropna()))
        try:
            values = sorted(values)
        except TypeError:  # values that do not compare (mixed types, 0 and "treated"): by their text
            values = sorted(values, key=lambda v: (str(v), type(v).__name__))
    # a missing value (NaN, None, pd.NA of a nullable column) is in no condition
    masks = [(v, (col == v).to_numpy(dtype=bool, na_value=False)) for v in values]
    masks = [(v, m) for v, m in masks if m.any()]  # an unused category is no condition
    if not masks:
        msg = (f"{step}: pics holds no PIC (0 rows); nothing to count." if pics.n_obs == 0 else
               f"{step}: condition_key {condition_key!r} has no value in any PIC (all missing); fill "
               "pics.obs[condition_key] or pass condition_key=None.")  # fmt: skip
        raise ValueError(msg)
    return masks


def _condition_rng(seed: int, value) -> np.random.Generator:
    """The bootstrap's generator of one condition: keyed by its value, so that a condition's
    interval does not change with the other conditions or their order."""
    if value is None:
        return np.random.default_rng(seed)
    return np.random.default_rng([seed, zlib.crc32(_condition_key(value).encode())])


def _condition_key(value) -> str:
    """A condition's value as text that follows the value, not how its column stores it (numpy
    or Python scalars, categories, object: True, 1 and 1.0 as pandas compares them), and that
    tells text from numbers (1 and "1" of one mixed column are two conditions)."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.datetime64 | datetime.datetime):
        return f"time:{pd.Timestamp(value).isoformat()}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return f"num:{int(value)}"  # True, 1, np.int64(1) and 1.0: one condition to pandas
    if isinstance(value, numbers.Real):
        return f"num:{float(value)!r}"
    return f"{type(value).__name__}:{value}"


def _check(n_boot, level, seed, step):
    n_boot = check_int(n_boot, step=step, name="n_boot", minimum=10, hint=" (bootstrap replicates)")
    level = check_number(level, "level", step=step, low=0, high=1, high_open=True)  # numpy floats too
    return n_boot, level, check_seed(seed, step=step)


def _mean_se(sub: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the mean posterior over the PICs `sub` and its standard error s / sqrt(n). The
    squares are taken about the mean (the zeros' share in closed form): sum x^2 - n mean^2 left
    rounding residue where every PIC holds the same value, and so a finite z for no spread."""
    n = sub.shape[0]
    mean = np.asarray(sub.mean(axis=0)).ravel()
    c = sp.coo_matrix(sub)
    c.sum_duplicates()
    held = np.bincount(c.col, minlength=sub.shape[1])
    ss = np.bincount(c.col, weights=(c.data - mean[c.col]) ** 2, minlength=sub.shape[1]) + (n - held) * mean**2
    return mean, np.sqrt(ss / max(n - 1, 1) / n)


def _hard_calls(col: np.ndarray, n_pairs: int) -> sp.csr_matrix | None:
    """(PICs, pairs) one-hot of each PIC's called pair column `col` (None where a call is no pair
    column, -1, e.g. calls edited after deconvolve): their mean is the hard calls' composition."""
    if (col < 0).any():
        return None
    n = col.size
    return sp.csr_matrix((np.ones(n), (np.arange(n), col)), shape=(n, n_pairs))


def _unmixed(boot: np.ndarray, sim: Simulated, rng) -> np.ndarray:
    """Bootstrap replicates (K, B) of the corrected composition: each replicate's mean posterior
    unmixed through the confusion of the simulated PICs reweighted by a bootstrap of the
    reference cells they were built from. The PICs of one pair share a few dozen cells, so the
    confusion is uncertain as those cells are a sample; resampling the PICs alone (as before)
    gave intervals that missed the truth on pbmc68k and TNBC."""
    k, n_boot = boot.shape
    units = _units(sim.cells)
    out = np.empty_like(boot)
    per = max(1, min(n_boot, _CELLS // max(sim.truth.size, 1)))
    for b0 in range(0, n_boot, per):
        w = _weights(units, min(per, n_boot - b0), rng)
        for j in range(w.shape[1]):
            out[:, b0 + j] = unmix(confusion(sim.post, sim.truth, k, weights=w[:, j]), boot[:, b0 + j])
    return out


def blend_weights(estimates: Sequence[np.ndarray], boots: Sequence[np.ndarray], unbiased: int) -> np.ndarray:
    """Weights w >= 0, summing to 1, of the estimates (each (K,)) in sum_i w_i estimate_i that
    minimise the estimated mean squared error w^T (B + S) w. estimates[unbiased] is taken as
    unbiased and each other's bias as its difference from it: B holds the products of those
    biases, each estimated as their dot product less their bootstrap covariance, then kept to
    what products of biases can be (squares at least 0, products within the roots of the squares,
    eigenvalues at least 0: the parts' noisy estimates can disagree, an error is never below 0);
    S the estimates' covariances, from the paired bootstrap replicates
    `boots` (each (K, B), drawn with the same resampling). The minimum over the simplex is the
    least of the minima on its faces (each support's equality-constrained least squares) that
    lie inside it; the unbiased estimate alone wins ties. With the mean posterior and the
    unmixed composition alone this is the weight that minimises the two's blend; the hard
    calls' shares join them in `pair_frequencies` (see there)."""
    k = len(estimates)

    def summed_cov(a, b):  # sum over pairs of the bootstrap covariance of two (K, B) replicates
        a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
        return float((a * b).sum()) / max(a.shape[1] - 1, 1)

    others = [i for i in range(k) if i != unbiased]
    gaps = [estimates[i] - estimates[unbiased] for i in others]
    boot_gaps = [boots[i] - boots[unbiased] for i in others]
    bias = np.array([[float(gi @ gj) - summed_cov(bi, bj) for gj, bj in zip(gaps, boot_gaps, strict=True)]
                     for gi, bi in zip(gaps, boot_gaps, strict=True)]).reshape(len(others), len(others))  # fmt: skip
    # a squared bias is at least 0, and a product of two biases at most the root of theirs
    # (Cauchy-Schwarz): a bias lost in the noise carries no product with another either
    root = np.sqrt(np.maximum(np.diag(bias), 0.0))
    bias = np.clip(bias, -np.outer(root, root), np.outer(root, root))
    values, vectors = np.linalg.eigh(bias)  # (more than two biased estimates: still semidefinite)
    quad = np.array([[summed_cov(boots[i], boots[j]) for j in range(k)] for i in range(k)])
    quad[np.ix_(others, others)] += (vectors * np.maximum(values, 0.0)) @ vectors.T
    if not np.isfinite(quad).all():
        return np.eye(k)[unbiased]
    weights = np.eye(k)[unbiased]
    best = float(quad[unbiased, unbiased])
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            kkt = np.block([[2 * quad[np.ix_(idx, idx)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            solve = np.linalg.lstsq(kkt, np.r_[np.zeros(size), 1.0], rcond=None)[0][:size]
            if (solve < -1e-9).any() or not solve.sum() > 0:
                continue  # this face's minimum lies outside the simplex
            w = np.zeros(k)
            w[idx] = np.maximum(solve, 0.0) / np.maximum(solve, 0.0).sum()
            mse = float(w @ quad @ w)
            if mse < best - 1e-15 * abs(best):
                best, weights = mse, w
    return weights


#: the columns of pair_frequencies' table besides its condition_key's (written below, in this order)
FREQUENCY_COLUMNS = (K.OBS_PIC_A, K.OBS_PIC_B, "n_pics", "n_called", "fraction", "ci_low", "ci_high", "se",
                     "mean_weight", "hard_weight")


def pair_frequencies(pics: AnnData, singlets: AnnData | None = None, *,
                     condition_key: str | None = None, replicate_key: str | Sequence[str] | None = None,
                     n_sim: int = 400, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Share of PICs per pair of groups, per condition, with bootstrap intervals.

    Parameters
    ----------
    pics
        PICs after :func:`gpu_sc.pic.deconvolve` (method 'ml' or 'picseq'), which keeps the
        pair posterior in ``obsm['pic_pair_posterior']``. Only PICs with ``pic_status == 'ok'``
        count.
    singlets
        The reference deconvolve used. Given, the composition is corrected for the confusion
        between similar groups: `n_sim` PICs per pair are simulated from the singlets at the
        condition's median PIC depth (deconvolve's `n_umis` where it set one: one simulation
        for all conditions) and deconvolved as `pics` were; the unmixed composition is the one
        whose expected mean posterior through that confusion best matches the observed one
        (non-negative least squares). The estimate is the blend of the mean posterior, the
        unmixed composition and the hard calls' shares of least estimated squared error:
        unmixing removes the pull towards confused pairs but adds the noise of its confusion
        matrix; the calls are pulled less than ml's (tempered) posterior on fine groups, but
        more where groups are rarely told apart.
        None: the plain mean posterior, which is pulled towards the pairs each group is
        confused with.
    condition_key
        A column of ``pics.obs`` (e.g. sample or condition): one composition per value. PICs
        without a value are left out, with a warning.
    replicate_key
        The column(s) of ``pics.obs`` naming the independent units the PICs come from (the mouse
        or patient): the bootstrap resamples those units, not PICs, as PICs of one unit are not
        independent draws of the population. Two columns: a crossed design, each PIC weighing
        the product of its two units' draws (simulated PICs that reuse source cells:
        ``["source_a", "source_b"]``). None: every PIC its own unit. Each condition needs at
        least 2 units; with few (under ~10) the interval is rough.
    n_sim
        Simulated PICs per pair for the confusion matrix (with `singlets`). At 100, the
        corrected composition of 1,500 pbmc4k PICs moved by up to 0.08 in total-variation
        distance with the simulation's seed (0.078-0.157); 400 costs a few seconds more, as
        most of the cost is deconvolve's fixed part.
    n_boot
        Bootstrap replicates (PICs, or the units of `replicate_key`, resampled with
        replacement) for the interval.
    level
        Coverage of the percentile interval.
    seed
        Seed of the resampling. Each condition's draws follow the seed and its value, and PICs
        are resampled in the order of their names, so a condition's interval does not change
        with the other conditions or the row order (PICs that share a name keep their order
        among its holders, as deconvolve's draws do: swapping those moves the interval; make
        the names unique, e.g. with the sample, to avoid it). A condition of one PIC has no interval
        (NaN, with a warning).

    Returns
    -------
    DataFrame, one row per pair (and condition), largest fraction first: ``pic_a``, ``pic_b``,
    (the condition), ``n_pics`` (ok PICs of the condition), ``n_called`` (PICs whose best pair
    it is), ``fraction``, ``ci_low``, ``ci_high``, ``se`` (standard error: s / sqrt(n) of the
    mean posterior; with `singlets` or `replicate_key`, the bootstrap's standard deviation,
    which also resamples the reference cells behind the correction); with `singlets`,
    ``mean_weight`` and ``hard_weight`` (the mean posterior's and the hard calls' weights in
    the estimate, the unmixed composition's the rest; the interval and ``se`` are the unmixed
    composition's, widened where needed to hold the estimate).
    Progress of the bootstrap at ``gsc.settings.verbosity`` 2.
    """
    step = "pair_frequencies"
    n_boot, level, seed = _check(n_boot, level, seed, step)
    post, ok, names_a, names_b = kept_posterior(pics, step)
    call_a, call_b = (obs_column(pics, k, step=step, what=f"the assigned {w} group").astype(str).to_numpy(dtype=object)
                      for k, w in ((K.OBS_PIC_A, "A"), (K.OBS_PIC_B, "B")))  # fmt: skip
    called = call_a + "\0" + call_b
    pair_ids = names_a.astype(str) + "\0" + names_b.astype(str)
    conditions = _conditions(pics, condition_key, step)
    counted = ok & np.logical_or.reduce([m for _, m in conditions])
    codes = replicate_codes(pics, replicate_key, step=step, use=counted)
    if not counted.any():  # before the confusion's simulation, which needs their depth
        raise ValueError(_nothing_counted(step, condition_key))
    if (ok & ~counted).any():
        warnings.warn(f"{step}: {int((ok & ~counted).sum())} ok PICs have no value of condition_key "
                      f"{condition_key!r} and are left out.", UserWarning, stacklevel=user_stacklevel())
    for value, mask in conditions:  # before the confusion's simulation, as the other checks
        rows = np.flatnonzero(mask & ok)
        if codes is not None and rows.size and min(u for _, u in _units(codes[rows])) < 2:
            what = "" if value is None else f" ({condition_key}={value})"
            msg = (f"{step}: replicate_key {replicate_key!r} has fewer than 2 units among the ok PICs"
                   f"{what}; the interval needs replicates to resample (pass replicate_key=None to "
                   f"resample PICs).")  # fmt: skip
            raise ValueError(msg)
    sims, depths = {}, None
    if singlets is None:
        warn_unused(pair_frequencies, {"n_sim": n_sim}, step=step, needs="with singlets, for the confusion")
    else:
        check_anndata(singlets, step=step, name="singlets")
        n_sim = check_int(n_sim, step=step, name="n_sim", minimum=2, hint=" (simulated PICs per pair)")
        check_same_genes(pics, singlets, step=step)
        groupby = pics.uns[K.UNS_PIC].get("groupby")
        if groupby not in singlets.obs:
            msg = (f"{step}: singlets.obs has no column {groupby!r}, the groupby deconvolve used; pass "
                   "the singlets given to deconvolve.")  # fmt: skip
            raise KeyError(msg)
        info = pics.uns[K.UNS_PIC]  # the groups deconvolve used, as deconvolve checked them
        population_groups(singlets, groupby, info["groups_a"], info["groups_b"], step=step)
        depths = pic_depths(pics, step, counts=True)
    tables = []
    for value, mask in conditions:
        rows = np.flatnonzero(mask & ok)
        if rows.size == 0:
            continue
        sim = None
        if depths is not None:  # the confusion at this condition's depth: it sharpens with depth
            depth = deconvolved_depth(pics, depths[rows])
            if depth not in sims:
                sim = simulated_posteriors(pics, singlets, n_sim, seed, depth=depth)
                sims[depth] = (sim, confusion(sim.post, sim.truth, post.shape[1]))
            sim, m_conf = sims[depth]
        rows = rows[np.argsort(pics.obs_names[rows], kind="stable")]  # resampled by name, not by row
        rng = _condition_rng(seed, value)
        sub = post[rows]
        fit, se = _mean_se(sub)
        what = "" if value is None else f" ({condition_key}={value})"
        units = None if codes is None else _units(codes[rows])  # (2 or more each: checked above)
        col = pd.Index(pair_ids).get_indexer(called[rows])  # each PIC's called pair's column
        hard = _hard_calls(col, len(pair_ids)) if sim is not None else None
        both = sub if hard is None else sp.hstack([sub, hard], format="csr")  # resampled alike
        boot = _bootstrap(both, n_boot, rng, Progress(f"pair_frequencies: bootstrap{what}", n_boot,
                                                      unit="replicates"), units)  # fmt: skip
        weights = None
        if sim is not None:
            boot, boot_hard = boot[: sub.shape[1]], boot[sub.shape[1]:]
            unmixed, boot_unmixed = unmix(m_conf, fit), _unmixed(boot, sim, rng)
            estimates, boots = [fit, unmixed], [boot, boot_unmixed]
            if hard is not None:
                estimates.append(np.asarray(hard.mean(axis=0)).ravel())
                boots.append(boot_hard)
            weights = blend_weights(estimates, boots, unbiased=1)
            fit = sum(w * e for w, e in zip(weights, estimates, strict=True))
            boot = boot_unmixed  # the interval and se are the unmixed estimate's (it has no bias)
        if sim is not None or units is not None:
            se = boot.std(axis=1, ddof=1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
        if rows.size < 2:  # a bootstrap of one PIC has no spread: no interval, not a certain one
            warnings.warn(f"{step}: one ok PIC{what or ''}; its interval and se are NaN.", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
            lo, hi, se = (np.full_like(fit, np.nan) for _ in range(3))
        tab = pd.DataFrame({K.OBS_PIC_A: names_a, K.OBS_PIC_B: names_b})
        if condition_key is not None:
            tab[condition_key] = value
        tab["n_pics"] = rows.size
        tab["n_called"] = np.bincount(col[col >= 0], minlength=len(pair_ids))
        tab["fraction"], tab["ci_low"], tab["ci_high"] = fit, np.minimum(lo, fit), np.maximum(hi, fit)
        tab["se"] = se
        if weights is not None:
            tab["mean_weight"] = weights[0]
            tab["hard_weight"] = weights[2] if weights.size > 2 else 0.0
        tables.append(tab.sort_values("fraction", ascending=False, kind="stable"))
    return pd.concat(tables, ignore_index=True)


def _nothing_counted(step: str, condition_key) -> str:
    if condition_key is None:
        return f"{step}: {_NOTHING_OK}"
    return (f"{step}: no PIC with pic_status 'ok' and a pair posterior has a value of condition_key "
            f"{condition_key!r}; nothing to count.")


def pair_abundance_test(pics: AnnData, condition_key: str, *, groups=None,
                        replicate_key: str | None = None, fdr: float = 0.1,
                        inplace: bool = True) -> pd.DataFrame | None:
    """Which pairs are more (or less) frequent in one condition than in another.

    Per pair, the difference of the two conditions' fractions (:func:`pair_frequencies`) over
    its standard error sqrt(se_test^2 + se_reference^2) is a z statistic; p values two-sided,
    Benjamini-Hochberg across the pairs either condition holds. PICs are taken as independent
    (as real PICs, which never share a cell, are). With `replicate_key` (the mouse or patient
    column) the test is across replicates instead: each replicate's fraction per pair (its mean
    posterior), Welch's t test between the two conditions' replicates. Replicates differ in
    composition beyond PIC sampling, and the PIC-level test takes that difference for an
    effect of the condition.

    Parameters
    ----------
    pics
        PICs after deconvolve (ml or picseq) with ``obs[condition_key]``.
    condition_key
        The column of ``pics.obs`` that names the condition of each PIC.
    groups
        The two conditions ``(test, reference)``; default: the column's two values in its
        category order (else sorted), the first the test condition (error where there are
        more). The table's ``attrs["groups"]`` names them.
    replicate_key
        The column of ``pics.obs`` naming each PIC's biological replicate (nested in the
        conditions); each condition needs at least 2 replicates. The replicates of the two
        conditions are taken as independent samples (a label may recur in both, each
        condition's PICs are grouped on their own): a paired design (the same mouse under both
        conditions) is not modelled, and its pairing is left unused.
    fdr
        False discovery rate of ``significant``.
    inplace
        Write the result to ``pics.uns['pic_pair_abundance']`` (default) instead of returning
        the table: ``{'table': the DataFrame, 'condition_key', 'groups', 'fdr'}`` (and
        ``'replicate_key'`` where given).

    Returns
    -------
    DataFrame (or None with ``inplace``), smallest p first: ``pic_a``, ``pic_b``,
    ``fraction_test``, ``fraction_reference``, ``log2_ratio`` (the same pseudo-fraction, half a
    PIC at the two conditions' mean size, added to each side),
    ``z`` (with `replicate_key`: ``t`` and its Welch degrees of freedom ``df``, and the
    fractions are the mean over replicates), ``pval``, ``fdr``, ``significant``, ``direction``
    ('up': more frequent in the test condition).

    The pair posterior sharpens with depth: compare conditions deconvolved at one depth
    (``deconvolve(..., n_umis=...)``); where their median depths differ by more than 10 % and
    they were not, a UserWarning says so (`_warn_if_depths_differ`).
    """
    step = "pair_abundance_test"
    inplace = check_flag(inplace, "inplace", step=step)
    fdr = check_number(fdr, "fdr", step=step, low=0, high=1)  # as interaction_genes: 1 calls every tested pair
    column_name(condition_key, step=step, name="pics", what="condition_key")
    post, ok, names_a, names_b = kept_posterior(pics, step)
    conditions = dict(_conditions(pics, condition_key, step))
    if groups is not None and (isinstance(groups, str) or not np.iterable(groups)):
        msg = (f"{step}: groups must be a pair (test, reference) of values of obs[{condition_key!r}] "
               f"({list(conditions)[:10]}), got {groups!r}.")  # fmt: skip
        raise TypeError(msg)
    if groups is not None:  # a list, tuple, array or Index of the two values
        groups = tuple(v.item() if isinstance(v, np.generic) else v for v in groups)
    if len(conditions) < 2:  # nothing to compare, whatever groups says
        msg = (f"{step}: obs[{condition_key!r}] has {len(conditions)} value(s) ({list(conditions)}); the test "
               "compares the PICs of two conditions: label them in one column first.")  # fmt: skip
        raise ValueError(msg)
    if groups is None:
        if len(conditions) != 2:
            msg = (f"{step}: obs[{condition_key!r}] has {len(conditions)} values "
                   f"({list(conditions)[:10]}); pass groups=(test, reference).")  # fmt: skip
            raise ValueError(msg)
        groups = tuple(conditions)
    if len(groups) != 2 or any(g not in conditions for g in groups) or groups[0] == groups[1]:
        msg = (f"{step}: groups must be two different values of obs[{condition_key!r}] "
               f"({list(conditions)[:10]}), got {groups!r}.")  # fmt: skip
        raise ValueError(msg)
    rows = [np.flatnonzero(conditions[g] & ok) for g in groups]
    for g, r in zip(groups, rows, strict=True):
        if r.size < 2:
            msg = f"{step}: condition {g!r} has {r.size} ok PICs; need at least 2."
            raise ValueError(msg)
    missing = ok & ~np.logical_or.reduce(list(conditions.values()))
    if missing.any():  # as pair_frequencies and interaction_genes say it
        warnings.warn(f"{step}: {int(missing.sum())} ok PICs have no value of condition_key {condition_key!r} and "
                      "are left out.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
    _warn_if_depths_differ(pics, groups, rows, step)
    if replicate_key is None:
        fits, ses = zip(*(_mean_se(post[r]) for r in rows), strict=True)
        diff = fits[0] - fits[1]
        se = np.sqrt(ses[0] ** 2 + ses[1] ** 2)
        # no spread in either condition: any difference is certain (the sign's infinity)
        z = np.divide(diff, se, out=np.where(diff == 0, 0.0, np.copysign(np.inf, diff)), where=se > 0)
        stat, pval = {"z": z}, 2 * stats.norm.sf(np.abs(z))
    else:
        counted = np.zeros(pics.n_obs, bool)
        counted[np.concatenate(rows)] = True
        codes = replicate_codes(pics, replicate_key, step=step, max_columns=1, use=counted)[:, 0]
        shares = [_replicate_shares(post[r], codes[r], g, replicate_key, step)
                  for g, r in zip(groups, rows, strict=True)]  # fmt: skip
        fits = [sh.mean(axis=0) for sh in shares]
        diff = fits[0] - fits[1]
        stat, pval = _welch(*shares)
    held = (fits[0] > 0) | (fits[1] > 0)
    pval = np.where(held, pval, np.nan)
    q = bh_fdr(pval)  # NaN (pairs neither condition holds) not counted
    # one pseudo-fraction on both sides (half a PIC at the conditions' mean size), so that the
    # ratio's sign is the difference's: half a PIC of each side's own flipped it where they differ in size
    half = 1.0 / (rows[0].size + rows[1].size)
    tab = pd.DataFrame({K.OBS_PIC_A: names_a, K.OBS_PIC_B: names_b,
                        "fraction_test": fits[0], "fraction_reference": fits[1],
                        "log2_ratio": np.log2((fits[0] + half) / (fits[1] + half)),
                        **stat, "pval": pval, "fdr": q})  # fmt: skip
    tab["significant"] = tab["fdr"] < fdr
    tab["direction"] = np.where(diff > 0, "up", np.where(diff < 0, "down", ""))
    tab = tab[held].sort_values("pval", kind="stable").reset_index(drop=True)
    tab.attrs["groups"] = list(groups)  # (test, reference): the direction's meaning
    if not inplace:
        return tab
    make_actual(pics)  # a view becomes an actual AnnData (no anndata warning); its parent is never touched
    pics.uns[K.UNS_PIC_PAIR_TEST] = {"table": tab, "condition_key": condition_key,
                                     "groups": list(map(str, groups)), "fdr": fdr,
                                     **({} if replicate_key is None else {"replicate_key": replicate_key})}  # fmt: skip
    return None


#: ratio of the conditions' median PIC depths from which pair_abundance_test warns
DEPTH_RATIO_WARN = 1.1


def _warn_if_depths_differ(pics: AnnData, groups, rows, step: str) -> None:
    """Warn where the two conditions' PICs were scored at different depths: the pair posterior
    sharpens with depth, so the mean posteriors differ where the compositions do not. Measured
    on 600 T + DC PICs of 1,000 UMIs (4 splits) cut at random into two conditions, one thinned:
    to 80 % depth, 0-2 of 12 pairs called and 17 % of p < 0.05; to 40 %, 1-7 called; deconvolved
    at one depth (n_umis=350), none called and 8 % of p < 0.05."""
    if pics.uns[K.UNS_PIC].get("n_umis") is not None:  # deconvolve down-sampled every PIC alike
        return
    totals = pic_depths(pics, step)
    med = [float(np.median(totals[r])) for r in rows]
    if max(med) > DEPTH_RATIO_WARN * max(min(med), 1.0):
        warnings.warn(
            f"{step}: the PICs of {groups[0]!r} and {groups[1]!r} differ in depth (median {med[0]:.0f} vs "
            f"{med[1]:.0f} UMIs) and were deconvolved at their own depths; the pair posterior sharpens "
            "with depth, so pairs can be called where only depth differs. Deconvolve all PICs at one "
            f"depth first: gsc.pic.deconvolve(..., n_umis={int(min(med) * 0.9)}).",
            UserWarning, stacklevel=user_stacklevel())  # fmt: skip


def _replicate_shares(post: sp.csr_matrix, codes: np.ndarray, condition, key: str, step: str) -> np.ndarray:
    """(replicates, K): each replicate's mean posterior (its pair composition)."""
    units, inv = np.unique(codes, return_inverse=True)
    if units.size < 2:
        msg = (f"{step}: condition {condition!r} has {units.size} replicate in obs[{key!r}]; the "
               f"test across replicates needs at least 2 per condition (replicate_key=None tests "
               f"across PICs).")  # fmt: skip
        raise ValueError(msg)
    return label_means(post, inv.ravel(), units.size)[0]


def _welch(x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Welch's t test per column between the rows of `x` and of `y`: ({"t", "df"}, p two-sided).
    Columns equal in every replicate give t = 0, p = 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # such columns: 0 / 0, and scipy says so
        res = stats.ttest_ind(x, y, axis=0, equal_var=False)
    same = np.isnan(res.statistic)
    return ({"t": np.where(same, 0.0, res.statistic), "df": np.where(same, np.nan, res.df)},
            np.where(same, 1.0, res.pvalue))  # fmt: skip
