"""Parity with scanpy on the larger real matrices beside the checkout (../shared/data), which the
repository does not bundle; skipped where that folder is absent (a user's clone)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import SHARED, to_host
from test_normalize import _reference as normalize_reference

import gpu_sc as gsc

FILES = {
    "soupx_pbmc4k_half": "soupx_pbmc4k_half.h5ad",
    "copykat_tnbc_302": "copykat_tnbc_302.h5ad",
    "hgmm_1k_v3": "hgmm_1k_v3/filtered_feature_bc_matrix.h5",
}


def _load(name):
    path = SHARED / FILES[name]
    if not path.exists():
        pytest.skip(f"{path} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sc.read_10x_h5(path) if path.suffix == ".h5" else ad.read_h5ad(path)
    a.var_names_make_unique()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    a.var["mt"] = a.var_names.str.upper().str.contains(r"^(?:[A-Z0-9]+_+)?MT-", regex=True)
    return a


@pytest.fixture(params=list(FILES), scope="module")
def real(request):
    return _load(request.param)


def test_qc(real):
    kw = {"qc_vars": ["mt"], "percent_top": (20, 50, 100, 500)}
    ref_obs, ref_var = sc.pp.calculate_qc_metrics(real.copy(), **kw)
    obs, var = gsc.pp.calculate_qc_metrics(real, **kw)
    for ours, ref in ((obs, ref_obs), (var, ref_var)):
        assert (ours.dtypes == ref.dtypes).all()
        pd.testing.assert_frame_equal(ours, ref, check_exact=False, rtol=1e-6)


@pytest.mark.parametrize(
    "kw", [{"min_genes": 200}, {"max_counts": 20000}, {"min_counts": 1000}, {"max_genes": 3000}]
)
def test_filter_cells(real, kw):
    ref = real.copy()
    sc.pp.filter_cells(ref, **kw)
    ours = real.copy()
    gsc.pp.filter_cells(ours, **kw)
    assert ours.obs_names.equals(ref.obs_names) and ours.obs.equals(ref.obs)


@pytest.mark.parametrize("kw", [{"min_cells": 3}, {"min_counts": 10}, {"max_cells": 50}])
def test_filter_genes(real, kw):
    ref = real.copy()
    sc.pp.filter_genes(ref, **kw)
    ours = real.copy()
    gsc.pp.filter_genes(ours, **kw)
    assert ours.var_names.equals(ref.var_names) and ours.var.equals(ref.var)


@pytest.mark.parametrize(
    "kw",
    [
        {"key_added": "nf"},
        {"target_sum": 1e4},
        {"exclude_highly_expressed": True, "key_added": "nf"},
        {"exclude_highly_expressed": True, "max_fraction": 0.1, "target_sum": 1e6},
    ],
)
def test_normalize_then_log1p(real, kw):
    sc.pp.filter_genes(real, min_cells=1)  # keeps dense references small
    ref = normalize_reference(real, **kw)
    ours = real.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(ours, **kw)
    np.testing.assert_allclose(ours.X.toarray(), to_host(ref.X), rtol=1e-6)
    if "key_added" in kw:
        np.testing.assert_allclose(ours.obs["nf"], ref.obs["nf"], rtol=1e-6)
    ref.X = sp.csr_matrix(ref.X)
    sc.pp.log1p(ref)
    gsc.pp.log1p(ours)
    np.testing.assert_allclose(ours.X.toarray(), ref.X.toarray(), rtol=1e-6)
