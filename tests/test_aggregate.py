"""gsc.get.aggregate against scanpy's sc.get.aggregate on real counts: the same AnnData, bit for
bit on the CPU; Dask blocks and the GPU kernel within the reordering bound; bad input refused."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scanpy as sc
from _helpers import as_type, assert_close, cells_for, to_host

import gpu_sc as gsc
from gpu_sc._ops import group_sums, parts

FUNCS = ["sum", "mean", "count_nonzero", "var", "median"]


@pytest.fixture
def cells(pbmc):
    a = pbmc.copy()
    a.obs["grp"] = a.obs["bulk_labels"].astype(str)
    a.obs["half"] = np.where(np.arange(a.n_obs) % 2, "x", "y")
    a.obs["keep"] = np.arange(a.n_obs) % 3 != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ln = a.copy()
        sc.pp.normalize_total(ln)
        sc.pp.log1p(ln)
    a.layers["log"] = ln.X
    a.obsm["emb"] = np.random.default_rng(0).normal(size=(a.n_obs, 5)).astype(np.float32)
    a.var["kind"] = np.where(np.arange(a.n_vars) % 3 == 0, "a", "b")
    a.varm["load"] = np.random.default_rng(1).normal(size=(a.n_vars, 4)).astype(np.float32)
    return a


def assert_same_adata(got: ad.AnnData, ref: ad.AnnData) -> None:
    """The same groups, labels and layers, each of the same dtype and values."""
    pd.testing.assert_frame_equal(got.obs, ref.obs)
    assert got.var_names.equals(ref.var_names) and got.obs_names.equals(ref.obs_names)
    assert list(got.layers) == list(ref.layers)  # scanpy's order (the mean beside the variance)
    for k in ref.layers:
        g, r = np.asarray(got.layers[k]), np.asarray(ref.layers[k])
        assert g.dtype == r.dtype, (k, g.dtype, r.dtype)
        np.testing.assert_array_equal(g, r, err_msg=k)


CASES = [
    {"by": "grp"},
    {"by": ["grp", "half"]},
    {"by": ["grp", "grp"]},  # a column named twice: groups named 'x_x', as scanpy's
    {"by": "grp", "layer": "log"},
    {"by": "grp", "mask": "keep"},
    {"by": "grp", "layer": "log", "mask": "keep", "dof": 0},
    {"by": "grp", "obsm": "emb"},
    {"by": "kind", "axis": "var"},
    {"by": "kind", "axis": 1, "layer": "log"},
    {"by": "kind", "varm": "load"},
]


@pytest.mark.parametrize("kind", ["csr", "numpy", "csc"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_equals_scanpy_exactly(cells, kind, case):
    """Same arithmetic in the same order as scanpy's indicator product: bit-identical layers,
    including scanpy's float32 sums under a mask and its variance cut-off."""
    a = cells.copy()
    a.X = as_type(sp.csr_matrix(a.X), kind)
    a.layers["log"] = as_type(sp.csr_matrix(a.layers["log"]), kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scanpy's divide-by-zero for groups of one under dof=1
        ref = sc.get.aggregate(a, func=FUNCS, **case)
        got = gsc.get.aggregate(a, func=FUNCS, **case)
    if "mask" in case and "layer" in case:  # scanpy sums float32 non-integers in float32, we in float64
        for k in ("sum", "mean"):
            assert_close(got.layers[k], ref.layers[k], dtype=np.float32, n_terms=a.n_obs)
            got.layers[k] = ref.layers[k]
        scale = ref.layers["mean"].astype(np.float64) ** 2 + 1e-30  # a variance: relative to E[x^2]
        assert_close(got.layers["var"], ref.layers["var"], dtype=np.float32, n_terms=a.n_obs, scale=4 * scale)
        got.layers["var"] = ref.layers["var"]
    assert_same_adata(got, ref)


def test_masked_float32_sums_past_2_24():
    """Under a mask scanpy sums float32 values in float32, which stalls once a total passes 2**24
    (an ulp of 4 there: 16,385 rounds to 16,384 or 16,388); ours sums in float64 and rounds once."""
    x = np.full((2_000, 2), 16_385.0, dtype=np.float32)
    a = ad.AnnData(x, obs=pd.DataFrame({"g": ["a"] * 2_000, "keep": True}, index=[str(i) for i in range(2_000)]))
    got = gsc.get.aggregate(a, "g", ["sum", "mean", "count_nonzero"], mask="keep")
    assert got.layers["sum"].dtype == np.float32  # scanpy's dtype under a mask
    np.testing.assert_array_equal(got.layers["sum"], [[32_770_000.0] * 2])  # exact in float32 too
    np.testing.assert_array_equal(got.layers["mean"], [[16_385.0] * 2])
    np.testing.assert_array_equal(got.layers["count_nonzero"], [[2_000] * 2])


@pytest.mark.parametrize("func", [["mean", "var"], ["var", "mean"], ["mean", "count_nonzero"], ["median", "mean", "sum"],
                                  ["count_nonzero", "var", "sum"]])
def test_layer_order_as_scanpy(cells, func):
    assert_same_adata(gsc.get.aggregate(cells, "grp", func), sc.get.aggregate(cells, "grp", func))


def test_single_func_and_int64_indices(cells):
    a = cells.copy()
    x = sp.csr_matrix(a.X)
    x.indices, x.indptr = x.indices.astype(np.int64), x.indptr.astype(np.int64)
    a.X = x
    for func in FUNCS:
        assert_same_adata(gsc.get.aggregate(a, "grp", func), sc.get.aggregate(a, "grp", func))


def test_dask_blocks_equal_in_memory(cells):
    da = pytest.importorskip("dask.array")
    a = cells.copy()
    mem = gsc.get.aggregate(a, ["grp", "half"], ["sum", "mean", "var", "count_nonzero"], layer="log")
    a.layers["log"] = da.from_array(sp.csr_matrix(a.layers["log"]), chunks=(150, -1), asarray=False)
    lazy = gsc.get.aggregate(a, ["grp", "half"], ["sum", "mean", "var", "count_nonzero"], layer="log")
    pd.testing.assert_frame_equal(lazy.obs, mem.obs)
    # block partial sums are added in another order: float64 sums of up to 700 terms
    for k in ("sum", "mean"):
        assert_close(lazy.layers[k], mem.layers[k], dtype=np.float64, n_terms=a.n_obs)
    # a variance is a difference of such sums: relative to E[x^2], not to itself
    scale = gsc.get.aggregate(cells, ["grp", "half"], "mean", layer="log").layers["mean"] ** 2 + 1e-300
    assert_close(lazy.layers["var"], mem.layers["var"], dtype=np.float64, n_terms=a.n_obs, scale=4 * scale)
    np.testing.assert_array_equal(lazy.layers["count_nonzero"], mem.layers["count_nonzero"])
    with pytest.raises(NotImplementedError, match="compute"):
        gsc.get.aggregate(a, "grp", "median", layer="log")
    # chunked along both axes, as anndata's readers chunk (blocks of rows and of genes): every
    # row band counted, not the first alone; and axis='var' (genes x cells), whose row bands are genes
    both = cells.copy()
    both.layers["log"] = da.from_array(sp.csr_matrix(cells.layers["log"]), chunks=(150, 200), asarray=False)
    tiled = gsc.get.aggregate(both, ["grp", "half"], ["sum", "count_nonzero"], layer="log")
    assert_close(tiled.layers["sum"], mem.layers["sum"], dtype=np.float64, n_terms=a.n_obs)
    np.testing.assert_array_equal(tiled.layers["count_nonzero"], mem.layers["count_nonzero"])
    want = gsc.get.aggregate(cells, "kind", ["sum", "count_nonzero"], axis="var", layer="log")
    got = gsc.get.aggregate(both, "kind", ["sum", "count_nonzero"], axis="var", layer="log")
    assert_close(got.layers["sum"], want.layers["sum"], dtype=np.float64, n_terms=cells.n_vars)
    np.testing.assert_array_equal(got.layers["count_nonzero"], want.layers["count_nonzero"])


@pytest.mark.parametrize("kind", ["cupyx_csr", "cupy"])
def test_gpu_kernel_equals_cpu(device, cells, kind):
    """Our CUDA kernel (a real GPU or the emulator): atomics add in any order, so the float64
    sums agree within the reordering bound; counts exactly, negative values included (scaled or
    centred data: a count of values above zero only went unseen); layers stay on the device."""
    a = cells_for(device, cells, 200)
    shifted = sp.csr_matrix(a.layers["log"], dtype=np.float32)
    shifted.data -= 1.5  # a third of the stored values negative
    a.layers["log"] = shifted
    cpu = gsc.get.aggregate(a, ["grp", "half"], ["sum", "mean", "var", "count_nonzero"], layer="log")
    g = a.copy()
    g.layers["log"] = as_type(sp.csr_matrix(a.layers["log"]), kind)
    gpu = gsc.get.aggregate(g, ["grp", "half"], ["sum", "mean", "var", "count_nonzero"], layer="log")
    assert hasattr(gpu.layers["sum"], "get")
    for k in ("sum", "mean"):
        assert_close(to_host(gpu.layers[k]), cpu.layers[k], dtype=np.float64, n_terms=a.n_obs)
    np.testing.assert_array_equal(to_host(gpu.layers["count_nonzero"]), cpu.layers["count_nonzero"])
    scale = cpu.layers["mean"] ** 2
    assert_close(to_host(gpu.layers["var"]), cpu.layers["var"], dtype=np.float64, n_terms=a.n_obs, scale=4 * scale)
    # the median (computed on the host, as scanpy's) goes back to the device too (it stayed on the host)
    cpu, gpu = (gsc.get.aggregate(b, "grp", ["median", "sum"], layer="log") for b in (a, g))
    assert hasattr(gpu.layers["median"], "get") and hasattr(gpu.layers["sum"], "get")
    np.testing.assert_array_equal(to_host(gpu.layers["median"]), cpu.layers["median"])


def test_gpu_integer_counts_equal_cpu(device, cells):
    """Dense integer counts (to_gpu keeps a dense int32 X as it is; the kernel takes floats):
    the CPU's sums, means, variances and counts exactly, as integer sums below 2**53 are exact."""
    import cupy as cp

    a = cells_for(device, cells, 200)
    a.X = a.X.toarray().astype(np.int32)
    funcs = ["sum", "mean", "var", "count_nonzero"]
    cpu = gsc.get.aggregate(a, "grp", funcs)
    g = a.copy()
    g.X = cp.asarray(a.X)
    gpu = gsc.get.aggregate(g, "grp", funcs)
    for k in funcs:
        np.testing.assert_array_equal(to_host(gpu.layers[k]), cpu.layers[k], err_msg=k)


def test_group_sums_primitive():
    """Rows outside every group (-1) add nothing; dense and CSR give the same sums; squares are
    formed in the input dtype (float32 here) before they are summed."""
    rng = np.random.default_rng(1)
    x = sp.random(60, 9, density=0.4, format="csr", dtype=np.float32, random_state=2) * 7
    codes = rng.integers(-1, 4, 60)
    s, q, n = group_sums(parts(x), codes, 4, squares=True, counts=True)
    d = x.toarray()
    for g in range(4):
        rows = d[codes == g]
        np.testing.assert_array_equal(n[g], (rows != 0).sum(0))
        assert_close(s[g], rows.sum(0, dtype=np.float64), n_terms=len(rows))
        assert_close(q[g], (rows * rows).astype(np.float64).sum(0), n_terms=len(rows))
    sd, _, _ = group_sums(parts(d), codes, 4)
    np.testing.assert_array_equal(sd, s)  # the same values in the same row order
    with pytest.raises(ValueError, match="one group per row"):
        group_sums(parts(x), codes[:5], 4)


def test_bad_input_is_refused_and_leaves_adata_unchanged(cells):
    a = cells.copy()
    before = a.copy()
    with pytest.raises(KeyError, match="nope"):
        gsc.get.aggregate(a, "nope", "sum")
    with pytest.raises(ValueError, match="func must be"):
        gsc.get.aggregate(a, "grp", "total")
    with pytest.raises(ValueError, match="mask must be a boolean array of length 700"):
        gsc.get.aggregate(a, "grp", "sum", mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="mask 'm'"):  # scanpy's type
        gsc.get.aggregate(a, "grp", "sum", mask="m")
    with pytest.raises(TypeError, match="at most one"):
        gsc.get.aggregate(a, "grp", "sum", layer="log", obsm="emb")
    with pytest.raises(ValueError, match="axis must be"):
        gsc.get.aggregate(a, "grp", "sum", axis=2)
    with pytest.raises(ValueError, match="dof"):
        gsc.get.aggregate(a, "grp", "var", dof=-1)
    with pytest.raises(ValueError, match="obsm='emb' aggregates cells"):
        gsc.get.aggregate(a, "kind", "sum", obsm="emb", axis="var")
    a.obs["gap"] = a.obs["grp"].where(np.arange(a.n_obs) > 3)
    with pytest.raises(ValueError, match="4 missing values"):
        gsc.get.aggregate(a, "gap", "sum")
    del a.obs["gap"]
    pd.testing.assert_frame_equal(a.obs, before.obs)
    np.testing.assert_array_equal(a.X.toarray(), before.X.toarray())


def test_a_matrix_is_refused_as_scanpy_refuses_it():
    """scanpy's aggregate dispatches on AnnData: a bare matrix is NotImplementedError there
    (its test_dispatch_not_implemented); ours is that and a TypeError, with what to do."""
    import gpu_sc as gsc

    with pytest.raises(NotImplementedError, match="wrap the matrix"):
        gsc.get.aggregate(np.ones((3, 2)), "x", "sum")
    with pytest.raises(TypeError):
        gsc.get.aggregate(np.ones((3, 2)), "x", "sum")


def test_median_of_duplicate_entries_is_of_their_sum():
    """A CSR holding 2 as 1 + 1: the median of the matrix's values (2), as every other func reads
    the sum of duplicates (scanpy's median took each entry apart: 1)."""
    dup = sp.csr_matrix((np.array([1, 1, 1, 1, 1, 1, 2], np.float32), np.zeros(7, np.int32),
                         np.array([0, 2, 4, 6, 7], np.int32)), shape=(4, 1))  # fmt: skip
    obs = pd.DataFrame({"g": pd.Categorical(["a"] * 4)}, index=list("0123"))
    got = gsc.get.aggregate(ad.AnnData(dup, obs=obs), "g", ["median", "sum"])
    np.testing.assert_array_equal(np.asarray(got.layers["median"]).ravel(), [2.0])
    np.testing.assert_array_equal(np.asarray(got.layers["sum"]).ravel(), [8.0])
    assert not dup.has_canonical_format  # the caller's matrix as it was


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_var_with_dof_two_as_scanpy_and_by_hand(kind):
    """dof=2 divides each group's sum of squared deviations by size - 2 (scanpy's rescaling by
    size / (size - dof)): groups (0, 1, 5) and (2, 2, 8) give 14/1 and 24/1."""
    x = np.array([[0], [1], [5], [2], [2], [8]], dtype=np.float64)
    obs = pd.DataFrame({"g": pd.Categorical(list("aaabbb"))}, index=list("012345"))
    a = ad.AnnData(as_type(sp.csr_matrix(x), kind), obs=obs)
    ref = sc.get.aggregate(a, "g", "var", dof=2)
    got = gsc.get.aggregate(a, "g", "var", dof=2)
    np.testing.assert_allclose(np.asarray(ref.layers["var"]).ravel(), [14.0, 24.0])
    assert_same_adata(got, ref)


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_float64_values_summed_in_scanpys_row_order(kind):
    """float64 values that are not exact in any order (float32 inputs sum exactly in float64, so
    they cannot show the order): scanpy's indicator product adds a group's rows in row order,
    and so must ours, bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 6)) * 10.0 ** rng.integers(-6, 6, (400, 6))
    a = ad.AnnData(as_type(sp.csr_matrix(x), kind), obs=pd.DataFrame(
        {"g": pd.Categorical(rng.integers(0, 3, 400).astype(str))}, index=[str(i) for i in range(400)]))
    ref = sc.get.aggregate(a, "g", func=["sum", "mean", "var"])
    got = gsc.get.aggregate(a, "g", func=["sum", "mean", "var"])
    assert_same_adata(got, ref)


def test_unused_categories_dropped_and_no_index_warning_as_scanpy(cells):
    """A categorical `by` column with a category no cell holds: scanpy's result drops it from
    the groups and from the obs column's categories; an obsm aggregate names its columns by
    text without anndata's 'Transforming to str index' warning."""
    a = cells.copy()
    a.obs["cat"] = pd.Categorical(a.obs["grp"], categories=[*sorted(a.obs["grp"].unique()), "unused"])
    ref = sc.get.aggregate(a, ["cat", "half"], func="sum")
    got = gsc.get.aggregate(a, ["cat", "half"], func="sum")
    assert_same_adata(got, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ad.ImplicitModificationWarning)
        got = gsc.get.aggregate(a, "grp", func="sum", obsm="emb")
    assert list(got.var_names) == [str(i) for i in range(5)]


@pytest.mark.parametrize(("values", "groups"), [
    ([1 + 2.0**-21, 1 - 2.0**-21, 1.0, 1.0], "aaaa"),  # variance 2**-43 against a squared mean of 1
    ([1 + 3.873e-7, 1 - 3.873e-7, 2.0, 2.0], "aabb"),  # variance 1.5e-13, just above the cut
], ids=["one-group", "two-groups"])  # fmt: skip
def test_tiny_variance_kept_as_scanpy(values, groups):
    """scanpy zeroes a float64 variance below 2**-43 of the squared mean (round-off) and keeps
    one at or just above it: ours the same tiny nonzero value (from a mutation audit: a cut-off at
    2**-42, or one that zeroes at the bound, went unnoticed)."""
    obs = pd.DataFrame({"g": pd.Categorical(list(groups))}, index=list("0123"))
    a = ad.AnnData(np.array(values)[:, None], obs=obs)
    ref = sc.get.aggregate(a, "g", "var")
    got = gsc.get.aggregate(a, "g", "var")
    assert np.asarray(ref.layers["var"])[0, 0] > 0
    assert_same_adata(got, ref)


def test_count_nonzero_of_duplicate_entries_is_of_their_sum():
    """A CSR holding 2 as 1 + 1 counts one nonzero per cell, as scanpy on the canonical matrix
    (from a mutation audit: group sums without summing duplicates went unnoticed)."""
    dup = sp.csr_matrix((np.array([1, 1, 1, 1, 1, 1, 2], np.float32), np.zeros(7, np.int32),
                         np.array([0, 2, 4, 6, 7], np.int32)), shape=(4, 1))  # fmt: skip
    obs = pd.DataFrame({"g": pd.Categorical(["a", "a", "b", "b"])}, index=list("0123"))
    ref = sc.get.aggregate(ad.AnnData(sp.csr_matrix(dup.toarray()), obs=obs), "g", ["count_nonzero", "var"])
    got = gsc.get.aggregate(ad.AnnData(dup, obs=obs), "g", ["count_nonzero", "var"])
    np.testing.assert_array_equal(np.asarray(ref.layers["count_nonzero"]).ravel(), [2, 2])
    assert_same_adata(got, ref)


def test_axis_obs_as_a_word(cells):
    """axis="obs" is axis=0, as in scanpy (from a mutation audit: refusing the word went
    unnoticed)."""
    ref = sc.get.aggregate(cells, "grp", ["sum", "mean"], axis="obs")
    got = gsc.get.aggregate(cells, "grp", ["sum", "mean"], axis="obs")
    assert_same_adata(got, ref)
    assert_same_adata(got, gsc.get.aggregate(cells, "grp", ["sum", "mean"], axis=0))
