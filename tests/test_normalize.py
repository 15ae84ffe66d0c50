"""normalize_total equals scanpy's on real counts across its parameters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, assert_close, assert_same
from packaging.version import Version

import gpu_sc as gsc

# scanpy < 1.12 took the median over *all* CSR cells (zeros too) for target_sum=None; its dense
# path, and every path from 1.12 on, takes the nonzero median, which is what gpu_sc follows.
_OLD_CSR_MEDIAN = Version(sc.__version__) < Version("1.12")


def _reference(adata, **kw):
    a = adata.copy()
    if _OLD_CSR_MEDIAN and kw.get("target_sum") is None and sp.issparse(a.X):
        a.X = a.X.toarray()  # integer counts: float32 sums are exact, so the result is the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = sc.pp.normalize_total(a, **kw)
    return a if out is None else out


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"target_sum": 1e4},
        {"target_sum": 1e6, "key_added": "size_factor"},
        {"exclude_highly_expressed": True},
        {"exclude_highly_expressed": True, "max_fraction": 0.2, "target_sum": 1e4},
        {"exclude_highly_expressed": True, "max_fraction": 0.01, "key_added": "nf"},
    ],
)
def test_matches_scanpy(counts, cpu_type, kw):
    counts.X = as_type(counts.X, cpu_type)
    ref = _reference(counts, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(counts, **kw)
    assert counts.X.dtype == np.float32
    # integer counts: exact totals; then a division and a product, each rounding once (in
    # whichever order), in float32
    assert_close(counts.X, ref.X, dtype=np.float32)
    if "key_added" in kw:
        key = kw["key_added"]
        assert counts.obs[key].dtype == ref.obs[key].dtype
        assert_close(counts.obs[key], ref.obs[key])


def test_rows_sum_to_target(brain):
    with pytest.warns(UserWarning, match="zero counts"):
        gsc.pp.normalize_total(brain, target_sum=1e4)
    totals = np.asarray(brain.X.sum(axis=1)).ravel()
    kept = totals[totals > 0]  # float32 sums over the genes
    assert_close(kept, np.full_like(kept, 1e4), dtype=np.float32, n_terms=brain.n_vars)
    assert (totals == 0).sum() == 1  # the all-zero cell stays zero


def test_not_inplace_returns_dict_and_leaves_adata(pbmc):
    before = pbmc.X.copy()
    out = gsc.pp.normalize_total(pbmc, target_sum=1e4, inplace=False)
    assert set(out) == {"X", "norm_factor"}
    assert (before != pbmc.X).nnz == 0
    ref = sc.pp.normalize_total(pbmc.copy(), target_sum=1e4, inplace=False)
    assert_close(out["X"], ref["X"], dtype=np.float32)  # as test_matches_scanpy
    assert_close(out["norm_factor"], ref["norm_factor"])


def test_copy(pbmc):
    out = gsc.pp.normalize_total(pbmc, target_sum=1e4, copy=True)
    assert out is not pbmc
    totals = np.asarray(out.X.sum(axis=1)).ravel()  # float32 sums over the genes
    assert_close(totals, np.full_like(totals, 1e4), dtype=np.float32, n_terms=pbmc.n_vars)
    with pytest.raises(ValueError, match="copy=True"):
        gsc.pp.normalize_total(pbmc, copy=True, inplace=False)


def test_layer_and_obsm(pbmc):
    pbmc.layers["counts"] = pbmc.X.copy()
    pbmc.obsm["counts_dense"] = pbmc.X.toarray()
    x = pbmc.X.copy()
    gsc.pp.normalize_total(pbmc, layer="counts", target_sum=100)
    gsc.pp.normalize_total(pbmc, obsm="counts_dense", target_sum=100)
    assert (x != pbmc.X).nnz == 0
    for totals in (np.asarray(pbmc.layers["counts"].sum(axis=1)).ravel(), pbmc.obsm["counts_dense"].sum(axis=1)):
        assert_close(totals, np.full_like(totals, 100), dtype=np.float32, n_terms=pbmc.n_vars)  # float32 sums


def test_integer_counts_become_float32(pbmc):
    ref = pbmc.copy()
    pbmc.X = pbmc.X.astype(np.int64)
    gsc.pp.normalize_total(pbmc, target_sum=1e4)
    sc.pp.normalize_total(ref, target_sum=1e4)
    assert pbmc.X.dtype == np.float32
    assert_close(pbmc.X, ref.X, dtype=np.float32)  # as test_matches_scanpy


def test_csc_becomes_csr(pbmc):
    pbmc.X = pbmc.X.tocsc()
    gsc.pp.normalize_total(pbmc, target_sum=1e4)
    assert pbmc.X.format == "csr"


def test_view_does_not_touch_parent(pbmc):
    parent_x = pbmc.X.copy()
    view = pbmc[:100]
    gsc.pp.normalize_total(view, target_sum=1e4)
    assert not view.is_view
    assert (parent_x != pbmc.X).nnz == 0


@pytest.mark.parametrize("kw", [{}, {"exclude_highly_expressed": True, "target_sum": 1e4}])
def test_float64_counts(brain, kw):
    brain.X = brain.X.astype(np.float64)
    ref = _reference(brain, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(brain, **kw)
    assert brain.X.dtype == np.float64
    assert_close(brain.X, ref.X, dtype=np.float64)  # exact totals; a division and a product in float64


@pytest.mark.parametrize("lazy", [False, True])
def test_total_overflow_is_not_a_bad_value(lazy):
    """The totals double as the value check (a NaN or inf makes its row's total non-finite); a
    float64 row whose finite values overflow their total is no error, and is divided as numpy
    divides (by inf: zeros), as scanpy does."""
    x = sp.csr_matrix(np.array([[1e308, 1e308, 0.0], [1.0, 2.0, 3.0]]))
    adata = sc.AnnData(x)
    if lazy:
        import dask.array as da

        adata.X = da.from_array(x, chunks=(1, -1), asarray=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(adata, target_sum=6.0)
    got = adata.X.compute() if lazy else adata.X
    np.testing.assert_array_equal(got.toarray(), [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])


def test_negative_total_warns_as_scanpy(pbmc):
    """scanpy warns wherever a total is not above zero; negative values (which normalize_total
    takes) can make a total negative, not only zero."""
    a = pbmc[:20, :50].copy()
    a.X = a.X.toarray()
    a.X[0] = -1.0
    ours, theirs = a.copy(), a.copy()
    with pytest.warns(UserWarning, match="zero counts"):
        sc.pp.normalize_total(theirs, target_sum=10)
    with pytest.warns(UserWarning, match="zero counts"):
        gsc.pp.normalize_total(ours, target_sum=10)
    np.testing.assert_allclose(ours.X, theirs.X, rtol=1e-6)


@pytest.mark.parametrize("target", [np.float64(1e4), np.int64(10_000), np.array(1e4), np.float32(1e4), 10_000],
                         ids=["float64", "int64", "0d", "float32", "int"])  # fmt: skip
@pytest.mark.parametrize("inplace", [True, False])
def test_target_sum_type_promotes_as_scanpy(pbmc, cpu_type, target, inplace):
    """scanpy divides by totals / target_sum: a NumPy float64 (or int64, or 0-d) target makes the
    factors float64 and so a sparse result (a dense X is divided into itself and keeps its
    dtype); a Python number or a float32 keeps float32. Ours gave float32 always."""
    pbmc.X = as_type(pbmc.X, cpu_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sc.pp.normalize_total(ref := pbmc.copy(), target_sum=target, inplace=inplace, key_added="nf")
        got = gsc.pp.normalize_total(ours := pbmc.copy(), target_sum=target, inplace=inplace, key_added="nf")
    want_x, got_x = (ref.X, ours.X) if inplace else (want["X"], got["X"])
    assert got_x.dtype == want_x.dtype
    # to the bit, dense too: a float32 X divided by float64 factors in float64, rounded once
    assert_same(got_x, want_x)
    if inplace:
        assert ours.obs["nf"].dtype == ref.obs["nf"].dtype
    else:
        assert got["norm_factor"].dtype == want["norm_factor"].dtype
