"""highly_variable_genes equals scanpy's on real data: every flavor, with and without batches,
with n_top_genes and with cutoffs; the clipped-sums primitive; GPU equals CPU."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import ULPS, as_type, assert_close, cells_for, to_host

from gpu_sc import _ops
from gpu_sc._ops.clipped_sums import clipped_sums
from gpu_sc.preprocessing._hvg import highly_variable_genes

#: chained float64 reductions over the cells in another order (means, variances, dispersions and
#: their normalisation within bins: four, so 4 x ULPS steps), relative to each column's largest
#: value (normalised values cancel), as in test_dask_hvg_scale
CHAIN = {"dtype": np.float64, "ulps": 4 * ULPS, "scale": "max"}
#: dispersions_norm where the dispersions differ at float32 level (_dispersion_scale): z = (d - the
#: bin's mean or median) / the bin's std or MAD moves by about 2 max_bin |dd| (1 + |z|) / spread, and
#: the bins and their spreads are not in the frame. NOT derived: kept as measured (6.7e-6 absolute
#: at most here, cell_ranger, where a MAD is small)
NORM_RTOL, NORM_ATOL = 2e-5, 1e-6
_LOG_CACHE: dict[str, object] = {}


def _log(adata, name):
    """normalize_total + log1p by scanpy (cached per data set)."""
    if name not in _LOG_CACHE:
        a = adata.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(a)
            sc.pp.log1p(a)
        _LOG_CACHE[name] = a
    return _LOG_CACHE[name].copy()


def _with_batches(adata):
    adata.obs["parity"] = np.where(np.arange(adata.n_obs) % 2 == 0, "even", "odd")
    return adata


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _dispersion_scale(ref: pd.DataFrame, flavor: str) -> np.ndarray:
    """`scale` of the dispersions where the values whose mean and variance are taken differ by a
    float32 step between the two sides: a variance then moves by a few steps of the mean of
    squares m2 = var + mean^2 (n / (n - 1) aside), so seurat's log(var / mean) by that relative to
    var, 1 + mean / D (D = var / mean, mean = expm1(means)), and cell_ranger's D by that over the
    mean, D + mean (D is assert_close's |ref|). Batched frames: from the batch-averaged columns."""
    mean = ref["means"].to_numpy(np.float64)
    d = ref["dispersions"].to_numpy(np.float64)
    scale = 1 + np.expm1(mean) / np.exp(d) if flavor == "seurat" else mean
    return np.nan_to_num(scale, nan=0.0)  # no dispersion (NaN) on both sides


def _assert_frames_equal(got: pd.DataFrame, ref: pd.DataFrame, n_cells: int, flavor: str = "seurat",
                         against: str = "scanpy") -> None:  # fmt: skip
    """Columns of `got` against `ref` (scanpy's, or with against="cpu" ours on the CPU) for
    `flavor` over `n_cells` cells. Float values agree to float64 rounding (CHAIN) except where
    the values summed per gene differ by a float32 step: scanpy squares float32 values in float32
    for 'seurat' and 'cell_ranger', and for 'seurat' both take expm1 of float32 values in float32,
    which another device's libm may round an ulp apart."""
    expm1_apart = against != "scanpy" and flavor == "seurat"
    float32_apart = expm1_apart or (against == "scanpy" and flavor in ("seurat", "cell_ranger"))
    assert list(got.columns) == list(ref.columns)
    assert got.index.equals(ref.index)
    for col in ref.columns:
        assert got[col].dtype == ref[col].dtype, col
        if col == "highly_variable":
            np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy())
        elif col == "mean_bin" or ref[col].dtype.kind in "biuO":
            assert got[col].equals(ref[col]), col
        elif float32_apart and col == "dispersions":
            assert_close(got[col], ref[col], dtype=np.float32, scale=_dispersion_scale(ref, flavor), err_msg=col)
        elif float32_apart and col == "dispersions_norm":
            np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=NORM_RTOL, atol=NORM_ATOL,
                                       err_msg=col)  # fmt: skip
        elif expm1_apart and col == "means":  # log1p of a mean of values each within a float32 step
            assert_close(got[col], ref[col], dtype=np.float32, err_msg=col)
        else:
            assert_close(got[col], ref[col], n_terms=n_cells, out=ref[col].dtype, err_msg=col, **CHAIN)


DISPERSION_CASES = [
    ("seurat", {}),
    ("seurat", {"n_top_genes": 200}),
    ("seurat", {"min_mean": 0.05, "max_mean": 2, "min_disp": 0.2, "n_bins": 10}),
    ("cell_ranger", {"n_top_genes": 150}),
    ("cell_ranger", {}),
]


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batched"])
@pytest.mark.parametrize(("flavor", "kw"), DISPERSION_CASES, ids=lambda c: str(c))
def test_dispersion_flavors_match_scanpy(counts, request, flavor, kw, batch):
    name = request.node.callspec.params["counts"]
    adata = _log(counts, name)
    if batch:
        adata = _with_batches(adata) if name == "brain" else adata
        kw = {**kw, "batch_key": "parity" if name == "brain" else "bulk_labels"}
    if flavor == "cell_ranger" and name == "brain" and not batch:
        # over 5% of the brain genes have no counts: coinciding percentile bin edges
        with pytest.raises(ValueError, match="unique"):
            _quiet(sc.pp.highly_variable_genes, adata.copy(), flavor=flavor, **kw)
        with pytest.raises(ValueError, match="min_cells=1"):
            highly_variable_genes(adata.copy(), flavor=flavor, **kw)
        adata = adata[:, np.asarray((adata.X > 0).sum(axis=0)).ravel() > 0].copy()
    ref = adata.copy()
    _quiet(sc.pp.highly_variable_genes, ref, flavor=flavor, **kw)
    ref_df = _quiet(sc.pp.highly_variable_genes, adata.copy(), flavor=flavor, inplace=False, **kw)
    got_df = _quiet(highly_variable_genes, adata.copy(), flavor=flavor, inplace=False, **kw)
    _assert_frames_equal(got_df, ref_df, adata.n_obs, flavor)
    _quiet(highly_variable_genes, adata, flavor=flavor, **kw)
    _assert_frames_equal(adata.var, ref.var, adata.n_obs, flavor)
    assert adata.uns["hvg"] == {"flavor": flavor}
    if "n_top_genes" in kw:
        assert adata.var["highly_variable"].sum() >= kw["n_top_genes"]


V3_CASES = [
    ("seurat_v3", {"n_top_genes": 300}),
    ("seurat_v3", {"n_top_genes": 300, "span": 0.5}),
    ("seurat_v3_paper", {"n_top_genes": 300}),
]


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batched"])
@pytest.mark.parametrize(("flavor", "kw"), V3_CASES, ids=lambda c: str(c))
def test_v3_flavors_match_scanpy(counts, flavor, kw, batch):
    adata = _with_batches(counts)
    if batch:
        kw = {**kw, "batch_key": "parity"}
    ref = adata.copy()
    _quiet(sc.pp.highly_variable_genes, ref, flavor=flavor, **kw)
    ref_df = _quiet(sc.pp.highly_variable_genes, adata.copy(), flavor=flavor, inplace=False, **kw)
    got_df = _quiet(highly_variable_genes, adata.copy(), flavor=flavor, inplace=False, **kw)
    _assert_frames_equal(got_df, ref_df, adata.n_obs, flavor)
    highly_variable_genes(adata, flavor=flavor, **kw)
    _assert_frames_equal(adata.var, ref.var, adata.n_obs, flavor)
    assert adata.uns["hvg"] == {"flavor": flavor}
    assert adata.var["highly_variable"].sum() == kw["n_top_genes"]


def test_seurat_v3_batches_of_log_data_are_scanpys(brain):
    """On log data (values, not counts) many genes of a batch have a normalised variance within
    round-off of 1: scanpy's 0.99999999.. from float32 squares, ours exactly 1 (float64 squares),
    so the batches' ranks and 12 of 300 genes differed (an audit). The squares are now scanpy's."""
    a = brain[:300].copy()
    a.obs["b"] = (np.arange(300) % 2).astype(str)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    kw = {"flavor": "seurat_v3", "n_top_genes": 300, "span": 0.1, "batch_key": "b", "inplace": False}
    ref = _quiet(sc.pp.highly_variable_genes, a.copy(), **kw)
    got = _quiet(highly_variable_genes, a.copy(), **kw)
    pd.testing.assert_series_equal(got["highly_variable"], ref["highly_variable"])


def test_seurat_bin_of_one_dispersion_is_scanpys():
    """A mean bin whose genes share one dispersion: scanpy's pandas mean lies a rounding off it
    and its std is 0, so the normalised dispersion is +-inf (first in the ranking); ours was NaN
    and never selected (an audit)."""
    rng = np.random.default_rng(0)
    x = rng.poisson(5, size=(40, 30)).astype(np.float32)
    x[:, :5] = 0
    for j in range(5):
        x[j, j] = x[j + 10, j] = 1
    x[:, -1] += 200 - x.sum(1)
    a = ad.AnnData(x)
    sc.pp.log1p(a)
    for kw in ({}, {"n_top_genes": 5}):
        ref = _quiet(sc.pp.highly_variable_genes, a.copy(), inplace=False, **kw)
        got = _quiet(highly_variable_genes, a.copy(), inplace=False, **kw)
        assert np.isinf(ref["dispersions_norm"].to_numpy()[:5]).all()
        np.testing.assert_array_equal(got["dispersions_norm"], ref["dispersions_norm"])
        pd.testing.assert_series_equal(got["highly_variable"], ref["highly_variable"])


@pytest.mark.parametrize("kind", ["numpy", "csc"])
def test_layouts_and_layer(pbmc, kind):
    log = _log(pbmc, "pbmc")
    ref = _quiet(sc.pp.highly_variable_genes, log.copy(), n_top_genes=100, inplace=False)
    log.layers["lg"] = as_type(log.X, kind)
    log.X = sp.csr_matrix(log.shape, dtype=np.float32)  # X is not used
    got = highly_variable_genes(log, layer="lg", n_top_genes=100, inplace=False)
    _assert_frames_equal(got, ref, log.n_obs)
    pbmc.layers["counts"] = as_type(pbmc.X, kind)
    ref = sc.pp.highly_variable_genes(pbmc.copy(), flavor="seurat_v3", n_top_genes=200, inplace=False)
    got = highly_variable_genes(pbmc, layer="counts", flavor="seurat_v3", n_top_genes=200, inplace=False)
    _assert_frames_equal(got, ref, pbmc.n_obs, "seurat_v3")


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_input_is_left_unchanged(pbmc, kind):
    log = _log(pbmc, "pbmc")
    log.X = as_type(log.X, kind)
    log.obs["parity"] = np.arange(log.n_obs) % 2
    before = to_host(log.X).copy()
    for kw in ({}, {"batch_key": "parity"}, {"n_top_genes": 100}):
        highly_variable_genes(log, inplace=False, **kw)
        highly_variable_genes(log, **kw)
        np.testing.assert_array_equal(to_host(log.X), before)


def test_log_base_is_undone(pbmc):
    a = pbmc.copy()
    _quiet(sc.pp.normalize_total, a)
    sc.pp.log1p(a, base=2)
    ref = _quiet(sc.pp.highly_variable_genes, a.copy(), n_top_genes=100, inplace=False)
    _assert_frames_equal(highly_variable_genes(a, n_top_genes=100, inplace=False), ref, a.n_obs)


def test_subset(brain):
    log = _log(brain, "brain")
    for kw in ({"n_top_genes": 100}, {"flavor": "seurat_v3", "n_top_genes": 100}):
        data = brain.copy() if kw.get("flavor") == "seurat_v3" else log.copy()
        full = data.copy()
        highly_variable_genes(full, **kw)
        highly_variable_genes(data, subset=True, **kw)
        assert data.var_names.equals(full.var_names[full.var["highly_variable"].to_numpy()])
        pd.testing.assert_frame_equal(data.var, full.var[full.var["highly_variable"].to_numpy()])
        df = highly_variable_genes(full.copy(), subset=True, inplace=False, **kw)
        assert df.index.equals(data.var_names) and df["highly_variable"].all()
    # batched with cutoffs: the selected genes are kept (scanpy 1.11 subsets by a sorted mask)
    data = _with_batches(log.copy())
    full = data.copy()
    highly_variable_genes(full, batch_key="parity")
    highly_variable_genes(data, batch_key="parity", subset=True)
    assert data.var_names.equals(full.var_names[full.var["highly_variable"].to_numpy()])


def test_a_subset_that_fails_writes_nothing(brain):
    """A big-endian CSR (some HDF5 files) is computed on in a native copy, but scipy refuses to
    subset it: adata stays as it was, as scanpy's (ours had written var and uns first)."""
    data = _log(brain, "brain")
    data.X.data = data.X.data.astype(">f4")
    var, uns = data.var.copy(), set(data.uns)
    with pytest.raises(ValueError, match="does not support dtype"):
        highly_variable_genes(data, n_top_genes=100, subset=True)
    assert data.var.equals(var) and set(data.uns) == uns and data.n_vars == brain.n_vars


def test_n_top_genes_above_n_genes(pbmc):
    log = _log(pbmc, "pbmc")
    for flavor, data in (("seurat", log), ("cell_ranger", log), ("seurat_v3", pbmc)):
        ref = _quiet(sc.pp.highly_variable_genes, data.copy(), flavor=flavor, n_top_genes=5000, inplace=False)
        got = _quiet(highly_variable_genes, data.copy(), flavor=flavor, n_top_genes=5000, inplace=False)
        _assert_frames_equal(got, ref, data.n_obs, flavor)


def test_warnings_and_errors(pbmc):
    log = _log(pbmc, "pbmc")
    with pytest.warns(UserWarning, match="non-integers"):
        highly_variable_genes(log.copy(), flavor="seurat_v3", n_top_genes=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        highly_variable_genes(log.copy(), flavor="seurat_v3", n_top_genes=100, check_values=False)
    with pytest.warns(UserWarning, match="cutoffs are ignored"):
        highly_variable_genes(log.copy(), n_top_genes=100, min_mean=0.1)
    before = log.copy()
    with pytest.raises(KeyError, match="layer 'nope'"):
        highly_variable_genes(log, layer="nope")
    with pytest.raises(KeyError, match="batch_key 'nope'"):
        highly_variable_genes(log, batch_key="nope")
    with pytest.raises(ValueError, match="flavor"):
        highly_variable_genes(log, flavor="pearson")
    with pytest.raises(ValueError, match="n_top_genes"):
        highly_variable_genes(log, n_top_genes=0)
    log.obs["b"] = pd.Categorical(["a"] * log.n_obs, categories=["a", "unused"])
    with pytest.raises(ValueError, match="no cells"):
        highly_variable_genes(log, batch_key="b")
    # nothing changed by the failed calls
    assert "highly_variable" not in log.var and "hvg" not in log.uns
    assert (log.X != before.X).nnz == 0
    # batches joined by gene name: repeated names refused before obs is sanitised (pandas' bare
    # "cannot reindex on an axis with duplicate labels" came after)
    dup = log.copy()
    dup.var_names = [dup.var_names[0], *dup.var_names[:-1]]
    dup.obs["batch"] = np.where(np.arange(dup.n_obs) % 2, "x", "y")
    for kw in ({}, {"n_top_genes": 100}, {"flavor": "cell_ranger"}):
        with pytest.raises(ValueError, match="var_names_make_unique"):
            highly_variable_genes(dup, batch_key="batch", **kw)
    assert dup.obs["batch"].dtype == object


@pytest.mark.parametrize(("cells", "genes", "match"), [
    (1, None, "at least 2 cells"),  # skmisc's loess segfaulted on the no varying genes left
    (100, 3, "4 genes that vary"),  # and on 3 points
    (3, None, "could not fit their loess trend"),  # skmisc's bytes error, given context
])  # fmt: skip
def test_seurat_v3_too_little_data_is_a_clear_error(pbmc, cells, genes, match):
    pytest.importorskip("skmisc")
    a = pbmc[:cells, :genes].copy()
    before = a.copy()
    with pytest.raises(ValueError, match=match):
        highly_variable_genes(a, flavor="seurat_v3", n_top_genes=2)
    assert a.var.equals(before.var) and "hvg" not in a.uns


def test_view_input_leaves_parent(pbmc):
    log = _log(pbmc, "pbmc")
    view = log[:400]
    highly_variable_genes(view, n_top_genes=50)
    assert "highly_variable" not in log.var and view.var["highly_variable"].sum() >= 50
    ref = _quiet(sc.pp.highly_variable_genes, log[:400].copy(), n_top_genes=50, inplace=False)
    np.testing.assert_array_equal(view.var["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy())


# --------------------------------------------------------------------------- the primitive


def _clipped_reference(x, clip):
    d = np.minimum(x.toarray().astype(np.float64), clip[None, :])
    return d.sum(axis=0), (d * d).sum(axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_sums(brain, dtype):
    x = sp.csr_matrix(brain.X, dtype=dtype)
    clip = np.linspace(0.5, 20, x.shape[1])
    ref_s, ref_q = _clipped_reference(x, clip)
    for p in (_ops.parts(x), _ops.parts(x.toarray()),
              _ops.Parts(x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64), x.shape)):  # fmt: skip
        s, q = clipped_sums(p, clip)
        # clipped (non-integer) values: float64 sums of non-negative terms over the cells, in another
        # order; many cells sit at the same clip value, and identical terms round alike, so their
        # errors add up linearly (n steps, not sqrt(n): n_terms = n^2; measured 2e-13 at n = 10,000)
        n2 = x.shape[0] ** 2
        assert_close(s, ref_s, dtype=np.float64, n_terms=n2)
        assert_close(q, ref_q, dtype=np.float64, n_terms=n2)
    with pytest.raises(ValueError, match="one value per column"):
        clipped_sums(_ops.parts(x), clip[:-1])


# --------------------------------------------------------------------------- GPU equals CPU

GPU_CASES = [
    ("seurat", {"n_top_genes": 200}),
    ("seurat", {"batch_key": "parity"}),
    ("cell_ranger", {"n_top_genes": 200, "batch_key": "parity"}),
    ("seurat_v3", {"n_top_genes": 300}),
    ("seurat_v3_paper", {"n_top_genes": 300, "batch_key": "parity"}),
]


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
@pytest.mark.parametrize(("flavor", "kw"), GPU_CASES, ids=lambda c: str(c))
def test_gpu_equals_cpu(device, brain, flavor, kw, dense):
    import gpu_sc as gsc

    brain = cells_for(device, brain, 1500)
    data = _with_batches(brain if flavor.startswith("seurat_v3") else _log(brain, "brain"))
    if dense:
        data.X = data.X.toarray()
    gpu = gsc.get.to_gpu(data, copy=True)
    _quiet(highly_variable_genes, data, flavor=flavor, **kw)
    _quiet(highly_variable_genes, gpu, flavor=flavor, **kw)
    assert type(gpu.X).__module__.startswith(("cupy", "cupyx"))
    _assert_frames_equal(gpu.var, data.var, data.n_obs, flavor, against="cpu")
    assert gpu.uns["hvg"] == data.uns["hvg"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_clipped_sums_gpu(device, brain, dtype, index):
    import cupy as cp

    x = sp.csr_matrix(cells_for(device, brain).X, dtype=dtype)
    clip = np.linspace(0.5, 20, x.shape[1])
    arrays = (x.data, x.indices.astype(index), x.indptr.astype(index))
    cpu = clipped_sums(_ops.Parts(*arrays, x.shape), clip)
    gpu = clipped_sums(_ops.Parts(*(cp.asarray(a) for a in arrays), x.shape), cp.asarray(clip))
    for g, c in zip(gpu, cpu, strict=True):
        assert_close(g, c, dtype=np.float64, n_terms=x.shape[0] ** 2)  # as test_clipped_sums; atomics in any order
    d = x.toarray()
    dense = clipped_sums(_ops.parts(cp.asarray(d)), clip)
    for g, c in zip(dense, clipped_sums(_ops.parts(d), clip), strict=True):
        assert_close(g, c, dtype=np.float64, n_terms=x.shape[0] ** 2)


@pytest.mark.parametrize("dtype", ["string", "category", "object"])
def test_missing_batch_values_in_no_batch(pbmc, dtype):
    """Cells whose batch is missing (pd.NA of a string column, NaN of a category, None) are in
    no batch: the dispersion flavors as scanpy (pd.NA crashed: 'boolean value of NA is
    ambiguous'), the v3 flavors as the same cells' batch made a third one that is left out of
    the batches (scanpy fails on any missing batch there)."""
    a = pbmc[:400].copy()
    log = _log(a, "pbmc[:400]")
    labels = np.where(np.arange(400) % 2, "x", "y").astype(object)
    labels[::25] = None
    for data in (log, a):
        data.obs["b"] = pd.Series(labels, index=data.obs_names, dtype=dtype)
    for flavor in ("seurat", "cell_ranger"):
        ref = _quiet(sc.pp.highly_variable_genes, log.copy(), flavor=flavor, batch_key="b", n_top_genes=100, inplace=False)
        got = _quiet(highly_variable_genes, log.copy(), flavor=flavor, batch_key="b", n_top_genes=100, inplace=False)
        _assert_frames_equal(got, ref, log.n_obs, flavor)
    got = _quiet(highly_variable_genes, a.copy(), flavor="seurat_v3", batch_key="b", n_top_genes=100, inplace=False)
    kept = a[a.obs["b"].notna().to_numpy()].copy()
    sub = _quiet(highly_variable_genes, kept, flavor="seurat_v3", batch_key="b", n_top_genes=100, inplace=False)
    alone = _quiet(highly_variable_genes, a.copy(), flavor="seurat_v3", n_top_genes=100, inplace=False)
    for col in ("variances_norm", "highly_variable_rank", "highly_variable_nbatches", "highly_variable"):
        pd.testing.assert_series_equal(got[col], sub[col])  # the batches are those cells' alone
    for col in ("means", "variances"):
        pd.testing.assert_series_equal(got[col], alone[col])  # over every cell


def test_batch_of_one_cell_warns(pbmc):
    """A batch of one cell has no variance (ddof=1): NaN dispersions here, round-off in scanpy,
    so the selection can differ; the user is told which batch."""
    import warnings as _w

    a = pbmc[:200].copy()
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    a.obs["b"] = np.where(np.arange(200) == 0, "solo", np.where(np.arange(200) % 2, "x", "y"))
    with pytest.warns(UserWarning, match="batch 'solo' of batch_key 'b' has one cell"):
        highly_variable_genes(a, batch_key="b", n_top_genes=50)


@pytest.mark.parametrize("lazy", [False, True], ids=["memory", "dask"])
def test_batch_with_no_expressed_gene_is_refused_clearly(pbmc, lazy):
    """A batch whose cells have no positive value in any gene: nothing to bin (scanpy and ours
    said pandas' 'Cannot cut empty array'); named, and adata left as it was."""
    a = pbmc[:200, :30].copy()
    a.X = a.X.toarray()
    a.X[:50] = 0
    a.obs["b"] = np.where(np.arange(200) < 50, "empty", "full")
    if lazy:
        pytest.importorskip("dask.array")
        import dask.array as da

        a.X = da.from_array(a.X, chunks=(100, 30))
    before = a.var.copy()
    with pytest.raises(ValueError, match="no gene has a positive value in batch 'empty'"):
        highly_variable_genes(a, batch_key="b")
    pd.testing.assert_frame_equal(a.var, before)


@pytest.mark.parametrize("flavor", ["seurat_v3", "seurat_v3_paper"])
def test_v3_three_batches_rank_by_the_median_like_scanpy(pbmc, flavor):
    """Three batches: a gene's highly_variable_rank is the median of its ranks over the batches
    where it is in the top (with two batches the median is the mean), as scanpy's."""
    pbmc.obs["third"] = (np.arange(pbmc.n_obs) % 3).astype(str)
    kw = {"n_top_genes": 300, "batch_key": "third"}
    ref = _quiet(sc.pp.highly_variable_genes, pbmc.copy(), flavor=flavor, inplace=False, **kw)
    got = _quiet(highly_variable_genes, pbmc.copy(), flavor=flavor, inplace=False, **kw)
    assert (ref["highly_variable_nbatches"] == 2).any()  # ranks from an even number of batches too
    _assert_frames_equal(got, ref, pbmc.n_obs, flavor)
