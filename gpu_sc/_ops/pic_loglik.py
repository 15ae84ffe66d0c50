"""PIC x pair log-likelihood of a range of CSR rows (PICs) against every pair of an A and a B
profile, with alpha fixed per row or maximised per pair: numba on the CPU, kernels/pic_loglik.cu
on the GPU.

LL_r(a, b, alpha) = sum over row r's nonzero genes g of u_g log(alpha P[g,a] + (1-alpha) P[g,b] + eps).
Only the row's nonzeros enter, so a row costs nnz x K_A x K_B, never genes x K_A x K_B. Pairs are
numbered j = i_a + K_A * i_b. The CPU engine performs the GPU kernel's IEEE operations in the same
order, log included (both use the same log, see `_numba_log`), so CPU and GPU agree bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from .._kernels.pic_loglik import N_ITER
from ._dispatch import GPU, primitive
from ._layout import Parts
from ._numba_log import log

__all__ = ["N_ITER", "pic_pair_loglik", "stage"]

_STEP_TOL = 1e-12  # hard-coded in kernels/pic_loglik.cu too

# Per PIC (prange), the PIC's profile rows are gathered into contiguous (m, K) scratch, and the
# loops run SIMD across pairs (never across genes: each pair sums over genes in CSR order, as the
# kernel's thread does), so every pair performs the GPU kernel's operations in the same order.


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gather(data, indices, indptr, r, pa, pb):
    """Row r's counts u and the profiles of its genes in both populations, A (m, K_A) and
    B (m, K_B), gathered once so that every pair reads them contiguously."""
    s = indptr[r]
    m = indptr[r + 1] - s
    u = np.empty(m)
    A = np.empty((m, pa.shape[1]))
    B = np.empty((m, pb.shape[1]))
    for k in range(m):
        g = indices[s + k]
        u[k] = data[s + k]
        for ia in range(pa.shape[1]):
            A[k, ia] = pa[g, ia]
        for ib in range(pb.shape[1]):
            B[k, ib] = pb[g, ib]
    return u, A, B


_LANES = 32  # Newton pipeline width (pairs iterated together)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _load_slot(q, j, A, B, eps, D, BE):  # pragma: no cover - numba
    """Newton slot q takes pair j = ia + K_A * ib: its differences and shifted B column."""
    ka = A.shape[1]
    ia = j % ka
    ib = j // ka
    for k in range(A.shape[0]):
        b = B[k, ib]
        D[k, q] = A[k, ia] - b
        BE[k, q] = b + eps


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _ml_rows(data, indices, indptr, pa, pb, eps, n_iter, ll, alpha):  # pragma: no cover - numba
    """ll, alpha (rows, K_A * K_B) for the CSR rows of indptr (float64 data, int64 indices).

    Per PIC: (1) slopes at 0 and 1 for every pair, SIMD across ia; (2) the interior pairs
    stream through a pipeline of _LANES slots that iterate Newton together (SIMD across slots),
    a finished slot taking the next pair; (3) the LL at the final alpha, SIMD across ia. Each
    pair performs the kernel's operations in the kernel's order, so the schedule changes only
    the speed.
    """
    n = indptr.shape[0] - 1
    ka = pa.shape[1]
    kb = pb.shape[1]
    W = _LANES
    for r in numba.prange(n):
        u, A, B = _gather(data, indices, indptr, r, pa, pb)
        m = u.size
        al_all = np.empty((kb, ka))
        queue = np.empty(ka * kb, dtype=np.int64)
        nq = 0
        g0 = np.empty(ka)
        g1 = np.empty(ka)
        # (1) boundary tests
        for ib in range(kb):
            g0[:] = 0.0
            g1[:] = 0.0
            for k in range(m):
                b = B[k, ib]
                be = b + eps
                uk = u[k]
                for ia in range(ka):
                    d = A[k, ia] - b
                    ud = uk * d
                    g0[ia] += ud / be
                    g1[ia] += ud / (d + be)
            for ia in range(ka):
                if g0[ia] <= 0.0:
                    al_all[ib, ia] = 0.0
                elif g1[ia] >= 0.0:
                    al_all[ib, ia] = 1.0
                else:
                    al_all[ib, ia] = 0.5
                    queue[nq] = ia + ka * ib
                    nq += 1
        # (2) Newton pipeline over the interior pairs
        if n_iter > 0 and nq > 0:
            D = np.empty((m, W))
            BE = np.empty((m, W))
            al = np.full(W, 0.5)
            lo = np.zeros(W)
            hi = np.ones(W)
            it = np.zeros(W, dtype=np.int64)
            pid = np.full(W, -1, dtype=np.int64)
            gr = np.empty(W)
            h = np.empty(W)
            nxt = 0
            live = 0
            for q in range(W):  # fill the slots (idle slots keep harmless values)
                if nxt < nq:
                    pid[q] = queue[nxt]
                    _load_slot(q, queue[nxt], A, B, eps, D, BE)
                    nxt += 1
                    live += 1
                else:
                    for k in range(m):
                        D[k, q] = 0.0
                        BE[k, q] = 1.0
            while live > 0:
                gr[:] = 0.0
                h[:] = 0.0
                for k in range(m):
                    uk = u[k]
                    for q in range(W):
                        d = D[k, q]
                        t = d / (al[q] * d + BE[k, q])
                        ut = uk * t
                        gr[q] += ut
                        h[q] -= ut * t
                for q in range(W):
                    if pid[q] < 0:
                        continue
                    a0 = al[q]
                    if gr[q] > 0.0:
                        lo[q] = a0
                    else:
                        hi[q] = a0
                    nw = a0 - gr[q] / h[q] if h[q] < 0.0 else 0.5 * (lo[q] + hi[q])
                    if not (nw > lo[q] and nw < hi[q]):  # toward the end Newton points to
                        w = 0.03125 * (hi[q] - lo[q])
                        nw = lo[q] + w if nw <= lo[q] else hi[q] - w
                    step = abs(nw - a0)
                    al[q] = nw
                    it[q] += 1
                    if step < _STEP_TOL or it[q] >= n_iter:
                        j = pid[q]
                        al_all[j // ka, j % ka] = nw
                        al[q] = 0.5
                        lo[q] = 0.0
                        hi[q] = 1.0
                        it[q] = 0
                        if nxt < nq:
                            pid[q] = queue[nxt]
                            _load_slot(q, queue[nxt], A, B, eps, D, BE)
                            nxt += 1
                        else:
                            pid[q] = -1
                            live -= 1
        # (3) LL at the final alpha
        acc = g0
        for ib in range(kb):
            acc[:] = 0.0
            for k in range(m):
                b = B[k, ib]
                be = b + eps
                uk = u[k]
                for ia in range(ka):
                    d = A[k, ia] - b
                    acc[ia] += uk * log(al_all[ib, ia] * d + be)
            for ia in range(ka):
                ll[r, ia + ka * ib] = acc[ia]
                alpha[r, ia + ka * ib] = al_all[ib, ia]


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _fixed_rows(data, indices, indptr, pa, pb, eps, alpha, ll):  # pragma: no cover - numba
    """ll (rows, K_A * K_B) at the fixed per-row alpha: x = alpha a + (1 - alpha) b + eps."""
    n = indptr.shape[0] - 1
    ka = pa.shape[1]
    kb = pb.shape[1]
    for r in numba.prange(n):
        u, A, B = _gather(data, indices, indptr, r, pa, pb)
        m = u.size
        al = alpha[r]
        om = 1.0 - al
        acc = np.empty(ka)
        for ib in range(kb):
            acc[:] = 0.0
            for k in range(m):
                c = om * B[k, ib]
                uk = u[k]
                for ia in range(ka):
                    acc[ia] += uk * log((al * A[k, ia] + c) + eps)
            for ia in range(ka):
                ll[r, ia + ka * ib] = acc[ia]


@primitive()
def stage(p: Parts, pa, pb, alpha):
    """(p, pa, pb, alpha) where `p` lives, in the engine's types, converted once for the many
    row ranges of a stream. GPU: float counts, profiles on the device (float32 when both are,
    else float64), alpha on the device; CPU: float64 C-contiguous profiles."""
    return p, *(np.ascontiguousarray(q, dtype=np.float64) for q in (pa, pb)), alpha


@primitive()
def pic_pair_loglik(p: Parts, r0: int, r1: int, pa, pb, eps: float, alpha=None, n_iter: int = N_ITER):
    """(ll, alpha or None), float64 (r1 - r0, K_A * K_B) on the device of `p`, for CSR rows
    [r0, r1): alpha maximised per pair in [0, 1] (bracketed Newton, at most `n_iter` steps), or
    `alpha` fixed per row (one value for each row of `p`; then no alpha is returned).
    pa (genes, K_A), pb (genes, K_B): profiles as `stage` gives them. No Dask form: the caller
    streams row ranges of in-memory blocks."""
    s, e = int(p.indptr[r0]), int(p.indptr[r1])
    ptr = np.asarray(p.indptr[r0 : r1 + 1], dtype=np.int64) - s
    idx = np.ascontiguousarray(p.indices[s:e], dtype=np.int64)
    dat = np.ascontiguousarray(p.data[s:e], dtype=np.float64)
    k = pa.shape[1] * pb.shape[1]
    ll = np.empty((r1 - r0, k))
    pa, pb = np.ascontiguousarray(pa, dtype=np.float64), np.ascontiguousarray(pb, dtype=np.float64)
    if alpha is None:
        al = np.empty((r1 - r0, k))
        _ml_rows(dat, idx, ptr, pa, pb, float(eps), int(n_iter), ll, al)
        return ll, al
    _fixed_rows(dat, idx, ptr, pa, pb, float(eps), np.ascontiguousarray(alpha[r0:r1]), ll)
    return ll, None


@pic_pair_loglik.register(GPU)
def _gpu_chunk(p: Parts, r0: int, r1: int, pa, pb, eps, alpha=None, n_iter: int = N_ITER):
    """As the CPU version, on the device (a slice of indptr, the full data and indices)."""
    from .._kernels.pic_loglik import pic_loglik, pic_loglik_fixed

    ptr = p.indptr[r0 : r1 + 1]
    if alpha is None:
        return pic_loglik(p.data, p.indices, ptr, r1 - r0, pa, pb, eps, n_iter)
    return pic_loglik_fixed(p.data, p.indices, ptr, r1 - r0, pa, pb, alpha[r0:r1], eps), None


@stage.register(GPU)
def _gpu_stage(p: Parts, pa, pb, alpha):
    import cupy as cp

    data = p.data if p.data.dtype in (np.float32, np.float64) else p.data.astype(np.float64)
    p = Parts(cp.ascontiguousarray(data), p.indices, p.indptr, p.shape)
    dt = np.float32 if (pa.dtype == np.float32 and pb.dtype == np.float32) else np.float64
    pa, pb = (cp.asarray(np.ascontiguousarray(q, dtype=dt)) for q in (pa, pb))
    return p, pa, pb, None if alpha is None else cp.asarray(alpha)
