"""The NumPy reference of the PIC x pair log-likelihood (a Python loop over PICs holding the full
(n, K_A, K_B) tensor): what `pair_scores` and the numba / CUDA engines are tested against."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from gpu_sc.pic._alpha_ml import optimise_alpha, pair_terms


def fixed_alpha_ll(u, pa, pb, alpha, eps):
    """LL for every pair at a given alpha: (K_A, K_B)."""
    uu, A, B = pair_terms(u, pa, pb)
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
