"""normalize_per_cell (scanpy's deprecated normalisation and cell filter) against scanpy's, in
memory, on Dask (where scanpy's is broken) and on device arrays (CUDA or the emulator)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import _load, assert_same, cells_for

import gpu_sc as gsc


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture
def brain():
    a = _load("mouse_brain_10k_subset.h5ad")  # one cell without counts: dropped at min_counts=1
    a.layers["counts"] = a.X.copy()
    return a


def _same(got, ref):
    """scanpy's values to the bit: it divides dense rows and multiplies sparse ones by the
    reciprocal (a division differs in the last bit: 113,695 pbmc4k values)."""
    assert got.obs_names.equals(ref.obs_names) and got.obs.equals(ref.obs)
    assert_same(got.X, ref.X)
    for k in ref.layers:
        assert_same(got.layers[k], ref.layers[k])


def test_scanpys_example():
    x = np.array([[1, 0], [3, 0], [5, 6]], dtype=np.float32)
    # the sparse rows are multiplied by the reciprocal, as scanpy's: 1.0000001 for the last cell
    for matrix, last in ((x.copy(), 1.0), (sp.csr_matrix(x), float(np.float32(1) + np.finfo(np.float32).eps))):
        a = ad.AnnData(matrix)
        with pytest.warns(FutureWarning, match="normalize_total"):
            gsc.pp.normalize_per_cell(a)
        assert np.asarray(a.X.sum(axis=1)).ravel().tolist() == [3.0, 3.0, 3.0]
        assert a.obs["n_counts"].tolist() == [1.0, 3.0, 11.0]
        _quiet(gsc.pp.normalize_per_cell, a, counts_per_cell_after=1, key_n_counts="n_counts2")
        assert np.asarray(a.X.sum(axis=1)).ravel().tolist() == [1.0, 1.0, last]
        ref = ad.AnnData(matrix.copy())
        _quiet(sc.pp.normalize_per_cell, ref)
        _quiet(sc.pp.normalize_per_cell, ref, counts_per_cell_after=1, key_n_counts="n_counts2")
        assert_same(a.X, ref.X)


@pytest.mark.parametrize("kwargs", [{}, {"counts_per_cell_after": 1e4}, {"layers": "all"},
                                    {"layers": ["counts"], "use_rep": "after", "counts_per_cell_after": 100.0},
                                    {"min_counts": 50}], ids=["default", "after", "layers", "use-rep", "min-counts"])  # fmt: skip
def test_equals_scanpy(brain, kwargs):
    ref = _quiet(sc.pp.normalize_per_cell, brain, copy=True, **kwargs)
    got = _quiet(gsc.pp.normalize_per_cell, brain, copy=True, **kwargs)
    assert brain.n_obs == 10_000 and "n_counts" not in brain.obs  # copy=True leaves the input
    _same(got, ref)


def test_matrix_input_and_positionals(brain):
    ref = _quiet(sc.pp.normalize_per_cell, brain.X, copy=True)
    got = _quiet(gsc.pp.normalize_per_cell, brain.X, copy=True)
    assert got.shape == ref.shape == (9_999, 1_000)
    assert_same(got, ref)
    with pytest.raises(ValueError, match="Can only be run with copy=True"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gsc.pp.normalize_per_cell(brain.X)
    ref = _quiet(sc.pp.normalize_per_cell, brain, 100.0, None, "total", copy=True)
    got = _quiet(gsc.pp.normalize_per_cell, brain, 100.0, None, "total", copy=True)
    _same(got, ref)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_dask_equals_in_memory(brain, dense):
    import dask.array as da

    if dense:  # dense blocks are divided by their rows' factors (sparse ones multiplied)
        brain.X = brain.X.toarray()
    want = _quiet(sc.pp.normalize_per_cell, brain, copy=True)
    brain.X = da.from_array(brain.X, chunks=(2_000, -1), asarray=False)
    _quiet(gsc.pp.normalize_per_cell, brain)
    assert isinstance(brain.X, da.Array)
    brain.X = brain.X.compute()
    _same(brain, want)


def test_gpu_equals_cpu(device, brain):
    a = cells_for(device, brain[:, :300].copy(), n=400)
    want = _quiet(gsc.pp.normalize_per_cell, a, copy=True, layers="all")
    gpu = gsc.get.to_gpu(a, copy=True)
    _quiet(gsc.pp.normalize_per_cell, gpu, layers="all")
    assert type(gpu.X).__module__.startswith("cupy")
    _same(gpu, want)
    for host in (a.X, a.X.toarray()):  # matrices: cells dropped there; scanpy's of the same layout
        got = _quiet(gsc.pp.normalize_per_cell, gsc.get.array_to_gpu(host), copy=True, min_counts=20)
        ref = _quiet(sc.pp.normalize_per_cell, host, copy=True, min_counts=20)
        assert type(got).__module__.startswith("cupy") and got.shape == ref.shape
        assert_same(got, ref)
    import dask.array as da  # Dask of GPU blocks, X and a layer: the totals come back as cupy arrays

    lazy = a.copy()
    lazy.X = da.from_array(a.X, chunks=(100, -1))
    lazy.layers = {k: da.from_array(v, chunks=(100, -1)) for k, v in a.layers.items()}
    gsc.get.to_gpu(lazy)
    _quiet(gsc.pp.normalize_per_cell, lazy, layers="all")
    assert_same(lazy.X.compute(), want.X)
    for k, v in lazy.layers.items():
        assert_same(v.compute(), want.layers[k])


def test_views_and_bad_input(brain):
    parent = brain.X.copy()
    view = brain[:500]
    _quiet(gsc.pp.normalize_per_cell, view)
    assert not view.is_view and (parent != brain.X).nnz == 0
    with pytest.raises(ValueError, match='use_rep should be "after", "X" or None'), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gsc.pp.normalize_per_cell(brain, use_rep="Y")
    with pytest.raises(ValueError, match="counts_per_cell_after must be a positive number"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gsc.pp.normalize_per_cell(brain, counts_per_cell_after=0)
    assert brain.n_obs == 10_000 and (parent != brain.X).nnz == 0
    nan = brain[:200].copy()  # refused as every step refuses NaN counts, under this step's name
    nan.X.data[3] = np.nan
    for data, kw in ((nan, {}), (nan.X, {"copy": True}), (nan, {"layers": "raw"})):
        if "layers" in kw:
            nan.layers["raw"], nan.X = nan.X, parent[:200].copy()
        with pytest.raises(ValueError, match=r"^normalize_per_cell: expects counts but found 1 non-finite"), \
                warnings.catch_warnings():  # fmt: skip
            warnings.simplefilter("ignore", FutureWarning)
            gsc.pp.normalize_per_cell(data, **kw)


def test_given_totals_and_in_place_matrices(brain):
    x = brain.X[:2_000].toarray()
    totals = brain.X[:2_000].sum(axis=1)  # an np.matrix column, as X.sum(1) gives
    def of(kind):
        return {"dense": x.copy(), "fortran": np.asfortranarray(x), "csc": sp.csc_matrix(x), "csr": sp.csr_matrix(x)}[kind]

    for kind in ("dense", "fortran", "csc", "csr"):
        got, want = of(kind), of(kind)
        assert _quiet(gsc.pp.normalize_per_cell, got, counts_per_cell=totals) is None
        _quiet(sc.pp.normalize_per_cell, want, counts_per_cell=np.asarray(totals).ravel().copy())
        layout = got.format if sp.issparse(got) else "dense" if got.flags.c_contiguous else "fortran"
        assert layout == kind  # normalised in place, its layout kept
        assert_same(got, want)
    with pytest.raises(ValueError, match="counts_per_cell has 10 values for 2000 cells"):
        _quiet(gsc.pp.normalize_per_cell, x, counts_per_cell=np.ones(10))
    ints = x.astype(np.int64)
    with pytest.raises(ValueError, match=r"in place only when .* pass copy=True"):
        _quiet(gsc.pp.normalize_per_cell, ints, counts_per_cell=totals)
    assert np.array_equal(ints, x.astype(np.int64))
    copied = _quiet(gsc.pp.normalize_per_cell, ints, counts_per_cell=totals, copy=True)
    want = of("dense")
    _quiet(sc.pp.normalize_per_cell, want, counts_per_cell=np.asarray(totals).ravel().copy())
    assert_same(copied, want)  # integers become float32, divided as scanpy's float32


def test_csc_anndata_stays_csc_and_layers_are_checked_first(brain):
    a = brain[:3_000].copy()
    a.X = sp.csc_matrix(a.X)
    ref = _quiet(sc.pp.normalize_per_cell, a, copy=True)
    got = _quiet(gsc.pp.normalize_per_cell, a, copy=True)
    assert got.X.format == ref.X.format == "csc"
    _same(got, ref)
    bad = brain.copy()
    bad.layers["counts"].data[5] = np.nan
    x0 = bad.X.copy()
    for kwargs, error, match in [({"layers": "all"}, ValueError, "NaN"), ({"layers": ["nope"]}, KeyError, "no layers")]:
        with pytest.raises(error, match=match):
            _quiet(gsc.pp.normalize_per_cell, bad, **kwargs)
        assert bad.n_obs == 10_000 and "n_counts" not in bad.obs and (x0 != bad.X).nnz == 0


def test_use_rep_x_is_the_median_of_xs_totals(brain):
    """Documented: scanpy's takes its totals after dividing them in place (here all cells stay)."""
    a = brain[1:2_000].copy()  # no cell without counts
    got = _quiet(gsc.pp.normalize_per_cell, a, layers="all", use_rep="X", copy=True)
    totals = np.asarray(a.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(np.asarray(got.layers["counts"].sum(axis=1)).ravel(), np.median(totals), rtol=1e-5)


@pytest.mark.parametrize("totals_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["dense", "fortran"])
def test_given_totals_divide_in_their_dtype_as_scanpy(pbmc, totals_dtype, layout):
    """Given totals keep their dtype in the factors, as scanpy's in-place counts /= after does,
    and a dense float32 X is divided by float64 factors in float64, rounded once: scanpy's X to
    the bit (the factors were cast to float32 first: 51,072 values differed)."""
    x = pbmc.X.toarray()
    x = np.asfortranarray(x) if layout == "fortran" else x
    totals = np.asarray(pbmc.X.sum(axis=1)).ravel().astype(totals_dtype)
    want, got = ad.AnnData(x.copy()), ad.AnnData(x.copy())
    _quiet(sc.pp.normalize_per_cell, want, counts_per_cell=totals.copy())
    _quiet(gsc.pp.normalize_per_cell, got, counts_per_cell=totals.copy())
    assert_same(got.X, want.X)


def test_in_place_matrices_in_forms_numba_copies(brain):
    """A matrix normalised in place whose values are big-endian, or whose CSR pointers are int64
    beside int32 indices: our compiled code works on a native copy, whose values go back into the
    user's matrix (it was left as it was, silently; from a review), as scanpy's in-place result."""
    x = brain.X[:500]
    totals = np.asarray(x.sum(axis=1)).ravel() + 1
    mixed = x.copy()
    mixed.indptr = mixed.indptr.astype(np.int64)
    for got, want in ((mixed, x.copy()), (x.toarray().astype(">f4"), x.toarray())):
        assert _quiet(gsc.pp.normalize_per_cell, got, counts_per_cell=totals.copy()) is None
        _quiet(sc.pp.normalize_per_cell, want, counts_per_cell=totals.copy())
        assert_same(got.astype(np.float32) if not sp.issparse(got) else got, want)


def test_sparse_rows_scaled_by_bands_of_stored_values(brain, monkeypatch):
    """The reciprocal products go a band of stored values at a time (bands of 7 here, rows cut
    across): scanpy's matrix to the bit, as with one band of them all."""
    from gpu_sc._ops import _layout

    monkeypatch.setattr(_layout, "STORED_BAND", 7)
    x = brain.X[:300]
    assert_same(_quiet(gsc.pp.normalize_per_cell, x, copy=True), _quiet(sc.pp.normalize_per_cell, x, copy=True))
