"""tl.ingest: scanpy's mapping of new cells onto a reference (scanpy's `Ingest`), its search index
working with pynndescent 0.7 (scanpy 1.11's own raises TypeError there), on CPU and GPU data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _helpers import _load, to_host

import gpu_sc as gsc


@pytest.fixture(scope="module")
def reference_and_new():
    a = _load("pbmc68k_reduced_counts.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=300, subset=True)
        order = np.random.default_rng(0).permutation(a.n_obs)
        ref, new = a[order[:500]].copy(), a[order[500:]].copy()
        sc.pp.pca(ref, n_comps=30)
        sc.pp.neighbors(ref)
        sc.tl.umap(ref)
    truth = new.obs.pop("bulk_labels").astype(str).to_numpy()
    del new.obsm["X_umap"], new.obsm["X_pca"]
    return ref, new, truth


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_maps_labels_pca_and_umap(reference_and_new):
    """Power: held-out cells get their own labels back far above chance (8 labels, the largest
    a quarter of the cells); the PCA is scanpy's projection (centred on the new cells' mean)."""
    ref, new, truth = reference_and_new
    got = new.copy()
    _quiet(gsc.tl.ingest, got, ref, obs="bulk_labels")
    accuracy = (got.obs["bulk_labels"].astype(str).to_numpy() == truth).mean()
    assert accuracy > 0.7
    # null: with the reference's labels shuffled, no better than guessing the commonest label
    shuffled = ref.copy()
    shuffled.obs["bulk_labels"] = shuffled.obs["bulk_labels"].sample(frac=1.0, random_state=0).to_numpy()
    null = new.copy()
    _quiet(gsc.tl.ingest, null, shuffled, obs="bulk_labels", embedding_method="pca")
    commonest = pd.Series(truth).value_counts(normalize=True).iloc[0]
    assert (null.obs["bulk_labels"].astype(str).to_numpy() == truth).mean() < commonest + 0.1
    x = new.X.toarray()
    np.testing.assert_allclose(got.obsm["X_pca"], (x - x.mean(axis=0)) @ ref.varm["PCs"], rtol=1e-4, atol=1e-5)
    # each new cell lands among the reference cells it is closest to in PCA space
    d = ((got.obsm["X_pca"][:, None, :] - ref.obsm["X_pca"][None, :, :]) ** 2).sum(-1)
    near = ref.obsm["X_umap"][np.argsort(d, axis=1)[:, :15]].mean(axis=1)
    spread = np.ptp(ref.obsm["X_umap"], axis=0).max()
    assert np.median(np.linalg.norm(got.obsm["X_umap"] - near, axis=1)) < 0.1 * spread


def test_equals_scanpys_where_its_index_works(reference_and_new, monkeypatch):
    """With scanpy's own index made to work the same way, scanpy's ingest gives ours exactly."""
    from scanpy.tools._ingest import Ingest

    ref, new, _ = reference_and_new
    scanpys = Ingest._init_pynndescent

    def working(self, distances):  # what ours does where scanpy's forest rebuild fails
        try:
            scanpys(self, distances)
        except TypeError:
            self._nnd_idx.prepare()

    monkeypatch.setattr(Ingest, "_init_pynndescent", working)
    want, got = new.copy(), new.copy()
    _quiet(sc.tl.ingest, want, ref, obs=["bulk_labels", "louvain"], embedding_method="umap")
    _quiet(gsc.tl.ingest, got, ref, obs=["bulk_labels", "louvain"], embedding_method="umap")
    for col in ("bulk_labels", "louvain"):
        pd.testing.assert_series_equal(got.obs[col], want.obs[col])
    np.testing.assert_array_equal(got.obsm["X_umap"], want.obsm["X_umap"])
    # the neighbour search's keywords (scanpy's Ingest.neighbors) reach it
    for kw in ({"k": 4}, {"queue_size": 2, "epsilon": 0.3}):
        want_k, got_k = new.copy(), new.copy()
        _quiet(sc.tl.ingest, want_k, ref, obs="bulk_labels", embedding_method="umap", **kw)
        _quiet(gsc.tl.ingest, got_k, ref, obs="bulk_labels", embedding_method="umap", **kw)
        np.testing.assert_array_equal(got_k.obsm["X_umap"], want_k.obsm["X_umap"])
        pd.testing.assert_series_equal(got_k.obs["bulk_labels"], want_k.obs["bulk_labels"])
        assert not got_k.obs["bulk_labels"].equals(got.obs["bulk_labels"])  # the keyword matters (labels)
    before = new.obs.copy()
    copied = _quiet(gsc.tl.ingest, new, ref, obs="louvain", inplace=False)
    assert new.obs.equals(before) and "X_umap" not in new.obsm  # inplace=False leaves `new`
    assert copied.obs["louvain"].equals(got.obs["louvain"])


def test_gpu_data(device, reference_and_new):
    ref, new, _ = reference_and_new
    want = new.copy()
    _quiet(gsc.tl.ingest, want, ref, obs="bulk_labels")
    gpu_ref, gpu_new = gsc.get.to_gpu(ref, copy=True), gsc.get.to_gpu(new, copy=True)
    _quiet(gsc.tl.ingest, gpu_new, gpu_ref, obs="bulk_labels")
    assert type(gpu_new.obsm["X_umap"]).__module__.startswith("cupy")
    pd.testing.assert_series_equal(gpu_new.obs["bulk_labels"], want.obs["bulk_labels"])
    np.testing.assert_allclose(to_host(gpu_new.obsm["X_pca"]), want.obsm["X_pca"], rtol=1e-4, atol=1e-4)
    spread = np.ptp(want.obsm["X_umap"], axis=0).max()  # the same neighbours, so the same placement
    np.testing.assert_allclose(to_host(gpu_new.obsm["X_umap"]), want.obsm["X_umap"], rtol=0, atol=1e-3 * spread)


def test_gpu_sparse_x_with_a_graph_on_x(device, reference_and_new):
    """A graph built on X makes scanpy store the new cells' X as obsm['rep']: a sparse one goes
    back to the GPU as cupyx (it failed there, with the labels already written)."""
    ref, new, _ = reference_and_new
    ref = ref.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=10, use_rep="X")
        sc.tl.umap(ref)
    want = new.copy()
    _quiet(gsc.tl.ingest, want, ref, obs="bulk_labels")
    gpu = gsc.get.to_gpu(new, copy=True)
    _quiet(gsc.tl.ingest, gpu, ref, obs="bulk_labels")
    assert type(gpu.obsm["rep"]).__module__.startswith("cupyx") and type(gpu.obsm["X_umap"]).__module__.startswith("cupy")
    pd.testing.assert_series_equal(gpu.obs["bulk_labels"], want.obs["bulk_labels"])


def test_dask_x_and_mismatched_methods(reference_and_new):
    """The new cells' Dask X is refused; the reference's is read only where its graph was built
    on X (not here: scanpy's runs, ours too). Fewer labeling methods than columns is refused
    before anything is written (scanpy: IndexError after the embeddings)."""
    import dask.array as da

    ref, new, _ = reference_and_new
    lazy = new.copy()
    lazy.X = da.from_array(lazy.X, chunks=(100, -1), asarray=False)
    with pytest.raises(TypeError, match=r"adata.X is a Dask array; .* compute it first"):
        gsc.tl.ingest(lazy, ref, obs="bulk_labels")
    assert "bulk_labels" not in lazy.obs
    lazy_ref = ref.copy()
    lazy_ref.X = da.from_array(lazy_ref.X, chunks=(100, -1), asarray=False)
    got = new.copy()
    _quiet(gsc.tl.ingest, got, lazy_ref, obs="bulk_labels", embedding_method="pca")
    assert got.obs["bulk_labels"].notna().all()
    with pytest.raises(ValueError, match=r"3 obs columns to map .* but 2 labeling methods"):
        gsc.tl.ingest(new, ref, obs=["bulk_labels", "louvain", "phase"], labeling_method=["knn", "knn"])
    assert "X_umap" not in new.obsm


def test_ingest_class_as_scanpys(reference_and_new):
    """scanpy's step-by-step `Ingest` (host data), as `tl.ingest` uses it: the same labels and UMAP."""
    ref, new, _ = reference_and_new
    want = new.copy()
    _quiet(gsc.tl.ingest, want, ref, obs="bulk_labels")
    ing = _quiet(gsc.tl.Ingest, ref)
    assert issubclass(gsc.tl.Ingest, sc.tl.Ingest) and "Ingest" in dir(gsc.tl)
    _quiet(ing.fit, new)
    for method in ("umap", "pca"):
        _quiet(ing.map_embedding, method)
    _quiet(ing.neighbors)
    ing.map_labels("bulk_labels", "knn")
    got = ing.to_adata()
    assert got.obs["bulk_labels"].equals(want.obs["bulk_labels"])
    np.testing.assert_array_equal(got.obsm["X_umap"], want.obsm["X_umap"])


def test_missing_obs_column_and_umap_refused_before_any_work(reference_and_new):
    """A column the reference lacks, or a UMAP it has not got, is refused by name before anything
    is mapped (scanpy: a bare KeyError after the embeddings; an AttributeError on '_umap')."""
    ref, new, _ = reference_and_new
    before = new.copy()
    with pytest.raises(KeyError, match=r"obs \['nope'\] not in adata_ref.obs"):
        gsc.tl.ingest(new, ref, obs="nope")
    no_umap = ref.copy()
    del no_umap.obsm["X_umap"]
    with pytest.raises(ValueError, match=r"adata_ref has no obsm\['X_umap'\]; run tl.umap on the reference first"):
        gsc.tl.ingest(new, no_umap, obs="bulk_labels")
    no_params = ref.copy()
    no_params.uns.pop("umap", None)
    with pytest.raises(ValueError, match=r"adata_ref has no uns\['umap'\]"):
        gsc.tl.ingest(new, no_params, obs="bulk_labels")
    assert set(new.obs) == set(before.obs) and set(new.obsm) == set(before.obsm)
    _quiet(gsc.tl.ingest, new, no_umap, obs="bulk_labels", embedding_method="pca")  # pca alone needs no UMAP
    assert new.obs["bulk_labels"].notna().all()
