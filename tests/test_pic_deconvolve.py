"""PIC-seq deconvolution on synthetic PICs built from real PBMC singlets (T cells + DCs)."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.cluster import KMeans

from gpu_sc.pic._deconvolve import deconvolve
from gpu_sc.pic._loglik import best_pair, optimise_alpha, pair_loglik
from gpu_sc.pic._simulate import simulate_pics

DC = ["DC0", "DC1", "DC2"]
T = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic", "CD4+/CD45RO+ Memory"]


@pytest.fixture
def setup(pbmc):
    a = pbmc[pbmc.obs["bulk_labels"].isin(T + ["Dendritic"])].copy()
    g = a.obs["bulk_labels"].astype(str).to_numpy().copy()
    d = g == "Dendritic"
    lg = a[d].copy()
    sc.pp.normalize_total(lg, target_sum=1e4)
    sc.pp.log1p(lg)
    sc.pp.pca(lg, n_comps=10)
    g[d] = [f"DC{k}" for k in KMeans(3, n_init=10, random_state=0).fit_predict(lg.obsm["X_pca"])]
    a.obs["grp"] = g
    src = np.random.default_rng(0).random(a.n_obs) < 0.3
    pics = simulate_pics(a[src], groupby="grp", a=T, b=DC, n_pics=300, seed=1)
    return a[~src].copy(), pics


def _acc(p):
    ok = p.obs["pic_status"] == "ok"
    pair = (p.obs["pic_a"].astype(str) == p.obs["true_a"]) & (
        p.obs["pic_b"].astype(str) == p.obs["true_b"])
    return pair[ok].mean()


def test_simulate_invariants(setup):
    ref, pics = setup
    tot = np.asarray(pics.X.sum(1)).ravel()
    assert np.all(tot == 1000) and pics.X.dtype == np.float32 and sp.issparse(pics.X)
    assert np.all((pics.obs["true_alpha"] > 0) & (pics.obs["true_alpha"] < 1))
    assert not set(pics.obs["source_a"]) & set(ref.obs_names)
    tri = simulate_pics(ref, groupby="grp", a=T, b=DC, n_pics=20, composition="AAB")
    assert np.all(np.asarray(tri.X.sum(1)).ravel() == 1000)
    assert {"true_a2", "source_a2"} <= set(tri.obs.columns)


def test_loglik_matches_naive():
    rng = np.random.default_rng(0)
    pa, pb = rng.dirichlet(np.ones(30), 3).T, rng.dirichlet(np.ones(30), 4).T
    x = sp.csr_matrix(rng.poisson(0.5, (5, 30)).astype(np.float64))
    ll, al = pair_loglik(x, pa, pb, eps=1e-4)
    for n in range(5):
        u = x[n].toarray().ravel()
        for i in range(3):
            for j in range(4):
                naive = sum(u[g] * np.log(al[n, i, j] * pa[g, i] + (1 - al[n, i, j]) * pb[g, j]
                                          + 1e-4) for g in range(30) if u[g])
                assert ll[n, i, j] == pytest.approx(naive, rel=1e-9)
                grid = np.linspace(0, 1, 201)
                best = max(sum(u[g] * np.log(t * pa[g, i] + (1 - t) * pb[g, j] + 1e-4)
                               for g in range(30) if u[g]) for t in grid)
                assert ll[n, i, j] >= best - 1e-9


def test_tie_rule():
    ll = np.zeros((1, 3, 2))
    ll[0, 2, 0] = ll[0, 1, 1] = 1.0  # j = 2 + 3*0 = 2 beats j = 1 + 3*1 = 4
    ia, ib = best_pair(ll)
    assert (ia[0], ib[0]) == (2, 0)


def test_alpha_boundaries():
    u = np.array([5.0, 0.0 + 3])
    al, _ = optimise_alpha(u, np.array([[0.9], [0.1]]), np.array([[0.1], [0.9]]), 1e-4)
    assert 0 < al[0, 0] < 1
    al, _ = optimise_alpha(np.array([5.0]), np.array([[0.9]]), np.array([[0.1]]), 1e-4)
    assert al[0, 0] == 1.0


def test_ml_beats_picseq(setup):
    ref, pics = setup
    ml, ps = pics.copy(), pics.copy()
    deconvolve(ml, ref, groupby="grp", a=T, b=DC)
    deconvolve(ps, ref, groupby="grp", a=T, b=DC, method="picseq", n_train=2000)
    assert _acc(ml) > _acc(ps)
    assert ps.uns["pic"]["alpha_cv_r2"] > 0.5
    st = ps.obs["pic_status"].astype(str)
    hat = ps.obs["pic_alpha_hat"]
    assert np.all((st == "alpha_out_of_range") == ((hat < 0) | (hat > 1)))
    ok = ml.obs["pic_status"] == "ok"
    assert np.allclose(ml.obs.loc[ok, "pic_p_pair"] <= ml.obs.loc[ok, "pic_p_a"] + 1e-12, True)
    t, e = ml.obs["true_alpha"][ok], ml.obs["pic_alpha"][ok]
    assert np.abs(t - e).mean() < 0.1


def test_bad_inputs(setup):
    ref, pics = setup
    p = pics.copy()
    before = p.obs.copy()
    with pytest.raises(KeyError):
        deconvolve(p, ref, groupby="grp", a=["nope"], b=DC)
    with pytest.raises(ValueError):
        deconvolve(p[:, :-1].copy(), ref, groupby="grp", a=T, b=DC)
    bad = p.copy()
    bad.X = bad.X * 0.5
    with pytest.raises(ValueError, match="integer"):
        deconvolve(bad, ref, groupby="grp", a=T, b=DC)
    assert p.obs.equals(before) and "pic" not in p.uns
    small = p.copy()
    deconvolve(small, ref, groupby="grp", a=T, b=DC, n_umis=5000)
    assert set(small.obs["pic_status"]) == {"too_few_umis"}


@pytest.mark.gpu
def test_gpu_kernel_matches_cpu():
    import cupy as cp

    from gpu_sc._kernels.pic_loglik import pic_loglik

    rng = np.random.default_rng(1)
    pa, pb = rng.dirichlet(np.ones(50), 5).T, rng.dirichlet(np.ones(50), 3).T
    x = sp.csr_matrix(rng.poisson(0.7, (40, 50)).astype(np.float64))
    ll, _ = pair_loglik(x, pa, pb, eps=1e-4)
    gll, _ = pic_loglik(cp.asarray(x.data), cp.asarray(x.indices.astype(np.int64)),
                        cp.asarray(x.indptr.astype(np.int64)), x.shape[0], pa, pb, 1e-4)
    gll = gll.get().reshape(40, 3, 5).transpose(0, 2, 1)  # j = ia + ka * ib
    np.testing.assert_allclose(gll, ll, rtol=1e-9)
    assert np.array_equal(np.stack(best_pair(gll)), np.stack(best_pair(ll)))
