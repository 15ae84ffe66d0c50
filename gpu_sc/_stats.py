"""Statistics shared by the feature packages (marker genes, PIC interaction genes and pairs)."""

from __future__ import annotations

import numpy as np


def bh_fdr(pvalues) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN entries stay NaN and are not counted.

    q_(i) = min_{j >= i} p_(j) * m / j over the m finite p-values sorted ascending, capped at 1.
    """
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError) as e:
        msg = f"bh_fdr: pvalues must be numbers, got {type(pvalues).__name__} ({e})."
        raise TypeError(msg) from e
    if p.ndim != 1:
        msg = f"bh_fdr: pvalues must be a 1-D array, got shape {p.shape}."
        raise ValueError(msg)
    q = np.full(p.shape, np.nan)
    outside = np.isinf(p) | (p < 0) | (p > 1)  # inf is out of range too, not 'missing' as NaN is
    if outside.any():
        bad = p[outside]
        msg = (f"bh_fdr: p-values must lie in [0, 1] (NaN: untested), got {bad.size} outside, e.g. "
               f"{bad[0]!r}.")
        raise ValueError(msg)
    finite = np.isfinite(p)
    pf = p[finite]
    if pf.size == 0:
        return q
    order = np.argsort(pf, kind="stable")
    m = pf.size
    scaled = pf[order] * m / np.arange(1, m + 1)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    q[finite] = out
    return q


def r_squared(truth, estimate) -> float:
    """1 - SSE / SST of `estimate` against `truth` (1-D); NaN where the truth has no spread (one
    value, or all equal: a constant 0.4 has a mean that is not exactly 0.4, and SST of round-off
    gave R^2 of -3 instead of none)."""
    truth, estimate = np.asarray(truth, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if truth.size < 2 or np.ptp(truth) == 0:
        return float("nan")
    return float(1 - ((truth - estimate) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())

