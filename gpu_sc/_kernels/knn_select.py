"""Launch wrapper for kernels/knn_select.cu (one warp per query row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, function, register, warp_rows_grid

register("knn_select.cu", "knn_select", ("value", "index"))


def knn_select(dots, sq_rows, sq_cols, row_offset: int, col_offset: int, best_d, best_i) -> None:
    """Merge the tile `dots` (n_rows, n_cols) of dot products between the query rows
    row_offset.. (squared norms `sq_rows`) and the reference rows col_offset.. (`sq_cols`) into
    the sorted per-row lists of squared distances `best_d` / indices `best_i` (n_rows, k), in
    place. Each query row's own column counts as distance -inf (it is always kept)."""
    n_rows, n_cols = dots.shape
    k = best_d.shape[1]
    arrays = (dots, sq_rows, sq_cols, best_d, best_i)
    if not all(a.flags.c_contiguous for a in arrays) or len(
            {a.dtype for a in (dots, sq_rows, sq_cols, best_d)}) != 1:  # fmt: skip
        msg = "knn_select needs C-contiguous arrays, and tile, norms and lists of one float dtype."
        raise TypeError(msg)
    if sq_rows.shape != (n_rows,) or sq_cols.shape != (n_cols,) or best_i.shape != best_d.shape \
            or best_d.shape[0] != n_rows or k < 1:  # fmt: skip
        msg = (f"knn_select: shapes do not match: tile {dots.shape}, norms {sq_rows.shape} and "
               f"{sq_cols.shape}, lists {best_d.shape} and {best_i.shape}.")
        raise ValueError(msg)
    if n_rows == 0 or n_cols == 0:
        return
    function("knn_select", dots.dtype, best_i.dtype)(
        warp_rows_grid(n_rows), (THREADS,),
        (dots, sq_rows, sq_cols, np.int64(n_rows), np.int64(n_cols), np.int64(row_offset),
         np.int64(col_offset), np.int32(k), best_d, best_i),
    )  # fmt: skip
