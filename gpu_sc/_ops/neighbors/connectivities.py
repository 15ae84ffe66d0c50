"""Neighbour-graph weights from kNN lists: UMAP's fuzzy simplicial set and the Gaussian kernel
(Haghverdi et al. 2016) as scanpy uses them. One array-namespace version serves CPU and GPU."""

from __future__ import annotations

import math

import numpy as np

from ..._backend import sparse_module, xp_of

_TOL = 1e-5  # binary-search tolerance on the membership sum
_MIN_SCALE = 1e-3  # sigma floor relative to the mean distance
_N_ITER = 64


def knn_csr(ind, dist, n: int, *, drop_first: bool):
    """CSR (n, n) holding each row's neighbours (explicit zeros kept), optionally without the
    first column (the row itself)."""
    if drop_first:
        ind, dist = ind[:, 1:], dist[:, 1:]
    xp = xp_of(ind)
    kk = ind.shape[1]
    it = _index_dtype(n, n * kk)
    indptr = xp.arange(0, n * kk + 1, kk, dtype=it)
    return sparse_module(ind).csr_matrix(
        (xp.ascontiguousarray(dist).ravel(), xp.ascontiguousarray(ind).ravel().astype(it), indptr),
        shape=(n, n),
    )


def _index_dtype(n: int, nnz: int):
    """int32 where it fits (as scipy and cupyx choose themselves), else int64."""
    return np.int32 if max(n, nnz) < 2**31 - 1 else np.int64


def _csr(xp, spm, rows, cols, vals, n):
    """CSR from row-major sorted coordinates."""
    it = _index_dtype(n, rows.size)
    indptr = xp.searchsorted(rows, xp.arange(n + 1, dtype=rows.dtype)).astype(it)
    return spm.csr_matrix((xp.ascontiguousarray(vals), cols.astype(it), indptr), shape=(n, n))


def _union(rows, cols, vals, n, *, fuzzy: bool):
    """Symmetric union of a sparse pattern without duplicate entries and its transpose, by one
    sort of the coordinate keys (no sparse elementwise products). Where (i, j) and (j, i) are
    both present: a + b - a b (fuzzy) or the (i, j) value itself (not fuzzy)."""
    xp = xp_of(rows)
    spm = sparse_module(rows)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    keys = xp.concatenate([rows * n + cols, cols * n + rows])
    v = xp.concatenate([vals, vals])
    own = xp.concatenate([xp.ones(rows.size, bool), xp.zeros(rows.size, bool)])
    order = xp.lexsort(xp.stack([(~own).astype(np.int64), keys]))  # by key, own entry first
    keys, v, own = keys[order], v[order], own[order]
    nxt_same = xp.zeros(keys.size, bool)
    nxt_same[:-1] = keys[1:] == keys[:-1]
    first = xp.ones(keys.size, bool)
    first[1:] = keys[1:] != keys[:-1]
    partner = xp.concatenate([v[1:], v[:1]])
    # the first of each key is kept: with its partner fused (fuzzy) or as the own entry
    out = xp.where(nxt_same, v + partner - v * partner, v) if fuzzy else v
    keys, out = keys[first], out[first]
    return _csr(xp, spm, keys // n, keys % n, out, n)


def _smooth_knn(d32, k: int):
    """Per row (rho, sigma): rho the smallest positive distance (0 if none), sigma found by
    bisection so that sum_{j>=1} exp(-max(d_j - rho, 0) / sigma) = log2(k)."""
    xp = xp_of(d32)
    n = d32.shape[0]
    pos = xp.where(d32 > 0, d32, xp.inf)
    rho = pos.min(axis=1)
    rho = xp.where(xp.isinf(rho), 0, rho).astype(np.float32)
    shifted = (d32[:, 1:] - rho[:, None]).astype(np.float64)  # float32 subtraction, as UMAP
    positive = shifted > 0
    safe = xp.where(positive, shifted, 0.0)  # no overflow in the discarded branch
    target = math.log2(k)
    lo = xp.zeros(n)
    hi = xp.full(n, xp.inf)
    mid = xp.ones(n)
    active = xp.ones(n, dtype=bool)
    for _ in range(_N_ITER):
        psum = xp.where(positive, xp.exp(-(safe / mid[:, None])), 1.0).sum(axis=1)
        active &= xp.abs(psum - target) >= _TOL
        if not bool(active.any()):
            break
        above = active & (psum > target)
        below = active & ~(psum > target)
        hi = xp.where(above, mid, hi)
        lo = xp.where(below, mid, lo)
        new_mid = xp.where(xp.isinf(hi), mid * 2, (lo + hi) / 2)
        mid = xp.where(active, new_mid, mid)
    sigma = mid
    row_mean = d32.astype(np.float64).mean(axis=1)
    all_mean = float(d32.astype(np.float64).mean())
    floor = xp.where(rho > 0, _MIN_SCALE * row_mean, _MIN_SCALE * all_mean)
    sigma = xp.where(sigma < floor, floor, sigma).astype(np.float32)
    return rho, sigma


def umap_connectivities(ind, dist, n: int, n_neighbors: int):
    """UMAP's fuzzy union A + A^T - A*A^T (set_op_mix_ratio 1, local_connectivity 1) of the
    membership strengths exp(-(d - rho) / sigma); float32 CSR, zero diagonal.
    `ind`/`dist`: (n, n_neighbors) lists with the row itself first."""
    xp = xp_of(ind)
    d32 = dist.astype(np.float32)
    rho, sigma = _smooth_knn(d32, n_neighbors)
    shifted = (d32 - rho[:, None]).astype(np.float64)
    flat = (shifted <= 0) | (sigma[:, None] == 0)
    scale = xp.where(sigma == 0, 1, sigma).astype(np.float64)[:, None]
    val = xp.where(flat, 1.0, xp.exp(-(xp.where(flat, 0.0, shifted) / scale)))
    rows = xp.repeat(xp.arange(n, dtype=np.int64), ind.shape[1])
    val = xp.where(ind == xp.arange(n)[:, None], 0.0, val).astype(np.float32).ravel()
    nz = val != 0
    out = _union(rows[nz], ind.ravel()[nz], val[nz], n, fuzzy=True)
    out.eliminate_zeros()
    return out


def gauss_connectivities(distances):
    """scanpy's Gaussian kernel on a kNN distance CSR (self excluded, sorted rows): sigma_i^2 the
    median squared distance of row i, w_ij = sqrt(2 s_i s_j / (s_i^2 + s_j^2))
    exp(-d_ij^2 / (s_i^2 + s_j^2)), symmetrised by copying w_ij to (j, i) where j lacks i."""
    xp = xp_of(distances.data)
    n = distances.shape[0]
    kk = int(distances.indptr[1] - distances.indptr[0]) if n else 0
    d2 = (distances.data.astype(distances.dtype) ** 2).reshape(n, kk)
    cols = distances.indices.reshape(n, kk).astype(np.int64)
    s2 = xp.median(d2, axis=1)
    s = xp.sqrt(s2)
    den = s2[:, None] + s2[cols]
    zero = den == 0  # identical cells with zero bandwidth (scanpy gives NaN): full weight
    den = xp.where(zero, 1, den)
    w = xp.where(zero, 1, xp.sqrt(2 * s[:, None] * s[cols] / den) * xp.exp(-d2 / den))
    rows = xp.repeat(xp.arange(n, dtype=np.int64), kk)
    return _union(rows, cols.ravel(), w.astype(distances.dtype).ravel(), n, fuzzy=False)
