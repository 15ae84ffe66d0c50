"""Plain helpers the test modules import (`from _helpers import ...`): tolerances derived from the
arithmetic, array types, the bundled data, the PIC-seq test data. Fixtures and hooks stay in
conftest.py, which imports what it needs from here; nothing imports from conftest."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

DATA = Path(__file__).resolve().parents[1] / "gpu_sc" / "_data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the checkout, if present

CPU_TYPES = ("numpy", "csr", "csc")
GPU_TYPES = ("cupy", "cupyx_csr")


# --- tolerances ----------------------------------------------------------------------------------
# Two results are compared in one of two ways:
#   assert_same   bit-identity: the same code runs the same arithmetic in the same order (a Dask
#                 block loop that visits the same values in the same order, a re-run, a copy).
#   assert_close  a bound derived from the precision of the arithmetic and the length of the
#                 reductions in it: summing n terms in another order (threads, BLAS blocking, Dask
#                 block boundaries, a GPU's tree reduction, scanpy's own code) moves the result by
#                 about sqrt(n) rounding steps of the accumulator (rounding errors add up as a random
#                 walk; Higham & Mary, SIAM J. Sci. Comput. 2019), relative to the magnitude of the
#                 terms, and a result stored in a narrower dtype may land one step of it either side.

#: rounding steps per sqrt(term) allowed between two summation orders: the probabilistic bound's
#: constant (a tail probability far below 1e-9 per element at 4; worst-case bounds grow like n, not
#: sqrt(n), and are never approached by sums of data)
ULPS = 4


#: the block Krylov PCA solver's stopping rule (gpu_sc.preprocessing._pca): each variance within
#: 1e-5 (relative) of an exact eigenvalue, each separated component within an angle of sin 3e-3
KRYLOV_VAR = 1e-5
KRYLOV_SIN = 3e-3

#: UMAP connectivities: smooth_knn_dist stops its bisection within 1e-5 of the target membership
#: sum (umap's SMOOTH_K_TOLERANCE, gpu_sc._ops.connectivities._TOL); memberships move together, so
#: two such results differ by up to 2e-5 per directed edge, and the fuzzy union a + b - ab adds
#: the two directions' differences: 4e-5
UMAP_CONN = 4 * 1e-5


#: seconds a test waits for a subprocess (a benchmark script, the CLI): a guard against a hang,
#: not a speed test. A loaded 2-core machine (a fresh-clone run beside other work) took over 120 s
#: for a pic_validate.py smoke run that takes 20 s alone.
SUBPROCESS_TIMEOUT = 1800


def eps(dtype) -> float:
    """One rounding step (machine epsilon) of a floating dtype; integer and bool arithmetic is exact."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.inexact) else 0.0


def reorder_tol(dtype, n_terms: int = 1, *, ulps: float = ULPS, out=None) -> float:
    """Relative difference two evaluations of the same arithmetic in `dtype` may show when the
    order of its sums of `n_terms` terms differs: `ulps` steps of `dtype` times sqrt(n_terms), plus
    one step of `out` when the result is rounded to that (narrower) dtype."""
    tol = ulps * eps(dtype) * math.sqrt(max(int(n_terms), 1))
    return tol + (eps(out) if out is not None else 0.0)


def _coarsest(*arrays):
    """The least precise floating dtype among `arrays` (float64 when none is floating)."""
    dts = [np.dtype(a.dtype) for a in arrays if np.issubdtype(getattr(a, "dtype", np.dtype(object)), np.floating)]
    return max(dts, key=eps) if dts else np.dtype(np.float64)


def assert_close(got, ref, *, dtype=None, n_terms: int = 1, ulps: float = ULPS, out=None, scale=None,
                 err_msg: str = "") -> None:  # fmt: skip
    """|got - ref| <= tol * (|ref| + scale) elementwise, tol = reorder_tol(dtype, n_terms, ulps, out).

    dtype: the precision the compared arithmetic runs in (default: the coarser floating dtype of
    got and ref). scale: the magnitude rounding errors are relative to where it is not each
    element's own, as in sums whose terms cancel (a centred projection, a variance): a number,
    "max" for max|ref|, or an array broadcasting against ref (dense comparison). Accepts NumPy, CuPy, SciPy/CuPy sparse, pandas Series and DataFrames
    (same index and columns; non-float columns equal; each float column rounded once more to its
    own dtype when `out` is not given)."""
    if isinstance(ref, pd.DataFrame):
        assert isinstance(got, pd.DataFrame) and got.columns.equals(ref.columns) and got.index.equals(ref.index)
        for col in ref.columns:
            g, r = got[col], ref[col]
            if np.issubdtype(r.dtype, np.floating) or np.issubdtype(g.dtype, np.floating):
                assert_close(g, r, dtype=dtype, n_terms=n_terms, ulps=ulps, out=out or r.dtype, scale=scale,
                             err_msg=f"{err_msg} {col}")  # fmt: skip
            else:
                pd.testing.assert_series_equal(g, r, obj=f"{err_msg} {col}")
        return
    got, ref = _host(got), _host(ref)
    tol = reorder_tol(dtype if dtype is not None else _coarsest(got, ref), n_terms, ulps=ulps, out=out)
    if isinstance(scale, str):
        assert scale == "max", scale
        finite = abs(ref.data if sp.issparse(ref) else ref)
        finite = finite[np.isfinite(finite)]
        scale = float(finite.max()) if finite.size else 0.0
    msg = f"{err_msg} (bound: {ulps} steps of {dtype or _coarsest(got, ref)} x sqrt({n_terms})" + (
        f" + 1 step of {np.dtype(out)}" if out is not None else "") + f", scale {np.max(scale) if scale is not None else None}: rtol {tol:.3g})"
    if np.ndim(scale):  # elementwise magnitudes
        got, ref = (x.toarray() if sp.issparse(x) else x for x in (got, ref))
        err, bound = np.abs(got.astype(np.float64) - ref), tol * (np.abs(ref.astype(np.float64)) + scale)
        bad = ~(err <= bound) & ~(np.isnan(got) & np.isnan(ref))
        assert not bad.any(), f"{bad.sum()} of {bad.size} differ, worst {np.max(err[bad] / bound[bad]):.3g} x the bound; {msg}"
        return
    atol = tol * (scale or 0.0)
    if sp.issparse(got) or sp.issparse(ref):
        got, ref = sp.csr_matrix(got), sp.csr_matrix(ref)
        assert got.shape == ref.shape, (got.shape, ref.shape)
        d = abs(got - ref).tocoo()
        d.eliminate_zeros()
        if not d.nnz:
            return
        at = np.abs(np.asarray(ref[d.row, d.col]).ravel())
        bad = d.data > atol + tol * at
        assert not bad.any(), f"{bad.sum()} of {ref.nnz} differ by up to {d.data.max():.3g}; {msg}"
        return
    np.testing.assert_allclose(got, ref, rtol=tol, atol=atol, err_msg=msg)


def assert_same(got, ref, err_msg: str = "") -> None:
    """Bit-identity: the same dtype and the same values (NaN where ref has NaN), for results of the
    same arithmetic in the same order."""
    got, ref = _host(got), _host(ref)
    if sp.issparse(got) or sp.issparse(ref):
        got, ref = sp.csr_matrix(got), sp.csr_matrix(ref)
        got.sort_indices(), ref.sort_indices()
        assert got.dtype == ref.dtype, (got.dtype, ref.dtype, err_msg)
        assert np.array_equal(got.indptr, ref.indptr) and np.array_equal(got.indices, ref.indices), err_msg
        got, ref = got.data, ref.data
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype, err_msg)
    np.testing.assert_array_equal(got, ref, err_msg=err_msg, strict=True)


def _host(x):
    """NumPy (or SciPy sparse) view of a CuPy / pandas / NumPy value, for the comparisons."""
    if isinstance(x, (pd.Series, pd.Index)):
        return x.to_numpy()
    if hasattr(x, "get") and not isinstance(x, (dict, np.ndarray)):
        x = x.get()
    return x if sp.issparse(x) else np.asarray(x)


# --- subprocesses and benchmark scripts ----------------------------------------------------------
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


# --- array types ---------------------------------------------------------------------------------
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


def counted_dask(x: sp.csr_matrix, rows: int = 300):
    """`x` as a Dask array of `rows`-row CSR blocks made on demand, and the list that gets each
    block's number every time it is made: how many passes a step makes over a lazily read
    matrix."""
    import dask
    import dask.array as da

    made = []

    def block(i):
        made.append(i)
        return x[i * rows : (i + 1) * rows]

    meta = sp.csr_matrix((0, 0), dtype=x.dtype)
    lazy = da.concatenate([da.from_delayed(dask.delayed(block)(i), shape=(min(rows, x.shape[0] - s), x.shape[1]),
                                           dtype=x.dtype, meta=meta)
                           for i, s in enumerate(range(0, x.shape[0], rows))])  # fmt: skip
    return lazy, made


def emulation_rows(x, n: int = 147) -> np.ndarray:
    """The all-zero cell (if any), the first `n` cells and row 3 twice more: the emulator runs a
    launch's threads one after another, so it gets a slice with the awkward rows kept."""
    totals = np.asarray(x.sum(axis=1)).ravel()
    return np.r_[np.flatnonzero(totals == 0)[:1], np.arange(n), 3, 3]


def cells_for(device: str, adata: ad.AnnData, n: int = 600) -> ad.AnnData:
    """All cells on a GPU; under the emulator `n` of them (with the all-zero cell, no repeats)."""
    return adata if device == "cuda" else adata[np.unique(emulation_rows(adata.X, n))].copy()


def to_host(x):
    """numpy / scipy view of any result (for comparisons)."""
    if hasattr(x, "get"):
        x = x.get()
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def assert_adata_equal(a: ad.AnnData, b: ad.AnnData) -> None:
    """Exact equality of shapes, names, obs/var, X (type, layout, dtype, values), layers,
    obsm/varm/obsp/varp and uns (keys and values, nested)."""
    assert a.shape == b.shape
    assert a.obs_names.equals(b.obs_names) and a.var_names.equals(b.var_names)
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    for x, y in [(a.X, b.X), *((a.layers[k], b.layers[k]) for k in a.layers)]:
        _assert_matrix_equal(x, y)
    assert set(a.layers) == set(b.layers)
    for name in ("obsm", "varm", "obsp", "varp"):
        m, n = getattr(a, name), getattr(b, name)
        assert set(m) == set(n), name
        for k in m:
            _assert_matrix_equal(m[k], n[k])
    _assert_nested_equal(dict(a.uns), dict(b.uns))


def _assert_matrix_equal(x, y) -> None:
    assert type(x) is type(y)
    if isinstance(x, pd.DataFrame):
        pd.testing.assert_frame_equal(x, y)
        return
    assert x.dtype == y.dtype
    if sp.issparse(x):
        assert x.format == y.format
        assert np.array_equal(x.indptr, y.indptr) and np.array_equal(x.indices, y.indices)
        assert np.array_equal(x.data, y.data, equal_nan=True)
    else:
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")


def _assert_nested_equal(x, y, where: str = "uns") -> None:
    """uns-like values equal: dicts key by key, frames, arrays (NaN equal), scalars."""
    assert type(x) is type(y), where
    if isinstance(x, dict):
        assert set(x) == set(y), where
        for k in x:
            _assert_nested_equal(x[k], y[k], f"{where}[{k!r}]")
    elif isinstance(x, pd.DataFrame | pd.Series):
        (pd.testing.assert_frame_equal if isinstance(x, pd.DataFrame) else pd.testing.assert_series_equal)(x, y)
    elif isinstance(x, np.ndarray) or sp.issparse(x):
        _assert_matrix_equal(x, y)
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_nested_equal(u, v, f"{where}[{i}]")
    else:
        assert x == y or (x != x and y != y), where  # (NaN equals NaN)


# --- bundled data --------------------------------------------------------------------------------
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
