"""filter_cells / filter_genes equal scanpy's on real counts."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from _helpers import as_type, to_host

import gpu_sc as gsc

CELL_CRITERIA = [{"min_counts": 500}, {"min_genes": 150}, {"max_counts": 3000}, {"max_genes": 400}]
GENE_CRITERIA = [{"min_counts": 20}, {"min_cells": 10}, {"max_counts": 5000}, {"max_cells": 300}]


@pytest.mark.parametrize("kw", CELL_CRITERIA)
def test_filter_cells_matches_scanpy(counts, cpu_type, kw):
    counts.X = as_type(counts.X, cpu_type)
    ref = counts.copy()
    sc.pp.filter_cells(ref, **kw)
    assert gsc.pp.filter_cells(counts, **kw) is None
    assert counts.obs_names.equals(ref.obs_names)
    key = "n_counts" if "counts" in next(iter(kw)) else "n_genes"
    assert counts.obs[key].dtype == ref.obs[key].dtype
    np.testing.assert_array_equal(counts.obs[key], ref.obs[key])
    np.testing.assert_array_equal(to_host(counts.X), to_host(ref.X))


@pytest.mark.parametrize("kw", GENE_CRITERIA)
def test_filter_genes_matches_scanpy(counts, cpu_type, kw):
    counts.X = as_type(counts.X, cpu_type)
    ref = counts.copy()
    sc.pp.filter_genes(ref, **kw)
    gsc.pp.filter_genes(counts, **kw)
    assert counts.var_names.equals(ref.var_names)
    key = "n_counts" if "counts" in next(iter(kw)) else "n_cells"
    assert counts.var[key].dtype == ref.var[key].dtype
    np.testing.assert_array_equal(counts.var[key], ref.var[key])


@pytest.mark.parametrize("view", [False, True], ids=["actual", "view"])
@pytest.mark.parametrize(("fn", "kw"), [("filter_cells", {"min_genes": 150}), ("filter_genes", {"min_cells": 10})])
def test_whole_anndata_matches_scanpy(pbmc, fn, kw, view):
    """X is subset once by us, everything else by anndata: the result equals scanpy's in every
    slot (layers, obsm, varm, obsp, uns; X's format and dtype), for an AnnData and a view."""
    import scipy.sparse as sp

    a = pbmc.copy()
    a.layers["counts"] = a.X.copy()
    a.layers["dense"] = a.X.toarray()
    a.obsm["emb"] = np.arange(a.n_obs * 2, dtype=np.float64).reshape(-1, 2)
    a.varm["load"] = np.arange(a.n_vars * 3, dtype=np.float64).reshape(-1, 3)
    a.obsp["graph"] = sp.identity(a.n_obs, format="csr")
    a.uns["note"] = "kept"
    if view:
        a = a[: a.n_obs - 50]
    ref, ours = a.copy() if not view else a[:], a
    with np.errstate(all="ignore"):
        getattr(sc.pp, fn)(ref, **kw)
        getattr(gsc.pp, fn)(ours, **kw)
    assert not ours.is_view and ours.shape == ref.shape
    assert ours.obs.equals(ref.obs) and ours.var.equals(ref.var)
    assert type(ours.X) is type(ref.X) and ours.X.dtype == ref.X.dtype
    assert (ours.X != ref.X).nnz == 0 and ours.X.has_sorted_indices
    for key in ("counts", "dense"):
        np.testing.assert_array_equal(to_host(ours.layers[key]), to_host(ref.layers[key]))
    np.testing.assert_array_equal(ours.obsm["emb"], ref.obsm["emb"])
    np.testing.assert_array_equal(ours.varm["load"], ref.varm["load"])
    assert (ours.obsp["graph"] != ref.obsp["graph"]).nnz == 0 and ours.uns["note"] == "kept"


@pytest.mark.parametrize("fn", ["filter_cells", "filter_genes"])
def test_matrix_input_and_not_inplace(pbmc, fn):
    kw = {"min_counts": 100}
    ref_mask, ref_num = getattr(sc.pp, fn)(pbmc.X, **kw)
    mask, num = getattr(gsc.pp, fn)(pbmc.X, **kw)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(num, ref_num)
    mask2, num2 = getattr(gsc.pp, fn)(pbmc, inplace=False, **kw)
    np.testing.assert_array_equal(mask2, ref_mask)
    assert pbmc.shape == (700, 765)


@pytest.mark.parametrize("fn", ["filter_cells", "filter_genes"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_count_sums_take_numpys_dtype(pbmc, fn, dtype):
    """The sums' dtype is NumPy's (and scanpy's): uint64 for unsigned counts, int64 for signed."""
    x = pbmc.X.astype(dtype)
    _, ref_num = getattr(sc.pp, fn)(x, min_counts=100)
    _, num = getattr(gsc.pp, fn)(x, min_counts=100)
    assert num.dtype == ref_num.dtype
    np.testing.assert_array_equal(num, ref_num)


def test_copy_returns_filtered_copy(pbmc):
    out = gsc.pp.filter_cells(pbmc, min_genes=200, copy=True)
    assert out is not pbmc and out.n_obs < pbmc.n_obs == 700


@pytest.mark.parametrize("kw", [{}, {"min_counts": 1, "min_genes": 1}])
def test_exactly_one_criterion(pbmc, kw):
    with pytest.raises(ValueError, match="exactly one"):
        gsc.pp.filter_cells(pbmc, **kw)


@pytest.mark.parametrize("fn", ["filter_cells", "filter_genes"])
def test_scaled_data_on_device_equal_cpu(device, pbmc, fn):
    """Negative values on the GPU: the values above zero counted as on the CPU."""
    from _helpers import cells_for

    a = cells_for(device, pbmc, 300)
    x = a.X.copy()
    x.data[::3] *= -1
    a.X = x
    cpu, gpu = a.copy(), gsc.get.to_gpu(a.copy(), copy=True)
    kw = {"min_genes": 40} if fn == "filter_cells" else {"min_cells": 20}
    getattr(gsc.pp, fn)(cpu, **kw)
    getattr(gsc.pp, fn)(gpu, **kw)
    assert gpu.obs_names.equals(cpu.obs_names) and gpu.var_names.equals(cpu.var_names)
    assert gpu.obs.equals(cpu.obs) and gpu.var.equals(cpu.var)


@pytest.mark.parametrize("fn", ["filter_cells", "filter_genes"])
def test_scaled_sparse_data_counts_values_above_zero_like_scanpy(pbmc, cpu_type, fn):
    """Sparse data with negative stored values (scaled data): a cell's genes (a gene's cells) are
    those above zero, as scanpy counts them (X > 0), not every stored value."""
    x = pbmc.X.copy()
    x.data[::3] *= -1
    pbmc.X = as_type(x, cpu_type)
    ref = pbmc.copy()
    kw = {"min_genes": 40} if fn == "filter_cells" else {"min_cells": 20}
    getattr(sc.pp, fn)(ref, **kw)
    getattr(gsc.pp, fn)(pbmc, **kw)
    key = "n_genes" if fn == "filter_cells" else "n_cells"
    frame, ref_frame = (pbmc.obs, ref.obs) if fn == "filter_cells" else (pbmc.var, ref.var)
    assert pbmc.obs_names.equals(ref.obs_names) and pbmc.var_names.equals(ref.var_names)
    np.testing.assert_array_equal(frame[key], ref_frame[key])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize(("fn", "kw"), [("filter_cells", {"min_genes": 150}), ("filter_genes", {"min_cells": 10}),
                                        ("filter_cells", {"min_counts": 500})])
def test_unsorted_indices_and_duplicates_stored_as_scanpy_leaves_them(pbmc, fmt, fn, kw):
    """A 10x h5's matrix can hold its indices unsorted (and a built one duplicates): scanpy's
    `X > 0` canonicalises X in place, so its filtered X is sorted and summed; its count filters
    leave X as given. Ours left the expressed-gene filters' X unsorted: equal values, other
    stored arrays (from a scanpy swap on a 10x h5). Now the filtered X's stored arrays are
    scanpy's; a matrix the filter only reads is left as given (scanpy sorts it)."""
    import scipy.sparse as sp

    x = sp.csr_matrix(pbmc.X).asformat(fmt)
    major = np.diff(x.indptr)
    owner = np.repeat(np.arange(major.size), major)
    order = np.argsort(owner + np.random.default_rng(0).random(x.nnz))  # shuffled within each row (column)
    data, indices = x.data[order], x.indices[order]
    # and the first stored value stored twice (its sum the value plus 1)
    built = type(x)((np.r_[data[:1], 1.0, data[1:]], np.r_[indices[:1], indices], np.r_[0, x.indptr[1:] + 1]),
                    shape=x.shape)  # fmt: skip
    assert not built.has_canonical_format
    ours, ref = pbmc.copy(), pbmc.copy()
    ours.X, ref.X = built.copy(), built.copy()
    getattr(sc.pp, fn)(ref, **kw)
    getattr(gsc.pp, fn)(ours, **kw)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(ours.X, name), getattr(ref.X, name))
    mask_only = built.copy()  # inplace=False: the caller's matrix as given (scanpy's comparison sorts it)
    getattr(gsc.pp, fn)(mask_only, **kw)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(mask_only, name), getattr(built, name))
