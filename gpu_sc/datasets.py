"""Bundled real count matrices, and deterministic resampling to any size for benchmarks.

Bundled (``gpu_sc/_data``, attribution in ``gpu_sc/_data/README.md``):

- ``pbmc68k_reduced()``: 700 PBMCs x 765 genes; raw counts recovered from scanpy 1.12.4's
  ``10x_pbmc68k_reduced.h5ad`` as round(expm1(raw.X) * n_counts / 1e4). BSD-3 (scanpy), data
  10x Genomics.
- ``mouse_brain_10k()``: 10,000 cells x 1,000 genes of the 10x 1.3M mouse brain cells, from
  scanpy 1.11.5's test data ``tests/_data/10x-10k-subset.zarr``. BSD-3.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._settings import settings

_DATA = Path(__file__).resolve().parent / "_data"


def _read(name: str) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's format-version chatter
        return ad.read_h5ad(_DATA / name)


def pbmc68k_reduced() -> ad.AnnData:
    """700 PBMCs x 765 genes, raw UMI counts (float32 CSR), ``obs['bulk_labels']`` cell types."""
    return _read("pbmc68k_reduced_counts.h5ad")


def mouse_brain_10k() -> ad.AnnData:
    """10,000 mouse brain cells x 1,000 genes, raw UMI counts (float32 CSR); one all-zero cell
    and a few identical rows (useful edge cases)."""
    return _read("mouse_brain_10k_subset.h5ad")


def resample(
    adata: ad.AnnData,
    n_cells: int,
    *,
    seed: int = 0,
    thin: float = 0.8,
    layer: str | None = None,
    chunk_size: int = 100_000,
    progress: bool = False,
) -> ad.AnnData:
    """A new AnnData of `n_cells` cells drawn from `adata`'s real cells, deterministically.

    Cells are bootstrapped (drawn with replacement) and each of their counts is binomially
    thinned with probability `thin`, so that resampled cells are realistic but not exact
    duplicates. Built in chunks of `chunk_size` cells so memory stays near the output's size.

    Parameters
    ----------
    adata
        Source with raw integer counts in ``X`` (or `layer`), on the CPU.
    n_cells
        Number of cells to make (>= 1).
    seed
        Seed of the generator: the same seed gives the same matrix.
    thin
        Probability of keeping each UMI, in (0, 1]; 1 keeps the counts as they are.
    layer
        Take the counts from this layer instead of ``X``.
    chunk_size
        Cells per chunk.
    progress
        Print one line per chunk.

    Returns
    -------
    AnnData with float32 CSR counts (int64 index pointers only when nnz exceeds 2**31 - 1), the
    source's ``var``, its ``obs`` columns for the drawn cells, ``obs['source_cell']`` (the name
    of the drawn cell) and obs names ``cell_0``, ``cell_1``, ...
    """
    if n_cells < 1:
        msg = f"resample: n_cells must be at least 1, got {n_cells}."
        raise ValueError(msg)
    if not 0 < thin <= 1:
        msg = f"resample: thin must lie in (0, 1], got {thin}."
        raise ValueError(msg)
    x = adata.layers[layer] if layer is not None else adata.X
    if not (sp.issparse(x) or isinstance(x, np.ndarray)):
        msg = f"resample: needs counts on the CPU, got {type(x).__name__}; call gpu_sc.get.to_cpu first."
        raise TypeError(msg)
    x = sp.csr_matrix(x)
    values = x.data
    if values.size and (values.min() < 0 or not np.all(values == np.round(values))):
        msg = "resample: expects raw non-negative integer counts; got non-integer or negative values."
        raise ValueError(msg)

    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = rng.integers(0, x.shape[0], size=n_cells)
    blocks = []
    for start in range(0, n_cells, chunk_size):
        block = x[chosen[start : start + chunk_size]]
        counts = block.data.astype(np.int64)
        kept = rng.binomial(counts, thin) if thin < 1 else counts
        block = sp.csr_matrix((kept.astype(np.float32), block.indices, block.indptr), shape=block.shape)
        block.eliminate_zeros()
        blocks.append(block)
        if progress:
            settings.info(f"resample: {min(start + chunk_size, n_cells):,}/{n_cells:,} cells")
    out = sp.vstack(blocks, format="csr")
    if out.nnz <= np.iinfo(np.int32).max:
        out.indices = out.indices.astype(np.int32, copy=False)
        out.indptr = out.indptr.astype(np.int32, copy=False)

    obs = adata.obs.iloc[chosen].copy()
    obs["source_cell"] = adata.obs_names[chosen].to_numpy()
    obs.index = pd.Index([f"cell_{i}" for i in range(n_cells)])
    return ad.AnnData(out, obs=obs, var=adata.var.copy())
