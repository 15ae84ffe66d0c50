"""Row-chunked Dask arrays through QC, filtering, normalize_total and log1p: the same results as
in memory (which match scanpy), lazy where the step transforms the matrix, clear errors."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import (ULPS, UMAP_CONN, assert_adata_equal, assert_close, assert_same, cells_for, counted_dask,
                      to_host)

import gpu_sc as gsc
from gpu_sc import _ops

da = pytest.importorskip("dask.array")

#: blocks of an uneven number of rows, so that the last block is short
ROWS = (999, 4096)


def as_dask(x, rows: int):
    """`x` (in memory) as a Dask array of `rows`-row blocks of the same kind."""
    return da.from_array(x, chunks=(rows, -1), asarray=False)


def dask_twin(adata, rows: int, kind: str = "csr"):
    """A copy of `adata` whose X is a Dask array of `kind` blocks ('csr' or 'numpy')."""
    out = adata.copy()
    x = sp.csr_matrix(adata.X) if kind == "csr" else adata.X.toarray()
    out.X = as_dask(x, rows)
    if kind == "numpy":
        adata.X = x
    return out


def computed(adata):
    """`adata` with a computed X (for exact comparison with the in-memory twin)."""
    out = adata.copy()
    out.X = out.X.compute()
    return out


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_qc_metrics(brain, rows, kind):
    lazy = dask_twin(brain, rows, kind)
    obs, var = gsc.pp.calculate_qc_metrics(brain, qc_vars="mt", percent_top=(5, 50, 200))
    obs_d, var_d = gsc.pp.calculate_qc_metrics(lazy, qc_vars="mt", percent_top=(5, 50, 200))
    # raw counts: float64 sums of integers are exact in any block order
    pd.testing.assert_frame_equal(obs, obs_d, check_exact=True)
    pd.testing.assert_frame_equal(var, var_d, check_exact=True)


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_filters(pbmc, kind):
    lazy = dask_twin(pbmc, 128, kind)
    for fn, kw in [(gsc.pp.filter_cells, {"min_genes": 300}), (gsc.pp.filter_genes, {"min_cells": 20}),
                   (gsc.pp.filter_cells, {"max_counts": 3000}), (gsc.pp.filter_genes, {"min_counts": 50})]:  # fmt: skip
        fn(pbmc, **kw)
        fn(lazy, **kw)
        assert isinstance(lazy.X, da.Array)
    assert_adata_equal(pbmc, computed(lazy))


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("kind", ["csr", "numpy"])
@pytest.mark.parametrize("kw", [{}, {"target_sum": 1e4}, {"exclude_highly_expressed": True, "max_fraction": 0.1}])
def test_normalize_log1p(brain, rows, kind, kw):
    lazy = dask_twin(brain, rows, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled data has a cell without counts
        gsc.pp.normalize_total(brain, key_added="nf", **kw)
        gsc.pp.normalize_total(lazy, key_added="nf", **kw)
    assert isinstance(lazy.X, da.Array) and lazy.X.chunks == ((rows,) * (10000 // rows) + (10000 % rows,), (1000,))
    gsc.pp.log1p(brain, base=2)
    gsc.pp.log1p(lazy, base=2)
    assert isinstance(lazy.X, da.Array)
    assert_adata_equal(brain, computed(lazy))


def test_integer_dask_counts(pbmc):
    """Integer blocks: float32 after normalize_total, float64 after log1p, as in memory."""
    pbmc.X = sp.csr_matrix(pbmc.X.astype(np.int64))
    lazy = dask_twin(pbmc, 200)
    gsc.pp.normalize_total(pbmc)
    gsc.pp.normalize_total(lazy)
    assert lazy.X.dtype == np.float32
    bare = as_dask(sp.csr_matrix(np.arange(12).reshape(4, 3)), 3)
    out = gsc.pp.log1p(bare)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(to_host(out.compute()), np.log1p(np.arange(12).reshape(4, 3)))
    assert_adata_equal(pbmc, computed(lazy))


def test_log1p_of_csc_blocks_stays_csc(pbmc):
    """In memory a CSC stays CSC through log1p (as scanpy's, lazy or not): the lazy result's
    blocks and meta too, equal to the in-memory values (they came back CSR)."""
    x = sp.csc_matrix(pbmc.X)
    lazy = gsc.pp.log1p(as_dask(x, 120), base=2)
    mem = gsc.pp.log1p(x.copy(), base=2)
    assert sp.isspmatrix_csc(lazy._meta) and sp.isspmatrix_csc(mem)
    blocks = [lazy.blocks[i].compute() for i in range(lazy.numblocks[0])]
    assert all(sp.isspmatrix_csc(b) for b in blocks)
    assert_same(sp.vstack(blocks, format="csc"), mem)


def test_source_blocks_untouched(pbmc):
    """Transforms work on copies of the blocks: the Dask array the user holds is unchanged."""
    source = sp.csr_matrix(pbmc.X)
    kept = source.copy()
    lazy = dask_twin(pbmc, 100)
    lazy.X = as_dask(source, 100)
    gsc.pp.normalize_total(lazy)
    gsc.pp.log1p(lazy)
    lazy.X.compute()
    assert (source != kept).nnz == 0


def test_dense_source_blocks_untouched(pbmc):
    """Dense float blocks of the user's own array (from_array gives views of it) are copied before
    the lazy steps change them: the source keeps its values, and X computes the same twice."""
    source = pbmc.X.toarray()
    kept = source.copy()
    lazy = pbmc.copy()
    lazy.X = as_dask(source, 100)
    gsc.pp.normalize_total(lazy, target_sum=1e4)
    gsc.pp.log1p(lazy)
    gsc.pp.scale(lazy, zero_center=False)
    first = lazy.X.compute()
    np.testing.assert_array_equal(source, kept)
    np.testing.assert_array_equal(lazy.X.compute(), first)

def test_inplace_false_returns_lazy(pbmc):
    lazy = dask_twin(pbmc, 256)
    before = lazy.X
    out = gsc.pp.normalize_total(lazy, inplace=False, target_sum=100)
    assert lazy.X is before and isinstance(out["X"], da.Array)
    totals = to_host(out["X"].compute()).sum(axis=1)[to_host(out["norm_factor"]) > 0]  # float32 sums over genes
    assert_close(totals, np.full_like(totals, 100), dtype=np.float32, n_terms=lazy.n_vars)


@pytest.mark.parametrize("step", ["normalize_total", "log1p", "calculate_qc_metrics", "filter_genes"])
def test_chunked_along_genes_as_scanpy(pbmc, step):
    """A Dask array chunked along genes too (as scanpy's and anndata's helpers make them) is
    taken as scanpy takes it: rechunked lazily to whole rows, the same results as row blocks,
    the user's array itself unchanged."""
    kw = {"filter_genes": {"min_cells": 5}, "calculate_qc_metrics": {"inplace": True}}.get(step, {})
    lazy, rows = pbmc.copy(), pbmc.copy()
    lazy.X = da.from_array(sp.csr_matrix(pbmc.X), chunks=(100, 100), asarray=False)
    rows.X = da.from_array(sp.csr_matrix(pbmc.X), chunks=(100, -1), asarray=False)
    before = lazy.X
    getattr(gsc.pp, step)(lazy, **kw)
    getattr(gsc.pp, step)(rows, **kw)
    assert before.chunks[1] == (100,) * 7 + (65,)
    assert lazy.obs.equals(rows.obs) and lazy.var.equals(rows.var)
    np.testing.assert_array_equal(to_host(lazy.X.compute()), to_host(rows.X.compute()))


@pytest.mark.parametrize("step", ["log1p", "filter_cells", "filter_genes"])
def test_unknown_row_chunks_are_refused_clearly(step):
    """A Dask array of unknown row chunk sizes (boolean indexing by a Dask mask makes one) is
    refused with the call that fixes it, not a failure on NaN chunk bounds; fixed, it runs."""
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    d = da.from_array(x, chunks=(7, -1))
    unknown = d[d[:, 0] >= 0]
    kw = {"filter_cells": {"min_counts": 1}, "filter_genes": {"min_cells": 1}}.get(step, {})
    fn = getattr(gsc.pp, step)
    with pytest.raises(ValueError, match=r"row chunk sizes are unknown; call x.compute_chunk_sizes\(\) first"):
        fn(unknown, **kw)
    unknown.compute_chunk_sizes()
    got, want = fn(unknown, **kw), fn(x.copy(), **kw)
    if step == "log1p":
        np.testing.assert_array_equal(got.compute(), want)
    else:
        np.testing.assert_array_equal(got[1].compute(), want[1])

def test_bad_counts_leave_adata_untouched(pbmc):
    x = sp.csr_matrix(pbmc.X)
    x.data[5] = np.nan
    lazy = pbmc.copy()
    lazy.X = as_dask(x, 100)
    before = lazy.X
    with pytest.raises(ValueError, match="1 non-finite values .* in a Dask array"):
        gsc.pp.normalize_total(lazy)
    assert lazy.X is before and "log1p" not in lazy.uns


def test_non_finite_values_raise_from_dask(pbmc):
    """log1p checks each block when it is computed; hvg finds NaN in its per-gene means (the
    Dask matrix is not read an extra time). The source array is never changed."""
    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    x.data[5] = np.nan
    lazy = pbmc.copy()
    lazy.X = as_dask(x, 100)
    with pytest.raises(ValueError, match="NaN or inf values in a block of the Dask array"):
        gsc.pp.log1p(lazy.X).compute()
    with pytest.raises(ValueError, match="the mean of 1 genes is NaN or inf"):
        gsc.pp.highly_variable_genes(lazy, flavor="cell_ranger", n_top_genes=50)
    assert np.isnan(x.data[5]) and "highly_variable" not in lazy.var


def test_primitives_match_in_memory(brain):
    """Every primitive that takes a Chunked gives the in-memory answer (sums up to round-off)."""
    from gpu_sc._ops import gram

    x = sp.csr_matrix(brain.X)
    mem, lazy = _ops.parts(x), _ops.parts(as_dask(x, 777))
    for a, b in zip(_ops.row_sums(mem), _ops.row_sums(lazy), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_ops.top_sums(mem, [1, 10]), _ops.top_sums(lazy, [1, 10]))
    limits = np.full(x.shape[0], 20.0)
    np.testing.assert_array_equal(_ops.flag_cols_above(mem, limits), _ops.flag_cols_above(lazy, limits))
    # integer counts: float64 sums (of counts, squares, clipped counts, products) are exact in any order
    for a, b in zip(_ops.col_mean_var(mem), _ops.col_mean_var(lazy), strict=True):
        assert_same(b, a)
    clip = np.full(x.shape[1], 3.0)
    for a, b in zip(_ops.clipped_sums(mem, clip), _ops.clipped_sums(lazy, clip), strict=True):
        assert_same(b, a)
    rng = np.random.default_rng(0)
    q, mean, u = rng.random((x.shape[1], 3)), rng.random(x.shape[1]), rng.random((x.shape[0], 2))
    assert_same(gram.gram(lazy), gram.gram(mem))
    # real-valued factors: sums over cells cross the block boundaries (centred: relative to the largest)
    assert_close(gram.centred_normal_apply(lazy, q, mean), gram.centred_normal_apply(mem, q, mean),
                 dtype=np.float64, n_terms=sum(x.shape), scale="max")  # fmt: skip
    assert_same(gram.project(lazy, q, 1.0), gram.project(mem, q, 1.0))  # row by row: blocks change no sum
    assert_close(gram.transpose_apply(lazy, u), gram.transpose_apply(mem, u), dtype=np.float64, n_terms=x.shape[0])


def test_gpu_blocks_match_cpu(device, brain):
    """Dask of cupyx CSR blocks: QC, normalize_total and log1p equal the CPU Dask path."""
    import cupyx.scipy.sparse as cpsp

    brain = cells_for(device, brain, 1200)
    x = sp.csr_matrix(brain.X)
    cpu = brain.copy()
    cpu.X = as_dask(x, 2500 if device == "cuda" else 400)
    gpu = brain.copy()
    gpu.X = cpu.X.map_blocks(cpsp.csr_matrix, dtype=x.dtype, meta=cpsp.csr_matrix((0, x.shape[1]), dtype=x.dtype))
    obs_c, var_c = gsc.pp.calculate_qc_metrics(cpu)
    obs_g, var_g = gsc.pp.calculate_qc_metrics(gpu)
    # sums of integer counts (exact); ratios and logs rounded once to each column's dtype
    assert_close(obs_g, obs_c, dtype=np.float64, n_terms=x.shape[1])
    assert_close(var_g, var_c, dtype=np.float64, n_terms=x.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in (cpu, gpu):
            gsc.pp.normalize_total(a)
            gsc.pp.log1p(a)
    # float32 division (IEEE, exact rounding) and log1p (the device's and libm's differ by <= 1 step each)
    assert_close(gpu.X.compute(), cpu.X.compute(), dtype=np.float32)


def _pipeline(adata) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.calculate_qc_metrics(adata, qc_vars="mt", inplace=True)
        gsc.pp.filter_cells(adata, min_genes=200)
        gsc.pp.filter_genes(adata, min_cells=5)
        gsc.pp.normalize_total(adata)
        gsc.pp.log1p(adata)
        gsc.pp.highly_variable_genes(adata, n_top_genes=300, subset=True)
        gsc.pp.scale(adata, max_value=10)
        gsc.pp.pca(adata, n_comps=30)
        gsc.pp.neighbors(adata, n_neighbors=10)


def test_pipeline_end_to_end(pbmc):
    """The whole preprocessing path on Dask blocks gives the in-memory AnnData."""
    lazy = dask_twin(pbmc, 150)
    _pipeline(pbmc)
    _pipeline(lazy)
    assert isinstance(lazy.X, da.Array) and lazy.shape == pbmc.shape
    pd.testing.assert_frame_equal(pbmc.obs, lazy.obs, check_exact=True)  # sums of integer counts: exact
    # four chained float64 reductions over the cells in another block order (normalize_total's totals,
    # the HVG means and variances, scale's means and stds): 4 x ULPS steps; scaled values relative to the largest
    n = pbmc.n_obs
    assert_close(lazy.var, pbmc.var, dtype=np.float64, n_terms=n, ulps=4 * ULPS)
    assert_close(lazy.X.compute(), pbmc.X, dtype=np.float64, n_terms=n, ulps=4 * ULPS, scale="max")
    x_pca = pbmc.obsm["X_pca"]  # as test_dask_pca.assert_same_pca, after the chain
    assert_close(lazy.obsm["X_pca"], x_pca, dtype=np.float64, n_terms=n, ulps=4 * ULPS, out=x_pca.dtype, scale="max")
    ratio = pbmc.uns["pca"]["variance_ratio"]
    assert_close(lazy.uns["pca"]["variance_ratio"], ratio, dtype=np.float64, n_terms=n, ulps=4 * ULPS, out=ratio.dtype)
    # float32 distances over the 30 components; memberships from umap's bisection (UMAP_CONN)
    assert_close(lazy.obsp["distances"], pbmc.obsp["distances"], dtype=np.float32, n_terms=30, scale="max")
    assert abs(lazy.obsp["connectivities"] - pbmc.obsp["connectivities"]).max() <= UMAP_CONN


@pytest.mark.parametrize("kind", ["csr", "dense"])
@pytest.mark.parametrize(("step", "kw"), [("filter_cells", dict(min_genes=300)), ("filter_cells", dict(max_counts=900)),
                                          ("filter_genes", dict(min_cells=20)), ("filter_genes", dict(max_counts=500))],
                         ids=str)  # fmt: skip
def test_filter_of_a_bare_dask_array_is_lazy(pbmc, kind, step, kw):
    """scanpy's test_preprocessing_distributed::test_filter_*_array: Dask in, Dask out (the mask and
    the numbers), computing to the in-memory results (integer counts: exact sums in any order);
    scaled data (dense, or sparse with negative stored values) counts the values above zero."""
    x = pbmc.X.tocsr() if kind == "csr" else pbmc.X.toarray()
    scaled = not any("counts" in k for k in kw)
    for data in (x, _shifted(x)) if scaled else (x,):
        keep, number = getattr(gsc.pp, step)(as_dask(data, 150), **kw)
        assert isinstance(keep, da.Array) and isinstance(number, da.Array)
        want_keep, want_number = getattr(gsc.pp, step)(data, **kw)
        assert_same(keep.compute(), want_keep)
        assert number.dtype == want_number.dtype
        assert_same(number.compute(), want_number)


def _shifted(x):
    """`x` with negative values: dense centred, sparse with its stored values less 2 (some 0)."""
    if not sp.issparse(x):
        return x - x.mean()
    y = x.copy()
    y.data = y.data - np.float32(2)
    return y

def test_integer_count_check_reads_each_block_once(pbmc):
    """Raw-count checks (PIC steps, resample) count non-finite, negative and non-whole values in
    one pass over a lazily read X (they took two); each still refused with its message."""
    from gpu_sc._validation import check_integer_counts

    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    lazy, made = counted_dask(x)
    check_integer_counts(lazy, step="t")
    assert sorted(made) == list(range(lazy.numblocks[0]))
    for value, match in ((0.5, "non-integer"), (-1.0, "negative"), (np.nan, "non-finite")):
        bad = x.copy()
        bad.data[7] = value
        with pytest.raises(ValueError, match=match):
            check_integer_counts(counted_dask(bad)[0], step="t")


@pytest.mark.parametrize("step", ["filter_cells", "filter_genes"])
def test_filter_of_a_bare_dask_array_adds_in_float64(step):
    """A block's float32 totals are added in float64, as in memory: scipy's (and cupyx's)
    sum(dtype=float64) adds float32 data in float32 (5,000 values of 4000.1 gave 20,000,062
    where the sum is 20,000,500.5)."""
    x = sp.csr_matrix(np.full((5000, 2), np.float32(4000.1)))
    data = x if step == "filter_genes" else x.T.tocsr()
    _, number = getattr(gsc.pp, step)(as_dask(data, 5000), min_counts=1)
    _, want = getattr(gsc.pp, step)(data, min_counts=1)
    assert_same(number.compute(), want)
    assert abs(float(want[0]) - 20_000_500.5) < 2  # float32 of the float64 sum


@pytest.mark.parametrize("rows", [97])
def test_filter_genes_of_a_bare_dask_array_adds_the_blocks_in_float64(rows):
    """The per-gene totals of many blocks are added in float64 too (float32 partial sums of large
    counts, cast at the end, are off in the last bits), and equal the in-memory ones."""
    data = sp.csr_matrix(np.random.default_rng(0).integers(1, 10**6, (5000, 3)).astype(np.float32) + np.float32(0.1))
    _, number = gsc.pp.filter_genes(as_dask(data, rows), min_counts=1)
    _, want = gsc.pp.filter_genes(data, min_counts=1)
    assert number.dtype == want.dtype
    assert_same(number.compute(), want)

def test_normalize_total_reads_each_block_once(pbmc):
    """With a target_sum the result stays lazy and each block is read once, when it is computed
    (scanpy's Dask path reads it once too); with a median target or a key_added, the checks and
    the totals share one pass before; exclude_highly_expressed flags its genes in that pass too
    (it took a pass of its own) and then takes the totals without them. Either way the result
    equals the in-memory one."""
    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    for kw, before in (({"target_sum": 1e4}, 0), ({"target_sum": 1e4, "key_added": "nf"}, 1), ({}, 1),
                       ({"exclude_highly_expressed": True, "max_fraction": 0.05}, 2)):  # fmt: skip
        lazy, made = counted_dask(x)
        a, b = pbmc.copy(), pbmc.copy()
        a.X, b.X = lazy, x.copy()
        gsc.pp.normalize_total(a, **kw)
        assert sorted(made) == sorted(list(range(lazy.numblocks[0])) * before), kw
        gsc.pp.normalize_total(b, **kw)
        assert_same(a.X.compute(), b.X)
        assert sorted(made) == sorted(list(range(lazy.numblocks[0])) * (before + 1)), kw


def test_exclude_highly_expressed_flags_the_cast_values_on_dask():
    """The Dask pass flags highly expressed genes on the values cast to float32, as in memory
    (integers above 2**24 round there: 2**25 + 1 and 2**25 - 1 both become 2**25, neither above
    half of the row's float32 total)."""
    x = np.array([[2**25 + 1, 2**25 - 1, 0], [3, 4, 5], [1, 1, 1], [2, 0, 7]], dtype=np.int64)
    kw = {"exclude_highly_expressed": True, "max_fraction": 0.5, "target_sum": 1.0, "inplace": False}
    want = gsc.pp.normalize_total(ad.AnnData(x.copy()), **kw)
    got = gsc.pp.normalize_total(ad.AnnData(da.from_array(x.copy(), chunks=(2, -1))), **kw)
    assert_same(got["norm_factor"], want["norm_factor"])
    assert_same(got["X"].compute(), want["X"])


def test_lazy_normalize_total_checks_blocks(pbmc):
    """The lazy path checks each block when it is computed; integer blocks become float32."""
    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    x.data[5] = np.nan
    lazy = pbmc.copy()
    lazy.X = as_dask(x, 100)
    gsc.pp.normalize_total(lazy, target_sum=100)
    with pytest.raises(ValueError, match="1 non-finite values .* in a block of the Dask array"):
        lazy.X.compute()
    assert np.isnan(x.data[5])
    ints, mem = pbmc.copy(), pbmc.copy()
    ints.X = as_dask(sp.csr_matrix(pbmc.X, dtype=np.int64), 100)
    mem.X = sp.csr_matrix(pbmc.X, dtype=np.int64)
    gsc.pp.normalize_total(ints, target_sum=100)
    gsc.pp.normalize_total(mem, target_sum=100)
    assert ints.X.dtype == np.float32
    assert_same(ints.X.compute(), mem.X)


def test_qc_reads_each_block_once_and_still_checks_it(pbmc):
    """QC's statistics and its value check share one pass over a Dask X (the check was a pass of
    its own: a third of QC's reading at 1M cells); a NaN is still refused, the AnnData untouched."""
    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    lazy, made = counted_dask(x)
    a = pbmc.copy()
    a.X = lazy
    got = gsc.pp.calculate_qc_metrics(a, percent_top=[5])
    assert sorted(made) == list(range(lazy.numblocks[0]))
    want = gsc.pp.calculate_qc_metrics(pbmc.copy(), percent_top=[5])
    for g, w in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(g, w)
    x.data[7] = np.nan
    bad = pbmc.copy()
    bad.X = as_dask(x, 100)
    before = bad.obs.copy()
    with pytest.raises(ValueError, match="1 non-finite values"):
        gsc.pp.calculate_qc_metrics(bad, inplace=True)
    pd.testing.assert_frame_equal(bad.obs, before)


@pytest.mark.parametrize(("step", "kw"), [("filter_cells", {"min_genes": 50}), ("filter_genes", {"min_cells": 10}),
                                          ("filter_genes", {"max_counts": 500})])  # fmt: skip
def test_filters_read_each_block_once_and_still_check_it(pbmc, step, kw):
    """As QC: the counts and the value check in one pass over a Dask X, not two."""
    x = sp.csr_matrix(pbmc.X, dtype=np.float32)
    lazy, made = counted_dask(x)
    a, b = pbmc.copy(), pbmc.copy()
    a.X = lazy
    keep_a, number_a = getattr(gsc.pp, step)(a, inplace=False, **kw)
    assert sorted(made) == list(range(lazy.numblocks[0]))
    keep_b, number_b = getattr(gsc.pp, step)(b, inplace=False, **kw)
    assert_same(np.asarray(number_a), np.asarray(number_b))
    assert np.array_equal(keep_a, keep_b)
    x.data[7] = -np.inf
    a.X = as_dask(x, 100)
    with pytest.raises(ValueError, match="1 non-finite values"):
        getattr(gsc.pp, step)(a, **kw)
