"""kNN lists from other search backends: pynndescent (CPU, what scanpy uses for large data),
cuML or cuVS brute force (GPU), made into the same lists the exact brute path gives.

Each backend proposes k + 1 candidate neighbours per row (k counts the row itself, as
``n_neighbors`` does; scanpy asks pynndescent for one more). :func:`refine` then recomputes the
distances to the candidates directly in float64, puts the row itself first (whether or not the
backend found it, and ahead of exact duplicates), orders the rest by (distance, index) and keeps
k. A row left with fewer than k distinct candidates (a failed approximate search) is searched
exactly. The result is (indices int64, distances float64), shaped like
:func:`gpu_sc._ops.neighbors.knn.knn`, so one graph code serves every backend.
"""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np

from ..._backend import is_gpu, to_host, xp_of
from ..._settings import BLOCK_BYTES
from .candidates import MARGIN, mark_self, prepare, rank

QUERY_ROWS = 2**16  # GPU backends: queries per call
_RAPIDS = "e.g. pip install {0}-cu12, or {0}-cu13 for CUDA 13; see docs.rapids.ai/install"
_INSTALL = {  # backend: (module, entry point, how to install)
    "pynndescent": ("pynndescent", "NNDescent", "pip install pynndescent"),
    "cuml": ("cuml.neighbors", "NearestNeighbors", _RAPIDS.format("cuml")),
    "cuvs": ("cuvs.neighbors.brute_force", "search", _RAPIDS.format("cuvs")),
}


def backend(name: str):
    """The search entry point of backend `name` ('pynndescent', 'cuml', 'cuvs'), or an
    ImportError that says what to install."""
    module, attr, how = _INSTALL[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as err:  # ImportError, or a broken CUDA install failing at import
        msg = (f"algorithm={name!r} needs {module}.{attr}, which could not be imported ({err}). "
               f"Install it ({how}) or use algorithm='brute' (exact, CPU or GPU).")  # fmt: skip
        raise ImportError(msg) from None


def available(name: str) -> bool:
    try:
        backend(name)
    except ImportError:
        return False
    return True


def nndescent_params(n_obs: int) -> dict:
    """scanpy's choice for its default pynndescent search (UMAP's nearest_neighbors defaults):
    more trees and iterations for more cells."""
    return {"n_trees": min(64, 5 + round(n_obs**0.5 / 20.0)), "n_iters": max(5, round(math.log2(n_obs)))}


def pynndescent_knn(x, k: int, *, metric: str = "euclidean", random_state=0, scanpy_default: bool = True,
                    block_bytes: int = BLOCK_BYTES):  # fmt: skip
    """kNN lists of dense `x` from pynndescent's NN-descent, then refined; k + 1 neighbours
    asked for, as scanpy does. `scanpy_default`: the settings of scanpy's default search
    (its n_trees / n_iters, one thread as its ``settings.n_jobs = 1``: the graph depends on the
    thread count); else those of scanpy's ``transformer='pynndescent'`` (pynndescent's own
    defaults, numba's threads). GPU input is searched on the host; the lists come back to the
    GPU."""
    nndescent = backend("pynndescent")
    host = np.ascontiguousarray(to_host(x))
    n = host.shape[0]
    params = {"n_jobs": 1, **nndescent_params(n)} if scanpy_default else {"n_jobs": None}
    with warnings.catch_warnings():
        # rows it could not fill are padded with -1; refine() searches those rows exactly
        warnings.filterwarnings("ignore", message="Failed to correctly find n_neighbors")
        index = nndescent(host, n_neighbors=min(n, k + 1), metric=metric, random_state=random_state,
                          low_memory=True, compressed=False, verbose=False, **params)  # fmt: skip
    cand = index.neighbor_graph[0]
    if is_gpu(x):
        cand = xp_of(x).asarray(cand)
    return refine(x, cand, k, metric=metric, block_bytes=block_bytes)


def transformer_knn(x, transformer, k: int):
    """kNN lists from a scikit-learn-style kNN transformer (scanpy's ``transformer=`` instance):
    the sparse distance graph of ``transformer.fit_transform(x)``, each row's entries ordered
    by (distance, index) behind the row itself, the first k kept. The distances are the
    transformer's (its own metric), not recomputed. GPU data go to the host unless the
    transformer is cuML's; the lists come back to the device of `x`."""
    on_host = is_gpu(x) and not type(transformer).__module__.startswith("cuml")
    graph = transformer.fit_transform(to_host(x) if on_host else x)
    if not hasattr(graph, "tocoo") or graph.shape != (x.shape[0], x.shape[0]):
        msg = (f"the transformer's fit_transform must give a sparse {x.shape[0]} x {x.shape[0]} distance "
               f"graph, got {type(graph).__name__} of shape {getattr(graph, 'shape', None)}.")  # fmt: skip
        raise ValueError(msg)
    coo = graph.tocoo()
    rows, cols, dist = (to_host(a) for a in (coo.row, coo.col, coo.data))
    rows, cols, dist = rows.astype(np.int64), cols.astype(np.int64), dist.astype(np.float64)
    other = rows != cols  # the row itself goes first, whether the transformer listed it or not
    rows, cols, dist = rows[other], cols[other], dist[other]
    order = np.lexsort((cols, dist, rows))
    rows, cols, dist = rows[order], cols[order], dist[order]
    n = x.shape[0]
    counts = np.bincount(rows, minlength=n)
    if counts.min() < k - 1:
        msg = (f"the transformer gave {int(counts.min())} neighbours besides the cell itself for "
               f"{int((counts < k - 1).sum())} of {n} cells; n_neighbors={k} needs {k - 1}.")  # fmt: skip
        raise ValueError(msg)
    position = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]  # within its row
    keep = position < k - 1
    ind = np.empty((n, k), np.int64)
    ind[:, 0] = np.arange(n)
    ind[:, 1:] = cols[keep].reshape(n, k - 1)
    out = np.zeros((n, k), np.float64)
    out[:, 1:] = dist[keep].reshape(n, k - 1)
    if is_gpu(x):
        xp = xp_of(x)
        return xp.asarray(ind), xp.asarray(out)
    return ind, out


def _gpu_input(x, name: str):
    if not is_gpu(x):
        msg = (f"algorithm={name!r} runs on the GPU and needs the representation as a cupy array; "
               f"got a {type(x).__module__.split('.')[0]} {type(x).__name__} on the CPU. Move the data "
               f"to the GPU first, or use algorithm='brute' or 'pynndescent' on the CPU.")  # fmt: skip
        raise ValueError(msg)


def cuml_knn(x, k: int, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """kNN lists of cupy `x` from cuML's exact brute-force NearestNeighbors, then refined."""
    _gpu_input(x, "cuml")
    import cupy as cp

    nearest = backend("cuml")
    x32 = cp.ascontiguousarray(prepare(x, metric), dtype=cp.float32)  # unit rows for cosine
    model = nearest(n_neighbors=k + 1, algorithm="brute", metric="euclidean", output_type="cupy")
    model.fit(x32)
    cand = cp.empty((x.shape[0], min(x.shape[0], k + 1)), cp.int64)
    for start in range(0, x.shape[0], QUERY_ROWS):
        stop = min(x.shape[0], start + QUERY_ROWS)
        _, ind = model.kneighbors(x32[start:stop], n_neighbors=cand.shape[1], return_distance=True)
        cand[start:stop] = cp.asarray(ind)
    return refine(x, cand, k, metric=metric, block_bytes=block_bytes)


def cuvs_knn(x, k: int, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """kNN lists of cupy `x` from cuVS's exact brute-force search, then refined."""
    _gpu_input(x, "cuvs")
    import cupy as cp

    backend("cuvs")
    brute_force = importlib.import_module("cuvs.neighbors.brute_force")
    # squared euclidean on unit rows ranks as cosine does, so one metric serves both
    x32 = cp.ascontiguousarray(prepare(x, metric), dtype=cp.float32)
    index = brute_force.build(x32, metric="sqeuclidean")
    cand = cp.empty((x.shape[0], min(x.shape[0], k + 1)), cp.int64)
    for start in range(0, x.shape[0], QUERY_ROWS):
        stop = min(x.shape[0], start + QUERY_ROWS)
        _, ind = brute_force.search(index, x32[start:stop], cand.shape[1])
        cand[start:stop] = cp.asarray(ind)
    return refine(x, cand, k, metric=metric, block_bytes=block_bytes)


def _exact_rows(x64, rows, k: int, metric: str):
    """Exact kNN lists of the few `rows` against all rows."""
    xp = xp_of(x64)
    n = x64.shape[0]
    m = min(n, k + MARGIN)
    q = x64[rows]
    d2 = (q * q).sum(axis=1)[:, None] + (x64 * x64).sum(axis=1)[None, :] - 2.0 * (q @ x64.T)
    mark_self(d2, rows)
    cand = xp.argpartition(d2, m - 1, axis=1)[:, :m] if m < n else xp.tile(xp.arange(n), (rows.size, 1))
    ind, dist, _ = rank(x64, rows, cand, k, metric)
    return ind, dist


def refine(x, cand, k: int, *, metric: str = "euclidean", block_bytes: int = BLOCK_BYTES):
    """(indices int64 (n, k), distances float64 (n, k)) from candidate lists `cand` (n, m) of
    dense `x` (numpy or cupy, on the device of `x`; -1 marks no candidate), row itself first."""
    xp = xp_of(x)
    n = x.shape[0]
    if not 1 <= k <= n:
        msg = f"k must lie in 1..{n}, got {k}."
        raise ValueError(msg)
    x64 = prepare(x, metric)
    cand = xp.asarray(cand)
    width = cand.shape[1] + 1
    step = max(1, block_bytes // (8 * width * max(1, x.shape[1])))
    ind = xp.empty((n, k), np.int64)
    dist = xp.empty((n, k), np.float64)
    missing = []
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = xp.arange(start, stop, dtype=np.int64)
        block = cand[start:stop].astype(np.int64)
        block = xp.where(block == rows[:, None], -1, block)  # the row itself goes first, once
        block = xp.concatenate([rows[:, None], block], axis=1)
        ind[start:stop], dist[start:stop], complete = rank(x64, rows, block, k, metric)
        if not bool(complete.all()):
            missing.append(rows[~complete])
    if missing:
        missing = xp.concatenate(missing)
        step = max(1, block_bytes // (8 * n))
        for s in range(0, missing.size, step):
            rows = missing[s : s + step]
            ind[rows], dist[rows] = _exact_rows(x64, rows, k, metric)
    return ind, dist
