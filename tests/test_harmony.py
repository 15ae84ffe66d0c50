"""gsc.pp.harmony_integrate: harmonypy's result for the same seed on two real batches, on the CPU and
through the GPU path (emulated), and bad input refused with the AnnData unchanged."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import to_host

import gpu_sc as gsc

#: Harmony is an iteration of sums whose stopping rules compare objectives; two summation orders
#: keep it on the same path and move the result by rounding only (measured: 9e-13 of the largest
#: coordinate on these cells); a stop decided differently would show as ~1e-4.
ITERATED_RTOL = 1e-8


@pytest.fixture(scope="module")
def two_runs() -> ad.AnnData:
    """The bundled pbmc4k (10x v2) and pbmc68k (v1) cells on their shared genes, batch 'run',
    with a 20-component PCA of log-normalised counts."""
    a, b = gsc.datasets.pbmc4k_half(), gsc.datasets.pbmc68k_reduced()
    genes = a.var_names.intersection(b.var_names)
    x = ad.concat([a[:, genes], b[:, genes]], label="run", keys=["4k", "68k"], index_unique="-")
    x.obs["type"] = np.r_[a.obs["Annotation"].astype(str), b.obs["bulk_labels"].astype(str)]
    x.obs["lane"] = pd.Categorical(np.arange(x.n_obs) % 2 == 0).rename_categories(["odd", "even"])
    gsc.pp.normalize_total(x)
    gsc.pp.log1p(x)
    gsc.pp.pca(x, n_comps=20)
    return ad.AnnData(obs=x.obs, obsm={"X_pca": x.obsm["X_pca"]})


def _max_rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _classic_harmonypy():
    """harmonypy before 0.1: the algorithm and defaults scanpy 1.11's wrapper reads (0.1 and later
    follow R's harmony 1.2 instead: other defaults, an estimated ridge penalty)."""
    harmonypy = pytest.importorskip("harmonypy")
    if tuple(int(v) for v in harmonypy.__version__.split(".")[:2]) >= (0, 1):
        pytest.skip(f"harmonypy {harmonypy.__version__} is not the classic algorithm (pip install 'harmonypy<0.1')")
    return harmonypy


def test_equals_harmonypy_and_mixes_batches(two_runs):
    harmonypy = _classic_harmonypy()
    x = two_runs.copy()
    z = x.obsm["X_pca"].astype(np.float64)
    ref = harmonypy.run_harmony(z, x.obs, "run", random_state=0, verbose=False)
    ref_z = ref.Z_corr.T  # components x cells there
    gsc.pp.harmony_integrate(x, "run")
    got = x.obsm["X_pca_harmony"]
    assert got.shape == z.shape and got.dtype == np.float64
    assert _max_rel(got, ref_z) <= ITERATED_RTOL
    assert np.array_equal(x.obsm["X_pca"], two_runs.obsm["X_pca"])  # the input is not changed
    # batches mix: the share of each cell's 30 nearest neighbours from the other run rises
    before, after = _other_run_share(z, x.obs["run"]), _other_run_share(got, x.obs["run"])
    assert after > 2 * before


def test_old_positionals_as_in_scanpy(two_runs):
    """scanpy still takes basis and adjusted_basis by position (a FutureWarning); ours too (a TypeError)."""
    x, y = two_runs.copy(), two_runs.copy()
    with pytest.warns(FutureWarning, match="no longer positional"):
        gsc.pp.harmony_integrate(x, "run", "X_pca", "X_h", max_iter_harmony=2)
    gsc.pp.harmony_integrate(y, "run", basis="X_pca", adjusted_basis="X_h", max_iter_harmony=2)
    np.testing.assert_array_equal(x.obsm["X_h"], y.obsm["X_h"])


def test_harmonypys_other_arguments_run_as_in_scanpy(two_runs):
    """scanpy passes its keywords on to harmonypy, which takes plot_convergence, reference_values
    and cluster_prior (and uses none of them for the embedding) and max_iter_harmony=0 (the
    embedding unchanged): all run here too."""
    harmonypy = _classic_harmonypy()
    x = two_runs[:600].copy()
    z = x.obsm["X_pca"].astype(np.float64)
    gsc.pp.harmony_integrate(x, "run", plot_convergence=False, reference_values=None, cluster_prior=None)
    ref = harmonypy.run_harmony(z, x.obs, "run", random_state=0, verbose=False).Z_corr.T
    assert _max_rel(x.obsm["X_pca_harmony"], ref) <= ITERATED_RTOL
    gsc.pp.harmony_integrate(x, "run", max_iter_harmony=0)
    np.testing.assert_array_equal(x.obsm["X_pca_harmony"], z)


def _other_run_share(z, runs, k: int = 30) -> float:
    d = ((z[:, None, :] - z[None, ::7, :]) ** 2).sum(-1)  # against every 7th cell: quick and enough
    nn = np.argsort(d, axis=1)[:, 1 : k + 1]
    codes = pd.Categorical(runs).codes
    return float((codes[::7][nn] != codes[:, None]).mean())


def test_two_batch_variables_equal_harmonypy(two_runs):
    harmonypy = _classic_harmonypy()
    x = two_runs[::4].copy()
    z = x.obsm["X_pca"].astype(np.float64)
    kw = dict(theta=[2.0, 1.0], nclust=12, max_iter_harmony=4, random_state=3)
    ref = harmonypy.run_harmony(z, x.obs, ["run", "lane"], verbose=False, **kw).Z_corr.T
    gsc.pp.harmony_integrate(x, ["run", "lane"], adjusted_basis="h", **kw)
    assert _max_rel(x.obsm["h"], ref) <= ITERATED_RTOL


def test_gpu_equals_cpu(device, two_runs):
    x = two_runs[::5].copy()
    gpu = gsc.get.to_gpu(x, copy=True)
    kw = dict(nclust=10, max_iter_harmony=3)
    gsc.pp.harmony_integrate(x, "run", **kw)
    gsc.pp.harmony_integrate(gpu, "run", **kw)
    out = gpu.obsm["X_pca_harmony"]
    assert type(out).__module__.startswith("cupy")
    assert _max_rel(to_host(out), x.obsm["X_pca_harmony"]) <= ITERATED_RTOL


def test_custom_start_and_one_cell_batch(two_runs):
    """A callable start (harmonypy's cluster_fn) and a batch of a single cell both run."""
    x = two_runs[::6].copy()
    x.obs["run"] = x.obs["run"].astype(str)
    x.obs.iloc[0, x.obs.columns.get_loc("run")] = "lonely"
    first = lambda data, k: data[:k]  # noqa: E731
    gsc.pp.harmony_integrate(x, "run", cluster_fn=first, nclust=8, max_iter_harmony=2)
    assert np.isfinite(x.obsm["X_pca_harmony"]).all()


def test_result_is_its_own_array_and_sparse_basis_named(two_runs):
    """No iteration leaves the start: still a copy, not the basis itself (scanpy copies); a sparse
    basis gets the function's own message, not numpy's."""
    x = two_runs[:200].copy()
    x.obsm["X_pca"] = x.obsm["X_pca"].astype(np.float64)
    gsc.pp.harmony_integrate(x, "run", max_iter_harmony=0)
    assert not np.shares_memory(x.obsm["X_pca_harmony"], x.obsm["X_pca"])
    x.obsm["sparse"] = sp.csr_matrix(x.obsm["X_pca"])
    with pytest.raises(TypeError, match=r"toarray"):
        gsc.pp.harmony_integrate(x, "run", basis="sparse")


def test_a_view_warns_as_scanpys_and_leaves_its_parent(two_runs):
    """On a view, scanpy's wrapper sets obsm on it, so anndata warns and makes it actual; ours
    gives the same warning (it made the view actual silently) and the parent stays as it was."""
    import anndata as ad

    parent = two_runs.copy()
    view = parent[:300]
    with pytest.warns(ad.ImplicitModificationWarning, match=r"Setting element `.obsm\['X_pca_harmony'\]` of view"):
        gsc.pp.harmony_integrate(view, "run")
    assert not view.is_view and "X_pca_harmony" in view.obsm and "X_pca_harmony" not in parent.obsm


def test_keys_as_arrays_as_before(two_runs):
    """A numpy array, Series or generator of column names is a list of keys (a review caught the
    type check refusing them, and a later one a generator read twice)."""
    x = two_runs[:300].copy()
    gsc.pp.harmony_integrate(x, "run")
    for keys in (np.array(["run"]), pd.Series(["run"]), (k for k in ["run"])):
        y = two_runs[:300].copy()
        gsc.pp.harmony_integrate(y, keys)
        np.testing.assert_array_equal(y.obsm["X_pca_harmony"], x.obsm["X_pca_harmony"])


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        (dict(key="nope"), KeyError, "key 'nope' not in adata.obs"),
        (dict(key="run", basis="X_umap"), KeyError, "basis 'X_umap' not in adata.obsm"),
        (dict(key="with_nan"), ValueError, "missing values"),
        (dict(key="run", theta=[1.0, 2.0, 3.0]), ValueError, "theta must be"),
        (dict(key="run", sigma=-1.0), ValueError, "sigma must be"),
        (dict(key="run", nclust=10_000), ValueError, "nclust=10000 exceeds"),
        (dict(key="run", block_size=0), ValueError, "block_size"),
        (dict(key="run", cluster_fn="louvain"), ValueError, "cluster_fn"),
        (dict(key="run", nclust=5, cluster_fn=lambda data, k: data[:k].T), ValueError, "shape"),
        (dict(key="run", tau=True), ValueError, "tau"),
        (dict(key="run", basis="bad"), ValueError, r"harmony_integrate \(obsm\['bad'\]\): found 1 non-finite"),
        # arguments of the wrong type are named (bare "'int' object is not iterable" and numpy's
        # "could not convert string to float" before)
        (dict(key=3), TypeError, r"key must be an adata.obs column name or a list of them, got 3 \(int\)"),
        (dict(key=["run", None]), TypeError, r"key must be an adata.obs column name"),
        (dict(key="run", theta="a"), ValueError, "theta must be a non-negative number"),
        (dict(key="run", lamb=[1, "x"]), ValueError, "lamb must be a non-negative number"),
        (dict(key="run", sigma="s"), ValueError, "sigma must be a positive number"),
        # from a mutation audit: numpy's bare "Singular matrix" (harmonypy's too; CuPy's solve does not raise)
        (dict(key="run", lamb=0.0), ValueError, "lamb is 0 for every level of batch variable 'run'"),
        # one level of lamb 0 in each of two identical keys: the same indicator twice (numpy: "Singular matrix")
        (dict(key=["lane", "lane_copy"], lamb=[0.0, 1.0, 0.0, 1.0]), ValueError,
         r"lamb is 0 for batch levels 'lane=odd', 'lane_copy=odd', whose indicators are linearly dependent"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_input_changes_nothing(two_runs, kw, err, match):
    x = two_runs[:300].copy()
    x.obs["with_nan"] = np.where(np.arange(x.n_obs) % 50 == 0, np.nan, 1.0)
    x.obs["lane_copy"] = x.obs["lane"]
    bad = x.obsm["X_pca"].copy()
    bad[3, 2] = np.nan
    x.obsm["bad"] = bad
    kw = dict(kw)
    before = x.copy()
    with pytest.raises(err, match=match):
        gsc.pp.harmony_integrate(x, kw.pop("key"), **kw)
    assert x.obs.equals(before.obs) and set(x.obsm) == set(before.obsm)
    for name in x.obsm:
        assert np.array_equal(x.obsm[name], before.obsm[name], equal_nan=True)


@pytest.mark.parametrize("kw", [{"tau": 200}, {"lamb": 3.0}, {"sigma": 0.3}, {"block_size": 0.2},
                                {"cluster_fn": "first"}, {"theta": 0.5}, {"epsilon_cluster": 1e-2}])  # fmt: skip
def test_harmonypys_tuning_keywords_equal_harmonypy(two_runs, kw):
    """Each of harmonypy's tuning keywords at a value other than its default gives harmonypy's
    embedding (each moves it by 1e-6 to 7e-2 when ignored)."""
    harmonypy = _classic_harmonypy()
    x = two_runs[::3].copy()
    if kw.get("cluster_fn") == "first":
        kw = {"cluster_fn": lambda data, k: data[:k]}
    kw = {"nclust": 12, "max_iter_harmony": 3, **kw}
    z = x.obsm["X_pca"].astype(np.float64)
    ref = harmonypy.run_harmony(z, x.obs, "run", random_state=0, verbose=False, **kw).Z_corr.T
    gsc.pp.harmony_integrate(x, "run", **kw)
    assert _max_rel(x.obsm["X_pca_harmony"], ref) <= ITERATED_RTOL
    plain = harmonypy.run_harmony(z, x.obs, "run", random_state=0, verbose=False, nclust=12,
                                  max_iter_harmony=3).Z_corr.T  # fmt: skip
    assert _max_rel(plain, ref) > 100 * ITERATED_RTOL  # the keyword matters here


def test_negative_rows_run_and_zero_rows_are_refused(two_runs):
    """A cell whose largest component is negative is scaled by it as in harmonypy; only a largest
    component of 0 (which harmonypy divides by) is refused, with our message (from a mutation audit:
    refusing negative maxima too, or dropping the guard, went unnoticed)."""
    s = two_runs[::6].copy()
    s.obsm["X_pca"] = s.obsm["X_pca"].astype(np.float64)
    kw = dict(nclust=8, max_iter_harmony=2)
    zero = s.copy()
    zero.obsm["X_pca"][0] = 0.0
    with pytest.raises(ValueError, match="largest component is 0"):
        gsc.pp.harmony_integrate(zero, "run", **kw)
    harmonypy = _classic_harmonypy()
    neg = s.copy()
    neg.obsm["X_pca"][0] = -np.abs(neg.obsm["X_pca"][0]) - 0.1
    ref = harmonypy.run_harmony(neg.obsm["X_pca"], neg.obs, "run", random_state=0, verbose=False, **kw).Z_corr.T
    gsc.pp.harmony_integrate(neg, "run", **kw)
    assert _max_rel(neg.obsm["X_pca_harmony"], ref) <= ITERATED_RTOL


@pytest.mark.parametrize("kw", [{"nclust": "n"}, {"theta": 0.0}, {"block_size": 1.0}], ids=str)
def test_edge_values_of_the_arguments_equal_harmonypy(two_runs, kw):
    """The ends of the allowed ranges run and give harmonypy's embedding: nclust equal to the
    number of cells, theta=0 (no diversity penalty), block_size=1 (every cell in one block) (from
    a mutation audit: refusing any of them went unnoticed)."""
    harmonypy = _classic_harmonypy()
    x = two_runs[::100].copy() if kw.get("nclust") == "n" else two_runs[::6].copy()
    kw = {"nclust": 8, "max_iter_harmony": 2, **kw}
    if kw["nclust"] == "n":
        kw["nclust"] = x.n_obs
    z = x.obsm["X_pca"].astype(np.float64)
    ref = harmonypy.run_harmony(z, x.obs, "run", random_state=0, verbose=False, **kw).Z_corr.T
    gsc.pp.harmony_integrate(x, "run", **kw)
    assert _max_rel(x.obsm["X_pca_harmony"], ref) <= ITERATED_RTOL


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"sigma": 0.0}, "sigma"), ({"max_iter_kmeans": 0}, "max_iter_kmeans"), ({"cells": 1}, "at least 2 cells")],
    ids=str,
)
def test_degenerate_values_are_refused(two_runs, kw, match):
    """sigma=0 (a division by zero in harmonypy), max_iter_kmeans=0 (no clustering to start
    from) and a basis of a single cell are refused with a ValueError naming the problem (from a
    mutation audit: accepting each went unnoticed)."""
    kw = dict(kw)
    x = two_runs[: kw.pop("cells", 300)].copy()
    with pytest.raises(ValueError, match=match):
        gsc.pp.harmony_integrate(x, "run", nclust=1 if x.n_obs == 1 else 8, max_iter_harmony=2, **kw)
    assert "X_pca_harmony" not in x.obsm


def test_random_state_none_runs(two_runs):
    """random_state=None (numpy's global state, as harmonypy's) is accepted (from a mutation audit:
    refusing it went unnoticed)."""
    x = two_runs[::6].copy()
    gsc.pp.harmony_integrate(x, "run", nclust=8, max_iter_harmony=2, random_state=None)
    assert x.obsm["X_pca_harmony"].shape == x.obsm["X_pca"].shape
    assert np.isfinite(x.obsm["X_pca_harmony"]).all()


def test_default_nclust_is_capped_at_100(two_runs):
    """With more than 3,015 cells the default nclust = min(round(n / 30), 100) is 100, as in
    harmonypy (from a mutation audit: a cap of 99 went unnoticed); 300 noisy copies of cells bring
    the 2,870 cells to 3,170 (round(n / 30) = 106)."""
    harmonypy = _classic_harmonypy()
    x = two_runs.copy()
    x.obsm["X_pca"] = x.obsm["X_pca"].astype(np.float64)
    extra = x[:300].copy()
    extra.obs_names = [f"{n}-dup" for n in extra.obs_names]
    extra.obsm["X_pca"] = extra.obsm["X_pca"] + np.random.default_rng(0).normal(scale=0.05, size=(300, 20))
    y = ad.concat([x, extra])
    y.obs["run"] = y.obs["run"].astype("category")
    ref = harmonypy.run_harmony(y.obsm["X_pca"], y.obs, "run", random_state=0, verbose=False, max_iter_harmony=1)
    assert ref.K == 100
    gsc.pp.harmony_integrate(y, "run", max_iter_harmony=1)
    assert _max_rel(y.obsm["X_pca_harmony"], ref.Z_corr.T) <= ITERATED_RTOL


def test_nested_keys_with_some_free_levels_run(two_runs):
    """lamb 0 on levels that stay independent of the intercept and each other (one level of a key
    and of its copy, the other penalised) is solvable and runs; only dependent free levels are refused."""
    x = two_runs[:300].copy()
    x.obs["lane_copy"] = x.obs["lane"]
    gsc.pp.harmony_integrate(x, ["lane", "lane_copy"], lamb=[0.0, 1.0, 1.0, 1.0], max_iter_harmony=2)
    assert np.isfinite(x.obsm["X_pca_harmony"]).all()
