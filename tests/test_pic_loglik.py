"""PIC x pair log-likelihood engine (`pair_scores`, numba on the CPU): equals the numpy reference
and a scalar transcription of the CUDA kernel, chunking changes nothing, tie rule, index types."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import assert_close, reorder_tol
from pic_reference import best_pair, pair_loglik

from gpu_sc._ops import _numba_log as L
from gpu_sc._ops._layout import Parts
from gpu_sc._ops._numba_log import log_array as _log_array
from gpu_sc._ops.pic_loglik import N_ITER, pic_pair_loglik
from gpu_sc.pic._loglik import PairScores, default_chunk, pair_scores
from gpu_sc.pic._simulate import simulate_pics

EPS = 1e-4
T = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic", "CD4+/CD45RO+ Memory"]
OTHER = ["Dendritic", "CD14+ Monocyte", "CD19+ B", "CD56+ NK", "CD34+"]
FIELDS = ("ia", "ib", "ll", "alpha", "log_norm", "p_a", "p_b")
#: alpha of the engine against the NumPy reference: two bracketed Newton runs, each stopped by its
#: own rule (a step below 1e-12, at most 60 steps in the engine, 40 in the reference); a step that
#: leaves the bracket moves 1/32 of it, so an optimum near 0 or 1 is approached slowly and a capped
#: run stops short of it. An optimiser's tolerance, not a rounding bound (measured: 1e-12 here).
ALPHA_NEWTON = 1e-7


def _random(seed=0, n=40, genes=60, ka=4, kb=5, lam=0.8):
    rng = np.random.default_rng(seed)
    pa = rng.dirichlet(np.full(genes, 0.4), ka).T
    pb = rng.dirichlet(np.full(genes, 0.4), kb).T
    pa[rng.random(pa.shape) < 0.1] = 0.0  # exact zeros: eps carries the log
    x = rng.poisson(lam, (n, genes)).astype(np.float64)
    for r in range(min(n, 6)):  # pure A / pure B PICs: alpha on the boundary for some pairs
        x[r] = rng.multinomial(200, pa[:, 0] if r % 2 else pb[:, 0])
    return sp.csr_matrix(x), pa, pb


@pytest.fixture
def real(pbmc):
    """Synthetic 1000-UMI PICs from real PBMC singlets (T x other), group-mean profiles over the
    200 most expressed genes (held-out singlets)."""
    rng = np.random.default_rng(0)
    src = rng.random(pbmc.n_obs) < 0.4
    lab = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    pics = simulate_pics(pbmc[src], groupby="bulk_labels", a=T, b=OTHER, n_pics=60, seed=2)
    s = sp.csr_matrix(pbmc.X[~src], dtype=np.float64)
    genes = np.argsort(-np.asarray(s.sum(0)).ravel(), kind="stable")[:200]
    prof = []
    for g in T + OTHER:
        v = np.asarray(s[lab[~src] == g][:, genes].sum(0)).ravel()
        prof.append(v / v.sum())
    prof = np.stack(prof, 1)
    x = sp.csr_matrix(pics.X)[:, genes].tocsr()  # float32 counts, as simulate_pics gives them
    x.sort_indices()  # sums run in storage order: keep one order for the comparisons
    return x, prof[:, : len(T)], prof[:, len(T):], pics


def _flat(t):
    """(n, K_A, K_B) -> (n, K_A * K_B) with column j = ia + K_A * ib."""
    return t.transpose(0, 2, 1).reshape(t.shape[0], -1)


def _engine(x, pa, pb, alpha=None, n_iter=N_ITER):
    p = Parts(x.data, x.indices, x.indptr, x.shape)
    pa, pb = (np.ascontiguousarray(q, dtype=np.float64) for q in (pa, pb))
    return pic_pair_loglik(p, 0, x.shape[0], pa, pb, EPS, alpha, n_iter)


def _log_transcript(x: float) -> float:
    """The CPU engine's vectorisable log, in plain Python floats and ints (same operations)."""
    if not 0.0 < x < math.inf:
        return math.log(x) if x == math.inf else (-math.inf if x == 0.0 else math.nan)
    sub = x < L._MIN_NORMAL
    bits = struct.unpack("<q", struct.pack("<d", x * (L._TWO54 if sub else 1.0)))[0]
    mb = (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    big = int(mb > L._SQRT2_BITS)
    mb -= big << 52
    de = float((bits >> 52) - 1023 + big - (54 if sub else 0))
    f = struct.unpack("<d", struct.pack("<q", mb))[0] - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = L._C13 * z + L._C12
    for c in (L._C11, L._C10, L._C9, L._C8, L._C7, L._C6, L._C5, L._C4, L._C3, L._C2, L._C1):
        r = r * z + c
    hfsq = 0.5 * f * f
    return de * L._LN2_HI + (f - (hfsq - (s * (hfsq + z * r) + de * L._LN2_LO)))


def _kernel_transcript(x, pa, pb, eps, n_iter=N_ITER):
    """The CUDA kernel `pic_loglik`, one pair at a time in plain Python floats (IEEE double);
    its log is the kernel's gsc_pic_log (= the engine's `_log`)."""
    n, ka, kb = x.shape[0], pa.shape[1], pb.shape[1]
    ll = np.empty((n, ka * kb))
    alpha = np.empty((n, ka * kb))
    for r in range(n):
        s, e = x.indptr[r], x.indptr[r + 1]
        cols, vals = x.indices[s:e], x.data[s:e]
        for j in range(ka * kb):
            ia, ib = j % ka, j // ka
            terms = [(float(u), float(pa[g, ia]), float(pb[g, ib])) for g, u in zip(cols, vals, strict=False)]
            g0 = g1 = 0.0
            for u, a, b in terms:
                d, be = a - b, b + eps
                ud = u * d
                g0 += ud / be
                g1 += ud / (d + be)
            if g0 <= 0.0:
                al = 0.0
            elif g1 >= 0.0:
                al = 1.0
            else:
                lo, hi, al = 0.0, 1.0, 0.5
                for _ in range(n_iter):
                    gr = h = 0.0
                    for u, a, b in terms:
                        d, be = a - b, b + eps
                        t = d / (al * d + be)
                        ut = u * t
                        gr += ut
                        h -= ut * t
                    if gr > 0.0:
                        lo = al
                    else:
                        hi = al
                    nw = al - gr / h if h < 0.0 else 0.5 * (lo + hi)
                    if not (lo < nw < hi):
                        w = 0.03125 * (hi - lo)
                        nw = lo + w if nw <= lo else hi - w
                    step = abs(nw - al)
                    al = nw
                    if step < 1e-12:
                        break
            sll = 0.0
            for u, a, b in terms:
                sll += u * _log_transcript(al * (a - b) + (b + eps))
            ll[r, j], alpha[r, j] = sll, al
    return ll, alpha


def test_log_within_one_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(20000), np.exp(rng.uniform(-745, 709, 20000)),
                        1 + rng.normal(0, 1e-3, 5000), 1e-4 + 1e-4 * rng.random(5000),
                        [5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308, 2.0]])
    got = _log_array(x)
    want = np.array([math.log(v) for v in x])
    nz = want != 0
    assert np.all(np.abs(got[nz] - want[nz]) <= np.spacing(np.abs(want[nz])))
    assert _log_array(np.array([1.0]))[0] == 0.0
    special = _log_array(np.array([0.0, -1.0, np.inf, np.nan]))
    assert special[0] == -np.inf and np.isnan(special[1]) and special[2] == np.inf
    assert np.isnan(special[3])
    assert [_log_transcript(v) for v in x[::97]] == list(got[::97])


_HOST_HARNESS = r"""
#include <cstdio>
#include <cstring>
#define __device__
#define __forceinline__ inline
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
static inline long long __double_as_longlong(double d) { long long v; memcpy(&v, &d, 8); return v; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
%s
int main() {
    double x;
    while (fread(&x, 8, 1, stdin) == 1) { double y = gsc_pic_log(x); fwrite(&y, 8, 1, stdout); }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler")
def test_kernel_log_is_the_engine_log(tmp_path):
    """gsc_pic_log of kernels/pic_loglik.cu, compiled as host code without FMA contraction,
    returns the engine's `_log` bit for bit."""
    from gpu_sc._kernels import kernel_dir

    src = (kernel_dir() / "pic_loglik.cu").read_text()
    fn = src[src.index("#define GSC_PIC_INF"): src.index("// Per-pair alpha maximised")]
    (tmp_path / "h.cpp").write_text(_HOST_HARNESS % fn)
    exe = tmp_path / "h"
    subprocess.run(["g++", "-O2", "-ffp-contract=off", "-o", str(exe), str(tmp_path / "h.cpp")],
                   check=True, capture_output=True)  # fmt: skip
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.random(50000), np.exp(rng.uniform(-745, 709, 50000)),
                        1 + rng.normal(0, 1e-3, 5000), [0.0, -1.0, np.inf, 5e-324, 1e-310, 1.0]])
    out = np.frombuffer(subprocess.run([str(exe)], input=x.tobytes(), capture_output=True,
                                       check=True).stdout)  # fmt: skip
    np.testing.assert_array_equal(out.view(np.int64), _log_array(x).view(np.int64))


def _assert_same(a: PairScores, b: PairScores):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def _posterior_scale(ref, lse):
    """`scale` for probabilities exp(LL - lse) whose LLs carry rounding relative to |LL| (|lse|
    for both): that error, absolute in the exponent, is relative in the probability; below
    float64's smallest normal number the rounding is absolute."""
    return np.abs(ref) * 2 * np.abs(lse)[:, None] + np.finfo(np.float64).tiny


def _check_reference(x, pa, pb, fixed=None):
    """Engine LL/alpha vs the numpy reference, and pair_scores vs its reduction."""
    ll_e, al_e = _engine(x, pa, pb, alpha=fixed)
    ll_r, al_r = pair_loglik(x, pa, pb, eps=EPS, alpha=fixed)
    # LLs: float64 sums over a PIC's nonzero genes (terms of one sign), in CSR order against NumPy's
    # pairwise order, each log within an ulp; at alphas an optimiser tolerance apart, but the LL
    # is flat at its optimum
    m = int(np.diff(x.indptr).max(initial=1))
    assert_close(ll_e, _flat(ll_r), dtype=np.float64, n_terms=m)
    if fixed is None:
        np.testing.assert_allclose(al_e, _flat(al_r), rtol=0, atol=ALPHA_NEWTON)
    s = pair_scores(x, pa, pb, eps=EPS, alpha=fixed)
    ia, ib = best_pair(ll_r)
    rows = np.arange(x.shape[0])
    np.testing.assert_array_equal(s.ia, ia)
    np.testing.assert_array_equal(s.ib, ib)
    assert_close(s.ll, ll_r[rows, ia, ib], dtype=np.float64, n_terms=m)
    np.testing.assert_allclose(s.alpha, al_r[rows, ia, ib], rtol=0, atol=ALPHA_NEWTON)
    flat = _flat(ll_r)
    top = flat.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(flat - top).sum(1))
    # the LLs' rounding, and a sum of K_A * K_B terms of at most 1 inside the log: relative to 1
    k = flat.shape[1]
    assert_close(s.log_norm, lse, dtype=np.float64, n_terms=max(m, k), scale=1.0)
    post = np.exp(ll_r - lse[:, None, None])
    for got, want in ((s.p_a, post.sum(2)), (s.p_b, post.sum(1))):
        assert_close(got, want, dtype=np.float64, n_terms=max(m, k), scale=_posterior_scale(want, lse))
    return s


def test_ml_matches_numpy_random():
    x, pa, pb = _random()
    _check_reference(x, pa, pb)
    _, al = _engine(x, pa, pb)  # interior and boundary alphas both occur among all pairs
    assert np.any((al > 0) & (al < 1)) and np.any((al == 0) | (al == 1))


def test_fixed_matches_numpy_random():
    x, pa, pb = _random(1)
    fixed = np.random.default_rng(1).random(x.shape[0])
    fixed[:3] = [0.0, 1.0, 0.5]
    s = _check_reference(x, pa, pb, fixed)
    np.testing.assert_array_equal(s.alpha, fixed)


def test_matches_numpy_real(real):
    x, pa, pb, pics = real
    s = _check_reference(x, pa, pb)
    fixed = pics.obs["true_alpha"].to_numpy()
    _check_reference(x, pa, pb, fixed)
    # the model recovers most T groups on real data (sanity, not accuracy)
    assert np.mean(np.asarray(T)[s.ia] == pics.obs["true_a"].to_numpy()) > 0.5


def test_engine_is_the_kernel_arithmetic(real):
    """Bit for bit equal to a scalar transcription of kernels/pic_loglik.cu (same IEEE ops in
    the same order, log included)."""
    x, pa, pb, _ = real
    x = x[:6].astype(np.float64)
    ll_t, al_t = _kernel_transcript(x, pa, pb, EPS)
    ll_e, al_e = _engine(x, pa, pb)
    np.testing.assert_array_equal(al_e, al_t)
    np.testing.assert_array_equal(ll_e, ll_t)
    # 48 interior pairs per PIC: more than the Newton pipeline's slots, so slots are refilled;
    # n_iter=7: the iteration cap is hit by some pairs
    xr, ra, rb = _random(3, n=8, ka=16, kb=3)
    for n_iter in (N_ITER, 7):
        ll_t, al_t = _kernel_transcript(xr, ra, rb, EPS, n_iter=n_iter)
        ll_e, al_e = _engine(xr, ra, rb, n_iter=n_iter)
        np.testing.assert_array_equal(al_e, al_t)
        np.testing.assert_array_equal(ll_e, ll_t)


def test_chunked_equals_unchunked(real):
    x, pa, pb, pics = real
    calls = []
    whole = pair_scores(x, pa, pb, eps=EPS)
    parts7 = pair_scores(x, pa, pb, eps=EPS, chunk=7, progress=lambda d, t: calls.append((d, t)))
    _assert_same(whole, parts7)
    n = x.shape[0]
    assert calls == [(min(n, k + 7), n) for k in range(0, n, 7)]
    fixed = pics.obs["true_alpha"].to_numpy()
    _assert_same(pair_scores(x, pa, pb, eps=EPS, alpha=fixed),
                 pair_scores(x, pa, pb, eps=EPS, alpha=fixed, chunk=7))  # fmt: skip
    assert default_chunk(50, 50) * 2500 * 16 <= 256 << 20 < (default_chunk(50, 50) + 1) * 2500 * 16


def test_tie_rule():
    rng = np.random.default_rng(4)
    p, q, r, s = rng.dirichlet(np.ones(40), 4)
    pa = np.stack([q, p, p], 1)  # A groups 1 and 2 identical
    pb = np.stack([s, r, r], 1)  # B groups 1 and 2 identical
    x = sp.csr_matrix(rng.multinomial(500, 0.5 * p + 0.5 * r, 5).astype(np.float64))
    for fixed in (None, np.full(5, 0.5)):
        sc = pair_scores(x, pa, pb, eps=EPS, alpha=fixed)
        ll, _ = _engine(x, pa, pb, alpha=fixed)
        # the four tied pairs j = 4, 5, 7, 8 have bit-identical LL; the first one wins
        assert np.all(ll[:, [5, 7, 8]] == ll[:, [4]])
        np.testing.assert_array_equal(sc.ia, 1)
        np.testing.assert_array_equal(sc.ib, 1)
        assert np.all(sc.p_a[:, 1] == sc.p_a[:, 2]) and np.all(sc.p_b[:, 1] == sc.p_b[:, 2])


def test_index_and_value_types(real):
    x, pa, pb, _ = real
    assert x.dtype == np.float32
    ref = pair_scores(x.astype(np.float64), pa, pb, eps=EPS)
    for it in (np.int32, np.int64):
        p = Parts(x.data, x.indices.astype(it), x.indptr.astype(it), x.shape)
        _assert_same(pair_scores(p, pa, pb, eps=EPS), ref)
    # float32 profiles: computed in float64 from the float32 values
    pa32, pb32 = pa.astype(np.float32), pb.astype(np.float32)
    pa64, pb64 = pa32.astype(np.float64), pb32.astype(np.float64)
    _assert_same(pair_scores(x, pa32, pb32, eps=EPS), pair_scores(x, pa64, pb64, eps=EPS))
    # integer counts are accepted
    _assert_same(pair_scores(x.astype(np.int64), pa, pb, eps=EPS), ref)


def test_posterior_invariants(real):
    x, pa, pb, _ = real
    s = pair_scores(x, pa, pb, eps=EPS)
    # K_A * K_B quotients w / z (rounded sums of one sign) summed in two steps
    assert_close(s.p_a.sum(1), 1.0, dtype=np.float64, n_terms=pa.shape[1] * pb.shape[1])
    assert_close(s.p_b.sum(1), 1.0, dtype=np.float64, n_terms=pa.shape[1] * pb.shape[1])
    assert np.all(s.log_norm >= s.ll)
    rows = np.arange(len(s))
    # p_pair = exp(ll - log_norm) carries log_norm's rounding, relative to |log_norm|, as a relative
    # error; the marginals are sums of the K_A * K_B quotients
    slack = 1 + reorder_tol(np.float64, pa.shape[1] * pb.shape[1]) * (1 + 2 * np.abs(s.log_norm))
    assert np.all(s.p_pair <= s.p_a[rows, s.ia] * slack)
    assert np.all(s.p_pair <= s.p_b[rows, s.ib] * slack)
    assert np.all((s.alpha >= 0) & (s.alpha <= 1))


def test_empty_inputs():
    x, pa, pb = _random(n=0)
    s = pair_scores(x, pa, pb, eps=EPS)
    assert len(s) == 0 and s.p_a.shape == (0, 4) and s.p_b.shape == (0, 5)
    s = pair_scores(x, pa, pb, eps=EPS, alpha=np.zeros(0))
    assert len(s) == 0
    # a PIC without counts: LL 0 for every pair, alpha 0, first pair, flat posterior
    z = sp.csr_matrix((3, pa.shape[0]))
    s = pair_scores(z, pa, pb, eps=EPS)
    np.testing.assert_array_equal(s.ll, 0)
    np.testing.assert_array_equal(s.alpha, 0)
    np.testing.assert_array_equal(s.ia, 0)
    np.testing.assert_allclose(s.p_a, 1 / 4)
    np.testing.assert_allclose(s.log_norm, np.log(20))


def test_bad_inputs():
    x, pa, pb = _random(n=5)
    with pytest.raises(ValueError, match="genes"):
        pair_scores(x, pa[:-1], pb, eps=EPS)
    with pytest.raises(ValueError, match="non-negative"):
        pair_scores(x, -pa, pb, eps=EPS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pair_scores(x, pa, pb, eps=EPS, alpha=np.full(5, 1.5))
    with pytest.raises(ValueError, match="one value per PIC"):
        pair_scores(x, pa, pb, eps=EPS, alpha=np.full(4, 0.5))
    with pytest.raises(ValueError, match="eps"):
        pair_scores(x, pa, pb, eps=-1.0)
    with pytest.raises(ValueError, match="chunk"):
        pair_scores(x, pa, pb, eps=EPS, chunk=0)
    with pytest.raises(TypeError, match="CSR"):
        pair_scores(x.tocsc(), pa, pb, eps=EPS)


def _softmax(t, flat):
    z = t * flat - (t * flat).max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_kept_posterior_is_the_top_pairs_above_the_floor():
    """33 pairs (3 x 11): each PIC keeps the pairs of posterior >= 1e-4 among its 32 largest,
    against the softmax of the reference LLs (plain, and tempered flat enough that the cut at
    32 binds); a PIC without counts has 33 tied pairs at the cut, all kept. Chunks of 7 PICs
    keep the same rows."""
    x, pa, pb = _random(seed=5, n=30, genes=60, ka=3, kb=11, lam=0.15)
    x = sp.vstack([x, sp.csr_matrix((1, x.shape[1]))]).tocsr()
    n = x.shape[0]
    ll_r, _ = pair_loglik(x, pa, pb, eps=EPS)
    counts = []
    for t in (1.0, 0.01):
        w = _softmax(t, _flat(ll_r))
        s = pair_scores(x, pa, pb, eps=EPS, temper=t)
        post = s.posterior.toarray()
        assert s.posterior.shape == (n, 33)
        kept = post > 0
        for r in range(n):
            order = np.sort(w[r])[::-1]
            want = (w[r] >= 1e-4) & (w[r] >= order[31] * (1 - 1e-9))
            np.testing.assert_array_equal(kept[r], want, err_msg=f"{t} {r}")
        assert kept[-1].all() and np.all(post[-1] == post[-1, 0])
        np.testing.assert_allclose(post[kept], w[kept], rtol=1e-6)
        chunked = pair_scores(x, pa, pb, eps=EPS, chunk=7, temper=t).posterior
        assert (chunked != s.posterior).nnz == 0
        counts.append(kept[:-1].sum(1))
    counts = np.concatenate(counts)
    assert (counts == 32).any() and ((counts > 1) & (counts < 32)).any()  # both rules bind


def test_tempered_posterior_by_hand():
    """temper t: log_norm = logsumexp(t LL), p_pair = softmax(t LL) at the best pair, the
    marginals its sums over the other side; the best pair itself does not move."""
    x, pa, pb = _random(seed=6, n=20)
    ll_r, _ = pair_loglik(x, pa, pb, eps=EPS)
    flat = _flat(ll_r)
    plain = pair_scores(x, pa, pb, eps=EPS)
    for t in (0.05, 0.5):
        s = pair_scores(x, pa, pb, eps=EPS, temper=t)
        np.testing.assert_array_equal(s.ia, plain.ia)
        np.testing.assert_array_equal(s.ib, plain.ib)
        w = _softmax(t, flat)
        top = (t * flat).max(1)
        np.testing.assert_allclose(s.log_norm, top + np.log(np.exp(t * flat - top[:, None]).sum(1)), rtol=1e-9)
        j = s.ia + pa.shape[1] * s.ib
        np.testing.assert_allclose(s.p_pair, w[np.arange(20), j], rtol=1e-6)
        w3 = w.reshape(20, pb.shape[1], pa.shape[1])
        np.testing.assert_allclose(s.p_a, w3.sum(1), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(s.p_b, w3.sum(2), rtol=1e-6, atol=1e-12)


def test_all_pairs_loglik_is_the_maximised_ll_at_the_eps_given():
    from gpu_sc.pic._loglik import all_pairs_loglik

    x, pa, pb = _random(seed=7, n=8)
    for eps in (1e-4, 0.05):
        ll_r, _ = pair_loglik(x, pa, pb, eps=eps)
        np.testing.assert_allclose(all_pairs_loglik(x, pa, pb, eps=eps), _flat(ll_r), rtol=1e-9)


def test_pair_columns_follow_j():
    from gpu_sc.pic._loglik import pair_columns

    a, b = pair_columns(["a0", "a1", "a2"], ["b0", "b1"])
    assert list(a) == ["a0", "a1", "a2", "a0", "a1", "a2"] and list(b) == ["b0", "b0", "b0", "b1", "b1", "b1"]


def test_bad_profiles_and_eps():
    x, pa, pb = _random(n=5)
    with pytest.raises(ValueError, match="genes"):
        pair_scores(x, pa, pb[:-1], eps=EPS)
    with pytest.raises(ValueError, match="at least one"):
        pair_scores(x, pa[:, :0], pb, eps=EPS)
    with pytest.raises(ValueError, match="at least one"):
        pair_scores(x, pa, pb[:, :0], eps=EPS)
    bad = pa.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pair_scores(x, bad, pb, eps=EPS)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        pair_scores(x, pa, bad, eps=EPS)
    for eps in (np.inf, np.nan):
        with pytest.raises(ValueError, match="eps"):
            pair_scores(x, pa, pb, eps=eps)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pair_scores(x, pa, pb, eps=EPS, alpha=np.full(5, 1.01))
