"""filter_genes_dispersion and the recipes (zheng17, seurat, weinreb17) against scanpy's, on
the bundled real data, in memory, on Dask blocks and on device arrays (CUDA or the emulator)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import _load, cells_for, to_host

import gpu_sc as gsc


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _normalised(name="mouse_brain_10k_subset.h5ad"):
    a = _load(name)
    _quiet(sc.pp.filter_genes, a, min_counts=1)
    sc.pp.normalize_total(a)
    return a


def _same_selection(got, ref, n_top):
    """The same genes, also for the top n: scanpy compares the float64 values with the n-th
    float32 one, so the n-th gene drops out where its rounding went up (ours kept it: n genes
    where scanpy kept n - 1 for about half of the n an audit tried, and recipe_zheng17 too)."""
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("data", ["mouse_brain_10k_subset.h5ad", "pbmc68k_reduced_counts.h5ad"], ids=["brain", "pbmc"])
@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
@pytest.mark.parametrize("log", [True, False], ids=["log", "linear"])
@pytest.mark.parametrize("select", [{"n_top_genes": 100}, {}, {"min_mean": 0.1, "max_disp": 3.0}],
                         ids=["top", "defaults", "cutoffs"])  # fmt: skip
def test_record_equals_scanpy(data, flavor, log, select):
    x = _normalised(data).X
    ref = _quiet(sc.pp.filter_genes_dispersion, x, flavor=flavor, log=log, **select)
    with pytest.warns(FutureWarning, match="highly_variable_genes"):
        got = gsc.pp.filter_genes_dispersion(x, flavor=flavor, log=log, **select)
    assert got.dtype == ref.dtype
    for field in ("means", "dispersions", "dispersions_norm"):
        np.testing.assert_allclose(got[field], ref[field], rtol=2e-6, atol=1e-5, equal_nan=True)
    _same_selection(got.gene_subset, ref.gene_subset, select.get("n_top_genes"))


@pytest.mark.parametrize("select", [{"n_top_genes": 200}, {"min_mean": 0.0}], ids=["top", "cutoffs"])
def test_infinite_normalised_dispersions_as_scanpy(select):
    """Raw counts: in a mean bin where most genes share one dispersion the MAD is 0 and the
    others' normalised dispersion is infinite. scanpy ranks those genes first and keeps them all,
    and its cutoffs (strictly below max_disp=inf) drop them."""
    a = _load("soupx_pbmc4k_half.h5ad")
    _quiet(sc.pp.filter_genes, a, min_counts=1)
    ref = _quiet(sc.pp.filter_genes_dispersion, a.X, flavor="cell_ranger", log=False, **select)
    got = _quiet(gsc.pp.filter_genes_dispersion, a.X, flavor="cell_ranger", log=False, **select)
    assert np.isinf(ref.dispersions_norm).sum() > 200
    np.testing.assert_array_equal(got.gene_subset, ref.gene_subset)


def test_bool_n_bins_is_one_bin_as_in_scanpy():
    """pandas' cut, which scanpy bins with, takes True as one bin (highly_variable_genes too)."""
    x = _normalised("pbmc68k_reduced_counts.h5ad").X
    ref = _quiet(sc.pp.filter_genes_dispersion, x, n_bins=True)
    got = _quiet(gsc.pp.filter_genes_dispersion, x, n_bins=True)
    np.testing.assert_allclose(got["dispersions_norm"], ref["dispersions_norm"], rtol=2e-6, atol=1e-5)
    np.testing.assert_array_equal(got.gene_subset, ref.gene_subset)


@pytest.mark.parametrize("subset", [True, False])
def test_anndata_input(subset):
    a = _normalised("pbmc68k_reduced_counts.h5ad")
    ref = _quiet(sc.pp.filter_genes_dispersion, a, subset=subset, copy=True)
    before = a.copy()
    got = _quiet(gsc.pp.filter_genes_dispersion, a, subset=subset, copy=True)
    assert (a.X != before.X).nnz == 0 and a.var.equals(before.var)  # copy=True leaves `a`
    assert got.var_names.equals(ref.var_names) and list(got.var.columns) == list(ref.var.columns)
    for col in ("means", "dispersions", "dispersions_norm"):
        np.testing.assert_allclose(got.var[col], ref.var[col], rtol=2e-6, atol=1e-5)
    assert _quiet(gsc.pp.filter_genes_dispersion, a, subset=subset) is None
    assert a.var_names.equals(ref.var_names) and (subset or a.var["highly_variable"].equals(ref.var["highly_variable"]))


def test_top_genes_are_scanpys_for_every_n():
    x = _load("pbmc68k_reduced_counts.h5ad").X.toarray()
    fewer = 0
    for n in range(1, 301, 7):
        ref = _quiet(sc.pp.filter_genes_dispersion, x, n_top_genes=n).gene_subset
        got = _quiet(gsc.pp.filter_genes_dispersion, x, n_top_genes=n).gene_subset
        np.testing.assert_array_equal(got, ref, err_msg=f"n_top_genes={n}")
        fewer += int(ref.sum() < n)
    assert fewer > 0  # the case is there


def test_zheng17_equals_scanpy():
    a = _load("mouse_brain_10k_subset.h5ad")
    ref = _quiet(sc.pp.recipe_zheng17, a, n_top_genes=300, copy=True)
    got = _quiet(gsc.pp.recipe_zheng17, a, n_top_genes=300, copy=True)
    assert a.n_vars == 1000 and "n_counts_all" not in a.obs  # copy=True leaves `a`
    _same_recipe_result(got, ref)


def test_seurat_equals_scanpy():
    a = _load("pbmc68k_reduced_counts.h5ad")
    ref = _quiet(sc.pp.recipe_seurat, a, copy=True)
    got = _quiet(gsc.pp.recipe_seurat, a, copy=True)
    _same_recipe_result(got, ref)
    ref = _quiet(sc.pp.recipe_seurat, a, log=False, copy=True)
    got = _quiet(gsc.pp.recipe_seurat, a, log=False, copy=True)
    _same_recipe_result(got, ref)


def _same_recipe_result(got, ref):
    """Equal up to round-off: scanpy's per-cell sums of float32 values are float32 (ours float64),
    which moves the re-normalised values and so the stored gene means by up to ~3e-5."""
    assert got.obs_names.equals(ref.obs_names) and got.var_names.equals(ref.var_names)
    assert list(got.obs.columns) == list(ref.obs.columns) and list(got.var.columns) == list(ref.var.columns)
    assert set(got.uns) == set(ref.uns) and type(got.X) is type(ref.X) and got.X.dtype == ref.X.dtype
    for col in ref.obs.columns.union(ref.var.columns):
        frame = ref.obs if col in ref.obs else ref.var
        mine = got.obs if col in ref.obs else got.var
        if frame[col].dtype.kind == "f":
            np.testing.assert_allclose(mine[col], frame[col], rtol=1e-4)
        else:
            assert mine[col].equals(frame[col])
    np.testing.assert_allclose(to_host(got.X), to_host(ref.X), rtol=1e-5, atol=1e-5)


def test_zheng17_in_place_positionals_and_log():
    a = _load("mouse_brain_10k_subset.h5ad")
    ref = _quiet(sc.pp.recipe_zheng17, a, n_top_genes=200, log=False, copy=True)
    with pytest.warns(FutureWarning, match="no longer positional"):
        assert gsc.pp.recipe_zheng17(a, 200, False) is None
    _same_recipe_result(a, ref)


def test_zheng17_dask_equals_in_memory():
    import dask.array as da

    a = _load("mouse_brain_10k_subset.h5ad")
    want = _quiet(gsc.pp.recipe_zheng17, a, n_top_genes=200, copy=True)
    a.X = da.from_array(a.X, chunks=(2000, -1), asarray=False)
    _quiet(gsc.pp.recipe_zheng17, a, n_top_genes=200)
    assert isinstance(a.X, da.Array)
    assert a.var_names.equals(want.var_names)
    np.testing.assert_allclose(a.X.compute(), want.X, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_gpu_equals_cpu(device, dense):
    a = cells_for(device, _load("mouse_brain_10k_subset.h5ad")[:, :400].copy(), n=500)
    _quiet(gsc.pp.filter_genes, a, min_cells=5)  # percentile bins need distinct gene means
    if dense:
        a.X = a.X.toarray()
    want = _quiet(gsc.pp.recipe_zheng17, a, n_top_genes=80, copy=True)
    gpu = gsc.get.to_gpu(a, copy=True)
    record = _quiet(gsc.pp.filter_genes_dispersion, gpu.X, flavor="cell_ranger", n_top_genes=50)
    np.testing.assert_array_equal(record, _quiet(gsc.pp.filter_genes_dispersion, a.X, flavor="cell_ranger",
                                                 n_top_genes=50))  # fmt: skip
    _quiet(gsc.pp.recipe_zheng17, gpu, n_top_genes=80)
    assert type(gpu.X).__module__.startswith("cupy")
    assert gpu.var_names.equals(want.var_names)
    np.testing.assert_allclose(to_host(gpu.X), to_host(want.X), rtol=1e-5, atol=1e-5)


def test_weinreb17_runs_scanpys_on_dense_and_refuses_the_rest():
    a = _load("pbmc68k_reduced_counts.h5ad")[:300].copy()
    a.X = a.X.toarray()
    ref = _quiet(sc.pp.recipe_weinreb17, a, n_pcs=10, copy=True)
    got = _quiet(gsc.pp.recipe_weinreb17, a, n_pcs=10, copy=True)
    np.testing.assert_array_equal(got.X, ref.X)
    np.testing.assert_allclose(np.abs(got.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), rtol=1e-4, atol=1e-5)
    inplace, want = a.copy(), a.copy()  # in place: scanpy's result, in the caller's object
    _quiet(gsc.pp.recipe_weinreb17, inplace, n_pcs=10)
    _quiet(sc.pp.recipe_weinreb17, want, n_pcs=10)
    np.testing.assert_array_equal(inplace.X, want.X)
    assert list(inplace.var_names) == list(want.var_names) and set(inplace.uns) == set(want.uns)
    # scanpy's fails in its PCA after its filter and logs (no gene above the threshold): ours
    # leaves adata as it was (scanpy's left it 300 x 0, logged)
    before = a.copy()
    with pytest.raises(ValueError, match="0 feature"):
        _quiet(gsc.pp.recipe_weinreb17, a, n_pcs=10, mean_threshold=1e9)
    assert a.shape == before.shape and np.array_equal(a.X, before.X) and set(a.uns) == set(before.uns)
    a.X = sp.csr_matrix(a.X)
    before = a.X.copy()
    with pytest.raises(ValueError, match=r"dense in-memory NumPy X .* got a CSR matrix"):
        gsc.pp.recipe_weinreb17(a)
    assert (before != a.X).nnz == 0


@pytest.mark.parametrize("on_dask", [False, True], ids=["memory", "dask"])
@pytest.mark.parametrize("recipe", ["recipe_zheng17", "recipe_seurat"])
def test_recipe_refuses_negative_counts_before_any_step(recipe, on_dask):
    """A negative count reached log1p only after the filters and normalisation had changed
    adata (scanpy: an IndexError after the same changes); now it is refused first. On Dask
    blocks recipe_seurat took -0.5 (normalised, above log1p's -1) without a word."""
    import dask.array as da

    a = _load("pbmc68k_reduced_counts.h5ad")
    a.X.data[0] = -0.5 if on_dask else -2.0
    if on_dask:
        a.X = da.from_array(a.X, chunks=(250, a.n_vars))
    before = a.copy()
    with pytest.raises(ValueError, match=rf"{recipe}: expects non-negative counts but found 1 negative"):
        _quiet(getattr(gsc.pp, recipe), a)
    assert a.shape == before.shape and list(a.obs) == list(before.obs) and list(a.var) == list(before.var)
    x, x0 = (a.X.compute(), before.X.compute()) if on_dask else (a.X, before.X)
    assert (x != x0).nnz == 0
    _quiet(getattr(gsc.pp, recipe), a, log=False, copy=True)  # not logged: negative values pass, as in scanpy


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"flavor": "seurat_v3"}, "flavor must be 'seurat' or 'cell_ranger', got 'seurat_v3'"),
    ({"n_top_genes": 0}, "n_top_genes must be a positive integer or None, got 0"),
    ({"n_bins": 0}, "n_bins must be a positive integer, got 0"),
], ids=["flavor", "n-top", "n-bins"])  # fmt: skip
def test_bad_arguments_are_refused(kwargs, match):
    a = _load("pbmc68k_reduced_counts.h5ad")
    before = a.copy()
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gsc.pp.filter_genes_dispersion(a, **kwargs)
    assert a.shape == before.shape and (a.X != before.X).nnz == 0


def test_recipe_with_no_gene_left_says_so():
    """scanpy goes on into log1p and scale on no genes (its own test_recipe_plotting runs that);
    ours warns and stops there."""
    a = _load("mouse_brain_10k_subset.h5ad")  # about 60 genes per cell: min_genes=200 keeps 14 cells
    with pytest.warns(UserWarning, match=r"recipe_seurat: no gene passed the dispersion filter \(14 cells x 0"):
        out = _quiet_future(gsc.pp.recipe_seurat, a, copy=True)
    assert out.shape == (14, 0)
    rng = np.random.default_rng(0)
    uniform = sc.AnnData(rng.integers(0, 1000, (1000, 1000)))  # scanpy's test: counts of no structure
    with pytest.warns(UserWarning, match="no gene passed"):
        _quiet_future(gsc.pp.recipe_seurat, uniform.copy())


def test_recipe_whose_own_filters_leave_nothing_says_which():
    """A recipe's filter_cells / filter_genes leaving no cell or gene: a warning naming that
    filter, and the recipe stops (the next step's 'empty matrix' error named normalize_total)."""
    few_genes = _load("pbmc68k_reduced_counts.h5ad")[:, :150].copy()  # no cell has 200 genes
    with pytest.warns(UserWarning, match=r"recipe_seurat: no cell passed filter_cells\(min_genes=200\) \(0 cells"):
        out = _quiet_future(gsc.pp.recipe_seurat, few_genes, copy=True)
    assert out.n_obs == 0 and few_genes.shape == (700, 150)
    zeros = sc.AnnData(np.zeros((50, 30), np.float32))
    with pytest.warns(UserWarning, match=r"recipe_zheng17: no gene passed filter_genes\(min_counts=1\) \(50 cells x 0"):
        out = _quiet_future(gsc.pp.recipe_zheng17, zeros, copy=True)
    assert out.shape == (50, 0)


def test_odd_input():
    a = _normalised("pbmc68k_reduced_counts.h5ad")
    with pytest.warns(UserWarning, match=r"1 cell\(s\): a gene's variance over fewer than 2 cells is undefined"):
        record = _quiet_future(gsc.pp.filter_genes_dispersion, a.X[:1])
    assert not record.gene_subset.any()  # (scanpy keeps the genes its round-off gives a variance)
    with pytest.warns(UserWarning, match=r"n_top_genes \(5000\) is more than the \d+ genes"):
        record = _quiet_future(gsc.pp.filter_genes_dispersion, a.X, n_top_genes=5000)
    assert record.gene_subset.sum() == np.isfinite(record.dispersions_norm).sum()
    with pytest.warns(UserWarning, match="all cutoffs are ignored"):
        _quiet_future(gsc.pp.filter_genes_dispersion, a.X, n_top_genes=10, min_mean=0.5)
    with pytest.warns(UserWarning, match="all cutoffs are ignored"):  # an AnnData: always, as scanpy's
        _quiet_future(gsc.pp.filter_genes_dispersion, a.copy(), n_top_genes=10)
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = a.X.copy()
        bad.data[0] = np.nan
        _quiet_future(gsc.pp.filter_genes_dispersion, bad)
    with pytest.raises(ValueError, match="n_top_genes must be an integer|n_top_genes"):
        gsc.pp.recipe_zheng17(a, n_top_genes=-1)


def _quiet_future(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args, **kwargs)
