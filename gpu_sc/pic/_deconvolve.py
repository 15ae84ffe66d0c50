"""PIC deconvolution: which A group, which B group and what share alpha of UMIs from A."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from . import _alpha, _loglik, _posterior, _profiles
from ._simulate import _as_list, _counts_csr, downsample_row, simulate_pics

_METHODS = ("ml", "picseq")
_N_CALIBRATE = 400  # PICs simulated from the reference to fit the temperatures


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
    return (labels, ga, gb, _counts_csr(pics, step="deconvolve", what="pics"),
            _counts_csr(singlets, step="deconvolve", what="singlets"))


def _downsample(x: sp.csr_matrix, n_umis: int, rng) -> tuple[sp.csr_matrix, np.ndarray]:
    """Every row down-sampled to exactly `n_umis` UMIs; rows with fewer are emptied (keep=False)."""
    tot = np.asarray(x.sum(1)).ravel()
    keep = tot >= n_umis
    data = np.zeros_like(x.data)
    for i in np.flatnonzero(keep):
        s, e = x.indptr[i], x.indptr[i + 1]
        data[s:e] = downsample_row(x.data[s:e], n_umis, rng)
    out = sp.csr_matrix((data, x.indices.copy(), x.indptr.copy()), shape=x.shape)
    out.eliminate_zeros()
    return out, keep


class _MLDesign:
    """The genes of the ml pair search and the profiles over them.

    ``"all"``: every gene, pooled-count profiles (a multinomial over the whole transcriptome).
    ``"markers"``: the footprint markers plus the genes that tell population A from population B,
    and one "rest" bucket summing every other gene with > 10 UMIs, so that the multinomial still
    covers all UMIs (alpha stays the share of all UMIs) at a fraction of the cost per PIC.
    """

    def __init__(self, s, labels, ga, gb, markers, n_between: int, genes: str):
        if genes not in ("all", "markers"):
            raise ValueError(f"search_genes must be 'all' or 'markers', got {genes!r}.")
        self.all = genes == "all"
        if self.all:
            return
        in_ref = np.isin(labels, ga + gb)
        pop = np.where(np.isin(labels, ga), "A", "B")
        e = _profiles.geomean(s[in_ref], pop[in_ref], ["A", "B"], normalise=True)
        lfp = np.log2((0.1 + e[:, 0]) / (0.1 + e[:, 1]))
        total = np.asarray(s[in_ref].sum(0)).ravel()
        lfp[total <= 10] = 0
        between = np.concatenate([np.argsort(-lfp)[:n_between], np.argsort(lfp)[:n_between]])
        self.genes = np.union1d(markers, between[np.abs(lfp[between]) >= 1])
        expressed = total > 10
        expressed[self.genes] = False
        self.rest = np.flatnonzero(expressed)

    def n_genes(self, n_all: int) -> int:
        return n_all if self.all else int(self.genes.size + 1)

    def counts(self, x: sp.csr_matrix) -> sp.csr_matrix:
        if self.all:
            return x
        return sp.hstack([x[:, self.genes], sp.csr_matrix(np.asarray(x[:, self.rest].sum(1)))],
                         format="csr")

    def profiles(self, s, labels, groups) -> np.ndarray:
        if self.all:
            return _full_profiles(s, labels, groups)
        return _profiles.mean_profiles(s, labels, groups, self.genes, self.rest)


def _full_profiles(s, labels, groups) -> np.ndarray:
    """Pooled-count profiles over all genes (genes x groups): the alpha model's reference."""
    return _profiles.mean_profiles(s, labels, groups, np.arange(s.shape[1]),
                                   np.zeros(0, dtype=np.int64))[:-1]


def _split_reference(labels, groups, rng):
    """Two halves of the reference cells, split within each group (a one-cell group is in
    both halves, so that every group has a profile and source cells)."""
    prof, src = np.zeros(labels.size, bool), np.zeros(labels.size, bool)
    for g in groups:
        rows = rng.permutation(np.flatnonzero(labels == g))
        if rows.size == 1:
            prof[rows] = src[rows] = True
            continue
        half = rows.size // 2
        prof[rows[:half]] = True
        src[rows[half:]] = True
    return prof, src


def _calibrate(singlets, s, labels, ga, gb, groupby, design, *, n_umis, eps, seed):
    """Temperatures of the pair posterior and of the alpha likelihood, fitted on PICs simulated
    from one half of the reference against profiles of the other half (no PIC's source cell is
    in the profiles it is scored against)."""
    rng = np.random.default_rng(seed)
    prof, src = _split_reference(labels, ga + gb, rng)
    sim = simulate_pics(singlets[src], groupby=groupby, a=ga, b=gb, n_pics=_N_CALIBRATE,
                        n_umis=n_umis, seed=seed + 2)
    if sim.n_obs < 10:
        return 1.0, 1.0, float("nan")
    x = sim.X.tocsr().astype(np.float64)
    ta = pd.Index(ga).get_indexer(sim.obs["true_a"])
    tb = pd.Index(gb).get_indexer(sim.obs["true_b"])
    p = design.profiles(s[prof], labels[prof], ga + gb)
    ll, _ = _loglik.pair_loglik(design.counts(x), p[:, :len(ga)], p[:, len(ga):], eps=eps)
    flat = ll.transpose(0, 2, 1).reshape(ll.shape[0], -1)  # column j = i_a + K_A * i_b
    tau_pair = _posterior.pair_tau(flat, ta + len(ga) * tb)
    full = _full_profiles(s[prof], labels[prof], ga + gb)
    grid_ll = _posterior.grid_loglik(x, full[:, :len(ga)], full[:, len(ga):], ta, tb, eps=eps)
    prior = _posterior.SizePrior.from_counts(np.asarray(s[prof].sum(1)).ravel(), labels[prof],
                                             ga + gb)
    tau_alpha, r2 = _posterior.best_tau(grid_ll, prior.log_density(ta, tb, len(ga)),
                                        sim.obs["true_alpha"].to_numpy())
    return tau_pair, tau_alpha, r2


def _pair_summary(ll: np.ndarray, al: np.ndarray, tau: float) -> dict:
    """Best pair (tie rule), its LL and alpha, and the posterior softmax(tau * LL) over pairs."""
    ia, ib = _loglik.best_pair(ll)
    rows = np.arange(ll.shape[0])
    z = tau * ll
    post = np.exp(z - z.max(axis=(1, 2), keepdims=True))
    post /= post.sum(axis=(1, 2), keepdims=True)
    return {"ia": ia, "ib": ib, "ll": ll[rows, ia, ib], "alpha": al[rows, ia, ib],
            "p_pair": post[rows, ia, ib], "p_a": post.sum(2)[rows, ia],
            "p_b": post.sum(1)[rows, ib]}


def deconvolve(pics: AnnData, singlets: AnnData, *, groupby: str, a, b, method: str = "ml",
               n_umis: int | None = None, markers=None,
               blacklist=_profiles.DEFAULT_BLACKLIST, eps: float = 1e-4, seed: int = 0,
               calibrate: bool = True, n_train: int = 20000, cv: int = 10,
               rescale_to_1000: bool = True, search_genes: str = "all",
               n_between: int = 50) -> None:
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
        ``"ml"`` (joint maximum likelihood over pair and alpha, alpha refined by its posterior
        under a cell-size prior) or ``"picseq"`` (the published algorithm: LASSO alpha, then
        exhaustive pair search with fixed alpha).
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
        Random seed (down-sampling, simulated PICs for training and calibration).
    calibrate
        ml: fit the temperatures of the pair posterior and of the alpha likelihood on PICs
        simulated from half of the reference against profiles of the other half (else 1).
    n_train, cv
        picseq: number of simulated training PICs and CV folds for the alpha LASSO.
    rescale_to_1000
        picseq: scale real PIC features to 1000 UMIs (False reproduces the Cohen 2022 quirk).
    search_genes
        ml: the genes of the pair search, ``"all"`` (the whole transcriptome; most accurate)
        or ``"markers"`` (markers, genes between the populations and one bucket for the rest;
        several times fewer terms per PIC).
    n_between
        ml with ``search_genes="markers"``: the top genes (each direction) between population
        A and B added to the markers.

    Returns
    -------
    Nothing; sets in ``pics.obs``: ``pic_a``, ``pic_b`` (group names), ``pic_alpha``, ``pic_ll``
    (maximised log-likelihood of the chosen pair over the search genes), ``pic_p_pair``
    (posterior of the chosen pair), ``pic_p_a``, ``pic_p_b`` (marginal posteriors of the
    chosen A and B groups), ``pic_status`` ('ok', 'too_few_umis', 'alpha_out_of_range',
    'no_counts'); ml also ``pic_alpha_ml`` (alpha maximising the pair's LL), ``pic_alpha_lo``,
    ``pic_alpha_hi`` (90 % credible interval); picseq also ``pic_alpha_hat`` (the regression's
    prediction, including dropped PICs). ``pics.uns['pic']``: method, parameters, markers,
    groups_a, groups_b; picseq ``alpha_cv_r2``; ml ``pair_temper``, ``alpha_temper`` and
    ``alpha_calibration_r2`` (R^2 of alpha on the calibration PICs).
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
    info = {"method": method, "groupby": groupby, "groups_a": ga, "groups_b": gb,
            "markers": np.asarray(singlets.var_names[mk]).astype(str).tolist(), "eps": eps,
            "n_umis": n_umis, "seed": seed}
    empty = np.asarray(x[:, mk].sum(1)).ravel() == 0
    status[(status == "ok") & empty] = "no_counts"
    out = {"pic_a": np.full(n, None, object), "pic_b": np.full(n, None, object)}
    out.update({k: np.full(n, np.nan) for k in
                ("pic_alpha", "pic_ll", "pic_p_pair", "pic_p_a", "pic_p_b")})

    if method == "ml":
        design = _MLDesign(s, labels, ga, gb, mk, n_between, search_genes)
        tau_pair = tau_alpha = 1.0
        if calibrate:
            depth = n_umis or int(np.median(np.asarray(x.sum(1)).ravel()[status == "ok"])
                                  if np.any(status == "ok") else 1000)
            tau_pair, tau_alpha, r2 = _calibrate(singlets, s, labels, ga, gb, groupby, design,
                                                 n_umis=depth, eps=eps, seed=seed)
            info["alpha_calibration_r2"] = r2
        info.update(pair_temper=tau_pair, alpha_temper=tau_alpha, calibrated=calibrate,
                    search_genes=search_genes,
                    n_search_genes=design.n_genes(s.shape[1]))
        ok = np.flatnonzero(status == "ok")
        p = design.profiles(s, labels, ga + gb)
        ll, al = _loglik.pair_loglik(design.counts(x)[ok], p[:, :len(ga)], p[:, len(ga):],
                                     eps=eps)
        best = _pair_summary(ll, al, tau_pair)
        full = _full_profiles(s, labels, ga + gb)
        grid_ll = _posterior.grid_loglik(x[ok], full[:, :len(ga)], full[:, len(ga):],
                                         best["ia"], best["ib"], eps=eps)
        prior = _posterior.SizePrior.from_counts(np.asarray(s.sum(1)).ravel(), labels, ga + gb)
        mean, lo, hi = _posterior.posterior(
            grid_ll, prior.log_density(best["ia"], best["ib"], len(ga)), tau_alpha)
        for key, v in (("pic_alpha_ml", best["alpha"]), ("pic_alpha_lo", lo),
                       ("pic_alpha_hi", hi)):
            out[key] = np.full(n, np.nan)
            out[key][ok] = v
        best["alpha"] = mean
    else:
        xm = x[:, mk].tocsr()
        gm_a = _profiles.geomean(s[:, mk], labels, ga)
        gm_b = _profiles.geomean(s[:, mk], labels, gb)
        p = _profiles.profiles(np.hstack([gm_a, gm_b]))
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
        out["pic_alpha_hat"] = fixed
        ok = np.flatnonzero(status == "ok")
        ll, al = _loglik.pair_loglik(xm[ok], p[:, :len(ga)], p[:, len(ga):], eps=eps,
                                     alpha=fixed[ok])
        best = _pair_summary(ll, al, 1.0)

    out["pic_a"][ok] = np.asarray(ga, object)[best["ia"]]
    out["pic_b"][ok] = np.asarray(gb, object)[best["ib"]]
    for key in ("alpha", "ll", "p_pair", "p_a", "p_b"):
        out[f"pic_{key}"][ok] = best[key]
    # write back only now: nothing above touched the inputs
    for k, v in out.items():
        pics.obs[k] = pd.Categorical(v, categories=ga if k == "pic_a" else gb) \
            if k in ("pic_a", "pic_b") else v
    pics.obs["pic_status"] = pd.Categorical(status.astype(str))
    pics.uns["pic"] = info
