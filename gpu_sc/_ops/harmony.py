"""Harmony (Korsunsky et al., Nat. Methods 2019) on an embedding Z (cells x components, float64),
with NumPy on the CPU and CuPy on the GPU (the same array code; cuBLAS does the products).

Each iteration alternates
- soft k-means on the cosine-normalised embedding, with a penalty (theta) on clusters whose
  batch composition departs from the whole data's: R[i, k] is proportional to
  exp(-dist[i, k] / sigma_k) * sum over cell i's batches b of ((E + 1) / (O + 1))[k, b]^theta_b,
  updated in random blocks of cells (O observed, E expected batch counts per cluster); and
- a ridge mixture-of-experts correction: per cluster k, a regression of Z on the batch
  indicators weighted by R[:, k] (intercept unpenalised), whose batch terms are subtracted
  from every cell in proportion to R[i, k].

Arithmetic and defaults follow harmonypy 0.0.10 (the implementation scanpy's
`external.pp.harmony_integrate` wraps), with its random draws: the k-means++ start of
scikit-learn's KMeans seeded by `random_state`, then the block orders from a legacy
`RandomState(random_state)`, so the same seed gives harmonypy's result up to rounding. Where
harmonypy forms per-cluster products over every cell and every batch indicator, this code
gathers the cells of each batch level once and forms all clusters' sums with one matrix
product per level (the same sums, fewer passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._backend import to_host, xp_of
from .._settings import Progress

#: k-means objective window (iterations averaged) of harmonypy's convergence check
_WINDOW = 3


@dataclass
class Batches:
    """Cells' batch levels: one integer code per cell and batch variable, levels numbered across
    variables (variable 0's levels first)."""

    codes: list[np.ndarray]  # per variable, host int64 codes in [0, n_levels[v])
    n_levels: list[int]

    @property
    def n_total(self) -> int:
        return int(sum(self.n_levels))

    def global_codes(self) -> list[np.ndarray]:
        offsets = np.cumsum([0, *self.n_levels[:-1]])
        return [c + o for c, o in zip(self.codes, offsets, strict=True)]


@dataclass
class HarmonyResult:
    z_corr: object  # cells x components, on Z's device
    r: object  # cells x clusters soft assignments
    y: object  # components x clusters centroids (unit columns)
    objective_harmony: list[float] = field(default_factory=list)
    objective_kmeans: list[float] = field(default_factory=list)
    kmeans_rounds: list[int] = field(default_factory=list)
    converged: bool = False


def harmonize(z, batches: Batches, *, theta, lamb, sigma, n_clusters: int, tau: float, block_size: float,
              max_iter_harmony: int, max_iter_kmeans: int, epsilon_cluster: float, epsilon_harmony: float,
              random_state, init_centroids) -> HarmonyResult:
    """Run Harmony on Z (cells x components, float64 NumPy or CuPy). theta, lamb: one value per
    batch level (host arrays); sigma: one per cluster. `init_centroids(z_cos_host, k, seed)`
    returns k x components starting centroids."""
    xp = xp_of(z)
    n = z.shape[0]
    rng = np.random.RandomState(random_state)
    levels = _Levels(batches, xp)
    n_b = np.array([int(len(i)) for i in levels.host_index], dtype=np.float64)
    pr_b = xp.asarray(n_b / n)
    theta = np.asarray(theta, dtype=np.float64)
    if tau > 0:
        theta = theta * (1 - np.exp(-((n_b / (n_clusters * tau)) ** 2)))
    theta, sigma = xp.asarray(theta), xp.asarray(np.asarray(sigma, dtype=np.float64))
    ridge = xp.asarray(np.diag(np.concatenate([[0.0], np.asarray(lamb, dtype=np.float64)])))

    # harmonypy divides each cell by its largest component before the unit length (a
    # negative largest component turns the cell round); kept for the same clusters
    z_cos = _unit_rows(z / z.max(axis=1, keepdims=True))
    centroids = xp.asarray(init_centroids(to_host(z_cos), n_clusters, random_state))
    y = _unit_columns(centroids.T)
    dist = _distances(z_cos, y)
    r = _softmax_rows(-dist / sigma)
    state = _State(r=r, e=xp.outer(r.sum(axis=0), pr_b), o=levels.sums(r))
    out = HarmonyResult(z_corr=z, r=r, y=y)
    out.objective_kmeans.append(_objective(state.r, dist, state, levels, theta, sigma))
    out.objective_harmony.append(out.objective_kmeans[-1])

    progress = Progress("harmony_integrate", max_iter_harmony, unit="iterations")
    z_corr = z
    for it in range(1, max_iter_harmony + 1):
        y, dist = _cluster(z_cos, y, state, levels, out, pr_b=pr_b, theta=theta, sigma=sigma,
                           block_size=block_size, max_iter=max_iter_kmeans, epsilon=epsilon_cluster, rng=rng)
        z_corr = _correct(z, state.r, levels, ridge)
        z_cos = _unit_rows(z_corr)
        progress(it)
        old, new = out.objective_harmony[-2], out.objective_harmony[-1]
        if old == new or (old != 0 and (old - new) / abs(old) < epsilon_harmony):
            out.converged = True
            break
    out.z_corr, out.r, out.y = z_corr, state.r, y
    return out


@dataclass
class _State:
    r: object  # cells x clusters
    e: object  # clusters x levels, expected
    o: object  # clusters x levels, observed


class _Levels:
    """Each batch level's cells (index arrays on Z's device) and the cells x levels indicator."""

    def __init__(self, batches: Batches, xp):
        codes = batches.global_codes()
        n = len(codes[0])
        self.n_total = batches.n_total
        indicator = np.zeros((n, self.n_total))
        rows = np.arange(n)
        self.host_index = []
        for c in codes:
            indicator[rows, c] = 1.0
        for level in range(self.n_total):
            var = int(np.searchsorted(np.cumsum(batches.n_levels), level, side="right"))
            self.host_index.append(np.flatnonzero(codes[var] == level))
        self.indicator = xp.asarray(indicator)  # cells x levels: few levels, so dense
        self.index = [xp.asarray(i) for i in self.host_index]

    def sums(self, r):
        """Per-cluster sums of r over each level's cells: clusters x levels."""
        return r.T @ self.indicator


def _unit_rows(a):
    xp = xp_of(a)
    return a / xp.linalg.norm(a, axis=1, keepdims=True)


def _unit_columns(a):
    xp = xp_of(a)
    return a / xp.linalg.norm(a, axis=0, keepdims=True)


def _distances(z_cos, y):
    """2 (1 - cosine similarity) of every cell to every centroid (both of unit length)."""
    dist = z_cos @ y
    dist *= -2
    dist += 2
    return dist


def _softmax_rows(a):
    xp = xp_of(a)
    a = xp.exp(a - a.max(axis=1, keepdims=True))
    return a / a.sum(axis=1, keepdims=True)


def _cluster(z_cos, y, state: _State, levels: _Levels, out: HarmonyResult, *, pr_b, theta, sigma,
             block_size, max_iter, epsilon, rng):
    """Up to `max_iter` rounds of centroid and assignment updates; stops when the mean k-means
    objective over a window of rounds changes by less than `epsilon` (relative)."""
    dist = None
    i = 0
    for i in range(max_iter):
        y = _unit_columns(z_cos.T @ state.r)
        dist = _distances(z_cos, y)
        _update_r(dist, state, levels, pr_b=pr_b, theta=theta, sigma=sigma, block_size=block_size, rng=rng)
        out.objective_kmeans.append(_objective(state.r, dist, state, levels, theta, sigma))
        if i > _WINDOW:
            obj = out.objective_kmeans
            old = sum(obj[-2 - j] for j in range(_WINDOW))
            new = sum(obj[-1 - j] for j in range(_WINDOW))
            if old == new or (old != 0 and abs(old - new) / abs(old) < epsilon):
                break
    out.kmeans_rounds.append(i)
    out.objective_harmony.append(out.objective_kmeans[-1])
    return y, dist


def _update_r(dist, state: _State, levels: _Levels, *, pr_b, theta, sigma, block_size, rng):
    """New assignments in random blocks of cells; each block is taken out of the batch counts,
    reassigned against the others' counts, and put back."""
    xp = xp_of(dist)
    scale = dist / -sigma
    scale -= scale.max(axis=1, keepdims=True)
    scale = xp.exp(scale, out=scale)
    order = rng.permutation(dist.shape[0])
    r, e, o = state.r, state.e, state.o
    for block in np.array_split(order, math.ceil(1 / block_size)):
        b = xp.asarray(block)
        ind = levels.indicator[b]
        rb = r[b]
        e -= xp.outer(rb.sum(axis=0), pr_b)
        o -= rb.T @ ind
        rb = scale[b] * (ind @ (((e + 1) / (o + 1)) ** theta).T)
        rb /= rb.sum(axis=1, keepdims=True)
        r[b] = rb
        e += xp.outer(rb.sum(axis=0), pr_b)
        o += rb.T @ ind


def _objective(r, dist, state: _State, levels: _Levels, theta, sigma) -> float:
    """k-means distance + sigma-weighted entropy + theta-weighted batch cross-entropy."""
    xp = xp_of(r)
    flat = r.ravel()
    # r log r with 0 log 0 = 0: assignments below the smallest normal float64 count as 0
    entropy = (r * xp.log(xp.maximum(r, np.finfo(np.float64).tiny))) @ sigma
    cross = sigma[:, None] * theta[None, :] * xp.log((state.o + 1) / (state.e + 1)) * levels.sums(r)
    return float(flat @ dist.ravel() + entropy.sum() + cross.sum())


def _correct(z, r, levels: _Levels, ridge):
    """Z less every cluster's ridge estimate of its batch terms, weighted by R[:, k].

    For cluster k the design is [1, batch indicators] with weights R[:, k]; its normal
    matrix and right-hand side are sums over each level's cells, formed for all clusters at
    once (clusters x levels products), then solved as a batch of small systems."""
    xp = xp_of(z)
    k, d, m = r.shape[1], z.shape[1], levels.n_total
    gram = xp.zeros((k, m + 1, m + 1))
    rhs = xp.zeros((k, m + 1, d))
    gram[:, 0, 0] = r.sum(axis=0)
    rhs[:, 0, :] = r.T @ z
    for a, idx in enumerate(levels.index):
        ra = r[idx]
        gram[:, a + 1, 1:] = ra.T @ levels.indicator[idx]
        gram[:, 0, a + 1] = gram[:, a + 1, 0] = ra.sum(axis=0)
        rhs[:, a + 1, :] = ra.T @ z[idx]
    w = xp.linalg.solve(gram + ridge, rhs)  # clusters x (1 + levels) x components
    z_corr = z.copy()
    for a, idx in enumerate(levels.index):  # the intercept (row 0) stays
        z_corr[idx] -= r[idx] @ w[:, a + 1, :]
    return z_corr
