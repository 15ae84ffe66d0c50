"""gsc.experimental.pp (analytic Pearson residuals) equals scanpy.experimental.pp on real counts."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, to_host

import gpu_sc as gsc
from gpu_sc.experimental.pp import _residuals

# float64 and integer counts: the same arithmetic as scanpy's, so equal to rounding; float32:
# scanpy sums in float32, we in float64 (residuals up to sqrt(n) = 26 differ by ~1e-5)
TOL = {"float64": 1e-10, "int64": 1e-10, "float32": 1e-4}


@pytest.fixture
def counts(pbmc):
    """700 PBMCs x 765 genes of raw counts, two batches, a gene without counts in one batch."""
    a = pbmc.copy()
    a.obs["batch"] = np.where(np.arange(a.n_obs) % 3 == 0, "b1", "b2")
    x = sp.csc_matrix(a.X)
    col = slice(x.indptr[5], x.indptr[6])
    x.data[col] = np.where(np.isin(x.indices[col], np.flatnonzero(a.obs["batch"] == "b1")), 0, x.data[col])
    x.eliminate_zeros()
    a.X = x.tocsr()
    return a


def _with(a, dtype, kind):
    b = a.copy()
    b.X = as_type(sp.csr_matrix(a.X, dtype=dtype), kind)
    return b


def _silent(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both libraries warn alike (checked below)
        return fn(*args, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("kind", ["csr", "numpy"])
@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_highly_variable_genes_match_scanpy(counts, dtype, kind, batch_key):
    ours, ref = _with(counts, dtype, kind), _with(counts, dtype, kind)
    sc.experimental.pp.highly_variable_genes(ref, n_top_genes=200, batch_key=batch_key)
    assert gsc.experimental.pp.highly_variable_genes(ours, n_top_genes=200, batch_key=batch_key) is None
    assert list(ours.var.columns) == list(ref.var.columns) and ours.var.dtypes.equals(ref.var.dtypes)
    np.testing.assert_array_equal(ours.var["highly_variable"], ref.var["highly_variable"])
    np.testing.assert_array_equal(ours.var["highly_variable_rank"], ref.var["highly_variable_rank"])
    np.testing.assert_allclose(ours.var["residual_variances"], ref.var["residual_variances"], rtol=TOL[dtype] / 10)
    np.testing.assert_allclose(ours.var[["means", "variances"]], ref.var[["means", "variances"]], rtol=1e-12)
    assert ours.uns["hvg"] == ref.uns["hvg"]
    if batch_key:
        assert ours.var["highly_variable_nbatches"].equals(ref.var["highly_variable_nbatches"])


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_normalize_matches_scanpy(counts, dtype, kind):
    ours, ref = _with(counts, dtype, kind), _with(counts, dtype, kind)
    _silent(sc.experimental.pp.normalize_pearson_residuals, ref, theta=50, layer=None)
    _silent(gsc.experimental.pp.normalize_pearson_residuals, ours, theta=50)
    assert ours.X.dtype == ref.X.dtype == np.float64 and isinstance(ours.X, np.ndarray)
    np.testing.assert_allclose(ours.X, ref.X, rtol=0, atol=TOL[dtype])  # a gene of no counts: NaN in both
    assert ours.uns["pearson_residuals_normalization"] == ref.uns["pearson_residuals_normalization"]


def test_residuals_by_hand():
    """mu = cell total x gene total / total; (x - mu) / sqrt(mu + mu^2 / theta), clipped."""
    x = np.array([[0.0, 3, 1], [2, 0, 5], [1, 1, 0], [0, 0, 9]])
    s, g = x.sum(1), x.sum(0)
    mu = np.outer(s, g) / x.sum()
    want = np.clip((x - mu) / np.sqrt(mu + mu**2 / 7.0), -1.5, 1.5)
    got = _residuals.pearson_residuals(x, 7.0, 1.5, step="t")
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert np.abs(got).max() == 1.5  # some clipped
    unclipped = _residuals.pearson_residuals(x, 7.0, None, step="t")  # sqrt(4) = 2
    np.testing.assert_allclose(unclipped, np.clip((x - mu) / np.sqrt(mu + mu**2 / 7.0), -2, 2), rtol=1e-15)
    for m in (sp.csr_matrix(x), x):
        np.testing.assert_allclose(_residuals.residual_variances(m, 7.0, 1.5), want.var(axis=0), rtol=1e-14)
    x[:, 1] = 0  # a gene without counts: variance 0 (its residuals are undefined)
    assert _residuals.residual_variances(sp.csr_matrix(x), 7.0, 1.5)[1] == 0


def test_bands_and_threads_do_not_change_the_results(counts, monkeypatch):
    """Row bands of the dense residuals and the kernel's row chunks (one per thread) change
    nothing but the order of the sums."""
    import numba

    x = sp.csr_matrix(counts.X, dtype=np.float64)
    want = _residuals.residual_variances(x, 100.0, 5.0)
    unsorted = x.copy()
    unsorted.indices, unsorted.data = unsorted.indices.copy(), unsorted.data.copy()
    for r in range(x.shape[0]):  # each row's stored values reversed: the kernel scatters them
        s = slice(x.indptr[r], x.indptr[r + 1])
        unsorted.indices[s], unsorted.data[s] = x.indices[s][::-1], x.data[s][::-1]
    one = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        np.testing.assert_allclose(_residuals.residual_variances(unsorted, 100.0, 5.0), want, rtol=1e-12)
    finally:
        numba.set_num_threads(one)
    monkeypatch.setattr(_residuals, "BLOCK_BYTES", 8 * x.shape[1] * 33)  # 33 cells a band
    dense = _residuals.pearson_residuals(x, 100.0, 5.0, step="t")
    monkeypatch.undo()
    np.testing.assert_array_equal(dense, _residuals.pearson_residuals(x, 100.0, 5.0, step="t"))


def test_recipe_and_pca_match_scanpy(counts):
    ours, ref = _with(counts, "int64", "csr"), _with(counts, "int64", "csr")
    sc.experimental.pp.recipe_pearson_residuals(ref, n_top_genes=150, batch_key="batch", n_comps=20)
    gsc.experimental.pp.recipe_pearson_residuals(ours, n_top_genes=150, batch_key="batch", n_comps=20)
    assert set(ours.uns) == set(ref.uns) and set(ours.varm) == set(ref.varm)
    assert ours.uns["pca"]["params"] == ref.uns["pca"]["params"]
    np.testing.assert_array_equal(ours.var["highly_variable"], ref.var["highly_variable"])
    a, b = ours.obsm["X_pca"], ref.obsm["X_pca"]
    sign = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a * sign, b, atol=1e-7 * np.abs(b).max())
    assert ours.varm["PCs"].dtype == ref.varm["PCs"].dtype and (ours.varm["PCs"][~ours.var["highly_variable"]] == 0).all()
    pd.testing.assert_frame_equal(ours.uns["pearson_residuals_normalization"]["pearson_residuals_df"],
                                  ref.uns["pearson_residuals_normalization"]["pearson_residuals_df"], rtol=1e-10)
    sub, hvg = gsc.experimental.pp.recipe_pearson_residuals(counts.copy(), n_top_genes=150, inplace=False)
    ref_sub, ref_hvg = sc.experimental.pp.recipe_pearson_residuals(counts.copy(), n_top_genes=150, inplace=False)
    assert sub.shape == ref_sub.shape and hvg.columns.equals(ref_hvg.columns)
    # normalize_pearson_residuals_pca on the selected genes, as scanpy
    ours, ref = _with(counts, "int64", "csr"), _with(counts, "int64", "csr")
    for m, a in ((sc, ref), (gsc, ours)):
        m.experimental.pp.highly_variable_genes(a, n_top_genes=120)
        m.experimental.pp.normalize_pearson_residuals_pca(a, n_comps=15)
    a, b = ours.obsm["X_pca"], ref.obsm["X_pca"]
    np.testing.assert_allclose(a * np.sign((a * b).sum(axis=0)), b, atol=1e-7 * np.abs(b).max())
    assert np.array_equal(ours.varm["PCs"] == 0, ref.varm["PCs"] == 0)


def test_subset_not_inplace_and_scanpys_refusals(counts):
    for subset in (False, True):
        want = sc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes=100, subset=subset, inplace=False)
        got = gsc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes=100, subset=subset, inplace=False)
        pd.testing.assert_frame_equal(got, want, rtol=1e-7)  # float32 counts: scanpy's float32 totals
    got = gsc.experimental.pp.normalize_pearson_residuals(counts.copy(), inplace=False)
    assert set(got) == {"X", "theta", "clip", "computed_on"}
    before = counts.copy()
    for call, match in ((lambda: gsc.experimental.pp.highly_variable_genes(counts), "requires the argument `n_top_genes`"),
                        (lambda: gsc.experimental.pp.highly_variable_genes(counts, n_top_genes=5, flavor="seurat"),
                         "only `flavor=pearson_residuals`"),
                        (lambda: gsc.experimental.pp.normalize_pearson_residuals(counts, theta=0), "theta > 0"),
                        (lambda: gsc.experimental.pp.normalize_pearson_residuals(counts, clip=-1), "clip>=0"),
                        (lambda: gsc.experimental.pp.normalize_pearson_residuals(counts, copy=True, inplace=False),
                         "cannot be used with")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(KeyError, match="batch_key 'nope'"):
        gsc.experimental.pp.highly_variable_genes(counts, n_top_genes=5, batch_key="nope")
    assert (counts.X != before.X).nnz == 0 and counts.var.equals(before.var) and counts.uns.keys() == before.uns.keys()
    big = counts.copy()  # computed on in a native copy, but scipy refuses to subset it: nothing written
    big.X.data = big.X.data.astype(">f4")
    with pytest.raises(ValueError, match="does not support dtype"):
        gsc.experimental.pp.highly_variable_genes(big, n_top_genes=100, subset=True)
    assert big.var.equals(before.var) and big.uns.keys() == before.uns.keys() and big.n_vars == before.n_vars


def test_non_counts_warn_as_scanpy(counts):
    x = counts.copy()
    x.X = x.X.astype(np.float64) * 0.5
    with pytest.warns(UserWarning, match=r"`normalize_pearson_residuals\(\)` expects raw count data"):
        gsc.experimental.pp.normalize_pearson_residuals(x.copy())
    with pytest.warns(UserWarning, match=r"`flavor='pearson_residuals'` expects raw count data"):
        gsc.experimental.pp.highly_variable_genes(x.copy(), n_top_genes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gsc.experimental.pp.highly_variable_genes(x.copy(), n_top_genes=10, check_values=False)


def test_view_and_layer(counts):
    ref, ours = counts[:400].copy(), counts[:400]
    ours_layer = counts.copy()
    ours_layer.layers["counts"] = ours_layer.X.copy()
    ours_layer.X = ours_layer.X * 0
    with pytest.warns(UserWarning, match="Received a view of an AnnData"):
        gsc.experimental.pp.normalize_pearson_residuals(ours)
    _silent(sc.experimental.pp.normalize_pearson_residuals, ref)
    np.testing.assert_allclose(ours.X, ref.X, atol=TOL["float32"])
    gsc.experimental.pp.normalize_pearson_residuals(ours_layer, layer="counts")
    assert ours_layer.uns["pearson_residuals_normalization"]["computed_on"] == "counts"
    assert (ours_layer.X != 0).nnz == 0 and isinstance(ours_layer.layers["counts"], np.ndarray)


def test_gpu_equals_cpu(device, counts):
    """On the GPU (or the kernel emulator's device arrays) the residuals stay there and equal the
    CPU's; the gene selection is the same."""
    cpu, gpu = counts.copy(), gsc.get.to_gpu(counts.copy(), copy=True)
    gsc.experimental.pp.highly_variable_genes(cpu, n_top_genes=150, batch_key="batch")
    gsc.experimental.pp.highly_variable_genes(gpu, n_top_genes=150, batch_key="batch")
    pd.testing.assert_frame_equal(gpu.var, cpu.var, rtol=1e-12)
    _silent(gsc.experimental.pp.normalize_pearson_residuals, cpu)
    _silent(gsc.experimental.pp.normalize_pearson_residuals, gpu)
    assert gsc.get.is_on_gpu(gpu) or device == "emulated"
    np.testing.assert_allclose(to_host(gpu.X), cpu.X, rtol=1e-12, atol=1e-12)


def test_gene_selection_on_dask_gpu_blocks_equals_cpu(device, counts):
    """CuPy blocks (CSR and dense) give the host blocks' selection: the residual sums' CuPy branch
    block by block."""
    da = pytest.importorskip("dask.array")
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    x = counts.X.astype(np.float32)
    want = gsc.experimental.pp.highly_variable_genes(counts, n_top_genes=150, batch_key="batch", inplace=False)
    for blocks in (da.from_array(x, chunks=(150, -1), asarray=False).map_blocks(
                       cpsp.csr_matrix, meta=cpsp.csr_matrix((0, x.shape[1]), dtype=x.dtype)),
                   da.from_array(x.toarray(), chunks=(150, -1)).map_blocks(
                       cp.asarray, meta=cp.empty((0, x.shape[1]), dtype=x.dtype))):  # fmt: skip
        lazy = counts.copy()
        lazy.X = blocks
        got = gsc.experimental.pp.highly_variable_genes(lazy, n_top_genes=150, batch_key="batch", inplace=False)
        pd.testing.assert_frame_equal(got, want, rtol=1e-12)


def test_dask_is_refused_with_what_to_do(counts):
    da = pytest.importorskip("dask.array")
    lazy = counts.copy()
    lazy.X = da.from_array(counts.X.toarray(), chunks=(200, -1))
    for name, call in (("normalize_pearson_residuals", lambda: gsc.experimental.pp.normalize_pearson_residuals(lazy)),
                       ("normalize_pearson_residuals_pca",
                        lambda: gsc.experimental.pp.normalize_pearson_residuals_pca(lazy))):  # fmt: skip
        with pytest.raises(TypeError, match=rf"^{name}: got a Dask array; .* adata.X = adata.X.compute\(\)"):
            call()
    assert "pearson_residuals_normalization" not in lazy.uns and "PCs" not in lazy.varm


@pytest.mark.parametrize("kind", ["csr", "dense split along genes"])
def test_gene_selection_on_dask_equals_in_memory(counts, kind):
    """The selection needs only the residual variances, sums over rows: a Dask X (which
    scanpy's selection does not take) gives the in-memory result, batches and the value check
    included, block by block."""
    da = pytest.importorskip("dask.array")
    counts = counts.copy()
    counts.obs["batch"] = np.where(np.arange(counts.n_obs) % 3 == 0, "a", "b")
    x = counts.X.astype(np.float32)
    x.data[0] += 0.5  # not a count: the warning, in both
    lazy = counts.copy()
    lazy.X = (da.from_array(x, chunks=(150, -1), asarray=False) if kind == "csr"
              else da.from_array(x.toarray(), chunks=(150, 300)))  # fmt: skip
    counts.X = x
    for batch_key in (None, "batch"):
        with pytest.warns(UserWarning, match="non-integers were found"):
            want = gsc.experimental.pp.highly_variable_genes(counts, n_top_genes=50, batch_key=batch_key,
                                                             inplace=False)  # fmt: skip
        with pytest.warns(UserWarning, match="non-integers were found"):
            got = gsc.experimental.pp.highly_variable_genes(lazy, n_top_genes=50, batch_key=batch_key, inplace=False)
        assert got.columns.equals(want.columns) and got.index.equals(want.index)
        assert (got["highly_variable"] == want["highly_variable"]).all()
        for column in ("means", "variances", "residual_variances"):
            np.testing.assert_allclose(got[column], want[column], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got["highly_variable_rank"], want["highly_variable_rank"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # check_values=False: the non-count is not reported
        gsc.experimental.pp.highly_variable_genes(lazy, n_top_genes=50, check_values=False, subset=True)
    assert lazy.n_vars == 50 and isinstance(lazy.X, da.Array)


def test_dask_value_check_and_nan_batch_labels(counts):
    """On Dask the value check reads every batch's rows (and the cells of none); a float NaN
    label is scanpy's batch of no cells (its cells in no batch, all its variances 0), in memory
    and on Dask; a missing text label is refused with what to do (scanpy: a bare '<' error)."""
    da = pytest.importorskip("dask.array")
    a = counts.copy()
    labels = (np.arange(a.n_obs) % 3).astype(float)
    labels[[4, 10]] = np.nan
    a.obs["b"] = labels
    for row in (1, 2, 4):  # batches 1 and 2, and a cell of no batch
        x = a.X.astype(np.float32)
        x.data[x.indptr[row]] += 0.5
        lazy = a.copy()
        lazy.X = da.from_array(x, chunks=(150, -1), asarray=False)
        with pytest.warns(UserWarning, match="non-integers were found"):
            gsc.experimental.pp.highly_variable_genes(lazy, n_top_genes=50, batch_key="b", inplace=False)
    want = _silent(sc.experimental.pp.highly_variable_genes, a.copy(), n_top_genes=100, batch_key="b", inplace=False)
    lazy = a.copy()
    lazy.X = da.from_array(a.X, chunks=(150, -1), asarray=False)
    for b in (a, lazy):
        got = gsc.experimental.pp.highly_variable_genes(b.copy(), n_top_genes=100, batch_key="b", inplace=False)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
    a.obs["s"] = np.where(np.arange(a.n_obs) % 2, "x", None)
    with pytest.raises(TypeError, match=r"adata.obs\['s'\] mixes labels .* \(350 missing values"):
        gsc.experimental.pp.highly_variable_genes(a, n_top_genes=10, batch_key="s")
    assert "highly_variable" not in a.var


def test_dask_recipe_refused_before_anything_changes(counts):
    """The recipe's selection takes Dask, its residuals do not: refused before the selection
    wrote var and uns (it wrote them, then failed under another step's name)."""
    da = pytest.importorskip("dask.array")
    lazy = counts.copy()
    lazy.X = da.from_array(counts.X, chunks=(200, -1), asarray=False)
    with pytest.raises(TypeError, match="^recipe_pearson_residuals: got a Dask array"):
        gsc.experimental.pp.recipe_pearson_residuals(lazy, n_top_genes=50)
    assert list(lazy.var.columns) == list(counts.var.columns) and set(lazy.uns) == set(counts.uns)


def test_empty_cells_and_genes_warning_names_the_step_and_counts(counts):
    x = counts.X.toarray()
    x[:, [3, 7]] = 0
    x[5] = 0
    a = counts.copy()
    a.X = sp.csr_matrix(x)
    with pytest.warns(RuntimeWarning, match=r"^normalize_pearson_residuals: cells without counts: 1, genes "
                                            r"without counts: 2;"):  # fmt: skip
        gsc.experimental.pp.normalize_pearson_residuals(a.copy())
    # the PCA then refuses the NaN, as scanpy's does; the warning before it names the step called
    with pytest.warns(RuntimeWarning, match=r"^normalize_pearson_residuals_pca: cells without counts: 1"), \
            pytest.raises(ValueError, match="non-finite"):
        gsc.experimental.pp.normalize_pearson_residuals_pca(a.copy())


def test_n_top_genes_as_a_zero_d_array_is_taken(counts):
    """scanpy takes n_top_genes=np.array(10); NaN and inf get our message."""
    got = gsc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes=np.array(10), inplace=False)
    assert got["highly_variable"].sum() == 10
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="n_top_genes must be a positive integer"):
            gsc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes=bad)


# --- from an audit against scanpy 1.11.5 (regressions: scanpy's behaviour stated) ---


def _filtered(counts):
    """The counts without the genes of no counts (whose residuals are NaN in both libraries)."""
    a = counts.copy()
    return a[:, np.asarray((a.X > 0).sum(axis=0)).ravel() > 0].copy()


def test_residual_dtype_follows_numpys_promotion():
    """scanpy's residuals take the counts' float dtype, promoted by theta and clip as NumPy 2
    promotes: Python numbers do not, float64 NumPy scalars and the default clip (np.sqrt) do."""
    rd = _residuals.residual_dtype
    assert rd(np.dtype(np.float32), 100, 5) == rd(np.dtype(np.float32), 100, 5.0) == np.float32
    assert rd(np.dtype(np.float32), 100, np.float32(5)) == np.float32
    assert rd(np.dtype(np.float32), 100, None) == rd(np.dtype(np.float32), np.float64(100), 5) == np.float64
    assert rd(np.dtype(np.int64), 100, 5) == rd(np.dtype(np.float64), 100, 5) == np.float64
    assert rd(np.dtype(np.float16), 100, 5) == np.float16


@pytest.mark.parametrize("kind", ["csr", "numpy"])
@pytest.mark.parametrize("clip", [5, 5.0, np.float32(5)])
def test_float32_counts_with_a_given_clip_give_scanpys_float32(counts, kind, clip):
    """scanpy computes on float32 counts in float32: its residuals are float64 only where the
    clip is None (np.sqrt(n), a float64 scalar, promotes them) or a float64 array scalar; a
    Python number or a float32 clip leaves them float32, and so the PCA on them."""
    base = _filtered(counts)
    ours, ref = _with(base, "float32", kind), _with(base, "float32", kind)
    sc.experimental.pp.normalize_pearson_residuals(ref, clip=clip)
    gsc.experimental.pp.normalize_pearson_residuals(ours, clip=clip)
    assert ref.X.dtype == np.float32
    assert ours.X.dtype == ref.X.dtype
    np.testing.assert_allclose(ours.X, ref.X, atol=TOL["float32"])
    got = gsc.experimental.pp.normalize_pearson_residuals(_with(base, "float32", kind), clip=clip, inplace=False)
    want = sc.experimental.pp.normalize_pearson_residuals(_with(base, "float32", kind), clip=clip, inplace=False)
    assert got["X"].dtype == want["X"].dtype == np.float32


def test_float32_counts_with_a_given_clip_pca_keys_as_scanpy(counts):
    """normalize_pearson_residuals_pca on float32 counts with clip=5 (no mask): scanpy's
    uns['pca'] variances, varm['PCs'] and the residuals' DataFrame are float32."""
    base = _filtered(counts)
    ours, ref = base.copy(), base.copy()
    sc.experimental.pp.normalize_pearson_residuals_pca(ref, clip=5, n_comps=10)
    gsc.experimental.pp.normalize_pearson_residuals_pca(ours, clip=5, n_comps=10)
    assert ours.varm["PCs"].dtype == ref.varm["PCs"].dtype == np.float32
    for key in ("variance", "variance_ratio"):
        assert ours.uns["pca"][key].dtype == ref.uns["pca"][key].dtype
    df, ref_df = (a.uns["pearson_residuals_normalization"]["pearson_residuals_df"] for a in (ours, ref))
    assert df.dtypes.equals(ref_df.dtypes)


def test_residuals_of_a_gene_without_counts_warn_as_scanpy(counts):
    """A gene (or cell) without counts has mu = 0 and residuals 0 / 0 = NaN: scanpy's NumPy
    arithmetic says so (RuntimeWarning 'invalid value encountered in divide'); ours gave the
    same NaN silently (now a warning that counts them)."""
    a = _filtered(counts)
    x = a.X.toarray()
    x[:, 3] = 0
    a.X = sp.csr_matrix(x)
    with pytest.warns(RuntimeWarning, match="invalid value"):
        sc.experimental.pp.normalize_pearson_residuals(a.copy())
    with pytest.warns(RuntimeWarning):
        gsc.experimental.pp.normalize_pearson_residuals(a.copy())


def test_n_top_genes_of_the_wrong_type_is_scanpys_type_error(counts):
    """scanpy raises a TypeError (its comparison of ranks with a str) for n_top_genes='100'."""
    with pytest.raises(TypeError):
        sc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes="100")
    with pytest.raises(TypeError, match="n_top_genes"):
        gsc.experimental.pp.highly_variable_genes(counts.copy(), n_top_genes="100")


def test_non_finite_counts_refused_in_memory_and_on_dask(counts):
    """One NaN or inf count made 59 of 60 residual variances NaN and the selection arbitrary,
    written to var without a word (scanpy's too): refused, adata unchanged; the residuals too
    (they were NaN where the gene's or the cell's total was)."""
    da = pytest.importorskip("dask.array")
    for bad in (np.nan, np.inf):
        x = sp.csr_matrix(counts.X, dtype=np.float32)
        x.data[7] = bad
        for lazy in (False, True):
            a = counts.copy()
            a.X = da.from_array(x, chunks=(150, -1), asarray=False) if lazy else x
            with pytest.raises(ValueError, match="NaN or inf"):
                gsc.experimental.pp.highly_variable_genes(a, n_top_genes=50)
            assert "highly_variable" not in a.var and "hvg" not in a.uns
        a = counts.copy()
        a.X = x
        with pytest.raises(ValueError, match=r"normalize_pearson_residuals: found 1 non-finite values \(NaN or inf\)"):
            gsc.experimental.pp.normalize_pearson_residuals(a)
        np.testing.assert_array_equal(a.X.toarray(), x.toarray())  # (NaN equal to NaN)
        assert "pearson_residuals_normalization" not in a.uns


def test_dask_selection_reads_the_blocks_twice(counts):
    """The batches' gene totals, then the residuals' sums and squared deviations together (each
    block centred on its own mean, the blocks merged by Chan et al.'s update): two passes, where
    the sums and the deviations from the batch's mean took one each; the same selection."""
    pytest.importorskip("dask.array")
    from _helpers import counted_dask

    a = counts.copy()
    a.obs["b"] = np.where(np.arange(a.n_obs) % 3 == 0, "x", "y")
    for key in (None, "b"):
        lazy, made = counted_dask(sp.csr_matrix(a.X), rows=100)
        b = ad.AnnData(lazy, obs=a.obs.copy(), var=a.var.copy())
        got = gsc.experimental.pp.highly_variable_genes(b, n_top_genes=100, batch_key=key, inplace=False)
        assert sorted(made) == sorted(list(range(lazy.numblocks[0])) * 2)
        want = gsc.experimental.pp.highly_variable_genes(a.copy(), n_top_genes=100, batch_key=key, inplace=False)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
