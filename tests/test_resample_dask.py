"""resample(..., as_dask=True): a lazily made Dask matrix equal to the in-memory one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc as gsc
from gpu_sc import datasets

da = pytest.importorskip("dask.array")


def _same(a, b) -> bool:
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))  # fmt: skip


@pytest.mark.parametrize(("n_cells", "chunk_size", "thin"), [(1000, 150, 0.8), (640, 64, 1.0), (90, 1000, 0.5)])
def test_lazy_equals_in_memory(pbmc, n_cells, chunk_size, thin):
    eager = gsc.datasets.resample(pbmc, n_cells, seed=5, chunk_size=chunk_size, thin=thin)
    lazy = gsc.datasets.resample(pbmc, n_cells, seed=5, chunk_size=chunk_size, thin=thin, as_dask=True)
    assert isinstance(lazy.X, da.Array) and lazy.X.chunks[0][0] == min(chunk_size, n_cells)
    assert lazy.X.dtype == np.float32 and isinstance(lazy.X._meta, sp.csr_matrix)
    assert lazy.obs.equals(eager.obs) and lazy.var.equals(eager.var) and lazy.obs_names.is_unique
    x = lazy.X.compute()
    assert x.indices.dtype == np.int32 and _same(x, eager.X)


def test_nothing_made_before_compute_and_states_kept(pbmc, monkeypatch):
    made = []
    block = datasets._resample_block

    def counting(x, rows, thin, rng):
        made.append(len(rows))
        return block(x, rows, thin, rng)

    monkeypatch.setattr(datasets, "_resample_block", counting)
    eager = gsc.datasets.resample(pbmc, 500, seed=1, chunk_size=100)
    made.clear()
    lazy = gsc.datasets.resample(pbmc, 500, seed=1, chunk_size=100, as_dask=True)
    y = lazy.X[50:450, :10]  # still lazy
    assert made == []
    assert _same(lazy.X.blocks[3].compute(), eager.X[300:400])
    assert len(made) == 4  # blocks 0-2 replayed once for their draws, then block 3
    assert _same(lazy.X.blocks[1].compute(), eager.X[100:200]) and len(made) == 5  # state kept
    assert _same(y.compute(), eager.X[50:450, :10])
    copy = pickle.loads(pickle.dumps(lazy.X))  # a process scheduler's copy works too
    assert _same(copy.blocks[4].compute(), eager.X[400:])


def test_lazy_progress_and_int_input(capsys):
    src = gsc.datasets.resample(gsc.datasets.pbmc68k_reduced(), 40, seed=0)
    src.X = src.X.toarray().astype(np.int64)
    lazy = gsc.datasets.resample(src, 120, seed=2, chunk_size=50, progress=True, as_dask=True)
    assert capsys.readouterr().err == ""
    assert _same(lazy.X.compute(), gsc.datasets.resample(src, 120, seed=2, chunk_size=50).X)
    assert len(capsys.readouterr().err.splitlines()) == 3
