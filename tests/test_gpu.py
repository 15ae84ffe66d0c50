"""GPU equals CPU: every primitive and every step, float32/float64 values, int32/int64 indices,
CSR and dense. The primitives run twice: on a GPU (marked `gpu`, skipped without CuPy and a GPU)
and through the kernel emulator (tests/cuda_emu: the same kernels and wrappers on the CPU, on a
150-cell slice; skipped without g++). So do the steps, whole AnnData in and out (on a 600-cell
slice under the emulator, whose `cupyx.scipy.sparse` is scipy holding device arrays)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import assert_close, cells_for, emulation_rows, to_host

import gpu_sc as gsc
from gpu_sc import _ops
from gpu_sc._kernels import clipped_sums as k_clipped
from gpu_sc._kernels import col_reduce as k_col
from gpu_sc._kernels import group_sums as k_group
from gpu_sc._values import log1p_

LAYOUTS = [
    (v, i, dense)
    for v in (np.float32, np.float64)
    for i in (np.int32, np.int64)
    for dense in (False, True)
    if not (dense and i is np.int64)  # dense has no index arrays
]


def _parts_pair(x, value, index, dense):
    """The same matrix as CPU and device `Parts`, built from raw arrays so that the index dtype
    is exactly `index` (scipy and cupyx would shrink int64 indices that fit into int32)."""
    import cupy as cp

    x = sp.csr_matrix(x, dtype=value)
    if dense:
        d = x.toarray()
        return _ops.parts(d), _ops.parts(cp.asarray(d))
    arrays = (x.data, x.indices.astype(index), x.indptr.astype(index))
    cpu = _ops.Parts(*arrays, x.shape)
    gpu = _ops.Parts(*(cp.asarray(a) for a in arrays), x.shape)
    return cpu, gpu


def _emulation_slice(x):
    return sp.csr_matrix(x[emulation_rows(x)])


@pytest.fixture(params=LAYOUTS, ids=lambda p: f"{np.dtype(p[0])}-{np.dtype(p[1])}-{'dense' if p[2] else 'csr'}")
def pair(request, device, brain):
    x = brain.X if device == "cuda" else _emulation_slice(brain.X)
    return _parts_pair(x, *request.param)


@pytest.fixture
def small_grids(monkeypatch):
    """Few blocks and short dense chunks, so the grid-stride loops and the per-chunk atomics of
    the column kernels run several rounds."""
    for mod in (k_col, k_clipped):
        monkeypatch.setattr(mod, "_MAX_BLOCKS", 3)
        monkeypatch.setattr(mod, "_MIN_ROWS_PER_CHUNK", 16)


def _gpu(a):
    import cupy as cp

    return cp.asarray(a)


def test_device_parts_take_the_gpu_branch(pair):
    assert not _ops._layout.on_gpu(pair[0]) and _ops._layout.on_gpu(pair[1])


def test_row_sums(pair, brain):
    cpu, gpu = pair
    mask = brain.var["mt"].to_numpy() | (np.arange(brain.n_vars) % 3 == 0)
    for m in (None, mask):
        s_c, n_c = _ops.row_sums(cpu, col_mask=m)
        s_g, n_g = _ops.row_sums(gpu, col_mask=None if m is None else _gpu(m))
        assert_close(s_g, s_c, dtype=s_c.dtype)  # integer counts: exact sums; one rounding to the result dtype
        np.testing.assert_array_equal(to_host(n_g), n_c)


@pytest.mark.parametrize("grids", ["default", "small"])
def test_col_sums(pair, grids, request):
    if grids == "small":
        request.getfixturevalue("small_grids")
    cpu, gpu = pair
    s_c, n_c = _ops.col_sums(cpu)
    s_g, n_g = _ops.col_sums(gpu)
    assert_close(s_g, s_c, dtype=s_c.dtype)  # integer counts, any atomics order: exact; one rounding
    np.testing.assert_array_equal(to_host(n_g), n_c)


def test_col_mean_var(pair):
    cpu, gpu = pair
    for got, ref in zip(_ops.col_mean_var(gpu), _ops.col_mean_var(cpu), strict=True):
        # float64 sums over cells in another order, relative to the largest mean of squares (cancellation)
        assert_close(got, ref, dtype=np.float64, n_terms=cpu.shape[0], scale="max")


@pytest.mark.parametrize("grids", ["default", "small"])
def test_clipped_sums(pair, grids, request):
    if grids == "small":
        request.getfixturevalue("small_grids")
    cpu, gpu = pair
    clip = np.linspace(0.5, 6.0, cpu.shape[1])
    n = cpu.shape[0]
    for got, ref in zip(_ops.clipped_sums(gpu, _gpu(clip)), _ops.clipped_sums(cpu, clip), strict=True):
        # CSR adds each value by an atomic in no set order, and many values are the same clip
        # value, whose roundings repeat rather than cancel: the bound of a sum in any order, n
        # steps of float64 (sqrt(n) steps was exceeded 2.4-fold on an H200, 2026-12-04)
        assert_close(got, ref, dtype=np.float64, n_terms=n, ulps=math.sqrt(n))


@pytest.mark.parametrize("grids", ["default", "small"])
def test_group_sums(pair, grids, monkeypatch):
    """Every instantiation of the group kernels (the aggregate tests reach float32 CSR and dense
    only): rows in no group, groups in runs and interleaved, the CSR grid-stride loop run several
    rounds (2 blocks: 16 rows a round) and dense row chunks of 16 (a group's run flushed at each
    chunk's end); the dtype asked for (float32: regress_out's sums in scanpy's dtype)."""
    if grids == "small":
        monkeypatch.setattr(k_group, "_MAX_BLOCKS", 2)
        monkeypatch.setattr(k_group, "_MIN_ROWS_PER_CHUNK", 16)
    cpu, gpu = pair
    n = cpu.shape[0]
    codes = np.r_[np.repeat(np.arange(5), 20), np.arange(n - 100) % 4][:n].astype(np.int64)
    codes[::7] = -1
    for dtype in (np.float64, np.float32):
        want = _ops.group_sums(cpu, codes, 5, dtype=np.float64, squares=True, counts=True)
        got = _ops.group_sums(gpu, _gpu(codes), 5, dtype=dtype, squares=True, counts=True)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == dtype
            # integer counts: exact sums in any order, one rounding to the asked dtype
            np.testing.assert_array_equal(to_host(g), w.astype(dtype))


def _fractional(value, dense, shape=(40, 300), seed=5):
    """Device and host Parts of non-integer values (about half of them stored), whose float64 sums
    round: a float32 accumulator is off by far more than a reordered float64 sum."""
    import cupy as cp

    rng = np.random.default_rng(seed)
    d = rng.uniform(0.1, 7.0, shape) * (rng.random(shape) < 0.5)
    x = sp.csr_matrix(d.astype(value))
    if dense:
        h = x.toarray()
        return _ops.parts(h), _ops.parts(cp.asarray(h))
    return _parts_pair(x, value, np.int32, False)


@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
@pytest.mark.parametrize("value", [np.float32, np.float64], ids=["f32", "f64"])
def test_sums_of_fractional_values_accumulate_in_float64(device, value, dense):
    """Row, column, clipped and group sums (and sums of squares) are float64 accumulations on the
    device too: non-integer values (normalised or logged data) agree with the CPU within a
    reordered float64 sum, which a float32 partial sum anywhere (a warp's, a chunk's, a group
    run's) exceeds a millionfold. The count-valued tests sum integers, exact in float32 too."""
    cpu, gpu = _fractional(value, dense)
    n_rows, n_cols = cpu.shape
    close = {"dtype": np.float64, "n_terms": max(n_rows, n_cols)}
    assert_close(_ops.row_sums(gpu)[0], _ops.row_sums(cpu)[0], **close)
    for got, ref in zip(_ops.col_moments(gpu), _ops.col_moments(cpu), strict=True):
        assert_close(got, ref, **close)
    clip = np.full(n_cols, 5.0)
    for got, ref in zip(_ops.clipped_sums(gpu, _gpu(clip)), _ops.clipped_sums(cpu, clip), strict=True):
        assert_close(got, ref, **close)
    codes = np.arange(n_rows) // 10  # runs of 10 rows
    got = _ops.group_sums(gpu, _gpu(codes), 4, squares=True)
    ref = _ops.group_sums(cpu, codes, 4, squares=True)
    for g, r in zip(got[:2], ref[:2], strict=True):
        assert_close(g, r, **close)


def test_cancelling_and_negative_values_in_dense_columns(device):
    """Centred or scaled data: a column whose values cancel (sum 0.0 exactly) still has nonzero
    values, squares and clipped squares, and negative values count as nonzeros, on both layouts
    (a device chunk flushed its partial sums only where they were nonzero, or counted v > 0)."""
    import cupy as cp

    d = np.zeros((6, 5))
    d[:2, 0] = (1.0, -1.0)  # cancels
    d[:3, 1] = (-2.0, -0.5, -4.0)  # negative only
    d[2:5, 2] = (3.0, -1.0, -2.0)  # cancels over three
    d[5, 3] = 0.25
    ref_nnz = np.count_nonzero(d, axis=0)
    ref_sq = (d * d).sum(0)
    clip = np.full(5, 2.5)
    ref_clipped = np.minimum(d, clip)
    for value in (np.float32, np.float64):
        for dense in (False, True):
            x = d.astype(value)
            gpu = _ops.parts(cp.asarray(x)) if dense else _parts_pair(x, value, np.int32, False)[1]
            sums, nnz = _ops.col_sums(gpu)
            np.testing.assert_array_equal(to_host(nnz), ref_nnz)
            np.testing.assert_array_equal(to_host(sums), d.sum(0))
            np.testing.assert_array_equal(to_host(_ops.col_moments(gpu)[1]), ref_sq)
            s, q = _ops.clipped_sums(gpu, _gpu(clip))
            # CSR clips stored values only; dense every entry (zeros stay zeros under a positive clip)
            np.testing.assert_array_equal(to_host(s), ref_clipped.sum(0))
            np.testing.assert_array_equal(to_host(q), (ref_clipped**2).sum(0))


def test_column_kernels_on_fewer_values_than_a_block(device):
    """A matrix of fewer stored values than one block's threads (256) still gets one block: the
    CSR column kernels' grid is a ceiling (a floor launched no block: a CUDA launch error)."""
    x = sp.csr_matrix(np.array([[0, 2.0, 0, 1], [3, 0, 0, 0], [0, 0, 0, 5.0]], np.float32))
    cpu, gpu = _parts_pair(x, np.float32, np.int32, False)
    for got, ref in zip(_ops.col_sums(gpu), _ops.col_sums(cpu), strict=True):
        np.testing.assert_array_equal(to_host(got), ref)
    clip = np.full(4, 2.5)
    for got, ref in zip(_ops.clipped_sums(gpu, _gpu(clip)), _ops.clipped_sums(cpu, clip), strict=True):
        np.testing.assert_array_equal(to_host(got), ref)


def test_flag_cols_above_compares_in_float64(device):
    """A value is compared with its row's float64 limit as it is: 1.0 is above 1 - 1e-12 (a limit
    rounded to float32 first is 1.0, and 1.0 is not above it) and not above 1.0."""
    d = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]])
    limits = np.array([1.0 - 1e-12, 1.0])
    for value, index, dense in LAYOUTS:
        cpu, gpu = _parts_pair(d, value, index, dense)
        np.testing.assert_array_equal(_ops.flag_cols_above(cpu, limits), [True, False, False])
        np.testing.assert_array_equal(to_host(_ops.flag_cols_above(gpu, _gpu(limits))), [True, False, False])


def test_top_sums(pair):
    cpu, gpu = pair
    ns = [1, 7, 50, 100, 500]  # 500: more than some rows store
    ref = _ops.top_sums(cpu, ns)  # integer counts: exact sums; one rounding to the result dtype
    assert_close(_ops.top_sums(gpu, ns), ref, dtype=ref.dtype)


def test_top_sums_negative_zero(device):
    """A stored -0.0 passes the counts' v < 0 check; it must rank as 0, not (by its sign bit)
    above every positive value."""
    import cupy as cp

    d = np.array([[-0.0, 5, 3, 1, 7], [-0.0, 0, 2, 0, -0.0]])
    # -0.0 stored explicitly (scipy drops it when converting from dense, and toarray loses its sign)
    stored = sp.csr_matrix((np.array([-0.0, 5, 3, 1, 7, -0.0, 2, -0.0]), [0, 1, 2, 3, 4, 0, 2, 4], [0, 5, 8]),
                           shape=d.shape)  # fmt: skip
    ns = [1, 2, 4]
    expect = np.array([[7, 12, 16], [2, 2, 2]], np.float64)
    for value, index, dense in LAYOUTS:
        if dense:
            cpu, gpu = _ops.parts(d.astype(value)), _ops.parts(cp.asarray(d.astype(value)))
        else:
            cpu, gpu = _parts_pair(stored, value, index, dense)
        np.testing.assert_array_equal(_ops.top_sums(cpu, ns), expect)
        np.testing.assert_array_equal(to_host(_ops.top_sums(gpu, ns)), expect)


def test_top_sums_negative_values(device):
    """QC takes negative values (scaled data, as scanpy does): the kernel's key must order them
    below the positive ones and among themselves, as a full descending sort of the row does (the
    kernel once keyed |v|, so -3 ranked as 3: up to 32 points off on scaled pbmc68k)."""
    rng = np.random.default_rng(3)
    rows = [rng.normal(0, 2, 40), -rng.random(40) - 0.1, np.r_[np.full(20, -3.0), np.full(20, 3.0)],
            rng.integers(-4, 5, 40) + 0.5]  # fmt: skip
    d = np.array(rows)  # no zeros: every value is stored in either layout
    ns = [1, 3, 20, 21, 39]
    expect = np.array([[np.sort(r)[::-1][:n].sum() for n in ns] for r in rows])
    for value, index, dense in LAYOUTS:
        cpu, gpu = _parts_pair(d, value, index, dense)
        ref = expect if value is np.float64 else np.array([[np.sort(r.astype(np.float32))[::-1][:n].sum(dtype=np.float64)
                                                            for n in ns] for r in rows])  # fmt: skip
        np.testing.assert_allclose(_ops.top_sums(cpu, ns), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(to_host(_ops.top_sums(gpu, ns)), ref, rtol=1e-12, atol=1e-12)


def test_flag_cols_above(pair):
    cpu, gpu = pair
    totals = _ops.row_sums(cpu)[0]
    for frac in (0.01, 0.05, 0.2):
        np.testing.assert_array_equal(
            to_host(_ops.flag_cols_above(gpu, _gpu(frac * totals))),
            _ops.flag_cols_above(cpu, frac * totals),
        )


@pytest.mark.parametrize("divisor_dtype", [None, np.float64])
def test_divide_rows(pair, divisor_dtype):
    """Bit-identical on both devices; float64 divisors (normalize_total with a NumPy float64
    target_sum) divide float32 values in float64 and round once, as NumPy's x /= d[:, None]."""
    cpu, gpu = pair
    values = cpu.data.copy()
    cpu = cpu._replace(data=cpu.data.copy())
    divisors = np.linspace(0, 3.3, cpu.shape[0]).astype(divisor_dtype or cpu.data.dtype)  # first row: zero
    _ops.divide_rows(cpu, divisors)
    _ops.divide_rows(gpu, _gpu(divisors))
    np.testing.assert_array_equal(to_host(gpu.data), cpu.data)  # IEEE division: bit-identical
    if cpu.indptr is None:  # dense: NumPy's own in-place division, rows of zero divisor skipped
        want = values.reshape(cpu.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(want, divisors[:, None], out=want, where=divisors[:, None] != 0)
        np.testing.assert_array_equal(cpu.data.reshape(cpu.shape), want, strict=True)


def test_log1p(pair):
    cpu, gpu = pair
    cpu = cpu._replace(data=cpu.data.copy())
    for p in (cpu, gpu):
        log1p_(p.data, base=2)
    assert_close(gpu.data, cpu.data)  # the device's log1p and libm's: each within a step of the data's dtype


def test_value_issues(device):
    import cupy as cp

    from gpu_sc._values import value_issues

    v = np.array([1, -2, np.nan, 0, np.inf, -np.inf, -0.5], dtype=np.float32)
    assert value_issues(cp.asarray(v)) == value_issues(v) == (3, 2)


STEPS = [
    lambda a: gsc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=(10, 100), inplace=True),
    lambda a: gsc.pp.filter_cells(a, min_genes=50),
    lambda a: gsc.pp.filter_genes(a, min_counts=20),
    lambda a: gsc.pp.normalize_total(a, key_added="nf"),
    lambda a: gsc.pp.normalize_total(a, exclude_highly_expressed=True, target_sum=1e4),
    lambda a: (gsc.pp.normalize_total(a), gsc.pp.log1p(a)),
]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("step", range(len(STEPS)))
def test_steps_gpu_equals_cpu(device, brain, step, dense):
    brain = cells_for(device, brain)
    if dense:
        brain.X = brain.X.toarray()
    gpu = gsc.get.to_gpu(brain, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        STEPS[step](brain)
        STEPS[step](gpu)
    assert type(gpu.X).__module__.startswith(("cupy", "cupyx"))  # results stay on the device
    back = gsc.get.to_cpu(gpu, copy=True)
    assert back.obs_names.equals(brain.obs_names) and back.var_names.equals(brain.var_names)
    for frame, ref in ((back.obs, brain.obs), (back.var, brain.var)):
        assert list(frame.columns) == list(ref.columns)
        for col in ref.columns:
            assert frame[col].dtype == ref[col].dtype, col
            if pd.api.types.is_numeric_dtype(ref[col]):
                assert_close(frame[col], ref[col], err_msg=col)  # exact integer sums, a few elementwise ops
            else:
                assert frame[col].equals(ref[col]), col
    assert_close(back.X, brain.X)  # IEEE division of exact totals; log1p within a step per implementation


def test_round_trip(device, pbmc):
    pbmc.layers["counts"] = pbmc.X.copy()
    pbmc.obsm["dense"] = pbmc.X[:, :5].toarray()
    gpu = gsc.get.to_gpu(pbmc, copy=True)
    assert gsc.get.is_on_gpu(gpu) and not gsc.get.is_on_gpu(pbmc)
    back = gsc.get.to_cpu(gpu, copy=True)
    assert (back.X != pbmc.X).nnz == 0 and (back.layers["counts"] != pbmc.X).nnz == 0
    np.testing.assert_array_equal(back.obsm["dense"], pbmc.obsm["dense"])


def test_bad_counts_on_gpu_name_the_device(device, pbmc):
    x = pbmc.X.copy()
    x.data[3] = np.nan
    pbmc.X = x
    gsc.get.to_gpu(pbmc)
    with pytest.raises(ValueError, match="non-finite.*GPU"):
        gsc.pp.normalize_total(pbmc)


def test_to_cpu_brings_back_every_array(device, pbmc):
    """What GPU steps write (varm['PCs'], obsp graphs, varp) comes back with X, layers and obsm."""
    import cupy as cp

    from gpu_sc._backend import is_gpu

    n, g = pbmc.shape
    pbmc.obsm["X_pca"] = cp.asarray(np.ones((n, 3)))
    pbmc.varm["PCs"] = cp.asarray(np.ones((g, 3)))
    pbmc.obsp["distances"] = cp.asarray(np.eye(n))
    pbmc.varp["v"] = cp.asarray(np.eye(g))
    back = gsc.get.to_cpu(pbmc, copy=True)
    for m in (back.obsm, back.varm, back.obsp, back.varp):
        for k in m:
            assert not is_gpu(m[k]), k
    assert is_gpu(pbmc.varm["PCs"])  # copy=True leaves the original where it was


def test_views_and_dask_blocks_of_device_arrays_are_on_the_device(device, pbmc):
    """anndata's views of device arrays are anndata classes that subclass CuPy's (CupyArrayView,
    CupySparseCSRView): they are on the GPU (steps once took the host path for a view of a GPU
    AnnData and failed; to_cpu left its X on the device). A Dask X of device blocks is too."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    from gpu_sc._backend import is_gpu, is_sparse, xp_of

    dense_view = type("CupyArrayView", (cp.ndarray,), {"__module__": "anndata._core.views"})
    sparse_view = type("CupySparseCSRView", (cpsp.csr_matrix,), {"__module__": "anndata._core.views"})
    v = cp.zeros((2, 3)).view(dense_view)
    s = sparse_view(cpsp.csr_matrix(sp.eye(3, format="csr")))
    assert is_gpu(v) and not is_sparse(v) and xp_of(v) is cp
    assert is_gpu(s) and is_sparse(s) and s.format == "csr"
    da = pytest.importorskip("dask.array")
    lazy = pbmc[:100].copy()
    lazy.X = da.from_array(lazy.X, chunks=(50, -1), asarray=False)
    gsc.get.to_gpu(lazy)
    assert gsc.get.is_on_gpu(lazy)


def test_integer_sparse_counts_get_a_float_dtype_on_the_gpu():
    """cupyx sparse holds no integers: float32 where every value is exact in it, else float64."""
    from gpu_sc.get import sparse_float_dtype

    small = sp.random(20, 10, density=0.3, format="csr", random_state=0, dtype=np.float64)
    counts = sp.csr_matrix(np.round(small * 100).astype(np.int32))
    assert sparse_float_dtype(counts) == np.float32
    big = counts.astype(np.int64)
    big.data[0] = 2**24
    assert sparse_float_dtype(big) == np.float64
    big.data[0] = -(2**24)
    assert sparse_float_dtype(big) == np.float64
    assert sparse_float_dtype(sp.csr_matrix((3, 4), dtype=np.int64)) == np.float32
    assert sparse_float_dtype(small.astype(np.float32)) == np.float32
    assert sparse_float_dtype(counts.astype(np.uint16)) == np.float32  # unsigned counts too (h5ad's uint)


def test_to_gpu_takes_integer_counts(device, pbmc):
    """Integer counts reach the GPU as float32 (exact) and give the CPU's normalisation."""
    pbmc.X = pbmc.X.astype(np.int32)
    gpu = gsc.get.to_gpu(pbmc, copy=True)
    assert gpu.X.dtype == np.float32
    np.testing.assert_array_equal(gpu.X.get().toarray(), pbmc.X.toarray())
    gsc.pp.normalize_total(gpu, target_sum=1e4)
    gsc.pp.normalize_total(pbmc, target_sum=1e4)
    assert_close(gpu.X, pbmc.X)  # exact totals; the division and the target's product each round once


def test_launchers_refuse_what_a_kernel_would_read_past(device):
    """Per-row / per-column vectors of the wrong length and non-contiguous index arrays raise
    before a launch (on a GPU the kernel would read out of bounds silently)."""
    import cupy as cp

    from gpu_sc._kernels import row_reduce, scale

    x = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(3, 4))
    data, indices, indptr = (cp.asarray(a) for a in (x.data, x.indices, x.indptr))
    with pytest.raises(ValueError, match=r"col_mask .* must hold 4 values"):
        row_reduce.row_sums(data, indices, indptr, x.shape, col_mask=np.ones(3, bool))
    with pytest.raises(ValueError, match=r"limits .* must hold 3 values"):
        row_reduce.flag_cols_above(data, indices, indptr, x.shape, np.ones(2))
    with pytest.raises(ValueError, match=r"divisors .* must hold 3 values"):
        scale.divide_rows(data, indptr, x.shape, np.ones(4))
    with pytest.raises(ValueError, match="C-contiguous CSR index arrays"):
        row_reduce.row_sums(data, cp.asarray(np.repeat(x.indices, 2))[::2], indptr, x.shape)
    np.testing.assert_array_equal(to_host(data), x.data)  # nothing was launched
