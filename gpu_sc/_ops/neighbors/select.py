"""The host twin of kernels/knn_select.cu: merge one tile of dot products into each query row's
running sorted list of the k best (squared distance, index) pairs, forming each distance as it
is read (the tile is read once, while it is still in cache). The same rules as the GPU kernel:
d^2 = (|x_r|^2 + |y_c|^2) - 2 x_r.y_c in the tile's dtype, a row's own column counts -inf (the
row is always a candidate), a later equal distance never displaces an earlier one, NaN never
enters."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def select_tile(dots, sq_rows, sq_cols, row_offset, col_offset, best_d, best_i):  # pragma: no cover - compiled
    """In place on best_d / best_i (n_rows, k), sorted ascending, initialised to +inf / -1.
    Releases the GIL, so that host threads can each merge their own query rows."""
    n_rows, n_cols = dots.shape
    k = best_d.shape[1]
    two = dots.dtype.type(2)
    for r in range(n_rows):
        bd = best_d[r]
        bi = best_i[r]
        sr = sq_rows[r]
        own = row_offset + r - col_offset
        row = dots[r]
        worst = bd[k - 1]
        for c in range(n_cols):
            d = (sr + sq_cols[c]) - two * row[c]
            if c == own:
                d = -np.inf
            if d < worst:
                pos = k - 1
                while pos > 0 and bd[pos - 1] > d:
                    bd[pos] = bd[pos - 1]
                    bi[pos] = bi[pos - 1]
                    pos -= 1
                bd[pos] = d
                bi[pos] = col_offset + c
                worst = bd[k - 1]
