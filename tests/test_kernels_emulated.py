"""CUDA kernels run on the CPU by the emulator in tests/cuda_emu (the real `.cu` sources, launched
by gpu_sc's own wrappers): the PIC kernels bit for bit against the CPU engine, and the
emulator's own checks of what a GPU would not report: argument types against the kernel's
parameters, launch limits, reads and writes outside each array, writes to const inputs,
divergent warp shuffles.

The tests that take the `device` fixture (every GPU-equals-CPU test: primitives, whole steps with
AnnData in and out, Dask blocks, PCA, neighbours, the PIC engine and deconvolution) run on a GPU
and through the emulator, whose `cupy` and `cupyx.scipy.sparse` stand-ins keep CuPy's rules
(checked at the end of this file). What only a GPU can show (the device compiler's code, races,
cuBLAS, speed) stays in the GPU-marked tests; these run wherever g++ is."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import CXX, KernelError, RawModule, emulated_cupy
from test_pic_loglik import EPS, _random

from gpu_sc import _ops

pytestmark = pytest.mark.skipif(CXX is None, reason="the kernel emulator needs g++")


@pytest.fixture
def cp():
    with emulated_cupy() as module:
        yield module


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


# --------------------------------------------------------------------------- PIC pair engine
@pytest.mark.parametrize("prof", [np.float32, np.float64], ids=["p32", "p64"])
@pytest.mark.parametrize("index", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("value", [np.float32, np.float64], ids=["v32", "v64"])
def test_pic_kernels_equal_the_engine_bit_for_bit(cp, value, index, prof):
    """Both pic_loglik kernels (per-pair alpha, fixed alpha) give the numba engine's LL and alpha
    bit for bit, every pair, a chunk of rows launched as a slice of indptr."""
    from gpu_sc._ops.pic_loglik import _gpu_chunk, pic_pair_loglik

    m, pa, pb = _random(seed=3, n=30, genes=80, ka=5, kb=4)
    pa, pb = pa.astype(prof), pb.astype(prof)
    arrays = (m.data.astype(value), m.indices.astype(index), m.indptr.astype(index))
    cpu = _ops.Parts(*arrays, m.shape)
    dev = _ops.Parts(*(cp.asarray(a) for a in arrays), m.shape)
    alpha = np.random.default_rng(1).random(m.shape[0])
    for (r0, r1), n_iter in (((0, 30), 60), ((7, 19), 60), ((0, 30), 7)):  # 7: the kernel takes n_iter given
        for al in (None, alpha):
            ll_c, al_c = pic_pair_loglik(cpu, r0, r1, pa, pb, EPS, al, n_iter)
            ll_d, al_d = _gpu_chunk(dev, r0, r1, cp.asarray(pa), cp.asarray(pb), EPS, al, n_iter)
            np.testing.assert_array_equal(_host(ll_d).view(np.int64), ll_c.view(np.int64))
            if al is None:
                np.testing.assert_array_equal(_host(al_d).view(np.int64), al_c.view(np.int64))


# --------------------------------------------------------------------------- kNN selection
def _merge_reference(dots, sq_rows, sq_cols, row_offset, col_offset, best_d, best_i):
    """knn_select's rule in NumPy: each row's squared distances (own column -inf), visited in
    column order, enter its sorted list when strictly below its k-th best; NaN never enters."""
    d = (sq_rows[:, None] + sq_cols[None, :]) - dots.dtype.type(2) * dots
    best_d, best_i = best_d.copy(), best_i.copy()
    for r in range(d.shape[0]):
        own = row_offset + r - col_offset
        if 0 <= own < d.shape[1]:
            d[r, own] = -np.inf
        for c in range(d.shape[1]):
            if d[r, c] < best_d[r, -1]:
                pos = np.searchsorted(best_d[r], d[r, c], side="right")  # after equal ones
                best_d[r, pos + 1:], best_i[r, pos + 1:] = best_d[r, pos:-1], best_i[r, pos:-1]
                best_d[r, pos], best_i[r, pos] = d[r, c], col_offset + c
    return best_d, best_i


@pytest.mark.parametrize("index", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("value", [np.float32, np.float64], ids=["v32", "v64"])
def test_knn_select_merges_like_the_reference(cp, value, index):
    """Two column tiles (one crossing the query rows' own columns; widths not a multiple of
    32) merged into lists of k = 1 and 7: ties by smaller index, NaN skipped, self first."""
    from gpu_sc._kernels.knn_select import knn_select

    rng = np.random.default_rng(0)
    n_rows, k_max = 45, 7  # not a multiple of the 8 rows a block holds
    y = rng.integers(0, 3, size=(150, 4)).astype(value)  # few distinct rows: many exact ties
    sq = (y * y).sum(axis=1)
    rows = slice(60, 60 + n_rows)
    for k in (1, k_max):
        best_d = np.full((n_rows, k), np.inf, value)
        best_i = np.full((n_rows, k), -1, index)
        dev_d, dev_i = cp.asarray(best_d), cp.asarray(best_i)
        for c0, c1 in ((0, 50), (50, 150)):
            dots = y[rows] @ y[c0:c1].T
            dots[3, 10] = np.nan
            best_d, best_i = _merge_reference(dots, sq[rows], sq[c0:c1], 60, c0, best_d, best_i)
            knn_select(cp.asarray(dots), cp.asarray(sq[rows]), cp.asarray(sq[c0:c1]), 60, c0,
                       dev_d, dev_i)
            np.testing.assert_array_equal(_host(dev_i), best_i)
            np.testing.assert_array_equal(_host(dev_d), best_d)
        assert (best_i[:, 0] == np.arange(60, 60 + n_rows)).all()  # each row itself first


# --------------------------------------------------------------------------- the emulator itself
_PROBES = r"""
__global__ void read_at(const float* x, long long i, float* out) { out[0] = x[i]; }
__global__ void poke_input(const float* x) { ((float*)x)[0] = 1.0f; }
__global__ void warp_total(const double* x, double* out) {
    double v = x[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}
__global__ void half_warp_shuffle(double* out) {
    double v = threadIdx.x;
    if (threadIdx.x % 2) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}
__global__ void rotate(double* buf, double* out) {
    buf[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}
__global__ void lone_barrier(double* out) {
    if (threadIdx.x == 0) __syncthreads();
    out[threadIdx.x] = 1.0;
}
"""


@pytest.fixture(scope="module")
def probes():
    names = ["read_at", "poke_input", "warp_total", "half_warp_shuffle", "rotate", "lone_barrier"]
    return RawModule(code=_PROBES, name_expressions=names)


def test_emulator_runs_shuffles_and_barriers(probes):
    x = np.arange(64, dtype=np.float64)
    out = np.zeros(64)
    probes.get_function("warp_total")((1,), (64,), (x, out))
    np.testing.assert_array_equal(out, np.r_[np.full(32, x[:32].sum()), np.full(32, x[32:].sum())])
    buf, out = np.zeros(96), np.zeros(96)
    probes.get_function("rotate")((1,), (96,), (buf, out))
    np.testing.assert_array_equal(out, np.roll(np.arange(96.0), -1))


def test_emulator_stops_bad_launches(probes):
    x, out = np.arange(10, dtype=np.float32), np.zeros(1, np.float32)
    read = probes.get_function("read_at")
    read((1,), (1,), (x, np.int64(9), out))
    assert out[0] == 9
    with pytest.raises(KernelError, match="past the end of argument 0"):
        read((1,), (1,), (x, np.int64(10), out))
    with pytest.raises(KernelError, match="before argument 0"):
        read((1,), (1,), (x, np.int64(-1024), out))
    with pytest.raises(KernelError, match="const input"):
        probes.get_function("poke_input")((1,), (1,), (x,))
    assert x[0] == 0  # the caller's array is untouched
    with pytest.raises(KernelError, match="float64, the kernel reads float32"):
        read((1,), (1,), (x.astype(np.float64), np.int64(0), out))
    with pytest.raises(KernelError, match="int32, the kernel takes int64"):
        read((1,), (1,), (x, np.int32(0), out))
    with pytest.raises(KernelError, match="NumPy scalar"):
        read((1,), (1,), (x, 0, out))
    with pytest.raises(KernelError, match="not C-contiguous"):
        read((1,), (1,), (np.arange(20, dtype=np.float32)[::2], np.int64(0), out))
    with pytest.raises(KernelError, match="grid"):
        read((1, 70_000), (1,), (x, np.int64(0), out))
    with pytest.raises(KernelError, match="divergent warp shuffle"):
        probes.get_function("half_warp_shuffle")((1,), (32,), (np.zeros(32),))
    with pytest.raises(KernelError, match="__syncthreads"):
        probes.get_function("lone_barrier")((1,), (64,), (np.zeros(64),))


# --------------------------------------------------------------------------- stand-in cupy / cupyx
def test_stand_in_keeps_cupys_rules(cp):
    """What CuPy and cupyx refuse, the stand-ins refuse too, so a step that runs through the
    emulator does not run only because NumPy and scipy are more lenient."""
    import scipy.sparse as sp

    import cupyx.scipy.sparse as cpsp

    host = sp.random(6, 5, density=0.5, format="csr", random_state=0)
    x = cpsp.csr_matrix(host)
    assert type(x).__module__.startswith("cupyx.scipy.sparse") and isinstance(x.data, cp.ndarray)
    assert isinstance(x, cpsp.spmatrix) and cpsp.issparse(x) and not cpsp.issparse(host)
    back = x.get()
    assert type(back) is sp.csr_matrix and type(back.data) is np.ndarray and (back != host).nnz == 0
    total = x.sum(axis=1)  # cupyx: a 2-D device array, never np.matrix
    assert isinstance(total, cp.ndarray) and not isinstance(total, np.matrix) and total.shape == (6, 1)
    assert isinstance(x.T.tocsr(), cpsp.csr_matrix) and isinstance(x[[1, 3]], cpsp.csr_matrix)
    assert isinstance(x @ cp.ones(5), cp.ndarray) and isinstance(x.toarray(), cp.ndarray)
    with pytest.raises(ValueError, match="float32, float64"):
        cpsp.csr_matrix(host.astype(np.int32))  # cupyx sparse holds no integers
    with pytest.raises(ValueError, match="cupy arrays"):
        cpsp.csr_matrix((host.data, host.indices, host.indptr), shape=host.shape)
    with pytest.raises(ValueError, match="initializer"):
        cpsp.csr_matrix(host.toarray())
    with pytest.raises(TypeError, match="host"):
        x @ np.ones(5)
    with pytest.raises(TypeError, match="host"):
        cp.ones(5) + np.ones(5)
    assert float((cp.ones(5) + 1.0).sum()) == 10.0  # scalars mix freely
    with pytest.raises(AttributeError, match="CuPy lacks"):
        cp.insert  # noqa: B018  (NumPy has it, CuPy does not)
    assert isinstance(cp.linalg.norm(cp.ones(3)), cp.ndarray | float | np.floating)
    in_gpu_sc = {"__name__": "gpu_sc.any_module", "np": np, "x": cp.ones(3)}
    with pytest.raises(TypeError, match="implicit conversion"):
        exec("np.asarray(x)", in_gpu_sc)  # CuPy refuses; gpu_sc must call .get()
    assert type(np.asarray(cp.ones(3))) is np.ndarray  # tests and libraries may
