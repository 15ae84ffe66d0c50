"""PIC deconvolution: which A group, which B group and what share alpha of UMIs from A."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._backend import is_gpu, to_host
from . import _alpha, _alpha_regression, _loglik, _posterior, _profiles
from .._validation import check_anndata, check_int
from ._args import check_seed, names_list, population_groups
from ._simulate import _counts_csr, downsample_row, simulate_pics

_METHODS = ("ml", "picseq", "mixture")
_ALPHA_MODELS = ("regression", "posterior")
_N_CALIBRATE = 400  # PICs simulated from the reference to fit the temperatures


def _validate(pics: AnnData, singlets: AnnData, groupby: str, a, b):
    if not pics.var_names.equals(singlets.var_names):
        msg = ("deconvolve: pics and singlets must have the same genes in the same order "
               f"({pics.n_vars} vs {singlets.n_vars} genes); subset both to the shared "
               "var_names, e.g. pics[:, genes] and singlets[:, genes].")
        raise ValueError(msg)
    if singlets.n_vars == 0:
        raise ValueError("deconvolve: pics and singlets have no genes; pass them with their "
                         "raw counts over all genes.")
    labels, ga, gb = population_groups(singlets, groupby, a, b, step="deconvolve")
    return labels, ga, gb, _pic_blocks(pics), _counts_csr(singlets.X, step="deconvolve",
                                                            what="singlets")


def _check_ints(n_umis, seed, n_train, cv, n_between, mixture_iter) -> tuple:
    """The integer arguments of deconvolve, checked (each the same for every method, so that
    a mistake shows whichever method runs)."""
    step = "deconvolve"
    return (check_int(n_umis, step=step, name="n_umis", none_ok=True,
                      hint=" (None: no down-sampling in ml, 1000 UMIs in picseq)"),
            check_seed(seed, step=step),
            check_int(n_train, step=step, name="n_train"),
            check_int(cv, step=step, name="cv", minimum=2, hint=" (cross-validation folds)"),
            check_int(n_between, step=step, name="n_between", minimum=0),
            check_int(mixture_iter, step=step, name="mixture_iter"))


def _check_options(eps, concentration, search_genes, markers, blacklist, var_names) -> tuple:
    """The other arguments that the engines would refuse (or misread) only deep inside a run:
    (markers as a list of names, blacklist as compiled patterns)."""
    step = "deconvolve"
    for name, value, low in (("eps", eps, "0 or more"), ("concentration", concentration, "above 0")):
        ok = (isinstance(value, int | float | np.number) and not isinstance(value, bool)
              and math.isfinite(value))  # fmt: skip
        if not ok or value < 0 or (name == "concentration" and value == 0):
            raise ValueError(f"{step}: {name} must be a finite number {low}, got {value!r}.")
    if search_genes not in ("all", "markers"):
        raise ValueError(f"{step}: search_genes must be 'all' or 'markers', got {search_genes!r}.")
    if markers is not None:
        markers = names_list(markers, step=step, name="markers")
        known = set(var_names)
        missing = [g for g in markers if g not in known]
        if missing:
            raise KeyError(f"{step}: markers {missing[:5]} are not in singlets.var_names; pass "
                           "gene names shared by pics and singlets.")
    patterns = [blacklist] if isinstance(blacklist, str | re.Pattern) else list(blacklist or ())
    try:  # a pattern string (one, not its letters) or a compiled pattern each
        blacklist = [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f"{step}: blacklist pattern {e.pattern!r} is not a regular expression "
                         f"({e}).") from e
    return markers, blacklist


def _is_dask(x) -> bool:
    return type(x).__module__.split(".", 1)[0] == "dask"


def _pic_blocks(pics: AnnData):
    """The PIC counts: a checked host CSR matrix, or for a Dask array the list of its row
    blocks (delayed; each is checked when its task runs)."""
    x = pics.X
    if _is_dask(x):
        if x.ndim != 2 or x.numblocks[1] != 1:
            x = x.rechunk({1: -1})  # whole rows per block: a PIC is scored on all its genes
        return list(x.to_delayed().ravel())
    return _host_counts(x, "pics")


def _host_counts(x, what: str) -> sp.csr_matrix:
    """PIC counts (numpy, scipy or cupy; a whole matrix or one computed Dask block) as a
    checked host CSR matrix: the pipeline's down-sampling and profiles run on the host."""
    return _counts_csr(x.get() if is_gpu(x) else x, step="deconvolve", what=what)


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


def _split_reference(labels, groups, rng, share: float = 0.5):
    """Two parts of the reference cells, `share` and the rest, split within each group (a
    one-cell group is in both parts, so that every group has cells in each)."""
    first, second = np.zeros(labels.size, bool), np.zeros(labels.size, bool)
    for g in groups:
        rows = rng.permutation(np.flatnonzero(labels == g))
        if rows.size == 1:
            first[rows] = second[rows] = True
            continue
        cut = min(max(int(rows.size * share), 1), rows.size - 1)
        first[rows[:cut]] = True
        second[rows[cut:]] = True
    return first, second


def _alpha_parts(s, labels, groups, rows=None, full=None):
    """All-gene pooled profiles (`full` where the caller has them: search profiles over all
    genes) and the size prior of the reference cells `rows` (None: all)."""
    if rows is not None:
        s, labels = s[rows], labels[rows]
    if full is None:
        full = _full_profiles(s, labels, groups)
    return full, _posterior.SizePrior.from_counts(np.asarray(s.sum(1)).ravel(), labels, groups)


def _indices(groups, names) -> np.ndarray:
    return pd.Index(groups).get_indexer(names)


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
    ta, tb = _indices(ga, sim.obs["true_a"]), _indices(gb, sim.obs["true_b"])
    p = design.profiles(s[prof], labels[prof], ga + gb)
    ll = _loglik.all_pairs_loglik(design.counts(x), p[:, :len(ga)], p[:, len(ga):], eps=eps)
    tau_pair = _posterior.pair_tau(ll, ta + len(ga) * tb)
    full, prior = _alpha_parts(s, labels, ga + gb, prof, full=p if design.all else None)
    grid_ll = _posterior.grid_loglik(x, full[:, :len(ga)], full[:, len(ga):], ta, tb, eps=eps)
    tau_alpha, r2 = _posterior.best_tau(grid_ll, prior.log_density(ta, tb, len(ga)),
                                        sim.obs["true_alpha"].to_numpy())
    return tau_pair, tau_alpha, r2


def _fit_alpha_regression(singlets, s, labels, ga, gb, groupby, bins, *, n_pics, n_umis, eps,
                          seed):
    """The alpha regression, learned on PICs simulated from each half of the reference and
    scored against the other half's profiles and size prior (both ways round). A fifth of each
    half's source cells make check PICs only: the regression's R^2 and the conformal margin of
    its interval come from cells it never saw. None when the reference yields too few PICs."""
    rng = np.random.default_rng(seed + 5)
    halves = _split_reference(labels, ga + gb, rng)
    parts = {"fit": ([], []), "check": ([], [])}
    for k, (model_rows, source_rows) in enumerate((halves, halves[::-1])):
        full, prior = _alpha_parts(s, labels, ga + gb, model_rows)
        fit_rows, check_rows = _split_reference(np.where(source_rows, labels, ""), ga + gb, rng,
                                                share=0.8)
        for j, (part, rows) in enumerate((("fit", fit_rows), ("check", check_rows))):
            want = max(1, int(n_pics * (0.4 if part == "fit" else 0.1)))
            sim = simulate_pics(singlets[rows], groupby=groupby, a=ga, b=gb, n_pics=want,
                                n_umis=n_umis, seed=seed + 3 + 2 * k + j)
            if sim.n_obs == 0:
                continue
            x = sim.X.tocsr().astype(np.float64)
            ta, tb = _indices(ga, sim.obs["true_a"]), _indices(gb, sim.obs["true_b"])
            grid_ll = _posterior.grid_loglik(x, full[:, :len(ga)], full[:, len(ga):], ta, tb,
                                             eps=eps, grid=_alpha_regression.FEATURE_GRID)
            parts[part][0].append(_alpha_regression.features(x, bins, grid_ll, prior, ta, tb,
                                                             len(ga)))
            parts[part][1].append(sim.obs["true_alpha"].to_numpy(float))
    if not (parts["fit"][0] and parts["check"][0]):
        return None
    (f, y), (fc, yc) = ((np.vstack(v[0]), np.concatenate(v[1])) for v in parts.values())
    return _alpha_regression.AlphaRegression.fit(f, y, fc, yc, seed=seed)


def _report(done: int, total: int) -> None:
    print(f"deconvolve: pair search {done}/{total} PICs", file=sys.stderr, flush=True)


def _on_device(x: sp.csr_matrix, device: str):
    """The host CSR `x` where the work runs: as is for the CPU, a cupyx CSR for the GPU."""
    if device != "gpu":
        return x
    import cupyx.scipy.sparse as cusp

    return cusp.csr_matrix(x)


def _search(x, pa, pb, *, eps, alpha, tau, device, progress=False) -> dict:
    """Best pair per PIC (tie rule), its LL and alpha, and the posterior softmax(tau * LL)
    over pairs, PICs streamed in chunks on the CPU or the GPU."""
    r = _loglik.pair_scores(_on_device(x, device), pa, pb, eps=eps, alpha=alpha, temper=tau,
                            progress=_report if progress else None)
    return {"ia": r.ia, "ib": r.ib, "ll": r.ll, "alpha": r.alpha,
            "p_pair": r.p_pair, "p_a": r.p_a[np.arange(r.ia.size), r.ia],
            "p_b": r.p_b[np.arange(r.ib.size), r.ib]}


def _mixture_block(x, ok, m, out) -> None:
    """Soft weights over all groups (batched EM, MAP) and their summary, into `out`
    (`x`: the PICs' counts over the search genes)."""
    from ._mixture import mixture_weights, summarise

    xo = _on_device(x[ok], m.device)
    w, ll, _ = mixture_weights(xo, m.search_profiles, eps=m.eps, concentration=m.concentration,
                               n_iter=m.n_iter)
    w, ll = to_host(w), to_host(ll)
    sm = summarise(w, len(m.ga))
    n = out["pic_status"].size
    for side, names in (("a", m.ga), ("b", m.gb)):
        good = sm[side] >= 0  # -1: no weight on this side (concentration < 1)
        out[f"pic_{side}"][ok[good]] = np.asarray(names, object)[sm[side][good]]
        out[f"pic_p_{side}"][ok] = sm[f"p_{side}"]
    out["pic_alpha"][ok] = sm["alpha"]
    out["pic_ll"][ok] = ll
    out["pic_n_major"] = np.zeros(n, np.int64)
    out["pic_n_major"][ok] = sm["n_major"]
    out["pic_weights"] = np.full((n, len(m.ga) + len(m.gb)), np.nan)
    out["pic_weights"][ok] = w


@dataclass
class _Model:
    """Everything a block of PICs needs, computed once from the singlets."""

    method: str
    ga: list
    gb: list
    eps: float
    n_umis: int | None
    markers: np.ndarray
    search_profiles: np.ndarray  # (search genes, K_A + K_B)
    device: str
    design: _MLDesign | None = None
    full_profiles: np.ndarray | None = None  # ml: alpha model over all genes
    prior: _posterior.SizePrior | None = None
    tau_pair: float = 1.0
    tau_alpha: float = 1.0
    alpha_bins: sp.csr_matrix | None = None  # ml: composition bins of the alpha regression
    alpha_regression: _alpha_regression.AlphaRegression | None = None
    progress: bool = False
    concentration: float = 1.0  # mixture: Dirichlet prior on the weights
    n_iter: int = 500
    lasso: object = None  # picseq: the alpha regression, its genes and feature scale
    alpha_genes: np.ndarray | None = None
    feature_scale: float = 1.0


_FLOAT_KEYS = ("pic_alpha", "pic_ll", "pic_p_pair", "pic_p_a", "pic_p_b")


def _run_block(x: sp.csr_matrix, m: _Model, rng) -> dict:
    """Deconvolve one block of PICs (host CSR of raw counts): per-PIC output arrays."""
    n = x.shape[0]
    out = {"pic_a": np.full(n, None, object), "pic_b": np.full(n, None, object),
           "pic_status": np.array(["ok"] * n, dtype=object)}
    out.update({k: np.full(n, np.nan) for k in _FLOAT_KEYS})
    status = out["pic_status"]
    if m.n_umis is not None:
        x, keep = _downsample(x, int(m.n_umis), rng)
        status[~keep] = "too_few_umis"
    # picseq scores marker genes only; ml and mixture score every gene of their design
    scored = x[:, m.markers].tocsr() if m.method == "picseq" else m.design.counts(x)
    empty = np.asarray(scored.sum(1)).ravel() == 0
    status[(status == "ok") & empty] = "no_counts"
    ka = len(m.ga)
    pa, pb = m.search_profiles[:, :ka], m.search_profiles[:, ka:]
    if m.method == "ml":
        ok = np.flatnonzero(status == "ok")
        best = _search(scored[ok], pa, pb, eps=m.eps, alpha=None, tau=m.tau_pair,
                       device=m.device, progress=m.progress)
        grid_ll = _posterior.grid_loglik(_on_device(x[ok], m.device), m.full_profiles[:, :ka], m.full_profiles[:, ka:],
                                         best["ia"], best["ib"], eps=m.eps)
        mean, lo, hi = _posterior.posterior(
            grid_ll, m.prior.log_density(best["ia"], best["ib"], ka), m.tau_alpha)
        posterior_mean = mean
        if m.alpha_regression is not None:
            f = _alpha_regression.features(x[ok], m.alpha_bins,
                                           grid_ll[:, ::_alpha_regression.STRIDE], m.prior,
                                           best["ia"], best["ib"], ka)
            mean, lo, hi = m.alpha_regression.predict(f)
        for key, v in (("pic_alpha_ml", best["alpha"]), ("pic_alpha_posterior", posterior_mean),
                       ("pic_alpha_lo", lo), ("pic_alpha_hi", hi)):
            out[key] = np.full(n, np.nan)
            out[key][ok] = v
        best["alpha"] = mean
    elif m.method == "mixture":
        _mixture_block(scored, np.flatnonzero(status == "ok"), m, out)
        return out
    else:
        f = np.asarray(x[:, m.alpha_genes].todense()) * m.feature_scale
        fixed = m.lasso.predict(f) if n else np.zeros(0)
        status[(status == "ok") & ((fixed < 0) | (fixed > 1))] = "alpha_out_of_range"
        out["pic_alpha_hat"] = fixed
        ok = np.flatnonzero(status == "ok")
        best = _search(scored[ok], pa, pb, eps=m.eps, alpha=fixed[ok], tau=1.0,
                       device=m.device, progress=m.progress)
    out["pic_a"][ok] = np.asarray(m.ga, object)[best["ia"]]
    out["pic_b"][ok] = np.asarray(m.gb, object)[best["ib"]]
    for key in ("alpha", "ll", "p_pair", "p_a", "p_b"):
        out[f"pic_{key}"][ok] = best[key]
    return out


def deconvolve(pics: AnnData, singlets: AnnData, *, groupby: str, a, b, method: str = "ml",
               n_umis: int | None = None, markers=None,
               blacklist=_profiles.DEFAULT_BLACKLIST, eps: float = 1e-4, seed: int = 0,
               calibrate: bool = True, alpha_model: str = "regression", n_train: int = 20000,
               cv: int = 10,
               rescale_to_1000: bool = True, search_genes: str = "all",
               n_between: int = 50, concentration: float = 1.0, mixture_iter: int = 500,
               device: str | None = None, progress: bool = False) -> None:
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
        ``"ml"`` (joint maximum likelihood over pair and alpha; alpha then learned from the
        pair's likelihood and the PIC's composition, see ``alpha_model``), ``"picseq"`` (the
        published algorithm: LASSO alpha, then exhaustive pair search with fixed alpha) or
        ``"mixture"`` (soft weights over all groups by batched EM, MAP under a Dirichlet prior;
        flags triplets and contamination).
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
        Random seed, a non-negative integer (down-sampling, simulated PICs for training and
        calibration).
    calibrate
        ml: fit the temperatures of the pair posterior and of the alpha likelihood, and the
        alpha regression, on PICs simulated from half of the reference against profiles of the
        other half (else temperatures 1 and the posterior mean of alpha).
    alpha_model
        ml: ``"regression"`` (gradient-boosted trees learned on ``n_train`` simulated PICs map
        the pair's alpha likelihood and the PIC's UMI shares in bins of genes, ordered from A-
        to B-specific, to alpha, with a 90 % prediction interval from two quantile models
        widened by split conformal prediction on PICs of held-out cells; it corrects what
        group-mean profiles get wrong about one particular cell, and needs scikit-learn) or
        ``"posterior"`` (the posterior mean of alpha under the cell-size prior, with a 90 %
        credible interval). With too few simulated PICs the posterior is used;
        ``uns['pic']['alpha_model']`` says which.
    n_train, cv
        Simulated training PICs: picseq's alpha LASSO (published: 20,000) and ml's alpha
        regression; cv: CV folds of the LASSO.
    rescale_to_1000
        picseq: scale real PIC features to 1000 UMIs (False reproduces the Cohen 2022 quirk).
    search_genes
        ml and mixture: the genes of the pair search, ``"all"`` (the whole transcriptome; most
        accurate) or ``"markers"`` (markers, genes between the populations and one bucket for the rest;
        several times fewer terms per PIC).
    n_between
        ml with ``search_genes="markers"``: the top genes (each direction) between population
        A and B added to the markers.
    concentration, mixture_iter
        mixture: Dirichlet concentration of the prior on the weights (1: maximum likelihood;
        < 1: sparser weights) and the most EM iterations.
    device
        Where the pair search runs: ``"cpu"`` (Numba), ``"gpu"`` (our CUDA kernel) or None
        (where ``pics.X`` lives). ``pics.X`` may be a Dask array of PICs (rows in blocks):
        every row block is then one task of the active Dask scheduler (e.g. a dask-cuda
        cluster), each with its own down-sampling generator (seed, block index).
    progress
        Print a line to stderr after each chunk of the pair search.

    Returns
    -------
    Nothing; sets in ``pics.obs``: ``pic_a``, ``pic_b`` (group names), ``pic_alpha``, ``pic_ll``
    (maximised log-likelihood of the chosen pair over the search genes), ``pic_p_pair``
    (posterior of the chosen pair), ``pic_p_a``, ``pic_p_b`` (marginal posteriors of the
    chosen A and B groups), ``pic_status`` ('ok', 'too_few_umis', 'alpha_out_of_range',
    'no_counts'); ml also ``pic_alpha_ml`` (alpha maximising the pair's LL),
    ``pic_alpha_posterior`` (posterior mean under the size prior), ``pic_alpha_lo``,
    ``pic_alpha_hi`` (90 % interval of ``pic_alpha``); picseq also ``pic_alpha_hat`` (the
    regression's prediction, including dropped PICs). ``pics.uns['pic']``: method, parameters,
    markers, groups_a, groups_b; picseq ``alpha_cv_r2``; ml ``pair_temper``, ``alpha_temper``,
    ``alpha_calibration_r2`` (R^2 of the posterior mean on the calibration PICs),
    ``alpha_model`` (the one used) and, for the regression, ``alpha_regression_r2`` (on PICs
    from a fifth of the training cells held out of the fit) and ``alpha_interval_margin`` (the
    conformal widening of its interval, from the same PICs). mixture: ``pic_a`` and
    ``pic_b`` are the heaviest group of each side, ``pic_alpha`` the total A weight,
    ``pic_p_a`` / ``pic_p_b`` the chosen group's share of its side's weight, ``pic_p_pair``
    NaN, ``pic_n_major`` the number of groups with weight >= 0.1 (> 2: a triplet or
    contamination), ``pics.obsm['pic_weights']`` (PICs x groups, columns in
    ``uns['pic']['weight_groups']``; NaN rows for PICs not deconvolved).
    """
    check_anndata(pics, step="deconvolve", name="pics")
    check_anndata(singlets, step="deconvolve", name="singlets")
    if method not in _METHODS:
        raise ValueError(f"deconvolve: method must be one of {_METHODS}, got {method!r}.")
    if alpha_model not in _ALPHA_MODELS:
        raise ValueError(f"deconvolve: alpha_model must be one of {_ALPHA_MODELS}, got "
                         f"{alpha_model!r}.")
    if device not in (None, "cpu", "gpu"):
        raise ValueError(f"deconvolve: device must be None, 'cpu' or 'gpu', got {device!r}.")
    n_umis, seed, n_train, cv, n_between, mixture_iter = _check_ints(
        n_umis, seed, n_train, cv, n_between, mixture_iter)
    markers, blacklist = _check_options(eps, concentration, search_genes, markers, blacklist,
                                        singlets.var_names)  # fmt: skip
    labels, ga, gb, blocks, s = _validate(pics, singlets, groupby, a, b)
    device = device or ("gpu" if is_gpu(pics.X) else "cpu")
    if method == "picseq" and n_umis is None:
        n_umis = 1000
    in_ref = np.isin(labels, ga + gb)
    mk = _profiles.select_markers(s[in_ref], labels[in_ref], ga, gb, singlets.var_names,
                                  blacklist=blacklist, extra=markers)
    if mk.size == 0 and method == "picseq":
        msg = ("deconvolve: no marker genes found (footprints compare each group with the median "
               "of its population, so a population of one or two groups has none); pass "
               "markers=, split the populations into more groups, or use method='ml'.")
        raise ValueError(msg)
    info = {"method": method, "groupby": groupby, "groups_a": ga, "groups_b": gb,
            "markers": np.asarray(singlets.var_names[mk]).astype(str).tolist(), "eps": eps,
            "n_umis": n_umis, "seed": seed, "device": device}
    model = _Model(method, ga, gb, eps, n_umis, mk, np.zeros((0, 0)), device, progress=progress)
    if method in ("ml", "mixture"):
        design = model.design = _MLDesign(s, labels, ga, gb, mk, n_between, search_genes)
        model.search_profiles = design.profiles(s, labels, ga + gb)
        info.update(search_genes=search_genes, n_search_genes=design.n_genes(s.shape[1]))
    if method == "mixture":
        model.concentration, model.n_iter = concentration, mixture_iter
        info.update(weight_groups=ga + gb, concentration=concentration,
                    mixture_iter=mixture_iter)
    elif method == "ml":
        model.full_profiles, model.prior = _alpha_parts(
            s, labels, ga + gb, full=model.search_profiles if design.all else None)
        used = "posterior"
        if calibrate:
            depth = n_umis or _median_total(blocks)
            model.tau_pair, model.tau_alpha, r2 = _calibrate(
                singlets, s, labels, ga, gb, groupby, design, n_umis=depth, eps=eps, seed=seed)
            info["alpha_calibration_r2"] = r2
            if alpha_model == "regression":
                pop = np.where(np.isin(labels, ga), "A", np.where(np.isin(labels, gb), "B", ""))
                model.alpha_bins = _alpha_regression.composition_bins(
                    _full_profiles(s, pop, ["A", "B"]), singlets.var_names)
                model.alpha_regression = _fit_alpha_regression(
                    singlets, s, labels, ga, gb, groupby, model.alpha_bins, n_pics=n_train,
                    n_umis=depth, eps=eps, seed=seed)
            if model.alpha_regression is not None:
                used = "regression"
                info.update(alpha_regression_r2=model.alpha_regression.r2,
                            alpha_interval_margin=model.alpha_regression.margin,
                            n_train=n_train)
        info.update(pair_temper=model.tau_pair, alpha_temper=model.tau_alpha,
                    calibrated=calibrate, alpha_model=used)
    else:
        gm_a = _profiles.geomean(s[:, mk], labels, ga)
        gm_b = _profiles.geomean(s[:, mk], labels, gb)
        model.search_profiles = _profiles.profiles(np.hstack([gm_a, gm_b]))
        sim = simulate_pics(singlets, groupby=groupby, a=ga, b=gb, n_pics=n_train,
                            n_umis=int(n_umis), seed=seed + 1)
        feats = np.union1d(_alpha.alpha_genes(s, np.flatnonzero(np.isin(labels, ga))),
                           _alpha.alpha_genes(s, np.flatnonzero(np.isin(labels, gb))))
        scale = 1000.0 / n_umis
        model.lasso, r2 = _alpha.fit_alpha_model(sim.X.tocsr().astype(np.float64),
                                                 sim.obs["true_alpha"].to_numpy(), feats,
                                                 scale=scale, cv=cv, seed=seed)
        model.alpha_genes = feats
        model.feature_scale = scale if rescale_to_1000 else 1.0
        info.update(alpha_cv_r2=r2, alpha_genes=np.asarray(singlets.var_names[feats])
                    .astype(str).tolist(), lasso_lambda=float(model.lasso.alpha_),
                    n_train=n_train)

    parts = _run_blocks(blocks, model, seed)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # write back only now: nothing above touched the inputs
    weights = out.pop("pic_weights", None)
    if weights is not None:
        pics.obsm["pic_weights"] = weights
    for k, v in out.items():
        if k in ("pic_a", "pic_b"):
            v = pd.Categorical(v, categories=ga if k == "pic_a" else gb)
        elif k == "pic_status":
            v = pd.Categorical(v.astype(str))
        pics.obs[k] = v
    pics.uns["pic"] = info


def _row_totals(block) -> np.ndarray:
    return to_host(np.asarray(block.sum(axis=1)).ravel() if not is_gpu(block)
                   else block.sum(axis=1).ravel())


def _median_total(blocks) -> int:
    """Median UMI total of the PICs with any counts (the depth of the calibration PICs)."""
    if isinstance(blocks, list):
        import dask

        tot = np.concatenate(dask.compute(*[dask.delayed(_row_totals)(b) for b in blocks]))
    else:
        tot = _row_totals(blocks)
    return int(np.median(tot[tot > 0])) if np.any(tot > 0) else 1000


def _run_blocks(blocks, model: _Model, seed: int) -> list[dict]:
    """In memory: one block with the seed's generator. Dask: one task per row block, each with
    its own generator (seed, block index), computed by the active Dask scheduler."""
    if not isinstance(blocks, list):
        return [_run_block(blocks, model, np.random.default_rng(seed))]
    import dask

    tasks = [dask.delayed(_run_dask_block)(b, model, (seed, i)) for i, b in enumerate(blocks)]
    return list(dask.compute(*tasks))


def _run_dask_block(block, model: _Model, seed) -> dict:
    x = _host_counts(block, "pics block")
    return _run_block(x, model, np.random.default_rng(list(seed)))
