"""The host twin of kernels/knn_select.cu: merge one tile of dot products into each query row's
running sorted list of the k best (squared distance, index) pairs, forming each distance as it
is read (the tile is read once, while it is still in cache). The same rules as the GPU kernel:
d^2 = (|x_r|^2 + |y_c|^2) - 2 x_r.y_c in the tile's dtype, a row's own column counts -inf (the
row is always a candidate), equal distances rank by index (the GPU reads columns in index
order, and an earlier equal distance is never displaced there), NaN never enters. So a list is
the k smallest (d^2, index) pairs whatever order the tiles come in."""

from __future__ import annotations

import numba
import numpy as np


#: columns screened at once: one vectorised pass finds whether any of them may enter the list
_SCREEN = 64


@numba.njit(inline="always", cache=True)
def _insert(bd, bi, d, index, k):  # pragma: no cover - compiled
    """Put (d, index) into the list sorted by (distance, index); the last entry falls off. The
    callers admit (d, index) only where it ranks before the last entry."""
    pos = k - 1
    while pos > 0 and bd[pos - 1] > d:
        bd[pos] = bd[pos - 1]
        bi[pos] = bi[pos - 1]
        pos -= 1
    while pos > 0 and bd[pos - 1] == d and bi[pos - 1] > index:  # ties: by index (rare, apart)
        bd[pos] = bd[pos - 1]
        bi[pos] = bi[pos - 1]
        pos -= 1
    bd[pos] = d
    bi[pos] = index


@numba.njit(nogil=True, cache=True)
def select_tile(dots, sq_rows, sq_cols, row_offset, col_offset, best_d, best_i):  # pragma: no cover - compiled
    """In place on best_d / best_i (n_rows, k), sorted ascending, initialised to +inf / -1.
    Releases the GIL, so that host threads can each merge their own query rows.

    Once a row's list holds good candidates almost no distance reaches its last entry, so each
    run of `_SCREEN` columns is first screened in one vectorised pass (a count of the distances
    at or below that entry; the loop runs over slices from 0, so that LLVM vectorises it), and
    only runs with one are walked one by one: 3.5x faster than walking every column (12 s of one
    core at 100k cells)."""
    n_rows, n_cols = dots.shape
    k = best_d.shape[1]
    two = dots.dtype.type(2)
    for r in range(n_rows):
        bd = best_d[r]
        bi = best_i[r]
        sr = sq_rows[r]
        own = row_offset + r - col_offset
        row = dots[r]
        if 0 <= own < n_cols:
            _insert(bd, bi, -np.inf, col_offset + own, k)
        worst = bd[k - 1]
        for c0 in range(0, n_cols, _SCREEN):
            seg = row[c0 : c0 + _SCREEN]
            sq_seg = sq_cols[c0 : c0 + _SCREEN]
            reach = 0
            for c in range(seg.size):
                reach += np.int32(((sr + sq_seg[c]) - two * seg[c]) <= worst)
            if reach == 0:
                continue
            for c in range(seg.size):
                if c0 + c == own:
                    continue
                d = (sr + sq_seg[c]) - two * seg[c]
                if d <= worst and (d < worst or col_offset + c0 + c < bi[k - 1]):
                    _insert(bd, bi, d, col_offset + c0 + c, k)
                    worst = bd[k - 1]


@numba.njit(nogil=True, cache=True)
def select_tile_columns(dots, sq_rows, sq_cols, row_offset, best_d, best_i):  # pragma: no cover - compiled
    """The tile's transpose merged into the columns' lists: column c's list (best_d[c],
    best_i[c]) takes row r (index row_offset + r) at d^2 = (|y_c|^2 + |x_r|^2) - 2 x_r.y_c, the
    float select_tile forms for the pair. Rows are read in order, so the tile is read once;
    each run of columns is screened against its columns' last entries first, as in select_tile.
    For tiles off the diagonal (no column is a row of the tile)."""
    n_rows, n_cols = dots.shape
    k = best_d.shape[1]
    two = dots.dtype.type(2)
    worst = best_d[:, k - 1].copy()
    for r in range(n_rows):
        row = dots[r]
        sr = sq_rows[r]
        for c0 in range(0, n_cols, _SCREEN):
            seg = row[c0 : c0 + _SCREEN]
            sq_seg = sq_cols[c0 : c0 + _SCREEN]
            w_seg = worst[c0 : c0 + _SCREEN]
            reach = 0
            for c in range(seg.size):
                reach += np.int32(((sq_seg[c] + sr) - two * seg[c]) <= w_seg[c])
            if reach == 0:
                continue
            for c in range(seg.size):
                d = (sq_seg[c] + sr) - two * seg[c]
                if d <= w_seg[c] and (d < w_seg[c] or row_offset + r < best_i[c0 + c, k - 1]):
                    _insert(best_d[c0 + c], best_i[c0 + c], d, row_offset + r, k)
                    w_seg[c] = best_d[c0 + c, k - 1]
