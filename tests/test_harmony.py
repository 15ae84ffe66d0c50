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
    """A numpy array or Series of column names is a list of keys (a review caught the type check
    refusing them)."""
    x = two_runs[:300].copy()
    gsc.pp.harmony_integrate(x, "run")
    for keys in (np.array(["run"]), pd.Series(["run"])):
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
        # from a mutation audit: numpy's bare "Singular matrix" (harmonypy's too); CuPy gave NaN
        (dict(key="run", lamb=0.0), ValueError, "lamb is 0 for every level of batch variable 'run'"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_input_changes_nothing(two_runs, kw, err, match):
    x = two_runs[:300].copy()
    x.obs["with_nan"] = np.where(np.arange(x.n_obs) % 50 == 0, np.nan, 1.0)
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
