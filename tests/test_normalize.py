"""normalize_total equals scanpy's on real counts across its parameters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, to_host
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
    np.testing.assert_allclose(to_host(counts.X), to_host(ref.X), rtol=1e-6, atol=0)
    if "key_added" in kw:
        key = kw["key_added"]
        assert counts.obs[key].dtype == ref.obs[key].dtype
        np.testing.assert_allclose(counts.obs[key], ref.obs[key], rtol=1e-6)


def test_rows_sum_to_target(brain):
    with pytest.warns(UserWarning, match="zero counts"):
        gsc.pp.normalize_total(brain, target_sum=1e4)
    totals = np.asarray(brain.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(totals[totals > 0], 1e4, rtol=1e-5)
    assert (totals == 0).sum() == 1  # the all-zero cell stays zero


def test_not_inplace_returns_dict_and_leaves_adata(pbmc):
    before = pbmc.X.copy()
    out = gsc.pp.normalize_total(pbmc, target_sum=1e4, inplace=False)
    assert set(out) == {"X", "norm_factor"}
    assert (pbmc.X != before).nnz == 0
    ref = sc.pp.normalize_total(pbmc.copy(), target_sum=1e4, inplace=False)
    np.testing.assert_allclose(out["X"].toarray(), ref["X"].toarray(), rtol=1e-6)
    np.testing.assert_allclose(out["norm_factor"], ref["norm_factor"], rtol=1e-6)


def test_copy(pbmc):
    out = gsc.pp.normalize_total(pbmc, target_sum=1e4, copy=True)
    assert out is not pbmc and np.allclose(out.X.sum(axis=1), 1e4, rtol=1e-5)
    with pytest.raises(ValueError, match="copy=True"):
        gsc.pp.normalize_total(pbmc, copy=True, inplace=False)


def test_layer_and_obsm(pbmc):
    pbmc.layers["counts"] = pbmc.X.copy()
    pbmc.obsm["counts_dense"] = pbmc.X.toarray()
    x = pbmc.X.copy()
    gsc.pp.normalize_total(pbmc, layer="counts", target_sum=100)
    gsc.pp.normalize_total(pbmc, obsm="counts_dense", target_sum=100)
    assert (pbmc.X != x).nnz == 0
    np.testing.assert_allclose(pbmc.layers["counts"].sum(axis=1), 100, rtol=1e-5)
    np.testing.assert_allclose(pbmc.obsm["counts_dense"].sum(axis=1), 100, rtol=1e-5)


def test_integer_counts_become_float32(pbmc):
    ref = pbmc.copy()
    pbmc.X = pbmc.X.astype(np.int64)
    gsc.pp.normalize_total(pbmc, target_sum=1e4)
    sc.pp.normalize_total(ref, target_sum=1e4)
    assert pbmc.X.dtype == np.float32
    np.testing.assert_allclose(pbmc.X.toarray(), ref.X.toarray(), rtol=1e-6)


def test_csc_becomes_csr(pbmc):
    pbmc.X = pbmc.X.tocsc()
    gsc.pp.normalize_total(pbmc, target_sum=1e4)
    assert pbmc.X.format == "csr"


def test_view_does_not_touch_parent(pbmc):
    parent_x = pbmc.X.copy()
    view = pbmc[:100]
    gsc.pp.normalize_total(view, target_sum=1e4)
    assert not view.is_view
    assert (pbmc.X != parent_x).nnz == 0


@pytest.mark.parametrize("kw", [{}, {"exclude_highly_expressed": True, "target_sum": 1e4}])
def test_float64_counts(brain, kw):
    brain.X = brain.X.astype(np.float64)
    ref = _reference(brain, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(brain, **kw)
    assert brain.X.dtype == np.float64
    np.testing.assert_allclose(to_host(brain.X), to_host(ref.X), rtol=1e-12)
