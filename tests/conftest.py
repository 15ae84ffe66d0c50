"""Shared fixtures: bundled real data, array types, and the `gpu` marker's automatic skip."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cuda_emu import CXX, emulated_cupy

from gpu_sc._backend import gpu_available

DATA = Path(__file__).resolve().parents[1] / "gpu_sc" / "_data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the checkout, if present

CPU_TYPES = ("numpy", "csr", "csc")
GPU_TYPES = ("cupy", "cupyx_csr")


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_without_cupy(code: str) -> str:
    """Run `code` in a fresh Python where `import cupy` / `import cupyx` fail, as on a machine
    without CuPy (sys.modules[name] = None); asserts it exits 0, returns its stripped stdout."""
    import subprocess

    block = "import sys; sys.modules.update(cupy=None, cupyx=None)\n"
    out = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@contextlib.contextmanager
def benchmark_script(name: str):
    """benchmarks/<name>.py imported as a module (registered in sys.modules while in use, for the
    dataclasses that look their module up)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gpu_sc_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def as_type(x, kind: str):
    """`x` (scipy CSR) in the storage `kind`."""
    if kind == "numpy":
        return x.toarray()
    if kind == "csr":
        return sp.csr_matrix(x)
    if kind == "csc":
        return sp.csc_matrix(x)
    if kind == "cupy":
        import cupy as cp

        return cp.asarray(x.toarray())
    if kind == "cupyx_csr":
        import cupyx.scipy.sparse as cpsp

        return cpsp.csr_matrix(sp.csr_matrix(x))
    raise ValueError(kind)


@pytest.fixture(params=CPU_TYPES + tuple(pytest.param(t, marks=pytest.mark.gpu) for t in GPU_TYPES))
def array_type(request):
    return request.param


@pytest.fixture(
    params=[
        pytest.param("cuda", marks=pytest.mark.gpu),
        pytest.param("emulated", marks=pytest.mark.skipif(CXX is None, reason="the kernel emulator needs g++")),
    ]
)
def device(request):
    """Where the device-array tests run: 'cuda' (CuPy on a GPU) or 'emulated' (the stand-in cupy
    of tests/cuda_emu: our kernels compiled for the CPU, device arrays that are NumPy arrays)."""
    if request.param == "cuda":
        yield "cuda"
        return
    with emulated_cupy():
        yield "emulated"


def emulation_rows(x, n: int = 147) -> np.ndarray:
    """The all-zero cell (if any), the first `n` cells and row 3 twice more: the emulator runs a
    launch's threads one after another, so it gets a slice with the awkward rows kept."""
    totals = np.asarray(x.sum(axis=1)).ravel()
    return np.r_[np.flatnonzero(totals == 0)[:1], np.arange(n), 3, 3]


def cells_for(device: str, adata: ad.AnnData, n: int = 600) -> ad.AnnData:
    """All cells on a GPU; under the emulator `n` of them (with the all-zero cell, no repeats)."""
    return adata if device == "cuda" else adata[np.unique(emulation_rows(adata.X, n))].copy()


@pytest.fixture(params=CPU_TYPES)
def cpu_type(request):
    return request.param


def _read(name: str) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(DATA / name)


_CACHE: dict[str, ad.AnnData] = {}


def _load(name: str) -> ad.AnnData:
    if name not in _CACHE:
        a = _read(name)
        a.var["mt"] = a.var_names.str.upper().str.startswith(("MT-", "RPL", "RPS"))
        _CACHE[name] = a
    return _CACHE[name].copy()


@pytest.fixture
def pbmc() -> ad.AnnData:
    """700 PBMCs x 765 genes, raw counts (float32 CSR)."""
    return _load("pbmc68k_reduced_counts.h5ad")


@pytest.fixture
def brain() -> ad.AnnData:
    """10,000 mouse brain cells x 1,000 genes; one all-zero cell and duplicate rows."""
    return _load("mouse_brain_10k_subset.h5ad")


@pytest.fixture(params=["pbmc", "brain"])
def counts(request) -> ad.AnnData:
    return request.getfixturevalue(request.param)


def to_host(x):
    """numpy / scipy view of any result (for comparisons)."""
    if hasattr(x, "get"):
        x = x.get()
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def assert_adata_equal(a: ad.AnnData, b: ad.AnnData) -> None:
    """Exact equality of shapes, names, obs/var, X (type, layout, dtype, values), layers, uns keys."""
    assert a.shape == b.shape
    assert a.obs_names.equals(b.obs_names) and a.var_names.equals(b.var_names)
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    for x, y in [(a.X, b.X), *((a.layers[k], b.layers[k]) for k in a.layers)]:
        assert type(x) is type(y)
        assert x.dtype == y.dtype
        if sp.issparse(x):
            assert x.format == y.format
            assert np.array_equal(x.indptr, y.indptr) and np.array_equal(x.indices, y.indices)
            assert np.array_equal(x.data, y.data, equal_nan=True)
        else:
            assert np.array_equal(x, y, equal_nan=True)
    assert set(a.layers) == set(b.layers) and set(a.uns) == set(b.uns) and set(a.obsm) == set(b.obsm)


# --- PIC-seq test data ---------------------------------------------------------------------------
PIC_T = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic", "CD4+/CD45RO+ Memory"]
PIC_DC = ["DC0", "DC1", "DC2"]


def t_dc_cells(pbmc: ad.AnnData) -> ad.AnnData:
    """The T cells and dendritic cells of the `pbmc` data with obs['grp']: the T-cell labels
    (PIC_T) and the DCs split into PIC_DC by k-means on their PCA — the reference groups of the
    PIC tests (population A: T cells, B: DC sub-clusters)."""
    import scanpy as sc
    from sklearn.cluster import KMeans

    a = pbmc[pbmc.obs["bulk_labels"].isin(PIC_T + ["Dendritic"])].copy()
    g = a.obs["bulk_labels"].astype(str).to_numpy().copy()
    d = g == "Dendritic"
    lg = a[d].copy()
    sc.pp.normalize_total(lg, target_sum=1e4)
    sc.pp.log1p(lg)
    sc.pp.pca(lg, n_comps=10)
    g[d] = [f"DC{k}" for k in KMeans(3, n_init=10, random_state=0).fit_predict(lg.obsm["X_pca"])]
    a.obs["grp"] = g
    return a


def t_dc_reference_and_pics(pbmc: ad.AnnData, n_pics: int) -> tuple[ad.AnnData, ad.AnnData]:
    """The T + DC cells of `t_dc_cells` split at random: 70 % the reference, and `n_pics`
    synthetic PICs drawn from the other 30 % (no PIC's source cell is in the reference)."""
    from gpu_sc.pic import simulate_pics

    a = t_dc_cells(pbmc)
    src = np.random.default_rng(0).random(a.n_obs) < 0.3
    pics = simulate_pics(a[src], groupby="grp", a=PIC_T, b=PIC_DC, n_pics=n_pics, seed=1)
    return a[~src].copy(), pics
