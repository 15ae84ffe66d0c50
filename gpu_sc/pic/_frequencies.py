"""How often each pair of states meets, per condition, with uncertainty; and which pairs differ
in abundance between two conditions.

Hard calls count a PIC for one pair even where its posterior is split between similar pairs,
and at fine groups most calls are wrong. The composition is instead the mean of the PICs' pair
posteriors that ``deconvolve`` keeps (``obsm['pic_pair_posterior']``). (The maximum-likelihood
mixture of pairs, EM over the same posteriors, was measured and dropped: the pair likelihood is
misspecified enough that its optimum sits far from the truth, total-variation distance 0.34 vs
0.10 for the mean on 600 pbmc68k T + DC PICs, ml.) Given the singlets, the mean is corrected
for the confusion between similar groups (`_confusion`). Intervals: percentile bootstrap over
PICs (and, with the correction, over the simulated PICs behind it).
Standard errors and the test between conditions: the mean's own variance, s^2 / n per pair (the
bootstrap's standard deviation agrees within a few per cent, without its noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .. import _keys as K
from .._settings import Progress
from .._validation import check_anndata, check_int
from ._args import check_seed
from ._confusion import confusion, kept_posterior, simulated_posteriors, unmix
from .._stats import bh_fdr

_CELLS = 2**23  # PICs x replicates held at once (64 MB of float64)


def _bootstrap(post: sp.csr_matrix, n_boot: int, rng, track) -> np.ndarray:
    """(K, n_boot) mean posteriors of the PICs resampled with replacement (multinomial weights),
    in blocks of replicates."""
    n, k = post.shape
    out = np.empty((k, n_boot))
    pt = post.T.tocsr()
    per = max(1, min(n_boot, _CELLS // max(n, 1)))
    for b0 in range(0, n_boot, per):
        b1 = min(n_boot, b0 + per)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b1 - b0).T.astype(np.float64)
        out[:, b0:b1] = np.asarray(pt @ w) / n
        track(b1)
    return out


def _conditions(pics: AnnData, condition_key: str | None, step: str):
    if condition_key is None:
        return [(None, np.ones(pics.n_obs, bool))]
    if condition_key not in pics.obs:
        msg = (f"{step}: condition_key {condition_key!r} is not a column of pics.obs "
               f"(columns: {list(pics.obs.columns)[:10]}).")  # fmt: skip
        raise KeyError(msg)
    col = pics.obs[condition_key]
    values = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else pd.unique(col.dropna())
    return [(v, (col == v).to_numpy()) for v in values]


def _check(n_boot, level, seed, step):
    n_boot = check_int(n_boot, step=step, name="n_boot", minimum=10, hint=" (bootstrap replicates)")
    if not (isinstance(level, float | int) and 0 < level < 1):
        msg = f"{step}: level must be a number in (0, 1), got {level!r}."
        raise ValueError(msg)
    return n_boot, check_seed(seed, step=step)


def _mean_se(sub: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the mean posterior over the PICs `sub` and its standard error s / sqrt(n)."""
    n = sub.shape[0]
    mean = np.asarray(sub.mean(axis=0)).ravel()
    sq = np.asarray(sub.multiply(sub).sum(axis=0)).ravel()
    var = np.maximum(sq - n * mean**2, 0.0) / max(n - 1, 1)
    return mean, np.sqrt(var / n)


def _unmixed(boot: np.ndarray, sim, rng) -> np.ndarray:
    """Bootstrap replicates (K, B) of the corrected composition: each replicate's mean posterior
    unmixed through a confusion matrix of resampled simulated PICs (within each true pair)."""
    sim_post, truth = sim
    k = boot.shape[0]
    order = np.argsort(truth, kind="stable")
    counts = np.bincount(truth, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.empty_like(boot)
    for b in range(boot.shape[1]):
        pick = order[starts[truth[order]] + (rng.random(truth.size) * counts[truth[order]]).astype(np.int64)]
        out[:, b] = unmix(confusion(sim_post[pick], truth[pick], k), boot[:, b])
    return out


def pair_frequencies(pics: AnnData, singlets: AnnData | None = None, *,
                     condition_key: str | None = None, n_sim: int = 100, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> pd.DataFrame:  # fmt: skip
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
        PICs' median depth and deconvolved as `pics` were; the composition is the one whose
        expected mean posterior through that confusion best matches the observed one
        (non-negative least squares). None: the plain mean posterior, which is pulled
        towards the pairs each group is confused with.
    condition_key
        A column of ``pics.obs`` (e.g. sample or condition): one composition per value.
    n_sim
        Simulated PICs per pair for the confusion matrix (with `singlets`).
    n_boot
        Bootstrap replicates (PICs resampled with replacement) for the interval.
    level
        Coverage of the percentile interval.
    seed
        Seed of the resampling.

    Returns
    -------
    DataFrame, one row per pair (and condition), largest fraction first: ``pic_a``, ``pic_b``,
    (the condition), ``n_pics`` (ok PICs of the condition), ``n_called`` (PICs whose best pair
    it is), ``fraction``, ``ci_low``, ``ci_high``, ``se`` (standard error: s / sqrt(n) of the
    mean posterior; with `singlets`, the bootstrap's standard deviation, which also resamples
    the simulated PICs).
    Progress of the bootstrap at ``gsc.settings.verbosity`` 2.
    """
    step = "pair_frequencies"
    n_boot, seed = _check(n_boot, level, seed, step)
    post, ok, names_a, names_b = kept_posterior(pics, step)
    rng = np.random.default_rng(seed)
    called = (pics.obs[K.OBS_PIC_A].astype(str).to_numpy(dtype=object)
              + "\0" + pics.obs[K.OBS_PIC_B].astype(str).to_numpy(dtype=object))  # fmt: skip
    pair_ids = names_a.astype(str) + "\0" + names_b.astype(str)
    sim = None
    if singlets is not None:
        check_anndata(singlets, step=step, name="singlets")
        n_sim = check_int(n_sim, step=step, name="n_sim", minimum=2, hint=" (simulated PICs per pair)")
        sim = simulated_posteriors(pics, singlets, n_sim, seed)
        m_conf = confusion(*sim, post.shape[1])
    tables = []
    for value, mask in _conditions(pics, condition_key, step):
        rows = np.flatnonzero(mask & ok)
        if rows.size == 0:
            continue
        sub = post[rows]
        fit, se = _mean_se(sub)
        what = "" if value is None else f" ({condition_key}={value})"
        boot = _bootstrap(sub, n_boot, rng, Progress(f"pair_frequencies: bootstrap{what}", n_boot,
                                                     unit="replicates"))  # fmt: skip
        if sim is not None:
            fit = unmix(m_conf, fit)
            boot = _unmixed(boot, sim, rng)
            se = boot.std(axis=1, ddof=1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
        counts = pd.Series(called[rows]).value_counts()
        tab = pd.DataFrame({K.OBS_PIC_A: names_a, K.OBS_PIC_B: names_b})
        if condition_key is not None:
            tab[condition_key] = value
        tab["n_pics"] = rows.size
        tab["n_called"] = counts.reindex(pair_ids, fill_value=0).to_numpy()
        tab["fraction"], tab["ci_low"], tab["ci_high"] = fit, np.minimum(lo, fit), np.maximum(hi, fit)
        tab["se"] = se
        tables.append(tab.sort_values("fraction", ascending=False, kind="stable"))
    if not tables:
        msg = f"{step}: no PIC with pic_status 'ok' and a pair posterior; nothing to count."
        raise ValueError(msg)
    return pd.concat(tables, ignore_index=True)


def pair_abundance_test(pics: AnnData, condition_key: str, *, groups=None, fdr: float = 0.1,
                        inplace: bool = True) -> pd.DataFrame | None:
    """Which pairs are more (or less) frequent in one condition than in another.

    Per pair, the difference of the two conditions' fractions (:func:`pair_frequencies`) over
    its standard error sqrt(se_test^2 + se_reference^2) is a z statistic; p values two-sided,
    Benjamini-Hochberg across the pairs either condition holds. PICs are taken as independent
    (as real PICs, which never share a cell, are).

    Parameters
    ----------
    pics
        PICs after deconvolve (ml or picseq) with ``obs[condition_key]``.
    condition_key
        The column of ``pics.obs`` that names the condition of each PIC.
    groups
        The two conditions ``(test, reference)``; default: the column's two values (error
        where there are more).
    fdr
        False discovery rate of ``significant``.
    inplace
        Write the table to ``pics.uns['pic_pair_abundance']`` (default) instead of returning it.

    Returns
    -------
    DataFrame (or None with ``inplace``), smallest p first: ``pic_a``, ``pic_b``,
    ``fraction_test``, ``fraction_reference``, ``log2_ratio`` (half a PIC added to each side),
    ``z``, ``pval``, ``fdr``, ``significant``, ``direction`` ('up': more frequent in the test
    condition).
    """
    step = "pair_abundance_test"
    if not (isinstance(fdr, float | int) and 0 < fdr < 1):
        msg = f"{step}: fdr must be a number in (0, 1), got {fdr!r}."
        raise ValueError(msg)
    post, ok, names_a, names_b = kept_posterior(pics, step)
    conditions = dict(_conditions(pics, condition_key, step))
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
    fits, ses, sizes = [], [], []
    for g in groups:
        rows = np.flatnonzero(conditions[g] & ok)
        if rows.size < 2:
            msg = f"{step}: condition {g!r} has {rows.size} ok PICs; need at least 2."
            raise ValueError(msg)
        fit, se = _mean_se(post[rows])
        fits.append(fit)
        ses.append(se)
        sizes.append(rows.size)
    diff = fits[0] - fits[1]
    se = np.sqrt(ses[0] ** 2 + ses[1] ** 2)
    held = (fits[0] > 0) | (fits[1] > 0)
    z = np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)
    pval = np.where(held, 2 * stats.norm.sf(np.abs(z)), np.nan)
    q = bh_fdr(pval)  # NaN (pairs neither condition holds) not counted
    half = [0.5 / s for s in sizes]
    tab = pd.DataFrame({K.OBS_PIC_A: names_a, K.OBS_PIC_B: names_b,
                        "fraction_test": fits[0], "fraction_reference": fits[1],
                        "log2_ratio": np.log2((fits[0] + half[0]) / (fits[1] + half[1])),
                        "z": z, "pval": pval, "fdr": q})  # fmt: skip
    tab["significant"] = tab["fdr"] < fdr
    tab["direction"] = np.where(diff > 0, "up", np.where(diff < 0, "down", ""))
    tab = tab[held].sort_values("pval", kind="stable").reset_index(drop=True)
    if not inplace:
        return tab
    pics.uns[K.UNS_PIC_PAIR_TEST] = {"table": tab, "condition_key": condition_key,
                                     "groups": list(map(str, groups)), "fdr": fdr}  # fmt: skip
    return None
