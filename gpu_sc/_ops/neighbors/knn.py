"""Exact k-nearest neighbours by brute force, memory bounded (row blocks / tiles), CPU or GPU.

Candidates come from ||x||^2 + ||y||^2 - 2 x.y tiles in float32 (BLAS plus
`select.select_tile` on host threads on the CPU, cuBLAS plus its twin kernel on the GPU), then
are re-ranked with distances recomputed directly in float64. Each row's list starts with the row
itself, then ascending distance, ties broken by the smaller index. The candidates are the
k + MARGIN smallest (float32 d^2, index) pairs, whatever the tiling or the number of threads;
where more rows than that tie, e.g. many identical cells, CPU and GPU (BLAS and cuBLAS round the
dot products differently) can keep different ones, with the same distances.
Cosine: the rows are made unit rows and searched by |u - v|^2 = 2 - 2 u.v; a zero row (which
stays zero, at cosine distance 1 from all) gets 1 added to its |y|^2, so that it is searched at
d^2 = 2 too and does not crowd out closer rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from ..._backend import is_gpu, xp_of
from ..._settings import BLOCK_BYTES, Progress
from .candidates import MARGIN, prepare, rank
from .select import select_tile, select_tile_columns

MAX_GPU_K = 256


def knn(x, k: int, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """(indices int64 (n, k), distances float64 (n, k)) of the k nearest rows of dense `x`
    (numpy or cupy), row itself included as the first neighbour."""
    n = x.shape[0]
    if not 1 <= k <= n:
        msg = f"k must lie in 1..{n}, got {k}."
        raise ValueError(msg)
    if is_gpu(x):
        return _knn_gpu(x, k, metric, block_bytes)
    return _knn_host(x, k, metric, block_bytes)


#: query rows per host task and reference rows per tile: a 256 x 2,048 float32 tile (2 MiB)
#: is merged while it is still in the core's cache
HOST_QUERY_ROWS = 256
HOST_TILE_COLS = 2048
#: row ranges per host thread for the symmetric search (see _knn_host): more make the share of
#: dot products taken twice (the ranges' own squares) smaller, 1 / ranges
HOST_RANGES_PER_THREAD = 8


def _pair_rounds(n_parts: int) -> list[list[tuple[int, int]]]:
    """Every pair of 0..n_parts-1 (even, or 1: no pairs) once, in n_parts - 1 rounds of
    n_parts / 2 pairs that share no part (the circle method: 0 stays, the others turn one place
    a round)."""
    others = list(range(1, n_parts))
    rounds = []
    for _ in range(n_parts - 1):
        ring = [0, *others]
        rounds.append([(ring[i], ring[n_parts - 1 - i]) for i in range(n_parts // 2)])
        others = others[-1:] + others[:-1]
    return rounds


def _knn_host(x, k, metric, block_bytes):
    """Host threads, each with single-threaded BLAS, over float32 tiles of dot products (centred
    rows: the same distances, less cancellation), each merged into the candidate lists by
    `select_tile` as soon as it is written, then the candidates ranked in float64 (`rank`).
    The distance is symmetric, so the rows are cut into ranges and each pair of ranges is
    searched once: its tiles are merged into the query rows' lists and, transposed, into the
    other range's (`select_tile_columns`); a range against itself is searched whole. The pairs
    go in rounds whose pairs share no range, so no two threads write one list. That takes 53 %
    of the dot products at 16 ranges (2 threads; 1/2 + 1/(2 ranges) in general): the search at
    100k cells x 50 dims on 2 cores went from 15.9 to 6.9 s, of which the dot products had been
    7.9 s. The float64 full-row blocks with argpartition before that read every distance from
    memory twice: 48-118 s."""
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    x64 = prepare(x, metric)
    centred = x64 - x64.mean(axis=0)
    x32 = np.ascontiguousarray(centred, dtype=np.float32)
    sq = np.einsum("ij,ij->i", centred, centred).astype(np.float32)
    del centred
    _far_zero_rows(sq, x64, metric)
    m = min(n, k + MARGIN)
    step = max(1, min(HOST_QUERY_ROWS, block_bytes // (4 * HOST_TILE_COLS)))  # a tile within block_bytes
    threads = numba.get_num_threads()
    n_ranges = min(HOST_RANGES_PER_THREAD * threads, n // step) // 2 * 2  # even, each >= step rows
    n_ranges = max(n_ranges, 1)
    edges = np.linspace(0, n, n_ranges + 1).astype(np.int64)
    best_d = np.full((n, m), np.inf, np.float32)
    best_i = np.full((n, m), -1, np.int64)

    def search(task):
        """Range a's rows against range b's: a == b whole, else both ways from one set of tiles."""
        a, b = task
        r_lo, r_hi, c_lo, c_hi = edges[a], edges[a + 1], edges[b], edges[b + 1]
        tile = np.empty(step * HOST_TILE_COLS, np.float32)
        for start in range(r_lo, r_hi, step):
            stop = min(r_hi, start + step)
            for c0 in range(c_lo, c_hi, HOST_TILE_COLS):
                c1 = min(c_hi, c0 + HOST_TILE_COLS)
                dots = tile[: (stop - start) * (c1 - c0)].reshape(stop - start, c1 - c0)
                np.dot(x32[start:stop], x32[c0:c1].T, out=dots)
                select_tile(dots, sq[start:stop], sq[c0:c1], start, c0, best_d[start:stop], best_i[start:stop])
                if a != b:
                    select_tile_columns(dots, sq[start:stop], sq[c0:c1], start, best_d[c0:c1], best_i[c0:c1])
        return int((r_hi - r_lo) * (c_hi - c_lo))

    def ranked(start):
        stop = min(n, start + step)
        own = np.arange(start, stop)
        cand = np.where(best_i[start:stop] < 0, own[:, None], best_i[start:stop])  # NaN rows: only themselves
        ind[start:stop], dist[start:stop], _ = rank(x64, own, cand, k, metric)

    rounds = [*_pair_rounds(n_ranges), [(a, a) for a in range(n_ranges)]]  # one range: its square alone
    ind = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float64)
    sizes = np.diff(edges).astype(object)  # Python ints: n^2 overflows nothing
    total = int(sum(sizes) ** 2 + sum(s * s for s in sizes)) // 2  # dot products taken
    report = Progress("neighbors: exact kNN (CPU)", n)  # cells' worth of the dot products, then ranked
    done = 0
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        for tasks in rounds:  # a round's tasks share no rows; the next round waits for them
            for pairs in pool.map(search, tasks):
                done += pairs
                report(min(n - 1, n * done // total))
        list(pool.map(ranked, range(0, n, step)))
    report(n)
    return ind, dist


def _far_zero_rows(sq, x, metric: str) -> None:
    """Cosine: a zero row's |y|^2 + 1 (module docstring), in place on `sq`."""
    if metric == "cosine":
        xp = xp_of(x)
        sq[xp.flatnonzero((x == 0).all(axis=1))] += 1


def _knn_gpu(x, k, metric, block_bytes):
    import cupy as cp

    from ..._kernels.knn_select import knn_select

    n = x.shape[0]
    m = min(n, k + MARGIN, MAX_GPU_K)
    if k > MAX_GPU_K:
        msg = f"the GPU kNN supports n_neighbors <= {MAX_GPU_K}, got {k}."
        raise ValueError(msg)
    x64 = prepare(x, metric)
    x32 = cp.ascontiguousarray(x64.astype(cp.float32))
    sq = (x32 * x32).sum(axis=1)
    _far_zero_rows(sq, x64, metric)
    cols = min(n, max(1024, block_bytes // (4 * 4096)))
    rows = max(1, block_bytes // (4 * cols))
    rows = min(rows, max(1, block_bytes // (8 * max(1, m * x.shape[1]))))
    ind = cp.empty((n, k), cp.int64)
    dist = cp.empty((n, k), cp.float64)
    report = Progress("neighbors: exact kNN (GPU)", n, sync=cp.cuda.Device().synchronize)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        q = x32[start:stop]
        best_d = cp.full((stop - start, m), cp.inf, cp.float32)
        best_i = cp.full((stop - start, m), -1, cp.int64)
        for c0 in range(0, n, cols):
            c1 = min(n, c0 + cols)
            # the kernel forms the distances from the dot products as it reads them: the tile
            # is written once (cuBLAS) and read once
            knn_select(q @ x32[c0:c1].T, sq[start:stop], sq[c0:c1], start, c0, best_d, best_i)
        # NaN-free input always fills every slot (m <= n); guard anyway
        best_i = cp.where(best_i < 0, cp.arange(start, stop)[:, None], best_i)
        ind[start:stop], dist[start:stop], _ = rank(x64, cp.arange(start, stop), best_i, k, metric)
        report(stop)
    return ind, dist


_NEAR = 1e-4  # pairs with d^2 below this fraction of |x|^2 + |y|^2 are recomputed directly


def pairwise(x, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """Dense (n, n) float64 distances between all rows of dense `x` (numpy or cupy), exact zeros
    on the diagonal. Euclidean: centred rows, ||x||^2 + ||y||^2 - 2 x.y in row blocks, and the
    close pairs (where that expansion cancels) recomputed as ||x - y|| directly, so every entry
    is accurate to float64 round-off. Cosine: 1 - u.v of unit rows (zero rows stay zero, at
    distance 1 from all others), clipped to [0, 2]."""
    xp = xp_of(x)
    n, dim = x.shape
    x64 = prepare(x, metric)
    if metric == "euclidean":
        x64 = x64 - x64.mean(axis=0)  # same distances, smaller norms: less cancellation
    sq = (x64 * x64).sum(axis=1)
    out = xp.empty((n, n), np.float64)
    step = max(1, block_bytes // (8 * max(n, 1)))
    pair_step = max(1, block_bytes // (8 * max(dim, 1)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        g = x64[start:stop] @ x64.T
        if metric == "cosine":
            d = xp.clip(1.0 - g, 0.0, 2.0)
        else:
            norms = sq[start:stop, None] + sq[None, :]
            d2 = norms - 2.0 * g
            r, c = xp.nonzero(d2 <= _NEAR * norms)
            for s in range(0, r.size, pair_step):
                rr, cc = r[s : s + pair_step], c[s : s + pair_step]
                diff = x64[start + rr] - x64[cc]
                d2[rr, cc] = (diff * diff).sum(axis=1)
            d = xp.sqrt(xp.maximum(d2, 0.0))
        rows = xp.arange(stop - start)
        d[rows, rows + start] = 0.0
        out[start:stop] = d
    return out
