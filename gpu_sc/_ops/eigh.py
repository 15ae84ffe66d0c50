"""Leading eigenpairs of C = A^T A / (n - 1), A = X - 1 mu^T the implicitly centred matrix (mu
None: A = X, a truncated SVD), over `Parts` or `Chunked` X through the products of `gram`,
in float64; sparse X is never densified in full, nor centred. PCA's solvers:

- `covariance_eigh`: C = (X^T X - n mu mu^T) / (n - 1), X^T X accumulated over row blocks (each a
  dense float64 block multiplied by BLAS / cuBLAS), then decomposed whole by `eigh`. For up to
  a few thousand genes.
- `cell_side_eigh`: for few cells and many genes, the small cell-side matrix A A^T, formed
  block by block and decomposed whole (exact); the gene-side vectors are A^T u / s. Needs all of
  X for every block of columns, so not for a Dask X.
- `krylov_eigh`: for many genes and many cells, a randomized block Krylov method on the
  operator C v = (X^T (X v) - n mu (mu^T v)) / (n - 1), one pass over X (in blocks) per product
  with a block of max(8, k / 2) vectors: block Lanczos with full reorthogonalisation and thick
  restarts (Krylov-Schur) from a random Gaussian start block; a basis of up to k + 10 blocks of
  columns (300 for k = 50; at most BASIS_BYTES), restarted on the top Ritz vectors. It stops when
  each of the k Ritz pairs has residual ||C v - theta v|| <= tol * max(gap, GAP * theta) (tol
  3e-3), gap being its distance to the nearest other Ritz value less that value's residual.
  Then every component whose relative eigengap is at least GAP is within an angle of
  sin <= 3e-3 of the exact one (|cos| >= 0.9999955), and every value is within 1e-5 (relative)
  of an exact eigenvalue (within res^2 / gap, Kato-Temple, where separated; within res where
  not). With too few genes for its basis it decomposes the (tiny) covariance matrix instead.

Each returns (values descending, vectors as columns); the caller fixes the signs.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from . import gram
from .._backend import xp_of
from .._settings import user_stacklevel

#: relative eigengap below which two components count as degenerate (the Krylov solver's
#: accuracy is promised for directions separated by more than this)
GAP = 1e-3
#: cell-side singular values at or below this share of the largest (or of ||X||_F, where
#: centring cancels) are round-off of a rank-deficient matrix; a real one that small (a variance
#: 1e-12 of the largest) would lose its loading, which below it was already mostly round-off
NULL_SINGULAR = 1e-6
#: memory for the Krylov basis (n_genes x columns, float64) beyond its minimum
BASIS_BYTES = 256 * 2**20


def _generator(random_state):
    """A numpy Generator or RandomState as given (both draw standard_normal), else the
    Generator of seed `random_state` (validated by the caller)."""
    if isinstance(random_state, np.random.RandomState | np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def cell_side_eigh(p, k: int, mean, chunk_size):
    """Top-k eigenpairs of C = A^T A / (n - 1) through the small cell-side matrix A A^T
    (A = X - 1 mean^T implicitly; mean None: A = X), for few cells and many genes."""
    xp = p.xp
    n_obs = p.shape[0]
    kk = gram.cell_gram(p, chunk_size)
    norm = float(xp.sqrt(xp.trace(kk)))  # ||X||_F: the scale of the centred product's round-off
    if mean is not None:  # A A^T = X X^T - r 1^T - 1 r^T + (mu.mu) 1 1^T with r = X mu
        r = gram.project(p, mean[:, None], None, chunk_size)[:, 0]
        kk -= r[:, None]
        kk -= r[None, :]
        kk += float(mean @ mean)
    w, u = _top_eigh(xp, (kk + kk.T) / 2, k)
    w, u = xp.maximum(w, 0), xp.ascontiguousarray(u)
    v = gram.transpose_apply(p, u, chunk_size)  # A^T u = X^T u - mu (1^T u)
    if mean is not None:
        v -= xp.outer(mean, u.sum(axis=0))
    s = xp.sqrt(w)
    # A's rank below k (repeated cells): A^T u / s is noise where s is round-off of the product
    # (its error grows as ||X|| / s; one cell repeated, centred: every s is), so those directions,
    # of zero variance, are an orthonormal completion instead
    null = s <= max(float(s[0]), norm) * NULL_SINGULAR
    v /= xp.where(null, 1, s)
    if bool(null.any()):
        v = _completed(xp, v, null)
    return w / max(n_obs - 1, 1), v


def _completed(xp, v, null):
    """`v` with its `null` columns replaced by unit vectors orthogonal to the others and to each
    other (a fixed Gaussian draw, orthonormalised after the kept columns: deterministic)."""
    keep, gone = xp.flatnonzero(~null), xp.flatnonzero(null)
    draw = xp.asarray(np.random.default_rng(0).standard_normal((v.shape[0], int(gone.size))))
    q, _ = xp.linalg.qr(xp.concatenate([v[:, keep], draw], axis=1))
    out = v.copy()
    out[:, gone] = q[:, int(keep.size):]
    return out


def covariance_eigh(g, n_obs: int, k: int, mean):
    """Top-k eigenpairs of C = A^T A / (n - 1), A = X - 1 mean^T (mean None: A = X), from the Gram
    matrix g = X^T X of the n_obs rows (`gram.moments_and_gram`, which reads the means in the same
    pass): C = (X^T X - n mean mean^T) / (n - 1), decomposed whole. g is overwritten."""
    xp = xp_of(g)
    if mean is not None:
        g -= n_obs * xp.outer(mean, mean)
    g /= max(n_obs - 1, 1)
    return _top_eigh(xp, g, k)


def _top_eigh(xp, g, k: int):
    """The k largest eigenvalues of symmetric `g`, descending, and their eigenvectors."""
    if xp is np and 0 < k < g.shape[0]:  # LAPACK's MRRR computes the k leading pairs only
        import scipy.linalg

        w, vecs = scipy.linalg.eigh(g, subset_by_index=[g.shape[0] - k, g.shape[0] - 1], driver="evr")
    else:
        w, vecs = xp.linalg.eigh(g)
    return w[::-1][:k], vecs[:, ::-1][:, :k]


def krylov_eigh(
    p,
    k: int,
    mean,
    random_state,
    chunk_size,
    *,
    tol: float = 3e-3,
    block: int | None = None,
    max_basis: int | None = None,
    max_passes: int = 400,
):
    """Top-k eigenpairs of C = A^T A / (n - 1), A = X - 1 mean^T (mean None: A = X), by a
    randomized block Krylov method: block Lanczos with full reorthogonalisation and thick
    restarts (Krylov-Schur), without forming C or densifying X. Returns (values, vectors,
    passes over X)."""
    xp = p.xp
    n_obs, n_vars = p.shape
    b, keep, m_max = _krylov_sizes(k, n_vars, block, max_basis)
    if b is None:  # too few genes for a Krylov basis: the covariance matrix is tiny
        return (*covariance_eigh(gram.gram(p, chunk_size), n_obs, k, mean), 1)
    scale = 1.0 / max(n_obs - 1, 1)
    rng = _generator(random_state)
    basis = xp.empty((n_vars, m_max), dtype=np.float64)
    basis[:, :b], _ = xp.linalg.qr(xp.asarray(rng.standard_normal((n_vars, b))))
    t = xp.zeros((m_max, m_max), dtype=np.float64)  # Rayleigh quotient basis^T C basis
    m, passes = b, 0
    while True:
        j0 = m - b
        w = gram.centred_normal_apply(p, basis[:, j0:m], mean, chunk_size)
        w *= scale
        passes += 1
        v = basis[:, :m]
        h = v.T @ w  # block column j0:m of the projected matrix
        w -= v @ h
        h2 = v.T @ w  # classical Gram-Schmidt, twice
        w -= v @ h2
        h += h2
        t[:m, j0:m] = h
        t[j0:m, :m] = h.T
        t[j0:m, j0:m] = (h[j0:m] + h[j0:m].T) / 2
        q, r = _orthonormalize(w)
        theta, s = xp.linalg.eigh(t[:m, :m])
        theta, s = theta[::-1], s[:, ::-1]
        # C basis = basis T + w e_last^T: the residual of Ritz vector basis s_i is w s_i[last]
        res = xp.linalg.norm(r @ s[j0:m, : k + 1], axis=0)
        done = m > k and _ritz_converged(theta, res, k, tol)
        if done or passes >= max_passes:
            break
        top = float(theta[0])
        if float(xp.min(xp.abs(xp.diagonal(r)))) <= 1e-8 * max(top, 1e-300):
            for _ in range(2):  # (near) invariant subspace: keep the new block orthogonal
                q -= v @ (v.T @ q)
            q, _ = xp.linalg.qr(q)
        if m + b > m_max:  # thick restart: keep the leading Ritz vectors and the new block
            basis[:, :keep] = v @ s[:, :keep]
            t[:, :] = 0
            t[:keep, :keep] = xp.diag(theta[:keep])
            m = keep
        basis[:, m : m + b] = q
        m += b
    if not done:
        warnings.warn(
            f"pca: the block Krylov solver did not converge in {max_passes} passes over the data; "
            "the trailing components may be inaccurate.",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    return theta[:k], basis[:, :m] @ s[:, :k], passes


def _linalg_raises(xp):
    """numpy raises LinAlgError where a factorisation fails; cupy only when asked to (by default
    it returns whatever cuSOLVER left behind)."""
    if xp is np:
        return contextlib.nullcontext()
    import cupyx

    return cupyx.errstate(linalg="raise")


def _orthonormalize(w):
    """w = q r with orthonormal q and upper triangular r: Cholesky QR, twice, on w with unit
    columns (two small Cholesky factorisations and GEMMs, much faster than Householder QR on a
    tall block), or Householder QR where w is too ill-conditioned for it."""
    xp = xp_of(w)
    norms = xp.linalg.norm(w, axis=0)
    norms = xp.where(norms > 0, norms, 1)
    q, r = w / norms, xp.diag(norms)  # unit columns: cond(w) without their scales
    for _ in range(2):
        g = q.T @ q
        try:
            with _linalg_raises(xp):
                c = xp.linalg.cholesky((g + g.T) / 2)  # lower: g = c c^T, so r = c^T
        except np.linalg.LinAlgError:
            return xp.linalg.qr(w)
        d = xp.abs(xp.diagonal(c))
        if not bool(xp.all(xp.isfinite(c))) or float(xp.min(d)) <= 1e-6 * float(xp.max(d)):
            return xp.linalg.qr(w)  # cond(w) >~ 1e6 loses orthogonality
        q = q @ xp.linalg.inv(c.T)
        r = c.T @ r
    return q, r


def _krylov_sizes(k: int, n_vars: int, block: int | None, max_basis: int | None):
    """(block size, Ritz vectors kept at a restart, most basis columns), or (None,) * 3 when
    the basis would not fit beside a new block in n_vars dimensions.

    Block k/2: fewer passes over X than single vectors, fewer products (and a smaller basis)
    than a block of k. Basis up to keep + 9 blocks (300 columns for k = 50; at most
    BASIS_BYTES), restarted keeping the top k + b Ritz vectors."""
    b = int(block) if block else max(8, (k + 1) // 2)
    keep = k + max(b, 8)
    m_max = int(max_basis) if max_basis else keep + 9 * b
    m_max = min(m_max, max(keep + 2 * b, BASIS_BYTES // (8 * n_vars)), n_vars - b)
    if b < 1 or m_max < keep + b:
        return None, None, None
    return b, keep, m_max


def _ritz_converged(theta, res, k: int, tol: float) -> bool:
    """Whether each of the top-k Ritz pairs (values `theta`, descending; residual norms `res` of
    the top k + 1) has residual <= tol * max(gap, GAP * theta_i).

    An eigenvalue lies within res_j of each Ritz value theta_j, so gap = min over the neighbours
    j of |theta_i - theta_j| - res_j estimates the distance from theta_i to the rest of the
    spectrum. Then (Davis-Kahan) sin(angle to the eigenvector) <= res / gap <= tol for every
    component whose relative eigengap is at least GAP, and each Ritz value is within
    res^2 / gap <= tol^2 * gap of an eigenvalue where separated, within res <= tol * GAP *
    theta_i where not."""
    xp = xp_of(theta)
    th = theta[: k + 1]
    d = xp.abs(xp.diff(th))
    below = d[:k] - res[1 : k + 1]  # distance to the next eigenvalue, from below
    above = xp.concatenate([xp.full(1, xp.inf), d[: k - 1] - res[: k - 1]])
    gap = xp.maximum(xp.minimum(above, below), 0)
    floor = 64 * np.finfo(np.float64).eps * abs(float(th[0]))
    bound = tol * xp.maximum(gap, GAP * xp.abs(th[:k])) + floor
    return bool(xp.all(res[:k] <= bound))
