"""Doublet scores: the k nearest neighbours of every observed cell and simulated doublet in
their joint embedding, and scrublet's Bayesian estimate of each one's doublet likelihood from
the share of simulated doublets among them."""

from __future__ import annotations

import numpy as np

from ..._backend import is_gpu, to_host, xp_of
from ..._settings import BLOCK_BYTES
from ..._ops.neighbors import knn_approx
from ..._ops.neighbors.candidates import MARGIN, mark_self, prepare, rank
from ..._ops.neighbors.knn import MAX_GPU_K
from ..._ops.neighbors.knn import knn as exact_knn

METRICS = ("euclidean", "cosine")


def search(emb_obs, emb_sim, k: int, *, metric: str, use_approx_neighbors, rs, twins: bool = False):
    """(neighbour indices (n_obs + n_sim, k') int64 on the host, the algorithm used).

    The rows are the observed cells, then the doublets. ``use_approx_neighbors=None`` or
    ``False``: the exact search (CPU or GPU; above k = 256 on the GPU, `blocked_knn`).
    scanpy's default takes pynndescent from 8,192 rows (euclidean; 4,096 otherwise), but at
    scrublet's k (about 1.5 sqrt(n_cells)) NN-descent costs more than brute force (10,000
    cells: 155 s against 14 s for the whole call), and scanpy 1.11.5 fails there with
    pynndescent 0.7 ("'csr_array' object has no attribute 'getnnz'"). ``True``: pynndescent
    with its own defaults (on the host, GPU data too), as scanpy's. Where k exceeds the rows,
    1 + rows // 2 neighbours, as scanpy.

    Each list holds the row itself and its k - 1 nearest others, except that it leaves the row
    out (the k - 1 nearest others only) where scanpy's exact search does: when it would not
    prepend the rows. It prepends them only if no row's list starts with the row itself after
    it removed each list's first entry, and a row with an exact duplicate (most often the
    doublets of pairs (i, j) and (j, i), identical counts; about two such pairs are drawn
    whatever the size) is listed behind its twin of lower index. So: left out where the
    embedding has exactly repeated rows, or `twins` (two doublets of a pair and its reverse are
    equal: `reversed_twins`; whatever a device's round-off does to their embedding), and always
    with ``use_approx_neighbors=True``, which drops the first column. Measured over 52 scanpy
    runs (4 data sets, 4 to 24 seeds each): the rule gives scanpy's lists in 51. A later sweep
    on pbmc68k (32 runs, 31-700 cells, 8 seeds each) differed in 9: the doublet of a pair
    (i, i) lies within round-off of cell i (distance 0 or about 5e-8), and whether scanpy lists
    the doublet or the cell first follows its float32 distances; we keep the doublet. That moves
    one neighbour of cell i and of the doublet, so cell scores too (by up to 0.0024 at 700 cells,
    0.013 at 31) and, through the doublets' scores, the threshold (at 100 cells 8 of 100 calls
    once). Where scanpy lists the cell behind its doublet twin (or the doublet behind the cell),
    that row's list starts with the row itself once each list's first entry is dropped, so scanpy
    prepends no row (see above): every doublet's score moves by one neighbour, and the threshold:
    2 of 42 runs of a sweep on pbmc68k and pbmc4k (31-700 cells, 6 seeds each; 6 and 7 of
    100-240 calls). Which of the two comes first follows the round-off of the embedding, which
    is not scanpy's to the bit (ours and scanpy's differ by about 1e-6), so it cannot be
    followed: asking scikit-learn for those rows' lists on our embedding matched scanpy in one
    of those runs and broke another. Larger data sets draw about as many such pairs among many
    more cells (README: the same calls on 99.5-100 % of cells)."""
    xp = xp_of(emb_obs)
    rep = xp.ascontiguousarray(xp.concatenate([emb_obs, emb_sim]))
    n = rep.shape[0]
    if k > n:
        k = 1 + int(0.5 * n)
    on_gpu = is_gpu(rep)
    algorithm = "pynndescent" if use_approx_neighbors else "brute"
    if algorithm == "pynndescent":
        knn_approx.backend("pynndescent")  # ImportError saying what to install
        ind, _ = knn_approx.pynndescent_knn(rep, k, metric=metric, random_state=rs,
                                            scanpy_default=False)  # fmt: skip
    elif on_gpu and k > MAX_GPU_K:  # beyond the GPU selection kernel (about 70,000 cells and more)
        ind = blocked_knn(rep, k, metric=metric)
    else:
        ind, _ = exact_knn(rep, k, metric=metric)
    ind = to_host(ind)
    if use_approx_neighbors or twins or _has_repeated_rows(to_host(rep)):
        ind = ind[:, 1:]
    return ind, algorithm


def reversed_twins(parents, sim) -> bool:
    """Whether the doublets of some pair (i, j), i != j, and of its reverse (j, i) are equal rows
    of `sim` (the doublet matrix, CSR or dense, host or device; `parents` n x 2). Without UMI
    subsampling they are (x_i + x_j); thinned (`synthetic_doublet_umi_subsampling` < 1) they
    are two different draws, and scanpy's search then prepends the rows as for distinct data."""
    p = np.asarray(parents, dtype=np.int64).reshape(-1, 2)
    distinct = np.flatnonzero(p[:, 0] != p[:, 1])
    if distinct.size == 0:
        return False
    base = int(p.max()) + 1
    key, rev = p[distinct, 0] * base + p[distinct, 1], p[distinct, 1] * base + p[distinct, 0]
    first = dict(zip(key.tolist(), distinct.tolist(), strict=True))  # a pair drawn twice: either row
    for a, r in zip(distinct.tolist(), rev.tolist(), strict=True):
        b = first.get(r)
        if b is not None and _rows_equal(sim, a, b):
            return True
    return False


def _rows_equal(x, a: int, b: int) -> bool:
    ra, rb = x[a], x[b]
    if hasattr(ra, "nnz"):  # sparse rows: the same nonzero places and values
        ra, rb = ra.tocsr(), rb.tocsr()
        for r in (ra, rb):  # copies of the rows: duplicates summed, stored zeros dropped
            r.sum_duplicates()
            r.eliminate_zeros()
        return ra.nnz == rb.nnz and bool((to_host(ra.indices) == to_host(rb.indices)).all()) \
            and bool((to_host(ra.data) == to_host(rb.data)).all())  # fmt: skip
    return bool((to_host(ra) == to_host(rb)).all())


def _has_repeated_rows(x: np.ndarray) -> bool:
    """Whether two rows of `x` are bitwise equal."""
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    return np.unique(rows).size < rows.size


def blocked_knn(x, k: int, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """Neighbour indices (n, k) int64 of dense cupy `x`, the row itself first, then by (float64
    distance, index): the exact search's lists, for k above its GPU kernel's limit. Row blocks
    of float32 distances to every row (cuBLAS), the k + MARGIN smallest of each row picked by
    argpartition (the row itself forced in), then ranked in float64 by `rank`. (Also runs on
    numpy, about 3 times slower there than the exact search's tiles.)"""
    xp = xp_of(x)
    n = x.shape[0]
    x64 = prepare(x, metric)
    centred = x64 - x64.mean(axis=0) if metric == "euclidean" else x64  # same distances, less cancellation
    x32 = xp.ascontiguousarray(centred, dtype=np.float32)
    sq = (x32 * x32).sum(axis=1)
    m = min(n, k + MARGIN)
    step = max(1, block_bytes // (8 * n))
    ind = xp.empty((n, k), np.int64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = xp.arange(start, stop)
        dots = x32[start:stop] @ x32.T
        d = (1.0 - dots) if metric == "cosine" else (sq[start:stop, None] + sq[None, :] - 2.0 * dots)
        mark_self(d, rows)
        cand = xp.argpartition(d, m - 1, axis=1)[:, :m]
        ind[start:stop] = rank(x64, rows, xp.ascontiguousarray(cand), k, metric)[0]
    return ind


def likelihoods(n_sim_neighbours, *, k: int, n_obs: int, n_sim: int, rho: float, se_rho: float):
    """(doublet score, its standard error) per row from its count of doublet neighbours:
    q = (d + 1) / (k + 2), L = q rho / r / (1 - rho - q (1 - rho - rho / r)), r = n_sim / n_obs
    (scrublet's Bayesian estimate), k the nominal neighbour count."""
    r = n_sim / float(n_obs)
    q = (np.asarray(n_sim_neighbours, dtype=np.float64) + 1) / (k + 2)
    denom = 1 - rho - q * (1 - rho - rho / r)
    score = q * rho / r / denom
    se_q = np.sqrt(q * (1 - q) / (k + 3))
    se = q * rho / r / denom**2 * np.sqrt((se_q / q * (1 - rho)) ** 2 + (se_rho / rho * (1 - q)) ** 2)
    return score, se


def neighbour_parents(ind: np.ndarray, parents: np.ndarray, n_obs: int) -> list[np.ndarray]:
    """For each observed cell, the sorted distinct parents of the doublets among its neighbours."""
    out = []
    for row in ind[:n_obs]:
        doublets = row[row >= n_obs] - n_obs
        out.append(np.unique(parents[doublets].ravel()) if doublets.size else np.array([], dtype=np.intp))
    return out
