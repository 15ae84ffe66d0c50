"""gsc.tl.rank_genes_groups (t-test, t-test_overestim_var) against scanpy's on real data: the
same uns layout, the same top genes in the same order, statistics within float rounding; the GPU
kernel and Dask blocks against the CPU; bad input refused."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import SHARED, as_type, assert_close, cells_for

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


def assert_like_scanpy(got, ref, key="rank_genes_groups", top=TOP):
    """Same params and record layout; top genes identical in order; scores and fold changes
    (stored as float32) within a float32 step, p values and BH within a few float64 steps (scipy
    on float64 statistics summed in scanpy's order; measured equal, BH 3e-16 apart)."""
    g, r = got.uns[key], ref.uns[key]
    assert g["params"] == r["params"]
    for k in FIELDS:
        assert g[k].dtype == r[k].dtype, k
        for f in r[k].dtype.names:
            if k == "names":
                np.testing.assert_array_equal(g[k][f][:top], r[k][f][:top], err_msg=f)
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
]


@pytest.mark.parametrize("kind", ["csr", "numpy"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c) or "default")
def test_equals_scanpy(logged, kind, case):
    a = logged.copy()
    a.X = as_type(sp.csr_matrix(a.X), kind)
    a.var["odd"] = np.arange(a.n_vars) % 2 == 1
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp", **case)
    gsc.tl.rank_genes_groups(got, "grp", **case)
    assert_like_scanpy(got, ref, key=case.get("key_added", "rank_genes_groups"))
    # scanpy's readers take our result
    df = sc.get.rank_genes_groups_df(got, group=None, key=case.get("key_added", "rank_genes_groups"))
    assert len(df) > 0 and {"names", "scores", "pvals_adj"} <= set(df.columns)


@pytest.mark.skipif(not (SHARED / "soupx_pbmc4k_half.h5ad").is_file(), reason="shared pbmc4k not present")
def test_equals_scanpy_at_full_width_on_our_clusters():
    """The 33,694-gene pbmc4k matrix, groups from its own annotation: top 100 per group."""
    import anndata as ad

    a = ad.read_h5ad(SHARED / "soupx_pbmc4k_half.h5ad")
    a = _lognorm(a[:, np.asarray((a.X > 0).sum(0)).ravel() > 0].copy())
    a.obs["grp"] = a.obs["Annotation"].astype("category")
    ref, got = a.copy(), a.copy()
    sc.tl.rank_genes_groups(ref, "grp", pts=True)
    gsc.tl.rank_genes_groups(got, "grp", pts=True)
    assert_like_scanpy(got, ref)


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
    gsc.tl.rank_genes_groups(mem, "grp", pts=True)
    gsc.tl.rank_genes_groups(lazy, "grp", pts=True)
    # block partial sums add in another order: the statistics move by float64 rounding only
    assert_like_scanpy(lazy, mem, top=20)


def test_gpu_kernel_equals_cpu(device, logged):
    a = cells_for(device, logged, 300)
    a = a[:, :200].copy()
    cpu, gpu = a.copy(), a.copy()
    gpu.X = as_type(sp.csr_matrix(a.X), "cupyx_csr")
    gsc.tl.rank_genes_groups(cpu, "grp", pts=True)
    gsc.tl.rank_genes_groups(gpu, "grp", pts=True)
    assert_like_scanpy(gpu, cpu, top=20)


def test_bad_input_is_refused(logged):
    a = logged.copy()
    before = a.obs.copy()
    with pytest.raises(ValueError, match="wilcoxon and logreg"):
        gsc.tl.rank_genes_groups(a, "grp", method="wilcoxon")
    with pytest.raises(KeyError, match="groupby 'nope'"):
        gsc.tl.rank_genes_groups(a, "nope")
    with pytest.raises(ValueError, match="reference 'x'"):
        gsc.tl.rank_genes_groups(a, "grp", reference="x")
    with pytest.raises(ValueError, match=r"groups \['x'\]"):
        gsc.tl.rank_genes_groups(a, "grp", groups=["x"])
    with pytest.raises(ValueError, match="corr_method"):
        gsc.tl.rank_genes_groups(a, "grp", corr_method="holm")
    with pytest.raises(ValueError, match="use_raw=True but adata.raw is None"):
        gsc.tl.rank_genes_groups(a, "grp", use_raw=True)
    a.obs["one"] = pd.Categorical(["solo"] + ["many"] * (a.n_obs - 1))
    with pytest.raises(ValueError, match="fewer than 2 cells"):
        gsc.tl.rank_genes_groups(a, "one")
    del a.obs["one"]
    pd.testing.assert_frame_equal(a.obs, before)
    assert "rank_genes_groups" not in a.uns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gsc.tl.rank_genes_groups(a, "grp", copy=True).uns["rank_genes_groups"]
    assert "rank_genes_groups" not in a.uns
