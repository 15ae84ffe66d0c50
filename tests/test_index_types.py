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
