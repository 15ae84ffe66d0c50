"""gsc.tl.filter_rank_genes_groups and gsc.get.rank_genes_groups_df against scanpy's on real
data (the same names kept, the same table, dtypes included); the filter's pass over X on Dask
blocks (one read) and on the device against the CPU; bad input refused with the data untouched."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, cells_for, counted_dask

import gpu_sc as gsc


@pytest.fixture(scope="module")
def logged():
    a = sc.datasets.pbmc68k_reduced()  # .raw: 765 log-normalised genes, which X's 700 cells keep
    a = sc.AnnData(a.raw.X.copy(), obs=a.obs.copy(), var=a.raw.var.copy())
    a.obs["grp"] = a.obs["bulk_labels"].astype("category")
    a.var["symbol"] = "sym-" + a.var_names
    return a


def _ranked(adata, **kw):
    a = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(a, "grp", **kw)
    return a


def _names(a, key="rank_genes_groups_filtered") -> pd.DataFrame:
    return pd.DataFrame(a.uns[key]["names"])


RANKINGS = [{}, {"pts": True}, {"method": "wilcoxon"}, {"reference": "CD14+ Monocyte"},
            {"groups": ["CD14+ Monocyte", "Dendritic"], "n_genes": 50}, {"method": "logreg", "max_iter": 50}]  # fmt: skip
FILTERS = [{}, {"min_fold_change": 0.5, "compare_abs": True},
           {"min_in_group_fraction": 0.1, "max_out_group_fraction": 0.9, "key_added": "loose"}]  # fmt: skip


@pytest.mark.parametrize("kind", ["csr", "numpy"])
@pytest.mark.parametrize("ranking", RANKINGS, ids=lambda c: "-".join(c) or "default")
@pytest.mark.parametrize("filt", FILTERS, ids=lambda c: "-".join(c) or "default")
def test_filter_equals_scanpy(logged, kind, ranking, filt):
    """Shares and fold changes from X (no pts, or a reference other than 'rest') or from the
    ranking: the same genes kept, the same record layout and uns keys."""
    a = _ranked(logged, **ranking)
    a.X = as_type(sp.csr_matrix(a.X), kind)
    ref, got = a.copy(), a.copy()
    sc.tl.filter_rank_genes_groups(ref, **filt)
    assert gsc.tl.filter_rank_genes_groups(got, **filt) is None
    key = filt.get("key_added", "rank_genes_groups_filtered")
    assert list(got.uns[key]) == list(ref.uns[key])
    assert got.uns[key]["names"].dtype == ref.uns[key]["names"].dtype
    pd.testing.assert_frame_equal(_names(got, key), _names(ref, key))
    kept = _names(got, key).notna().to_numpy().mean()
    assert 0.05 < kept < 1  # the thresholds bite both ways: not a pass-through, not empty
    pd.testing.assert_frame_equal(_names(got, "rank_genes_groups"), _names(a, "rank_genes_groups"))  # untouched


def test_filter_computes_where_the_ranking_does_not_describe_the_cells(logged):
    """Another groupby than the ranking's (its fold changes are not used), a log base, and raw:
    scanpy's answer, each read from the matrix it names."""
    a = _ranked(logged)
    a.obs["grp2"] = a.obs["grp"].astype(str).astype("category")
    a.uns["log1p"] = {"base": 2}
    a.raw = a.copy()
    a.X = a.X * 0  # the raw path must not read X
    for kw in ({"groupby": "grp2", "use_raw": True}, {"use_raw": True, "min_fold_change": 2}):
        ref, got = a.copy(), a.copy()
        sc.tl.filter_rank_genes_groups(ref, **kw)
        gsc.tl.filter_rank_genes_groups(got, **kw)
        pd.testing.assert_frame_equal(_names(got), _names(ref))
        assert _names(got).notna().any().any()


@pytest.mark.parametrize("pts", [False, True])
def test_a_filtered_ranking_filtered_again(logged, pts):
    """Names already filtered out (NaN) stay out (scanpy's filter raises on them): the same
    thresholds keep the same genes, stricter ones a subset."""
    a = _ranked(logged, pts=pts)
    gsc.tl.filter_rank_genes_groups(a)
    gsc.tl.filter_rank_genes_groups(a, key="rank_genes_groups_filtered", key_added="again")
    gsc.tl.filter_rank_genes_groups(a, key="rank_genes_groups_filtered", key_added="stricter", min_fold_change=2)
    once, again, stricter = (_names(a, k) for k in ("rank_genes_groups_filtered", "again", "stricter"))
    pd.testing.assert_frame_equal(again, once)
    assert 0 < stricter.notna().sum().sum() < once.notna().sum().sum()
    assert not (stricter.notna() & once.isna()).any().any()


def test_filter_reads_a_dask_matrix_once(logged):
    pytest.importorskip("dask.array")
    mem = _ranked(logged)
    lazy = mem.copy()
    lazy.X, made = counted_dask(sp.csr_matrix(mem.X), rows=150)
    gsc.tl.filter_rank_genes_groups(mem)
    gsc.tl.filter_rank_genes_groups(lazy)
    assert sorted(made) == list(range(5))  # every block made once
    pd.testing.assert_frame_equal(_names(lazy), _names(mem))


def test_filter_on_the_device_equals_cpu(device, logged):
    a = _ranked(cells_for(device, logged, 300))
    cpu, gpu = a.copy(), a.copy()
    gpu.X = as_type(sp.csr_matrix(a.X), "cupyx_csr")
    gsc.tl.filter_rank_genes_groups(cpu)
    gsc.tl.filter_rank_genes_groups(gpu)
    pd.testing.assert_frame_equal(_names(gpu), _names(cpu))
    assert _names(cpu).notna().any().any()


def test_filter_bad_input_leaves_the_data_untouched(logged):
    a = logged.copy()
    with pytest.raises(KeyError, match=r"uns\['rank_genes_groups'\] holds no ranking.*run tl.rank_genes_groups"):
        gsc.tl.filter_rank_genes_groups(a)
    a = _ranked(logged)
    before = {k: a.uns["rank_genes_groups"][k] for k in a.uns["rank_genes_groups"]}
    with pytest.raises(TypeError, match="min_fold_change must be a number, got '1'"):
        gsc.tl.filter_rank_genes_groups(a, min_fold_change="1")
    with pytest.raises(KeyError, match="groupby 'nope' is not a column"):
        gsc.tl.filter_rank_genes_groups(a, groupby="nope")
    with pytest.raises(ValueError, match="use_raw=True but adata has no .raw"):
        gsc.tl.filter_rank_genes_groups(a, use_raw=True)
    b = a[:, 10:].copy()  # ranked genes that are gone
    with pytest.raises(KeyError, match="are not in adata.var_names"):
        gsc.tl.filter_rank_genes_groups(b, groupby="grp", use_raw=False, key="rank_genes_groups")
    a.obs["other"] = a.obs["louvain"]  # a groupby whose values are not the ranked groups (scanpy: ZeroDivisionError)
    with pytest.raises(ValueError, match=r"the ranked groups \[.* are not values of obs\['other'\]"):
        gsc.tl.filter_rank_genes_groups(a, groupby="other")
    assert "rank_genes_groups_filtered" not in a.uns and "rank_genes_groups_filtered" not in b.uns
    assert all(a.uns["rank_genes_groups"][k] is v for k, v in before.items())


def test_filter_takes_scanpy_old_positionals(logged):
    a = _ranked(logged)
    want = _ranked(logged)
    gsc.tl.filter_rank_genes_groups(want, key="rank_genes_groups", groupby="grp", min_fold_change=0.5)
    with pytest.warns(FutureWarning, match="no longer positional"):
        gsc.tl.filter_rank_genes_groups(a, "rank_genes_groups", "grp", None, "rank_genes_groups_filtered", 0.25, 0.5)
    pd.testing.assert_frame_equal(_names(a), _names(want))


@pytest.mark.parametrize("ranking", [{}, {"pts": True}, {"method": "logreg", "max_iter": 50},
                                     {"reference": "CD14+ Monocyte", "pts": True}],
                         ids=["default", "pts", "logreg", "reference"])  # fmt: skip
@pytest.mark.parametrize("key", ["rank_genes_groups", "rank_genes_groups_filtered"])
def test_rank_genes_groups_df_equals_scanpy(logged, ranking, key):
    """Every group / one / a list, each filter and gene symbols: scanpy's DataFrame, dtypes and
    row order included (filtered names are NaN; with pts they leave the table, as in scanpy)."""
    a = _ranked(logged, **ranking)
    if key.endswith("filtered"):  # logreg stores no fold changes: the filter computes them
        gsc.tl.filter_rank_genes_groups(a)
    n = 0
    for group in (None, "Dendritic", ["Dendritic", "CD19+ B"]):
        for kw in ({}, {"pval_cutoff": 0.01}, {"log2fc_min": 1, "gene_symbols": "symbol"}, {"log2fc_max": 0}):
            want = sc.get.rank_genes_groups_df(a, group, key=key, **kw)
            got = gsc.get.rank_genes_groups_df(a, group, key=key, **kw)
            pd.testing.assert_frame_equal(got, want)
            n += len(got)
    assert n > 1000
    with pytest.raises(KeyError, match=r"groups \['nope'\] were not ranked"):
        gsc.get.rank_genes_groups_df(a, "nope", key=key)
    with pytest.raises(KeyError, match="gene_symbols 'nope'"):
        gsc.get.rank_genes_groups_df(a, None, key=key, gene_symbols="nope")
    with pytest.raises(KeyError, match="holds no ranking"):
        gsc.get.rank_genes_groups_df(a, None, key="absent")


def test_rank_genes_groups_df_names_integer_categories_by_number(logged):
    """Integer categories are ranked under their text ('1'): group=1 (scanpy: KeyError 1) and
    [1, 2] give the tables of '1' and of '1', '2'."""
    a = logged.copy()
    a.obs["c"] = a.obs["grp"].cat.codes.astype("category")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(a, "c")
    for group, text in ((1, "1"), (np.int64(1), "1"), ([1, 2], ["1", "2"])):
        pd.testing.assert_frame_equal(gsc.get.rank_genes_groups_df(a, group), sc.get.rank_genes_groups_df(a, text))


def test_rank_genes_groups_df_of_our_ranking_on_full_width_clusters():
    """gsc's own ranking of the bundled 33,694-gene pbmc4k matrix: the table scanpy's reader
    makes of it, and the filter's kept genes as scanpy's filter keeps them."""
    a = gsc.datasets.pbmc4k_half()
    a = a[:, np.asarray((a.X > 0).sum(0)).ravel() > 0].copy()
    gsc.pp.normalize_total(a)
    gsc.pp.log1p(a)
    a.obs["grp"] = a.obs["Annotation"].astype("category")
    gsc.tl.rank_genes_groups(a, "grp", n_genes=200)
    ref = a.copy()
    sc.tl.filter_rank_genes_groups(ref)
    gsc.tl.filter_rank_genes_groups(a)
    pd.testing.assert_frame_equal(_names(a), _names(ref))
    for key in ("rank_genes_groups", "rank_genes_groups_filtered"):
        pd.testing.assert_frame_equal(gsc.get.rank_genes_groups_df(a, None, key=key),
                                      sc.get.rank_genes_groups_df(a, None, key=key))  # fmt: skip


DENDRO_CASES = [dict(groupby="bulk_labels"), dict(groupby="bulk_labels", n_pcs=10),
                dict(groupby="bulk_labels", use_rep="X_umap"),  # 2-D profiles: correlations of +-1, ties
                dict(groupby=["bulk_labels", "half"]), dict(groupby=["bulk_labels", "half"], var_names=["CD8B"]),
                dict(groupby="louvain", var_names=["CD8B"], use_raw=False), dict(groupby="louvain", var_names=["CD8B"]),
                dict(groupby="bulk_labels", cor_method="spearman", linkage_method="average", optimal_ordering=True),
                dict(groupby="bulk_labels", cor_method="kendall")]  # fmt: skip


@pytest.fixture(scope="module")
def reduced():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sc.datasets.pbmc68k_reduced()  # X_pca, X_umap, raw
    a.obs["half"] = pd.Categorical(np.where(np.arange(a.n_obs) % 2, "x", "y"))
    return a


def assert_dendrogram_equal(got: dict, want: dict, tol: float = 0.0) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        if k in ("linkage", "correlation_matrix"):
            np.testing.assert_allclose(got[k], v, rtol=0, atol=tol, err_msg=k)
        elif k == "dendrogram_info":
            assert list(got[k]) == list(v)
            for kk in v:
                np.testing.assert_allclose(got[k][kk], v[kk], atol=tol) if kk in ("icoord", "dcoord") \
                    else (got[k][kk] == v[kk]) or pytest.fail(kk)  # fmt: skip
        else:
            assert got[k] == v, k


@pytest.mark.parametrize("case", DENDRO_CASES, ids=lambda c: "-".join(f"{k}" for k in c if k != "groupby") or "pca")
def test_dendrogram_equals_scanpy(reduced, case):
    """The representation's means as pandas takes them (the same linkage, ties and all); every
    gene's means from the sparse matrix's group sums (within float rounding)."""
    want = sc.tl.dendrogram(reduced.copy(), inplace=False, **case)
    got = gsc.tl.dendrogram(reduced.copy(), inplace=False, **case)
    assert_dendrogram_equal(got, want, tol=0.0 if "var_names" not in case else 1e-6)  # scanpy: float32 means


def test_dendrogram_stored_where_scanpy_plots_read_it(reduced):
    a = reduced.copy()
    assert gsc.tl.dendrogram(a, "bulk_labels") is None
    assert "dendrogram_bulk_labels" in a.uns
    gsc.tl.dendrogram(a, ["bulk_labels", "half"], key_added="both")
    assert a.uns["both"]["groupby"] == ["bulk_labels", "half"]
    ref = reduced.copy()
    sc.tl.dendrogram(ref, "bulk_labels")
    assert_dendrogram_equal(a.uns["dendrogram_bulk_labels"], ref.uns["dendrogram_bulk_labels"])


def test_dendrogram_of_genes_on_dask_and_device(device, reduced):
    a = cells_for(device, reduced, 300)
    a.X = sp.csr_matrix(a.X)
    want = gsc.tl.dendrogram(a, "bulk_labels", var_names=["x"], use_raw=False, inplace=False)
    gpu = a.copy()
    gpu.X = as_type(a.X, "cupyx_csr")
    import cupy as cp

    gpu.obsm["X_pca"] = cp.asarray(a.obsm["X_pca"])
    assert_dendrogram_equal(gsc.tl.dendrogram(gpu, "bulk_labels", var_names=["x"], use_raw=False, inplace=False),
                            want, tol=1e-9)  # fmt: skip
    assert_dendrogram_equal(gsc.tl.dendrogram(gpu, "bulk_labels", inplace=False),
                            gsc.tl.dendrogram(a, "bulk_labels", inplace=False))  # fmt: skip
    if device == "emulated":
        pytest.importorskip("dask.array")
        lazy = a.copy()
        lazy.X, made = counted_dask(a.X, rows=100)
        assert_dendrogram_equal(gsc.tl.dendrogram(lazy, "bulk_labels", var_names=["x"], use_raw=False,
                                                  inplace=False), want, tol=1e-9)  # fmt: skip
        assert sorted(made) == list(range(3))  # one pass


def test_dendrogram_of_a_dask_x_sums_its_blocks_skipping_nan(reduced):
    """use_rep='X' on a dense Dask X (what scale makes) computed the whole matrix into memory
    (on the host, from GPU blocks), and with CSR blocks under a dense meta (map_blocks without
    meta=) failed "Must pass 2-d input. shape=()" (both from audits). Now one pass of per-group
    sums, which skip NaN as pandas' means do (a Dask matrix's NaN were summed): the in-memory
    result, NaN included."""
    da = pytest.importorskip("dask.array")
    a = reduced.copy()
    x = sp.csr_matrix(a.X)
    x.data[[5, 900, 4000]] = np.nan
    a.X = x.toarray()
    want = gsc.tl.dendrogram(a, "bulk_labels", use_rep="X", inplace=False)
    dense, sparse, mislabelled = a.copy(), a.copy(), a.copy()
    lazy, made = counted_dask(x, rows=100)
    dense.X = lazy.map_blocks(lambda b: b.toarray(), dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
    sparse.X = da.from_array(x, chunks=(100, -1), asarray=False)
    mislabelled.X = da.from_array(x, chunks=(100, -1), asarray=False, meta=np.empty((0, 0), x.dtype))
    csc = a.copy()  # CSC blocks: their NaN marks were placed with rows and columns swapped (an audit)
    csc.X = da.from_array(x, chunks=(100, -1), asarray=False).map_blocks(lambda b: b.tocsc(), dtype=x.dtype)
    for b in (dense, sparse, mislabelled, csc):  # pandas float32 means against float64 sums
        assert_dendrogram_equal(gsc.tl.dendrogram(b, "bulk_labels", use_rep="X", inplace=False), want, tol=1e-6)
    assert sorted(made) == list(range(7))  # one pass


def test_dendrogram_bad_input(reduced):
    a = reduced.copy()
    with pytest.raises(ValueError, match="groupby has to be a valid observation. Given value: nope"):
        gsc.tl.dendrogram(a, "nope")
    with pytest.raises(ValueError, match="groupby has to be a categorical observation. Given value: n_genes"):
        gsc.tl.dendrogram(a, "n_genes")
    a.obs["bulk_labels"] = a.obs["bulk_labels"].cat.add_categories(["none here"])
    with pytest.raises(KeyError, match=r"categories \['none here'\] .* hold no cells"):
        gsc.tl.dendrogram(a, "bulk_labels")
    a.obs["bulk_labels"] = a.obs["bulk_labels"].cat.remove_unused_categories()
    # a correlation over one value (scipy's 'Distance matrix X must be symmetric' before)
    with pytest.raises(ValueError, match=r"profiles have 1 value\(s\) each .* needs two: pass more n_pcs"):
        gsc.tl.dendrogram(a, "bulk_labels", n_pcs=1)
    a.obsm["flat"] = np.ones((a.n_obs, 3)) + (a.obs["bulk_labels"] == "Dendritic").to_numpy()[:, None]
    with pytest.raises(ValueError, match=r"mean profiles of \[.*\] are constant over the 3 values"):
        gsc.tl.dendrogram(a, "bulk_labels", use_rep="flat")
    assert not any(k.startswith("dendrogram") for k in a.uns)


def test_dendrogram_of_x_genes_with_raw_values_and_its_own_pca(reduced):
    """A raw wider than X (after an HVG subset): scanpy's gene table takes X's genes with raw's
    values; no X_pca: scanpy's PCA of n_pcs components is made and kept; a sparse use_rep='X'
    (scanpy's raises) from the group sums."""
    a = reduced.copy()
    raw = a.raw.to_adata()
    a = a[:, :300].copy()
    a.raw = raw
    for kw in ({}, {"use_raw": True}, {"use_raw": False}):
        want = sc.tl.dendrogram(a.copy(), "bulk_labels", var_names=["x"], inplace=False, **kw)
        assert_dendrogram_equal(gsc.tl.dendrogram(a.copy(), "bulk_labels", var_names=["x"], inplace=False, **kw),
                                want, tol=1e-6)  # fmt: skip
    b = reduced.copy()
    del b.obsm["X_pca"]
    ref, got = b.copy(), b.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.dendrogram(ref, "bulk_labels", n_pcs=10)
        gsc.tl.dendrogram(got, "bulk_labels", n_pcs=10)
    assert got.obsm["X_pca"].shape == ref.obsm["X_pca"].shape == (b.n_obs, 10)
    assert got.uns["dendrogram_bulk_labels"]["categories_ordered"] == ref.uns["dendrogram_bulk_labels"][
        "categories_ordered"]  # fmt: skip
    c = reduced.copy()
    c.X = sp.csr_matrix(c.X)
    dense = reduced.copy()
    assert_dendrogram_equal(gsc.tl.dendrogram(c, "bulk_labels", use_rep="X", inplace=False),
                            gsc.tl.dendrogram(dense, "bulk_labels", use_rep="X", inplace=False), tol=1e-7)  # fmt: skip


def test_dendrogram_refuses_before_writing(reduced):
    """No X_pca and an empty category: refused before scanpy's PCA is made (or obs sanitized)."""
    a = reduced.copy()
    del a.obsm["X_pca"], a.uns["pca"], a.varm["PCs"]
    a.obs["s"] = np.where(np.arange(a.n_obs) % 2, "u", "v").astype(object)
    a.obs["bulk_labels"] = a.obs["bulk_labels"].cat.add_categories(["none here"])
    for kw in ({}, {"var_names": ["x"]}):
        with pytest.raises(KeyError, match="hold no cells"):
            gsc.tl.dendrogram(a, "bulk_labels", **kw)
    a.obs["bulk_labels"] = a.obs["bulk_labels"].cat.remove_unused_categories()
    for kw in ({"cor_method": "bogus"}, {"linkage_method": "bogus", "var_names": ["x"]}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be one of"):
            gsc.tl.dendrogram(a, "bulk_labels", **kw)
    assert "X_pca" not in a.obsm and "pca" not in a.uns and "PCs" not in a.varm and a.obs["s"].dtype == object


def test_dendrogram_one_category_bool_categories_and_nan_genes(reduced):
    """One category: refused before scanpy's PCA is made (scipy's 'empty distance matrix' there);
    bool categories by label (a mask to .loc: scanpy fails too); NaN values skipped in the gene
    means as pandas' mean (scanpy's) skips them."""
    a = reduced.copy()
    del a.obsm["X_pca"], a.uns["pca"], a.varm["PCs"]
    a.obs["one"] = pd.Categorical(["A"] * a.n_obs)
    with pytest.raises(ValueError, match=r"'one' has 1 category \(\['A'\]\); a dendrogram joins two or more"):
        gsc.tl.dendrogram(a, "one")
    assert "X_pca" not in a.obsm
    b = reduced.copy()
    b.obs["flag"] = (b.obs["bulk_labels"] == "Dendritic").astype("category")
    got = gsc.tl.dendrogram(b, "flag", inplace=False)
    assert got["categories_ordered"] in ([False, True], [True, False]) and got["correlation_matrix"].shape == (2, 2)
    c = reduced.copy()
    x = c.X.copy()
    x[np.flatnonzero(c.obs["bulk_labels"] == "Dendritic")[:3], :5] = np.nan
    c.X = sp.csr_matrix(x)
    for data in (c, c.copy()):
        data.X = data.X if data is c else data.X.toarray()
        kw = dict(var_names=list(c.var_names[:40]), use_raw=False, inplace=False)  # X's values, not raw's
        want = sc.tl.dendrogram(data.copy(), "bulk_labels", **kw)
        got = gsc.tl.dendrogram(data.copy(), "bulk_labels", **kw)
        assert_dendrogram_equal(got, want, tol=1e-6)


def test_rank_genes_groups_df_with_repeated_gene_names_and_pts(logged):
    """pts over repeated var_names cannot be matched to names: said (a pandas InvalidIndexError;
    scanpy's merge gives a row per pairing of the duplicates); without pts the tables are scanpy's."""
    a = logged.copy()
    names = list(a.var_names)
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.var_names = names
        sc.tl.rank_genes_groups(a, "grp", pts=True)
    with pytest.raises(ValueError, match=r"repeat names \(\[.*\]\).*var_names_make_unique"):
        gsc.get.rank_genes_groups_df(a, "Dendritic")
    del a.uns["rank_genes_groups"]["pts"], a.uns["rank_genes_groups"]["pts_rest"]
    pd.testing.assert_frame_equal(gsc.get.rank_genes_groups_df(a, "Dendritic"), sc.get.rank_genes_groups_df(a, "Dendritic"))


def test_fold_change_equal_to_the_threshold_is_dropped_as_in_scanpy():
    """A gene whose stored fold change is exactly 1.0 (group mean expm1 2 against the rest's 1):
    scanpy keeps fold changes strictly above min_fold_change, so the default (1) drops it and 0.99
    keeps it."""
    x = np.zeros((60, 3))
    x[:20, 0] = np.log(3.0)  # group A: expm1(mean) = 2, every cell expressing
    x[20:30, 0] = 4 * np.log(2.0)  # the rest: 10 of 40 expressing, expm1(mean) = 1
    x[:, 1], x[:, 2] = np.linspace(0, 1, 60), np.linspace(1, 0, 60)
    obs = pd.DataFrame({"g": pd.Categorical(["A"] * 20 + ["B"] * 40)}, index=[f"c{i}" for i in range(60)])
    a = sc.AnnData(x, obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
    sc.tl.rank_genes_groups(a, "g", method="t-test")
    lfc = pd.DataFrame(a.uns["rank_genes_groups"]["logfoldchanges"])["A"]
    assert lfc[pd.DataFrame(a.uns["rank_genes_groups"]["names"])["A"] == "g0"].tolist() == [1.0]
    for kw in ({}, {"min_fold_change": 0.99}):
        ref, got = a.copy(), a.copy()
        sc.tl.filter_rank_genes_groups(ref, **kw)
        gsc.tl.filter_rank_genes_groups(got, **kw)
        pd.testing.assert_frame_equal(_names(got), _names(ref))
        assert ("g0" in _names(got)["A"].tolist()) == bool(kw)


def test_filter_of_a_raw_ranking_reads_raw_by_default_as_scanpy(logged):
    """A ranking made on raw (use_raw defaults to True where raw is set) is filtered on raw's
    values by default (its params' use_raw), not on X, here scaled: no zeros, other fold changes."""
    a = logged[:, :120].copy()
    a.raw = a
    a.X = (a.X.toarray() if hasattr(a.X, "toarray") else a.X) * 2.0 + 1.0
    ranked = _ranked(a, groups=["CD14+ Monocyte", "Dendritic"], n_genes=30)
    ref, got = ranked.copy(), ranked.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.filter_rank_genes_groups(ref, min_fold_change=0.5)
    gsc.tl.filter_rank_genes_groups(got, min_fold_change=0.5)
    pd.testing.assert_frame_equal(_names(got), _names(ref))
    assert _names(got).notna().any().any()
