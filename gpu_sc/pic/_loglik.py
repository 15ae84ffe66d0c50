"""PIC x pair scoring: every PIC's best pair, its LL and alpha, and the pair posterior.

`pair_scores` streams PICs in chunks through the log-likelihood primitive
(`gpu_sc._ops.pic_loglik`: numba on the CPU, the CUDA kernel on the GPU; where the counts live
decides) and reduces each chunk's (rows, K_A * K_B) LL to per-PIC outputs (best pair, its LL and
alpha, the log normaliser of the pair posterior and the marginal posteriors of the A and B
group), so memory is bounded by the chunk, never n_PICs x K_A x K_B. Pairs are numbered
j = i_a + K_A * i_b; ties go to the smallest j. CPU and GPU results agree bit for bit up to the
summation order of the device reductions behind log_norm, p_a and p_b.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._backend import to_host, xp_of
from .._ops import Parts, parts
from .._ops.pic_loglik import N_ITER, pic_pair_loglik, stage

#: Bytes of a chunk's LL + alpha arrays (float64 rows x K_A * K_B each) when `chunk` is None.
CHUNK_BYTES = 256 << 20
#: The pair posterior kept per PIC (for pair frequencies): pairs of posterior >= POSTERIOR_MIN,
#: at most POSTERIOR_TOP of them, so memory is n_PICs x POSTERIOR_TOP whatever K_A * K_B is.
POSTERIOR_MIN = 1e-4
POSTERIOR_TOP = 32


def _reduce(xp, ll, al, ka: int, kb: int, temper: float = 1.0):
    """Per-row outputs from a chunk's LL (rows, K_A * K_B) and alpha (same shape, or None);
    the posterior over pairs is softmax(temper * LL), log_norm its log normaliser.

    Returns (ia, ib, best ll, best alpha or None, log_norm, p_a (rows, K_A), p_b (rows, K_B),
    (row, j, posterior) of the kept pairs (`_kept_pairs`)), arrays of namespace `xp` (numpy or
    cupy). argmax keeps the first maximum (smallest j).
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
    kept = _kept_pairs(xp, w)
    w = w.reshape(rows, kb, ka)
    return j % ka, j // ka, best, best_al, log_norm, w.sum(axis=1), w.sum(axis=2), kept


def _kept_pairs(xp, w):
    """(row, j, posterior) of the pairs kept per row of the posterior `w` (rows, K): posterior
    >= POSTERIOR_MIN and among the row's POSTERIOR_TOP largest (ties at the cut all kept)."""
    bar = xp.full(w.shape[0], POSTERIOR_MIN)
    if w.shape[1] > POSTERIOR_TOP:
        kth = -xp.partition(-w, POSTERIOR_TOP - 1, axis=1)[:, POSTERIOR_TOP - 1]
        bar = xp.maximum(bar, kth)
    r, j = xp.nonzero(w >= bar[:, None])  # NaN rows (no LL) keep nothing
    return r, j, w[r, j]


def on_device(x: sp.csr_matrix, device: str):
    """The host CSR PICs `x` where the likelihoods run: as is for the CPU, a cupyx CSR for the
    GPU."""
    if device != "gpu":
        return x
    import cupyx.scipy.sparse as cusp

    return cusp.csr_matrix(x)


def pair_columns(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The A and the B item of each pair column j = ia + K_A * ib of the pair posterior, for
    per-group items `a` (K_A) and `b` (K_B): names, codes, ..."""
    a, b = np.asarray(a), np.asarray(b)
    return np.tile(a, b.size), np.repeat(b, a.size)


@dataclass
class PairScores:
    """Per-PIC results of `pair_scores` (host numpy arrays, one entry per PIC).

    ia, ib: best pair (int64; ties to the smallest j = ia + K_A * ib); ll: its LL; alpha: its
    alpha (the fixed alpha in fixed mode); log_norm: logsumexp of temper * LL over all pairs,
    so the pair posterior is exp(temper * ll - log_norm); p_a (n, K_A), p_b (n, K_B): marginal
    posteriors of the A and B group (softmax over pairs, summed over the other side);
    posterior: CSR (n, K_A * K_B) of the pair posterior where it is >= POSTERIOR_MIN, at most
    POSTERIOR_TOP pairs a PIC (column j = ia + K_A * ib).
    """

    ia: np.ndarray
    ib: np.ndarray
    ll: np.ndarray
    alpha: np.ndarray
    log_norm: np.ndarray
    p_a: np.ndarray
    p_b: np.ndarray
    posterior: sp.csr_matrix
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
        msg_0 = "need at least one A group and one B group."
        raise ValueError(msg_0)
    for q in (pa, pb):
        if q.size and not (np.all(np.isfinite(q)) and q.min() >= 0):
            msg_0 = "profiles must be finite and non-negative."
            raise ValueError(msg_0)
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
    PairScores with host arrays ia, ib, ll, alpha, log_norm, p_a, p_b, posterior (see its
    docstring).
    """
    p = x if isinstance(x, Parts) else parts(x)
    if p.dense:
        msg = "pair_scores needs CSR counts (scipy or cupyx .tocsr())."
        raise TypeError(msg)
    n, n_genes = p.shape
    pa_h, pb_h = _host_profiles(pa, pb, n_genes)
    ka, kb = pa_h.shape[1], pb_h.shape[1]
    eps = float(eps)
    if not (np.isfinite(eps) and eps >= 0):
        msg = f"eps must be finite and >= 0, got {eps}."
        raise ValueError(msg)
    if alpha is not None:
        alpha = np.asarray(to_host(alpha), dtype=np.float64).reshape(-1)
        if alpha.shape != (n,):
            msg = f"alpha needs one value per PIC ({n}), got {alpha.shape[0]}."
            raise ValueError(msg)
        if alpha.size and not (np.all(np.isfinite(alpha)) and 0 <= alpha.min() <= alpha.max() <= 1):
            msg = "fixed alpha must lie in [0, 1] (drop PICs outside first)."
            raise ValueError(msg)
    chunk = default_chunk(ka, kb) if chunk is None else int(chunk)
    if chunk < 1:
        msg = f"chunk must be >= 1, got {chunk}."
        raise ValueError(msg)

    p, pa_w, pb_w, alpha_w = stage(p, pa_h, pb_h, alpha)
    xp = xp_of(p.data)
    out = PairScores(ia=np.empty(n, np.int64), ib=np.empty(n, np.int64), ll=np.empty(n),
                     alpha=np.empty(n), log_norm=np.empty(n), p_a=np.empty((n, ka)),
                     p_b=np.empty((n, kb)), posterior=None, temper=float(temper))  # fmt: skip
    kept = []
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        ll, al = pic_pair_loglik(p, r0, r1, pa_w, pb_w, eps, alpha_w, n_iter)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ia, ib, best, best_al, log_norm, p_a, p_b, post = _reduce(xp, ll, al, ka, kb, temper)
        del ll, al
        r, j, v = (to_host(a) for a in post)
        kept.append((r + r0, j, v))
        out.ia[r0:r1] = to_host(ia)
        out.ib[r0:r1] = to_host(ib)
        out.ll[r0:r1] = to_host(best)
        out.alpha[r0:r1] = alpha[r0:r1] if best_al is None else to_host(best_al)
        out.log_norm[r0:r1] = to_host(log_norm)
        out.p_a[r0:r1] = to_host(p_a)
        out.p_b[r0:r1] = to_host(p_b)
        if progress is not None:
            progress(r1, n)
    r, j, v = (np.concatenate([k[i] for k in kept]) if kept else np.zeros(0) for i in range(3))
    out.posterior = sp.csr_matrix((v.astype(np.float64), (r.astype(np.int64), j.astype(np.int64))),
                                  shape=(n, ka * kb))  # fmt: skip
    return out


def all_pairs_loglik(x: sp.csr_matrix, pa, pb, *, eps: float) -> np.ndarray:
    """Maximised LL of every PIC against every pair, (n, K_A * K_B) with column
    j = i_a + K_A * i_b (CPU engine, one block: for a few hundred PICs, e.g. calibration)."""
    p = parts(x.tocsr())
    pa_h, pb_h = _host_profiles(pa, pb, p.shape[1])
    ll, _ = pic_pair_loglik(p, 0, p.shape[0], pa_h, pb_h, float(eps))
    return ll
