"""pca and neighbors on row-chunked Dask arrays give the in-memory results; to_gpu / to_cpu map
Dask arrays lazily."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import KRYLOV_VAR, UMAP_CONN, assert_close, eps, run_without_cupy, to_host

import gpu_sc as gsc
import gpu_sc.preprocessing._pca as pca_mod
from gpu_sc._ops import eigh as eigh_mod

da = pytest.importorskip("dask.array")

#: uneven row blocks (700 pbmc cells): a short block, a long one, a single row
CHUNKS = ((101, 350, 1, 248), -1)

_PREP: dict[str, object] = {}


def _lognorm_hvg(pbmc):
    """pbmc normalised, log1p and 300 HVGs with gpu_sc, in memory, no obsm (cached)."""
    if "a" not in _PREP:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsc.pp.normalize_total(pbmc)
            gsc.pp.log1p(pbmc)
            gsc.pp.highly_variable_genes(pbmc, n_top_genes=300)
        del pbmc.obsm["X_pca"], pbmc.obsm["X_umap"]  # the bundled file's, from other data
        _PREP["a"] = pbmc
    return _PREP["a"].copy()


def lazy_twin(adata, kind: str, chunks=CHUNKS):
    """(in-memory adata with X as `kind`, a copy whose X is a Dask array of `kind` blocks)."""
    x = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "numpy": lambda m: m.toarray()}[kind](adata.X)
    adata.X = x
    lazy = adata.copy()
    lazy.X = da.from_array(x, chunks=chunks, asarray=False)
    return adata, lazy


def assert_same_pca(ref, got, key="pca"):
    """The same solver over row blocks instead of the whole matrix: only the order of the float64
    sums over cells differs, and a float32 result may round one step either side; components and
    embeddings are sums whose terms cancel, so relative to their largest entry."""
    obsm, varm = ("X_pca", "PCs") if key == "pca" else (key, key)
    r, g = ref.uns[key], got.uns[key]
    n = ref.n_obs
    for k in ("variance", "variance_ratio"):
        assert g[k].dtype == r[k].dtype
        assert_close(g[k], r[k], dtype=np.float64, n_terms=n, out=r[k].dtype, err_msg=k)
    assert g["params"].keys() == r["params"].keys()
    for k, v in r["params"].items():
        assert np.array_equal(g["params"][k], v) if isinstance(v, np.ndarray) else g["params"][k] == v
    for a, b in [(ref.obsm[obsm], got.obsm[obsm]), (ref.varm[varm], got.varm[varm])]:
        assert type(b) is type(a) and b.dtype == a.dtype and b.shape == a.shape
        out = max(np.dtype(a.dtype), np.dtype(ref.X.dtype), key=eps)  # float32 data: float32 components
        assert_close(b, a, dtype=np.float64, n_terms=n, out=out, scale="max")


def assert_close_components(ref, got, key="pca", cos_min=0.9999, rtol=2 * KRYLOV_VAR):
    """Variances within rtol (default: two Krylov results, each within the solver's accuracy of
    the exact eigenvalue; None: two exact eigendecompositions, whose float64 sums over the cells
    in another order move every eigenvalue relative to the largest (Weyl), rounded once more to
    the float32 result), separated components with |cos| >= cos_min."""
    obsm, varm = ("X_pca", "PCs") if key == "pca" else (key, key)
    var_r = ref.uns[key]["variance"].astype(np.float64)
    for k in ("variance", "variance_ratio"):
        r = ref.uns[key][k]
        if rtol is None:
            assert_close(got.uns[key][k], r, dtype=np.float64, n_terms=ref.n_obs, out=r.dtype, scale="max", err_msg=k)
        else:
            np.testing.assert_allclose(got.uns[key][k], r, rtol=rtol, err_msg=k)
    rel = np.abs(np.diff(var_r)) / var_r[:-1]
    ok = np.ones(var_r.size, bool)
    ok[:-1] &= rel > 1e-3
    ok[1:] &= rel > 1e-3
    assert ok.sum() >= 5
    pr, pg = to_host(ref.varm[varm]), to_host(got.varm[varm])
    xr, xg = to_host(ref.obsm[obsm]), to_host(got.obsm[obsm])
    for i in np.flatnonzero(ok):
        cos = pr[:, i] @ pg[:, i] / (np.linalg.norm(pr[:, i]) * np.linalg.norm(pg[:, i]))
        assert abs(cos) >= cos_min, (i, cos)
        assert np.corrcoef(xr[:, i], xg[:, i])[0, 1] >= cos_min, i


@pytest.mark.parametrize("zero_center", [True, False], ids=["centred", "svd"])
@pytest.mark.parametrize("mask", ["hvg", "none", "array"])
@pytest.mark.parametrize("kind", ["csr", "numpy", "csc"])
def test_pca_dask_equals_memory(pbmc, kind, mask, zero_center):
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    kw = {"zero_center": zero_center, "n_comps": 30}
    if mask == "none":
        kw["mask_var"] = None
    elif mask == "array":
        kw["mask_var"] = adata.var["means"].to_numpy() > 0.05
    gsc.pp.pca(adata, **kw)
    gsc.pp.pca(lazy, **kw)
    assert isinstance(lazy.X, da.Array)  # X stays lazy; the embedding is in memory
    assert isinstance(lazy.obsm["X_pca"], np.ndarray)
    assert_same_pca(adata, lazy)
    if mask != "none":
        assert np.all(lazy.varm["PCs"][~np.asarray(kw.get("mask_var", adata.var["highly_variable"]))] == 0)


def test_pca_dask_reads_the_matrix_twice(pbmc):
    """The covariance solver reads a lazily read X twice: the means and X^T X in one pass (they
    took two), then the projection; the result is the in-memory one. The Krylov solver (many genes,
    or 'randomized') reads the means, then X once per product."""
    from _helpers import counted_dask

    adata = _lognorm_hvg(pbmc)
    x = sp.csr_matrix(adata.X[:, adata.var["highly_variable"].to_numpy()], dtype=np.float32)
    lazy, made = counted_dask(x, rows=100)
    got = gsc.pp.pca(lazy, n_comps=20, return_info=True)
    assert sorted(made) == sorted(list(range(lazy.numblocks[0])) * 2)
    for g, w in zip(got, gsc.pp.pca(x, n_comps=20, return_info=True), strict=True):
        assert_close(g, w, dtype=np.float64, n_terms=x.shape[0], out=w.dtype, scale="max")


def test_pca_dask_options(pbmc):
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), "csr", chunks=(64, -1))
    adata.layers["lg"], lazy.layers["lg"] = adata.X, lazy.X
    for kw in [{"chunk_size": 50}, {"chunked": True, "chunk_size": 37, "key_added": "inc"},
               {"layer": "lg", "key_added": "lay", "dtype": "float64"}]:  # fmt: skip
        gsc.pp.pca(adata, **kw)
        gsc.pp.pca(lazy, **kw)
        assert_same_pca(adata, lazy, key=kw.get("key_added", "pca"))
    copy = gsc.pp.pca(lazy, copy=True, n_comps=10)
    assert copy.obsm["X_pca"].shape == (700, 10) and lazy.obsm["X_pca"].shape[1] == 50


def test_pca_dask_mask_var_bounds_n_comps_by_the_genes_kept(pbmc):
    """With mask_var, the Dask matrix's columns are the genes kept (its shape says so): n_comps is
    bounded by them as in memory, and the loadings fill the kept genes only."""
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), "csr")
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[::40] = True  # 20 genes
    for a in (adata, lazy):
        with pytest.raises(ValueError, match=r"n_comps=25: .*min\(n_samples, n_features\)=20"):
            gsc.pp.pca(a, n_comps=25, mask_var=mask)
    for a in (adata, lazy):
        gsc.pp.pca(a, n_comps=10, mask_var=mask)
    assert_same_pca(adata, lazy)

def test_pca_dask_matrix_input(pbmc):
    adata = _lognorm_hvg(pbmc)
    x = adata.X[:, adata.var["highly_variable"].to_numpy()]
    ref = gsc.pp.pca(x, n_comps=20, return_info=True)
    got = gsc.pp.pca(da.from_array(x, chunks=(300, -1), asarray=False), n_comps=20, return_info=True)
    for a, b in zip(ref, got, strict=True):
        assert type(b) is type(a) and b.dtype == a.dtype
        assert_close(b, a, dtype=np.float64, n_terms=x.shape[0], out=a.dtype, scale="max")  # as assert_same_pca
    counts = da.from_array(pbmc.X.astype(np.int32), chunks=(300, -1), asarray=False)  # integers: float64
    assert_close(gsc.pp.pca(counts, n_comps=5), gsc.pp.pca(pbmc.X.astype(np.int32), n_comps=5),
                 dtype=np.float64, n_terms=pbmc.n_obs, scale="max")  # fmt: skip


@pytest.mark.parametrize("zero_center", [True, False], ids=["centred", "svd"])
@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_pca_dask_krylov(pbmc, kind, zero_center):
    """The block Krylov solver ('randomized'; the wide path) over Dask blocks: the same start
    block, so the same answer up to the order of summation."""
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    kw = {"svd_solver": "randomized", "n_comps": 30, "mask_var": None, "zero_center": zero_center}
    gsc.pp.pca(adata, **kw)
    gsc.pp.pca(lazy, **kw)
    assert_close_components(adata, lazy)


def test_pca_dask_wide_few_cells_uses_krylov(pbmc, monkeypatch):
    """More than WIDE_GENES genes and few cells: in memory the exact cell-side solver, on Dask
    the block Krylov solver (the cell-side matrix needs all of X per block); they agree."""
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), "csr")
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 720)
    used = []
    krylov = eigh_mod.krylov_eigh
    monkeypatch.setattr(eigh_mod, "krylov_eigh", lambda *a, **k: used.append(1) or krylov(*a, **k))
    gsc.pp.pca(adata, n_comps=30, mask_var=None)
    assert not used
    gsc.pp.pca(lazy, n_comps=30, mask_var=None)
    assert used
    assert_close_components(adata, lazy)


def test_pca_dask_bad_input_leaves_adata_unchanged(pbmc):
    mem, lazy = lazy_twin(_lognorm_hvg(pbmc), "numpy")
    lazy.X = lazy.X.rechunk((100, 200))  # along genes too: rechunked to whole rows, as scanpy takes it
    gsc.pp.pca(lazy, n_comps=20)
    gsc.pp.pca(mem, n_comps=20)
    assert_close_components(mem, lazy)
    _, lazy = lazy_twin(_lognorm_hvg(pbmc), "csr")
    with pytest.raises(ValueError, match="n_comps"):
        gsc.pp.pca(lazy, n_comps=300)
    assert "X_pca" not in lazy.obsm and "pca" not in lazy.uns and "PCs" not in lazy.varm


def test_neighbors_dask_representation(pbmc, capsys):
    adata = _lognorm_hvg(pbmc)
    gsc.pp.pca(adata)
    lazy = adata.copy()
    lazy.obsm["X_pca"] = da.from_array(adata.obsm["X_pca"], chunks=(250, -1))
    lazy.obsm["rep"] = lazy.obsm["X_pca"]
    adata.obsm["rep"] = adata.obsm["X_pca"]
    for kw in [{}, {"n_pcs": 20, "key_added": "k20"}, {"use_rep": "rep", "method": "gauss", "key_added": "g"}]:
        gsc.pp.neighbors(adata, **kw)
        gsc.pp.neighbors(lazy, **kw)
    assert "into memory" in capsys.readouterr().err
    assert isinstance(lazy.obsm["X_pca"], da.Array)  # the stored representation is not replaced
    for key in adata.obsp:
        a, b = adata.obsp[key], lazy.obsp[key]
        assert type(b) is type(a) and b.dtype == a.dtype
        assert (a != b).nnz == 0
    assert adata.uns["neighbors"] == lazy.uns["neighbors"] and adata.uns["g"] == lazy.uns["g"]


def test_neighbors_dask_x_without_pca(pbmc):
    """No X_pca and a Dask X: pca runs on the Dask X, then the search on its embedding."""
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), "csr")
    gsc.pp.neighbors(adata)
    out = gsc.pp.neighbors(lazy, copy=True)
    assert "X_pca" not in lazy.obsm and isinstance(out.obsm["X_pca"], np.ndarray)
    # the embeddings agree to a float32 step (as assert_same_pca), not bit for bit: distances to
    # float32 sums over the components, relative to the embedding's largest entry; memberships
    # to umap's bisection
    emb = out.obsm["X_pca"]
    assert_close(out.obsp["distances"], adata.obsp["distances"], dtype=np.float32, n_terms=emb.shape[1],
                 scale=float(np.abs(emb).max()))  # fmt: skip
    assert abs(out.obsp["connectivities"] - adata.obsp["connectivities"]).max() <= UMAP_CONN


def test_to_cpu_leaves_host_dask_alone_without_cupy():
    code = (
        "import anndata as ad, dask.array as da, numpy as np, gpu_sc as gsc\n"
        "d = da.from_array(np.ones((10, 3), np.float32), chunks=(4, -1))\n"
        "a = ad.AnnData(d); gsc.get.to_cpu(a); assert a.X is d\n"
        "try:\n    gsc.get.to_gpu(a)\nexcept ImportError as e:\n    print('CuPy' in str(e))\n"
    )
    assert run_without_cupy(code) == "True"


@pytest.mark.parametrize("kind", ["csr", "csc", "numpy"])
def test_to_gpu_dask_is_lazy_blockwise(pbmc, monkeypatch, kind):
    """The mapping to_gpu builds, with numpy / scipy standing in for CuPy (no device here):
    nothing is computed, blocks become CSR / dense, the meta says so."""
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    monkeypatch.setattr(gsc.get, "_cupy", lambda: (np, sp))
    calls, convert = [], gsc.get._gpu_block
    monkeypatch.setattr(gsc.get, "_gpu_block", lambda b: calls.append(1) or convert(b))
    x = gsc.get.to_gpu(lazy, copy=True).X
    assert not calls and x.chunks == lazy.X.chunks and x.dtype == lazy.X.dtype
    assert x._meta.ndim == 2 and x._meta.shape[0] == 0  # (Dask trims the meta to (0, 0))
    assert sp.issparse(x._meta) == (kind != "numpy") and (kind == "numpy" or x._meta.format == "csr")
    block = x.blocks[1].compute()
    assert len(calls) == 1 and (kind == "numpy" or block.format == "csr")
    np.testing.assert_array_equal(to_host(block), to_host(adata.X[101:451]))


def test_to_gpu_dask_of_integer_sparse_blocks_says_float32(pbmc, monkeypatch):
    """Integer sparse blocks become float32 on the GPU (cupyx holds no integers): the lazy
    array's dtype and meta say so before anything is computed, as its blocks will be."""
    monkeypatch.setattr(gsc.get, "_cupy", lambda: (np, sp))
    counts = sp.csr_matrix(pbmc.X, dtype=np.int32)
    x = gsc.get.array_to_gpu(da.from_array(counts, chunks=CHUNKS, asarray=False))
    assert x.dtype == np.float32 and x._meta.dtype == np.float32 and sp.issparse(x._meta)
    block = x.blocks[3].compute()
    assert block.dtype == x.dtype and block.format == "csr"
    np.testing.assert_array_equal(block.toarray(), counts[452:].toarray())

@pytest.mark.parametrize("kind", ["csr", "csc", "numpy"])
def test_to_gpu_to_cpu_dask_round_trip(device, pbmc, kind):
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    lazy.layers["c"] = lazy.X
    lazy.obsm["e"] = da.from_array(np.arange(1400.0).reshape(700, 2), chunks=(300, -1))
    gpu = gsc.get.to_gpu(lazy, copy=True)
    for x in (gpu.X, gpu.layers["c"], gpu.obsm["e"]):
        assert isinstance(x, da.Array) and x.chunks[0] == (CHUNKS[0] if x.shape[1] > 2 else (300, 300, 100))
    want = cpsp.csr_matrix if kind != "numpy" else cp.ndarray
    assert isinstance(gpu.X._meta, want) and isinstance(gpu.X.blocks[1].compute(), want)
    assert isinstance(gpu.obsm["e"]._meta, cp.ndarray)
    back = gsc.get.to_cpu(gpu, copy=True)
    assert not isinstance(back.X._meta, (cp.ndarray, cpsp.spmatrix))
    np.testing.assert_array_equal(to_host(back.X.compute()), to_host(adata.X))
    np.testing.assert_array_equal(back.obsm["e"].compute(), lazy.obsm["e"].compute())
    assert gsc.get.to_gpu(gpu, copy=True).X.name == gpu.X.name  # already on the GPU: unchanged


@pytest.mark.parametrize("zero_center", [True, False], ids=["centred", "svd"])
@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_pca_dask_gpu_blocks_equal_cpu(device, pbmc, kind, zero_center):
    import cupy as cp

    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    gpu = gsc.get.to_gpu(lazy, copy=True)
    gsc.pp.pca(adata, zero_center=zero_center)
    gsc.pp.pca(gpu, zero_center=zero_center)
    assert isinstance(gpu.obsm["X_pca"], cp.ndarray) and isinstance(gpu.varm["PCs"], cp.ndarray)
    assert_close_components(adata, gpu, rtol=None)  # exact eigh on both: float32 data, no Krylov
    for kw in [{"svd_solver": "randomized", "n_comps": 20, "key_added": "r"}]:
        gsc.pp.pca(adata, **kw)
        gsc.pp.pca(gpu, **kw)
        assert_close_components(adata, gpu, key="r")
    # neighbors on a Dask embedding of cupy blocks: the graph of the in-memory cupy embedding
    lazy_rep = gpu.copy()
    lazy_rep.obsm["X_pca"] = da.from_array(gpu.obsm["X_pca"], chunks=(300, -1), asarray=False)
    gsc.pp.neighbors(gpu)
    gsc.pp.neighbors(lazy_rep)
    for key in gpu.obsp:
        a, b = gpu.obsp[key], lazy_rep.obsp[key]
        assert type(b) is type(a) and b.dtype == a.dtype
        np.testing.assert_array_equal(to_host(b), to_host(a))


@pytest.mark.parametrize("step", ["pca", "normalize_total", "log1p", "highly_variable_genes", "score_genes"])
@pytest.mark.parametrize("case", ["gpu_blocks_host_meta", "host_blocks_gpu_meta"])
@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_blocks_on_another_device_than_the_meta_are_refused(device, pbmc, kind, case, step):
    """A Dask array whose blocks live on another device than its meta says: a TypeError naming
    both (it failed after a whole pass with CuPy's 'implicit conversion' or a host/device mix),
    and the AnnData is unchanged."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    if step == "score_genes" and (kind, case) != ("numpy", "gpu_blocks_host_meta"):
        pytest.skip("score_genes takes other blocks' sums to the host wherever they lie (no mix)")
    adata, lazy = lazy_twin(_lognorm_hvg(pbmc), kind)
    sparse = kind != "numpy"
    host_meta = sp.csr_matrix((0, 0), dtype=np.float32) if sparse else np.empty((0, 0), np.float32)
    gpu_meta = cpsp.csr_matrix((0, 0), dtype=np.float32) if sparse else cp.empty((0, 0), np.float32)
    to_gpu = cpsp.csr_matrix if sparse else cp.asarray
    if case == "gpu_blocks_host_meta":
        lazy.X = lazy.X.map_blocks(to_gpu, dtype=np.float32, meta=host_meta)
    else:
        lazy.X = lazy.X.map_blocks(lambda b: b.copy(), dtype=np.float32, meta=gpu_meta)
    before = lazy.copy()
    with pytest.raises(TypeError, match=r"a block of the Dask array is a .* array where the array's meta is a"):
        {"pca": lambda: gsc.pp.pca(lazy, n_comps=5),
         "normalize_total": lambda: gsc.pp.normalize_total(lazy),
         "log1p": lambda: gsc.pp.log1p(lazy, copy=True).X.compute(),
         "highly_variable_genes": lambda: gsc.pp.highly_variable_genes(lazy, n_top_genes=50),
         "score_genes": lambda: gsc.tl.score_genes(lazy, list(lazy.var_names[:5]))}[step]()
    assert lazy.X.name == before.X.name and list(lazy.obsm) == list(before.obsm) and list(lazy.uns) == list(before.uns)
    assert list(lazy.var.columns) == list(before.var.columns) and list(lazy.obs.columns) == list(before.obs.columns)
