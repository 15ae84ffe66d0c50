"""PIC x pair log-likelihood on the CPU, with fixed or per-pair maximised alpha.

LL_n(a, b, alpha) = sum over the PIC's nonzero genes g of u_g log(alpha P[g,a] + (1-alpha) P[g,b] + eps).
Only the PIC's nonzeros enter, so a PIC costs nnz x K_A x K_B, never genes x K_A x K_B.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _pair_terms(u, pa, pb):
    """Per PIC: (m, K_A, 1) and (m, 1, K_B) views for broadcasting."""
    return u[:, None, None], pa[:, :, None], pb[:, None, :]


def optimise_alpha(u, pa, pb, eps, n_iter: int = 40, tol: float = 1e-12):
    """Maximise the concave LL in alpha in [0, 1] for every pair (safeguarded Newton + bisection).

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
    for _ in range(n_iter):
        g, h = grad(al)
        lo = np.where(g > 0, al, lo)
        hi = np.where(g <= 0, al, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(h < 0, -g / h, 0.0)
        new = al + step
        bad = ~((new > lo) & (new < hi)) | (h >= 0)
        new = np.where(bad, 0.5 * (lo + hi), new)
        done = np.abs(new - al) < tol
        al = new
        if done.all():
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
    """LL of every PIC (rows of CSR `x`) against every pair.

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
