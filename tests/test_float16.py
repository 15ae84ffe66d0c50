"""Dense float16 data (scipy.sparse has no float16) runs every step with scanpy's dtypes and,
to float16 rounding, its values: numba has no float16, so the CPU primitives read it in float32
or use numpy. Where scanpy accumulates in float16 (per-gene sums, the squares of its variance)
ours are the exact values rounded once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc

from _helpers import assert_close, eps

import gpu_sc as gsc


@pytest.fixture
def half(pbmc):
    a = pbmc[:, :300].copy()
    a.X = a.X.toarray().astype(np.float16)
    return a


STEPS = {
    "qc": lambda m, a: m.pp.calculate_qc_metrics(a, percent_top=[5, 20], inplace=True),
    "filter_cells": lambda m, a: m.pp.filter_cells(a, min_counts=40),
    "filter_genes": lambda m, a: m.pp.filter_genes(a, min_counts=30),
    "normalize_total": lambda m, a: m.pp.normalize_total(a, key_added="nf"),
    "log1p": lambda m, a: (m.pp.normalize_total(a), m.pp.log1p(a)),
    "scale": lambda m, a: m.pp.scale(a),
    "scale_no_center": lambda m, a: m.pp.scale(a, zero_center=False),
}


# per-gene float16 sums: test_float16_gene_sums_are_exact
GENE_SUMS = ("total_counts", "log1p_total_counts", "n_counts")


@pytest.mark.parametrize("step", list(STEPS))
def test_float16_matches_scanpy(half, step):
    ours, theirs = half.copy(), half.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        STEPS[step](gsc, ours)
        STEPS[step](sc, theirs)
    assert ours.X.dtype == theirs.X.dtype == np.float16
    # two float16 steps (each side rounds its float32 / float64 result once); absolute near zero
    np.testing.assert_allclose(ours.X, theirs.X, rtol=2 * eps(np.float16), atol=eps(np.float16))
    for ours_df, theirs_df, skip in ((ours.obs, theirs.obs, ()), (ours.var, theirs.var, GENE_SUMS)):
        assert list(ours_df.columns) == list(theirs_df.columns)
        for c in theirs_df.columns:
            assert ours_df[c].dtype == theirs_df[c].dtype, c
            if ours_df[c].dtype.kind == "f" and c not in skip:
                np.testing.assert_allclose(ours_df[c], theirs_df[c], rtol=2 * eps(np.float16), err_msg=c)
            elif c not in skip:
                assert ours_df[c].equals(theirs_df[c]), c


@pytest.mark.parametrize("step", ["qc", "filter_genes"])
def test_float16_gene_sums_are_exact(half, step):
    """scanpy sums float16 in float16 (about 1 % off at 3,500); ours round the exact sum once."""
    ours = half.copy()
    STEPS[step](gsc, ours)
    column = "total_counts" if step == "qc" else "n_counts"
    exact = half.X.astype(np.float64).sum(axis=0)[half.var_names.get_indexer(ours.var_names)]
    np.testing.assert_array_equal(ours.var[column], exact.astype(np.float16))


def test_float16_pca_matches_scanpy(half):
    ours, theirs = half.copy(), half.copy()
    for a in (ours, theirs):
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    gsc.pp.pca(ours, n_comps=10)
    sc.pp.pca(theirs, n_comps=10)
    assert ours.obsm["X_pca"].dtype == theirs.obsm["X_pca"].dtype == np.float32
    r = theirs.uns["pca"]["variance_ratio"]  # scanpy's PCA of float32 data in float32: sums over cells
    assert_close(ours.uns["pca"]["variance_ratio"], r, dtype=np.float32, n_terms=ours.n_obs, scale="max")
