"""Bad input raises a clear error and leaves the AnnData exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_adata_equal

import gpu_sc as gsc

STEPS = {
    "calculate_qc_metrics": lambda a: gsc.pp.calculate_qc_metrics(a, inplace=True, percent_top=(5,)),
    "filter_cells": lambda a: gsc.pp.filter_cells(a, min_genes=5),
    "filter_genes": lambda a: gsc.pp.filter_genes(a, min_cells=2),
    "normalize_total": lambda a: gsc.pp.normalize_total(a, key_added="nf"),
}


def _poison(adata, value):
    x = adata.X.copy()
    x.data[7] = value
    adata.X = x


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize(
    ("value", "match"), [(-1.0, "negative"), (np.nan, "non-finite"), (np.inf, "non-finite")]
)
@pytest.mark.parametrize("dense", [False, True])
def test_bad_counts_raise_and_leave_adata(pbmc, step, value, match, dense):
    _poison(pbmc, value)
    if dense:
        pbmc.X = pbmc.X.toarray()
    before = pbmc.copy()
    with pytest.raises(ValueError, match=match) as e:
        STEPS[step](pbmc)
    assert step in str(e.value) and "CPU" in str(e.value)  # says what and where it got
    assert_adata_equal(pbmc, before)


@pytest.mark.parametrize("step", ["calculate_qc_metrics", "normalize_total"])
@pytest.mark.parametrize("shape", [(0, 10), (10, 0)])
def test_empty_matrix(step, shape):
    import anndata as ad

    a = ad.AnnData(sp.csr_matrix(shape, dtype=np.float32))
    with pytest.raises(ValueError, match="empty matrix"):
        STEPS[step](a)


@pytest.mark.parametrize("step", STEPS)
def test_boolean_matrix(pbmc, step):
    pbmc.X = pbmc.X > 0
    before = pbmc.copy()
    with pytest.raises(TypeError, match="numeric"):
        STEPS[step](pbmc)
    assert_adata_equal(pbmc, before)


def test_missing_layer(pbmc):
    before = pbmc.copy()
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        gsc.pp.normalize_total(pbmc, layer="counts")
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        gsc.pp.log1p(pbmc, layer="counts")
    assert_adata_equal(pbmc, before)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_max_fraction(pbmc, bad):
    with pytest.raises(ValueError, match="max_fraction"):
        gsc.pp.normalize_total(pbmc, exclude_highly_expressed=True, max_fraction=bad)


@pytest.mark.parametrize("bad", [0, -5, np.inf, np.nan])
def test_bad_target_sum(pbmc, bad):
    before = pbmc.copy()
    with pytest.raises(ValueError, match="target_sum"):
        gsc.pp.normalize_total(pbmc, target_sum=bad)
    assert_adata_equal(pbmc, before)


def test_all_cells_zero(pbmc):
    pbmc.X = sp.csr_matrix(pbmc.shape, dtype=np.float32)
    before = pbmc.copy()
    with pytest.raises(ValueError, match="every cell has zero counts"):
        gsc.pp.normalize_total(pbmc)
    assert_adata_equal(pbmc, before)


def test_not_an_array(pbmc):
    with pytest.raises(TypeError, match="expected a 2-D"):
        gsc.pp.filter_cells([[1, 2], [3, 4]], min_counts=1)
    with pytest.raises(TypeError, match="expected an AnnData"):
        gsc.pp.normalize_total(pbmc.X)


def test_csc_is_accepted_and_left_as_it_is(pbmc):
    ref, _ = gsc.pp.calculate_qc_metrics(pbmc, percent_top=(5,))
    pbmc.X = pbmc.X.tocsc()
    obs, _ = gsc.pp.calculate_qc_metrics(pbmc, percent_top=(5,))
    assert obs.astype(ref.dtypes).equals(ref)  # same values; the count dtypes follow scanpy's CSC rule
    assert pbmc.X.format == "csc"  # QC does not rewrite the user's matrix


def test_coo_matrix_input(pbmc):
    ref = gsc.pp.filter_cells(pbmc.X, min_genes=100)
    out = gsc.pp.filter_cells(pbmc.X.tocoo(), min_genes=100)
    assert np.array_equal(ref[0], out[0]) and np.array_equal(ref[1], out[1])
