"""Bundled loaders and deterministic resampling."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc as gsc
from gpu_sc import datasets


@pytest.mark.parametrize(
    ("loader", "shape"),
    [("pbmc68k_reduced", (700, 765)), ("mouse_brain_10k", (10_000, 1_000)), ("pbmc4k_half", (2_170, 33_694))],
)
def test_loaders(loader, shape):
    a = getattr(gsc.datasets, loader)()
    assert a.shape == shape
    assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32
    assert a.X.data.min() >= 0 and np.array_equal(a.X.data, np.round(a.X.data))  # raw integer counts
    assert a.X.sum() > 0
    if loader == "pbmc68k_reduced":
        assert a.obs["bulk_labels"].nunique() == 10
    if loader == "pbmc4k_half":
        assert {"T_CD4", "MNP", "B", "NK"} <= set(a.obs["Annotation"])
    a.X.data[:] = 0  # each call reads a fresh copy
    assert getattr(gsc.datasets, loader)().X.sum() > 0


def test_resample_is_deterministic_and_thins(pbmc):
    a = gsc.datasets.resample(pbmc, 1500, seed=3)
    b = gsc.datasets.resample(pbmc, 1500, seed=3)
    c = gsc.datasets.resample(pbmc, 1500, seed=4)
    assert a.shape == (1500, pbmc.n_vars) and a.var.equals(pbmc.var)
    assert a.X.format == "csr" and a.X.dtype == np.float32
    assert a.X.indptr.dtype == np.int32 and a.X.indices.dtype == np.int32
    assert a.X.has_sorted_indices and np.all(a.X.data > 0)  # explicit zeros dropped
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0 and not a.obs["source_cell"].equals(c.obs["source_cell"])
    source = pbmc[a.obs["source_cell"].to_numpy()].X
    assert (source < a.X).nnz == 0  # thinning never adds counts
    assert 0.75 < a.X.sum() / source.sum() < 0.85  # about `thin` of the UMIs kept
    assert np.array_equal(a.X.data, np.round(a.X.data))
    assert list(a.obs_names[:2]) == ["cell_0", "cell_1"]
    labels = pbmc.obs["bulk_labels"][a.obs["source_cell"]].to_numpy()
    assert (a.obs["bulk_labels"].to_numpy() == labels).all()


def test_resample_thin_one_copies_cells(pbmc):
    a = gsc.datasets.resample(pbmc, 300, seed=1, thin=1.0)
    assert (a.X != pbmc[a.obs["source_cell"].to_numpy()].X).nnz == 0


def test_resample_chunked_same_for_same_chunks(pbmc):
    one = gsc.datasets.resample(pbmc, 999, seed=0, thin=1.0)
    many = gsc.datasets.resample(pbmc, 999, seed=0, thin=1.0, chunk_size=100)
    assert (one.X != many.X).nnz == 0
    a = gsc.datasets.resample(pbmc, 999, seed=0, chunk_size=100)
    b = gsc.datasets.resample(pbmc, 999, seed=0, chunk_size=100)
    assert (a.X != b.X).nnz == 0 and a.X.nnz == b.X.nnz


def test_resample_more_cells_than_source_and_int_input():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(20, 30)).astype(np.int64)
    x[3] = 0  # an all-zero cell
    src = ad.AnnData(x)
    out = gsc.datasets.resample(src, 500, seed=2, chunk_size=64)
    assert out.shape == (500, 30) and out.X.dtype == np.float32 and out.X.indptr.dtype == np.int32
    assert out.obs.columns.tolist() == ["source_cell"]
    drawn = out.obs["source_cell"].to_numpy()
    assert (sp.csr_matrix(x[drawn.astype(int)].astype(np.float32)) < out.X).nnz == 0
    assert out.X[np.flatnonzero(drawn == "3")].nnz == 0


def test_resample_from_layer(pbmc):
    pbmc.layers["counts"] = pbmc.X.copy()
    pbmc.X = pbmc.X * 0.5  # not counts: must not be read
    a = gsc.datasets.resample(pbmc, 50, layer="counts")
    assert a.shape == (50, pbmc.n_vars)


def test_resample_int64_index_when_large(pbmc, monkeypatch):
    monkeypatch.setattr(datasets, "_INT32_MAX", 100)  # pretend nnz > 2**31 - 1
    a = gsc.datasets.resample(pbmc, 20)
    assert a.X.indptr.dtype == np.int64 and a.X.indices.dtype == np.int64
    assert (a.X != gsc.datasets.resample(pbmc, 20).X).nnz == 0


def test_resample_progress(pbmc, capsys):
    gsc.datasets.resample(pbmc, 250, chunk_size=100)
    assert capsys.readouterr().err == ""
    gsc.datasets.resample(pbmc, 250, chunk_size=100, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "250/250" in lines[-1]


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"n_cells": 0}, ValueError, "n_cells"),
        ({"n_cells": -5}, ValueError, "n_cells"),
        ({"n_cells": 2.5}, TypeError, "n_cells"),
        ({"n_cells": 5, "thin": 0}, ValueError, "thin"),
        ({"n_cells": 5, "thin": 1.5}, ValueError, "thin"),
        ({"n_cells": 5, "thin": float("nan")}, ValueError, "thin"),
        ({"n_cells": 5, "chunk_size": 0}, ValueError, "chunk_size"),
        ({"n_cells": 5, "seed": -1}, ValueError, "resample: seed must be a non-negative integer, got -1"),
        ({"n_cells": 5, "layer": "nope"}, KeyError, "nope"),
    ],
)
def test_resample_bad_arguments(pbmc, kw, error, match):
    with pytest.raises(error, match=match):
        gsc.datasets.resample(pbmc, **kw)


@pytest.mark.parametrize("change", ["half", "negative", "nan"])
def test_resample_rejects_non_counts(pbmc, change):
    pbmc.X = pbmc.X.copy()
    pbmc.X.data[0] = {"half": 0.5, "negative": -1.0, "nan": np.nan}[change]
    with pytest.raises(ValueError, match="integer counts|non-negative counts|non-finite"):
        gsc.datasets.resample(pbmc, 10)


def test_resample_rejects_empty_source(pbmc):
    with pytest.raises(ValueError, match="no cells"):
        gsc.datasets.resample(pbmc[:0].copy(), 10)


@pytest.mark.parametrize(("kw", "error"), [({"seed": -1}, ValueError), ({"seed": None}, TypeError),
                                           ({"n_pics": 0}, ValueError)])  # fmt: skip
def test_pic_demo_data_bad_arguments(kw, error):
    """Named in the step's words (numpy's bare message for seed=-1, a NoneType TypeError before)."""
    with pytest.raises(error, match=f"pbmc_t_dc_pics: {next(iter(kw))}"):
        gsc.datasets.pbmc_t_dc_pics(**kw)
