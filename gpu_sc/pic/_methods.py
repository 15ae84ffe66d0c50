"""The deconvolution methods, one class each (`METHODS`: name -> class).

A method is built from the validated reference and options, learns what it needs from the
singlets once (`fit`, which returns its entries of ``uns['pic']``), and then deconvolves blocks
of PICs (`scored`: the counts its search reads; `run`: fills one block's outputs for the PICs
still 'ok'). After `fit` it holds no singlets, only profiles and models, so that it travels
cheaply to every Dask task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._backend import to_host
from .._settings import Progress
from . import _alpha, _alpha_regression, _loglik, _ml_fit, _posterior, _profiles
from ._args import derived_seed
from ._simulate import simulate_pics
from ._umi_draws import canonical_rows, in_canonical_order


@dataclass
class Reference:
    """The validated singlets and what every method reads from them."""

    singlets: AnnData
    s: sp.csr_matrix  # their counts, a checked host CSR matrix
    labels: np.ndarray  # group label of each singlet (str)
    ga: list
    gb: list
    groupby: str
    markers: np.ndarray  # footprint marker genes (column indices)
    blacklisted: np.ndarray | None = None  # genes the blacklist excludes (bool per gene)


@dataclass
class Options:
    """deconvolve's checked arguments that the methods read."""

    eps: float
    n_umis: int | None
    seed: int
    n_train: int
    cv: int
    calibrate: bool
    alpha_model: str
    rescale_to_1000: bool
    search_genes: str
    n_between: int
    concentration: float
    mixture_iter: int
    calibration_depth: int | None
    device: str
    progress: bool


class _Method:
    """What every method shares: the groups, eps, down-sampling depth, device, and the pair
    search over `search_profiles` (genes x (K_A + K_B))."""

    default_n_umis: int | None = None  # the down-sampling depth when n_umis is None
    own_obs: tuple[str, ...] = ()  # obs columns and obsm keys only this method writes (a later
    own_obsm: tuple[str, ...] = ()  # run of another method drops them: deconvolve's stale keys)

    def __init__(self, ref: Reference, opt: Options):
        self.ga, self.gb, self.eps, self.device = ref.ga, ref.gb, opt.eps, opt.device
        self.n_umis, self.progress = opt.n_umis, opt.progress
        self.search_profiles = np.zeros((0, 0))
        # genes some reference cell of the groups holds: a PIC with no UMI on them tells no
        # pair from another (its likelihood is the same for all), whatever genes are scored
        in_ref = np.isin(ref.labels, ref.ga + ref.gb).astype(np.float64)
        self.expressed = (np.asarray(ref.s.T @ in_ref).ravel() > 0).astype(np.float64)  # no copy of the rows

    def _search(self, x, *, alpha, tau) -> dict:
        """Best pair per PIC (tie rule), its LL and alpha, and the posterior softmax(tau * LL)
        over pairs, PICs streamed in chunks on the CPU or the GPU."""
        ka = len(self.ga)
        track = Progress("deconvolve: pair search", x.shape[0], unit="PICs") if self.progress else None
        r = _loglik.pair_scores(_loglik.on_device(x, self.device), self.search_profiles[:, :ka],
                                self.search_profiles[:, ka:], eps=self.eps, alpha=alpha, temper=tau,
                                progress=None if track is None else lambda done, _: track(done))  # fmt: skip
        return {"ia": r.ia, "ib": r.ib, "ll": r.ll, "alpha": r.alpha,
                "p_pair": r.p_pair, "p_a": r.p_a[np.arange(r.ia.size), r.ia],
                "p_b": r.p_b[np.arange(r.ib.size), r.ib], "posterior": r.posterior}  # fmt: skip

    def _write_best(self, out: dict, ok: np.ndarray, best: dict) -> None:
        out[K.OBS_PIC_A][ok] = np.asarray(self.ga, object)[best["ia"]]
        out[K.OBS_PIC_B][ok] = np.asarray(self.gb, object)[best["ib"]]
        for key in ("alpha", "ll", "p_pair", "p_a", "p_b"):
            out[f"pic_{key}"][ok] = best[key]
        # the kept pair posterior of every PIC of the block (empty rows where not 'ok')
        n = out[K.OBS_PIC_STATUS].size
        place = sp.csr_matrix((np.ones(ok.size), (ok, np.arange(ok.size))), shape=(n, ok.size))
        out[K.OBSM_PAIR_POSTERIOR] = (place @ best["posterior"]).tocsr()


class _DesignSearch(_Method):
    """ml and mixture: the pair search runs over the genes of an `MLDesign`."""

    def fit(self, ref: Reference, opt: Options, blocks) -> dict:
        self.design = _ml_fit.MLDesign(ref.s, ref.labels, ref.ga, ref.gb, ref.markers,
                                       opt.n_between, opt.search_genes,
                                       ref.blacklisted)  # fmt: skip
        if not self.design.all and self.design.genes.size == 0:
            msg = (f"deconvolve: the pair search has no gene (search_genes={opt.search_genes!r}: every candidate "
                   "gene is blacklisted or has 10 UMIs or fewer in the singlets); pass a narrower blacklist, "
                   "markers=, or search_genes='all'.")  # fmt: skip
            raise ValueError(msg)
        self.search_profiles = self.design.profiles(ref.s, ref.labels, ref.ga + ref.gb)
        return {"search_genes": opt.search_genes,
                "n_search_genes": self.design.n_genes(ref.s.shape[1])}  # fmt: skip

    def scored(self, x: sp.csr_matrix) -> sp.csr_matrix:
        return self.design.counts(x)


class ML(_DesignSearch):
    """Joint maximum likelihood over pair and alpha; alpha then from the regression or the
    posterior under the cell-size prior."""

    own_obs = ("pic_alpha_ml", "pic_alpha_posterior", "pic_alpha_lo", "pic_alpha_hi")

    def fit(self, ref: Reference, opt: Options, blocks) -> dict:
        info = super().fit(ref, opt, blocks)
        s, labels, ga, gb = ref.s, ref.labels, ref.ga, ref.gb
        self.full_profiles, self.prior = _ml_fit.alpha_parts(
            s, labels, ga + gb, full=self.search_profiles if self.design.all else None)
        self.tau_pair, self.tau_alpha = 1.0, 1.0
        self.alpha_bins = self.alpha_regression = None
        used = "posterior"
        if opt.calibrate:
            depth = opt.calibration_depth or opt.n_umis or _ml_fit.median_total(blocks)
            info["calibration_depth"] = int(depth)
            self.tau_pair, self.tau_alpha, r2 = _ml_fit.calibrate(
                ref.singlets, s, labels, ga, gb, ref.groupby, self.design, n_umis=depth,
                eps=opt.eps, seed=opt.seed, device=self.device)  # fmt: skip
            info["alpha_calibration_r2"] = r2
            if opt.alpha_model == "regression":
                pop = np.where(np.isin(labels, ga), "A", np.where(np.isin(labels, gb), "B", ""))
                self.alpha_bins = _alpha_regression.composition_bins(
                    _ml_fit.full_profiles(s, pop, ["A", "B"]), ref.singlets.var_names)
                self.alpha_regression = _ml_fit.fit_alpha_regression(
                    ref.singlets, s, labels, ga, gb, ref.groupby, self.alpha_bins,
                    n_pics=opt.n_train, n_umis=depth, eps=opt.eps, seed=opt.seed, device=self.device,
                    design=self.design, tau_pair=self.tau_pair)  # fmt: skip
            if self.alpha_regression is not None:
                used = "regression"
                info.update(alpha_regression_r2=self.alpha_regression.r2,
                            alpha_interval_margin=self.alpha_regression.margin,
                            n_train=opt.n_train)  # fmt: skip
        info.update(pair_temper=self.tau_pair, alpha_temper=self.tau_alpha,
                    calibrated=opt.calibrate, alpha_model=used)  # fmt: skip
        return info

    def run(self, x: sp.csr_matrix, scored: sp.csr_matrix, out: dict) -> None:
        n, ka = x.shape[0], len(self.ga)
        ok = np.flatnonzero(out[K.OBS_PIC_STATUS] == K.PIC_STATUS_OK)
        best = self._search(scored[ok], alpha=None, tau=self.tau_pair)
        grid_ll = _posterior.grid_loglik(_loglik.on_device(x[ok], self.device), self.full_profiles[:, :ka],
                                         self.full_profiles[:, ka:], best["ia"], best["ib"],
                                         eps=self.eps)  # fmt: skip
        mean, lo, hi = _posterior.posterior(
            grid_ll, self.prior.log_density(best["ia"], best["ib"], ka), self.tau_alpha)
        posterior_mean = mean
        if self.alpha_regression is not None:
            f = _alpha_regression.features(x[ok], self.alpha_bins,
                                           grid_ll[:, ::_alpha_regression.STRIDE], self.prior,
                                           best["ia"], best["ib"], ka)  # fmt: skip
            mean, lo, hi = self.alpha_regression.predict(f)
        for key, v in (("pic_alpha_ml", best["alpha"]), ("pic_alpha_posterior", posterior_mean),
                       ("pic_alpha_lo", lo), ("pic_alpha_hi", hi)):
            out[key] = np.full(n, np.nan)
            out[key][ok] = v
        best["alpha"] = mean
        self._write_best(out, ok, best)


class Mixture(_DesignSearch):
    """Soft weights over all groups (batched EM, MAP under a Dirichlet prior)."""

    own_obs, own_obsm = ("pic_n_major",), ("pic_weights",)

    def fit(self, ref: Reference, opt: Options, blocks) -> dict:
        info = super().fit(ref, opt, blocks)
        self.concentration, self.n_iter = opt.concentration, opt.mixture_iter
        info.update(weight_groups=ref.ga + ref.gb, concentration=opt.concentration,
                    mixture_iter=opt.mixture_iter)  # fmt: skip
        return info

    def run(self, x: sp.csr_matrix, scored: sp.csr_matrix, out: dict) -> None:
        """Soft weights and their summary for the PICs still 'ok' (`scored`: their counts over
        the search genes)."""
        from ._mixture import mixture_weights, summarise

        ok = np.flatnonzero(out[K.OBS_PIC_STATUS] == K.PIC_STATUS_OK)
        w, ll, _ = mixture_weights(_loglik.on_device(scored[ok], self.device), self.search_profiles,
                                   eps=self.eps, concentration=self.concentration,
                                   n_iter=self.n_iter)  # fmt: skip
        w, ll = to_host(w), to_host(ll)
        sm = summarise(w, len(self.ga))
        n = out[K.OBS_PIC_STATUS].size
        for side, names in (("a", self.ga), ("b", self.gb)):
            good = sm[side] >= 0  # -1: no weight on this side (concentration < 1)
            out[f"pic_{side}"][ok[good]] = np.asarray(names, object)[sm[side][good]]
            out[f"pic_p_{side}"][ok] = sm[f"p_{side}"]
        # a PIC with no weight left on one side is a singlet, not a pair: the steps that take
        # the 'ok' PICs' pairs would find a missing group
        out[K.OBS_PIC_STATUS][ok[(sm["a"] < 0) | (sm["b"] < 0)]] = "one_sided"
        out[K.OBS_PIC_ALPHA][ok] = sm["alpha"]
        out["pic_ll"][ok] = ll
        out["pic_n_major"] = np.zeros(n, np.int64)
        out["pic_n_major"][ok] = sm["n_major"]
        out["pic_weights"] = np.full((n, len(self.ga) + len(self.gb)), np.nan)
        out["pic_weights"][ok] = w


class PicSeq(_Method):
    """The published algorithm: LASSO alpha from marker genes, then the exhaustive pair search
    at that fixed alpha over the markers' geometric-mean profiles."""

    default_n_umis = 1000
    own_obs = ("pic_alpha_hat",)

    def __init__(self, ref: Reference, opt: Options):
        if ref.markers.size == 0:
            msg = ("deconvolve: no marker genes found (footprints compare each group with the "
                   "median of its population, so a population of one or two groups has none); "
                   "pass markers=, split the populations into more groups, or use method='ml'.")
            raise ValueError(msg)
        super().__init__(ref, opt)
        self.markers = ref.markers

    def fit(self, ref: Reference, opt: Options, blocks) -> dict:
        s, labels, ga, gb, mk = ref.s, ref.labels, ref.ga, ref.gb, ref.markers
        gm_a = _profiles.geomean(s[:, mk], labels, ga)
        gm_b = _profiles.geomean(s[:, mk], labels, gb)
        self.search_profiles = _profiles.profiles(np.hstack([gm_a, gm_b]))
        sim = simulate_pics(in_canonical_order(ref.singlets), groupby=ref.groupby, a=ga, b=gb, n_pics=opt.n_train,
                            n_umis=int(self.n_umis), seed=derived_seed(opt.seed, 1))  # fmt: skip
        if sim.n_obs < max(opt.cv, 10):  # the LASSO's folds need PICs (sklearn's own error names neither)
            msg = (f"deconvolve: picseq's alpha LASSO has {sim.n_obs} training PICs of n_umis={self.n_umis} "
                   f"UMIs (n_train={opt.n_train}; two singlets must hold that many UMIs between them); "
                   f"lower n_umis or raise n_train (the fit needs {max(opt.cv, 10)} or more).")  # fmt: skip
            raise ValueError(msg)
        # each population's cells in name order: the genes' float means, and so their ranks,
        # then do not depend on the singlets' row order
        feats = np.union1d(*(_alpha.alpha_genes(s, canonical_rows(ref.singlets, np.isin(labels, g)))
                             for g in (ga, gb)))  # fmt: skip
        scale = 1000.0 / self.n_umis
        self.lasso, r2 = _alpha.fit_alpha_model(sim.X.tocsr().astype(np.float64),
                                                sim.obs[K.OBS_TRUE_ALPHA].to_numpy(), feats,
                                                scale=scale, cv=opt.cv, seed=opt.seed)  # fmt: skip
        self.alpha_genes = feats
        self.feature_scale = scale if opt.rescale_to_1000 else 1.0
        return {"alpha_cv_r2": r2,
                "alpha_genes": np.asarray(ref.singlets.var_names[feats]).astype(str).tolist(),
                "lasso_lambda": float(self.lasso.alpha_), "n_train": opt.n_train}  # fmt: skip

    def scored(self, x: sp.csr_matrix) -> sp.csr_matrix:
        return x[:, self.markers].tocsr()  # picseq scores marker genes only

    def run(self, x: sp.csr_matrix, scored: sp.csr_matrix, out: dict) -> None:
        status = out[K.OBS_PIC_STATUS]
        f = np.asarray(x[:, self.alpha_genes].todense()) * self.feature_scale
        fixed = self.lasso.predict(f) if x.shape[0] else np.zeros(0)
        status[(status == K.PIC_STATUS_OK) & ((fixed < 0) | (fixed > 1))] = "alpha_out_of_range"
        out["pic_alpha_hat"] = fixed
        ok = np.flatnonzero(status == K.PIC_STATUS_OK)
        self._write_best(out, ok, self._search(scored[ok], alpha=fixed[ok], tau=1.0))


METHODS: dict[str, type[_Method]] = {"ml": ML, "picseq": PicSeq, "mixture": Mixture}
