"""neighbors: exact kNN and UMAP / Gaussian connectivities, parity with scanpy and a float64
brute-force reference; the brain data (duplicate and all-zero cells) where scanpy fails."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import assert_adata_equal, to_host
from scipy.spatial.distance import cdist

from gpu_sc._ops.knn import knn
from gpu_sc.preprocessing._neighbors import neighbors

# scanpy's own small example (tests/test_neighbors.py): n_neighbors=3 includes the point itself
X_SMALL = np.array([[1, 0], [3, 0], [5, 6], [0, 4]])
DIST_SMALL = [[0.0, 2.0, 0.0, 4.123105525970459], [2.0, 0.0, 0.0, 5.0],
              [0.0, 6.324555397033691, 0.0, 5.385164737701416], [4.123105525970459, 5.0, 0.0, 0.0]]  # fmt: skip
UMAP_SMALL = [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.5849691143165735, 0.8277419907567016],
              [0.0, 0.5849691143165735, 0.0, 1.0], [1.0, 0.8277419907567016, 1.0, 0.0]]  # fmt: skip
GAUSS_SMALL = [[0.0, 0.8466368913650513, 0.0, 0.5660185813903809],
               [0.8466368913650513, 0.0, 0.4223647117614746, 0.4902938902378082],
               [0.0, 0.4223647117614746, 0.0, 0.5840492248535156],
               [0.5660185813903809, 0.4902938902378082, 0.5840492248535156, 0.0]]  # fmt: skip


_PCA = {}


@pytest.fixture
def pbmc_pca(pbmc):
    """pbmc after scanpy's normalize_total, log1p and pca (cached)."""
    if "a" not in _PCA:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(pbmc)
            sc.pp.log1p(pbmc)
            sc.pp.pca(pbmc)
        _PCA["a"] = pbmc
    return _PCA["a"].copy()


@pytest.mark.parametrize("method,expected", [("umap", UMAP_SMALL), ("gauss", GAUSS_SMALL)])
def test_scanpy_small_example(method, expected):
    import anndata as ad

    a = ad.AnnData(X_SMALL.astype(np.float32))
    neighbors(a, n_neighbors=3, method=method)
    np.testing.assert_allclose(a.obsp["distances"].toarray(), DIST_SMALL, atol=1e-6)
    np.testing.assert_allclose(a.obsp["connectivities"].toarray(), expected, atol=1e-6)


def _reference(x, k, metric):
    """float64 brute force over all pairs: self first, then (distance, index)."""
    d = cdist(x.astype(np.float64), x.astype(np.float64), metric=metric)
    np.fill_diagonal(d, -1)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), d.shape), d), axis=1)[:, :k]
    dist = np.take_along_axis(d, order, axis=1)
    dist[:, 0] = 0
    return order, dist


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_exact(pbmc_pca, metric):
    x = pbmc_pca.obsm["X_pca"]
    ind, dist = knn(x, 15, metric=metric, block_bytes=2**20)  # several row blocks
    ref_i, ref_d = _reference(x, 15, metric)
    assert (ind[:, 0] == np.arange(len(x))).all()
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(ind, ref_i, strict=True)])
    assert recall == 1.0
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["umap", "gauss"])
def test_parity_with_scanpy(pbmc_pca, method):
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=15, method=method)
    neighbors(pbmc_pca, n_neighbors=15, method=method)
    d, d_ref = pbmc_pca.obsp["distances"], ref.obsp["distances"]
    assert (d.getnnz(axis=1) == 14).all()
    assert ((d != 0).astype(int) != (d_ref != 0).astype(int)).nnz == 0  # same neighbours
    assert abs(d - d_ref).max() <= 1e-5
    assert abs(pbmc_pca.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= 1e-5
    assert pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]
    assert pbmc_pca.obsp["connectivities"].diagonal().max() == 0


def test_cosine(pbmc_pca):
    """Distances equal scanpy's; connectivities equal UMAP's fuzzy_simplicial_set on our kNN.
    (scanpy's own cosine graph differs where sklearn's float32 self-distance is 1e-7 instead
    of 0, which UMAP then takes as rho.)"""
    from umap.umap_ import fuzzy_simplicial_set

    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, metric="cosine")
    neighbors(pbmc_pca, metric="cosine")
    d, d_ref = pbmc_pca.obsp["distances"], ref.obsp["distances"]
    assert abs(d - d_ref).max() <= 1e-5 and pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]
    ind, dist = knn(pbmc_pca.obsm["X_pca"], 15, metric="cosine")
    n = pbmc_pca.n_obs
    conn, _, _ = fuzzy_simplicial_set(sp.coo_matrix((n, 1)), 15, None, None, knn_indices=ind,
                                      knn_dists=dist)  # fmt: skip
    assert abs(pbmc_pca.obsp["connectivities"] - conn.tocsr()).max() <= 1e-5


def test_key_added_and_params(pbmc_pca):
    neighbors(pbmc_pca, n_neighbors=10, n_pcs=20, key_added="k")
    assert set(pbmc_pca.obsp) == {"k_distances", "k_connectivities"}
    assert pbmc_pca.uns["k"] == {
        "connectivities_key": "k_connectivities", "distances_key": "k_distances",
        "params": {"n_neighbors": 10, "method": "umap", "random_state": 0, "metric": "euclidean", "n_pcs": 20},
    }  # fmt: skip
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=10, n_pcs=20, key_added="k")
    assert ref.uns["k"] == pbmc_pca.uns["k"]
    assert abs(ref.obsp["k_connectivities"] - pbmc_pca.obsp["k_connectivities"]).max() <= 1e-5
    out = neighbors(pbmc_pca, n_neighbors=5, use_rep="X_pca", copy=True)
    assert out is not pbmc_pca and out.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    assert "neighbors" not in pbmc_pca.uns


@pytest.mark.parametrize(
    "kwargs,match",
    [({"metric": "manhattan"}, "metric"), ({"n_neighbors": 700}, "smaller than"),
     ({"use_rep": "nan"}, "NaN"), ({"method": "jaccard"}, "method"), ({"use_rep": "nope"}, "nope")],
)  # fmt: skip
def test_bad_input_leaves_adata_unchanged(pbmc_pca, kwargs, match):
    rep = pbmc_pca.obsm["X_pca"].copy()
    rep[5, 3] = np.nan
    pbmc_pca.obsm["nan"] = rep
    before = pbmc_pca.copy()
    with pytest.raises((ValueError, KeyError), match=match):
        neighbors(pbmc_pca, **kwargs)
    assert_adata_equal(pbmc_pca, before)
    assert not pbmc_pca.obsp and set(pbmc_pca.uns) == set(before.uns)


def test_no_pca_many_genes(pbmc):
    """Without X_pca and with > 50 genes, PCA is computed (gsc.pp.pca), as scanpy does."""
    del pbmc.obsm["X_pca"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(pbmc)
        sc.pp.log1p(pbmc)
    neighbors(pbmc, n_neighbors=5)
    assert pbmc.obsp["distances"].shape == (700, 700) and pbmc.obsm["X_pca"].shape == (700, 50)


def test_int64_and_integer_inputs(pbmc):
    """X as CSR with int64 index arrays and integer counts (use_rep='X') gives the same graph
    as the dense float64 matrix."""
    x = pbmc.X[:300, :40].astype(np.int64)
    x = sp.csr_matrix((x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)), shape=x.shape)
    import anndata as ad

    a, b = ad.AnnData(x), ad.AnnData(x.toarray().astype(np.float64))
    neighbors(a, n_neighbors=8, use_rep="X")
    neighbors(b, n_neighbors=8, use_rep="X")
    assert abs(a.obsp["distances"] - b.obsp["distances"]).max() <= 1e-6
    assert abs(a.obsp["connectivities"] - b.obsp["connectivities"]).max() <= 1e-6


def test_brain_duplicates_and_empty_cell(brain):
    """scanpy 1.11 fails on this data here; every cell gets n_neighbors - 1 neighbours other
    than itself, duplicates (cells 991, 6410, 8293) at distance 0, a symmetric finite graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(brain)
        sc.pp.log1p(brain)
        sc.pp.pca(brain)
    rows = np.r_[0:2500, 6410, 8293]  # time budget: the empty cell 1520 and the duplicates
    sub = brain[rows].copy()
    sub.X = sub.X.toarray()
    dup = [991, 2500, 2501]
    for a, rep, method in ((brain, None, "umap"), (sub, "X", "umap"), (sub, "X", "gauss")):
        neighbors(a, n_neighbors=10, use_rep=rep, method=method)
        d, c = a.obsp["distances"], a.obsp["connectivities"]
        assert (d.getnnz(axis=1) == 9).all()
        assert (d.indices.reshape(-1, 9) != np.arange(a.n_obs)[:, None]).all()
        assert np.isfinite(c.data).all() and abs(c - c.T).max() <= 1e-6
        assert c.diagonal().max() == 0
    ind = sub.obsp["distances"].indices.reshape(-1, 9)
    for i in dup:
        assert set(ind[i, :2]) == set(dup) - {i}
        np.testing.assert_array_equal(sub.obsp["distances"][i, ind[i, :2]].toarray(), 0)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["umap", "gauss"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gpu_equals_cpu(pbmc_pca, method, metric):
    import cupy as cp

    gpu = pbmc_pca.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    neighbors(pbmc_pca, method=method, metric=metric)
    neighbors(gpu, method=method, metric=metric)
    for key in ("distances", "connectivities"):
        g, c = gpu.obsp[key], pbmc_pca.obsp[key]
        assert type(g).__module__.startswith("cupyx")
        g = g.get()
        assert abs(g - c).max() <= 1e-5
    np.testing.assert_array_equal(gpu.obsp["distances"].get().indices, pbmc_pca.obsp["distances"].indices)
    assert gpu.uns["neighbors"] == pbmc_pca.uns["neighbors"]


@pytest.mark.gpu
def test_gpu_knn_tiles_and_select_kernel(brain):
    """Several row and column tiles, k up to the kernel's limit, duplicates: same lists as CPU."""
    import cupy as cp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(brain)
        sc.pp.log1p(brain)
        sc.pp.pca(brain)
    x = brain.obsm["X_pca"]
    for k in (2, 30, 256):
        ind_c, dist_c = knn(x, k, block_bytes=2**22)
        ind_g, dist_g = knn(cp.asarray(x), k, block_bytes=2**22)
        ind_g, dist_g = to_host(ind_g), to_host(dist_g)
        np.testing.assert_allclose(dist_g, dist_c, rtol=1e-12, atol=1e-12)
        assert np.mean(ind_g == ind_c) > 0.999  # exact ties aside
