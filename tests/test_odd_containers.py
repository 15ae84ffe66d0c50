"""Inputs at the edges of what scanpy takes, each against scanpy's own answer: a CSR with
duplicate entries (its value is their sum), one cell, QC on raw, a sparse representation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import assert_close

import gpu_sc as gsc


def _split_entries(x: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix with every stored value split into two stored halves (duplicates)."""
    c = x.tocoo()
    rows, cols = np.r_[c.row, c.row], np.r_[c.col, c.col]
    order = np.lexsort((cols, rows))
    data = np.r_[c.data / 2, c.data / 2].astype(x.dtype)[order]
    indptr = np.r_[0, np.cumsum(np.bincount(rows[order], minlength=x.shape[0]))]
    out = sp.csr_matrix((data, cols[order].astype(np.int32), indptr.astype(np.int32)), shape=x.shape)
    assert not out.has_canonical_format and (out != x).nnz == 0
    return out


@pytest.fixture
def logged(pbmc):
    a = pbmc[:300, :200].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    return a


STEPS = {  # step -> what it gives, read from a copy
    "filter_cells": lambda pp, a: pp.filter_cells(a, min_genes=50, inplace=False)[1],
    "filter_genes": lambda pp, a: pp.filter_genes(a, min_cells=10, inplace=False)[1],
    "qc": lambda pp, a: pp.calculate_qc_metrics(a, percent_top=(5, 20), inplace=False)[0].to_numpy(float),
    "log1p": lambda pp, a: pp.log1p(a, copy=True).X.toarray(),
    "hvg": lambda pp, a: pp.highly_variable_genes(a, inplace=False)["dispersions_norm"].to_numpy(float),
    "scale": lambda pp, a: pp.scale(a, copy=True).X,
    "pca": lambda pp, a: pp.pca(a, n_comps=5, copy=True).uns["pca"]["variance_ratio"],
    "markers_t_test": lambda pp, a: _markers(a, "t-test"),
    "markers_wilcoxon": lambda pp, a: _markers(a, "wilcoxon"),
}


def _markers(a, method):
    """Each group's scores in gene order, then its pts (the share of cells where it is stored)."""
    r = gsc.tl.rank_genes_groups(a, "bulk_labels", method=method, pts=True, copy=True).uns["rank_genes_groups"]
    order = [np.argsort(r["names"][g]) for g in r["names"].dtype.names]
    scores = [np.asarray(r["scores"][g])[o] for g, o in zip(r["names"].dtype.names, order, strict=True)]
    return np.r_[np.concatenate(scores), r["pts"].sort_index().to_numpy().ravel()]


@pytest.mark.parametrize("step", list(STEPS))
def test_duplicate_entries_are_their_sum(logged, step):
    """Each step gives on the duplicated matrix what it gives on the canonical one (scanpy does
    for the filters, HVG and the Wilcoxon test; its QC, log1p, scale, PCA, t-test and pts count,
    log or square the halves), and leaves the user's duplicated matrix as it was."""
    dup = logged.copy()
    dup.X = _split_entries(logged.X)
    before = dup.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.asarray(STEPS[step](gsc.pp, logged.copy()), float)
        got = np.asarray(STEPS[step](gsc.pp, dup), float)
    assert_close(got, want, dtype=np.float32, n_terms=64, scale=np.nanmax(np.abs(want)))
    assert dup.X.nnz == before.nnz and np.array_equal(dup.X.data, before.data)


def test_log1p_refusing_duplicates_leaves_the_matrix(logged):
    """The duplicates are summed into a copy and checked before the caller's matrix takes them:
    a refused log1p (a NaN) leaves its entries as they were."""
    dup = _split_entries(logged.X)
    dup.data[5] = np.nan
    before = dup.copy()
    with pytest.raises(ValueError, match="NaN"):
        gsc.pp.log1p(dup)
    assert dup.nnz == before.nnz
    np.testing.assert_array_equal(dup.data, before.data)


@pytest.mark.parametrize("kw", [{}, {"copy": True}], ids=["in-place", "copy"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_log1p_of_np_matrix_is_np_matrix(pbmc, kw, dtype):
    """scanpy gives an np.matrix back (the same object in place); ours too (it gave an ndarray)."""
    x = np.asmatrix(pbmc.X[:20, :30].toarray().astype(dtype))
    want = sc.pp.log1p(x.copy(), **kw)
    got = gsc.pp.log1p(mine := x.copy(), **kw)
    assert type(got) is type(want) is np.matrix and got.dtype == want.dtype
    assert (got is mine) == (want is not None and dtype is np.float32 and not kw)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_scale_one_cell_is_zeros(logged):
    """One cell (or a mask_obs of one): the variance stays the biased one, 0, as scanpy's
    _get_mean_var leaves it, so std is 1 and X 0 (it was NaN throughout). scanpy itself gets
    E[x^2] - E[x]^2 in round-off there: std NaN or 6e-4 for some genes of this data."""
    for kw in ({}, {"mask_obs": np.arange(logged.n_obs) == 3}):
        a = logged[:1].copy() if not kw else logged.copy()
        a.X = a.X.toarray()
        gsc.pp.scale(a, **kw)
        std = next(c for c in a.var.columns if c.startswith("std"))  # "std", or "std of mask"
        np.testing.assert_array_equal(a.var[std].to_numpy(), 1.0)
        assert not np.isnan(a.X).any()
        if not kw:
            np.testing.assert_array_equal(a.X, 0.0)


def test_qc_on_raw_writes_gene_metrics_like_scanpy(pbmc):
    ref, got = pbmc.copy(), pbmc.copy()
    ref.raw = ref.copy()
    got.raw = got.copy()
    sc.pp.calculate_qc_metrics(ref, use_raw=True, inplace=True)
    gsc.pp.calculate_qc_metrics(got, use_raw=True, inplace=True)
    assert list(got.var.columns) == list(ref.var.columns)
    for k in ref.var.columns:
        assert_close(got.var[k].to_numpy(float), ref.var[k].to_numpy(float), dtype=np.float64, n_terms=8)


def test_sparse_float32_representation_keeps_float32(logged):
    """scanpy's exact euclidean search gives float64 distances on a dense representation, and
    keeps float32 on a sparse one."""
    for rep, dtype in ((logged.X, np.float32), (logged.X.toarray(), np.float64)):
        a = logged.copy()
        a.X = rep
        ref, got = a.copy(), a.copy()
        sc.pp.neighbors(ref, use_rep="X", n_neighbors=10)
        gsc.pp.neighbors(got, use_rep="X", n_neighbors=10)
        assert got.obsp["distances"].dtype == ref.obsp["distances"].dtype == dtype


DASK_STEPS = {  # the duplicated matrix as Dask row blocks: each block's duplicates summed
    "filter_cells": lambda a: gsc.pp.filter_cells(a, min_genes=50, inplace=False)[1],
    "filter_genes": lambda a: gsc.pp.filter_genes(a, min_cells=10, inplace=False)[1],
    # a bare matrix: lazy numbers, each block's duplicates summed before its stored values are counted
    "filter_cells_bare": lambda a: gsc.pp.filter_cells(a.X, min_genes=50)[1],
    "filter_genes_bare": lambda a: gsc.pp.filter_genes(a.X, min_cells=10)[1],
    "qc": lambda a: gsc.pp.calculate_qc_metrics(a, percent_top=None, inplace=False)[1].to_numpy(float),
    "scale": lambda a: gsc.pp.scale(a, zero_center=False, copy=True).X,
    # centred: each block densified by the fused pass, which once kept the last of a duplicate pair
    "scale_centred": lambda a: gsc.pp.scale(a, max_value=5, copy=True).X,
    "scale_masked": lambda a: gsc.pp.scale(a, mask_obs=np.arange(a.n_obs) % 3 == 0, copy=True).X,
    "aggregate": lambda a: gsc.get.aggregate(a, "grp", ["count_nonzero", "var"]).layers["var"],
}


def _value(v):
    v = v.compute() if hasattr(v, "compute") else v
    return np.asarray(v.toarray() if sp.issparse(v) else v, float)


@pytest.mark.parametrize("step", list(DASK_STEPS))
def test_duplicate_entries_in_dask_blocks(logged, step):
    da = pytest.importorskip("dask.array")
    logged.obs["grp"] = np.arange(logged.n_obs) % 4
    lazy = logged.copy()
    lazy.X = da.from_array(_split_entries(logged.X), chunks=(70, -1), asarray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, got = _value(DASK_STEPS[step](logged.copy())), _value(DASK_STEPS[step](lazy))
    assert_close(got, want, dtype=np.float32, n_terms=64, scale=np.nanmax(np.abs(want)))


def test_aggregate_by_gene_reads_dask_blocks_one_by_one(logged, monkeypatch):
    """axis='var' on row blocks: each block of cells is summed by gene group on its own (it was
    joined into one block of every cell), the result the in-memory one; float16 X is summed
    as float32 (scanpy squares float16 into inf)."""
    da = pytest.importorskip("dask.array")
    import gpu_sc._aggregate as agg

    logged.var["half"] = np.arange(logged.n_vars) % 2
    want = gsc.get.aggregate(logged, "half", ["sum", "var"], axis="var")
    shapes = []
    real = agg.group_sums
    monkeypatch.setattr(agg, "group_sums", lambda p, *a, **k: (shapes.append(p.shape), real(p, *a, **k))[1])
    lazy = logged.copy()
    lazy.X = da.from_array(logged.X, chunks=(70, -1), asarray=False)
    got = gsc.get.aggregate(lazy, "half", ["sum", "var"], axis="var")
    assert sorted(shapes) == sorted((logged.n_vars, n) for n in lazy.X.chunks[0])  # in any order (threads)
    for k in ("sum", "var"):
        assert_close(np.asarray(got.layers[k]), np.asarray(want.layers[k]), dtype=np.float64, n_terms=8)
    half = logged.copy()
    half.X = half.X.toarray().astype(np.float16)
    single = half.copy()
    single.X = single.X.astype(np.float32)
    assert np.array_equal(gsc.get.aggregate(half, "half", "var", axis="var").layers["var"],
                          gsc.get.aggregate(single, "half", "var", axis="var").layers["var"])


def test_hvg_seurat_bin_of_equal_dispersions_and_string_batches(logged):
    """A mean bin whose genes all have one dispersion: scanpy's group std is exactly 0, so their
    normalised dispersion is NaN and they are never selected (ours was round-off, about +-1, and
    selected 192 genes of 2 cells); with a string batch_key, obs's string columns become
    categorical, as scanpy's batched path sanitizes."""
    two = logged[:2].copy()
    ref, got = two.copy(), two.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref)
        gsc.pp.highly_variable_genes(got)
    np.testing.assert_array_equal(got.var["highly_variable"].to_numpy(), ref.var["highly_variable"].to_numpy())
    np.testing.assert_array_equal(np.isnan(got.var["dispersions_norm"]), np.isnan(ref.var["dispersions_norm"]))
    a = logged.copy()
    a.obs["batch"] = np.where(np.arange(a.n_obs) % 2 == 0, "one", "two").astype(object)
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, batch_key="batch", n_top_genes=50)
        gsc.pp.highly_variable_genes(got, batch_key="batch", n_top_genes=50)
    assert got.obs["batch"].dtype == ref.obs["batch"].dtype == "category"
    np.testing.assert_array_equal(got.var["highly_variable"].to_numpy(), ref.var["highly_variable"].to_numpy())


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_neighbors_on_integer_x_as_scanpy(pbmc, metric, dense):
    """scikit-learn's searches (scanpy's below 4,096 cells) take integers as float64: float64
    distances (ours were float32 for sparse X and cosine), the same graph."""
    a = pbmc[:200, :40].copy()
    a.X = a.X.astype(np.int32)
    if dense:
        a.X = a.X.toarray()
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=5, use_rep="X", metric=metric)
        gsc.pp.neighbors(got, n_neighbors=5, use_rep="X", metric=metric)
    for key in ("distances", "connectivities"):
        assert got.obsp[key].dtype == ref.obsp[key].dtype, key
    np.testing.assert_allclose(np.sort(got.obsp["distances"].toarray(), axis=1),
                               np.sort(ref.obsp["distances"].toarray(), axis=1), rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("metric", ["manhattan", "correlation", "chebyshev"])
def test_neighbors_other_metrics_as_scanpy(logged, metric):
    """Metrics beyond euclidean and cosine go to scikit-learn's exact transformer, as scanpy's
    default below 4,096 cells: the same graph, dtypes and params (they were refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.pca(logged, n_comps=20)
    ref, got = logged.copy(), logged.copy()
    sc.pp.neighbors(ref, n_neighbors=10, metric=metric)
    gsc.pp.neighbors(got, n_neighbors=10, metric=metric)
    assert got.uns["neighbors"]["params"] == ref.uns["neighbors"]["params"]
    for key in ("distances", "connectivities"):
        g, r = got.obsp[key], ref.obsp[key]
        assert g.dtype == r.dtype and g.nnz == r.nnz
        assert_close(g.toarray(), r.toarray(), dtype=np.float32, n_terms=20, scale=1)


def test_neighbors_more_than_the_cells_adjusts_as_scanpy(logged, capsys):
    """n_neighbors above the number of cells: scanpy's 1 + n_obs // 2, with its warning (it
    was refused); n_neighbors equal to it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.pca(logged, n_comps=20)
    small = logged[:40].copy()
    for n in (40, 60):
        ref, got = small.copy(), small.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.neighbors(ref, n_neighbors=n)
        gsc.pp.neighbors(got, n_neighbors=n)
        assert got.uns["neighbors"]["params"]["n_neighbors"] == ref.uns["neighbors"]["params"]["n_neighbors"]
        assert got.obsp["distances"].nnz == ref.obsp["distances"].nnz
        assert_close(got.obsp["distances"].toarray(), ref.obsp["distances"].toarray(), dtype=np.float32,
                     n_terms=20, scale=1)  # fmt: skip
    assert "n_obs too small: adjusting to `n_neighbors = 21`" in capsys.readouterr().err
    one = small[:1].copy()  # scanpy fails inside scikit-learn; here a message (was ZeroDivisionError)
    with pytest.raises(ValueError, match="at least 2 cells, got 1"):
        gsc.pp.neighbors(one)
    assert "neighbors" not in one.uns and not one.obsp


@pytest.mark.parametrize(("dense", "kw", "runs"), [
    (True, {"svd_solver": "randomized"}, True), (True, {"svd_solver": "auto"}, True),
    (False, {"svd_solver": "full"}, False), (False, {"svd_solver": "covariance_eigh"}, True),
    (False, {"zero_center": False}, True), (True, {"zero_center": False}, True),
    (False, {"zero_center": False, "svd_solver": "arpack"}, False), (False, {"chunked": True, "chunk_size": 40}, True),
], ids=["dense-randomized", "dense-auto", "sparse-full", "sparse-eigh", "sparse-uncentred", "dense-uncentred",
        "uncentred-arpack", "chunked"])  # fmt: skip
def test_pca_all_components_where_scanpy_takes_them(logged, dense, kw, runs):
    """n_comps = min(cells, genes): scanpy takes it with scikit-learn's dense solvers but 'arpack'
    (and runs arpack for a sparse 'full'), uncentred (TruncatedSVD) but by arpack, and chunked
    (IncrementalPCA); the same calls run, or fail, here (uncentred and chunked ones failed)."""
    a = logged[:40, :30].copy()
    if dense:
        a.X = a.X.toarray()
    ref, got = a.copy(), a.copy()
    outcomes = []
    for fn, b in ((sc.pp.pca, ref), (gsc.pp.pca, got)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(b, n_comps=30, **kw)
            outcomes.append(True)
        except ValueError:
            outcomes.append(False)
    assert outcomes == [runs, runs]
    if runs and "zero_center" not in kw and "chunked" not in kw:  # (those two are scanpy's approximations)
        # scikit-learn's randomized solver (scanpy's 'auto' here too) is approximate: 1e-5 relative
        scale = np.abs(ref.obsm["X_pca"]).max()
        np.testing.assert_allclose(np.abs(got.obsm["X_pca"][:, :10]), np.abs(ref.obsm["X_pca"][:, :10]),
                                   atol=1e-4 * scale)  # fmt: skip


_STORED = {  # steps whose result a stored form of the same counts must not change
    "qc": lambda a: gsc.pp.calculate_qc_metrics(a, percent_top=(5, 20), inplace=False)[0].to_numpy(float),
    "filter_cells": lambda a: gsc.pp.filter_cells(a, min_genes=50, inplace=False)[1],
    "normalize": lambda a: _dense(gsc.pp.normalize_total(a, copy=True).X),
    "regress_out": lambda a: _dense(gsc.pp.regress_out(a, "n_counts", copy=True).X),
    "downsample": lambda a: _dense(gsc.pp.downsample_counts(a, counts_per_cell=300, random_state=0, copy=True).X),
    "combat": lambda a: gsc.pp.combat(a, "half", inplace=False),
    "aggregate": lambda a: gsc.get.aggregate(a, "bulk_labels", "sum").layers["sum"],
    "t_test": lambda a: _markers_of_counts(a),
    # its counts check before the first step met the big-endian values in numba (an audit)
    "recipe_zheng17": lambda a: _dense(gsc.pp.recipe_zheng17(a, n_top_genes=50, copy=True).X),
}


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _markers_of_counts(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # raw counts
        return gsc.tl.rank_genes_groups(a, "bulk_labels", copy=True).uns["rank_genes_groups"]["scores"].tolist()


def _stored_forms(x: sp.csr_matrix) -> dict:
    """The same counts as big-endian values (some HDF5 files; scipy's own copy refuses them in
    a sparse matrix), int32 pointers beside int64 indices, and read-only values (a read-only
    memmap, writeable=False)."""
    mixed = x.copy()
    mixed.indices = mixed.indices.astype(np.int64)
    frozen = x.copy()
    frozen.data.flags.writeable = False
    dense_frozen = x.toarray()
    dense_frozen.flags.writeable = False
    return {"big-endian dense": x.toarray().astype(">f4"), "mixed index dtypes": mixed,
            "read-only csr": frozen, "read-only dense": dense_frozen}  # fmt: skip


@pytest.mark.parametrize("step", list(_STORED))
def test_stored_forms_give_the_same_result(pbmc, step):
    """From an audit: big-endian values were a numba TypingError in most steps (scanpy takes
    them), read-only values one in normalize_total, regress_out and downsample_counts (scanpy's
    CSR normalize_total takes them), and downsample_counts on mixed index dtypes thinned X and
    then raised; now each gives the result of the plain matrix, the input as it was."""
    base = pbmc[:300, :200].copy()
    base.obs["n_counts"] = np.asarray(base.X.sum(axis=1)).ravel()
    base.obs["half"] = np.where(np.arange(base.n_obs) % 2, "a", "b")
    want = _STORED[step](base.copy())
    for name, x in _stored_forms(base.X).items():
        a = base.copy()
        a.X = x
        before = _dense(x).copy()
        got = _STORED[step](a)
        np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-5, atol=1e-6,
                                   err_msg=name)  # fmt: skip
        np.testing.assert_array_equal(_dense(a.X), before, err_msg=name)
        if step == "normalize":  # a result not written back leaves the caller's values as they were
            gsc.pp.normalize_total(a, inplace=False)
            np.testing.assert_array_equal(_dense(a.X), before, err_msg=name)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", ">i4", "<f2"])
def test_value_check_takes_any_byte_order(dtype):
    """The counts check (recipes, QC, filters) met big-endian values in numba, which has no type
    for them (nor for float16): counted in a native copy, the array as it was."""
    from gpu_sc._values import value_issues

    v = np.array([1, -2, 3, np.nan, np.inf, -1, 0] if dtype[1] == "f" else [1, -2, 3, -1, 0], dtype=dtype)
    before = v.copy()
    assert value_issues(v) == ((2, 2) if dtype[1] == "f" else (0, 2))
    assert v.dtype == np.dtype(dtype) and np.array_equal(v, before, equal_nan=True)


def test_scrublet_reads_duplicate_entries_as_their_sum(pbmc):
    """scanpy's scrublet scores a CSR with duplicate entries as the summed matrix; ours read the
    observed matrix's entries apart (scores up to 0.33 off, from an audit)."""
    a, b = pbmc.copy(), pbmc.copy()
    b.X = _split_entries(b.X)
    gsc.pp.scrublet(a, random_state=0)
    gsc.pp.scrublet(b, random_state=0)
    np.testing.assert_allclose(b.obs["doublet_score"], a.obs["doublet_score"], atol=1e-6)
    assert b.obs["predicted_doublet"].equals(a.obs["predicted_doublet"])


def test_bool_counts_as_zeros_and_ones(pbmc):
    """A bool X (a binarised matrix) counts as 0/1, as scanpy's filters take it (ours refused
    bools): the filters and QC give scanpy's result for the 0/1 float matrix (scanpy's QC fails
    on a bool CSR); normalize_total the float matrix's (scanpy's leaves a bool CSR's rows
    undivided and fails on a dense one)."""
    for x in ((pbmc.X != 0).tocsr(), (pbmc.X != 0).toarray()):
        for step in ("filter_cells", "filter_genes", "qc"):
            got = STEPS[step](gsc.pp, sc.AnnData(x.copy()))
            want = STEPS[step](sc.pp, sc.AnnData(x.astype(np.float32)))
            np.testing.assert_allclose(got, want, rtol=1e-6)  # (float32 sums there: logs 1 ulp apart)
        got = gsc.pp.normalize_total(sc.AnnData(x.copy()), copy=True).X
        want = gsc.pp.normalize_total(sc.AnnData(x.astype(np.float64)), copy=True).X
        assert got.dtype == np.float64
        np.testing.assert_array_equal(_dense(got), _dense(want))


def test_bool_counts_in_the_count_steps(pbmc):
    """highly_variable_genes (seurat_v3), combat, scrublet and downsample_counts take a bool X as
    counts of 0 and 1, as scanpy runs them (ours refused bools). scanpy's results for them:
    seurat_v3's genes and combat's matrix are the 0/1 matrix's; downsample_counts' bools are
    scanpy's exactly (thinned as integers, bools again). scanpy's scrublet adds two bool cells
    as a logical or, so ours scores the 0/1 float matrix's doublets (sums) instead."""
    a = pbmc[:, :300].copy()
    a.obs["batch"] = np.repeat(["x", "y"], [350, 350])
    binary, ones = a.copy(), a.copy()
    binary.X = a.X > 0
    ones.X = binary.X.astype(np.float32)
    got = gsc.pp.highly_variable_genes(binary, flavor="seurat_v3", n_top_genes=50, inplace=False)
    want = sc.pp.highly_variable_genes(ones, flavor="seurat_v3", n_top_genes=50, inplace=False)
    assert got["highly_variable"].equals(want["highly_variable"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = gsc.pp.combat(binary, key="batch", inplace=False)
        want = sc.pp.combat(ones, key="batch", inplace=False)
    np.testing.assert_allclose(got, want, atol=1e-10)
    got = gsc.pp.scrublet(binary, random_state=0, copy=True).obs["doublet_score"]
    want = gsc.pp.scrublet(ones, random_state=0, copy=True).obs["doublet_score"]
    np.testing.assert_array_equal(got, want)
    for x in (binary.X, binary.X.toarray()):
        for kw in ({"counts_per_cell": 5}, {"counts_per_cell": 5, "replace": True}, {"total_counts": 3000}):
            got = gsc.pp.downsample_counts(sc.AnnData(x.copy()), random_state=0, copy=True, **kw).X
            want = sc.pp.downsample_counts(sc.AnnData(x.copy()), random_state=0, copy=True, **kw).X
            assert got.dtype == want.dtype == bool and type(got) is type(want)
            np.testing.assert_array_equal(_dense(got), _dense(want))
