"""The per-batch pipeline of scrublet: scanpy's preprocessing on our steps, the doublets, the
embedding, the scores and the threshold; returns plain arrays and the uns dict, writes
nothing."""

from __future__ import annotations

import math
import warnings

import numpy as np
from anndata import AnnData

from ..._backend import to_host, xp_of
from ..._settings import DEBUG, default_n_pcs, settings, user_stacklevel
from ..._validation import canonical
from .._filter import filter_cells, filter_genes
from .._hvg import highly_variable_genes
from .._log1p import log1p
from .._neighbors import warn_pca_fallback
from .._normalize import normalize_total
from .._pca import log_added, pca
from ._embed import embed
from ._score import likelihoods, neighbour_parents, reversed_twins, search
from ._simulate import check_random_state, sample_pairs, simulate
from ._threshold import threshold_minimum

_STEP = "scrublet"
_SIM_TARGET = 1e6  # scrublet normalises observed cells and doublets to this total


def simulate_doublets(x, ratio, subsampling, rs, *, step: str):
    n_sim = int(x.shape[0] * ratio)
    if n_sim < 1 or n_sim > x.shape[0] ** 2:
        msg = (f"{step}: {x.shape[0]} cells x sim_doublet_ratio={ratio} gives {n_sim} doublets; "
               f"between 1 and {x.shape[0] ** 2} (distinct ordered pairs) are possible.")  # fmt: skip
        raise ValueError(msg)
    pairs = sample_pairs(x.shape[0], n_sim, rs)
    sim, totals = simulate(x, pairs, rate=subsampling, rs=rs)
    return sim, totals, pairs


def _normalised(x, target_sum=None):
    a = AnnData(x)
    normalize_total(a, target_sum=target_sum)
    return a.X


def preprocess(x, opts):
    """scanpy's scrublet preprocessing of raw counts `x` (a matrix of its own, changed):
    (kept cell positions, n_genes of those, observed matrix, doublet matrix, parents)."""
    # duplicate entries summed first: the observed matrix's per-gene statistics (a square) read
    # the matrix's value, as scanpy's scrublet does (they read each entry apart: scores 0.33 off)
    x = canonical(x, step=_STEP, sum_duplicates=True)
    work = AnnData(x)
    work.obs_names = np.arange(x.shape[0]).astype(str)
    filter_genes(work, min_cells=3)
    filter_cells(work, min_genes=3)
    if not (work.n_obs and work.n_vars):  # the next steps' 'empty matrix' error named them
        msg = (f"{_STEP}: no {'gene' if not work.n_vars else 'cell'} is left after scrublet's filters "
               f"(genes in >= 3 cells, cells with >= 3 such genes) of {x.shape[0]} cells x {x.shape[1]} genes; "
               "it needs raw counts of more genes and cells.")  # fmt: skip
        raise ValueError(msg)
    kept = work.obs_names.astype(int).to_numpy()
    n_genes = work.obs["n_genes"].to_numpy()
    raw = work.X.copy()
    normalize_total(work)
    work.layers["log1p"] = work.X.copy()
    log1p(work, layer="log1p")
    highly_variable_genes(work, layer="log1p")
    hvg = np.flatnonzero(work.var["highly_variable"].to_numpy())
    if hvg.size <= opts["n_prin_comps"] or kept.size <= opts["n_prin_comps"]:
        msg = (f"{_STEP}: after filtering, {kept.size} cells and {hvg.size} highly variable genes are left; "
               f"n_prin_comps={opts['n_prin_comps']} needs more than that of both.")  # fmt: skip
        raise ValueError(msg)
    cols = xp_of(x).asarray(hvg)
    obs = canonical(work.X[:, cols], step=_STEP)
    raw = canonical(raw[:, cols], step=_STEP)
    del work
    rs = check_random_state(opts["random_state"], step=_STEP)
    sim, _, parents = simulate_doublets(raw, opts["sim_doublet_ratio"], opts["synthetic_doublet_umi_subsampling"], rs,
                                step=_STEP)  # fmt: skip
    if opts["log_transform"]:
        obs, sim = log1p(obs), log1p(sim.astype(np.float32) if sim.dtype.kind != "f" else sim)
    obs, sim = _normalised(obs, _SIM_TARGET), _normalised(sim, _SIM_TARGET)
    return kept, n_genes, obs, sim, parents


def scrub(x, adata_sim, opts):
    """One batch: (kept positions, scores, predictions, n_genes, uns dict)."""
    if adata_sim is None:
        kept, n_genes, obs, sim, parents = preprocess(x, opts)
        ratio = opts["sim_doublet_ratio"]
    else:
        kept, n_genes, obs = np.arange(x.shape[0]), None, x
        sim = canonical(adata_sim.X, step=_STEP)
        parents = to_host(adata_sim.obsm["doublet_parents"])  # to_gpu moves obsm too
        ratio = adata_sim.uns.get("scrublet", {}).get("parameters", {}).get("sim_doublet_ratio", None)
    n_obs, n_sim = obs.shape[0], sim.shape[0]
    k = opts["n_neighbors"]
    k = int(round(0.5 * np.sqrt(n_obs))) if k is None else k  # int: NumPy 1 keeps round() a float64
    k_adj = int(round(k * (1 + n_sim / float(n_obs))))
    rs = check_random_state(opts["random_state"], step=_STEP)
    settings.log(f"Embedding transcriptomes using {'PCA' if opts['mean_center'] else 'Truncated SVD'}...")
    emb_obs, emb_sim = embed(obs, sim, mean_center=opts["mean_center"], normalize_variance=opts["normalize_variance"],
                             n_comps=opts["n_prin_comps"], rs=rs)  # fmt: skip
    start_search = settings.log("computing neighbors", level=DEBUG)  # scanpy's kNN step, as it logs it
    if opts["n_prin_comps"] <= default_n_pcs():
        settings.log("    using data matrix X directly")
    else:  # scanpy's kNN takes a graph's representation: 50 PCs of the joined embedding, with its warning
        emb_obs, emb_sim = _joint_pcs(emb_obs, emb_sim)
    ind, algorithm = search(emb_obs, emb_sim, k_adj, metric=opts["knn_dist_metric"],
                            use_approx_neighbors=opts["use_approx_neighbors"], rs=rs,
                            twins=reversed_twins(parents, sim))  # fmt: skip
    settings.log("computed neighbors", level=DEBUG, start=start_search)
    settings.progress(f"{_STEP}: {n_obs} cells, {n_sim} doublets, {k_adj} neighbours ({algorithm} search).")
    score, _ = likelihoods((ind >= n_obs).sum(axis=1), k=k_adj, n_obs=n_obs, n_sim=n_sim,
                           rho=opts["expected_doublet_rate"], se_rho=opts["stdev_doublet_rate"])  # fmt: skip
    score_obs, score_sim = score[:n_obs], score[n_obs:]
    uns = {
        "doublet_scores_sim": score_sim,
        "doublet_parents": parents,
        "parameters": {"expected_doublet_rate": opts["expected_doublet_rate"], "sim_doublet_ratio": ratio,
                       "n_neighbors": k, "random_state": opts["random_state"]},
    }  # fmt: skip
    threshold = _threshold(score_obs, score_sim, opts)
    if threshold is None:
        predicted = np.zeros(n_obs, dtype=bool)
    else:
        uns["threshold"] = threshold
        predicted = score_obs > threshold
    if opts["get_doublet_neighbor_parents"]:
        uns["doublet_neighbor_parents"] = neighbour_parents(ind, parents, n_obs)
    return kept, score_obs, predicted, n_genes, uns


def _joint_pcs(emb_obs, emb_sim):
    """The first `default_n_pcs()` principal components (float32, pca's default) of the observed cells' and
    doublets' embeddings together, split back: what scanpy's neighbour search runs on where the
    embedding has more columns (n_prin_comps > 50)."""
    xp = xp_of(emb_obs)
    n_comps = emb_obs.shape[1]
    warn_pca_fallback(n_comps)
    pcs = pca(xp.concatenate([emb_obs, emb_sim]), default_n_pcs())
    log_added()  # scanpy's PCA here is of an AnnData
    return pcs[: emb_obs.shape[0]], pcs[emb_obs.shape[0] :]


def _threshold(score_obs, score_sim, opts):
    threshold = opts["threshold"]
    if threshold is None:
        try:
            threshold = threshold_minimum(score_sim)
        except RuntimeError:
            warnings.warn("Failed to automatically identify doublet score threshold. Run `call_doublets` "
                          "with user-specified threshold (pass threshold=...).", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
            return None
        if opts["verbose"]:
            settings.log(f"Automatically set threshold at doublet score = {threshold:.2f}")
    if opts["verbose"]:
        detected = float(np.mean(score_obs > threshold))
        detectable = float(np.mean(score_sim > threshold))
        overall = detected / detectable if detectable else math.nan
        settings.log(f"Detected doublet rate = {100 * detected:.1f}%\n"
                     f"Estimated detectable doublet fraction = {100 * detectable:.1f}%\n"
                     "Overall doublet rate:\n"
                     f"\tExpected   = {100 * opts['expected_doublet_rate']:.1f}%\n"
                     f"\tEstimated  = {100 * overall:.1f}%")  # fmt: skip
    return threshold
