"""int32 and int64 index pointers give identical results in every step."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc as gsc


def _with_index_dtype(adata, dtype):
    x = sp.csr_matrix(adata.X, copy=True)
    # scipy shrinks int64 indices that fit into int32 on construction; set them afterwards
    x.indices, x.indptr = x.indices.astype(dtype), x.indptr.astype(dtype)
    adata.X = x
    assert adata.X.indptr.dtype == dtype and adata.X.indices.dtype == dtype
    return adata


@pytest.mark.parametrize(
    "step",
    [
        lambda a: gsc.pp.normalize_total(a, exclude_highly_expressed=True, key_added="nf"),
        lambda a: gsc.pp.log1p(a),
        lambda a: gsc.pp.filter_cells(a, min_genes=100),
        lambda a: gsc.pp.filter_genes(a, min_counts=30),
    ],
)
def test_steps_identical(brain, step):
    a32 = _with_index_dtype(brain.copy(), np.int32)
    a64 = _with_index_dtype(brain.copy(), np.int64)
    for a in (a32, a64):
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step(a)
    assert a32.obs.equals(a64.obs) and a32.var.equals(a64.var)
    assert np.array_equal(a32.X.data, a64.X.data) and np.array_equal(a32.X.indices, a64.X.indices)


def test_qc_identical(brain):
    a32 = _with_index_dtype(brain.copy(), np.int32)
    a64 = _with_index_dtype(brain.copy(), np.int64)
    o32, v32 = gsc.pp.calculate_qc_metrics(a32, qc_vars=["mt"], percent_top=(10, 100))
    o64, v64 = gsc.pp.calculate_qc_metrics(a64, qc_vars=["mt"], percent_top=(10, 100))
    assert v32.equals(v64)
    # n_genes_by_counts follows the indptr dtype, as in scanpy; the values are the same
    assert o64["n_genes_by_counts"].dtype == np.int64
    assert np.array_equal(o32.to_numpy(dtype=float), o64.to_numpy(dtype=float), equal_nan=True)


def _mixed(adata, dtype):
    """int64 indptr with `dtype` indices (scipy keeps such a pair; a matrix past 2**31 stored
    values has it)."""
    x = sp.csr_matrix(adata.X, copy=True)
    x.indices, x.indptr = x.indices.astype(dtype), x.indptr.astype(np.int64)
    adata.X = x
    assert adata.X.indptr.dtype == np.int64 and adata.X.indices.dtype == dtype
    return adata


_LATER_STEPS = {  # the steps after the ones above, each read as arrays to compare
    "hvg_seurat": lambda a: gsc.pp.highly_variable_genes(a, inplace=False)[["means", "dispersions",
                                                                            "dispersions_norm"]].to_numpy(float),
    "hvg_v3": lambda a: gsc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=200, layer="counts",
                                                     inplace=False)["variances_norm"].to_numpy(float),
    "scale": lambda a: gsc.pp.scale(a, max_value=10, copy=True).X,
    "pca": lambda a: gsc.pp.pca(a, n_comps=10, copy=True).obsm["X_pca"],
    "neighbors": lambda a: (gsc.pp.pca(a, n_comps=10), gsc.pp.neighbors(a, n_neighbors=10),
                            a.obsp["connectivities"].toarray())[-1],
    "markers": lambda a: np.concatenate([
        np.asarray(gsc.tl.rank_genes_groups(a, "bulk_labels", method=m, copy=True).uns["rank_genes_groups"]["scores"]
                   .tolist(), float).ravel() for m in ("t-test", "wilcoxon")]),
    "aggregate": lambda a: np.concatenate([gsc.get.aggregate(a, "bulk_labels", f).layers[f].ravel()
                                           for f in ("sum", "mean", "var", "count_nonzero")]),
    "score_genes": lambda a: (gsc.tl.score_genes(a, list(a.var_names[:20]), random_state=0),
                              a.obs["score"].to_numpy())[-1],
    "regress_out": lambda a: gsc.pp.regress_out(a, ["n_counts"], copy=True).X,
}


@pytest.mark.parametrize("step", list(_LATER_STEPS))
def test_later_steps_identical_for_int64_and_mixed_indices(pbmc, step):
    """The rest of the analysis on log-normalised counts whose CSR has int64 indptr (with int64
    or int32 indices): what int32 gives, to the bit."""
    import warnings

    a = pbmc.copy()
    a.layers["counts"] = a.X.copy()
    a.obs["n_counts"] = np.asarray(a.X.sum(1)).ravel()
    gsc.pp.normalize_total(a)
    gsc.pp.log1p(a)
    got = []
    for make in (lambda b: _with_index_dtype(b, np.int32), lambda b: _mixed(b, np.int64),
                 lambda b: _mixed(b, np.int32)):  # fmt: skip
        b = make(a.copy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = _LATER_STEPS[step](b)
        got.append(out.toarray() if sp.issparse(out) else np.asarray(out))
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])
