"""Launch wrapper for kernels/knn_select.cu (one thread per query row)."""

from __future__ import annotations

import numpy as np

from . import THREADS, function, register

register("knn_select.cu", "knn_select", ("value", "index"))


def knn_select(tile, col_offset: int, best_d, best_i) -> None:
    """Merge the squared-distance `tile` (n_rows, n_cols; columns are reference rows
    col_offset..) into the sorted per-row lists `best_d` / `best_i` (n_rows, k) in place."""
    import cupy as cp

    n_rows, n_cols = tile.shape
    k = best_d.shape[1]
    if tile.dtype != best_d.dtype or not (tile.flags.c_contiguous and best_d.flags.c_contiguous
                                          and best_i.flags.c_contiguous):  # fmt: skip
        msg = "knn_select needs C-contiguous tile and lists of one float dtype."
        raise TypeError(msg)
    if n_rows == 0 or n_cols == 0:
        return
    grid = (-(-n_rows // THREADS),)
    function("knn_select", tile.dtype, best_i.dtype)(
        grid, (THREADS,),
        (tile, np.int64(n_rows), np.int64(n_cols), np.int64(col_offset), np.int32(k),
         best_d, best_i),
    )  # fmt: skip
    del cp
