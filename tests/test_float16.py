"""Dense float16 data (scipy.sparse has no float16) runs every step with scanpy's dtypes and,
to float16 rounding, its values: numba has no float16, so the CPU primitives read it in float32
or use numpy. Where scanpy accumulates in float16 (per-gene sums, the squares of its variance)
ours are the exact values rounded once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc

from _helpers import assert_close

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


def _std_steps(var):
    """scanpy's std of float16 data, in float16 steps relative to its value: it squares float16
    values in float16 (half a step each), so its variance is within half a step of the mean of
    squares, (1 + mean^2 / var) / 2 steps of the variance, half that of the std."""
    m, s = var["mean"].to_numpy(np.float64), var["std"].to_numpy(np.float64)
    return np.where(s > 0, (1 + m * m / np.where(s > 0, s * s, 1.0)) / 4, 0.0)


@pytest.mark.parametrize("step", list(STEPS))
def test_float16_matches_scanpy(half, step):
    ours, theirs = half.copy(), half.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        STEPS[step](gsc, ours)
        STEPS[step](sc, theirs)
    assert ours.X.dtype == theirs.X.dtype == np.float16
    if "std" in theirs.var:
        # scale: each side rounds its float32 / float64 result to float16 once, and every value is
        # divided by scanpy's float16 std (_std_steps); centred values near zero: absolute, one step
        # at the unit variance
        ref = np.abs(theirs.X.astype(np.float64))
        assert_close(ours.X, theirs.X, dtype=np.float16, ulps=1, scale=ref * _std_steps(theirs.var) + 1.0)
    else:  # normalize_total, then log1p, each rounding to float16 on each side: two steps
        assert_close(ours.X, theirs.X, dtype=np.float16, ulps=2)
    for ours_df, theirs_df, skip in ((ours.obs, theirs.obs, ()), (ours.var, theirs.var, GENE_SUMS)):
        assert list(ours_df.columns) == list(theirs_df.columns)
        for c in theirs_df.columns:
            assert ours_df[c].dtype == theirs_df[c].dtype, c
            if c == "std":
                ref = np.abs(theirs_df[c].to_numpy(np.float64))
                assert_close(ours_df[c], theirs_df[c], dtype=np.float16, ulps=1, scale=ref * _std_steps(theirs_df),
                             err_msg=c)  # fmt: skip
            elif ours_df[c].dtype.kind == "f" and c not in skip:
                # statistics of float16 values, which each side rounds at most twice on the way from
                # float16 inputs to the column: two float16 steps
                assert_close(ours_df[c], theirs_df[c], dtype=np.float16, ulps=2, err_msg=c)
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


GPU_STEPS = {**STEPS, "exclude_highly_expressed": lambda m, a: m.pp.normalize_total(a, exclude_highly_expressed=True),
             "hvg_seurat_v3": lambda m, a: m.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=50)}  # fmt: skip


@pytest.mark.parametrize("step", list(GPU_STEPS))
def test_float16_on_the_device_matches_the_host(half, step, device):
    """to_gpu keeps a dense float16 X; the device primitives must take it as the host ones do
    (the kernels are compiled for float32/float64: normalize_total and scale once refused it)."""
    host, dev = half[:150].copy(), half[:150].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GPU_STEPS[step](gsc, host)
        gsc.get.to_gpu(dev)
        GPU_STEPS[step](gsc, dev)
        gsc.get.to_cpu(dev)
    assert dev.X.dtype == host.X.dtype == np.float16
    assert_close(dev.X, host.X, dtype=np.float16, ulps=1)  # one rounding to float16 on each side
    for d, h in ((dev.obs, host.obs), (dev.var, host.var)):
        assert list(d.columns) == list(h.columns)
        for c in h.columns:
            if h[c].dtype.kind == "f":
                assert_close(d[c], h[c], dtype=np.float32, ulps=4, n_terms=host.n_obs, err_msg=c)
            else:
                assert d[c].equals(h[c]), c


@pytest.mark.parametrize("divisor_dtype", [np.float16, np.float32, np.float64])
def test_float16_rows_divided_as_numpy_divides_in_place(half, divisor_dtype):
    """float16 values divided by wider divisors (normalize_total's factors with a NumPy float64
    target_sum) are divided in the wider dtype and rounded once, as NumPy's x /= d[:, None] in
    scanpy; they were divided by the divisors rounded to float16 first."""
    from gpu_sc import _ops

    x = np.ascontiguousarray(half.X)
    d = (np.asarray(x.sum(1, dtype=np.float64)) / np.float64(1e4)).astype(divisor_dtype)
    d[0] = 0  # a zero divisor leaves its row
    want = x.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(want, d[:, None], out=want, where=d[:, None] != 0)
    got = x.copy()
    _ops.divide_rows(_ops.parts(got), d)
    np.testing.assert_array_equal(got, want, strict=True)
