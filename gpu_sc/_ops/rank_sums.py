"""Wilcoxon rank sums per group and column, with each column's tie term: the statistics of the
Wilcoxon rank-sum (Mann-Whitney U) test of marker genes.

Each column is ranked over all rows (average ranks for ties) without densifying it: its nonzero
stored values are sorted, and the zeros (implicit or stored) are one tied block placed between
the negative and the positive values. A group's rank sum is the sum of its nonzero rows' ranks
plus its number of zeros times the zeros' average rank. Ranks are multiples of 1/2, so every sum
is exact in float64 (below 2^52), whatever the order: the same numbers as scanpy's dense ranking.
The tie term is sum(t^3 - t) over the column's tied blocks (t: block size), for the tie
correction 1 - term / (n^3 - n).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from .._backend import to_host
from ._dispatch import GPU, primitive
from ._layout import Parts


@numba.njit(parallel=True, cache=True)
def _csc_rank_sums(data, indices, indptr, codes, sizes, n_rows, sums, tie):  # pragma: no cover - compiled
    n_groups = sums.shape[0]
    for j in numba.prange(indptr.size - 1):
        lo, hi = indptr[j], indptr[j + 1]
        m = 0
        for q in range(lo, hi):
            if data[q] != 0:
                m += 1
        vals = np.empty(m, np.float64)
        rows = np.empty(m, np.int64)
        n_neg = 0
        i = 0
        for q in range(lo, hi):
            if data[q] != 0:
                vals[i] = data[q]
                rows[i] = indices[q]
                n_neg += data[q] < 0
                i += 1
        order = np.argsort(vals, kind="mergesort")
        zeros = n_rows - m
        t = float(zeros) ** 3 - zeros
        seen = np.zeros(n_groups, np.int64)
        i = 0
        while i < m:
            v = vals[order[i]]
            k = i
            while k + 1 < m and vals[order[k + 1]] == v:
                k += 1
            size = k - i + 1
            before = i + (zeros if v > 0 else 0)  # values ranked below this block
            rank = before + (size + 1) / 2.0
            t += float(size) ** 3 - size
            for q in range(i, k + 1):
                g = codes[rows[order[q]]]
                if 0 <= g < n_groups:
                    sums[g, j] += rank
                    seen[g] += 1
            i = k + 1
        zero_rank = n_neg + (zeros + 1) / 2.0
        for g in range(n_groups):
            sums[g, j] += (sizes[g] - seen[g]) * zero_rank
        tie[j] = t


@primitive()
def rank_sums(p: Parts, codes, n_groups: int):
    """(rank sums (n_groups, n_cols) float64, tie terms (n_cols,) float64): every column ranked
    over all rows; `codes` holds one group per row (-1 or >= n_groups: ranked, in no group).
    NaN values are refused."""
    n_rows, n_cols = p.shape
    codes = np.asarray(codes, dtype=np.int64)
    if codes.shape != (n_rows,):
        msg = f"codes must hold one group per row ({n_rows}), got shape {codes.shape}."
        raise ValueError(msg)
    if p.data.dtype.kind == "f" and np.isnan(p.data).any():
        msg = "rank_sums: the matrix holds NaN values, which have no rank; fix or drop them first."
        raise ValueError(msg)
    if p.dense:
        csc = sp.csc_matrix(p.data.reshape(p.shape))
    else:
        csc = sp.csr_matrix((p.data, p.indices, p.indptr), shape=p.shape).tocsc()
    inside = (codes >= 0) & (codes < n_groups)
    sizes = np.bincount(codes[inside], minlength=n_groups).astype(np.int64)
    sums = np.zeros((n_groups, n_cols))
    tie = np.zeros(n_cols)
    _csc_rank_sums(csc.data, csc.indices, csc.indptr, codes, sizes, n_rows, sums, tie)
    return sums, tie


@rank_sums.register(GPU)
def _(p: Parts, codes, n_groups: int):
    """GPU data are ranked on the host for now (a CUDA ranking kernel is still to come)."""
    host = Parts(*(None if a is None else to_host(a) for a in (p.data, p.indices, p.indptr)), p.shape)
    return rank_sums(host, to_host(codes), n_groups)
