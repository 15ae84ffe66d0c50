"""downsample_counts equals scanpy's sc.pp.downsample_counts count for count (the same Numba draws,
reseeded per cell, here in a parallel loop): per cell and in total, CSR / CSC / dense, with and
without replacement; Dask blocks and GPU arrays give the same; bad input is refused untouched."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import cells_for, to_host

import gpu_sc as gsc

_COUNTS: dict[str, ad.AnnData] = {}


def _counts() -> ad.AnnData:
    """pbmc4k_half's counts (2,170 cells), the genes seen in 20 cells or more (float32 CSR)."""
    if "counts" not in _COUNTS:
        a = gsc.datasets.pbmc4k_half()
        _COUNTS["counts"] = a[:, np.ravel((a.X > 0).sum(axis=0)) >= 20].copy()
    return _COUNTS["counts"].copy()


def _scanpy(a, **kwargs):
    ref = a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.downsample_counts(ref, **kwargs)
    return ref.X


TARGETS = [{"counts_per_cell": 1000}, {"counts_per_cell": "varied"}, {"total_counts": 500_000},
           {"counts_per_cell": 400, "replace": True, "random_state": 7},
           {"total_counts": 500_000, "replace": True},
           {"counts_per_cell": "own", "replace": True}]  # fmt: skip


@pytest.mark.parametrize("kwargs", TARGETS, ids=["per-cell", "per-cell-varied", "total", "replace", "total-replace",
                                                 "own-totals-replace"])  # fmt: skip
@pytest.mark.parametrize("kind", ["csr", "csc", "dense", "int64-dense", "fractional-csr", "fractional-dense"])
def test_equals_scanpy(kwargs, kind):
    """Fractional values too: scanpy's float32 running totals and its int(total) (a float64
    total moved 4 of 700 cells and 50,964 values of the whole matrix)."""
    a = _counts()
    fractional = kind.startswith("fractional")
    if fractional:
        a.X = sp.csr_matrix(a.X * np.float32(0.7))
        kind = kind.split("-")[1]
    if kwargs.get("counts_per_cell") == "varied":
        kwargs = {"counts_per_cell": np.random.default_rng(0).integers(100, 3000, a.n_obs)}
    if kind == "csc":
        a.X = a.X.tocsc()
    if kind in ("dense", "int64-dense"):
        a.X = a.X.toarray().astype(np.int64 if kind == "int64-dense" else np.float32)
    own = isinstance(kwargs.get("counts_per_cell"), str) and kwargs["counts_per_cell"] == "own"
    if own:  # each cell's own total: no cell is over its target, none is drawn
        kwargs = {**kwargs, "counts_per_cell": np.ravel(a.X.sum(axis=1)).astype(np.int64)}
    want = _scanpy(a, **kwargs)
    if own and not fractional:  # (a fractional total is above its whole part: drawn)
        np.testing.assert_array_equal(to_host(want), to_host(a.X))  # left as it was, by scanpy too
    x = a.X
    gsc.pp.downsample_counts(a, **kwargs)
    assert type(a.X) is type(want) and a.X.dtype == want.dtype
    if kind == "csr" or kind.endswith("dense"):
        assert a.X is x  # thinned in place, as scanpy
    np.testing.assert_array_equal(to_host(a.X), to_host(want))
    if sp.issparse(a.X):
        assert a.X.nnz == want.nnz  # explicit zeros removed, as scanpy


def test_copy_view_and_totals():
    """copy=True leaves the input; a view's parent keeps its counts (its dense X is the parent's
    memory); cells at or under the target keep theirs."""
    a = _counts()
    a.X = a.X.toarray()
    before = a.X.copy()
    out = gsc.pp.downsample_counts(a, counts_per_cell=800, copy=True)
    np.testing.assert_array_equal(a.X, before)
    totals = before.sum(axis=1)
    np.testing.assert_array_equal(out.X.sum(axis=1), np.minimum(totals, 800))
    small = totals <= 800
    np.testing.assert_array_equal(out.X[small], before[small])
    view = a[:500]
    with pytest.warns(UserWarning, match="view"):
        gsc.pp.downsample_counts(view, counts_per_cell=300)
    np.testing.assert_array_equal(a.X, before)
    np.testing.assert_array_equal(view.X, _scanpy(a[:500].copy(), counts_per_cell=300))


@pytest.mark.parametrize("replace", [False, True])
def test_dask_equals_in_memory(replace):
    import dask.array as da

    a = _counts()
    targets = np.random.default_rng(1).integers(100, 3000, a.n_obs)
    want = _scanpy(a, counts_per_cell=targets, replace=replace)
    for chunks in ((500, -1), (700, 400)):  # row blocks; blocks split along genes are joined
        lazy = a.copy()
        lazy.X = da.from_array(a.X, chunks=chunks, asarray=False)
        source = lazy.X.copy()
        gsc.pp.downsample_counts(lazy, counts_per_cell=targets, replace=replace)
        assert isinstance(lazy.X, da.Array)
        np.testing.assert_array_equal(to_host(lazy.X.compute()), to_host(want))
        np.testing.assert_array_equal(to_host(source.compute()), to_host(a.X))  # blocks not changed


def test_gpu_equals_cpu(device):
    a = cells_for(device, _counts(), n=400)
    want = _scanpy(a, counts_per_cell=600)
    gpu = gsc.get.to_gpu(a, copy=True)
    gsc.pp.downsample_counts(gpu, counts_per_cell=600)
    assert type(gpu.X).__module__.startswith("cupyx")
    np.testing.assert_array_equal(to_host(gpu.X), to_host(want))
    import cupy as cp  # targets made on the GPU (from a GPU X's totals): read on the host

    targets = np.full(a.n_obs, 600, dtype=np.int64)
    gpu = gsc.get.to_gpu(a, copy=True)
    gsc.pp.downsample_counts(gpu, counts_per_cell=cp.asarray(targets))
    np.testing.assert_array_equal(to_host(gpu.X), to_host(want))


@pytest.mark.parametrize(("change", "kwargs", "error", "match"), [
    (None, {}, ValueError, "Must specify exactly one of `total_counts` or `counts_per_cell`"),
    (None, {"counts_per_cell": 10, "total_counts": 10}, ValueError, "exactly one"),
    (None, {"counts_per_cell": [1, 2]}, ValueError, r"length as number of observations.*got shape \(2,\)"),
    (None, {"counts_per_cell": -5}, ValueError, "0 or more, got -5"),
    (None, {"counts_per_cell": 10, "random_state": None}, TypeError, "random_state must be an integer"),
    (None, {"total_counts": -5}, ValueError, "total_counts must be a number of counts, 0 or more, got -5"),
    ("float16", {"counts_per_cell": 10}, TypeError, r"float16.*astype\(np.float32\)"),
    ("negative", {"counts_per_cell": 10}, ValueError, "1 negative values"),
    ("nan", {"counts_per_cell": 10}, ValueError, "1 non-finite values"),
    ("dask", {"total_counts": 10}, ValueError, "total_counts draws over every cell at once"),
], ids=["none", "both", "length", "negative-target", "seed", "negative-total", "float16", "negative-value", "nan",
        "dask-total"])  # fmt: skip
def test_bad_input_is_refused_and_leaves_the_data(change, kwargs, error, match):
    import dask.array as da

    a = _counts()[:300].copy()
    if change == "negative":
        a.X.data[0] = -1
    if change == "nan":
        a.X.data[0] = np.nan
    if change == "float16":
        a.X = a.X.toarray().astype(np.float16)  # (scipy sparse holds no float16)
    if change == "dask":
        a.X = da.from_array(a.X, chunks=(100, -1), asarray=False)
    before = to_host(a.X.compute() if change == "dask" else a.X).copy()
    with pytest.raises(error, match=match):
        gsc.pp.downsample_counts(a, **kwargs)
    np.testing.assert_array_equal(to_host(a.X.compute() if change == "dask" else a.X), before)


def test_seeds_and_targets_as_scanpy_takes_them():
    """Any integer seed, modulo 2**32 as Numba takes it (-1 is 2**32 - 1); targets held as
    Python objects, as scanpy's astype(int) takes them."""
    a = _counts()[:300].copy()
    for seed in (-1, 2**32 + 5):
        want = _scanpy(a, counts_per_cell=200, random_state=seed)
        got = gsc.pp.downsample_counts(a, counts_per_cell=200, random_state=seed, copy=True)
        np.testing.assert_array_equal(to_host(got.X), to_host(want))
    targets = np.array([150] * a.n_obs, dtype=object)
    want = _scanpy(a, counts_per_cell=targets)
    np.testing.assert_array_equal(to_host(gsc.pp.downsample_counts(a, counts_per_cell=targets, copy=True).X),
                                  to_host(want))  # fmt: skip


def test_gpu_bool_equals_cpu(device):
    """A bool cupyx X is thinned as integers on the host (cupyx holds no integer sparse matrix,
    so casting it on the device failed; from a review) and comes back as device bools."""
    a = cells_for(device, _counts(), n=400)
    a.X = a.X > 0
    want = gsc.pp.downsample_counts(a, counts_per_cell=60, copy=True).X
    gpu = gsc.get.to_gpu(a, copy=True)
    gsc.pp.downsample_counts(gpu, counts_per_cell=60)
    assert type(gpu.X).__module__.startswith("cupyx") and gpu.X.dtype == bool
    dense = [m.toarray() if sp.issparse(m) else np.asarray(m) for m in (to_host(gpu.X), want)]
    np.testing.assert_array_equal(*dense)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_total_counts_past_float32_integers(dtype):
    """The draw's running total runs in float64: scanpy's in float32 stalls at 2**24 (2**24 + 1
    rounds back), so the counts after it were never drawn, here 10,000 cells of one count each."""
    x = sp.csr_matrix(np.r_[[2.0**24], np.ones(10_000)][:, None].astype(dtype))
    got = gsc.pp.downsample_counts(ad.AnnData(x), total_counts=8_000_000, random_state=0, copy=True).X
    assert got.sum() == 8_000_000
    late = got[1:].sum()
    assert late > 4_000  # about 10,000 * 8e6 / (2**24 + 1e4) = 4,766 expected; the stalled walk gave 0
