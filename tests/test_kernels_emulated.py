"""Every CUDA kernel, run on the CPU by the emulator in tests/cuda_emu: the real `.cu` sources,
launched by gpu_sc's own wrappers from the GPU branches of `_ops`, the kNN search and the PIC
pair engine, compared with the CPU path on real data. The emulator also checks what a GPU
would not report: argument types against the kernel's parameters, launch limits, reads and
writes outside each array, writes to const inputs, divergent warp shuffles.

What only a GPU can show (the device compiler's code, cuBLAS, speed) stays in the GPU-marked
tests; these run wherever g++ is."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cuda_emu import CXX, KernelError, RawModule, emulated_cupy
from test_pic_loglik import EPS, FIELDS, _random, real  # noqa: F401  (real: fixture)

from gpu_sc import _ops
from gpu_sc._kernels import clipped_sums as k_clipped
from gpu_sc._kernels import col_reduce as k_col

pytestmark = pytest.mark.skipif(CXX is None, reason="the kernel emulator needs g++")

LAYOUTS = [
    (v, i, dense)
    for v in (np.float32, np.float64)
    for i in (np.int32, np.int64)
    for dense in (False, True)
    if not (dense and i is np.int64)
]


@pytest.fixture
def cp():
    with emulated_cupy() as module:
        yield module


@pytest.fixture
def x(brain):
    """150 brain cells (float32 counts CSR) with the all-zero cell and two duplicated rows."""
    totals = np.asarray(brain.X.sum(axis=1)).ravel()
    rows = np.r_[np.flatnonzero(totals == 0)[:1], np.arange(147), 3, 3]
    return sp.csr_matrix(brain.X[rows])


@pytest.fixture(params=LAYOUTS, ids=lambda p: f"{np.dtype(p[0])}-{np.dtype(p[1])}-{'dense' if p[2] else 'csr'}")
def pair(request, x, cp):
    """The same matrix as CPU `Parts` and as emulated-device `Parts` of exactly these dtypes."""
    value, index, dense = request.param
    m = sp.csr_matrix(x, dtype=value)
    if dense:
        d = m.toarray()
        return _ops.parts(d), _ops.parts(cp.asarray(d))
    arrays = (m.data, m.indices.astype(index), m.indptr.astype(index))
    return _ops.Parts(*arrays, m.shape), _ops.Parts(*(cp.asarray(a) for a in arrays), m.shape)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_device_parts_take_the_gpu_branch(pair):
    assert not _ops._layout.on_gpu(pair[0]) and _ops._layout.on_gpu(pair[1])


def test_row_sums(pair, brain):
    cpu, dev = pair
    mask = brain.var["mt"].to_numpy() | (np.arange(brain.n_vars) % 3 == 0)
    for m in (None, mask):
        s_c, n_c = _ops.row_sums(cpu, col_mask=m)
        s_d, n_d = _ops.row_sums(dev, col_mask=m)
        np.testing.assert_allclose(_host(s_d), s_c, rtol=1e-12)
        np.testing.assert_array_equal(_host(n_d), n_c)


@pytest.fixture
def small_grids(monkeypatch):
    """Few blocks and short dense chunks, so the grid-stride loops and the per-chunk atomics
    of the column kernels run several rounds on test-sized data."""
    for mod in (k_col, k_clipped):
        monkeypatch.setattr(mod, "_MAX_BLOCKS", 3)
        monkeypatch.setattr(mod, "_MIN_ROWS_PER_CHUNK", 16)


def test_col_sums_and_mean_var(pair, small_grids):
    cpu, dev = pair
    for got, ref in zip(_ops.col_sums(dev), _ops.col_sums(cpu), strict=True):
        np.testing.assert_allclose(_host(got), ref, rtol=1e-12)
    for got, ref in zip(_ops.col_mean_var(dev), _ops.col_mean_var(cpu), strict=True):
        np.testing.assert_allclose(_host(got), ref, rtol=1e-10, atol=1e-12)


def test_clipped_sums(pair, small_grids):
    cpu, dev = pair
    clip = np.linspace(0.5, 6.0, cpu.shape[1])
    for got, ref in zip(_ops.clipped_sums(dev, clip), _ops.clipped_sums(cpu, clip), strict=True):
        np.testing.assert_allclose(_host(got), ref, rtol=1e-12)


def test_top_sums(pair):
    cpu, dev = pair
    ns = [1, 7, 50, 100, 500]  # 500: more than any row stores
    np.testing.assert_allclose(_host(_ops.top_sums(dev, ns)), _ops.top_sums(cpu, ns), rtol=1e-12)


def test_flag_cols_above(pair):
    cpu, dev = pair
    totals = _ops.row_sums(cpu)[0]
    for frac in (0.01, 0.05, 0.2):
        np.testing.assert_array_equal(
            _host(_ops.flag_cols_above(dev, frac * totals)), _ops.flag_cols_above(cpu, frac * totals)
        )


def test_divide_rows(pair):
    cpu, dev = pair
    cpu = cpu._replace(data=cpu.data.copy())
    divisors = np.linspace(0, 3, cpu.shape[0]).astype(cpu.data.dtype)  # row 0: zero divisor
    _ops.divide_rows(cpu, divisors)
    _ops.divide_rows(dev, divisors)
    np.testing.assert_array_equal(_host(dev.data), cpu.data)  # IEEE division: bit-identical


# --------------------------------------------------------------------------- kNN
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_tiles_and_selection(cp, pbmc, metric):
    """The GPU search (float32 tiles, knn_select per tile, float64 re-rank) gives the CPU's
    exact neighbours; a small tile budget makes it cross row blocks and column tiles."""
    from gpu_sc._ops.knn import _knn_gpu, knn

    rng = np.random.default_rng(0)
    x = np.log1p(np.asarray(pbmc.X[:, :40].todense(), dtype=np.float64))
    x = np.vstack([x, x[:5], np.zeros((2, x.shape[1]))])  # duplicates and zero rows
    x = np.vstack([x, x[rng.integers(0, len(x), 1400)] + rng.normal(0, 0.01, (1400, x.shape[1]))])
    ind_c, dist_c = knn(x, 15, metric=metric)
    ind_d, dist_d = _knn_gpu(cp.asarray(x), 15, metric, 2**16)
    np.testing.assert_allclose(_host(dist_d), dist_c, rtol=1e-12, atol=1e-12)
    # a zero row is at cosine distance 1 from every other row: which tie wins is arbitrary
    ties = (x == 0).all(axis=1) if metric == "cosine" else np.zeros(len(x), bool)
    np.testing.assert_array_equal(_host(ind_d)[~ties], ind_c[~ties])


# --------------------------------------------------------------------------- PIC pair engine
@pytest.mark.parametrize("prof", [np.float32, np.float64], ids=["p32", "p64"])
@pytest.mark.parametrize("index", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("value", [np.float32, np.float64], ids=["v32", "v64"])
def test_pic_kernels_equal_the_engine_bit_for_bit(cp, value, index, prof):
    """Both pic_loglik kernels (per-pair alpha, fixed alpha) give the numba engine's LL and alpha
    bit for bit, every pair, a chunk of rows launched as a slice of indptr."""
    from gpu_sc.pic._loglik import _cpu_chunk, _gpu_chunk

    m, pa, pb = _random(seed=3, n=30, genes=80, ka=5, kb=4)
    pa, pb = pa.astype(prof), pb.astype(prof)
    arrays = (m.data.astype(value), m.indices.astype(index), m.indptr.astype(index))
    cpu = _ops.Parts(*arrays, m.shape)
    dev = _ops.Parts(*(cp.asarray(a) for a in arrays), m.shape)
    alpha = np.random.default_rng(1).random(m.shape[0])
    for r0, r1 in ((0, 30), (7, 19)):
        for al in (None, alpha):
            ll_c, al_c = _cpu_chunk(cpu, r0, r1, pa, pb, EPS, al, 60)
            ll_d, al_d = _gpu_chunk(dev, r0, r1, cp.asarray(pa), cp.asarray(pb), EPS, al, 60)
            np.testing.assert_array_equal(_host(ll_d).view(np.int64), ll_c.view(np.int64))
            if al is None:
                np.testing.assert_array_equal(_host(al_d).view(np.int64), al_c.view(np.int64))


def test_pair_scores_gpu_branch(cp, real):  # noqa: F811
    """pair_scores on device data: kernel, device reduction and host copy, equal to the CPU."""
    from gpu_sc.pic._loglik import pair_scores

    m, pa, pb, pics = real
    cpu = _ops.Parts(m.data, m.indices, m.indptr, m.shape)
    dev = _ops.Parts(*(cp.asarray(a) for a in (m.data, m.indices, m.indptr)), m.shape)
    for alpha in (None, pics.obs["true_alpha"].to_numpy()):
        c = pair_scores(cpu, pa, pb, eps=EPS, alpha=alpha)
        d = pair_scores(dev, pa, pb, eps=EPS, alpha=alpha)
        for f in FIELDS:
            got = getattr(d, f)
            assert type(got) is np.ndarray, f  # results come back to the host
            np.testing.assert_allclose(got, getattr(c, f), rtol=1e-12, atol=1e-15, err_msg=f)


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
