"""What exact and approximate kNN search share: rows prepared for the metric, each row's own
entry marked in a distance tile, and candidate lists ranked exactly in float64 (row itself
first, then by (distance, index)), so every search gives the same lists from its candidates."""

from __future__ import annotations

import numpy as np

from ..._backend import xp_of

MARGIN = 16  # extra candidates kept for the exact float64 re-ranking


def prepare(x, metric: str):
    """float64 rows (cosine: unit rows; zero rows stay zero)."""
    xp = xp_of(x)
    x64 = x.astype(np.float64)
    if metric == "cosine":
        norms = xp.sqrt((x64 * x64).sum(axis=1))
        norms[norms == 0] = 1.0
        x64 = x64 / norms[:, None]
    return xp.ascontiguousarray(x64)


def mark_self(d2, rows, col_offset: int = 0) -> None:
    """Set each row's own entry of the distance tile `d2` (rows: their global indices; columns
    col_offset..) to -inf, in place: the row itself is then always one of its candidates, even
    behind more than k + MARGIN identical rows at distance 0."""
    xp = xp_of(d2)
    local = rows - col_offset
    inside = (local >= 0) & (local < d2.shape[1])
    d2[xp.arange(rows.shape[0])[inside], local[inside]] = -xp.inf


def rank(x64, rows, cand, k: int, metric: str):
    """For each row of `rows`: its distinct valid (>= 0) candidates ranked self first, then by
    (float64 distance, index); the first k as (indices, distances, complete) where `complete`
    says the row had at least k of them."""
    xp = xp_of(x64)
    rows = rows[:, None]
    valid = cand >= 0
    cand = xp.where(valid, cand, rows).astype(np.int64)
    q = x64[rows[:, 0]]
    if metric == "cosine":
        dist = xp.maximum(1.0 - xp.einsum("bd,bmd->bm", q, x64[cand]), 0.0)
    else:
        diff = x64[cand] - q[:, None, :]
        dist = xp.sqrt((diff * diff).sum(axis=2))
    is_self = cand == rows
    dist = xp.where(is_self, 0.0, dist)
    key = xp.where(valid, xp.where(is_self, -1.0, dist), xp.inf)

    def by_key(cand, dist, key):
        order = xp.argsort(cand, axis=1)  # stable sorts by key then keep the smaller index first
        cand, dist, key = (xp.take_along_axis(a, order, axis=1) for a in (cand, dist, key))
        order = xp.argsort(key, axis=1, kind="stable")
        return (xp.take_along_axis(a, order, axis=1) for a in (cand, dist, key))

    cand, dist, key = by_key(cand, dist, key)
    dup = xp.zeros(cand.shape, dtype=bool)  # a repeated index sits next to its first copy now
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    if bool(dup.any()):
        cand, dist, key = by_key(cand, dist, xp.where(dup, xp.inf, key))
    complete = xp.isfinite(key[:, k - 1]) if cand.shape[1] >= k else xp.zeros(rows.shape[0], bool)
    return cand[:, :k], dist[:, :k], complete
