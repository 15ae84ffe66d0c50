"""pp.sample, pp.subsample, pp.sqrt and tl.marker_gene_overlap against scanpy's, in memory,
on Dask and on device matrices (CUDA or the emulator); and no recursion where scanpy's names
have been given ours."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import _load, as_type, to_host

import gpu_sc as gsc


@pytest.fixture
def pbmc_small():
    a = _load("pbmc68k_reduced_counts.h5ad")[:200, :150].copy()
    a.obs["keep"] = np.arange(a.n_obs) % 3 != 0
    return a


@pytest.mark.parametrize("kwargs", [{"fraction": 0.3, "rng": 0}, {"n": 50, "rng": 7}, {"n": 40, "axis": "var", "rng": 1},
                                    {"n": 300, "replace": True, "rng": 2}, {"n": 30, "p": "keep", "rng": 3}],
                         ids=["fraction", "n", "var", "replace", "mask"])  # fmt: skip
def test_sample_anndata_equals_scanpy(pbmc_small, kwargs):
    kwargs = dict(kwargs)
    fraction = kwargs.pop("fraction", None)
    ref = sc.pp.sample(pbmc_small, fraction, copy=True, **kwargs)
    got = gsc.pp.sample(pbmc_small, fraction, copy=True, **kwargs)
    assert got.obs_names.equals(ref.obs_names) and got.var_names.equals(ref.var_names)
    assert (got.X != ref.X).nnz == 0
    assert gsc.pp.sample(pbmc_small, fraction, **kwargs) is None
    assert pbmc_small.obs_names.equals(ref.obs_names) and pbmc_small.var_names.equals(ref.var_names)


def test_sample_sizes_refused_with_the_sizes(pbmc_small):
    """More cells than there are, or none to draw from: the sizes and the way out (scanpy passes
    numpy's words on); the input as it was."""
    for data, kw, match in ((pbmc_small, {"n": 500}, "n=500 is more than the 200 cells; pass replace=True"),
                            (pbmc_small.X, {"n": 151, "axis": "var"}, "n=151 is more than the 150 genes"),
                            (pbmc_small[:0].copy(), {"n": 10}, r"no cells to draw from \(shape \(0, 150\)\)")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            gsc.pp.sample(data, rng=0, **kw)
    assert pbmc_small.shape == (200, 150)
    assert gsc.pp.sample(pbmc_small, n=500, replace=True, rng=0, copy=True).n_obs == 500


def test_subsample_equals_scanpy(pbmc_small):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = sc.pp.subsample(pbmc_small, 0.25, random_state=3, copy=True)
        got = gsc.pp.subsample(pbmc_small, 0.25, random_state=3, copy=True)
        assert got.obs_names.equals(ref.obs_names)
        x_ref, i_ref = sc.pp.subsample(pbmc_small.X, n_obs=20)
        x_got, i_got = gsc.pp.subsample(pbmc_small.X, n_obs=20)
    np.testing.assert_array_equal(i_got, i_ref)
    assert (x_got != x_ref).nnz == 0


def test_dask_anndata_stays_lazy(pbmc_small):
    import dask.array as da

    ref = sc.pp.sample(pbmc_small, n=60, rng=2, copy=True)
    pbmc_small.X = da.from_array(pbmc_small.X, chunks=(50, -1), asarray=False)
    gsc.pp.sample(pbmc_small, n=60, rng=2)
    assert isinstance(pbmc_small.X, da.Array) and pbmc_small.obs_names.equals(ref.obs_names)
    assert (pbmc_small.X.compute() != ref.X).nnz == 0


@pytest.mark.parametrize("kind", ["cupy", "cupyx_csr"])
def test_device_matrix_gets_scanpys_draw(device, pbmc_small, kind):
    x = as_type(pbmc_small.X, kind)
    for axis in ("obs", "var"):
        sub, idx = gsc.pp.sample(x, n=25, rng=4, axis=axis)
        ref, ref_idx = sc.pp.sample(pbmc_small.X, n=25, rng=4, axis=axis)
        np.testing.assert_array_equal(idx, ref_idx)
        assert type(sub).__module__.startswith("cupy")
        np.testing.assert_array_equal(to_host(sub), ref.toarray())
    a = pbmc_small.copy()
    a.X = x
    totals = np.asarray(pbmc_small.X.sum(axis=1)).ravel()
    mask = a.X.sum(axis=1).ravel() > np.median(totals)  # made on the device: scanpy's draw needs it on the host
    got = gsc.pp.sample(a, n=10, rng=6, p=mask, copy=True)
    want = sc.pp.sample(pbmc_small, n=10, rng=6, p=totals > np.median(totals), copy=True)
    assert got.obs_names.equals(want.obs_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sub, idx = gsc.pp.subsample(x, 0.1, random_state=5)
        _, ref_idx = sc.pp.subsample(pbmc_small.X, 0.1, random_state=5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(to_host(sub), pbmc_small.X[ref_idx].toarray())


@pytest.mark.parametrize("wrap", [lambda f: f, functools.partial], ids=["direct", "wrapped"])
def test_scanpy_names_given_ours_do_not_recurse(monkeypatch, pbmc_small, wrap):
    """A script (or scanpy's test suite) that sets sc.pp.sample = gsc.pp.sample (or a wrapper of
    it) still works."""
    for name in ("sample", "subsample", "recipe_weinreb17"):
        monkeypatch.setattr(sc.pp, name, wrap(getattr(gsc.pp, name)))
    monkeypatch.setattr(sc.tl, "marker_gene_overlap", gsc.tl.marker_gene_overlap)
    assert gsc.pp.sample(pbmc_small, n=10, copy=True).n_obs == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert gsc.pp.subsample(pbmc_small, n_obs=10, copy=True).n_obs == 10
    dense = pbmc_small.copy()
    dense.X = dense.X.toarray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gsc.pp.recipe_weinreb17(dense, n_pcs=5, copy=True).obsm["X_pca"].shape == (200, 5)
    gsc.tl.rank_genes_groups(dense, "bulk_labels", method="t-test")
    assert gsc.tl.marker_gene_overlap(dense, {"x": set(dense.var_names[:5])}).shape[0] == 1


@pytest.mark.parametrize("kind", ["numpy", "csr", "csc"])
def test_sqrt_equals_scanpy(pbmc_small, kind):
    x = as_type(pbmc_small.X, kind)
    got, ref = gsc.pp.sqrt(x), sc.pp.sqrt(x)
    assert type(got) is type(ref) and got.dtype == ref.dtype
    np.testing.assert_array_equal(to_host(got), to_host(ref))
    a = pbmc_small.copy()
    a.X = x
    b = gsc.pp.sqrt(a, copy=True)
    np.testing.assert_array_equal(to_host(b.X), to_host(ref))
    assert gsc.pp.sqrt(a) is None
    np.testing.assert_array_equal(to_host(a.X), to_host(ref))


def test_sqrt_integers_dask_and_views(pbmc_small):
    import dask.array as da

    ints = sp.csr_matrix(pbmc_small.X.astype(np.int64))
    np.testing.assert_array_equal(gsc.pp.sqrt(ints).toarray(), sc.pp.sqrt(ints).toarray())
    lazy = da.from_array(pbmc_small.X, chunks=(64, -1), asarray=False)
    got = gsc.pp.sqrt(lazy)
    assert isinstance(got, da.Array) and sp.issparse(got._meta)
    np.testing.assert_array_equal(got.compute().toarray(), pbmc_small.X.sqrt().toarray())
    view = pbmc_small[:50]
    parent = pbmc_small.X.copy()
    gsc.pp.sqrt(view)
    assert not view.is_view and (parent != pbmc_small.X).nnz == 0  # the parent is untouched
    with pytest.raises(TypeError, match="sqrt"):
        gsc.pp.sqrt([[1.0, 4.0]])
    with pytest.warns(FutureWarning, match="no longer positional"):
        copied = gsc.pp.sqrt(pbmc_small, True)  # scanpy's old positional copy
    np.testing.assert_array_equal(copied.X.toarray(), pbmc_small.X.sqrt().toarray())


@pytest.mark.parametrize("kind", ["cupy", "cupyx_csr"])
def test_sqrt_on_device(device, pbmc_small, kind):
    got = gsc.pp.sqrt(as_type(pbmc_small.X, kind))
    assert type(got).__module__.startswith("cupy")
    np.testing.assert_allclose(to_host(got), pbmc_small.X.sqrt().toarray(), rtol=1e-6)


def test_marker_gene_overlap_equals_scanpy():
    a = _load("pbmc68k_reduced_counts.h5ad")
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    gsc.tl.rank_genes_groups(a, "bulk_labels", method="wilcoxon")
    markers = {"T": set(a.var_names[:40]), "B": {"CD79A", "MS4A1", "CD19"}}
    for kwargs in ({}, {"method": "jaccard", "top_n_markers": 20}, {"normalize": "reference"}):
        ref = sc.tl.marker_gene_overlap(a, markers, **kwargs)
        got = gsc.tl.marker_gene_overlap(a, markers, **kwargs)
        assert got.equals(ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.bool_])
def test_sqrt_of_sparse_8_bit_integers_is_float32(pbmc, dtype):
    """NumPy's root of 8-bit integers is float16, which scipy's sparse matrices cannot hold (the
    error named float16): sparse ones become float32, dense ones keep NumPy's float16."""
    a = pbmc.copy()
    a.X = sp.csr_matrix(pbmc.X).astype(dtype)
    want = np.sqrt(a.X.toarray().astype(np.float32))
    gsc.pp.sqrt(a)
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), want)
    dense = pbmc.X.toarray().astype(dtype)
    assert gsc.pp.sqrt(dense).dtype == np.sqrt(dense).dtype
