"""calculate_qc_metrics equals scanpy's on real counts, across parameters and storage types."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, assert_close

import gpu_sc as gsc


def _reference(adata, **kw):
    a = adata.copy()
    a.X = a.X.get() if hasattr(a.X, "get") else a.X
    if sp.issparse(a.X):  # scipy's matrix classes (scanpy fails on sparse arrays), format kept
        a.X = sp.csc_matrix(a.X) if a.X.format == "csc" else sp.csr_matrix(a.X)
    return sc.pp.calculate_qc_metrics(a, **kw)


def _assert_frames(ours, ref):
    assert list(ours.columns) == list(ref.columns)
    for col in ref.columns:
        assert ours[col].dtype == ref[col].dtype, col
    # integer counts: exact sums; ratios, percentages and logs of them, which scanpy computes in
    # float32 for float32 data: a few float32 roundings each
    assert_close(ours, ref, dtype=np.float32)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"qc_vars": ["mt"], "percent_top": (1, 5, 50, 100)},
        {"qc_vars": "mt", "percent_top": None, "log1p": False},
        {"expr_type": "umis", "var_type": "features", "percent_top": [200, 20]},
    ],
)
def test_matches_scanpy(counts, cpu_type, kw):
    if max(kw.get("percent_top") or (0,)) > counts.n_vars or (
        "percent_top" not in kw and counts.n_vars < 500
    ):
        kw = {**kw, "percent_top": (10, 100)}
    counts.X = as_type(counts.X, cpu_type)
    ref_obs, ref_var = _reference(counts, **kw)
    obs, var = gsc.pp.calculate_qc_metrics(counts, **kw)
    _assert_frames(obs, ref_obs)
    _assert_frames(var, ref_var)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64, np.uint16])
def test_dtypes_follow_scanpy(pbmc, dtype):
    pbmc.X = pbmc.X.astype(dtype)
    ref_obs, ref_var = _reference(pbmc, qc_vars=["mt"], percent_top=(5, 50))
    obs, var = gsc.pp.calculate_qc_metrics(pbmc, qc_vars=["mt"], percent_top=(5, 50))
    _assert_frames(obs, ref_obs)
    _assert_frames(var, ref_var)


def test_csc_counts_dtypes_follow_scanpy(pbmc):
    """CSC: the per-gene counts take the index dtype (int32 here), the per-cell ones int64."""
    pbmc.X = pbmc.X.tocsc()
    ref_obs, ref_var = _reference(pbmc, qc_vars=["mt"], percent_top=(5, 50))
    obs, var = gsc.pp.calculate_qc_metrics(pbmc, qc_vars=["mt"], percent_top=(5, 50))
    _assert_frames(obs, ref_obs)
    _assert_frames(var, ref_var)
    assert obs["n_genes_by_counts"].dtype == np.int64 and var["n_cells_by_counts"].dtype == np.int32


def test_inplace_writes_obs_and_var_and_leaves_x(pbmc):
    x_before = pbmc.X.copy()
    pbmc.X[0, 0] = 0  # an explicit zero: scanpy would drop it from X, we must not touch X
    x_before = pbmc.X.copy()
    assert gsc.pp.calculate_qc_metrics(pbmc, qc_vars=["mt"], inplace=True, percent_top=(50,)) is None
    for key in ["n_genes_by_counts", "total_counts", "pct_counts_mt", "pct_counts_in_top_50_genes"]:
        assert key in pbmc.obs
    for key in ["n_cells_by_counts", "mean_counts", "pct_dropout_by_counts", "total_counts"]:
        assert key in pbmc.var
    assert pbmc.X.nnz == x_before.nnz and (x_before != pbmc.X).nnz == 0


def test_layer(pbmc):
    pbmc.layers["counts"] = pbmc.X.copy()
    pbmc.X = pbmc.X * 0
    obs, _ = gsc.pp.calculate_qc_metrics(pbmc, layer="counts", percent_top=None)
    assert obs["total_counts"].sum() > 0


def test_all_zero_cell_gives_nan_percentages_like_scanpy(brain):
    ref_obs, _ = _reference(brain, qc_vars=["mt"], percent_top=(10,))
    obs, _ = gsc.pp.calculate_qc_metrics(brain, qc_vars=["mt"], percent_top=(10,))
    zero = (obs["total_counts"] == 0).to_numpy()
    assert zero.sum() == 1
    assert np.isnan(obs.loc[zero, "pct_counts_in_top_10_genes"]).all()
    assert_close(obs, ref_obs, dtype=np.float32)  # as _assert_frames


def test_percent_top_out_of_range(pbmc):
    with pytest.raises(IndexError, match="percent_top"):
        gsc.pp.calculate_qc_metrics(pbmc, percent_top=(10, pbmc.n_vars + 1))


def test_unknown_qc_var(pbmc):
    with pytest.raises(KeyError, match="not a column of adata.var"):
        gsc.pp.calculate_qc_metrics(pbmc, qc_vars=["ribo"])


def test_use_raw(pbmc):
    pbmc.raw = pbmc.copy()
    pbmc.X = pbmc.X * 0
    ref_obs, ref_var = sc.pp.calculate_qc_metrics(pbmc.copy(), use_raw=True, percent_top=(5,))
    obs, var = gsc.pp.calculate_qc_metrics(pbmc, use_raw=True, percent_top=(5,))
    _assert_frames(obs, ref_obs)
    _assert_frames(var, ref_var)


def test_view_and_existing_columns(pbmc):
    view = pbmc[::2]
    ref_obs, _ = sc.pp.calculate_qc_metrics(view.copy(), percent_top=(5,))
    pbmc.obs["total_counts"] = -1.0  # stale column: overwritten like scanpy
    gsc.pp.calculate_qc_metrics(pbmc, percent_top=(5,), inplace=True)
    obs, _ = gsc.pp.calculate_qc_metrics(view, percent_top=(5,))
    _assert_frames(obs, ref_obs)
    assert (pbmc.obs["total_counts"] > 0).all()


def test_float_percent_top_and_parallel_as_scanpy(pbmc):
    """scanpy names a percent_top column after the value given (5.0, 5.5) and ranks by its integer
    part; its deprecated `parallel` gets its FutureWarning; a mask given as qc_vars is named as
    what it is."""
    a = pbmc[:60].copy()
    ours = gsc.pp.calculate_qc_metrics(a, percent_top=[5.5, 3.0], log1p=False)[0]
    theirs = sc.pp.calculate_qc_metrics(a, percent_top=[5.5, 3.0], log1p=False)[0]
    assert list(ours.columns) == list(theirs.columns)
    for c in ("pct_counts_in_top_3.0_genes", "pct_counts_in_top_5.5_genes"):
        np.testing.assert_allclose(ours[c], theirs[c], rtol=1e-12)
    with pytest.warns(FutureWarning, match="parallel"):
        gsc.pp.calculate_qc_metrics(a, parallel=True)
    with pytest.raises(KeyError, match="qc_vars takes names"):
        gsc.pp.calculate_qc_metrics(a, qc_vars=np.zeros(a.n_vars, bool))


def test_qc_var_over_other_genes_than_raw_says_so(pbmc):
    """use_raw after a gene filter: var's mask is shorter than raw's genes (scanpy: an IndexError;
    ours said the boolean column was not boolean)."""
    a = pbmc.copy()
    a.var["mt"] = np.arange(a.n_vars) % 7 == 0
    a.raw = a
    a = a[:, :500].copy()
    with pytest.raises(ValueError, match=r"adata.var\['mt'\] has 500 values but the matrix read has 765 genes"):
        gsc.pp.calculate_qc_metrics(a, qc_vars=["mt"], use_raw=True)


def test_use_raw_after_a_gene_filter(pbmc):
    """use_raw=True where raw holds more genes than var (a gene filter after raw was set): the gene
    metrics are those of raw's matrix, indexed by raw's genes: scanpy's metrics of an AnnData of
    raw (scanpy's own use_raw=True fails here, indexing them by var's genes); inplace writes them
    into var aligned on the gene names."""
    pbmc.raw = pbmc.copy()
    a = pbmc[:, 100:600].copy()
    a.X = a.X * 0
    ref_obs, ref_var = sc.pp.calculate_qc_metrics(a.raw.to_adata(), percent_top=(5,))
    obs, var = gsc.pp.calculate_qc_metrics(a, use_raw=True, percent_top=(5,))
    assert var.index.equals(a.raw.var_names)
    _assert_frames(obs, ref_obs)
    _assert_frames(var, ref_var)
    gsc.pp.calculate_qc_metrics(a, use_raw=True, percent_top=(5,), inplace=True)
    _assert_frames(a.var[ref_var.columns], ref_var.loc[a.var_names])
    _assert_frames(a.obs[ref_obs.columns], ref_obs)
