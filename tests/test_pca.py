"""pca agrees with scanpy's sc.pp.pca on real data: variance ratios, components (with signs),
embedding; mask_var / HVG, zero_center=False, edge cases."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import KRYLOV_SIN, KRYLOV_VAR, assert_close, cells_for, reorder_tol, to_host

import gpu_sc as gsc
import gpu_sc.preprocessing._pca as pca_mod
from gpu_sc import _ops
from gpu_sc._ops import eigh as eigh_mod
from gpu_sc._ops import gram as gram_mod
from gpu_sc.preprocessing._pca import pca

N_CHECK = 20


def _lognorm(adata, hvg=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        if hvg:
            sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=300)
    return adata


def _separated(variance):
    """Components whose eigenvalue is not within 1e-3 (relative) of a neighbour's."""
    v = np.asarray(variance, dtype=np.float64)
    ok = np.ones(v.size, bool)
    rel = np.abs(np.diff(v)) / np.maximum(v[:-1], 1e-300)
    ok[:-1] &= rel > 1e-3
    ok[1:] &= rel > 1e-3
    return ok


def assert_pca_like(ref, got, ref_key="pca", got_key="pca", obsm=("X_pca", "X_pca"), varm=("PCs", "PCs"),
                    solver_rtol=0.0):  # fmt: skip
    """Variances: scanpy (scikit-learn) decomposes float32 data's covariance in float32, so sums
    over cells in the variances' dtype, relative to the largest eigenvalue (Weyl); solver_rtol
    for an iterative solver's own accuracy on top."""
    r, g = ref.uns[ref_key], got.uns[got_key]
    n = min(N_CHECK, r["variance"].size)
    for k in ("variance_ratio", "variance"):
        tol = reorder_tol(r[k].dtype, ref.n_obs)
        np.testing.assert_allclose(g[k][:n], r[k][:n], rtol=max(tol, solver_rtol), atol=tol * np.abs(r[k]).max(),
                                   err_msg=k)  # fmt: skip
    assert g["variance"].dtype == r["variance"].dtype and g["variance_ratio"].dtype == r["variance_ratio"].dtype
    pr, pg = to_host(ref.varm[varm[0]]), to_host(got.varm[varm[1]])
    assert pg.shape == pr.shape and pg.dtype == pr.dtype
    xr, xg = to_host(ref.obsm[obsm[0]]), to_host(got.obsm[obsm[1]])
    assert xg.shape == xr.shape and xg.dtype == xr.dtype
    ok = _separated(r["variance"])[:n]
    assert ok.sum() >= min(5, n)
    for i in np.flatnonzero(ok):
        cos = pr[:, i] @ pg[:, i] / (np.linalg.norm(pr[:, i]) * np.linalg.norm(pg[:, i]))
        assert cos >= 0.9999, (i, cos)  # same direction, same sign
        corr = np.corrcoef(xr[:, i], xg[:, i])[0, 1]
        assert corr >= 0.9999, (i, corr)
    assert g["params"].keys() == r["params"].keys()
    for k, v in r["params"].items():
        if k == "use_highly_variable":  # scanpy stores an all-False array for an array mask_var
            assert g["params"][k] is bool(np.any(v))
            continue
        assert np.array_equal(g["params"][k], v) if isinstance(v, np.ndarray) else g["params"][k] == v


@pytest.mark.parametrize("hvg", [False, True], ids=["all-genes", "hvg"])
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_pca_matches_scanpy(counts, dense, hvg):
    adata = _lognorm(counts, hvg=hvg)
    if dense:
        adata.X = adata.X.toarray()
    ref, got = adata.copy(), adata.copy()
    sc.pp.pca(ref)
    pca(got)
    assert_pca_like(ref, got)
    if hvg:
        masked = ~adata.var["highly_variable"].to_numpy()
        assert np.all(got.varm["PCs"][masked] == 0)


def test_randomized_and_wide_paths(pbmc, monkeypatch):
    adata = _lognorm(pbmc)
    ref = adata.copy()
    sc.pp.pca(ref, n_comps=30)
    with pytest.warns(UserWarning, match=r"Ignoring svd_solver='randomized' and using arpack"):  # as scanpy, for sparse X
        pca(adata, n_comps=30, svd_solver="randomized", key_added="rand")
    assert_pca_like(ref, adata, got_key="rand", obsm=("X_pca", "rand"), varm=("PCs", "rand"))
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 100)  # the default path for wide matrices
    pca(adata, n_comps=30, key_added="wide")
    assert_pca_like(ref, adata, got_key="wide", obsm=("X_pca", "wide"), varm=("PCs", "wide"))
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 720)  # more genes than that, but fewer cells
    pca(adata, n_comps=30, key_added="cells")
    assert_pca_like(ref, adata, got_key="cells", obsm=("X_pca", "cells"), varm=("PCs", "cells"))
    ref0 = adata.copy()
    sc.pp.pca(ref0, n_comps=30, zero_center=False, svd_solver="arpack", key_added="z")
    pca(adata, n_comps=30, zero_center=False, key_added="z")
    assert_pca_like(ref0, adata, "z", "z", ("z", "z"), ("z", "z"))


def test_fewer_cells_than_genes_take_the_cell_side(pbmc, monkeypatch):
    """Fewer cells than genes, under WIDE_GENES genes too (700 x 765 here; 302 tumour cells x
    2,000 HVGs: a 302-square eigenproblem, not a 2,000-square one): the cell-side solver, with
    scanpy's result; more cells than genes: the covariance."""
    from gpu_sc._ops import eigh

    calls = []
    cell_side = eigh.cell_side_eigh
    monkeypatch.setattr(eigh, "cell_side_eigh", lambda p, *a: calls.append(p.shape) or cell_side(p, *a))
    adata = _lognorm(pbmc)
    assert adata.n_obs < adata.n_vars <= pca_mod.WIDE_GENES
    for x in (adata, adata[:, : adata.n_obs - 100].copy()):
        ref = x.copy()
        sc.pp.pca(ref, n_comps=30)
        calls.clear()
        pca(x, n_comps=30)
        assert calls == ([x.shape] if x.n_obs < x.n_vars else [])
        assert_pca_like(ref, x)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_cell_side_of_fewer_distinct_cells_than_components(pbmc, dense):
    """10 distinct cells, each 30 times, 20 components: the cell-side solver's directions beyond
    the matrix's rank (zero variance) are an orthonormal completion, so the loadings stay
    orthonormal as scanpy's (A^T u / s of a round-off s gave columns of norm ~0); the ranked
    components are scanpy's and the others' scores 0."""
    x = np.repeat(_lognorm(pbmc).X[:10].toarray(), 30, axis=0)
    got, ref = ad.AnnData(x if dense else sp.csr_matrix(x)), ad.AnnData(x.copy())
    pca(got, n_comps=20)
    sc.pp.pca(ref, n_comps=20, svd_solver="arpack")
    loadings = got.varm["PCs"].astype(np.float64)
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(20), atol=1e-6)
    np.testing.assert_allclose(np.abs(got.obsm["X_pca"][:, :9]), np.abs(ref.obsm["X_pca"][:, :9]), atol=2e-4)
    assert np.abs(got.obsm["X_pca"][:, 9:]).max() < 1e-6
    np.testing.assert_allclose(got.uns["pca"]["variance"], ref.uns["pca"]["variance"], atol=1e-4)
    # one cell repeated, centred: every singular value is round-off, the largest too (judged
    # against ||X||, not against it); every direction a completion, every score 0
    one = ad.AnnData(np.repeat(x[:1], 40, axis=0) if dense else sp.csr_matrix(np.repeat(x[:1], 40, axis=0)))
    pca(one, n_comps=10)
    loadings = one.varm["PCs"].astype(np.float64)
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(10), atol=1e-6)
    assert np.abs(one.obsm["X_pca"]).max() < 1e-6


def test_no_centring_matches_truncated_svd(pbmc):
    adata = _lognorm(pbmc)
    ref = adata.copy()
    # scanpy's default TruncatedSVD solver is a 5-iteration randomized approximation; its
    # 'arpack' solver is exact, and that is what we match
    sc.pp.pca(ref, zero_center=False, svd_solver="arpack", n_comps=20)
    pca(adata, zero_center=False, n_comps=20)
    assert_pca_like(ref, adata)
    assert isinstance(adata.X, sp.csr_matrix)  # sparse input stays sparse


def test_constant_and_zero_genes(pbmc):
    adata = _lognorm(pbmc)
    x = adata.X.tolil()
    x[:, 3] = 0
    x[:, 7] = 1.5
    adata.X = x.tocsr()
    ref = adata.copy()
    sc.pp.pca(ref, n_comps=15)
    pca(adata, n_comps=15)
    assert np.all(np.isfinite(adata.obsm["X_pca"]))
    assert_pca_like(ref, adata)
    zeros = adata.varm["PCs"][[3, 7]]  # entries of unit vectors: float64 rounding, one float32 step
    assert_close(zeros, np.zeros_like(zeros), dtype=np.float64, n_terms=adata.n_vars, out=zeros.dtype, scale=1.0)


def test_too_many_components(pbmc):
    small = _lognorm(pbmc)[:20].copy()
    with pytest.raises(ValueError):
        sc.pp.pca(small.copy(), n_comps=25)
    before = small.copy()
    with pytest.raises(ValueError, match="n_comps=25"):
        pca(small, n_comps=25)
    # scikit-learn's words, which scanpy's tests match (tests/test_pca.py::test_pca_shapes)
    with pytest.raises(ValueError, match=r"n_components=25 must be between 1 and.*20 with svd_solver='arpack'"):
        pca(small, n_comps=25)
    assert set(small.obsm) == set(before.obsm) and "pca" not in small.uns
    pca(small)  # the default: min(n_cells, n_genes) - 1
    assert small.obsm["X_pca"].shape == (20, 19)
    with pytest.raises(ValueError, match=r"n_components=20 must be strictly less than .*=20 with svd_solver='arpack'"):
        pca(small.copy(), n_comps=20)  # arpack, scanpy's default: at most min - 1
    small.X = small.X.toarray()  # scanpy takes 'full' for dense data only (arpack for sparse)
    ref, got = small.copy(), small.copy()
    sc.pp.pca(ref, n_comps=20, svd_solver="full")  # scikit-learn's exact solver takes them all
    pca(got, n_comps=20, svd_solver="full")
    assert got.obsm["X_pca"].shape == ref.obsm["X_pca"].shape == (20, 20)
    # the 20th component of 20 centred cells has no variance: compare the 19 others
    np.testing.assert_allclose(got.uns["pca"]["variance"][:19], ref.uns["pca"]["variance"][:19], rtol=1e-4)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_scanpy_solver_dtypes(pbmc, dense):
    """scanpy's incremental PCA (chunked) and sparse lobpcg solver store float64 variances and
    (lobpcg; chunked past one chunk) loadings; the same dtypes here (the values are the exact
    PCA, which scanpy's incremental PCA only approximates). chunked alone: 6,000-row chunks."""
    adata = _lognorm(pbmc)
    if dense:
        adata.X = adata.X.toarray()
    for kwargs in ({"svd_solver": "lobpcg"}, {"chunked": True, "chunk_size": 200}, {"chunked": True}):
        ref, got = adata.copy(), adata.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.pca(ref, n_comps=10, **kwargs)
            pca(got, n_comps=10, **kwargs)  # scanpy's solver warnings too (test_solver_warnings_are_scanpys)
        dtypes = [(a.varm["PCs"].dtype, a.uns["pca"]["variance"].dtype, a.uns["pca"]["variance_ratio"].dtype,
                   a.obsm["X_pca"].dtype) for a in (ref, got)]  # fmt: skip
        assert dtypes[0] == dtypes[1], (kwargs, dtypes)
    exact = adata.copy()
    pca(exact, n_comps=10)
    ex = exact.uns["pca"]["variance"]  # the same covariance summed in row blocks (float64), then stored as ex's dtype
    assert_close(got.uns["pca"]["variance"], ex, dtype=np.float64, n_terms=adata.n_obs, out=ex.dtype, scale="max")


def test_missing_mask_column_is_a_value_error(pbmc):
    """As scanpy: ValueError (not KeyError) for a mask_var or highly_variable column that is not there."""
    adata = _lognorm(pbmc)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"Did not find `adata\.var\['nope'\]`.*not a column of adata.var"):
        pca(adata, mask_var="nope")
    # scanpy's FutureWarning first, then its error (scanpy's tests/test_pca.py::test_mask_highly_var_error)
    with (
        pytest.warns(FutureWarning, match=r"Argument `use_highly_variable` is deprecated, consider using the mask"),
        pytest.raises(ValueError, match=r"Did not find `adata\.var\['highly_variable'\]`\."),
    ):
        pca(adata, use_highly_variable=True)
    assert set(adata.obsm) == set(before.obsm) and "pca" not in adata.uns


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_raise(pbmc, bad):
    """As scanpy (through scikit-learn): NaN or inf is an error, not a NaN embedding."""
    adata = _lognorm(pbmc)
    adata.X.data[7] = bad
    before = adata.obsm["X_pca"].copy()  # the bundled embedding
    with pytest.raises(ValueError, match="1 non-finite values"):
        pca(adata, n_comps=5)
    np.testing.assert_array_equal(adata.obsm["X_pca"], before)
    assert "pca" not in adata.uns


def test_non_finite_values_outside_mask_var_are_ignored(pbmc):
    """As scanpy: only the genes the PCA uses are checked; the result is that of the mask alone."""
    adata = _lognorm(pbmc)
    bad_gene = int(adata.X.indices[7])
    mask = np.ones(adata.n_vars, dtype=bool)
    mask[bad_gene] = False
    ref = pca(adata, n_comps=5, mask_var=mask, copy=True)
    adata.X.data[adata.X.indices == bad_gene] = np.nan
    pca(adata, n_comps=5, mask_var=mask)
    np.testing.assert_array_equal(adata.obsm["X_pca"], ref.obsm["X_pca"])
    with pytest.raises(ValueError, match="non-finite values"):
        pca(adata, n_comps=5, mask_var=None)


def test_options(pbmc):
    adata = _lognorm(pbmc)
    adata.layers["lg"] = adata.X.copy()
    mask = np.arange(adata.n_vars) % 2 == 0
    ref = adata.copy()
    sc.pp.pca(ref, n_comps=10, mask_var=mask, layer="lg", dtype="float64")
    got = pca(adata, n_comps=10, mask_var=mask, layer="lg", dtype="float64", copy=True)
    assert "pca" not in adata.uns
    assert_pca_like(ref, got)
    # chunk_size only changes the blocking; int64 index pointers give the same result
    x = adata.X
    emb, comps, ratio, var = pca(x, 10, return_info=True)
    x64 = sp.csr_matrix((x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)), shape=x.shape)
    emb2, comps2, ratio2, var2 = pca(x64, 10, chunked=True, chunk_size=97, return_info=True)
    # the same float64 sums over cells in another blocking; float32 results one step either side
    for a, b in ((emb2, emb), (comps2, comps), (ratio2, ratio)):
        assert_close(a, b, dtype=np.float64, n_terms=x.shape[0], out=b.dtype, scale="max" if b.ndim == 2 else None)
    assert comps.shape == (10, adata.n_vars) and emb.dtype == np.float32


def test_gram_blocks_equal_dense(brain):
    x = brain.X[:3000]
    dense = x.toarray().astype(np.float64)
    g = gram_mod.gram(_ops.parts(x), chunk_size=333)
    assert_close(g, dense.T @ dense, dtype=np.float64, n_terms=x.shape[0])  # non-negative terms
    assert_close(gram_mod.gram(_ops.parts(dense)), g, dtype=np.float64, n_terms=x.shape[0])


@pytest.mark.parametrize("zero_center", [True, False])
@pytest.mark.parametrize("dense", [False, True])
def test_pca_gpu_equals_cpu(device, brain, dense, zero_center):
    import cupy as cp

    import gpu_sc as gsc

    adata = _lognorm(cells_for(device, brain, 1500), hvg=True)
    if dense:
        adata.X = adata.X.toarray()
    gpu = gsc.get.to_gpu(adata, copy=True)
    pca(adata, zero_center=zero_center)
    pca(gpu, zero_center=zero_center)
    assert isinstance(gpu.obsm["X_pca"], cp.ndarray) and isinstance(gpu.varm["PCs"], cp.ndarray)
    assert_pca_like(adata, gpu)


@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("value", [np.float32, np.float64])
def test_gram_gpu_index_types(device, brain, index, value):
    import cupy as cp

    x = sp.csr_matrix(cells_for(device, brain, 1200).X, dtype=value)
    p = _ops.Parts(*(cp.asarray(a) for a in (x.data, x.indices.astype(index), x.indptr.astype(index))), x.shape)
    ref = gram_mod.gram(_ops.parts(x))
    # float64 sums (of non-negative terms unless centred or against v: then relative to the largest)
    n_obs, n_vars = x.shape
    assert_close(gram_mod.gram(p, chunk_size=1001), ref, dtype=np.float64, n_terms=n_obs)
    v = np.linspace(-1, 1, x.shape[1] * 3).reshape(-1, 3)
    mean = np.asarray(x.mean(0)).ravel()
    ref_c = gram_mod.centred_normal_apply(_ops.parts(x), v, mean)
    mag = (abs(x).T @ (abs(x) @ np.abs(v)) + n_obs * np.abs(mean)[:, None] * (np.abs(mean) @ np.abs(v))).max()
    assert_close(gram_mod.centred_normal_apply(p, cp.asarray(v), cp.asarray(mean), chunk_size=777), ref_c,
                 dtype=np.float64, n_terms=n_obs + n_vars, scale=mag)  # fmt: skip
    assert_close(gram_mod.transpose_apply(p, cp.ones((x.shape[0], 2)), chunk_size=333),
                 gram_mod.transpose_apply(_ops.parts(x), np.ones((x.shape[0], 2))), dtype=np.float64, n_terms=n_obs)  # fmt: skip
    small = _ops.Parts(*(cp.asarray(a) for a in (x[:900].data, x[:900].indices.astype(index), x[:900].indptr.astype(index))), (900, x.shape[1]))
    assert_close(gram_mod.cell_gram(small, chunk_size=250), gram_mod.cell_gram(_ops.parts(x[:900])),
                 dtype=np.float64, n_terms=n_vars)  # fmt: skip
    assert_close(gram_mod.project(p, cp.asarray(v), None, chunk_size=500), gram_mod.project(_ops.parts(x), v),
                 dtype=np.float64, n_terms=n_vars, scale=(abs(x) @ np.abs(v)).max())  # fmt: skip


def test_pca_gpu_wide_path(device, pbmc, monkeypatch):
    import gpu_sc as gsc

    adata = _lognorm(pbmc)
    gpu = gsc.get.to_gpu(adata, copy=True)
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 100)
    pca(adata, n_comps=20)
    pca(gpu, n_comps=20)
    assert_pca_like(adata, gpu)


def test_cell_side_completion_on_gpu(device, pbmc):
    """The orthonormal completion beyond the rank on the device: cupy's QR, the same loadings'
    orthonormality and the ranked components as the CPU's."""
    import gpu_sc as gsc

    x = np.repeat(_lognorm(pbmc).X[:10].toarray(), 30, axis=0)
    adata = ad.AnnData(sp.csr_matrix(x))
    gpu = gsc.get.to_gpu(adata, copy=True)
    pca(adata, n_comps=20)
    pca(gpu, n_comps=20)
    loadings = gpu.varm["PCs"].get().astype(np.float64)
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(20), atol=1e-6)
    np.testing.assert_allclose(np.abs(gpu.obsm["X_pca"].get()[:, :9]), np.abs(adata.obsm["X_pca"][:, :9]), atol=1e-4)
    assert np.abs(gpu.obsm["X_pca"].get()[:, 9:]).max() < 1e-6


def test_cell_gram_and_transpose_apply(pbmc):
    x = pbmc.X[:300]
    dense = x.toarray().astype(np.float64)
    assert_close(gram_mod.cell_gram(_ops.parts(x), chunk_size=77), dense @ dense.T, dtype=np.float64, n_terms=x.shape[1])
    u = np.linspace(-1, 1, 600).reshape(300, 2)
    assert_close(gram_mod.transpose_apply(_ops.parts(x), u, chunk_size=50), dense.T @ u, dtype=np.float64,
                 n_terms=x.shape[0], scale=(np.abs(dense).T @ np.abs(u)).max())  # fmt: skip


# --- block Krylov solver for > WIDE_GENES cells and genes ---------------------------------------


def _count_passes(monkeypatch):
    """Count the solver's passes over X (applications of the centred normal operator)."""
    calls = [0]
    apply = gram_mod.centred_normal_apply

    def counted(*args, **kwargs):
        calls[0] += 1
        return apply(*args, **kwargs)

    monkeypatch.setattr(gram_mod, "centred_normal_apply", counted)
    return calls


def test_krylov_wide_real_matrix(monkeypatch):
    """SoupX PBMC, 2170 cells x 33694 genes (15326 of them all zero) through the block Krylov
    solver (thresholds lowered): scanpy's arpack parity, and the exact cell-side eigh path."""
    from _helpers import SHARED

    path = SHARED / "soupx_pbmc4k_half.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not present")
    import anndata as ad

    from threadpoolctl import threadpool_limits

    adata = ad.read_h5ad(path)
    adata = _lognorm(ad.AnnData(sp.csr_matrix(adata.X, dtype=np.float32)))
    ref = adata.copy()
    # one BLAS thread: on a busy shared machine, threaded BLAS on these many mid-sized products
    # can wait on descheduled threads for ten times the work (7 s here, 80 s threaded)
    with threadpool_limits(limits=1, user_api="blas"):
        sc.pp.pca(ref, svd_solver="arpack")  # 50 components
        pca(adata, key_added="exact")  # 2170 <= 8000 cells: the exact cell-side eigendecomposition
        passes = _count_passes(monkeypatch)
        monkeypatch.setattr(pca_mod, "WIDE_GENES", 2000)
        pca(adata)
    assert 0 < passes[0] <= 40  # the subspace iteration this replaces needed 60
    assert_pca_like(ref, adata, solver_rtol=KRYLOV_VAR)
    # against the exact path: all 50 values, every separated direction (but the last)
    exact, got = adata.uns["exact"]["variance"], adata.uns["pca"]["variance"]
    np.testing.assert_allclose(got, exact, rtol=KRYLOV_VAR)
    pe, pg = adata.varm["exact"], adata.varm["PCs"]
    cos = np.sum(pe * pg, axis=0) / (np.linalg.norm(pe, axis=0) * np.linalg.norm(pg, axis=0))
    ok = _separated(exact)[:-1]
    assert ok.sum() >= 40
    assert np.all(cos[:-1][ok] >= 0.99999), cos[:-1][ok].min()


def test_krylov_no_centring_and_chunks(pbmc, monkeypatch):
    adata = _lognorm(pbmc)
    ref = adata.copy()
    sc.pp.pca(ref, n_comps=20, zero_center=False, svd_solver="arpack")
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 100)
    got = adata.copy()
    pca(got, n_comps=20, zero_center=False)
    assert_pca_like(ref, got, solver_rtol=KRYLOV_VAR)
    # row blocks of any size give the same components; int64 indices too
    x = adata.X
    emb, comps, ratio, _ = pca(x, 20, return_info=True)
    x64 = sp.csr_matrix((x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)), shape=x.shape)
    emb2, comps2, ratio2, _ = pca(x64, 20, chunked=True, chunk_size=61, return_info=True)
    # the same start block and float64 sums in another blocking; float32 ratios one step either side
    assert_close(ratio2, ratio, dtype=np.float64, n_terms=x.shape[0], out=ratio.dtype)
    cos = np.abs(np.sum(comps * comps2, axis=1))  # a float32 sum over genes
    assert_close(cos, np.ones_like(cos), dtype=comps.dtype, n_terms=comps.shape[1])


def test_krylov_small_edge_cases(pbmc, monkeypatch):
    adata = _lognorm(pbmc)
    x = adata.X[:, :25].tocsr()  # too few genes for a basis: the tiny covariance is decomposed
    monkeypatch.setattr(pca_mod, "WIDE_GENES", 10)
    assert eigh_mod._krylov_sizes(5, 25, None, None)[0] is None
    ref = sc.AnnData(x.copy())
    sc.pp.pca(ref, n_comps=5, svd_solver="arpack")
    emb, comps, ratio, _ = pca(x, 5, return_info=True)
    r = ref.uns["pca"]["variance_ratio"]  # scanpy's arpack in float32: sums over cells, relative to the largest
    assert_close(ratio, r, dtype=r.dtype, n_terms=x.shape[0], scale="max")
    p = _ops.parts(adata.X)
    mean, _ = _ops.col_mean_var(p, ddof=1)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        eigh_mod.krylov_eigh(p, 20, np.asarray(mean), 0, None, max_passes=3)
    # a rank-deficient operator (40 cells): the Krylov space becomes invariant
    few = adata.X[:40]
    pf = _ops.parts(few)
    mf, _ = _ops.col_mean_var(pf, ddof=1)
    w, v, passes = eigh_mod.krylov_eigh(pf, 10, np.asarray(mf), 0, None)
    dense = few.toarray().astype(np.float64)
    dense -= dense.mean(0)
    exact = np.linalg.svd(dense, compute_uv=False)[:10] ** 2 / 39
    # an invariant Krylov space: exact but for float64 rounding in sums over genes, relative to the largest
    assert_close(w, exact, dtype=np.float64, n_terms=few.shape[1], scale="max")
    assert_close(v.T @ v, np.eye(10), dtype=np.float64, n_terms=few.shape[1], scale=1.0)


def test_orthonormalize_and_product_ranges(brain, monkeypatch):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3000, 12)) * np.logspace(0, -9, 12)
    for a in (w, np.c_[w[:, :5], w[:, :1], w[:, 6:]]):  # graded columns; a repeated column
        q, r = eigh_mod._orthonormalize(a)
        # float64 sums over the 3000 rows, relative to unit columns / the largest entry
        assert_close(q.T @ q, np.eye(12), dtype=np.float64, n_terms=a.shape[0], scale=1.0)
        assert_close(q @ r, a, dtype=np.float64, n_terms=a.shape[1], scale="max")
        assert np.allclose(np.triu(r), r)
    x = brain.X[:2000]
    p = _ops.parts(x)
    monkeypatch.setattr(gram_mod, "BLOCK_BYTES", 40_000)  # many uneven blocks
    ranges = gram_mod.product_ranges(p, 7)
    assert len(ranges) > 5 and ranges[0][0] == 0 and ranges[-1][1] == x.shape[0]
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    q = rng.standard_normal((x.shape[1], 7))
    mean = np.asarray(x.mean(0)).ravel().astype(np.float64)
    dense = x.toarray().astype(np.float64) - mean
    want = dense.T @ (dense @ q)  # float64 sums over genes then cells, relative to the terms' magnitude
    mag = (np.abs(dense).T @ (np.abs(dense) @ np.abs(q))).max()
    for chunk in (None, 97):
        assert_close(gram_mod.centred_normal_apply(p, q, mean, chunk), want, dtype=np.float64,
                     n_terms=sum(x.shape), scale=mag)  # fmt: skip


def test_krylov_gpu_equals_cpu(device, pbmc):
    import cupy as cp
    import cupyx.scipy.sparse as csp

    x = _lognorm(pbmc).X
    for rows, k in ((slice(None), 20), (slice(0, 40), 10)):  # full rank; rank-deficient (invariant)
        xs = x[rows]
        p, pg = _ops.parts(xs), _ops.parts(csp.csr_matrix(xs))
        mean = np.asarray(_ops.col_mean_var(p, ddof=1)[0])
        w, v, _ = eigh_mod.krylov_eigh(p, k, mean, 0, None)
        wg, vg, _ = eigh_mod.krylov_eigh(pg, k, cp.asarray(mean), 0, None)
        assert isinstance(vg, cp.ndarray)
        # the same solver; another summation order may stop it a pass apart: each within its accuracy
        np.testing.assert_allclose(to_host(wg), w, rtol=2 * KRYLOV_VAR)
        ok = _separated(w)
        np.testing.assert_allclose(np.abs(np.sum(to_host(vg) * v, axis=0))[ok], 1, atol=(2 * KRYLOV_SIN) ** 2 / 2)
    a = cp.asarray(np.random.default_rng(0).standard_normal((3000, 12)) * np.logspace(0, -9, 12))
    q, r = eigh_mod._orthonormalize(a)
    assert_close(q.T @ q, np.eye(12), dtype=np.float64, n_terms=a.shape[0], scale=1.0)
    assert_close(q @ r, a, dtype=np.float64, n_terms=a.shape[1], scale="max")


# scanpy's tests/test_pca.py matrix (test_pca_warnings): 6 cells x 5 genes
_A = np.array([[0, 0, 7, 0, 0], [8, 5, 0, 2, 0], [6, 0, 0, 2, 5], [0, 0, 0, 1, 0], [8, 8, 2, 1, 0], [0, 0, 0, 4, 5]],
              dtype=np.float32)  # fmt: skip
_SOLVERS = (None, "arpack", "randomized", "auto", "full", "covariance_eigh", "tsqr", "lobpcg")


def _warnings_of(fn, x, **kwargs):
    """(category name, message) of each warning `fn(AnnData(x), **kwargs)` gives, and its error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn(ad.AnnData(x), **kwargs)
            error = None
        except ValueError as e:
            error = type(e).__name__
    seen = [(w.category.__name__, str(w.message)) for w in caught
            if w.category is not ad.ImplicitModificationWarning and "LOBPCG" not in str(w.message)]  # fmt: skip
    return seen, error


@pytest.mark.parametrize("zero_center", [True, False], ids=["centred", "svd"])
@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_solver_warnings_are_scanpys(kind, zero_center):
    """The same warnings as scanpy (category and text), for every solver name: "Ignoring
    svd_solver=... and using ..." where scanpy's implementation for that input does not take it,
    the FutureWarning for sparse 'lobpcg', none for the names it takes (scanpy's test runs those
    with warnings as errors). Our result does not depend on the name."""
    x = {"dense": _A, "csr": sp.csr_matrix(_A), "csc": sp.csc_matrix(_A)}[kind]
    warned = 0
    for solver in _SOLVERS:
        ref = _warnings_of(sc.pp.pca, x, svd_solver=solver, zero_center=zero_center)
        got = _warnings_of(pca, x, svd_solver=solver, zero_center=zero_center)
        assert got == ref, solver
        warned += bool(ref[0])
    assert warned >= 2  # the table has warning cases for each kind


def test_solver_warnings_sparse_dask_are_scanpys():
    """Sparse Dask blocks: scanpy ignores `random_state` and every solver but 'covariance_eigh', and says so."""
    import dask.array as da

    lazy = da.from_array(np.vstack([_A] * 4), chunks=(6, -1)).map_blocks(
        sp.csr_matrix, meta=sp.csr_matrix((0, 0), dtype=np.float32))  # fmt: skip
    cases = {"quiet": ({}, {"svd_solver": "covariance_eigh"}), "warns": ({"svd_solver": "randomized"},
                                                                       {"random_state": 14})}  # fmt: skip
    for outcome, calls in cases.items():
        for kwargs in calls:
            ref = _warnings_of(sc.pp.pca, lazy, n_comps=3, **kwargs)
            got = _warnings_of(pca, lazy, n_comps=3, **kwargs)
            assert got == ref and bool(got[0]) == (outcome == "warns"), kwargs


@pytest.mark.parametrize("kind", ["dense", "csr", "dask"])
def test_defaults_and_neighbors_pca_do_not_warn(pbmc, kind):
    """Our own calls of pca (defaults; neighbors' PCA when X_pca exists; the CLI's) give no
    solver warning: only a solver the caller names can warn."""
    import dask.array as da

    adata = _lognorm(pbmc)
    if kind == "dense":
        adata.X = adata.X.toarray()
    elif kind == "dask":
        adata.X = da.from_array(adata.X, chunks=(200, -1), asarray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pca(adata, n_comps=20)
        pca(adata, n_comps=20, zero_center=False)
        gsc.pp.neighbors(adata, n_neighbors=10)


def test_use_highly_variable_is_deprecated_as_in_scanpy(pbmc):
    """scanpy's FutureWarning (tests/test_deprecations.py); True means mask_var='highly_variable'."""
    adata = _lognorm(pbmc, hvg=True)
    ref = pca(adata, n_comps=10, mask_var="highly_variable", copy=True)
    with pytest.warns(FutureWarning, match="Argument `use_highly_variable` is deprecated"):
        got = pca(adata, n_comps=10, use_highly_variable=True, copy=True)
    np.testing.assert_array_equal(got.obsm["X_pca"], ref.obsm["X_pca"])
    with (
        pytest.warns(FutureWarning, match="use_highly_variable"),
        pytest.raises(ValueError, match="These arguments are incompatible"),
    ):
        pca(adata, use_highly_variable=False, mask_var=None)


def test_mask_errors_in_scanpys_words(pbmc):
    """scanpy's _check_mask texts (tests/test_pca.py::test_mask_length_error), the data untouched."""
    adata = _lognorm(pbmc)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"The shape of the mask do not match the data\."):
        pca(adata, mask_var=np.ones(adata.n_vars + 1, dtype=bool))
    with pytest.raises(ValueError, match=r"Mask array must be boolean"):
        pca(adata, mask_var=np.ones(adata.n_vars))
    adata.var["none"] = False  # said so, not as an n_comps=-1 the user never passed
    with pytest.raises(ValueError, match=r"mask_var selects none of the 765 genes \(adata.var\['none'\] is all"):
        pca(adata, mask_var="none")
    with pytest.raises(ValueError, match=r"mask_var selects none of the 765 genes \(the mask is all False\)"):
        pca(adata, mask_var=np.zeros(adata.n_vars, dtype=bool))
    assert set(adata.obsm) == set(before.obsm) and "pca" not in adata.uns


def test_chunked_on_backed_data_reads_the_file_in_blocks(tmp_path):
    """scanpy's test_backed.py::test_scatter_backed: pca(chunked=True) on a file-backed X (anndata's
    sparse dataset) reads it block by block (as Dask) and gives the in-memory PCA."""
    pytest.importorskip("dask.array")
    import anndata as ad

    import gpu_sc as gsc

    a = gsc.datasets.pbmc68k_reduced()
    gsc.pp.normalize_total(a)
    gsc.pp.log1p(a)
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    gsc.pp.pca(backed, chunked=True, chunk_size=200, n_comps=20)
    gsc.pp.pca(a, chunked=True, chunk_size=200, n_comps=20)
    assert isinstance(backed.obsm["X_pca"], np.ndarray)
    # float64 sums over the cells in blocks, rounded to float32
    assert_close(backed.obsm["X_pca"], a.obsm["X_pca"], dtype=np.float64, n_terms=a.n_obs, out=np.float32,
                 scale="max")  # fmt: skip
    backed.file.close()


def test_scanpys_n_pcs_setting_is_followed(pbmc):
    """A script that sets sc.settings.N_PCS gets that many components by default, from pca and
    from the PCA neighbors and dendrogram make, as from scanpy's; ours kept 50."""
    sc.pp.normalize_total(pbmc)
    sc.pp.log1p(pbmc)
    del pbmc.obsm["X_pca"]  # neighbors and dendrogram make it
    before = sc.settings.N_PCS
    try:
        sc.settings.N_PCS = 30
        for step in (lambda m, a: m.pp.pca(a), lambda m, a: m.pp.neighbors(a),
                     lambda m, a: m.tl.dendrogram(a, "bulk_labels")):  # fmt: skip
            theirs, ours = pbmc.copy(), pbmc.copy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step(sc, theirs)
                step(gsc, ours)
            assert ours.obsm["X_pca"].shape == theirs.obsm["X_pca"].shape == (pbmc.n_obs, 30)
    finally:
        sc.settings.N_PCS = before
