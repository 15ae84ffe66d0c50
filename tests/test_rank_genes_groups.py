"""gsc.tl.rank_genes_groups (t-test, t-test_overestim_var, wilcoxon, logreg) against scanpy's on real data: the
same uns layout, the same top genes in the same order, statistics within float rounding; the GPU
kernel and Dask blocks against the CPU; bad input refused."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, assert_close, cells_for

import gpu_sc as gsc

FIELDS = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj")
TOP = 100


def _lognorm(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    return a


@pytest.fixture
def logged(pbmc):
    a = _lognorm(pbmc.copy())
    a.obs["grp"] = a.obs["bulk_labels"].astype("category")
    return a


def assert_like_scanpy(got, ref, key="rank_genes_groups", top=TOP, p_rtol=None):
    """Same params and record layout; top genes identical in order; scores and fold changes
    (stored as float32) within a float32 step, p values and BH within a few float64 steps (scipy
    on float64 statistics summed in scanpy's order; measured equal, BH 3e-16 apart)."""
    g, r = got.uns[key], ref.uns[key]
    assert list(g) == list(r)  # scanpy's key order (a loop over the keys, h5ad's field order)
    assert g["params"] == r["params"]
    for k in FIELDS:
        assert g[k].dtype == r[k].dtype, k
        for f in r[k].dtype.names:
            if k == "names":
                np.testing.assert_array_equal(g[k][f][:top], r[k][f][:top], err_msg=f)
            elif p_rtol is not None and k.startswith("pvals"):
                np.testing.assert_allclose(g[k][f][:top], r[k][f][:top], rtol=p_rtol, atol=0, err_msg=f"{k} {f}")
            else:
                assert_close(g[k][f][:top], r[k][f][:top], dtype=np.float32 if k in ("scores", "logfoldchanges")
                             else np.float64, n_terms=4, scale=1e-300, err_msg=f"{k} {f}")  # fmt: skip
    for k in ("pts", "pts_rest"):
        assert (k in g) == (k in r)
        if k in r:
            pd.testing.assert_frame_equal(g[k], r[k])


CASES = [
    {},
    {"method": "t-test_overestim_var"},
    {"reference": "CD14+ Monocyte"},
    {"groups": ["CD14+ Monocyte", "Dendritic"], "pts": True},
    {"n_genes": 50, "rankby_abs": True, "corr_method": "bonferroni"},
    {"mask_var": "odd", "pts": True, "key_added": "markers"},
    {"method": "wilcoxon"},
    {"method": "wilcoxon", "tie_correct": True, "pts": True},
    {"method": "wilcoxon", "reference": "CD14+ Monocyte", "tie_correct": True},
    {"method": "wilcoxon", "groups": ["CD14+ Monocyte", "Dendritic"], "rankby_abs": True},
]


@pytest.mark.parametrize("kind", ["csr", "numpy", "csc"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c) or "default")
def test_equals_scanpy(logged, kind, case):
    a = logged.copy()
    a.X = as_type(sp.csr_matrix(a.X), kind)
    a.var["odd"] = np.arange(a.n_vars) % 2 == 1
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp", **case)
    gsc.tl.rank_genes_groups(got, "grp", **case)
    # CSC: scanpy's float64 moments are summed in another order, which its t tails amplify to
    # 1e-13..1e-11 in p (squared in float32, as for CSR, they were 1.5e-4 apart)
    assert_like_scanpy(got, ref, key=case.get("key_added", "rank_genes_groups"),
                       p_rtol=1e-9 if kind == "csc" else None)
    # scanpy's readers take our result
    df = sc.get.rank_genes_groups_df(got, group=None, key=case.get("key_added", "rank_genes_groups"))
    assert len(df) > 0 and {"names", "scores", "pvals_adj"} <= set(df.columns)


@pytest.mark.parametrize("method", ["t-test", "wilcoxon"])
def test_equals_scanpy_at_full_width_on_our_clusters(method):
    """The bundled 33,694-gene pbmc4k matrix, groups from its own annotation: top 100 per group
    (Wilcoxon's rank sums are exact, so its scores and p values are scanpy's bit for bit; the BH
    adjustment is ours, within an ulp of scanpy's)."""
    a = gsc.datasets.pbmc4k_half()
    a = _lognorm(a[:, np.asarray((a.X > 0).sum(0)).ravel() > 0].copy())
    a.obs["grp"] = a.obs["Annotation"].astype("category")
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp", pts=True, method=method)
    gsc.tl.rank_genes_groups(got, "grp", pts=True, method=method)
    assert_like_scanpy(got, ref)
    if method == "wilcoxon":
        for k in ("scores", "logfoldchanges", "pvals"):
            for f in ref.uns["rank_genes_groups"][k].dtype.names:
                np.testing.assert_array_equal(got.uns["rank_genes_groups"][k][f], ref.uns["rank_genes_groups"][k][f])


def test_rank_sums_equal_dense_ranks():
    """The sparse ranking against scipy's rankdata of the dense matrix: negative values, stored
    zeros, all-zero and constant columns, rows in no group; the tie terms from the tied blocks."""
    from scipy.stats import rankdata

    from gpu_sc._ops import parts
    from gpu_sc._ops.rank_sums import rank_sums

    rng = np.random.default_rng(0)
    d = rng.poisson(0.7, (300, 40)).astype(np.float32) * rng.choice([1, 1, 1, -1], (300, 40))
    d[:, 5], d[:, 6] = 0, 3
    x = sp.csr_matrix(d)
    x.data[:7] = 0  # stored zeros are zeros
    d = x.toarray()
    codes = rng.integers(-1, 5, 300)  # -1 and 4: ranked, in no group of the 4
    ranks = rankdata(d, axis=0)
    want = np.stack([ranks[codes == g].sum(axis=0) for g in range(4)])
    ties = [sum(float(c) ** 3 - c for c in np.unique(col, return_counts=True)[1]) for col in d.T]
    for m in (x, d):
        sums, tie = rank_sums(parts(m), codes, 4)
        np.testing.assert_array_equal(sums, want)
        np.testing.assert_array_equal(tie, ties)
    with pytest.raises(ValueError, match="NaN"):
        rank_sums(parts(np.array([[1.0, np.nan]])), np.zeros(1), 1)


def test_rank_sums_on_device_equal_cpu(device):
    """The CuPy ranking (sorts and bincounts) gives the CPU's numbers exactly, sparse and dense."""
    import cupy as cp

    from gpu_sc._ops import parts
    from gpu_sc._ops.rank_sums import rank_sums

    rng = np.random.default_rng(1)
    d = rng.poisson(0.9, (200, 30)) * rng.choice([1, 1, -1], (200, 30)) * 0.5
    d[:, 3] = 0
    codes = rng.integers(-1, 4, 200)
    want = rank_sums(parts(sp.csr_matrix(d)), codes, 3)
    for x in (as_type(sp.csr_matrix(d), "cupyx_csr"), cp.asarray(d)):
        got = rank_sums(parts(x), cp.asarray(codes), 3)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(cp.asnumpy(g), w)
    with pytest.raises(ValueError, match="NaN"):
        rank_sums(parts(cp.asarray(np.array([[1.0, np.nan]]))), cp.zeros(1), 1)


def test_log_base_and_raw(logged):
    a = logged.copy()
    a.raw = a
    a.X = a.X * 0  # the test must read raw
    a.uns["log1p"] = {"base": 2}
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp")
    gsc.tl.rank_genes_groups(got, "grp")
    assert got.uns["rank_genes_groups"]["params"]["use_raw"] is True
    assert_like_scanpy(got, ref)


def test_dask_blocks_equal_in_memory(logged):
    da = pytest.importorskip("dask.array")
    mem, lazy = logged.copy(), logged.copy()
    lazy.X = da.from_array(sp.csr_matrix(mem.X), chunks=(200, -1), asarray=False)
    with pytest.raises(ValueError, match="compute X into memory"):
        gsc.tl.rank_genes_groups(lazy, "grp", method="wilcoxon")
    assert "rank_genes_groups" not in lazy.uns
    gsc.tl.rank_genes_groups(mem, "grp", pts=True)
    gsc.tl.rank_genes_groups(lazy, "grp", pts=True)
    # block partial sums add in another order: the statistics move by float64 rounding only
    assert_like_scanpy(lazy, mem, top=20)


def test_gpu_kernel_equals_cpu(device, logged):
    a = cells_for(device, logged, 300)
    a = a[:, :200].copy()
    cpu, gpu = a.copy(), a.copy()
    gpu.X = as_type(sp.csr_matrix(a.X), "cupyx_csr")
    for method, reference in (("t-test", "rest"), ("wilcoxon", "rest"), ("wilcoxon", "Dendritic")):
        gsc.tl.rank_genes_groups(cpu, "grp", pts=True, method=method, reference=reference)
        gsc.tl.rank_genes_groups(gpu, "grp", pts=True, method=method, reference=reference)
        assert_like_scanpy(gpu, cpu, top=20)
    scaled = a.copy()  # float64 genes constant within a group: their values read from the device
    scaled.X = a.X.toarray().astype(np.float64)
    sc.pp.scale(scaled)
    on_device = scaled.copy()
    on_device.X = as_type(sp.csr_matrix(scaled.X), "cupy")
    for data in (scaled, on_device):
        gsc.tl.rank_genes_groups(data, "grp", n_genes=200)
    assert_like_scanpy(on_device, scaled, top=200, p_rtol=1e-9)
    counts = cpu.copy()  # integer values: cupyx's CSR, which the GPU ranking builds, takes floats only
    counts.X = np.rint(np.expm1(a.X.toarray())).astype(np.int64)
    on_gpu = counts.copy()
    on_gpu.X = as_type(sp.csr_matrix(counts.X), "cupy").astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.tl.rank_genes_groups(counts, "grp", method="wilcoxon")
        gsc.tl.rank_genes_groups(on_gpu, "grp", method="wilcoxon")
    assert_like_scanpy(on_gpu, counts, top=200)
    x = a.X.toarray()  # NaN (ranked last, as scanpy) in a dense and a sparse device matrix
    x[:3, :4] = np.nan
    cpu.X = sp.csr_matrix(x)
    for kind in ("cupyx_csr", "cupy"):
        gpu.X = as_type(cpu.X, kind)
        for reference in ("rest", "Dendritic"):  # (tie terms: sums in another order, 1e-15 apart on an H100)
            gsc.tl.rank_genes_groups(cpu, "grp", method="wilcoxon", reference=reference)
            gsc.tl.rank_genes_groups(gpu, "grp", method="wilcoxon", reference=reference)
            assert_like_scanpy(gpu, cpu, top=200)


@pytest.mark.parametrize("reference", ["rest", "Dendritic"])
def test_wilcoxon_z_on_the_host(device, logged, reference):
    """The device's rank sums come back to the host before scipy.stats takes them (CuPy refuses
    the implicit copy: a TypeError on an H200, 2026-12-04, that the emulator's device arrays,
    being NumPy's, let through)."""
    from gpu_sc.tools._rank_genes_groups import _wilcoxon_z

    a = cells_for(device, logged, 300)
    x = as_type(sp.csr_matrix(a.X[:, :50]), "cupyx_csr")
    order = list(a.obs["grp"].cat.categories)
    codes = a.obs["grp"].cat.codes.to_numpy().astype(np.int64)
    size = np.bincount(codes, minlength=len(order))
    z = _wilcoxon_z(x, codes, order, size, reference, tie_correct=True)
    assert z and all(type(v) is np.ndarray and v.shape == (50,) for v in z.values())


@pytest.mark.parametrize("kw", [dict(), dict(groups=["CD14+ Monocyte", "Dendritic"]),
                                dict(groups=["CD14+ Monocyte", "Dendritic", "CD19+ B"], reference="Dendritic",
                                     n_genes=20, rankby_abs=True),
                                dict(groups=["Dendritic", "CD19+ B", "CD14+ Monocyte"])],
                         ids=["all", "two", "reference", "groups_out_of_category_order"])
def test_logreg_equals_scanpy(logged, kw):
    """The same scikit-learn fit on the same cells and labels: scanpy's names and scores exactly."""
    a, ref = logged.copy(), logged.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence note, in both
        sc.tl.rank_genes_groups(ref, "grp", method="logreg", max_iter=100, **kw)
        gsc.tl.rank_genes_groups(a, "grp", method="logreg", max_iter=100, **kw)
    got, want = a.uns["rank_genes_groups"], ref.uns["rank_genes_groups"]
    assert sorted(got) == sorted(want) == ["names", "params", "scores"] and got["params"] == want["params"]
    for k in ("names", "scores"):
        assert got[k].dtype == want[k].dtype
        for g in want[k].dtype.names:
            assert np.array_equal(got[k][g], want[k][g])


def test_logreg_on_device_equals_cpu(device, logged):
    a = cells_for(device, logged, 300)
    gpu = gsc.get.to_gpu(a, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.tl.rank_genes_groups(a, "grp", method="logreg", max_iter=50)
        gsc.tl.rank_genes_groups(gpu, "grp", method="logreg", max_iter=50)
    got, want = gpu.uns["rank_genes_groups"], a.uns["rank_genes_groups"]
    import importlib.util

    cuml = device == "cuda" and importlib.util.find_spec("cuml") is not None
    for g in want["names"].dtype.names:
        if cuml:  # cuML's own solver: most of the same top genes
            assert len(set(got["names"][g][:10]) & set(want["names"][g][:10])) >= 7
        else:  # scikit-learn on a host copy: the same fit
            assert np.array_equal(got["names"][g], want["names"][g])
            assert np.array_equal(got["scores"][g], want["scores"][g])


def test_bad_input_is_refused(logged):
    a = logged.copy()
    before = a.obs.copy()
    with pytest.raises(ValueError, match="method 'bogus'"):
        gsc.tl.rank_genes_groups(a, "grp", method="bogus")
    b = logged.copy()
    b.obs["grp_str"] = b.obs["grp"].astype(str)
    with pytest.raises(TypeError, match="rank_genes_groups: method='logreg' passes"):
        gsc.tl.rank_genes_groups(b, "grp_str", method="logreg", bogus=1)
    assert b.obs["grp_str"].dtype == object  # refused before anything changed
    for kw in ({"reference": "typo"}, {"groups": ["typo"]}):  # refused before obs changes
        with pytest.raises(ValueError, match="typo"):
            gsc.tl.rank_genes_groups(b, "grp_str", **kw)
        assert b.obs["grp_str"].dtype == object
    for empty in (a[:0].copy(), a[np.zeros(a.n_obs, dtype=bool)]):
        with pytest.raises(ValueError, match=r"got an empty matrix \(0 cells x 765 genes\)"):
            gsc.tl.rank_genes_groups(empty, "grp")
        assert "rank_genes_groups" not in empty.uns
    with pytest.raises(ValueError, match="logreg' needs at least two groups"):
        gsc.tl.rank_genes_groups(a, "grp", method="logreg", groups=["Dendritic"])
    with pytest.raises(KeyError, match="groupby 'nope'"):
        gsc.tl.rank_genes_groups(a, "nope")
    with pytest.raises(ValueError, match="reference 'x'"):
        gsc.tl.rank_genes_groups(a, "grp", reference="x")
    with pytest.raises(ValueError, match=r"groups \['x'\]"):
        gsc.tl.rank_genes_groups(a, "grp", groups=["x"])
    with pytest.raises(ValueError, match="corr_method"):
        gsc.tl.rank_genes_groups(a, "grp", corr_method="holm")
    with pytest.raises(ValueError, match="mask_var selects none of the 765 genes"):  # not 'an empty matrix'
        gsc.tl.rank_genes_groups(a, "grp", mask_var=np.zeros(a.n_vars, dtype=bool))
    r = a[:, :300].copy()  # raw's 765 genes beside X's 300: a mask over X's genes cannot select raw's
    r.raw = a
    r.var["hv"] = True
    with pytest.raises(ValueError, match=r"mask_var \(over adata\.raw's genes.*length 765"):
        gsc.tl.rank_genes_groups(r, "grp", mask_var="hv")
    with pytest.raises(ValueError, match=r"mask_var \(over adata\.raw's genes.*length 765"):
        gsc.tl.rank_genes_groups(r, "grp", mask_var=np.ones(300, dtype=bool))
    with pytest.raises(KeyError, match=r"'nope' is not a column of adata\.var or adata\.raw\.var"):
        gsc.tl.rank_genes_groups(r, "grp", mask_var="nope")
    assert "rank_genes_groups" not in r.uns
    with pytest.raises(ValueError, match="use_raw=True but adata.raw is None"):
        gsc.tl.rank_genes_groups(a, "grp", use_raw=True)
    a.obs["one"] = pd.Categorical(["solo"] + ["many"] * (a.n_obs - 1))
    with pytest.raises(ValueError, match="fewer than 2 cells"):
        gsc.tl.rank_genes_groups(a, "one")
    del a.obs["one"]
    pd.testing.assert_frame_equal(a.obs, before)
    assert "rank_genes_groups" not in a.uns
    # keywords scanpy ignores outside logreg: ignored with a warning (scanpy: silently), and its
    # backward-compatible only_positive
    ref = gsc.tl.rank_genes_groups(a, "grp", method="wilcoxon", copy=True)
    with pytest.warns(UserWarning, match=r"\['n_jobs'\] ignored"):
        got = gsc.tl.rank_genes_groups(a, "grp", method="wilcoxon", n_jobs=4, copy=True)
    pd.testing.assert_frame_equal(pd.DataFrame(got.uns["rank_genes_groups"]["names"]),
                                  pd.DataFrame(ref.uns["rank_genes_groups"]["names"]))  # fmt: skip
    flipped = gsc.tl.rank_genes_groups(a, "grp", only_positive=False, copy=True)
    assert flipped.uns["rank_genes_groups"]["params"] == gsc.tl.rank_genes_groups(
        a, "grp", rankby_abs=True, copy=True).uns["rank_genes_groups"]["params"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gsc.tl.rank_genes_groups(a, "grp", copy=True).uns["rank_genes_groups"]
    assert "rank_genes_groups" not in a.uns


def test_string_labels_missing_labels_and_float16_as_scanpy(logged, capsys):
    """String labels become categories in natural order (scanpy's sanitize: '2' before '10');
    unlabelled cells are in no group, even beside a category named 'nan'; a float16 X is tested
    (in float32: scanpy squares float16 values in float16, scores up to 0.09 apart); raw counts
    get scanpy's warning."""
    a = logged.copy()
    rng = np.random.default_rng(0)
    a.obs["num"] = np.array([str(i) for i in rng.integers(0, 12, a.n_obs)], dtype=object)
    labels = a.obs["grp"].astype(str).to_numpy(dtype=object)
    labels[labels == "Dendritic"] = "nan"
    labels[rng.random(a.n_obs) < 0.15] = np.nan
    a.obs["with_nan"] = pd.Categorical(labels)
    half = a.copy()
    half.X = half.X.toarray().astype(np.float16)
    for data, key in ((a, "num"), (a, "with_nan")):
        ref, got = data.copy(), data.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.rank_genes_groups(ref, key, pts=True)
            gsc.tl.rank_genes_groups(got, key, pts=True)
        assert list(got.obs[key].cat.categories) == list(ref.obs[key].cat.categories)
        assert_like_scanpy(got, ref)
    single = half.copy()
    single.X = single.X.astype(np.float32)
    gsc.tl.rank_genes_groups(half, "grp")
    gsc.tl.rank_genes_groups(single, "grp")
    for k in FIELDS:
        assert np.array_equal(half.uns["rank_genes_groups"][k], single.uns["rank_genes_groups"][k])
    assert "raw count" not in capsys.readouterr().err
    counts = a.copy()
    counts.X = sp.csr_matrix(np.rint(np.expm1(counts.X.toarray())))
    gsc.tl.rank_genes_groups(counts, "grp")
    assert "It seems you use rank_genes_groups on the raw count data" in capsys.readouterr().err


def test_nothing_to_test_and_late_refusals_leave_adata_as_it_was(logged):
    """No group besides the reference, or logreg on one group: refused before anything changes
    (scanpy fails inside with an IndexError / AttributeError after writing uns and obs): the
    earlier ranking and the string columns stay."""
    a = logged.copy()
    gsc.tl.rank_genes_groups(a, "grp", n_genes=5)
    earlier = a.uns["rank_genes_groups"]
    a.obs["s"] = a.obs["grp"].astype(str)
    for kw, match in ((dict(groups=["Dendritic"], reference="Dendritic"), "no group to test besides the reference"),
                      (dict(groups=[]), "no group to test"),
                      (dict(groups=["CD34+"], method="logreg"), "logreg' needs at least two groups")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            gsc.tl.rank_genes_groups(a, "s", **kw)
        assert a.obs["s"].dtype == object and a.uns["rank_genes_groups"] is earlier


def test_numbers_and_arrays_name_groups(logged):
    """Integer categories: reference=1 as in scanpy; groups as an array or Index of categories
    (scanpy: 'truth value of an array is ambiguous') as the same list."""
    a = logged.copy()
    a.obs["c"] = a.obs["grp"].cat.codes.astype("category")
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(ref, "c", reference=1)
    gsc.tl.rank_genes_groups(got, "c", reference=1)
    assert_like_scanpy(got, ref)
    chosen = list(a.obs["grp"].cat.categories[:3])
    want = gsc.tl.rank_genes_groups(a, "grp", groups=chosen, copy=True).uns["rank_genes_groups"]
    for groups in (a.obs["grp"].cat.categories[:3], np.array(chosen)):
        got = gsc.tl.rank_genes_groups(a, "grp", groups=groups, copy=True).uns["rank_genes_groups"]
        assert got["names"].dtype.names == want["names"].dtype.names == tuple(chosen)
        np.testing.assert_array_equal(got["scores"], want["scores"])


@pytest.mark.parametrize("tie_correct", [False, True])
@pytest.mark.parametrize("reference", ["rest", "CD14+ Monocyte"])
def test_wilcoxon_with_nan_as_scanpy(logged, reference, tie_correct):
    """scanpy's ranking puts a gene's NaN values above all others, untied, and its +inf values
    below them, tied; ours too (it refused NaN). Here a gene's NaN cells lie in one group, where
    scanpy's sums do not depend on its sort (split across groups, scores differ by about 0.01)."""
    a = logged.copy()
    x = a.X.toarray()
    x[np.flatnonzero(a.obs["grp"] == "Dendritic")[:2], :5] = np.nan  # 5 genes, 2 cells of a tested group
    x[np.flatnonzero(a.obs["grp"] == "CD14+ Monocyte")[:3], 5] = np.nan  # one gene, 3 reference cells
    x[np.flatnonzero(a.obs["grp"] == "CD19+ B")[:2], 4:6] = np.inf  # +inf beside NaN in two of them
    a.X = sp.csr_matrix(x)
    for data in (a, _dense(a)):
        ref, got = data.copy(), data.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.rank_genes_groups(ref, "grp", method="wilcoxon", reference=reference, tie_correct=tie_correct)
        gsc.tl.rank_genes_groups(got, "grp", method="wilcoxon", reference=reference, tie_correct=tie_correct)
        assert_like_scanpy(got, ref, top=a.n_vars)


def _dense(a):
    a = a.copy()
    a.X = a.X.toarray()
    return a


def test_text_columns_made_categorical_as_scanpy_does(logged):
    """scanpy sanitizes obs and var on every call, the groupby already categorical or not."""
    a = logged.copy()
    a.obs["note"], a.var["kind"] = "x", "gene"
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(ref, "grp")
    out = gsc.tl.rank_genes_groups(a, "grp", copy=True)
    gsc.tl.rank_genes_groups(got, "grp")
    for data in (got, out):
        assert data.obs["note"].dtype == ref.obs["note"].dtype == "category"
        assert data.var["kind"].dtype == ref.var["kind"].dtype == "category"
    assert a.obs["note"].dtype == object  # copy=True leaves the input


@pytest.mark.parametrize("case", [{}, {"method": "t-test_overestim_var", "reference": "Dendritic"},
                                  {"groups": ["CD34+", "Dendritic"]}], ids=["rest", "reference", "groups"])
@pytest.mark.parametrize("kind", ["float32", "float64", "csc32", "one_gene"])
def test_t_test_of_genes_constant_within_or_outside_a_group_is_scanpys(logged, kind, case):
    """On scaled data a gene absent from a group (or from the rest) is a constant c other than 0
    there. scanpy's variance of those cells, E[x^2] - E[x]^2, is then a rounding error whose sign
    decides the gene's score: NaN, stored as 0 with p = 1, or the Welch t. It is not chance: float32
    squares round c^2 to float32 (CSC's are float64), and float64 ones are summed one cell after
    the other (pairwise down a single gene). Ours gave every such gene the Welch t, so 56 of 168
    scaled group tables of a sweep had other scores and order than scanpy's (IGLL1 outside CD34+,
    EGFL7 for CD34+)."""
    a = logged.copy()
    if kind == "csc32":  # scaled without centring stays sparse
        a.X = a.X.astype(np.float32)
        sc.pp.scale(a, zero_center=False)
        a.X = sp.csc_matrix(a.X)
    else:
        a.X = a.X.toarray().astype(np.float32 if kind == "float32" else np.float64)
        sc.pp.scale(a)
        if kind == "one_gene":
            a = a[:, ["IGLL1"]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.tl.rank_genes_groups(a, "grp", n_genes=a.n_vars, copy=True, **case)
    got = gsc.tl.rank_genes_groups(a, "grp", n_genes=a.n_vars, copy=True, **case)
    assert_like_scanpy(got, ref, top=a.n_vars, p_rtol=1e-9)  # (round-off of the other genes' sums)
    scores = np.concatenate([ref.uns["rank_genes_groups"]["scores"][g] for g in got.uns["rank_genes_groups"]
                             ["scores"].dtype.names])  # fmt: skip
    if kind in ("float32", "float64"):  # the case is there: scanpy scores some genes 0 (a NaN t)
        assert (scores == 0).sum() > 0


def test_a_marker_of_one_group_among_many_cells_is_scored_as_scanpys():
    """Genes expressed in one group only, scaled (float64): outside it every cell holds one value.
    The rest's variance came from totals minus the group's, whose round-off at 100,000 cells hid
    that (4 of 40 such genes got the Welch t where scanpy's is 0, an audit); each side of one value
    is now found from its own groups, within the round-off of their sums."""
    n, genes = 60_000, 12
    rng = np.random.default_rng(1)
    labels = np.array(["B", "C"], dtype=object)[rng.integers(0, 2, n)]
    labels[:200] = "A"
    x = np.zeros((n, genes))
    for j in range(genes):
        k = int(rng.integers(5, 200))
        x[:k, j] = rng.random(k) * 3 + 0.5
    x = (x - x.mean(0)) / x.std(0, ddof=1)
    a = ad.AnnData(x, obs=pd.DataFrame({"g": pd.Categorical(labels)}, index=np.arange(n).astype(str)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.tl.rank_genes_groups(a, "g", n_genes=genes, copy=True)
    got = gsc.tl.rank_genes_groups(a, "g", n_genes=genes, copy=True)
    assert_like_scanpy(got, ref, top=genes, p_rtol=1e-9)


@pytest.mark.parametrize("kind", ["int", "bool", "float"])
def test_numeric_groupby_is_refused_as_scanpy_does(logged, kind):
    """scanpy fails on a groupby of numbers ('Can only use .cat accessor'); ours said nothing and
    turned the column into number categories, which scanpy's dotplot and heatmap cannot draw."""
    a = logged.copy()
    codes = a.obs["grp"].cat.codes.to_numpy()
    a.obs["n"] = {"int": codes, "bool": codes == 0, "float": codes.astype(float)}[kind]
    before = a.obs["n"].copy()
    with pytest.raises(TypeError, match=r"groupby 'n' holds .* values, not categories.*astype\(str\)"):
        gsc.tl.rank_genes_groups(a, "n")
    pd.testing.assert_series_equal(a.obs["n"], before)
    assert "rank_genes_groups" not in a.uns


def test_a_layer_with_raw_set_says_to_pass_use_raw_false(logged):
    """scanpy refuses a layer where raw is set and use_raw is left to its default (True there);
    ours said 'got layer, use_raw', naming a use_raw the user never passed."""
    a = logged.copy()
    a.raw = a
    a.layers["c"] = a.X.copy()
    with pytest.raises(ValueError, match=r"layer='c' with adata.raw set.*pass use_raw=False"):
        gsc.tl.rank_genes_groups(a, "grp", layer="c")
    assert "rank_genes_groups" not in a.uns
    gsc.tl.rank_genes_groups(a, "grp", layer="c", use_raw=False)
    assert a.uns["rank_genes_groups"]["params"]["use_raw"] is False


def test_bonferroni_over_every_gene_like_scanpy(logged):
    """corr_method='bonferroni' is min(p * n_genes, 1), as scanpy's, over the whole ranking: the
    top genes' adjusted p values lie far below 1, so only the genes further down reach the clip."""
    ref, got = logged.copy(), logged.copy()
    sc.tl.rank_genes_groups(ref, "grp", corr_method="bonferroni")
    gsc.tl.rank_genes_groups(got, "grp", corr_method="bonferroni")
    clipped = 0
    for group in ref.obs["grp"].cat.categories:
        r = sc.get.rank_genes_groups_df(ref, group=group).set_index("names")
        g = sc.get.rank_genes_groups_df(got, group=group).set_index("names").loc[r.index]
        clipped += int((r["pvals_adj"] == 1).sum())
        assert_close(g["pvals_adj"].to_numpy(), r["pvals_adj"].to_numpy(), dtype=np.float64, n_terms=4, scale=1e-300,
                     err_msg=str(group))  # fmt: skip
    assert clipped > 0  # the data reach the clip


def test_pts_against_a_reference_writes_no_pts_rest_as_scanpy(logged):
    """With a named reference, scanpy stores `pts` (every group, reference included) but no
    `pts_rest`; the long table then has no pct_nz_reference column."""
    a = logged[:, :60].copy()
    ref, got = a.copy(), a.copy()
    kw = {"reference": "CD14+ Monocyte", "pts": True, "n_genes": 10}
    sc.tl.rank_genes_groups(ref, "grp", **kw)
    gsc.tl.rank_genes_groups(got, "grp", **kw)
    assert ("pts_rest" in got.uns["rank_genes_groups"]) == ("pts_rest" in ref.uns["rank_genes_groups"])
    assert_like_scanpy(got, ref, top=10)


def test_rank_genes_groups_df_fold_change_bounds_are_strict_as_scanpy(logged):
    """log2fc_min / log2fc_max / pval_cutoff equal to a stored value: scanpy keeps only values
    strictly beyond the bound, so that row leaves the table."""
    a = logged[:, :80].copy()
    gsc.tl.rank_genes_groups(a, "grp", groups=["CD14+ Monocyte"], n_genes=20)
    r = a.uns["rank_genes_groups"]
    lfc = float(r["logfoldchanges"]["CD14+ Monocyte"][5])
    pv = float(r["pvals_adj"]["CD14+ Monocyte"][5])
    for kw in ({"log2fc_min": lfc}, {"log2fc_max": lfc}, {"pval_cutoff": pv}):
        got = gsc.get.rank_genes_groups_df(a, "CD14+ Monocyte", **kw)
        want = sc.get.rank_genes_groups_df(a, "CD14+ Monocyte", **kw)
        pd.testing.assert_frame_equal(got, want)
        assert r["names"]["CD14+ Monocyte"][5] not in set(got["names"])


def test_mask_var_column_of_x_applies_to_raw_as_scanpy(logged):
    """raw saved before HVG (X not subset): scanpy reads a mask_var column from adata.var and
    ranks raw's genes under it; so do we (a column of raw.var alone is taken too)."""
    a = logged.copy()
    a.raw = a
    a.var["hv"] = np.arange(a.n_vars) % 3 == 0
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp", mask_var="hv")
    gsc.tl.rank_genes_groups(got, "grp", mask_var="hv")
    assert got.uns["rank_genes_groups"]["params"]["use_raw"] is True
    assert_like_scanpy(got, ref)
    only_raw = a.copy()
    only_raw.raw.var["hv2"] = a.var["hv"].to_numpy()
    del only_raw.var["hv"]
    gsc.tl.rank_genes_groups(only_raw, "grp", mask_var="hv2")
    np.testing.assert_array_equal(only_raw.uns["rank_genes_groups"]["names"], ref.uns["rank_genes_groups"]["names"])
