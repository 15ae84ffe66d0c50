"""Bundled loaders and deterministic resampling."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_sc as gsc


def test_loaders():
    pbmc = gsc.datasets.pbmc68k_reduced()
    assert pbmc.shape == (700, 765) and "bulk_labels" in pbmc.obs
    brain = gsc.datasets.mouse_brain_10k()
    assert brain.shape == (10_000, 1_000)
    for a in (pbmc, brain):
        assert a.X.format == "csr" and np.array_equal(a.X.data, np.round(a.X.data))


def test_resample_is_deterministic_and_thins(pbmc):
    a = gsc.datasets.resample(pbmc, 1500, seed=3)
    b = gsc.datasets.resample(pbmc, 1500, seed=3)
    c = gsc.datasets.resample(pbmc, 1500, seed=4)
    assert a.shape == (1500, pbmc.n_vars) and a.X.indptr.dtype == np.int32
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0
    source = pbmc[a.obs["source_cell"].to_numpy()].X
    assert (a.X > source).nnz == 0  # thinning never adds counts
    assert a.X.sum() < source.sum()
    assert a.obs_names[0] == "cell_0" and (a.obs["bulk_labels"].to_numpy() == pbmc.obs["bulk_labels"][a.obs["source_cell"]].to_numpy()).all()


def test_resample_in_chunks_equals_one_chunk(pbmc):
    one = gsc.datasets.resample(pbmc, 999, seed=0, thin=1.0)
    many = gsc.datasets.resample(pbmc, 999, seed=0, thin=1.0, chunk_size=100)
    assert (one.X != many.X).nnz == 0


@pytest.mark.parametrize(("kw", "match"), [({"n_cells": 0}, "n_cells"), ({"n_cells": 5, "thin": 0}, "thin")])
def test_resample_bad_arguments(pbmc, kw, match):
    with pytest.raises(ValueError, match=match):
        gsc.datasets.resample(pbmc, **kw)


def test_resample_rejects_non_counts(pbmc):
    pbmc.X = pbmc.X * 0.5
    with pytest.raises(ValueError, match="integer counts"):
        gsc.datasets.resample(pbmc, 10)
