"""scale equals scanpy's sc.pp.scale (values, var columns, storage type, dtype)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, to_host

from gpu_sc.preprocessing._scale import scale

KWARGS = [
    {},
    {"max_value": 2.5},
    {"zero_center": False},
    {"zero_center": False, "max_value": 1.0},
    {"mask_obs": "sel"},
    {"mask_obs": "sel", "zero_center": False, "max_value": 1.0},
    {"mask_obs": "array", "max_value": 3.0},
]


def _lognorm(adata):
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.obs["sel"] = np.arange(adata.n_obs) % 3 == 0
    return adata


def _run(fn, adata, kw):
    kw = dict(kw)
    if kw.get("mask_obs") == "array":
        kw["mask_obs"] = adata.obs["sel"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(adata, **kw)


@pytest.mark.parametrize("kw", KWARGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_scale_matches_scanpy(pbmc, cpu_type, kw):
    pbmc = _lognorm(pbmc)
    pbmc.X = as_type(pbmc.X, cpu_type)
    ref, got = pbmc.copy(), pbmc.copy()
    _run(sc.pp.scale, ref, kw)
    _run(scale, got, kw)
    assert list(got.var.columns) == list(ref.var.columns)
    for col in ref.var.columns[-2:]:
        np.testing.assert_allclose(got.var[col], ref.var[col], rtol=1e-6)
        assert got.var[col].dtype == np.float64
    assert sp.issparse(got.X) == sp.issparse(ref.X)
    if cpu_type == "csc" and kw.get("zero_center") is False and "mask_obs" not in kw:
        # scanpy keeps CSC and goes to float64 there; we give CSR in the input dtype (documented)
        assert sp.isspmatrix_csr(got.X) and got.X.dtype == pbmc.X.dtype
    else:
        assert got.X.dtype == ref.X.dtype
    np.testing.assert_allclose(to_host(got.X), to_host(ref.X), rtol=1e-5, atol=2e-6)


def test_sparse_without_centring_stays_csr(brain):
    brain = _lognorm(brain)
    x = brain.X.copy()
    scale(brain, zero_center=False)
    assert sp.isspmatrix_csr(brain.X) and brain.X.dtype == np.float32 and brain.X.nnz == x.nnz
    std = brain.var["std"].to_numpy()
    assert np.all(std > 0)
    np.testing.assert_allclose(brain.X.toarray(), x.toarray() / std, rtol=1e-6)


def test_centring_sparse_warns_and_densifies(pbmc):
    with pytest.warns(UserWarning, match="densifies"):
        scale(pbmc)
    assert isinstance(pbmc.X, np.ndarray) and pbmc.X.dtype == np.float64
    np.testing.assert_allclose(pbmc.X.mean(0), 0, atol=1e-6)
    nonconst = pbmc.var["std"].to_numpy() != 1
    np.testing.assert_allclose(pbmc.X[:, nonconst].std(0, ddof=1), 1, rtol=1e-6)


def test_mask_obs_leaves_other_cells(pbmc):
    pbmc = _lognorm(pbmc)
    pbmc.X = pbmc.X.toarray()
    before = pbmc.X.copy()
    scale(pbmc, mask_obs="sel")
    m = pbmc.obs["sel"].to_numpy()
    np.testing.assert_array_equal(pbmc.X[~m], before[~m])
    assert {"mean of sel", "std of sel"} <= set(pbmc.var.columns)
    np.testing.assert_allclose(pbmc.var["mean of sel"], before[m].mean(0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("max_value", [0, -1.0, float("nan"), "3"])
def test_bad_max_value_leaves_data_unchanged(pbmc, max_value):
    """A clip of [-max_value, max_value] needs max_value > 0 (0 would zero X, -1 fill it)."""
    before = pbmc.X.copy()
    with pytest.raises(ValueError, match="max_value must be a positive number"):
        scale(pbmc, max_value=max_value)
    assert (pbmc.X != before).nnz == 0 and "mean" not in pbmc.var


def test_layer_obsm_and_arrays(pbmc):
    pbmc = _lognorm(pbmc)
    pbmc.layers["lg"] = pbmc.X.copy()
    ref = pbmc.copy()
    sc.pp.scale(ref, layer="lg", zero_center=False)
    scale(pbmc, layer="lg", zero_center=False)
    np.testing.assert_allclose(pbmc.layers["lg"].toarray(), ref.layers["lg"].toarray(), rtol=1e-6)
    assert (pbmc.X != ref.X).nnz == 0  # X untouched
    dense = ref.X.toarray()
    out = scale(dense, max_value=4, copy=True)
    assert out is not dense
    np.testing.assert_allclose(out, sc.pp.scale(dense, max_value=4, copy=True), rtol=1e-5, atol=1e-6)
    ints = np.arange(12).reshape(4, 3)
    assert scale(ints).dtype == np.float64  # integers become float64, as in scanpy
    pbmc.obsm["few"] = dense[:, :5]
    with pytest.raises(ValueError, match="columns"):
        scale(pbmc, obsm="few")
    with pytest.raises(KeyError):
        scale(pbmc, mask_obs="nope")


@pytest.mark.parametrize("kw", KWARGS[:6], ids=str)
@pytest.mark.parametrize("dense", [False, True])
def test_scale_gpu_equals_cpu(device, pbmc, kw, dense):
    import gpu_sc as gsc

    pbmc = _lognorm(pbmc)
    if dense:
        pbmc.X = pbmc.X.toarray()
    gpu = gsc.get.to_gpu(pbmc, copy=True)
    _run(scale, pbmc, kw)
    _run(scale, gpu, kw)
    assert type(gpu.X).__module__.startswith(("cupy", "cupyx"))
    assert (type(gpu.X).__module__.startswith("cupyx")) == sp.issparse(pbmc.X)
    assert gpu.X.dtype == pbmc.X.dtype
    for col in pbmc.var.columns[-2:]:
        np.testing.assert_allclose(gpu.var[col], pbmc.var[col], rtol=1e-10)
    np.testing.assert_allclose(to_host(gpu.X), to_host(pbmc.X), rtol=1e-6, atol=1e-7)
