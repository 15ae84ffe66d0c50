"""Bundled real count matrices, and deterministic resampling to any size for benchmarks.

Bundled in ``gpu_sc/_data`` (details in ``gpu_sc/_data/README.md``):

- ``pbmc68k_reduced_counts.h5ad`` (:func:`pbmc68k_reduced`): 700 PBMCs x 765 genes. It comes
  from scanpy 1.12.4's ``10x_pbmc68k_reduced.h5ad``; the integer counts were recovered as
  ``round(expm1(raw.X) * n_counts / 1e4)``. BSD-3 (scanpy); data 10x Genomics.
- ``mouse_brain_10k_subset.h5ad`` (:func:`mouse_brain_10k`): 10,000 cells x 1,000 genes, a
  subset of the 10x 1.3M mouse brain cells, from scanpy 1.11.5's test data
  ``tests/_data/10x-10k-subset.zarr``. BSD-3 (scanpy); data 10x Genomics.
- ``soupx_pbmc4k_half.h5ad`` (:func:`pbmc4k_half`): 2,170 PBMCs x 33,694 genes, the full gene
  width of a real 10x run (half the cells of 10x pbmc4k, as shipped with the SoupX R package).
  Data CC BY 4.0 (10x Genomics).

:func:`resample` turns either of them (or any raw-count AnnData) into as many cells as a
benchmark needs: real cells drawn with replacement, each count binomially thinned so that no
two drawn cells are exact copies.

:func:`pbmc_t_dc_pics` builds synthetic PIC-seq doublets (T cell + dendritic cell) from the
bundled PBMCs, with a reference of other cells: the data of the ``gpu-sc demo``'s PIC part.
"""

from __future__ import annotations

import sys
import threading
import warnings
from numbers import Integral, Real
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import check_int, check_integer_counts, check_seed

__all__ = ["mouse_brain_10k", "pbmc4k_half", "pbmc68k_reduced", "pbmc_t_dc_pics", "resample"]

_DATA = Path(__file__).parent / "_data"
_INT32_MAX = np.iinfo(np.int32).max


def _read(name: str) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's format-version chatter
        return ad.read_h5ad(_DATA / name)


def pbmc68k_reduced() -> ad.AnnData:
    """700 peripheral blood mononuclear cells x 765 genes, raw UMI counts.

    A fresh copy is read from disk at each call, so it can be changed freely.

    Returns
    -------
    AnnData
        ``X`` holds raw integer counts as a float32 CSR matrix; ``obs['bulk_labels']`` holds
        the 10 cell-type labels of the original data set. Source: scanpy 1.12.4's
        ``10x_pbmc68k_reduced.h5ad`` (BSD-3; data 10x Genomics), counts recovered as
        ``round(expm1(raw.X) * n_counts / 1e4)``.
    """
    return _read("pbmc68k_reduced_counts.h5ad")


def mouse_brain_10k() -> ad.AnnData:
    """10,000 mouse brain cells x 1,000 genes, raw UMI counts.

    A fresh copy is read from disk at each call, so it can be changed freely. It holds one
    all-zero cell and a few identical rows, which make useful edge cases.

    Returns
    -------
    AnnData
        ``X`` holds raw integer counts as a float32 CSR matrix; ``var['gene_ids']`` the Ensembl
        ids. Source: scanpy 1.11.5's test data ``tests/_data/10x-10k-subset.zarr``, a subset of
        the 10x 1.3M mouse brain cells (BSD-3; data 10x Genomics).
    """
    return _read("mouse_brain_10k_subset.h5ad")


def pbmc4k_half() -> ad.AnnData:
    """2,170 peripheral blood mononuclear cells x 33,694 genes, raw UMI counts: the full gene
    width (and the ~1,300 stored values per cell) of a real 10x Chromium run, which is what
    decides how fast a step is; the benchmarks resample their cells from it.

    A fresh copy is read from disk at each call, so it can be changed freely.

    Returns
    -------
    AnnData
        ``X`` holds raw integer counts as a float32 CSR matrix; ``obs['Annotation']`` the cell
        types (T_CD4, MNP, T_CD8, B, NK, ``?``). Source: 10x Genomics pbmc4k (CellRanger 2.1.0),
        a random half of the cells as shipped in the SoupX R package data (data CC BY 4.0).
    """
    return _read("soupx_pbmc4k_half.h5ad")


def _counts_matrix(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    """The source counts as a host CSR matrix, checked to be finite non-negative integers."""
    if layer is not None and layer not in adata.layers:
        msg = f"resample: no layer {layer!r}; layers are {list(adata.layers)}."
        raise KeyError(msg)
    x = adata.layers[layer] if layer is not None else adata.X
    if not (sp.issparse(x) or isinstance(x, np.ndarray)):
        msg = (
            f"resample: needs counts in a numpy array or scipy sparse matrix on the CPU, got "
            f"{type(x).__name__}; move it to the host first (gpu_sc.get.to_cpu for GPU arrays, "
            "compute() for a Dask array)."
        )
        raise TypeError(msg)
    x = sp.csr_matrix(x)
    check_integer_counts(x, step="resample")
    return x


def _thin(counts: np.ndarray, thin: float, rng: np.random.Generator) -> np.ndarray:
    """Binomial(counts, thin) for each entry, as float32; most UMI counts are 1, which take one uniform."""
    if thin == 1:
        return counts.astype(np.float32)
    ones = counts == 1
    kept = np.empty(counts.shape, dtype=np.float32)
    kept[ones] = rng.random(int(ones.sum())) < thin  # Binomial(1, p) is a Bernoulli(p) draw
    rest = ~ones
    kept[rest] = rng.binomial(counts[rest].astype(np.int64), thin)
    return kept


def resample(
    adata: ad.AnnData,
    n_cells: int,
    *,
    seed: int = 0,
    thin: float = 0.8,
    layer: str | None = None,
    chunk_size: int = 100_000,
    progress: bool = False,
    as_dask: bool = False,
) -> ad.AnnData:
    """Draw `n_cells` realistic cells from the real cells of `adata`, deterministically.

    Cells are bootstrapped (drawn uniformly with replacement, with a
    ``numpy.random.Generator(PCG64(seed))``), then each count of each drawn cell is binomially
    thinned: every UMI is kept with probability `thin`. Resampled cells therefore look like real
    cells of a slightly shallower sequencing run, and two draws of the same cell are not exact
    duplicates. Entries thinned to zero are dropped.

    The matrix is built `chunk_size` cells at a time into arrays preallocated for the counts
    before thinning, so memory stays near the size of the output (8 bytes per stored count) plus
    one chunk's temporaries. One million cells from :func:`mouse_brain_10k` (60 million stored
    counts, a 0.46 GB matrix) take about 4 seconds and peak below 0.9 GB.

    Parameters
    ----------
    adata
        Source cells, with raw non-negative integer counts in ``X`` (or in `layer`), as a numpy
        array or a scipy sparse matrix (on the CPU).
    n_cells
        Number of cells to make (at least 1). May be larger than ``adata.n_obs``.
    seed
        Seed of the generator. The same `seed`, `thin` and `chunk_size` give the same matrix.
    thin
        Probability of keeping each UMI, in (0, 1]; 1 keeps the drawn counts unchanged.
    layer
        Read the counts from ``adata.layers[layer]`` instead of ``adata.X``.
    chunk_size
        Cells built at a time (at least 1); bounds the temporary memory.
    progress
        Print one line per chunk to stderr (with `as_dask`, each time a block is made).
    as_dask
        Return ``X`` as a Dask array of `chunk_size`-cell CSR blocks, each made only when it is
        computed (and again at each computation: nothing is kept), so that a matrix larger than
        memory can go through a Dask pipeline. Its blocks hold exactly the rows of the in-memory
        matrix for the same `seed`, `thin` and `chunk_size`. Each block's draws follow from all
        the earlier ones, so the generator state at each block's start is found on first need
        (by replaying the earlier blocks' draws once) and kept: the first pass over the blocks
        costs about a sequential pass, later ones run in parallel. ``obs`` and ``var`` are made
        at once (the cells are drawn up front: 8 bytes per cell).

    Returns
    -------
    AnnData
        ``n_cells`` x ``adata.n_vars``, on the CPU. ``X`` is a float32 CSR matrix of counts
        whose ``indices`` and ``indptr`` are int32, or int64 only when the number of stored
        counts exceeds 2**31 - 1. ``var`` is a copy of the source's; ``obs`` holds the source's
        ``obs`` columns for the drawn cells, ``obs['source_cell']`` (the name of the drawn
        source cell) and the names ``cell_0``, ``cell_1``, ... With `as_dask`, ``X`` is a
        ``dask.array.Array`` of ``scipy.sparse.csr_matrix`` blocks (float32, int32 indices).

    Raises
    ------
    ValueError
        If `n_cells` < 1, `seed` < 0, `chunk_size` < 1, `thin` is outside (0, 1], the source has no cells,
        or the counts are not non-negative integers.
    TypeError
        If the counts are not a numpy array or scipy sparse matrix (e.g. still on the GPU), or
        `n_cells`, `chunk_size` or `seed` is not an integer.
    KeyError
        If `layer` is not a layer of `adata`.

    Examples
    --------
    >>> import gpu_sc as gsc
    >>> big = gsc.datasets.resample(gsc.datasets.mouse_brain_10k(), 100_000, seed=0)
    >>> big.shape
    (100000, 1000)
    >>> lazy = gsc.datasets.resample(gsc.datasets.mouse_brain_10k(), 1_000_000, as_dask=True)
    >>> lazy.X.numblocks
    (10, 1)
    """
    for name, value in (("n_cells", n_cells), ("chunk_size", chunk_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            msg = f"resample: {name} must be an integer, got {value!r}."
            raise TypeError(msg)
    if n_cells < 1:
        msg = f"resample: n_cells must be at least 1, got {n_cells}."
        raise ValueError(msg)
    if seed < 0:  # numpy's own message names neither the step nor the argument
        msg = f"resample: seed must be a non-negative integer, got {seed}."
        raise ValueError(msg)
    if chunk_size < 1:
        msg = f"resample: chunk_size must be at least 1, got {chunk_size}."
        raise ValueError(msg)
    if isinstance(thin, bool) or not isinstance(thin, Real) or not 0 < thin <= 1:
        msg = f"resample: thin must lie in (0, 1], got {thin!r}."
        raise ValueError(msg)
    if adata.n_obs < 1:
        msg = "resample: the source AnnData has no cells to draw from."
        raise ValueError(msg)
    x = _counts_matrix(adata, layer)
    n_cells, chunk_size, thin = int(n_cells), int(chunk_size), float(thin)

    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = rng.integers(0, x.shape[0], size=n_cells)
    if as_dask:
        out = _LazyResample(x, chosen, thin, chunk_size, rng.bit_generator.state, progress).array()
        return _resampled(adata, out, chosen)

    # Preallocate for the counts before thinning (an upper bound), fill chunk by chunk, trim.
    src_indptr = x.indptr.astype(np.int64, copy=False)
    upper = int(np.diff(src_indptr)[chosen].sum())
    data = np.empty(upper, dtype=np.float32)
    indices = np.empty(upper, dtype=np.int32)  # column numbers fit: n_vars < 2**31
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    nnz = 0
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        kept, kept_indices, kept_indptr = _resample_block(x, chosen[start:stop], thin, rng)
        n_new = int(kept_indptr[-1])
        data[nnz : nnz + n_new] = kept
        indices[nnz : nnz + n_new] = kept_indices
        indptr[start + 1 : stop + 1] = nnz + kept_indptr[1:]
        nnz += n_new
        del kept, kept_indices, kept_indptr
        if progress:
            print(f"resample: {stop:,}/{n_cells:,} cells, {nnz:,} counts", file=sys.stderr, flush=True)
    data.resize(nnz, refcheck=False)  # in place: the buffers are ours alone
    indices.resize(nnz, refcheck=False)
    if nnz > _INT32_MAX:
        indices = indices.astype(np.int64)
    else:
        indptr = indptr.astype(np.int32)
    out = sp.csr_matrix((data, indices, indptr), shape=(n_cells, x.shape[1]), copy=False)
    out.indices, out.indptr = indices, indptr  # scipy would narrow int64 wherever the values fit
    return _resampled(adata, out, chosen)


def _resampled(adata: ad.AnnData, x, chosen: np.ndarray) -> ad.AnnData:
    """The resampled AnnData around the matrix `x` (in memory or Dask) of the `chosen` cells."""
    obs = adata.obs.iloc[chosen].copy()
    obs["source_cell"] = adata.obs_names[chosen].to_numpy()
    obs.index = "cell_" + pd.RangeIndex(len(chosen)).astype(str)
    return ad.AnnData(x, obs=obs, var=adata.var.copy())


def _resample_block(
    x: sp.csr_matrix, rows: np.ndarray, thin: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source `rows` (cells drawn) of `x`, each count thinned with `rng` (which advances),
    zeros dropped: (float32 data, int32 column numbers, int64 row starts from 0). The one place
    where resampled counts are made, for the in-memory matrix and the Dask blocks alike."""
    block = x[rows]
    kept = _thin(block.data, thin, rng)
    nonzero = kept != 0
    kept_before = np.zeros(block.nnz + 1, dtype=np.int64)  # kept entries before each entry
    np.cumsum(nonzero, out=kept_before[1:])
    indptr = kept_before[block.indptr]
    del kept_before
    return kept[nonzero], block.indices[nonzero].astype(np.int32, copy=False), indptr


class _LazyResample:
    """The Dask form of :func:`resample`: block ``k`` holds cells ``k * chunk_size`` onwards,
    made by :func:`_resample_block` from the generator state in which :func:`resample`'s loop
    reaches that chunk, so that the blocks are the in-memory matrix's rows exactly.

    That state depends on all the draws before it (a binomial draw takes a variable number of
    random numbers), so it is found on first need by replaying the earlier blocks' draws, and
    kept (a few hundred bytes per block): the first pass over the blocks costs about one
    sequential pass, later passes (each step that reads the matrix) run in parallel. The cache
    lives in this object; a multi-process scheduler gets copies, each filling its own."""

    def __init__(self, x, chosen, thin, chunk_size, state, progress):
        self.x, self.chosen, self.thin, self.chunk_size, self.progress = x, chosen, thin, chunk_size, progress
        self._states = {0: state}  # block number -> generator state at its start
        self._lock = threading.Lock()

    def __getstate__(self):
        d = self.__dict__.copy()
        del d["_lock"]
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _draw(self, k: int, state: dict) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict]:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state
        rows = self.chosen[k * self.chunk_size : (k + 1) * self.chunk_size]
        out = _resample_block(self.x, rows, self.thin, rng)
        after = rng.bit_generator.state
        with self._lock:
            self._states.setdefault(k + 1, after)
        return out, after

    def block(self, k: int) -> sp.csr_matrix:
        """Block `k` as a float32 CSR matrix (int32 indices; int64 row starts only past 2**31 - 1)."""
        with self._lock:
            j = max(i for i in self._states if i <= k)
            state = self._states[j]
        for i in range(j, k):  # replay the draws of blocks not yet made, to learn block k's state
            _, state = self._draw(i, state)
        (data, indices, indptr), _ = self._draw(k, state)
        if indptr[-1] <= _INT32_MAX:
            indptr = indptr.astype(np.int32)
        n_rows = len(indptr) - 1
        out = sp.csr_matrix((data, indices, indptr), shape=(n_rows, self.x.shape[1]), copy=False)
        out.indices, out.indptr = indices, indptr  # keep the dtypes scipy would change
        if self.progress:
            start = k * self.chunk_size
            print(f"resample: made cells {start:,}-{start + n_rows:,}, {len(data):,} counts",
                  file=sys.stderr, flush=True)  # fmt: skip
        return out

    def array(self):
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        n_cells, n_vars = len(self.chosen), self.x.shape[1]
        name = "resample-" + tokenize(self.x, self.chosen, self.thin, self.chunk_size, self._states[0])
        starts = range(0, n_cells, self.chunk_size)
        rows = tuple(min(self.chunk_size, n_cells - s) for s in starts)
        layer = {(name, k, 0): (self.block, k) for k in range(len(rows))}
        graph = HighLevelGraph.from_collections(name, layer, dependencies=())
        meta = sp.csr_matrix((0, 0), dtype=np.float32)
        return da.Array(graph, name, chunks=(rows, (n_vars,)), meta=meta)


# --- PIC-seq demo data ---------------------------------------------------------------------------
PBMC_T_GROUPS = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic",
                 "CD4+/CD45RO+ Memory"]  # fmt: skip
PBMC_DC_GROUPS = ["DC0", "DC1", "DC2"]


def pbmc_t_dc_pics(n_pics: int = 200, seed: int = 0) -> tuple[ad.AnnData, ad.AnnData]:
    """Synthetic T cell + dendritic cell PICs from the bundled PBMCs (:func:`pbmc68k_reduced`),
    and the reference to deconvolve them with. obs['pic_group'] holds the groups: the four
    T-cell labels (`PBMC_T_GROUPS`) and the DCs split into 3 sub-clusters (`PBMC_DC_GROUPS`, PCA
    of log-normalised counts + k-means), so each PIC has 4 x 3 candidate pairs. 30 % of the cells
    are held out as the PICs' sources, the rest (raw counts) are the reference. As
    :func:`gpu_sc.pic.simulate_pics` (`n_pics` attempts, only those reaching the full depth
    kept), it can return a few PICs fewer than `n_pics`.
    Returns (pics, reference)."""
    from . import pic, pp

    check_int(n_pics, step="pbmc_t_dc_pics", name="n_pics")
    check_seed(seed, step="pbmc_t_dc_pics")

    raw = pbmc68k_reduced()
    cells = raw[raw.obs["bulk_labels"].isin(PBMC_T_GROUPS + ["Dendritic"])].copy()
    groups = cells.obs["bulk_labels"].astype(str).to_numpy().copy()
    dc = groups == "Dendritic"
    lg = cells[dc].copy()
    pp.normalize_total(lg, target_sum=1e4)
    pp.log1p(lg)
    pp.pca(lg, n_comps=10)
    groups[dc] = [f"DC{k}" for k in _kmeans(np.asarray(lg.obsm["X_pca"], dtype=np.float64), 3, seed)]
    cells.obs["pic_group"] = groups
    source = np.random.default_rng(seed).random(cells.n_obs) < 0.3
    pics = pic.simulate_pics(cells[source], groupby="pic_group", a=PBMC_T_GROUPS, b=PBMC_DC_GROUPS,
                             n_pics=n_pics, seed=seed + 1)  # fmt: skip
    return pics, cells[~source].copy()


def _kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 5, n_iter: int = 100) -> np.ndarray:
    """Cluster labels of the rows of `x` by Lloyd's k-means (k-means++ starts, best of `n_init`),
    numbered by decreasing cluster size; NumPy only (no scikit-learn needed), deterministic for a
    given seed."""
    rng = np.random.default_rng(seed)
    best_inertia, best = np.inf, None
    for _ in range(n_init):
        centres = x[[rng.integers(len(x))]]
        for _ in range(k - 1):
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
            centres = np.vstack([centres, x[rng.choice(len(x), p=d2 / d2.sum())]])
        for _ in range(n_iter):
            labels = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
            new = np.array([x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        inertia = ((x - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best_inertia, best = inertia, labels
    order = np.argsort(-np.bincount(best, minlength=k), kind="stable")
    return np.argsort(order)[best]
