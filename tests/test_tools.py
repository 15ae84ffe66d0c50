"""tl.umap / tl.leiden: scanpy on the CPU (rapids-singlecell for a GPU graph if importable),
same keys and results as scanpy on the same graph."""

from __future__ import annotations

import warnings

import pytest
import scanpy as sc
from _helpers import assert_same
from sklearn.metrics import adjusted_rand_score

from gpu_sc.preprocessing._neighbors import neighbors
from gpu_sc.tools import leiden, umap


@pytest.fixture
def graph(pbmc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(pbmc)
        sc.pp.log1p(pbmc)
        sc.pp.pca(pbmc)
    del pbmc.obsm["X_umap"]
    neighbors(pbmc, n_neighbors=15)
    return pbmc


LEIDEN = {"flavor": "igraph", "n_iterations": 2, "directed": False, "random_state": 0}


def test_leiden_same_as_scanpy(graph):
    ref = graph.copy()
    leiden(graph, **LEIDEN)
    sc.tl.leiden(ref, **LEIDEN)
    assert graph.obs["leiden"].dtype == "category"
    assert adjusted_rand_score(graph.obs["leiden"], ref.obs["leiden"]) >= 0.9
    assert graph.uns["leiden"] == ref.uns["leiden"]
    out = leiden(graph, key_added="cl", resolution=0.5, copy=True, **LEIDEN)
    assert "cl" in out.obs and "cl" not in graph.obs and "cl" in out.uns


def test_umap_same_keys_as_scanpy(graph):
    ref = graph.copy()
    umap(graph, maxiter=30, random_state=0)
    sc.tl.umap(ref, maxiter=30, random_state=0)
    assert graph.obsm["X_umap"].shape == (graph.n_obs, 2)
    assert_same(graph.obsm["X_umap"], ref.obsm["X_umap"])  # scanpy's umap on the host, same graph and seed
    assert set(graph.uns["umap"]) == set(ref.uns["umap"])


def test_gpu_graph(device, graph):
    """A GPU graph: rapids-singlecell if importable, else scanpy on the host; results back."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    gpu = graph.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    for key in ("distances", "connectivities"):
        gpu.obsp[key] = cpsp.csr_matrix(gpu.obsp[key])
    leiden(gpu, **LEIDEN)
    umap(gpu, maxiter=30)
    assert "leiden" in gpu.obs and gpu.obsm["X_umap"].shape == (graph.n_obs, 2)
