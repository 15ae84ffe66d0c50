"""PIC x pair log-likelihood on the GPU (kernels/pic_loglik.cu through `pair_scores`) equals the
CPU numba engine: every argmax, LL and alpha bit for bit (the kernel performs the engine's IEEE
operations in the engine's order, log included), the posterior summaries to the rounding of the
device's reductions, for int32/int64 indices, float32/float64 counts and profiles, fixed and
maximised alpha, chunked or not.
The tests on device arrays run on a GPU (skipped without CuPy and a GPU) and through the kernel
emulator (tests/cuda_emu, whose stand-in cupyx sparse serves the whole deconvolution too)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import assert_close, assert_same
from test_pic_loglik import EPS, FIELDS, _random, real  # noqa: F401  (real: fixture)

from gpu_sc._ops._layout import Parts
from gpu_sc._ops.pic_loglik import _gpu_chunk, pic_pair_loglik
from gpu_sc.pic._loglik import pair_scores

pytestmark = pytest.mark.usefixtures("device")

VALUES = (np.float32, np.float64)
INDICES = (np.int32, np.int64)


def _pair(x, value, index):
    """The same CSR as CPU and GPU `Parts`, built from raw arrays so that the index dtype is
    exactly `index` (scipy and cupyx would shrink int64 indices that fit into int32)."""
    import cupy as cp

    arrays = (np.asarray(x.data, dtype=value), x.indices.astype(index), x.indptr.astype(index))
    return Parts(*arrays, x.shape), Parts(*(cp.asarray(a) for a in arrays), x.shape)


def _assert_summaries(g, c):
    """log_norm, p_a, p_b and the kept posterior of the same LLs, reduced by two array libraries
    (or two chunkings): exp within an ulp each, sums of the K_A * K_B pairs in another order.
    log_norm = best LL + log(sum): the sum's rounding is relative to 1; the probabilities'
    is relative to their own values, absolute below float64's smallest normal number."""
    k = c.p_a.shape[1] * c.p_b.shape[1]
    assert_close(g.log_norm, c.log_norm, dtype=np.float64, n_terms=k, scale=1.0)
    tiny = np.finfo(np.float64).tiny
    assert_close(g.p_a, c.p_a, dtype=np.float64, n_terms=k, scale=tiny)
    assert_close(g.p_b, c.p_b, dtype=np.float64, n_terms=k, scale=tiny)
    return k, tiny


def _assert_parity(g, c):
    np.testing.assert_array_equal(g.ia, c.ia)
    np.testing.assert_array_equal(g.ib, c.ib)
    # the kernel is the engine's arithmetic (same operations, same order, no FMA contraction)
    assert_same(g.ll, c.ll)
    assert_same(g.alpha, c.alpha)
    k, tiny = _assert_summaries(g, c)
    # the kept pair posterior (top POSTERIOR_TOP pairs on the device: partition and nonzero)
    assert type(g.posterior) is sp.csr_matrix
    assert_close(g.posterior.toarray(), c.posterior.toarray(), dtype=np.float64, n_terms=k, scale=tiny)
    for f in FIELDS:
        assert isinstance(getattr(g, f), np.ndarray), f  # host results


@pytest.mark.parametrize("prof", VALUES, ids=["p32", "p64"])
@pytest.mark.parametrize("index", INDICES, ids=["i32", "i64"])
@pytest.mark.parametrize("value", VALUES, ids=["v32", "v64"])
@pytest.mark.parametrize("fixed", [False, True], ids=["ml", "fixed"])
def test_parity_real(real, value, index, prof, fixed):  # noqa: F811
    x, pa, pb, pics = real
    pa, pb = pa.astype(prof), pb.astype(prof)
    alpha = pics.obs["true_alpha"].to_numpy() if fixed else None
    cpu, gpu = _pair(x, value, index)
    c = pair_scores(cpu, pa, pb, eps=EPS, alpha=alpha)
    g = pair_scores(gpu, pa, pb, eps=EPS, alpha=alpha)
    _assert_parity(g, c)


@pytest.mark.parametrize("index", INDICES, ids=["i32", "i64"])
def test_full_tensor_parity(real, index):  # noqa: F811
    """Every pair, not only the best: LL and alpha of the kernel vs the numba engine."""
    import cupy as cp

    x, pa, pb, pics = real
    cpu, gpu = _pair(x, np.float64, index)
    n = x.shape[0]
    for alpha in (None, pics.obs["true_alpha"].to_numpy()):
        ll_c, al_c = pic_pair_loglik(cpu, 0, n, pa, pb, EPS, alpha, 60)
        ga = None if alpha is None else cp.asarray(alpha)
        pa_g, pb_g = (cp.asarray(np.ascontiguousarray(q)) for q in (pa, pb))
        ll_g, al_g = _gpu_chunk(gpu, 0, n, pa_g, pb_g, EPS, ga, 60)
        assert_same(ll_g.get(), ll_c)  # the engine's operations in the engine's order
        if alpha is None:
            assert_same(al_g.get(), al_c)
        np.testing.assert_array_equal(ll_g.get().argmax(1), ll_c.argmax(1))


def test_parity_50x50_groups():
    """The production shape: 50 x 50 groups, 300 genes, 1000-UMI PICs; chunked on the GPU."""
    rng = np.random.default_rng(7)
    genes, k = 300, 50
    pa = rng.dirichlet(np.full(genes, 0.3), k).T
    pb = rng.dirichlet(np.full(genes, 0.3), k).T
    n = 300
    ta, tb, al = rng.integers(0, k, n), rng.integers(0, k, n), rng.uniform(0.1, 0.9, n)
    mix = [al[i] * pa[:, ta[i]] + (1 - al[i]) * pb[:, tb[i]] for i in range(n)]
    x = sp.csr_matrix(np.stack([rng.multinomial(1000, m) for m in mix]).astype(np.float32))
    for alpha in (None, al):
        cpu, gpu = _pair(x, np.float32, np.int32)
        c = pair_scores(cpu, pa, pb, eps=EPS, alpha=alpha)
        g = pair_scores(gpu, pa, pb, eps=EPS, alpha=alpha, chunk=64)
        _assert_parity(g, c)
        assert np.mean((g.ia == ta) & (g.ib == tb)) > 0.9


def test_cupyx_input_and_chunks(device, real):  # noqa: F811
    import cupyx.scipy.sparse as cpsp

    x, pa, pb, _ = real
    c = pair_scores(x, pa, pb, eps=EPS)
    xg = cpsp.csr_matrix(x)
    calls = []
    g = pair_scores(xg, pa, pb, eps=EPS, chunk=7, progress=lambda d, t: calls.append((d, t)))
    _assert_parity(g, c)
    assert calls[-1] == (x.shape[0], x.shape[0]) and len(calls) == -(-x.shape[0] // 7)
    whole = pair_scores(xg, pa, pb, eps=EPS)
    for f in ("ia", "ib", "ll", "alpha"):  # per-PIC kernel results: chunking changes nothing
        np.testing.assert_array_equal(getattr(whole, f), getattr(g, f))
    _assert_summaries(whole, g)  # device reductions may sum in another order per chunk shape


def test_random_boundaries_and_ties():
    """Random profiles with exact zeros (boundary alphas) and duplicated groups (exact ties)."""
    x, pa, pb = _random(5, n=50)
    pa = np.concatenate([pa, pa[:, :1]], 1)  # A group 4 duplicates A group 0
    cpu, gpu = _pair(x, np.float64, np.int64)
    c = pair_scores(cpu, pa, pb, eps=EPS)
    g = pair_scores(gpu, pa, pb, eps=EPS)
    _assert_parity(g, c)
    assert not np.any(g.ia == 4)  # ties go to the first (smaller j) of the duplicates


def test_empty_gpu():
    x, pa, pb = _random(n=0)
    _, gpu = _pair(x, np.float64, np.int32)
    s = pair_scores(gpu, pa, pb, eps=EPS)
    assert len(s) == 0 and s.p_a.shape == (0, pa.shape[1])
    z = sp.csr_matrix((3, pa.shape[0]))
    _, gz = _pair(z, np.float32, np.int64)
    s = pair_scores(gz, pa, pb, eps=EPS)
    np.testing.assert_array_equal(s.ll, 0)
    np.testing.assert_array_equal(s.ia, 0)


@pytest.mark.parametrize("method", ["ml", "picseq", "mixture"])
def test_deconvolve_gpu_equals_cpu(device, pbmc, method):
    """The whole deconvolution with the pair search (and ml's alpha likelihood grid, or the EM)
    on the GPU gives the CPU's calls: every pair equal, LL to 1e-9 relative, alpha (the
    regression reads the grid) and its posterior mean to 1e-7."""
    from gpu_sc.pic import deconvolve, simulate_pics

    t = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD4+/CD45RO+ Memory"]
    b = ["Dendritic", "CD14+ Monocyte", "CD19+ B"]  # three: picseq's markers need them
    cells = pbmc[pbmc.obs["bulk_labels"].isin(t + b)].copy()
    src = np.random.default_rng(0).random(cells.n_obs) < 0.3
    pics = simulate_pics(cells[src], groupby="bulk_labels", a=t, b=b, n_pics=80, seed=3)
    ref = cells[~src].copy()
    kw = {"picseq": {"n_train": 500}, "ml": {"n_train": 2000}}.get(method, {})
    cpu, gpu = pics.copy(), pics.copy()
    deconvolve(cpu, ref, groupby="bulk_labels", a=t, b=b, method=method, device="cpu", **kw)
    deconvolve(gpu, ref, groupby="bulk_labels", a=t, b=b, method=method, device="gpu", **kw)
    for k in ("pic_a", "pic_b", "pic_status"):
        assert (cpu.obs[k].astype(str) == gpu.obs[k].astype(str)).all(), k
    if method == "mixture":
        # EM on the device: each step rounded in another order, per-PIC stops at tol=1e-8; an
        # iteration's drift, not a rounding bound (kept as set; see test_pic_mixture)
        np.testing.assert_allclose(gpu.obs["pic_ll"], cpu.obs["pic_ll"], rtol=1e-9)
    else:
        assert_same(gpu.obs["pic_ll"], cpu.obs["pic_ll"])  # the pair search: kernel == engine
    if method == "picseq":
        assert_same(gpu.obs["pic_alpha"], cpu.obs["pic_alpha"])  # the LASSO alpha, fitted on the host
    else:
        # ml: gradient-boosted trees read the alpha likelihood grid computed on the device, and
        # rounding changes a tree's output only where a feature crosses a split (none here);
        # mixture: the EM weights (as pic_ll). Kept as set (1e-7 on a share in [0, 1]), not derived
        np.testing.assert_allclose(gpu.obs["pic_alpha"], cpu.obs["pic_alpha"], rtol=0, atol=1e-7)
    if method == "ml":
        # the posterior mean over the alpha grid of softmax(prior + tau LL): the grid LLs are float64
        # sums over a PIC's genes (device logs and sparse sums), rounded relative to |LL| <= N log(1 / eps)
        # (N the PIC's UMIs, every mixed profile value >= eps); that moves the exponent, and a mean
        # of values in [0, 1] by at most twice as much
        tau = cpu.uns["pic"]["alpha_temper"]
        mag = 2 * tau * np.log(1 / cpu.uns["pic"]["eps"]) * np.asarray(pics.X.sum(axis=1)).ravel()
        assert_close(gpu.obs["pic_alpha_posterior"], cpu.obs["pic_alpha_posterior"], dtype=np.float64,
                     n_terms=pics.n_vars, scale=mag)  # fmt: skip


def test_singlets_on_the_device_or_as_dask_blocks(device, pbmc):
    """Singlets moved by to_gpu with their PICs, or held as Dask blocks: deconvolve (picseq's
    training PICs are drawn from them) and pair_frequencies' confusion simulation read them on
    the host, as in memory (a device reference failed with a host/device mix, and real CuPy's
    would have been refused; a Dask one was sent to to_cpu, which keeps it lazy)."""
    import dask.array as da

    import gpu_sc as gsc
    from gpu_sc.pic import deconvolve, pair_frequencies, simulate_pics

    t, b = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD4+/CD45RO+ Memory"], ["Dendritic", "CD14+ Monocyte", "CD19+ B"]
    cells = pbmc[pbmc.obs["bulk_labels"].isin(t + b)].copy()
    src = np.random.default_rng(0).random(cells.n_obs) < 0.3
    pics = simulate_pics(cells[src], groupby="bulk_labels", a=t, b=b, n_pics=60, seed=3)
    ref = cells[~src].copy()
    host = pics.copy()
    deconvolve(host, ref, groupby="bulk_labels", a=t, b=b, method="picseq", n_train=300)
    want = pair_frequencies(host, ref, n_sim=20, n_boot=20)
    lazy = ref.copy()
    lazy.X = da.from_array(sp.csr_matrix(ref.X), chunks=(37, -1), asarray=False)
    on_device = gsc.get.to_gpu(pics.copy(), copy=True), gsc.get.to_gpu(ref, copy=True)
    for p, r in ((pics.copy(), lazy), on_device):
        deconvolve(p, r, groupby="bulk_labels", a=t, b=b, method="picseq", n_train=300)
        for k in ("pic_a", "pic_b", "pic_alpha"):
            assert (p.obs[k] == host.obs[k]).all(), k
        got = pair_frequencies(gsc.get.to_cpu(p, copy=True) if p is on_device[0] else p, r, n_sim=20, n_boot=20)
        np.testing.assert_allclose(got["fraction"], want["fraction"], rtol=1e-9)


def _one_gene_rows(values):
    """PICs of one count on a gene of their own (gene r for PIC r), the A profile holding `values`,
    B ones: at alpha = 1 and eps = 0 each PIC's LL is log(values[r]) itself (x = 1 a + 0 b + 0)."""
    n = values.size
    x = sp.csr_matrix((np.ones(n), np.arange(n), np.arange(n + 1)), shape=(n, n))
    return x, values[:, None].astype(np.float64), np.ones((n, 1))


#: mantissas just below sqrt(2) whose log's last bit is decided by the highest terms of the series
#: (each term dropped in turn, in a float64 replica of the engine's operations, changed these)
_LOG_EDGES = ("0x1.67f49e7e330c2p+0", "0x1.680148caef893p+0", "0x1.668d833eca686p+0", "0x1.671f721c39d04p+0",
              "0x1.66ffdfbd0f0fcp+0", "0x1.6838d33d84ed3p+0", "0x1.6972260a239f0p+0", "0x1.6901b371b97d9p+0",
              "0x1.67bb91a1f42dap+0", "0x1.6795b74797df5p+0", "0x1.667070c67b914p+0", "0x1.67a1d6ad7f2aap+0")  # fmt: skip


def test_kernel_log_is_the_engines_log():
    """The kernel's log (gsc_pic_log) is the engine's (_numba_log.log) bit for bit, over the whole
    range: values spread over every exponent, mantissas next to sqrt(2) (where the reduction
    halves m), powers of two, the smallest normal numbers and subnormals (scaled by 2^54 first),
    as eps = 0 lets a profile's own value reach the log. The PIC tests' real data stay far from
    most of these, and a lost series term moves only the last bit of some logs."""
    import cupy as cp

    rng = np.random.default_rng(11)
    near_sqrt2 = np.sqrt(2.0) * (1 + np.arange(-40, 41) * 2.0**-52)
    tiny = np.finfo(np.float64).tiny
    values = np.concatenate([
        10.0 ** rng.uniform(-300, 300, 2000), rng.uniform(0.5, 2.0, 2000), rng.uniform(0.7, 0.72, 500),
        np.ldexp(near_sqrt2[:, None], np.arange(-60, 61, 15)[None, :]).ravel(),
        np.ldexp(1.0, np.arange(-1074, 1024, 37)), tiny * (1 + np.arange(5) * 2.0**-52),
        5e-324 * rng.integers(1, 2**52, 300).astype(np.float64), [tiny / 2, tiny / 3],
        [float.fromhex(h) for h in _LOG_EDGES],
    ])  # fmt: skip
    x, pa, pb = _one_gene_rows(values)
    cpu, gpu = _pair(x, np.float64, np.int32)
    alpha = np.ones(x.shape[0])
    ll_c, _ = pic_pair_loglik(cpu, 0, x.shape[0], pa, pb, 0.0, alpha)
    ll_g, _ = _gpu_chunk(gpu, 0, x.shape[0], cp.asarray(pa), cp.asarray(pb), 0.0, cp.asarray(alpha))
    assert_same(ll_g.get(), ll_c)
    # and the engine's log is a log: within an ulp of NumPy's (and so within 2 of the exact value)
    np.testing.assert_allclose(ll_c[:, 0], np.log(values), rtol=2 * np.finfo(np.float64).eps)


def test_degenerate_pairs_and_mixed_profile_dtypes():
    """Alpha at the boundary tests' edges, as the engine decides it: a pair whose B profile equals
    its A profile on a PIC's genes has a zero slope (alpha 0, by `g0 <= 0`); a PIC whose slope at 0
    is positive by 2^-40 only after float64 cancellation (0.5 + 2^-40 - 0.5) goes to Newton, not to
    alpha 0. And profiles of two float dtypes are both read as float64, as the CPU engine reads them."""
    import cupy as cp

    x, pa, pb = _random(4, n=30)
    pb = np.concatenate([pb, pa[:, 1:2]], 1)  # B group 5 is A group 1: d = 0 on every gene
    # PIC 30: genes 0 and 1 only; A group 0 and B group 0 there give slopes u d / (b + eps) of
    # 0.5 + 2^-40 and -0.5 (eps far below b's last bit)
    pa, pb = pa.copy(), pb.copy()
    pa[:2, 0], pb[:2, 0] = (0.75 + 2.0**-41, 0.25), (0.5, 0.5)
    x = sp.vstack([x, sp.csr_matrix(([1.0, 1.0], [0, 1], [0, 2]), shape=(1, x.shape[1]))]).tocsr()
    eps = 1e-30
    cpu, gpu = _pair(x, np.float64, np.int64)
    n = x.shape[0]
    ll_c, al_c = pic_pair_loglik(cpu, 0, n, pa, pb, eps, None, 60)
    assert (al_c[:, 1 + pa.shape[1] * 5] == 0).all() and 0 < al_c[30, 0] < 1e-3  # what the engine does here
    ll_g, al_g = _gpu_chunk(gpu, 0, n, cp.asarray(pa), cp.asarray(pb), eps, None, 60)
    assert_same(al_g.get(), al_c)
    assert_same(ll_g.get(), ll_c)
    pa32 = pa.astype(np.float32)
    c = pair_scores(cpu, pa32, pb, eps=eps)
    g = pair_scores(gpu, pa32, pb, eps=eps)
    assert_same(g.ll, c.ll)
    assert_same(g.alpha, c.alpha)
