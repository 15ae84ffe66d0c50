"""scale equals scanpy's sc.pp.scale (values, var columns, storage type, dtype)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, assert_close, assert_same, to_host

from gpu_sc.preprocessing._scale import scale

KWARGS = [
    {},
    {"max_value": 2.5},
    {"zero_center": False},
    {"zero_center": False, "max_value": 1.0},
    {"mask_obs": "sel"},
    {"mask_obs": "sel", "zero_center": False, "max_value": 1.0},
    {"mask_obs": "array", "max_value": 3.0},
]


def _lognorm(adata):
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.obs["sel"] = np.arange(adata.n_obs) % 3 == 0
    return adata


def _run(fn, adata, kw):
    kw = dict(kw)
    if kw.get("mask_obs") == "array":
        kw["mask_obs"] = adata.obs["sel"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(adata, **kw)


@pytest.mark.parametrize("kw", KWARGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_scale_matches_scanpy(pbmc, cpu_type, kw):
    pbmc = _lognorm(pbmc)
    pbmc.X = as_type(pbmc.X, cpu_type)
    ref, got = pbmc.copy(), pbmc.copy()
    _run(sc.pp.scale, ref, kw)
    _run(scale, got, kw)
    assert list(got.var.columns) == list(ref.var.columns)
    # scanpy squares X's values in X's dtype (one rounding each) before float64 sums: its variance is
    # within a step of X's dtype of the mean of squares, its std within that over 2 std, and the
    # scaled values move by that relative to the std (value x mean of squares / (2 var))
    dtype = pbmc.X.dtype
    mean, std = (ref.var[c].to_numpy() for c in ref.var.columns[-2:])
    rel = (mean**2 + std**2) / (2 * std**2)
    assert_close(got.var[ref.var.columns[-2]], mean, dtype=np.float64, n_terms=pbmc.n_obs)  # float64 sums
    assert_close(got.var[ref.var.columns[-1]], std, dtype=dtype, scale=rel * std)
    for col in ref.var.columns[-2:]:
        assert got.var[col].dtype == np.float64
    assert sp.issparse(got.X) == sp.issparse(ref.X)
    if sp.issparse(ref.X):  # the stored entries too: scanpy stores every entry of the centred rows
        assert got.X.nnz == ref.X.nnz
    if cpu_type == "csc" and kw.get("zero_center") is False and "mask_obs" not in kw:
        # scanpy keeps CSC and goes to float64 there; we give CSR in the input dtype (documented)
        assert sp.isspmatrix_csr(got.X) and got.X.dtype == pbmc.X.dtype
    else:
        assert got.X.dtype == ref.X.dtype
    ref_x = to_host(ref.X)
    assert_close(to_host(got.X), ref_x, dtype=dtype, out=ref_x.dtype, scale=np.abs(ref_x) * rel)


@pytest.mark.parametrize("masked", [False, True])
def test_sparse_without_centring_by_bands_of_stored_values(pbmc, monkeypatch, masked):
    """Stored values are scaled a band at a time (bands of 7 here, rows cut across): the same
    matrix, to the bit, as one band of them all."""
    from gpu_sc._ops import _layout

    pbmc.obs["sel"] = np.arange(pbmc.n_obs) % 3 == 0
    kw = {"zero_center": False, "max_value": 2.0, "copy": True} | ({"mask_obs": "sel"} if masked else {})
    whole = scale(pbmc, **kw)
    monkeypatch.setattr(_layout, "STORED_BAND", 7)
    assert_same(scale(pbmc, **kw).X, whole.X)


def test_sparse_without_centring_stays_csr(brain):
    brain = _lognorm(brain)
    x = brain.X.copy()
    scale(brain, zero_center=False)
    assert sp.isspmatrix_csr(brain.X) and brain.X.dtype == np.float32 and brain.X.nnz == x.nnz
    std = brain.var["std"].to_numpy()
    assert np.all(std > 0)
    assert_close(brain.X, x.toarray() / std, dtype=np.float32)  # one float32 division (and float64 std)


def test_centring_sparse_warns_and_densifies(pbmc):
    with pytest.warns(UserWarning, match="densifies"):
        scale(pbmc)
    assert isinstance(pbmc.X, np.ndarray) and pbmc.X.dtype == np.float64
    # float64 sums over cells of centred values, relative to the largest (cancellation)
    mean = pbmc.X.mean(0)
    assert_close(mean, np.zeros_like(mean), dtype=np.float64, n_terms=pbmc.n_obs, scale=np.abs(pbmc.X).max())
    nonconst = pbmc.var["std"].to_numpy() != 1
    std = pbmc.X[:, nonconst].std(0, ddof=1)
    assert_close(std, np.ones_like(std), dtype=np.float64, n_terms=pbmc.n_obs)


def test_mask_obs_leaves_other_cells(pbmc):
    pbmc = _lognorm(pbmc)
    pbmc.X = pbmc.X.toarray()
    before = pbmc.X.copy()
    scale(pbmc, mask_obs="sel")
    m = pbmc.obs["sel"].to_numpy()
    np.testing.assert_array_equal(pbmc.X[~m], before[~m])
    assert {"mean of sel", "std of sel"} <= set(pbmc.var.columns)
    # float64 sums of float32 values over the selected cells (numpy's mean of float32: float32 pairwise sums)
    assert_close(pbmc.var["mean of sel"], before[m].mean(0), dtype=np.float32, n_terms=int(m.sum()))


@pytest.mark.parametrize("max_value", [0, -1.0, float("nan"), "3"])
def test_bad_max_value_leaves_data_unchanged(pbmc, max_value):
    """A clip of [-max_value, max_value] needs max_value > 0 (0 would zero X, -1 fill it)."""
    before = pbmc.X.copy()
    with pytest.raises(ValueError, match="max_value must be a positive number"):
        scale(pbmc, max_value=max_value)
    assert (before != pbmc.X).nnz == 0 and "mean" not in pbmc.var


def test_layer_obsm_and_arrays(pbmc):
    pbmc = _lognorm(pbmc)
    pbmc.layers["lg"] = pbmc.X.copy()
    ref = pbmc.copy()
    sc.pp.scale(ref, layer="lg", zero_center=False)
    scale(pbmc, layer="lg", zero_center=False)
    lg = ref.layers["lg"].toarray()  # as test_scale_matches_scanpy, without centring
    r = ref.var
    assert_close(pbmc.layers["lg"], lg, scale=np.abs(lg) * (r["mean"] ** 2 + r["std"] ** 2).to_numpy() / (2 * r["std"].to_numpy() ** 2))
    assert (pbmc.X != ref.X).nnz == 0  # X untouched
    dense = ref.X.toarray()
    out = scale(dense, max_value=4, copy=True)
    assert out is not dense
    want = sc.pp.scale(dense, max_value=4, copy=True)  # as test_scale_matches_scanpy
    m, v = dense.mean(0, dtype=np.float64), dense.var(0, ddof=1, dtype=np.float64)
    assert_close(out, want, scale=np.abs(want) * (m**2 + v) / (2 * np.maximum(v, 1e-300)))
    ints = np.arange(12).reshape(4, 3)
    assert scale(ints).dtype == np.float64  # integers become float64, as in scanpy
    pbmc.obsm["few"] = dense[:, :5]
    with pytest.raises(ValueError, match="columns"):
        scale(pbmc, obsm="few")
    with pytest.raises(ValueError, match="Did not find"):  # scanpy's type
        scale(pbmc, mask_obs="nope")


@pytest.mark.parametrize("kw", KWARGS[:6], ids=str)
@pytest.mark.parametrize("dense", [False, True])
def test_scale_gpu_equals_cpu(device, pbmc, kw, dense):
    import gpu_sc as gsc

    pbmc = _lognorm(pbmc)
    if dense:
        pbmc.X = pbmc.X.toarray()
    gpu = gsc.get.to_gpu(pbmc, copy=True)
    _run(scale, pbmc, kw)
    _run(scale, gpu, kw)
    assert type(gpu.X).__module__.startswith(("cupy", "cupyx"))
    assert (type(gpu.X).__module__.startswith("cupyx")) == sp.issparse(pbmc.X)
    assert gpu.X.dtype == pbmc.X.dtype
    if sp.issparse(pbmc.X):
        assert gpu.X.nnz == pbmc.X.nnz  # the centred rows' zeros stored on both
    for col in pbmc.var.columns[-2:]:
        # float64 sums over cells in another order; the variance cancels: relative to the largest
        assert_close(gpu.var[col], pbmc.var[col], dtype=np.float64, n_terms=pbmc.n_obs, scale="max")
    x = to_host(pbmc.X)  # from those, one rounding to X's dtype
    assert_close(to_host(gpu.X), x, dtype=np.float64, n_terms=pbmc.n_obs, out=x.dtype, scale="max")


@pytest.mark.parametrize("masked", [False, True])
def test_gpu_densifies_band_by_band(device, pbmc, monkeypatch, masked):
    """Sparse X on the device is centred in a float64 array filled a band of rows at a time (bands
    of 7 rows here, the last shorter): the same matrix, to the bit, as one band of every row."""
    import gpu_sc as gsc
    from gpu_sc.preprocessing import _scale

    gpu = gsc.get.to_gpu(_lognorm(pbmc), copy=True)
    gpu.obs["sel"] = np.arange(gpu.n_obs) % 3 == 0
    kw = {"max_value": 3.0, "copy": True} | ({"mask_obs": "sel"} if masked else {})
    whole = scale(gpu, **kw)
    monkeypatch.setattr(_scale, "_GPU_DENSE_BAND", 7 * gpu.n_vars + 3)
    assert_same(to_host(scale(gpu, **kw).X), to_host(whole.X))


def test_mask_by_name_without_anndata_in_scanpys_words():
    """scanpy's own test matches this message (tests/test_scaling.py::test_mask_string)."""
    with pytest.raises(ValueError, match=r"Cannot refer to mask.* without.*anndata"):
        scale(np.ones((3, 3)), mask_obs="mask")


def test_view_warns_as_scanpy_and_parent_is_untouched(pbmc):
    """A view becomes an actual AnnData with scanpy's warning (its words; scanpy's
    test_preprocessing.py::test_scale matches "view"), and the parent keeps its values; no
    warning with copy=True or for an actual AnnData."""
    pbmc = _lognorm(pbmc)
    pbmc.X = pbmc.X.toarray()
    before = pbmc.X.copy()
    v = pbmc[:, : pbmc.n_vars // 2]
    ref = v.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.scale(ref)
    with pytest.warns(UserWarning, match=r"^Received a view of an AnnData\. Making a copy\.$") as caught:
        scale(v)
    assert len(caught) == 1 and caught[0].filename == __file__  # at the caller, as scanpy's stacklevel
    assert not v.is_view
    np.testing.assert_array_equal(pbmc.X, before)
    assert_close(v.X, ref.X, dtype=np.float64, n_terms=pbmc.n_obs, out=v.X.dtype, scale="max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = scale(pbmc[:, :10], copy=True)
        scale(pbmc)
    assert not out.is_view


def test_mask_errors_in_scanpys_words(pbmc):
    """scanpy's _check_mask texts for a mask of the wrong length or dtype."""
    with pytest.raises(ValueError, match=r"The shape of the mask do not match the data\..*mask_obs"):
        scale(pbmc, mask_obs=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match=r"Mask array must be boolean\."):
        scale(pbmc, mask_obs=np.ones(pbmc.n_obs))
    with pytest.raises(ValueError, match=r"Did not find `adata\.obs\['nope'\]`"):
        scale(pbmc, mask_obs="nope")
    assert "mean" not in pbmc.var


def test_bare_sparse_matrix_with_mask_is_scaled_in_place_as_scanpy(pbmc):
    """scanpy fills the masked rows into the CSR it is given and returns it: a caller that keeps
    its matrix (`scale(adata.layers['L'], mask_obs=m)`) must see them here too (it once got a
    new matrix and kept its own unscaled)."""
    x0 = pbmc.X[:100].copy()
    m = np.arange(100) % 3 == 0
    ours, theirs = x0.copy(), x0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scale(ours, mask_obs=m) is ours
        assert sc.pp.scale(theirs, mask_obs=m) is theirs
    assert ours.dtype == theirs.dtype and (ours != x0).nnz > 0
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["fortran", "column_view", "csc_mask", "big_endian"])
def test_bare_matrix_of_another_layout_is_scaled_in_place_as_scanpy(pbmc, kind):
    """An F-ordered or strided dense array, or a CSC with a mask, is scaled in place and returned
    by scanpy; we scale a copy in our layout, and write it back into the caller's matrix (it once
    returned the copy and left the caller's array unscaled)."""
    dense = pbmc.X[:200].toarray()
    m = np.arange(200) % 3 == 0
    make, kw = {
        "fortran": (lambda: np.asfortranarray(dense), {}),
        "column_view": (lambda: np.c_[dense, dense][:, : dense.shape[1]], {"zero_center": False}),
        "csc_mask": (lambda: sp.csc_matrix(dense), {"mask_obs": m}),
        "big_endian": (lambda: dense.astype(">f4"), {}),  # as some HDF5 files hold it: scaled in a native copy
    }[kind]
    ours, theirs = make(), make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scale(ours, **kw) is ours
        assert sc.pp.scale(theirs, **kw) is theirs
    got, want = (a.toarray() if sp.issparse(a) else a for a in (ours, theirs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, make().toarray() if kind == "csc_mask" else make())


@pytest.mark.parametrize("kw", [{"zero_center": False}, {"zero_center": False, "mask": True}, {"mask": True}],
                         ids=["no_centre", "mask_no_centre", "mask_centred"])
def test_bare_csc_is_changed_where_scanpy_changes_it(pbmc, kw):
    """scanpy writes into a CSC it is given only for centred masked rows; otherwise it returns a
    new matrix and the caller's stays as it was: so do we."""
    x0 = sp.csc_matrix(pbmc.X[:200])
    kw = dict(kw)
    if kw.pop("mask", False):
        kw["mask_obs"] = np.arange(200) % 3 == 0
    ours, theirs = x0.copy(), x0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, want = scale(ours, **kw), sc.pp.scale(theirs, **kw)
    assert (got is ours) == (want is theirs)
    assert ((ours != x0).nnz > 0) == ((theirs != x0).nnz > 0)
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-5, atol=1e-5)


def test_dask_blocks_sparse_where_the_meta_says_dense(pbmc):
    """map_blocks that could not infer its blocks' kind labels sparse blocks dense: without
    centring the stored values are divided (the in-memory result); centred, a clear error at
    compute instead of a reshape failure."""
    da = pytest.importorskip("dask.array")
    x = sp.csr_matrix(pbmc.X)
    lazy = da.from_array(x, chunks=(250, -1), asarray=False).map_blocks(
        sp.csr_matrix, dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
    mem = scale(x.copy(), zero_center=False, max_value=5, copy=True)
    got = scale(lazy, zero_center=False, max_value=5, copy=True).compute()
    np.testing.assert_array_equal(to_host(got), to_host(mem))
    with pytest.raises(TypeError, match="a block of the Dask array is sparse where the array's meta is dense"):
        scale(lazy, copy=True).compute()


def test_dask_blocks_dense_where_the_meta_says_sparse(pbmc):
    """The opposite mislabel: dense blocks under a CSR meta failed at compute with
    "'numpy.ndarray' object has no attribute 'tocsr'" (from an audit); now a clear error."""
    da = pytest.importorskip("dask.array")
    x = pbmc.X.toarray()
    lazy = da.from_array(x, chunks=(250, -1), meta=sp.csr_matrix((0, 0), dtype=x.dtype))
    with pytest.raises(TypeError, match="a block of the Dask array is dense where the array's meta is sparse"):
        scale(lazy, copy=True).compute()


def test_return_mean_std_of_a_matrix_as_scanpy(pbmc):
    """scanpy's scale_array returns (scaled, mean, std) with return_mean_std (ours refused the keyword)."""
    for x in (pbmc.X.toarray(), pbmc.X):
        centre = not sp.issparse(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sc.pp.scale(x.copy(), zero_center=centre, return_mean_std=True)
        got = scale(x.copy(), zero_center=centre, return_mean_std=True)
        assert type(got[0]) is type(want[0])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.toarray() if sp.issparse(g) else g, w.toarray() if sp.issparse(w) else w,
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
    with pytest.raises(TypeError, match="return_mean_std takes a matrix"):
        scale(pbmc, return_mean_std=True)


def test_masked_centring_of_a_csc_copy_stays_csc(pbmc):
    """scanpy returns a CSC whose masked rows are centred as CSC, copy or not (ours gave CSR for copy=True)."""
    x = sp.csc_matrix(pbmc.X)
    m = (pbmc.obs["phase"] == "G1").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sc.pp.scale(x.copy(), mask_obs=m, copy=True)
        got = scale(x.copy(), mask_obs=m, copy=True)
    assert type(got) is type(want) and want.format == "csc"
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6, atol=1e-6)
    # an AnnData's CSC X too (ours gave CSR there)
    ours, theirs = (ad.AnnData(x.copy()) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.scale(theirs, mask_obs=m)
        scale(ours, mask_obs=m)
    assert type(ours.X) is type(theirs.X) and theirs.X.format == "csc"
    np.testing.assert_allclose(ours.X.toarray(), theirs.X.toarray(), rtol=1e-6, atol=1e-6)
