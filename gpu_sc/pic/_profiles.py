"""Marker genes by footprints and geometric-mean reference profiles (PICSEQ.md sections 2-3)."""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

DEFAULT_BLACKLIST = (r"^RP[LS]\d", r"^MT-", r"^mt-", r"^Rp[ls]\d", r"^IG[HKL][VDJC]",
                     r"^Ig[hkl][vdjc]", r"^MALAT1$", r"^Malat1$")


def geomean(x: sp.csr_matrix, labels: np.ndarray, groups: list[str], *,
            normalise: bool = False) -> np.ndarray:
    """GM[g, m] = exp(mean over cells of m of log(1 + x)) - 1, genes x groups (float64).

    With `normalise`, cells are first scaled to the median total (size-normalised).
    """
    if normalise:
        tot = np.asarray(x.sum(1)).ravel()
        med = np.median(tot[tot > 0]) if np.any(tot > 0) else 1.0
        scale = np.where(tot > 0, med / np.maximum(tot, 1e-300), 0.0)
        x = sp.diags(scale) @ x
    out = np.empty((x.shape[1], len(groups)))
    logx = x.copy()
    logx.data = np.log1p(logx.data)
    for k, g in enumerate(groups):
        rows = np.flatnonzero(labels == g)
        out[:, k] = np.expm1(np.asarray(logx[rows].mean(0)).ravel())
    return out


def profiles(gm: np.ndarray) -> np.ndarray:
    """P[., m] = GM[., m] / sum_g GM[g, m]."""
    s = gm.sum(0)
    return gm / np.where(s > 0, s, 1.0)


def blacklisted(var_names, patterns) -> np.ndarray:
    """Per gene: does any of the `patterns` (strings or compiled) match its name (bool array)."""
    pats = [re.compile(p) for p in patterns]
    if not pats:  # (select_markers with blacklist=None: no loop over the names)
        return np.zeros(len(var_names), dtype=bool)
    names = np.asarray(var_names).astype(str)
    return np.array([any(p.search(n) for p in pats) for n in names], dtype=bool)


def select_markers(x: sp.csr_matrix, labels: np.ndarray, groups_a: list[str],
                   groups_b: list[str], var_names, *, n_top: int = 20, min_lfp: float = 1.0,
                   min_umis: int = 10, blacklist=DEFAULT_BLACKLIST, extra=None) -> np.ndarray:
    """Indices of marker genes (sorted): footprint top genes per group, PICSEQ.md section 2."""
    total = np.asarray(x.sum(0)).ravel()
    ok = (total > min_umis) & ~blacklisted(var_names, blacklist or ())
    chosen = set()
    marker_in = []
    for groups in (groups_a, groups_b):
        e = geomean(x, labels, groups, normalise=True)
        fp = np.log2((0.1 + e) / np.median(0.1 + e, axis=1, keepdims=True))
        fp[~ok] = -np.inf
        for k in range(len(groups)):
            top = np.argsort(-fp[:, k], kind="stable")[:n_top]
            chosen.update(int(g) for g in top if fp[g, k] >= min_lfp)
        with np.errstate(invalid="ignore"):
            marker_in.append(np.where(ok, np.abs(fp).max(1), 0) > min_lfp)
    both = marker_in[0] & marker_in[1]
    chosen = {g for g in chosen if not both[g]}
    if extra is not None:
        lookup = {n: i for i, n in enumerate(np.asarray(var_names).astype(str))}
        miss = [g for g in extra if g not in lookup]
        if miss:
            msg = f"marker genes not in var_names: {miss[:5]}"
            raise KeyError(msg)
        chosen.update(lookup[g] for g in extra)
    return np.array(sorted(chosen), dtype=np.int64)


def mean_profiles(x: sp.csr_matrix, labels: np.ndarray, groups: list[str], genes: np.ndarray,
                  rest: np.ndarray) -> np.ndarray:
    """Multinomial profiles (genes + 1 "rest" row) x groups: pooled counts of each group.

    Row g: share of the group's UMIs on gene `genes[g]`; last row: share on the `rest` genes.
    """
    sub = sp.hstack([x[:, genes], sp.csr_matrix(np.asarray(x[:, rest].sum(1)))]).tocsr()
    out = np.empty((sub.shape[1], len(groups)))
    for k, g in enumerate(groups):
        out[:, k] = np.asarray(sub[np.flatnonzero(labels == g)].sum(0)).ravel()
    return profiles(out)
