"""PIC deconvolution: which A group, which B group and what share alpha of UMIs from A."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from . import _alpha, _loglik, _profiles
from ._simulate import _as_list, _counts_csr, downsample_row, simulate_pics

_METHODS = ("ml", "picseq")


def _validate(pics: AnnData, singlets: AnnData, groupby: str, a, b):
    if not pics.var_names.equals(singlets.var_names):
        msg = ("pics and singlets must have the same genes in the same order "
               f"({pics.n_vars} vs {singlets.n_vars} genes; subset both to a shared var_names).")
        raise ValueError(msg)
    if groupby not in singlets.obs:
        raise KeyError(f"{groupby!r} is not a column of singlets.obs.")
    labels = singlets.obs[groupby].astype(str).to_numpy()
    ga, gb = _as_list(a), _as_list(b)
    present = set(labels)
    missing = [g for g in ga + gb if g not in present]
    if missing:
        raise KeyError(f"groups {missing} are not in singlets.obs[{groupby!r}].")
    if set(ga) & set(gb):
        raise ValueError(f"groups {sorted(set(ga) & set(gb))} are in both a and b.")
    return labels, ga, gb, _counts_csr(pics), _counts_csr(singlets)


def _downsample(x: sp.csr_matrix, n_umis: int, rng) -> tuple[sp.csr_matrix, np.ndarray]:
    tot = np.asarray(x.sum(1)).ravel()
    keep = tot >= n_umis
    rows = []
    for i in range(x.shape[0]):
        s, e = x.indptr[i], x.indptr[i + 1]
        v = np.zeros(x.shape[1])
        if keep[i]:
            v[x.indices[s:e]] = downsample_row(x.data[s:e], n_umis, rng)
        rows.append(v)
    return sp.csr_matrix(np.vstack(rows) if rows else np.zeros((0, x.shape[1]))), keep


def deconvolve(pics: AnnData, singlets: AnnData, *, groupby: str, a, b, method: str = "ml",
               n_umis: int | None = None, markers=None,
               blacklist=_profiles.DEFAULT_BLACKLIST, eps: float = 1e-4, seed: int = 0,
               refine: bool = False, n_train: int = 20000, cv: int = 10,
               rescale_to_1000: bool = True, n_between: int = 50) -> None:
    """Deconvolve PICs into an A group, a B group and the A share alpha.

    Parameters
    ----------
    pics, singlets
        AnnData of raw integer counts over the same genes.
    groupby
        singlets.obs column with the reference groups.
    a, b
        Group name(s) of population A and population B.
    method
        ``"ml"`` (joint maximum likelihood over pair and alpha) or ``"picseq"`` (the published
        algorithm: LASSO alpha, then exhaustive pair search with fixed alpha).
    n_umis
        Down-sample PICs to this many UMIs (dropping smaller ones); picseq default 1000,
        ml default no down-sampling.
    markers
        Gene names added to the footprint markers.
    blacklist
        Regexes of genes never used as markers.
    eps
        Pseudo-probability added inside the log.
    seed
        Random seed (down-sampling, alpha training PICs).
    refine
        ml only: re-estimate each PIC's A and B profiles from the singlets of the chosen groups
        nearest to it and re-optimise alpha.
    n_train, cv
        picseq: number of simulated training PICs and CV folds for the alpha LASSO.
    n_between
        ml: also use the top genes (each direction) between population A and B.
    rescale_to_1000
        picseq: scale real PIC features to 1000 UMIs (False reproduces the Cohen 2022 quirk).

    Returns
    -------
    Nothing; sets ``pics.obs['pic_a']``, ``pic_b`` (group names), ``pic_alpha``, ``pic_ll``
    (maximised log-likelihood over marker genes), ``pic_p_pair`` (posterior of the chosen pair,
    softmax of LL over pairs), ``pic_p_a``, ``pic_p_b`` (marginal posteriors), ``pic_status``
    ('ok', 'too_few_umis', 'alpha_out_of_range', 'no_counts') and ``pics.uns['pic']``
    (method, parameters, markers, groups_a, groups_b, and for picseq alpha_cv_r2).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    labels, ga, gb, x, s = _validate(pics, singlets, groupby, a, b)
    rng = np.random.default_rng(seed)
    if method == "picseq" and n_umis is None:
        n_umis = 1000
    n = x.shape[0]
    status = np.array(["ok"] * n, dtype=object)
    if n_umis is not None:
        x, keep = _downsample(x, int(n_umis), rng)
        status[~keep] = "too_few_umis"

    in_ref = np.isin(labels, ga + gb)
    mk = _profiles.select_markers(s[in_ref], labels[in_ref], ga, gb, singlets.var_names,
                                  blacklist=blacklist, extra=markers)
    if mk.size == 0:
        raise ValueError("no marker genes found; pass markers= or use more distinct groups.")
    xm = x[:, mk].tocsr()
    if method == "ml":
        # joint ML also needs the genes that tell population A from population B
        pop = np.where(np.isin(labels, ga), "A", "B")
        e = _profiles.geomean(s[in_ref], pop[in_ref], ["A", "B"], normalise=True)
        lfp = np.log2((0.1 + e[:, 0]) / (0.1 + e[:, 1]))
        lfp[np.asarray(s[in_ref].sum(0)).ravel() <= 10] = 0
        between = np.concatenate([np.argsort(-lfp)[:n_between], np.argsort(lfp)[:n_between]])
        mk = np.union1d(mk, between[np.abs(lfp[between]) >= 1])
        xm = x[:, mk].tocsr()
        # the multinomial over markers plus one "rest" bucket (all other genes with > 10 UMIs),
        # so alpha is the share of all UMIs, not of marker UMIs
        expressed = np.asarray(s[in_ref].sum(0)).ravel() > 10
        expressed[mk] = False
        rest = np.flatnonzero(expressed)
        p_all = _profiles.mean_profiles(s, labels, ga + gb, mk, rest)
        xm = sp.hstack([xm, sp.csr_matrix(np.asarray(x[:, rest].sum(1)))]).tocsr()
    else:
        gm_a = _profiles.geomean(s[:, mk], labels, ga)
        gm_b = _profiles.geomean(s[:, mk], labels, gb)
        p_all = _profiles.profiles(np.hstack([gm_a, gm_b]))
    pa, pb = p_all[:, : len(ga)], p_all[:, len(ga):]
    empty = np.asarray(x[:, mk].sum(1)).ravel() == 0
    status[(status == "ok") & empty] = "no_counts"

    info = {"method": method, "groupby": groupby, "groups_a": ga, "groups_b": gb,
            "markers": np.asarray(singlets.var_names[mk]).astype(str).tolist(), "eps": eps,
            "n_umis": n_umis, "seed": seed}
    fixed = None
    if method == "picseq":
        sim = simulate_pics(singlets, groupby=groupby, a=ga, b=gb, n_pics=n_train,
                            n_umis=int(n_umis), seed=seed + 1)
        feats = np.union1d(_alpha.alpha_genes(s, np.flatnonzero(np.isin(labels, ga))),
                           _alpha.alpha_genes(s, np.flatnonzero(np.isin(labels, gb))))
        scale = 1000.0 / n_umis
        model, r2 = _alpha.fit_alpha_model(sim.X.tocsr().astype(np.float64),
                                           sim.obs["true_alpha"].to_numpy(), feats,
                                           scale=scale, cv=cv, seed=seed)
        f = np.asarray(x[:, feats].todense()) * (scale if rescale_to_1000 else 1.0)
        fixed = model.predict(f) if n else np.zeros(0)
        status[(status == "ok") & ((fixed < 0) | (fixed > 1))] = "alpha_out_of_range"
        info.update(alpha_cv_r2=r2, alpha_genes=np.asarray(singlets.var_names[feats])
                    .astype(str).tolist(), lasso_lambda=float(model.alpha_), n_train=n_train)

    ok = np.flatnonzero(status == "ok")
    ka, kb = len(ga), len(gb)
    ll, al = _loglik.pair_loglik(xm[ok], pa, pb, eps=eps,
                                 alpha=None if fixed is None else fixed[ok])
    ia, ib = _loglik.best_pair(ll)
    rows = np.arange(ok.size)
    best_ll = ll[rows, ia, ib]
    best_alpha = al[rows, ia, ib]
    if refine and method == "ml" and ok.size:
        best_alpha, best_ll = _refine(xm[ok], sp.hstack([s[:, mk], sp.csr_matrix(np.asarray(
            s[:, rest].sum(1)))]).tocsr(), labels, ga, gb, ia, ib, best_alpha,
                                      eps=eps)
        info["refine"] = True
    post = np.exp(ll - ll.max(axis=(1, 2), keepdims=True))
    post /= post.sum(axis=(1, 2), keepdims=True)

    out = {"pic_a": np.full(n, None, object), "pic_b": np.full(n, None, object),
           "pic_alpha": np.full(n, np.nan), "pic_ll": np.full(n, np.nan),
           "pic_p_pair": np.full(n, np.nan), "pic_p_a": np.full(n, np.nan),
           "pic_p_b": np.full(n, np.nan)}
    out["pic_a"][ok] = np.asarray(ga, object)[ia]
    out["pic_b"][ok] = np.asarray(gb, object)[ib]
    out["pic_alpha"][ok] = best_alpha
    out["pic_ll"][ok] = best_ll
    out["pic_p_pair"][ok] = post[rows, ia, ib]
    out["pic_p_a"][ok] = post.sum(2)[rows, ia]
    out["pic_p_b"][ok] = post.sum(1)[rows, ib]
    if fixed is not None:
        out["pic_alpha_hat"] = fixed  # the regression's prediction, including dropped PICs
    # write back only now: nothing above touched the inputs
    for k, v in out.items():
        pics.obs[k] = pd.Categorical(v, categories=ga if k == "pic_a" else gb) \
            if k in ("pic_a", "pic_b") else v
    pics.obs["pic_status"] = pd.Categorical(status.astype(str))
    pics.uns["pic"] = info


def _refine(xm, sm, labels, ga, gb, ia, ib, alpha, *, eps, k: int = 15):
    """Per-PIC profiles from the k singlets of the chosen groups nearest to the PIC's parts."""
    sm = sm.tocsr()
    tot = np.asarray(sm.sum(1)).ravel()
    norm = np.asarray((sp.diags(1 / np.maximum(tot, 1)) @ sm).todense())
    lognorm = np.log1p(norm * 1e4)
    new_alpha = np.empty_like(alpha)
    new_ll = np.empty_like(alpha)
    xd = np.asarray(xm.todense())
    for i in range(xd.shape[0]):
        u = xd[i]
        lu = np.log1p(u / max(u.sum(), 1) * 1e4)
        prof = []
        for groups, gi in ((ga, ia[i]), (gb, ib[i])):
            rows = np.flatnonzero(labels == groups[gi])
            c = _corr(lognorm[rows], lu)
            near = rows[np.argsort(-c, kind="stable")[: min(k, rows.size)]]
            gm = np.expm1(np.log1p(np.asarray(sm[near].todense())).mean(0))
            prof.append(gm / max(gm.sum(), 1e-300))
        nz = np.flatnonzero(u)
        al, ll = _loglik.optimise_alpha(u[nz], prof[0][nz, None], prof[1][nz, None], eps)
        new_alpha[i], new_ll[i] = al[0, 0], ll[0, 0]
    return new_alpha, new_ll


def _corr(m, v):
    mc = m - m.mean(1, keepdims=True)
    vc = v - v.mean()
    den = np.sqrt((mc * mc).sum(1) * (vc @ vc))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(mc @ vc / den, nan=-1.0)
