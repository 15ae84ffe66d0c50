"""Per-column sums (float64) and nonzero counts."""

from __future__ import annotations

import numpy as np

from ._layout import Parts, on_gpu


def col_sums(p: Parts):
    """(sums float64, nonzero counts int64) per column."""
    if on_gpu(p):
        from .. import _kernels

        return _kernels.col_sums(*p)
    n_rows, n_cols = p.shape
    if p.dense:
        x = p.data.reshape(p.shape)
        return x.sum(axis=0, dtype=np.float64), np.count_nonzero(x, axis=0).astype(np.int64)
    sums = np.bincount(p.indices, weights=p.data, minlength=n_cols).astype(np.float64)
    nnz = np.bincount(p.indices[p.data != 0], minlength=n_cols).astype(np.int64)
    return sums, nnz
