"""Wilcoxon rank sums per group and column, with each column's tie term: the statistics of the
Wilcoxon rank-sum (Mann-Whitney U) test of marker genes.

Each column is ranked over all rows (average ranks for ties) without densifying it: its nonzero
stored values are sorted, and the zeros (implicit or stored) are one tied block placed between
the negative and the positive values. A group's rank sum is the sum of its nonzero rows' ranks
plus its number of zeros times the zeros' average rank. Ranks are multiples of 1/2, so every sum
is exact in float64 (below 2^52), whatever the order: the same numbers as scanpy's dense ranking,
on the CPU (Numba, a column per task) and the GPU (CuPy sorts and bincounts) alike.
The tie term is sum(t^3 - t) over the column's tied blocks (t: block size), for the tie
correction 1 - term / (n^3 - n).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from ._dispatch import GPU, primitive
from ._layout import Parts, kernel_parts, segment_ids


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


def _checked_codes(p: Parts, codes, xp):
    """`codes` as int64 on `p`'s device, after the checks both implementations share."""
    codes = xp.asarray(codes, dtype=np.int64)
    if codes.shape != (p.shape[0],):
        msg = f"codes must hold one group per row ({p.shape[0]}), got shape {codes.shape}."
        raise ValueError(msg)
    if p.data.dtype.kind == "f" and bool(xp.isnan(p.data).any()):
        msg = "rank_sums: the matrix holds NaN values, which have no rank; fix or drop them first."
        raise ValueError(msg)
    return codes


@primitive()
def rank_sums(p: Parts, codes, n_groups: int):
    """(rank sums (n_groups, n_cols) float64, tie terms (n_cols,) float64): every column ranked
    over all rows; `codes` holds one group per row (-1 or >= n_groups: ranked, in no group).
    NaN values are refused."""
    n_rows, n_cols = p.shape
    codes = _checked_codes(p, codes, np)
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
    """The same ranking in CuPy array operations: the nonzero stored values sorted by (column,
    value), tied blocks found where either changes, each value's average rank from its block's
    place in the column; sums by bincount, exact in any order since ranks are half-integers."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    n_rows, n_cols = p.shape
    codes = _checked_codes(p, codes, cp)
    p = kernel_parts(p)  # cupyx's CSR takes float and bool values only: integers as float64, exact
    x = cpsp.csr_matrix(p.data.reshape(p.shape)) if p.dense else cpsp.csr_matrix(tuple(p[:3]), shape=p.shape)
    csc = x.tocsc()
    cols = segment_ids(csc.indptr)
    keep = csc.data != 0
    vals, rows, cols = csc.data[keep].astype(cp.float64), csc.indices[keep].astype(cp.int64), cols[keep]
    order = cp.lexsort(cp.stack([vals, cols.astype(cp.float64)]))  # by column, then value
    vals, rows, cols = vals[order], rows[order], cols[order]
    m = cp.bincount(cols, minlength=n_cols)
    start = cp.cumsum(m) - m  # each column's first position among the sorted values
    pos = cp.arange(vals.size, dtype=cp.int64) - start[cols]
    new = cp.ones(vals.size, dtype=bool)
    new[1:] = (cols[1:] != cols[:-1]) | (vals[1:] != vals[:-1])
    block = cp.cumsum(new) - 1
    size = cp.bincount(block).astype(cp.float64)
    first = pos[new]  # each block's first position in its column
    zeros = n_rows - m
    rank = first[block] + cp.where(vals > 0, zeros[cols], 0) + (size[block] + 1) / 2.0
    inside = (codes >= 0) & (codes < n_groups)
    sizes = cp.bincount(codes[inside], minlength=n_groups)
    g = codes[rows]
    ok = (g >= 0) & (g < n_groups)
    flat = g[ok] * n_cols + cols[ok]
    sums = cp.bincount(flat, weights=rank[ok], minlength=n_groups * n_cols).reshape(n_groups, n_cols)
    seen = cp.bincount(flat, minlength=n_groups * n_cols).reshape(n_groups, n_cols)
    n_neg = cp.bincount(cols[vals < 0], minlength=n_cols)
    zero_rank = n_neg + (zeros + 1) / 2.0
    sums += (sizes[:, None] - seen) * zero_rank[None, :]
    tie = cp.bincount(cols[new], weights=size**3 - size, minlength=n_cols)
    tie += zeros.astype(cp.float64) ** 3 - zeros
    return sums, tie
