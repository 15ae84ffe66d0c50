"""highly_variable_genes and scale on row-chunked Dask arrays equal the in-memory results of the
same functions: CSR and dense blocks, several chunk sizes (uneven last block), every flavor with
and without batches, every scale variant; scale stays lazy."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import ULPS, assert_close, assert_same, to_host
from test_hvg import _assert_frames_equal as _assert_device_frames_equal
from test_hvg import _quiet
from test_scale import KWARGS as SCALE_KWARGS

from gpu_sc.preprocessing._hvg import highly_variable_genes
from gpu_sc.preprocessing._scale import scale

da = pytest.importorskip("dask.array")

#: chained float64 reductions over the cells, summed in another block order (means, variances,
#: dispersions and their normalisation within bins: four, so 4 x ULPS steps), relative to each
#: column's largest value (normalised dispersions and centred values cancel)
CHAIN = {"dtype": np.float64, "ulps": 4 * ULPS, "scale": "max"}
N_CELLS = 700  # pbmc
CHUNKS = [97, 256, 700]  # pbmc has 700 cells: 97 leaves an uneven last block, 700 is one block
_LOG: dict[str, ad.AnnData] = {}


def _log(pbmc):
    """normalize_total + log1p (scanpy), cached."""
    if "pbmc" not in _LOG:
        a = pbmc.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(a)
            sc.pp.log1p(a)
        a.obs["parity"] = np.where(np.arange(a.n_obs) % 2 == 0, "even", "odd")
        a.obs["sel"] = np.arange(a.n_obs) % 3 == 0
        _LOG["pbmc"] = a
    return _LOG["pbmc"].copy()


def _dask(x, chunk: int, dense: bool):
    """`x` (CSR) as a Dask array of `chunk`-row blocks, CSR or dense."""
    x = x.toarray() if dense else sp.csr_matrix(x)
    return da.from_array(x, chunks=(chunk, -1), asarray=False)


def _pair(adata, chunk, dense):
    """(in-memory AnnData, the same with a Dask X) with the same block kind."""
    mem = adata.copy()
    if dense:
        mem.X = mem.X.toarray()
    lazy = adata.copy()
    lazy.X = _dask(adata.X, chunk, dense)
    return mem, lazy


def _assert_frames_equal(got: pd.DataFrame, ref: pd.DataFrame, n_cells: int = N_CELLS) -> None:
    assert list(got.columns) == list(ref.columns)
    assert got.index.equals(ref.index)
    for col in ref.columns:
        assert got[col].dtype == ref[col].dtype, col
        if ref[col].dtype.kind == "f":
            assert_close(got[col], ref[col], n_terms=n_cells, out=ref[col].dtype, err_msg=col, **CHAIN)
        else:
            assert got[col].equals(ref[col]), col


def _assert_matrix_equal(got, ref, *, same=False):
    """A computed Dask result against the in-memory one: kind, dtype, sparsity, values (identical
    with `same`; else within CHAIN, rounded once more to the matrix's dtype)."""
    assert sp.issparse(got) == sp.issparse(ref)
    assert got.dtype == ref.dtype
    if sp.issparse(ref):
        got, ref = sp.csr_matrix(got), sp.csr_matrix(ref)
        np.testing.assert_array_equal(got.indptr, ref.indptr)
        np.testing.assert_array_equal(got.indices, ref.indices)
        got, ref = got.data, ref.data
    if same:
        assert_same(np.asarray(got), np.asarray(ref))
    else:
        assert_close(np.asarray(got), np.asarray(ref), n_terms=N_CELLS, out=ref.dtype, **CHAIN)


# --------------------------------------------------------------------------- highly_variable_genes

HVG_CASES = [
    ("seurat", {}),
    ("seurat", {"n_top_genes": 200}),
    ("cell_ranger", {"n_top_genes": 150}),
    ("cell_ranger", {}),
    ("seurat_v3", {"n_top_genes": 300}),
    ("seurat_v3_paper", {"n_top_genes": 300}),
]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batched"])
@pytest.mark.parametrize(("flavor", "kw"), HVG_CASES, ids=str)
def test_hvg_dask_equals_memory(pbmc, flavor, kw, batch, dense, chunk):
    v3 = flavor.startswith("seurat_v3")
    data = pbmc if v3 else _log(pbmc)
    data.obs["parity"] = np.arange(data.n_obs) % 2
    if batch:  # loess needs large batches: the v3 flavors get two halves
        kw = {**kw, "batch_key": "parity" if v3 else "bulk_labels"}
    mem, lazy = _pair(data, chunk, dense)
    ref_df = _quiet(highly_variable_genes, mem.copy(), flavor=flavor, inplace=False, **kw)
    got_df = _quiet(highly_variable_genes, lazy.copy(), flavor=flavor, inplace=False, **kw)
    _assert_frames_equal(got_df, ref_df)
    _quiet(highly_variable_genes, mem, flavor=flavor, **kw)
    _quiet(highly_variable_genes, lazy, flavor=flavor, **kw)
    _assert_frames_equal(lazy.var, mem.var)
    assert lazy.uns["hvg"] == mem.uns["hvg"]
    assert isinstance(lazy.X, da.Array)  # the matrix stays a Dask array


@pytest.mark.parametrize(("flavor", "passes", "batched"), [("seurat", 1, True), ("cell_ranger", 1, True),
                                                          ("seurat_v3", 2, True), ("seurat_v3", 2, False)])  # fmt: skip
def test_hvg_batches_read_a_dask_matrix_once(pbmc, flavor, passes, batched):
    """With batch_key the batches' statistics come from one pass over a lazily read X (seurat_v3:
    two, its moments and then its clipped sums, with or without batches), not two per batch (10
    batches: 19 passes, v3's 2: 5); v3's integer check rides on its first pass (it took a third);
    cells in no batch (missing key) count in v3's overall mean only, as in memory."""
    from _helpers import counted_dask

    v3 = flavor == "seurat_v3"
    data = pbmc if v3 else _log(pbmc)
    key = "half" if v3 else "bulk_labels"
    data.obs["half"] = pd.Categorical(np.where(np.arange(data.n_obs) < 330, "a", "b"))
    data.obs.loc[data.obs_names[::50], key] = np.nan  # in no batch
    kw = {"flavor": flavor, "batch_key": key if batched else None, "n_top_genes": 200, "inplace": False}
    lazy, made = counted_dask(sp.csr_matrix(data.X, dtype=np.float32), rows=100)
    mem = data.copy()
    mem.X = sp.csr_matrix(data.X, dtype=np.float32)
    got = _quiet(highly_variable_genes, ad.AnnData(lazy, obs=data.obs.copy(), var=data.var.copy(), uns=dict(data.uns)), **kw)
    assert sorted(made) == sorted(list(range(lazy.numblocks[0])) * passes)
    _assert_frames_equal(got, _quiet(highly_variable_genes, mem, **kw))


def test_hvg_brain_large_blocks(brain):
    """10,000 cells in blocks of 3,000 (last 1,000), genes without counts, an all-zero cell."""
    brain.obs["parity"] = np.arange(brain.n_obs) % 2
    log = brain.copy()
    _quiet(sc.pp.normalize_total, log)
    sc.pp.log1p(log)
    for flavor, data, kw in (
        ("seurat", log, {"n_top_genes": 300, "batch_key": "parity"}),
        ("cell_ranger", log, {"batch_key": "parity"}),
        ("seurat_v3", brain, {"n_top_genes": 300, "batch_key": "parity"}),
        ("seurat_v3_paper", brain, {"n_top_genes": 300}),
    ):
        mem, lazy = _pair(data, 3000, dense=False)
        ref = _quiet(highly_variable_genes, mem, flavor=flavor, inplace=False, **kw)
        _assert_frames_equal(_quiet(highly_variable_genes, lazy, flavor=flavor, inplace=False, **kw), ref, brain.n_obs)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_hvg_subset(pbmc, dense):
    log = _log(pbmc)
    for flavor, data, kw in (
        ("seurat", log, {"n_top_genes": 100}),
        ("cell_ranger", log, {"batch_key": "bulk_labels"}),
        ("seurat_v3", pbmc, {"n_top_genes": 100}),
    ):
        mem, lazy = _pair(data, 97, dense)
        df_mem = _quiet(highly_variable_genes, mem.copy(), flavor=flavor, subset=True, inplace=False, **kw)
        df_lazy = _quiet(highly_variable_genes, lazy.copy(), flavor=flavor, subset=True, inplace=False, **kw)
        _assert_frames_equal(df_lazy, df_mem)
        _quiet(highly_variable_genes, mem, flavor=flavor, subset=True, **kw)
        _quiet(highly_variable_genes, lazy, flavor=flavor, subset=True, **kw)
        assert lazy.var_names.equals(mem.var_names) and lazy.n_vars < data.n_vars
        _assert_frames_equal(lazy.var, mem.var)
        assert isinstance(lazy.X, da.Array) and lazy.X.shape == mem.X.shape
        _assert_matrix_equal(lazy.X.compute(), mem.X, same=True)  # a column subset of the same X


def test_hvg_log_base_layer_and_unchanged_input(pbmc):
    a = pbmc.copy()
    _quiet(sc.pp.normalize_total, a)
    sc.pp.log1p(a, base=2)
    a.obs["parity"] = np.arange(a.n_obs) % 2
    ref = highly_variable_genes(a, n_top_genes=100, inplace=False)
    ref_b = highly_variable_genes(a, n_top_genes=100, batch_key="parity", inplace=False)
    before = a.X.copy()
    lazy = a.copy()
    lazy.layers["lg"] = _dask(a.X, 128, dense=False)
    _assert_frames_equal(highly_variable_genes(lazy, layer="lg", n_top_genes=100, inplace=False), ref)
    _assert_frames_equal(
        highly_variable_genes(lazy, layer="lg", n_top_genes=100, batch_key="parity", inplace=False), ref_b
    )
    # expm1 ran on copies of the blocks: the Dask array still computes to the input
    assert (lazy.layers["lg"].compute() != before).nnz == 0


def test_hvg_integer_check_on_dask(pbmc):
    log = _log(pbmc)
    lazy = log.copy()
    lazy.X = _dask(log.X, 97, dense=False)
    with pytest.warns(UserWarning, match="non-integers"):
        highly_variable_genes(lazy, flavor="seurat_v3", n_top_genes=100, inplace=False)
    counts = pbmc.copy()
    counts.X = _dask(pbmc.X, 97, dense=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        highly_variable_genes(counts, flavor="seurat_v3", n_top_genes=100, inplace=False)


def test_hvg_column_chunks_as_row_chunks(pbmc):
    """Chunked along genes too: the same genes as whole-row blocks give (scanpy takes both)."""
    log = _log(pbmc)
    rows = log.copy()
    log.X = da.from_array(log.X.toarray(), chunks=(100, 300))
    rows.X = da.from_array(rows.X.toarray(), chunks=(100, -1))
    pd.testing.assert_frame_equal(highly_variable_genes(log, inplace=False), highly_variable_genes(rows, inplace=False))


# --------------------------------------------------------------------------- scale

SCALE_CASES = SCALE_KWARGS  # every variant test_scale.py checks against scanpy


def _scale(adata, kw):
    kw = dict(kw)
    if kw.get("mask_obs") == "array":
        kw["mask_obs"] = adata.obs["sel"].to_numpy()
    return _quiet(scale, adata, **kw)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
@pytest.mark.parametrize("kw", SCALE_CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_scale_dask_equals_memory(pbmc, kw, dense, chunk):
    mem, lazy = _pair(_log(pbmc), chunk, dense)
    _scale(mem, kw)
    _scale(lazy, kw)
    assert isinstance(lazy.X, da.Array)
    assert lazy.X.chunks == _dask(pbmc.X, chunk, dense).chunks  # same blocks
    assert lazy.X.dtype == mem.X.dtype
    assert sp.issparse(lazy.X._meta) == sp.issparse(mem.X)
    assert list(lazy.var.columns) == list(mem.var.columns)
    for col in mem.var.columns[-2:]:
        assert_close(lazy.var[col], mem.var[col], n_terms=N_CELLS, **CHAIN)
        assert lazy.var[col].dtype == np.float64
    _assert_matrix_equal(lazy.X.compute(), mem.X)


def test_scale_sparse_without_centring_stays_sparse_and_lazy(pbmc):
    log = _log(pbmc)
    d = _dask(log.X, 97, dense=False)
    out = scale(d, zero_center=False, max_value=2.0)
    assert isinstance(out, da.Array) and out.chunks == d.chunks
    assert sp.issparse(out._meta) and out.dtype == np.float32
    assert all(sp.isspmatrix_csr(b) for b in (out.blocks[i].compute() for i in range(out.numblocks[0])))
    ref = scale(log.X.copy(), zero_center=False, max_value=2.0)
    _assert_matrix_equal(out.compute(), ref)
    # the input's blocks were not modified
    assert (d.compute() != log.X).nnz == 0


def test_scale_matrix_integer_copy_layer_obsm(pbmc):
    log = _log(pbmc)
    # a bare Dask matrix of integers: float64, as in memory
    counts = sp.csr_matrix(pbmc.X.astype(np.int64))
    out = _quiet(scale, da.from_array(counts, chunks=(150, -1), asarray=False), max_value=5)
    assert isinstance(out, da.Array) and out.dtype == np.float64
    _assert_matrix_equal(out.compute(), _quiet(scale, counts.copy(), max_value=5))
    # copy=True on an AnnData: the original keeps its lazy matrix
    lazy = log.copy()
    lazy.X = _dask(log.X, 256, dense=True)
    x_before = lazy.X
    res = scale(lazy, copy=True, max_value=3)
    assert lazy.X is x_before and "mean" not in lazy.var
    dense = log.copy()
    dense.X = dense.X.toarray()
    ref = scale(dense, copy=True, max_value=3)
    _assert_matrix_equal(res.X.compute(), ref.X)
    # layer and obsm
    lazy.layers["lg"] = _dask(log.X, 97, dense=False)
    mem = log.copy()
    mem.layers["lg"] = log.X.copy()
    scale(lazy, layer="lg", zero_center=False)
    scale(mem, layer="lg", zero_center=False)
    _assert_matrix_equal(lazy.layers["lg"].compute(), mem.layers["lg"])
    assert_close(lazy.var["std"], mem.var["std"], n_terms=N_CELLS, **CHAIN)
    lazy.obsm["dense"] = _dask(log.X, 97, dense=True)
    mem.obsm["dense"] = log.X.toarray()
    scale(lazy, obsm="dense", max_value=4)
    scale(mem, obsm="dense", max_value=4)
    _assert_matrix_equal(lazy.obsm["dense"].compute(), mem.obsm["dense"])


def test_scale_errors_leave_adata(pbmc):
    log = _log(pbmc)
    log.X = da.from_array(log.X.toarray(), chunks=(100, 300))
    x = log.X
    with pytest.raises(ValueError, match="mask_obs"):
        scale(log, mask_obs=np.ones(3, dtype=bool))
    assert log.X is x and "mean" not in log.var


# --------------------------------------------------------------------------- GPU blocks


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_gpu_blocks_equal_cpu(device, pbmc, dense):
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    def on_gpu(d):
        if dense:
            return d.map_blocks(cp.asarray, meta=cp.empty((0, d.shape[1]), dtype=d.dtype))
        return d.map_blocks(cpsp.csr_matrix, meta=cpsp.csr_matrix((0, d.shape[1]), dtype=d.dtype))

    log = _log(pbmc)
    log.obs["parity"] = np.arange(log.n_obs) % 2
    counts = pbmc.copy()
    counts.obs["parity"] = np.arange(counts.n_obs) % 2
    for flavor, data, kw in (
        ("seurat", log, {"batch_key": "bulk_labels"}),
        ("cell_ranger", log, {"n_top_genes": 150}),
        ("seurat_v3", counts, {"n_top_genes": 300, "batch_key": "parity"}),
        ("seurat_v3_paper", counts, {"n_top_genes": 300}),
    ):
        cpu = data.copy()
        cpu.X = _dask(data.X, 97, dense)
        gpu = data.copy()
        gpu.X = on_gpu(_dask(data.X, 97, dense))
        ref = _quiet(highly_variable_genes, cpu, flavor=flavor, inplace=False, **kw)
        got = _quiet(highly_variable_genes, gpu, flavor=flavor, inplace=False, **kw)
        # as the in-memory GPU test: 'seurat' takes expm1 of float32 values in float32, which
        # CUDA's libm may round an ulp from the host's (seen on an H200, 2026-12-04)
        _assert_device_frames_equal(got, ref, N_CELLS, flavor, against="cpu")
    for kw in SCALE_CASES:
        cpu, gpu = log.copy(), log.copy()
        cpu.X = _dask(log.X, 97, dense)
        gpu.X = on_gpu(_dask(log.X, 97, dense))
        _scale(cpu, kw)
        _scale(gpu, kw)
        assert isinstance(gpu.X, da.Array)
        assert type(gpu.X._meta).__module__.startswith(("cupy", "cupyx"))
        for col in cpu.var.columns[-2:]:
            assert_close(gpu.var[col], cpu.var[col], n_terms=N_CELLS, **CHAIN)
        got = gpu.X.compute()
        assert type(got).__module__.startswith(("cupy", "cupyx"))
        ref = to_host(cpu.X.compute())
        assert_close(to_host(got), ref, n_terms=N_CELLS, out=ref.dtype, **CHAIN)


def test_seurat_float64_constant_genes_do_not_depend_on_the_blocks(pbmc):
    """A float64 gene constant over the cells has variance 0 (log dispersion NaN, out of its bin)
    whatever the order of its sums: its round-off variance (E[x^2] - E[x]^2, about -33 in log
    dispersion) moved its bin's mean and std, and 53-57 genes' selection with the Dask blocks or
    the threads (an audit's case); Dask and in-memory now agree."""
    data = _log(pbmc)
    x = np.asarray(data.X.toarray() if sp.issparse(data.X) else data.X, dtype=np.float64)
    x[:, [3, 50, 120, 300, 500]] = [0.7, 1.3, 2.1, 0.05, 3.3]
    x[:, 7] = 0.0
    mem = ad.AnnData(sp.csr_matrix(x), obs=data.obs.copy(), var=data.var.copy())
    want = _quiet(highly_variable_genes, mem, flavor="seurat", inplace=False)
    assert want["dispersions"].iloc[[3, 50, 120, 300, 500]].isna().all()
    for rows in (97, 256):
        lazy = ad.AnnData(da.from_array(sp.csr_matrix(x), chunks=(rows, -1), asarray=False), obs=data.obs.copy(),
                          var=data.var.copy())  # fmt: skip
        _assert_frames_equal(_quiet(highly_variable_genes, lazy, flavor="seurat", inplace=False), want)


def test_seurat_dask_refuses_minus_inf(pbmc):
    """expm1 made a Dask block's -inf a finite -1, past the means' check: refused as in memory,
    before var is written."""
    data = _log(pbmc)
    x = sp.csr_matrix(data.X, dtype=np.float32)
    x.data[5] = -np.inf
    lazy = ad.AnnData(da.from_array(x, chunks=(200, -1), asarray=False), obs=data.obs.copy(), var=data.var.copy())
    with pytest.raises(ValueError, match=r"found 1 non-finite values \(-inf\)"):
        _quiet(highly_variable_genes, lazy, flavor="seurat", n_top_genes=50)
    assert "highly_variable" not in lazy.var
