"""gsc.get.obs_df / var_df against scanpy's on real data (genes, gene symbols, obs / var
columns, repeated keys, obsm / varm columns, layers, raw), and the same frames from a Dask X
(where scanpy's fail) and from device arrays; ambiguous or unknown keys refused as scanpy does."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, cells_for

import gpu_sc as gsc


@pytest.fixture(scope="module")
def pbmc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sc.datasets.pbmc68k_reduced()
    a.var["symbol"] = "sym-" + a.var_names
    a.layers["counts"] = sp.csr_matrix(np.expm1(a.raw[:, a.var_names].X.toarray()))
    a.obsm["sparse"] = sp.csr_matrix(a.obsm["X_pca"])
    a.obsm["frame"] = pd.DataFrame(a.obsm["X_umap"], index=a.obs_names, columns=["u0", "u1"])
    return a


OBS_CASES = [
    dict(keys=["CD8B", "n_genes", "louvain"], obsm_keys=[("X_umap", 0), ("sparse", 3), ("frame", "u1")]),
    dict(keys="CD8B"),
    dict(keys=["CD8B", "CD8B", "n_genes"]),
    dict(keys=["sym-CD8B", "sym-LYZ"], gene_symbols="symbol"),
    dict(keys=["CD8B", "HES4"], layer="counts"),
    dict(keys=["CD8B", "HES4", "CD79A"], use_raw=True),
    dict(obsm_keys=[("X_pca", 2)]),
]


def _dask(a):
    da = pytest.importorskip("dask.array")
    b = a.copy()
    b.X = da.from_array(sp.csr_matrix(a.X), chunks=(130, -1), asarray=False)
    return b


@pytest.mark.parametrize("case", OBS_CASES, ids=lambda c: "-".join(c) or "none")
def test_obs_df_equals_scanpy(pbmc, case):
    want = sc.get.obs_df(pbmc, **case)
    pd.testing.assert_frame_equal(gsc.get.obs_df(pbmc, **case), want)
    if "layer" not in case and not case.get("use_raw"):
        pd.testing.assert_frame_equal(gsc.get.obs_df(_dask(pbmc), **case), want)


@pytest.mark.parametrize("case", [dict(keys=["AAAGCCTGGCTAAC-1", "n_counts", "AACACGTGGTCTTT-1"],
                                       varm_keys=[("PCs", 1)]),
                                  dict(keys="AAAGCCTGGCTAAC-1", layer="counts")], ids=["cells", "layer"])
def test_var_df_equals_scanpy(pbmc, case):
    a = pbmc.copy()
    a.var["n_counts"] = np.arange(a.n_vars)
    want = sc.get.var_df(a, **case)
    pd.testing.assert_frame_equal(gsc.get.var_df(a, **case), want)
    if "layer" not in case:
        pd.testing.assert_frame_equal(gsc.get.var_df(_dask(a), **case), want)


def test_on_the_device_equals_host(device, pbmc):
    a = cells_for(device, pbmc, 200)
    gpu = a.copy()
    gpu.X = as_type(sp.csr_matrix(a.X), "cupyx_csr")
    import cupy as cp

    gpu.obsm["X_umap"] = cp.asarray(a.obsm["X_umap"])
    pd.testing.assert_frame_equal(gsc.get.obs_df(gpu, ["CD8B", "LYZ", "louvain"], [("X_umap", 1)]),
                                  sc.get.obs_df(a, ["CD8B", "LYZ", "louvain"], [("X_umap", 1)]))  # fmt: skip
    cells = list(a.obs_names[[4, 1]])
    pd.testing.assert_frame_equal(gsc.get.var_df(gpu, cells), sc.get.var_df(a, cells))


def test_backed_equals_in_memory(pbmc, tmp_path):
    """Keys out of order from a backed file (h5py reads increasing indices only)."""
    a = pbmc.copy()
    del a.obsm["frame"]
    for x in (np.asarray(a.X), sp.csr_matrix(a.X)):
        a.X = x
        a.write_h5ad(tmp_path / "p.h5ad")
        backed = sc.read_h5ad(tmp_path / "p.h5ad", backed="r")
        genes, cells = list(a.var_names[20::-2]) + ["n_genes"], list(a.obs_names[30::-2])
        pd.testing.assert_frame_equal(gsc.get.obs_df(backed, genes), sc.get.obs_df(a, genes))
        pd.testing.assert_frame_equal(gsc.get.var_df(backed, cells), sc.get.var_df(a, cells))
        backed.file.close()


def test_bad_keys_are_refused_as_scanpy(pbmc):
    a = pbmc.copy()
    with pytest.raises(KeyError, match=r"Could not find keys \['nope'\] in columns of `adata.obs`"):
        gsc.get.obs_df(a, ["CD8B", "nope"])
    with pytest.raises(KeyError, match="gene_symbols 'nope' is not a column of adata.var"):
        gsc.get.obs_df(a, ["CD8B"], gene_symbols="nope")
    a.obs["CD8B"] = 1.0
    with pytest.raises(KeyError, match="'CD8B' is found in both adata.obs and adata.var_names"):
        gsc.get.obs_df(a, ["CD8B"])
    a.var["symbol"] = "same"
    with pytest.raises(KeyError, match="duplicate entries for 'same'"):
        gsc.get.obs_df(a, ["same"], gene_symbols="symbol")
    with pytest.raises(AssertionError, match="pass a layer or use_raw=True, not both") as err:  # scanpy's type
        gsc.get.obs_df(a, ["LYZ"], layer="counts", use_raw=True)
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="use_raw=True but adata.raw is None"):
        gsc.get.obs_df(sc.AnnData(a.X, obs=a.obs, var=a.var), ["LYZ"], use_raw=True)
    with pytest.raises(KeyError, match=r"Could not find keys \['nope'\] in columns of `adata.var` or in adata.obs_names"):
        gsc.get.var_df(a, ["nope"])
    a.obsm["X_two"] = np.zeros((a.n_obs, 2))
    with pytest.raises(KeyError, match=r"obs_df: 'X_nope' is not in adata.obsm \(keys: \[.*'X_two'"):
        gsc.get.obs_df(a, obsm_keys=[("X_nope", 0)])
    with pytest.raises(IndexError, match=r"column 2 of adata.obsm\['X_two'\] does not exist; it has 2 columns"):
        gsc.get.obs_df(a, obsm_keys=[("X_two", 2)])
    with pytest.raises(KeyError, match="var_df: 'nope' is not in adata.varm"):
        gsc.get.var_df(a, varm_keys=[("nope", 0)])


def test_dask_split_along_genes_and_obs_columns_alone(pbmc):
    """A Dask X chunked along genes too gives the in-memory frame; obs columns alone read no
    matrix, so a missing layer is not asked for (as scanpy)."""
    da = pytest.importorskip("dask.array")
    b = pbmc.copy()
    b.X = da.from_array(np.asarray(pbmc.X), chunks=(300, 200))
    genes = ["CD8B", "HES4", "LYZ", "n_genes"]
    pd.testing.assert_frame_equal(gsc.get.obs_df(b, genes), sc.get.obs_df(pbmc, genes))
    cells = list(pbmc.obs_names[[9, 2]])
    pd.testing.assert_frame_equal(gsc.get.var_df(b, cells), sc.get.var_df(pbmc, cells))
    pd.testing.assert_frame_equal(gsc.get.obs_df(pbmc, ["n_genes"], layer="nope"),
                                  sc.get.obs_df(pbmc, ["n_genes"], layer="nope"))  # fmt: skip


def test_genes_asked_in_a_cyclic_order_and_a_negative_obsm_column_as_scanpy(pbmc):
    """Genes asked in an order that is no swap of two (a 3-cycle and its reverse), and obsm
    column -1, which scanpy's indexing takes."""
    genes = list(pbmc.var_names[[40, 3, 17, 9]])
    for order in ([2, 0, 1], [1, 2, 0], [3, 1, 2, 0]):
        keys = [genes[i] for i in order]
        pd.testing.assert_frame_equal(gsc.get.obs_df(pbmc, keys), sc.get.obs_df(pbmc, keys))
    pd.testing.assert_frame_equal(gsc.get.obs_df(pbmc, obsm_keys=[("X_pca", -1)]),
                                  sc.get.obs_df(pbmc, obsm_keys=[("X_pca", -1)]))
