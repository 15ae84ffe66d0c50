"""PIC x pair log-likelihood, with fixed or per-pair maximised alpha, on CPU (numba) or GPU.

LL_n(a, b, alpha) = sum over the PIC's nonzero genes g of
u_g log(alpha P[g,a] + (1-alpha) P[g,b] + eps).
Only the PIC's nonzeros enter, so a PIC costs nnz x K_A x K_B, never genes x K_A x K_B.

`pair_scores` is the scalable entry point: it streams PICs in chunks through an engine (numba on
the CPU, kernels/pic_loglik.cu on the GPU; the location of the counts decides) and reduces each
chunk's (rows, K_A * K_B) LL to per-PIC outputs (best pair, its LL and alpha, the log
normaliser of the pair posterior and the marginal posteriors of the A and B group), so memory is
bounded by the chunk, never n_PICs x K_A x K_B. Pairs are numbered j = i_a + K_A * i_b; ties go
to the smallest j. The CPU engine performs the GPU kernel's IEEE operations in the same order,
log included (both use the same log, see `_log`), so CPU and GPU results agree bit for bit
(up to the summation order of the device reductions behind log_norm, p_a and p_b).

`optimise_alpha`, `fixed_alpha_ll`, `pair_loglik` (numpy, the full tensor: a reference for small
inputs) and `best_pair` are kept for callers and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from .._backend import is_gpu, to_host
from .._ops._layout import Parts, parts

#: Bracketed Newton steps at most per pair (CPU and GPU).
N_ITER = 60
#: Bytes of a chunk's LL + alpha arrays (float64 rows x K_A * K_B each) when `chunk` is None.
CHUNK_BYTES = 256 << 20
_STEP_TOL = 1e-12  # hard-coded in kernels/pic_loglik.cu too


def _pair_terms(u, pa, pb):
    """Per PIC: (m, K_A, 1) and (m, 1, K_B) views for broadcasting."""
    return u[:, None, None], pa[:, :, None], pb[:, None, :]


def _toward_end(nw, lo, hi):
    """Where a Newton step leaves the bracket (lo, hi), the root lies near the end it points
    to (an optimum close to 0 or 1): move 1/32 of the bracket toward that end rather than to
    the middle (fewer and more even steps; the engine and the kernel do the same)."""
    w = 0.03125 * (hi - lo)
    return np.where(nw <= lo, lo + w, hi - w)


def optimise_alpha(u, pa, pb, eps, n_iter: int = 40, tol: float = 1e-12):
    """Maximise the concave LL in alpha in [0, 1] for every pair (bracketed Newton).

    u: (m,) counts on nonzeros; pa: (m, K_A) and pb: (m, K_B) profiles on those genes.
    Returns (alpha (K_A, K_B), ll (K_A, K_B)).
    """
    uu, A, B = _pair_terms(u, pa, pb)
    d = A - B  # (m, K_A, K_B)
    base = B + eps

    def grad(al):
        x = al * d + base
        return (uu * d / x).sum(0), -(uu * d * d / (x * x)).sum(0)

    g0, _ = grad(np.zeros(d.shape[1:]))
    g1, _ = grad(np.ones(d.shape[1:]))
    lo = np.zeros(d.shape[1:])
    hi = np.ones(d.shape[1:])
    al = np.full(d.shape[1:], 0.5)
    interior = (g0 > 0) & (g1 < 0)
    active = np.ones(d.shape[1:], dtype=bool)  # a pair stops at its first small step
    for _ in range(n_iter):
        g, h = grad(al)
        lo = np.where(active & (g > 0), al, lo)
        hi = np.where(active & (g <= 0), al, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(h < 0, al - g / h, 0.5 * (lo + hi))
        new = np.where((new > lo) & (new < hi), new, _toward_end(new, lo, hi))
        new = np.where(active, new, al)
        active &= ~(np.abs(new - al) < tol)
        al = new
        if not active.any():
            break
    al = np.where(interior, al, np.where(g0 <= 0, 0.0, 1.0))
    ll = (uu * np.log(al * d + base)).sum(0)
    return al, ll


def fixed_alpha_ll(u, pa, pb, alpha, eps):
    """LL for every pair at a given alpha: (K_A, K_B)."""
    uu, A, B = _pair_terms(u, pa, pb)
    return (uu * np.log(alpha * A + (1 - alpha) * B + eps)).sum(0)


def pair_loglik(x: sp.csr_matrix, pa_full: np.ndarray, pb_full: np.ndarray, *, eps: float,
                alpha: np.ndarray | None = None):
    """LL of every PIC (rows of CSR `x`) against every pair: the numpy reference (a Python loop
    over PICs holding the full tensor; for small inputs and tests, use `pair_scores` at scale).

    pa_full (genes, K_A), pb_full (genes, K_B) float64. With `alpha` (per PIC) fixed, else
    maximised per pair. Returns (ll (n, K_A, K_B), alpha (n, K_A, K_B)).
    """
    n = x.shape[0]
    ka, kb = pa_full.shape[1], pb_full.shape[1]
    ll = np.empty((n, ka, kb))
    al = np.empty((n, ka, kb))
    for i in range(n):
        s, e = x.indptr[i], x.indptr[i + 1]
        idx = x.indices[s:e]
        u = np.asarray(x.data[s:e], dtype=np.float64)
        pa, pb = pa_full[idx], pb_full[idx]
        if alpha is None:
            al[i], ll[i] = optimise_alpha(u, pa, pb, eps)
        else:
            al[i] = alpha[i]
            ll[i] = fixed_alpha_ll(u, pa, pb, float(alpha[i]), eps)
    return ll, al


def best_pair(ll: np.ndarray):
    """Argmax over pairs with the tie rule: smallest j = i_a + K_A * i_b.

    ll (n, K_A, K_B). Returns (i_a, i_b).
    """
    n, ka, kb = ll.shape
    flat = ll.transpose(0, 2, 1).reshape(n, ka * kb)  # column j = i_a + K_A * i_b
    j = np.argmax(flat, axis=1)  # first maximum
    return j % ka, j // ka


# --------------------------------------------------------------------------- CPU engine (numba)
# A natural log that LLVM vectorises (glibc's log() is a scalar call and was ~40 % of the time):
# x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f), and
# log(m) = 2 atanh(s) = f - f^2/2 + s (f^2/2 + R), R = sum_k 2 s^(2k) / (2k + 1) (k = 1..13, enough
# for |s| <= 0.172); log 2 split into a 21-bit head (e * head exact) and its tail. Max error 1 ulp
# (checked against math.log in tests/test_pic_loglik.py). kernels/pic_loglik.cu has the same
# function (gsc_pic_log, same operations, no FMA contraction), so CPU and GPU LL agree bit for bit.

_LN2_HI = 0.6931467056274414  # 0x1.62e42p-1: ln 2 to 21 bits
_LN2_LO = 4.7493250390316726e-07  # ln 2 - _LN2_HI
_SQRT2_BITS = 0x3FF6A09E667F3BCD  # bits of sqrt(2.0)
_MIN_NORMAL = 2.2250738585072014e-308
_TWO54 = 18014398509481984.0
(_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = (
    2.0 / (2 * k + 1) for k in range(1, 14))  # fmt: skip


@intrinsic
def _bits(typingctx, x):
    """float64 -> its int64 bit pattern."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """int64 bit pattern -> float64."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(inline="always", error_model="numpy")
def _log(x):  # pragma: no cover - numba
    sub = x < _MIN_NORMAL
    bits = _bits(x * (_TWO54 if sub else 1.0))
    mb = (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    big = mb > _SQRT2_BITS
    mb = mb - (np.int64(big) << 52)
    e = (bits >> 52) - 1023 + np.int64(big) - (54 if sub else 0)
    de = _from_bits(e + 0x4338000000000000) - 6755399441055744.0  # float(e), vectorisable
    f = _from_bits(mb) - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = _C13 * z + _C12
    r = r * z + _C11
    r = r * z + _C10
    r = r * z + _C9
    r = r * z + _C8
    r = r * z + _C7
    r = r * z + _C6
    r = r * z + _C5
    r = r * z + _C4
    r = r * z + _C3
    r = r * z + _C2
    r = r * z + _C1
    hfsq = 0.5 * f * f
    v = de * _LN2_HI + (f - (hfsq - (s * (hfsq + z * r) + de * _LN2_LO)))
    if (x > 0.0) & (x < np.inf):
        return v
    return -np.inf if x == 0.0 else (np.inf if x == np.inf else np.nan)


@numba.njit(error_model="numpy")
def _log_array(x):  # pragma: no cover - numba
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _log(x[i])
    return out

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
                    acc[ia] += uk * _log(al_all[ib, ia] * d + be)
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
                    acc[ia] += uk * _log((al * A[k, ia] + c) + eps)
            for ia in range(ka):
                ll[r, ia + ka * ib] = acc[ia]


def _cpu_chunk(p: Parts, r0: int, r1: int, pa, pb, eps, alpha, n_iter):
    """(ll, alpha or None) float64 (r1 - r0, K_A * K_B) for CSR rows [r0, r1) on the CPU."""
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


def _gpu_chunk(p: Parts, r0: int, r1: int, pa, pb, eps, alpha, n_iter):
    """As `_cpu_chunk`, on the device (a slice of indptr, the full data and indices)."""
    from .._kernels.pic_loglik import pic_loglik, pic_loglik_fixed

    ptr = p.indptr[r0 : r1 + 1]
    if alpha is None:
        return pic_loglik(p.data, p.indices, ptr, r1 - r0, pa, pb, eps, n_iter)
    return pic_loglik_fixed(p.data, p.indices, ptr, r1 - r0, pa, pb, alpha[r0:r1], eps), None


# --------------------------------------------------------------------------- shared reduction


def _reduce(xp, ll, al, ka: int, kb: int, temper: float = 1.0):
    """Per-row outputs from a chunk's LL (rows, K_A * K_B) and alpha (same shape, or None);
    the posterior over pairs is softmax(temper * LL), log_norm its log normaliser.

    Returns (ia, ib, best ll, best alpha or None, log_norm, p_a (rows, K_A), p_b (rows, K_B)),
    arrays of namespace `xp` (numpy or cupy). argmax keeps the first maximum (smallest j).
    """
    rows, k = ll.shape
    top = ll.max(axis=1)
    # first maximum by a min over candidate indices: no reliance on argmax's tie order
    j = xp.where(ll == top[:, None], xp.arange(k, dtype=xp.int32), k).min(axis=1)
    j = xp.minimum(j, k - 1).astype(xp.int64)  # (a NaN row has no candidate)
    r = xp.arange(rows)
    best = ll[r, j]
    best_al = None if al is None else al[r, j]
    shift = xp.where(xp.isfinite(best), temper * best, 0.0)
    w = temper * ll - shift[:, None]
    xp.exp(w, out=w)
    z = w.sum(axis=1)
    log_norm = shift + xp.log(z)
    w /= z[:, None]
    w = w.reshape(rows, kb, ka)
    return j % ka, j // ka, best, best_al, log_norm, w.sum(axis=1), w.sum(axis=2)


@dataclass
class PairScores:
    """Per-PIC results of `pair_scores` (host numpy arrays, one entry per PIC).

    ia, ib: best pair (int64; ties to the smallest j = ia + K_A * ib); ll: its LL; alpha: its
    alpha (the fixed alpha in fixed mode); log_norm: logsumexp of temper * LL over all pairs,
    so the pair posterior is exp(temper * ll - log_norm); p_a (n, K_A), p_b (n, K_B): marginal
    posteriors of the A and B group (softmax over pairs, summed over the other side).
    """

    ia: np.ndarray
    ib: np.ndarray
    ll: np.ndarray
    alpha: np.ndarray
    log_norm: np.ndarray
    p_a: np.ndarray
    p_b: np.ndarray
    temper: float = 1.0

    @property
    def p_pair(self) -> np.ndarray:
        """Posterior probability of the best pair."""
        return np.exp(self.temper * self.ll - self.log_norm)

    def __len__(self) -> int:
        return self.ia.shape[0]


def default_chunk(ka: int, kb: int) -> int:
    """PICs per chunk so that a chunk's LL + alpha (float64) stay within `CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (16 * max(1, ka * kb)))


def _host_profiles(pa, pb, n_genes):
    pa, pb = to_host(pa), to_host(pb)
    if pa.ndim != 2 or pb.ndim != 2 or pa.shape[0] != n_genes or pb.shape[0] != n_genes:
        msg = (f"profiles must be (genes, K_A) and (genes, K_B) over the {n_genes} columns of x, "
               f"got {pa.shape} and {pb.shape}.")  # fmt: skip
        raise ValueError(msg)
    if pa.shape[1] == 0 or pb.shape[1] == 0:
        raise ValueError("need at least one A group and one B group.")
    for q in (pa, pb):
        if q.size and not (np.all(np.isfinite(q)) and q.min() >= 0):
            raise ValueError("profiles must be finite and non-negative.")
    return pa, pb


def pair_scores(x, pa, pb, *, eps: float, alpha=None, chunk: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                n_iter: int = N_ITER, temper: float = 1.0) -> PairScores:  # fmt: skip
    """Best pair, its LL and alpha, and pair posteriors of every PIC, streamed in chunks.

    Parameters
    ----------
    x
        CSR counts of the PICs (rows) over the profile genes (columns): scipy.sparse (CPU,
        numba engine) or cupyx.scipy.sparse (GPU, kernels/pic_loglik.cu), or `Parts` of a CSR
        matrix (int32 or int64 indices).
    pa, pb
        Profiles (genes, K_A) and (genes, K_B), non-negative (numpy; moved to the device for
        GPU input, float32 kept as float32 there; the CPU computes in float64 from the same
        values).
    eps
        Pseudo-probability added inside the log (>= 0).
    alpha
        None: alpha maximised per pair in [0, 1] (safeguarded Newton). Else one fixed alpha in
        [0, 1] per PIC (the published method).
    chunk
        PICs per chunk (default: LL + alpha of a chunk ~256 MB).
    progress
        Called as progress(done, total) after each chunk.
    n_iter
        Bracketed Newton steps at most per pair.
    temper
        The pair posterior is softmax(temper * LL) (1: the plain likelihood; < 1 widens it
        where the profiles are a coarse model of the PIC's cells).

    Returns
    -------
    PairScores with host arrays ia, ib, ll, alpha, log_norm, p_a, p_b (see its docstring).
    """
    p = x if isinstance(x, Parts) else parts(x)
    if p.dense:
        raise TypeError("pair_scores needs CSR counts (scipy or cupyx .tocsr()).")
    n, n_genes = p.shape
    pa_h, pb_h = _host_profiles(pa, pb, n_genes)
    ka, kb = pa_h.shape[1], pb_h.shape[1]
    eps = float(eps)
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}.")
    if alpha is not None:
        alpha = np.asarray(to_host(alpha), dtype=np.float64).reshape(-1)
        if alpha.shape != (n,):
            raise ValueError(f"alpha needs one value per PIC ({n}), got {alpha.shape[0]}.")
        if alpha.size and not (np.all(np.isfinite(alpha)) and 0 <= alpha.min() <= alpha.max() <= 1):
            raise ValueError("fixed alpha must lie in [0, 1] (drop PICs outside first).")
    chunk = default_chunk(ka, kb) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")

    gpu = is_gpu(p.data)
    if gpu:
        import cupy as cp

        xp = cp
        data = p.data if p.data.dtype in (np.float32, np.float64) else p.data.astype(np.float64)
        p = Parts(cp.ascontiguousarray(data), p.indices, p.indptr, p.shape)
        dt = np.float32 if (pa_h.dtype == np.float32 and pb_h.dtype == np.float32) else np.float64
        pa_w = cp.asarray(np.ascontiguousarray(pa_h, dtype=dt))
        pb_w = cp.asarray(np.ascontiguousarray(pb_h, dtype=dt))
        alpha_w = None if alpha is None else cp.asarray(alpha)
        engine = _gpu_chunk
    else:
        xp = np
        pa_w = np.ascontiguousarray(pa_h, dtype=np.float64)
        pb_w = np.ascontiguousarray(pb_h, dtype=np.float64)
        alpha_w = alpha
        engine = _cpu_chunk

    out = PairScores(ia=np.empty(n, np.int64), ib=np.empty(n, np.int64), ll=np.empty(n),
                     alpha=np.empty(n), log_norm=np.empty(n), p_a=np.empty((n, ka)),
                     p_b=np.empty((n, kb)), temper=float(temper))  # fmt: skip
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        ll, al = engine(p, r0, r1, pa_w, pb_w, eps, alpha_w, n_iter)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ia, ib, best, best_al, log_norm, p_a, p_b = _reduce(xp, ll, al, ka, kb, temper)
        del ll, al
        out.ia[r0:r1] = to_host(ia)
        out.ib[r0:r1] = to_host(ib)
        out.ll[r0:r1] = to_host(best)
        out.alpha[r0:r1] = alpha[r0:r1] if best_al is None else to_host(best_al)
        out.log_norm[r0:r1] = to_host(log_norm)
        out.p_a[r0:r1] = to_host(p_a)
        out.p_b[r0:r1] = to_host(p_b)
        if progress is not None:
            progress(r1, n)
    return out


def all_pairs_loglik(x: sp.csr_matrix, pa, pb, *, eps: float) -> np.ndarray:
    """Maximised LL of every PIC against every pair, (n, K_A * K_B) with column
    j = i_a + K_A * i_b (CPU engine, one block: for a few hundred PICs, e.g. calibration)."""
    p = parts(x.tocsr())
    pa_h, pb_h = _host_profiles(pa, pb, p.shape[1])
    ll, _ = _cpu_chunk(p, 0, p.shape[0], pa_h, pb_h, float(eps), None, N_ITER)
    return ll
