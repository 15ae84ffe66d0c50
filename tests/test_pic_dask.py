"""The PIC steps after deconvolve on PICs held as a Dask array (row blocks, as deconvolve takes
them): each gives the in-memory result, and the matched interaction test reads the blocks a
chunk of PICs at a time instead of computing the whole matrix."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import PIC_DC, PIC_T, _load, counted_dask, t_dc_cells

from gpu_sc.pic import _matched, deconvolve, doublet_test, interaction_genes, pair_frequencies, triplet_scan
from gpu_sc.pic._pic_rows import PicRows
from gpu_sc.pic._simulate import simulate_pics

pytest.importorskip("dask.array")

ROWS = 97  # blocks that the test's chunks of PICs straddle


@pytest.fixture(scope="module")
def deconvolved():
    """T + DC reference cells and 400 PICs of them, deconvolved (ml) in memory."""
    ref = t_dc_cells(_load("pbmc68k_reduced_counts.h5ad"))
    pics = simulate_pics(ref, groupby="grp", a=PIC_T, b=PIC_DC, n_pics=400, n_umis=800, seed=3)
    deconvolve(pics, ref, groupby="grp", a=PIC_T, b=PIC_DC)
    return ref, pics


def _lazy(pics):
    """A copy of `pics` whose X is a Dask array of ROWS-row blocks, and the list of blocks made."""
    out = pics.copy()
    out.X, made = counted_dask(sp.csr_matrix(pics.X), rows=ROWS)
    return out, made


@pytest.mark.parametrize("kw", [{}, {"replicate_key": "true_a"}, {"method": "chi2"}],
                         ids=["matched", "units", "chi2"])  # fmt: skip
def test_interaction_genes_on_dask_blocks_equal_in_memory(deconvolved, kw, monkeypatch):
    ref, pics = deconvolved
    pics = pics.copy()
    if kw.get("method") == "chi2":
        from gpu_sc.pic import expected_expression

        expected_expression(pics, ref, groupby="grp")
    monkeypatch.setattr(_matched, "_CHUNK_PICS", 70)  # chunks of PICs across the blocks
    args = {} if kw.get("method") == "chi2" else {"singlets": ref, "groupby": "grp"}
    mem = interaction_genes(pics, **args, inplace=False, **kw)
    lazy, made = _lazy(pics)
    got = interaction_genes(lazy, **args, inplace=False, **kw)
    pd.testing.assert_frame_equal(got, mem)
    assert mem["tested"].sum() > 100
    assert made and set(made) == set(range(-(-pics.n_obs // ROWS)))


@pytest.mark.parametrize("genes", [None, "some"])
def test_expected_expression_on_dask_blocks_is_lazy_and_equal(deconvolved, genes):
    """Dask PICs give lazy layers with their row blocks (the call only checks the counts) whose
    values are the in-memory layers'; the chi2 test then reads them block by block."""
    import dask.array as da

    from gpu_sc.pic import expected_expression

    ref, pics = deconvolved
    pics = pics.copy()
    status = pics.obs["pic_status"].astype(str).to_numpy()
    status[:5] = "no_counts"  # NaN rows, left out of chi2
    pics.obs["pic_status"] = status
    sel = None if genes is None else pics.var_names[::3]
    lazy, made = _lazy(pics)
    expected_expression(pics, ref, groupby="grp", genes=sel)
    expected_expression(lazy, ref, groupby="grp", genes=sel)
    made.clear()  # the call's check of the counts read the blocks once; the layers read them again
    for key in ("pic_expected", "pic_expected_a", "pic_expected_b"):
        layer = lazy.layers[key]
        assert isinstance(layer, da.Array) and layer.chunks[0] == lazy.X.chunks[0]
        got, want = layer.compute(), pics.layers[key]
        if sp.issparse(want):
            assert sp.issparse(got)
            got, want = got.toarray(), want.toarray()
        np.testing.assert_array_equal(got, want)
    assert made  # computed from the blocks
    pd.testing.assert_frame_equal(interaction_genes(lazy, method="chi2", inplace=False),
                                  interaction_genes(pics, method="chi2", inplace=False))  # fmt: skip


def test_pic_rows_read_a_chunk_from_the_blocks_it_spans():
    """Rows of a Dask matrix come from the blocks they lie in (the last block kept, so chunks
    advancing through a block compute it once) and equal the in-memory rows; bad counts are
    refused with the block named."""
    x = sp.random(50, 7, density=0.4, format="csr", random_state=0)
    x.data = np.ceil(x.data * 5)
    lazy, made = counted_dask(x, rows=10)
    rows = np.array([1, 3, 12, 13, 14, 38, 41, 49])
    pr, mem = PicRows(lazy, rows, step="t"), PicRows(x, rows, step="t")
    for start, stop in [(0, 2), (2, 4), (4, 5), (5, 8)]:
        assert (pr.host(start, stop) != mem.host(start, stop)).nnz == 0
    assert made == [0, 1, 3, 4]
    whole = pr.host(0, 8)  # one chunk of every row: made once, read again by the other passes
    assert (pr.host(0, 8) != mem.host(0, 8)).nnz == 0 and pr.host(0, 8) is whole
    assert made == [0, 1, 3, 4, 0, 1, 3, 4]
    assert pr.host(0, 0).shape == (0, 7)
    bad = x.copy()
    bad.data[-1] = 0.5
    with pytest.raises(ValueError, match="row block 4"):
        PicRows(counted_dask(bad, rows=10)[0], rows, step="t").host(5, 8)


def test_pair_frequencies_and_qc_on_dask_blocks_equal_in_memory(deconvolved):
    ref, pics = deconvolved
    lazy, _ = _lazy(pics)
    pd.testing.assert_frame_equal(pair_frequencies(lazy, ref, n_sim=40, n_boot=50),
                                  pair_frequencies(pics, ref, n_sim=40, n_boot=50))  # fmt: skip
    with_null = partial(doublet_test, alpha="fit", level=0.05)  # the null's depths: a pass over the blocks
    for step in (doublet_test, triplet_scan, with_null):
        a, b = pics.copy(), lazy.copy()
        step(a, ref, groupby="grp")
        step(b, ref, groupby="grp")
        new = [c for c in a.obs.columns if c not in pics.obs.columns]
        assert new
        pd.testing.assert_frame_equal(b.obs[new], a.obs[new])


@pytest.mark.parametrize("kind", ["dense", "csc"])
def test_dense_and_csc_blocks(deconvolved, kind):
    """Blocks of any layout the steps take in memory: dense and CSC blocks, of the PICs and of
    the singlets, give the in-memory doublet test and matched table (the QC steps' marker
    columns came back as CSC once, and CSC singlet blocks were read as CSR)."""
    import dask.array as da

    def blocks(m):
        x = sp.csr_matrix(m)
        return da.from_array(x.toarray(), chunks=(ROWS, -1)) if kind == "dense" else \
            da.from_array(x, chunks=(ROWS, -1), asarray=False).map_blocks(sp.csc_matrix, dtype=x.dtype)  # fmt: skip

    ref, pics = deconvolved
    lazy, lazy_ref = pics.copy(), ref.copy()
    lazy.X, lazy_ref.X = blocks(pics.X), blocks(ref.X)
    a, b = pics.copy(), lazy.copy()
    doublet_test(a, ref, groupby="grp")
    doublet_test(b, lazy_ref, groupby="grp")
    pd.testing.assert_frame_equal(b.obs, a.obs)
    pd.testing.assert_frame_equal(interaction_genes(lazy, ref, groupby="grp", inplace=False),
                                  interaction_genes(pics, ref, groupby="grp", inplace=False))  # fmt: skip


def test_interaction_genes_on_dask_gpu_blocks(device, deconvolved):
    """A Dask array of cupyx blocks with the singlets on the GPU: the CPU tables, and lazy
    expected layers of cupy blocks with the host's values."""
    import cupyx.scipy.sparse as cpsp

    from gpu_sc.get import to_gpu

    ref, pics = deconvolved
    lazy, _ = _lazy(pics)
    lazy.X = lazy.X.map_blocks(cpsp.csr_matrix, dtype=lazy.X.dtype, meta=cpsp.csr_matrix((0, 0), dtype=lazy.X.dtype))
    gref = ref.copy()
    to_gpu(gref)
    pd.testing.assert_frame_equal(interaction_genes(lazy, gref, groupby="grp", inplace=False),
                                  interaction_genes(pics, ref, groupby="grp", inplace=False))  # fmt: skip
    from gpu_sc.pic import expected_expression

    host = pics.copy()
    expected_expression(host, ref, groupby="grp")
    expected_expression(lazy, gref, groupby="grp")
    np.testing.assert_array_equal(lazy.layers["pic_expected"].compute().get(), host.layers["pic_expected"])
    pd.testing.assert_frame_equal(interaction_genes(lazy, method="chi2", inplace=False),
                                  interaction_genes(host, method="chi2", inplace=False))  # fmt: skip


def test_qc_and_deconvolve_on_dask_gpu_blocks(device, deconvolved):
    """PICs as a Dask array of cupyx blocks (the dask-cuda case), singlets on the GPU or as
    such an array too: doublet_test and triplet_scan mixed host and device arrays (TypeError),
    and deconvolve(device=None) ran on the CPU engine, copying every block to the host (both
    from an audit). Now the in-memory results, and deconvolve on the GPU."""
    import cupyx.scipy.sparse as cpsp

    from gpu_sc.get import to_gpu

    def gpu_blocks(x):
        return x.map_blocks(cpsp.csr_matrix, dtype=x.dtype, meta=cpsp.csr_matrix((0, 0), dtype=x.dtype))

    ref, pics = deconvolved
    lazy, _ = _lazy(pics)
    lazy.X = gpu_blocks(lazy.X)
    gref, lazy_ref = ref.copy(), ref.copy()
    to_gpu(gref)
    lazy_ref.X = gpu_blocks(counted_dask(sp.csr_matrix(ref.X), rows=ROWS)[0])
    for step in (doublet_test, triplet_scan):
        want = step(pics, ref, groupby="grp", inplace=False)
        for singlets in (gref, lazy_ref):
            pd.testing.assert_frame_equal(step(lazy, singlets, groupby="grp", inplace=False), want,
                                          check_exact=False, rtol=1e-9)  # fmt: skip
    small = lazy[:60].copy()
    deconvolve(small, ref, groupby="grp", a=PIC_T, b=PIC_DC, alpha_model="posterior")
    assert small.uns["pic"]["device"] == "gpu"
    host = pics[:60].copy()
    deconvolve(host, ref, groupby="grp", a=PIC_T, b=PIC_DC, alpha_model="posterior")
    pd.testing.assert_series_equal(small.obs["pic_a"], host.obs["pic_a"])
