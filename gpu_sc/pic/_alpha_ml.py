"""Maximum-likelihood alpha of given pairs in NumPy, over the full (genes, K_A, K_B) tensor of a
PIC: for a few pairs at a time (benchmarks/pic_alpha_ceiling.py) and as the reference the
numba engine and the CUDA kernel (`gpu_sc._ops.pic_loglik`) are tested against. At scale use
`pair_scores` (`_loglik`), which streams PICs through those engines."""

from __future__ import annotations

import numpy as np


def pair_terms(u, pa, pb):
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
    uu, A, B = pair_terms(u, pa, pb)
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
