"""combat equals scanpy's sc.pp.combat on real data (log-normalised pbmc4k_half, batches planted
per gene): CSR and dense X, numeric covariates, inplace or returned, every backend (GPU, Dask
blocks), the cases where scanpy fails (a categorical covariate, a one-cell batch) and bad input."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _helpers import benchmark_script, cells_for, to_host

import gpu_sc as gsc

#: ours against scanpy's, relative to the largest value: the same arithmetic from sums of
#: moments instead of scanpy's direct sums (measured: about 2e-15 here)
TOL = 1e-11
_PREPARED: dict[str, ad.AnnData] = {}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _data() -> ad.AnnData:
    """pbmc4k_half (2,170 cells), normalised, log1p, 1,000 highly variable genes (float32 CSR),
    three random batches whose stored values are scaled and shifted per gene, and numeric
    covariates (total counts, a random integer)."""
    if "data" not in _PREPARED:
        a = gsc.datasets.pbmc4k_half()
        _quiet(sc.pp.calculate_qc_metrics, a, inplace=True)
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        _quiet(sc.pp.highly_variable_genes, a, n_top_genes=1000, subset=True)
        rng = np.random.default_rng(1)
        codes = rng.integers(0, 3, a.n_obs)
        a.obs["batch"] = pd.Categorical(np.array(["b0", "b1", "b2"])[codes])
        a.obs["level"] = rng.integers(0, 4, a.n_obs)
        x = a.X.tocsr(copy=True)
        rows = np.repeat(codes, np.diff(x.indptr))
        scale, shift = rng.uniform(0.8, 1.25, (3, a.n_vars)), rng.normal(0, 0.2, (3, a.n_vars))
        x.data = np.maximum(x.data * scale[rows, x.indices] + shift[rows, x.indices], 0).astype(np.float32)
        a.X = x
        _PREPARED["data"] = a
    return _PREPARED["data"].copy()


def _close(got, want) -> None:
    got = to_host(got)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL * np.abs(want).max())


@pytest.mark.parametrize("covariates", [None, ["total_counts"], ["total_counts", "level"]],
                         ids=["batch", "one-covariate", "two-covariates"])  # fmt: skip
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_equals_scanpy(covariates, dense):
    a = _data()
    if dense:
        a.X = a.X.toarray()
    want = _quiet(sc.pp.combat, a.copy(), "batch", covariates=covariates, inplace=False)
    returned = gsc.pp.combat(a, "batch", covariates=covariates, inplace=False)
    assert isinstance(returned, np.ndarray)
    _close(returned, want)
    assert gsc.pp.combat(a, "batch", covariates=covariates) is None
    assert isinstance(a.X, np.ndarray)
    np.testing.assert_array_equal(a.X, returned)


def test_the_batch_effect_is_removed():
    """Power: the planted per-gene batch means differ before, barely after (as scanpy's)."""
    a = _data()

    def spread(x):
        means = pd.DataFrame(to_host(x)).groupby(a.obs["batch"].to_numpy()).mean().to_numpy()
        return float(means.std(axis=0).mean())

    before = spread(a.X)
    after = spread(gsc.pp.combat(a, "batch", inplace=False))
    assert before > 0.01 and after < before / 5, (before, after)


def test_integer_matrix_and_positional_arguments():
    """Counts as int32 (scanpy reads them as floats), and scanpy's old positional call."""
    a = _data()[:, :200].copy()
    a.X = np.rint(a.X.toarray() * 3).astype(np.int32)
    want = _quiet(sc.pp.combat, a.copy(), "batch", inplace=False)
    with pytest.warns(FutureWarning, match="no longer positional"):
        got = gsc.pp.combat(a, "batch", None, False)
    _close(got, want)


def test_categorical_covariate_is_coded_against_its_first_level():
    """scanpy codes a categorical covariate with every level, which repeats the batches' columns:
    its inverse of a singular matrix raises LinAlgError, or, as here, returns values off by up
    to 13 (max 18.2 where the data's is 6.4). Ours is its indicators but the first: scanpy's
    result for those given as numbers."""
    a = _data()
    a.obs["condition"] = pd.Categorical(np.where(a.obs["level"] % 2 == 0, "ctrl", "treated"))
    a.obs["treated"] = (a.obs["condition"] == "treated").astype(np.float64)
    want = _quiet(sc.pp.combat, a.copy(), "batch", covariates=["treated"], inplace=False)
    _close(gsc.pp.combat(a, "batch", covariates=["condition"], inplace=False), want)


def test_genes_of_one_value():
    """A gene of one value everywhere has zero variance: it comes back as it was. scanpy's direct
    sums give the non-zero one a round-off variance that moves every other gene through the
    priors; ours equal scanpy's with that gene all zero instead."""
    a = _data()[:, :300].copy()
    x = a.X.toarray()
    x[:, 5] = 0.0
    x[:, 7] = 3.0
    a.X = x
    got = gsc.pp.combat(a, "batch", inplace=False)
    np.testing.assert_array_equal(got[:, 5], 0.0)
    np.testing.assert_allclose(got[:, 7], 3.0, rtol=1e-14)
    zeroed = a.copy()
    zeroed.X[:, 7] = 0.0
    want = _quiet(sc.pp.combat, zeroed, "batch", inplace=False)
    others = np.r_[0:7, 8:300]
    _close(got[:, others], want[:, others])


def test_genes_of_one_value_within_each_batch():
    """From a mutation audit: a gene of one value within each batch has zero variance too (its
    residual sum is round-off, which grows with the cells summed: up to 233 eps of its sum of
    squares at 2,170 cells, past the old bound of 64 eps for 16 of these 60 genes, whose huge
    standardised values then moved every other gene by up to 0.165). They come back as the gene's
    mean; the other genes are scanpy's with those genes all zero."""
    a = _data()[:, :300].copy()
    x = a.X.toarray()
    x[:, :60] = np.random.default_rng(0).uniform(0, 5, (3, 60))[a.obs["batch"].cat.codes.to_numpy()]
    a.X = x
    got = gsc.pp.combat(a, "batch", inplace=False)
    np.testing.assert_allclose(got[:, :60], np.broadcast_to(x[:, :60].mean(0, dtype=np.float64), (a.n_obs, 60)),
                               rtol=1e-12)  # fmt: skip
    zeroed = a.copy()
    zeroed.X[:, :60] = 0.0
    want = _quiet(sc.pp.combat, zeroed, "batch", inplace=False)
    _close(got[:, 60:], want[:, 60:])


def test_duplicate_entries_offsets_and_large_covariates():
    """Duplicate CSR entries count as their sum; a gene far from 0 relative to its spread keeps
    its variance, dense or sparse (X + 1e7 made 758 of 765 genes constant once: sums of squares
    cancelled); a
    covariate of epoch seconds (1.7e9 + a few) is not a singular design (its D^T D once was)."""
    import scipy.sparse as sp

    a = _data()[:, :200].copy()
    want = _quiet(sc.pp.combat, a.copy(), "batch", inplace=False)
    x = a.X.tocoo()
    half = x.data / 2  # every value stored twice, as two halves
    rows, cols, data = np.r_[x.row, x.row], np.r_[x.col, x.col], np.r_[half, x.data - half]
    order = np.argsort(rows, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=x.shape[0]))]
    a.X = sp.csr_matrix((data[order], cols[order], indptr), shape=x.shape)
    assert not a.X.has_canonical_format
    _close(gsc.pp.combat(a, "batch", inplace=False), want)
    far = a.copy()
    far.X = want_x = _data()[:, :200].X.toarray().astype(np.float64) + 1e7
    ref = _quiet(sc.pp.combat, far.copy(), "batch", inplace=False)
    spread = (ref - 1e7).std(axis=0)
    for stored in (far.X, sp.csr_matrix(far.X)):  # dense, and sparse with every value stored
        far.X = stored
        got = gsc.pp.combat(far, "batch", inplace=False)
        assert np.abs(got - ref).max() <= 1e-5 * spread[spread > 0].min()  # scanpy's own round-off there
        assert np.ptp(got, axis=0).min() > 0 and want_x.shape == got.shape
    a.obs["seconds"] = 1.7e9 + a.obs["level"].to_numpy() * 3.0
    a.obs["level_f"] = a.obs["level"].astype(np.float64)
    ref = _quiet(sc.pp.combat, a.copy(), "batch", covariates=["level_f"], inplace=False)
    _close(gsc.pp.combat(a, "batch", covariates=["seconds"], inplace=False), ref)


def test_a_view_stays_a_view_unless_a_column_changes():
    """As scanpy's sanitize leaves it: inplace=False on a view copies no X; a text column with
    repeated values becomes categorical, and then the view becomes actual (scanpy's too)."""
    a = _data()[:, :100].copy()
    view = a[:800]
    got = gsc.pp.combat(view, "batch", inplace=False)
    assert view.is_view
    _close(got, _quiet(sc.pp.combat, a[:800].copy(), "batch", inplace=False))
    a.obs["note"] = np.where(np.arange(a.n_obs) % 2 == 0, "x", "y")
    view = a[:800]
    _quiet(gsc.pp.combat, view, "batch", inplace=False)
    assert not view.is_view and view.obs["note"].dtype == "category" and a.obs["note"].dtype == object
    a.obs["note"] = [None] + [f"cell{i}" for i in range(a.n_obs - 1)]  # unique apart from a missing one:
    view = a[:800]  # anndata converts it (missing values are no category)
    _quiet(gsc.pp.combat, view, "batch", inplace=False)
    assert not view.is_view and view.obs["note"].dtype == "category"


def test_inplace_on_a_view_leaves_its_parent():
    """Writing the corrected X into a view would write it into the parent (anndata's views of X
    are views of its memory); scanpy's does, with a warning. Ours makes the view actual first."""
    a = _data()[:, :100].copy()
    parent = a.X.copy()
    view = a[:800]
    gsc.pp.combat(view, "batch")
    assert not view.is_view and (parent != a.X).nnz == 0
    _close(view.X, _quiet(sc.pp.combat, a[:800].copy(), "batch", inplace=False))


def test_dask_equals_in_memory():
    import dask.array as da

    a = _data()
    lazy = a.copy()
    lazy.X = da.from_array(a.X, chunks=(500, -1), asarray=False)
    want = gsc.pp.combat(a, "batch", covariates=["total_counts"], inplace=False)
    gsc.pp.combat(lazy, "batch", covariates=["total_counts"])
    assert isinstance(lazy.X, da.Array) and lazy.X.chunks[0] == (500, 500, 500, 500, 170)
    _close(lazy.X.compute(), want)
    # two covariates: each block's columns in the fit's order (reversed, they were mixed up unseen)
    two = a.copy()
    two.X = da.from_array(a.X, chunks=(500, -1), asarray=False)
    gsc.pp.combat(two, "batch", covariates=["total_counts", "level"])
    _close(two.X.compute(), gsc.pp.combat(a, "batch", covariates=["total_counts", "level"], inplace=False))
    # explicit zero-row chunks (Dask keeps them): a bare StopIteration at compute (from an audit)
    gaps = a.copy()
    gaps.X = da.from_array(a.X, chunks=((0, 1000, 0, 1170), (a.n_vars,)), asarray=False)
    gsc.pp.combat(gaps, "batch", covariates=["total_counts"])
    _close(gaps.X.compute(), want)


def test_dask_fit_reads_the_matrix_once():
    """A lazily read X: its first row (the shift), then one pass for the moments that also counts
    non-finite values (the check took a pass of its own), then the lazy result; a NaN is still
    refused before the AnnData (a string column sanitize would change) is touched."""
    from _helpers import counted_dask

    a = _data()[:, :200].copy()
    a.obs["note"] = np.where(np.arange(a.n_obs) % 2 == 0, "x", "y")
    lazy = a.copy()
    lazy.X, made = counted_dask(a.X.tocsr(), rows=500)
    gsc.pp.combat(lazy, "batch", covariates=["total_counts"])
    blocks = list(range(lazy.X.numblocks[0]))
    assert sorted(made) == sorted([0, *blocks])
    _close(lazy.X.compute(), gsc.pp.combat(a, "batch", covariates=["total_counts"], inplace=False))
    bad = _data()[:, :200].copy()  # a's string column: sanitised by the combat of a above, as scanpy's
    bad.obs["note"] = np.where(np.arange(bad.n_obs) % 2 == 0, "x", "y")
    before = bad.obs.copy()
    x = a.X.tocsr(copy=True)
    x.data[-5] = np.nan
    bad.X = counted_dask(x, rows=500)[0]
    with pytest.raises(ValueError, match="1 non-finite values"):
        gsc.pp.combat(bad, "batch")
    assert bad.obs["note"].dtype == object and bad.obs.equals(before)


@pytest.mark.parametrize("covariates", [None, ["total_counts"]], ids=["batch", "covariate"])
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_gpu_equals_cpu(device, covariates, dense):
    a = cells_for(device, _data()[:, :300].copy(), n=400)
    if dense:
        a.X = a.X.toarray()
    gpu = gsc.get.to_gpu(a, copy=True)
    want = gsc.pp.combat(a, "batch", covariates=covariates, inplace=False)
    gsc.pp.combat(gpu, "batch", covariates=covariates)
    assert type(gpu.X).__module__.startswith("cupy") and not type(gpu.X).__module__.startswith("cupyx")
    _close(gpu.X, want)


def test_dask_of_gpu_blocks_equals_cpu(device):
    import dask.array as da

    a = cells_for(device, _data()[:, :200].copy(), n=300)
    lazy = a.copy()
    lazy.X = da.from_array(a.X, chunks=(100, -1), asarray=False)
    gsc.get.to_gpu(lazy)
    want = gsc.pp.combat(a, "batch", covariates=["total_counts"], inplace=False)
    gsc.pp.combat(lazy, "batch", covariates=["total_counts"])
    got = lazy.X.compute()
    assert type(got).__module__.startswith("cupy")
    _close(got, want)


@pytest.mark.parametrize(("change", "kwargs", "match"), [
    (None, {"key": "nope"}, "Could not find the key 'nope'"),
    (None, {"covariates": ["nope"]}, r"Could not find the covariate\(s\) \['nope'\]"),
    (None, {"covariates": ["batch"]}, "Batch key and covariates cannot overlap"),
    (None, {"covariates": ["level", "level"]}, "Covariates must be unique"),
    ("missing_batch", {}, "1 missing values"),
    ("one_cell_batch", {}, r"batch\(es\) \['solo'\] .* single cell"),
    ("constant_covariate", {"covariates": ["constant"]}, "singular"),
    ("missing_covariate", {"covariates": ["total_counts"]}, "1 missing or infinite"),
    ("no_x", {}, r"adata.X is None; ComBat corrects X: set adata.X = adata.layers\[name\]"),
], ids=["key", "covariate", "overlap", "repeated", "missing-batch", "one-cell-batch", "singular", "nan-covariate",
        "no-x"])  # fmt: skip
def test_bad_input_is_refused_and_leaves_the_data(change, kwargs, match):
    a = _data()[:, :100].copy()
    a.obs["note"] = np.where(np.arange(a.n_obs) % 2 == 0, "x", "y")  # a string column: sanitize would change it
    batch = a.obs["batch"].astype(str).to_numpy()
    if change == "missing_batch":
        a.obs["batch"] = pd.Categorical(np.where(np.arange(a.n_obs) == 0, None, batch))
    if change == "one_cell_batch":
        a.obs["batch"] = pd.Categorical(np.where(np.arange(a.n_obs) == 0, "solo", batch))
    if change == "constant_covariate":
        a.obs["constant"] = 2.0
    if change == "missing_covariate":
        a.obs.loc[a.obs_names[3], "total_counts"] = np.nan
    if change == "no_x":
        a.layers["lognorm"], a.X = a.X, None
    before = a.copy()
    with pytest.raises(ValueError, match=match):
        gsc.pp.combat(a, **{"key": "batch", **kwargs})
    assert a.obs["note"].dtype == object
    assert a.obs.equals(before.obs)
    assert (a.X is None) if change == "no_x" else (a.X != before.X).nnz == 0


def test_benchmark_script_runs(tmp_path):
    """benchmarks/combat.py end to end on a few hundred resampled cells."""
    import json

    out = tmp_path / "rows.jsonl"
    args = ["--n-cells", "300", "--n-top-genes", "200", "--repeats", "1", "--touch-memory", "0", "--out", str(out)]
    with benchmark_script("combat") as bench, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert bench.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case"] for r in rows] == ["batch", "covariate"]
    assert all(r["seconds"] > 0 and r["reference_seconds"] > 0 for r in rows)
    assert all(r["parity_max_abs_diff"] < 1e-9 for r in rows)
    assert all(r["batch_mean_spread_after"] < r["batch_mean_spread_before"] / 2 for r in rows)  # 75 cells a batch


def test_nan_in_memory_is_refused():
    """A NaN in an in-memory dense X is refused before any work, with a message about non-finite
    values (from a mutation audit: skipping the check went unnoticed)."""
    a = _data()[:, :100].copy()
    a.X = a.X.toarray()
    a.X[3, 4] = np.nan
    before = a.X.copy()
    with pytest.raises(ValueError, match="non-finite"):
        gsc.pp.combat(a, "batch")
    np.testing.assert_array_equal(a.X, before)


def test_boolean_matrix_equals_scanpy():
    """A boolean X is read as 0 and 1, as scanpy does (from a mutation audit: refusing it went
    unnoticed)."""
    a = _data()[:, :100].copy()
    a.X = a.X.toarray() > 1.0
    want = _quiet(sc.pp.combat, a.copy(), "batch", inplace=False)
    _close(gsc.pp.combat(a, "batch", inplace=False), want)


def test_unused_batch_category_equals_scanpy():
    """A batch category no cell has is dropped, as in scanpy (from a mutation audit: keeping it
    went unnoticed)."""
    a = _data()[:, :200].copy()
    a.obs["batch"] = a.obs["batch"].cat.add_categories(["b3"])
    want = _quiet(sc.pp.combat, a.copy(), "batch", inplace=False)
    _close(gsc.pp.combat(a, "batch", inplace=False), want)


def test_dask_of_cells_sorted_by_batch_equals_scanpy():
    """Cells sorted by batch in Dask blocks of 500 rows, so that a block lacks the later batches:
    its per-batch counts still have one entry per batch (from a mutation audit: counts without
    minlength went unnoticed)."""
    import dask.array as da

    a0 = _data()
    a = a0[np.argsort(a0.obs["batch"].cat.codes.to_numpy(), kind="stable"), :200].copy()
    want = _quiet(sc.pp.combat, a.copy(), "batch", inplace=False)
    lazy = a.copy()
    lazy.X = da.from_array(a.X, chunks=(500, -1), asarray=False)
    _close(gsc.pp.combat(lazy, "batch", inplace=False).compute(), want)


def test_categorical_covariate_with_an_unused_level():
    """A categorical covariate's unused level is dropped before coding: scanpy's result for the
    used level but the first given as a number (from a mutation audit: keeping the level went
    unnoticed)."""
    a = _data()[:, :200].copy()
    a.obs["condition"] = pd.Categorical(np.where(a.obs["level"] % 2 == 0, "ctrl", "treated"),
                                        categories=["ctrl", "treated", "other"])  # fmt: skip
    a.obs["treated"] = (a.obs["condition"] == "treated").astype(np.float64)
    want = _quiet(sc.pp.combat, a.copy(), "batch", covariates=["treated"], inplace=False)
    _close(gsc.pp.combat(a, "batch", covariates=["condition"], inplace=False), want)
