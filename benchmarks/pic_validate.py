"""Validate and time PIC-seq deconvolution (``gpu_sc.pic``) on synthetic PICs built from real
singlets with a known A group, B group and A share alpha.

    python benchmarks/pic_validate.py --datasets pbmc68k,pbmc4k,tnbc --methods ml,picseq \
        --seeds 0,1,2 --n-pics 1000 --out benchmarks/results/pic-cpu-$(date +%F).jsonl \
        --plot benchmarks/results/pic-cpu-$(date +%F).png
    python benchmarks/pic_validate.py --methods ml,picseq --seeds 0,1,2 --n-pics 1500 --claims \
        --out benchmarks/results/pic-claims-cpu-$(date +%F).jsonl
    python benchmarks/pic_validate.py --scale --scale-pics 2000 --methods ml,picseq \
        --out benchmarks/results/pic-scale-cpu-$(date +%F).jsonl

Validation mode, for every data set and seed: the singlets of population A and B are split
(70 % reference, 30 % PIC sources, never in the reference); each population's reference cells
are clustered (normalize_total + log1p + HVG + PCA + KMeans, about `--group-size` cells a group)
and the sources are assigned to the nearest cluster centre in the same PCA space (the truth);
PICs are simulated from the sources with ``gsc.pic.simulate_pics`` and deconvolved against the
reference with ``gsc.pic.deconvolve`` for each method and backend. One JSON row per
(dataset, method, backend, seed) is appended to `--out` as soon as it is measured.

Scale mode (`--scale`): 50 x 50 reference groups, PICs bootstrapped from a pool of simulated PICs
to `--scale-pics`, the whole ``deconvolve`` call timed, and the same exhaustive search done the
way the published R code does it (a per-PIC loop, one thread) on a subsample, extrapolated
linearly. Only the public ``gsc.pic`` API is called. See benchmarks/README.md.

`--claims` adds, on the same data sets, seeds, PICs and methods, the population-level claims
(rows with `mode` 'interaction' and 'frequencies'): `pic_interaction.py`'s null and planted
programmes and `pic_frequencies.py`'s pair composition, interval coverage and abundance test.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
import gpu_sc as gsc
from _common import cpu_name, gpu_name, jsonl_rows, versions
from gpu_sc._backend import describe, gpu_available
from gpu_sc._stats import r_squared

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
N_BINS = 10
MIN_GROUPS = 3


# ---------------------------------------------------------------------------------------------
# data sets: how to read each one and which cells form population A and B
# ---------------------------------------------------------------------------------------------

def _read(data_dir: Path, name: str, bundled: Callable | None = None):
    import anndata as ad

    path = data_dir / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.exists():
            return ad.read_h5ad(path), str(path)
        if bundled is not None:
            return bundled(), f"gpu_sc.datasets ({name}, bundled)"
    return None, f"{path} not found"


def _pbmc68k(data_dir):
    a, src = _read(data_dir, "pbmc68k_reduced_counts.h5ad", gsc.datasets.pbmc68k_reduced)
    if a is None:
        return None, src
    lab = a.obs["bulk_labels"].astype(str)
    # the T-cell labels of this data set: CD4+ ... / CD8+ ... (192 cells; two lack a capital T)
    pop = np.where(lab.str.startswith(("CD4+", "CD8+")), "A", np.where(lab == "Dendritic", "B", ""))
    return (a, pop, lab.to_numpy(), src), None


def _pbmc4k_pops(a_labels, b_labels):
    """A loader of pbmc4k (the shared file, else the bundled copy of the same cells) with
    population A = the cells of `a_labels`, B = those of `b_labels` (obs['Annotation'])."""

    def load(data_dir):
        a, src = _read(data_dir, "soupx_pbmc4k_half.h5ad", gsc.datasets.pbmc4k_half)
        if a is None:
            return None, src
        lab = a.obs["Annotation"].astype(str)
        pop = np.where(lab.isin(a_labels), "A", np.where(lab.isin(b_labels), "B", ""))
        return (a, pop, lab.to_numpy(), src), None

    return load


def _tnbc(data_dir):
    a, src = _read(data_dir, "copykat_tnbc_302.h5ad")
    if a is None:
        return None, src
    x = a.X.tocsc() if sp.issparse(a.X) else sp.csc_matrix(a.X)
    ptprc = x[:, a.var_names.get_loc("PTPRC")].toarray().ravel() > 0
    epcam = x[:, a.var_names.get_loc("EPCAM")].toarray().ravel() > 0
    pop = np.where(ptprc & ~epcam, "A", np.where(epcam & ~ptprc, "B", ""))
    lab = np.where(pop == "A", "immune", np.where(pop == "B", "tumour", "other"))
    return (a, pop, lab, src), None


def _hgmm(data_dir):
    """The 10x human + mouse barnyard (cell lines: HEK293T and NIH3T3): A = the human cells, B =
    the mouse cells (species-mixed barcodes left out), subtype = Cell Ranger's graph clusters.
    A data set no PIC code was tuned on (first measured 2026-12-07)."""
    import scanpy as sc

    folder = data_dir / "hgmm_1k_v3"
    path = folder / "filtered_feature_bc_matrix.h5"
    if not path.exists():
        return None, f"{path} not found"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sc.read_10x_h5(path)
        a.var_names_make_unique()  # 2,121 names shared by a human and a mouse gene
    species = pd.read_csv(folder / "species_calls.csv", index_col="barcode")["species_call"]
    cluster = pd.read_csv(folder / "cellranger_graphclust.csv", index_col="Barcode")["Cluster"]
    species = species.reindex(a.obs_names).astype(str).to_numpy()
    pop = np.where(species == "human", "A", np.where(species == "mouse", "B", ""))
    return (a, pop, cluster.reindex(a.obs_names).astype(str).to_numpy(), str(path)), None


# name -> (loader, PIC UMIs, population A, population B, subtype label column or None)
DATASETS = {
    "pbmc68k": (_pbmc68k, 1000, "T", "DC", "bulk_labels"),
    "pbmc4k": (_pbmc4k_pops(["T_CD4", "T_CD8"], ["MNP"]), 800, "T", "MNP", "Annotation"),
    "tnbc": (_tnbc, 1000, "immune", "tumour", None),
    # other populations of the same cells (B + NK x MNP; CD8 T + NK x MNP at 1,000 UMIs): the
    # done-when criteria measured on groups no tuning had seen
    "pbmc4k_bnk": (_pbmc4k_pops(["B", "NK"], ["MNP"]), 800, "BNK", "MNP", "Annotation"),
    "pbmc4k_cd8nk": (_pbmc4k_pops(["T_CD8", "NK"], ["MNP"]), 1000, "CD8NK", "MNP", "Annotation"),
    "hgmm": (_hgmm, 1000, "human", "mouse", "Cluster"),
}


# ---------------------------------------------------------------------------------------------
# reference groups and synthetic PICs
# ---------------------------------------------------------------------------------------------

def _lognorm(x: sp.csr_matrix) -> sp.csr_matrix:
    tot = np.asarray(x.sum(1)).ravel()
    y = sp.diags(1e4 / np.maximum(tot, 1)) @ x
    y = sp.csr_matrix(y)
    y.data = np.log1p(y.data)
    return y


def _cluster(x_ref: sp.csr_matrix, x_src: sp.csr_matrix, k: int, seed: int, min_size: int = 10):
    """KMeans labels (0..k'-1) of the reference cells and the nearest centre of each source cell,
    in a PCA (20 components) of the reference's highly variable genes after normalize_total 1e4
    + log1p (not z-scored: scaling lets a few outlier cells take clusters of their own). Clusters
    under `min_size` cells are dissolved into the nearest remaining centre while more than
    MIN_GROUPS remain; at MIN_GROUPS, KMeans is fitted once more without their cells (outliers),
    which then join the nearest centre."""
    import scanpy as sc
    from anndata import AnnData
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    ref = AnnData(_lognorm(x_ref))
    n_top = int(min(2000, max(50, ref.n_vars // 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, n_top_genes=n_top, flavor="seurat")
    hv = np.flatnonzero(ref.var["highly_variable"].to_numpy())
    a = np.asarray(ref.X[:, hv].todense())
    b = np.asarray(_lognorm(x_src)[:, hv].todense())
    pca = PCA(n_components=int(min(20, a.shape[0] - 1, hv.size)), random_state=seed)
    pa = pca.fit_transform(a)
    pb = pca.transform(b) if b.shape[0] else np.zeros((0, pa.shape[1]))
    centres = KMeans(k, n_init=10, random_state=seed).fit(pa).cluster_centers_

    def nearest(p, c):
        return ((p[:, None, :] - c[None]) ** 2).sum(-1).argmin(1) if p.shape[0] else np.zeros(0, int)

    lab = nearest(pa, centres)
    outlier = np.zeros(pa.shape[0], bool)
    for _ in range(pa.shape[0]):
        size = np.bincount(lab, minlength=centres.shape[0])
        small = min(min_size, a.shape[0] // centres.shape[0])
        if size.min() >= small:
            break
        if centres.shape[0] <= MIN_GROUPS:  # small population: fit again without the outliers
            outlier |= np.isin(lab, np.flatnonzero(size < small))
            if (~outlier).sum() < 2 * centres.shape[0] or outlier.sum() > pa.shape[0] // 5:
                break
            km = KMeans(centres.shape[0], n_init=10, random_state=seed).fit(pa[~outlier])
            centres = km.cluster_centers_
            lab = nearest(pa, centres)
            continue
        keep = np.arange(centres.shape[0]) != size.argmin()
        centres = np.vstack([pa[lab == j].mean(0) for j in np.flatnonzero(keep)
                             if np.any(lab == j)])  # fmt: skip
        lab = nearest(pa, centres)
    used, lab = np.unique(lab, return_inverse=True)  # no empty group
    return lab, nearest(pb, centres[used])


def _simulate(src, a, b, n_pics: int, n_umis: int, seed: int, max_reuse: int | None = None):
    """`n_pics` PICs from the public simulate_pics; it drops attempts that miss `n_umis`, so more
    attempts are made (up to 5 rounds) until there are enough. With `max_reuse` (each source
    cell in at most that many PICs), one call with attempts to spare, since the cap holds
    within a call: fewer PICs where the sources run out."""
    import anndata as ad

    if max_reuse is not None:
        want = 4 * n_pics + 100
        pics = gsc.pic.simulate_pics(src, groupby="grp", a=a, b=b, n_pics=want, n_umis=n_umis,
                                     max_uses=max_reuse, seed=seed * 1000)  # fmt: skip
        parts, attempts = [pics], want
    else:
        parts, made, attempts, rnd = [], 0, 0, 0
        rate = 1.0
        while made < n_pics and rnd < 5:
            want = int(np.ceil((n_pics - made) / max(rate, 0.02) * 1.1)) + 5
            p = gsc.pic.simulate_pics(src, groupby="grp", a=a, b=b, n_pics=want, n_umis=n_umis,
                                      seed=seed * 1000 + rnd)
            attempts += want
            rate = max((made + p.n_obs) / attempts, 1e-3)
            parts.append(p)
            made += p.n_obs
            rnd += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pics = ad.concat(parts, join="outer", merge="same") if len(parts) > 1 else parts[0]
    pics = pics[:n_pics].copy()
    pics.obs_names = [f"pic{i}" for i in range(pics.n_obs)]
    return pics, attempts


def _expressed(a, cells):
    """`a` restricted to `cells` and the genes with at least one UMI in them: no cell total
    changes, and the deconvolution cannot use an all-zero gene."""
    sub = a[cells]
    x = sp.csr_matrix(sub.X)
    keep = np.asarray(x.sum(0)).ravel() > 0
    return sub[:, keep].copy()


def build(name: str, data_dir: Path, seed: int, n_pics: int, group_size: int,
          holdout: float = 0.3, max_reuse: int | None = None):
    """Reference singlets (obs['grp']), PICs with truth, and what was built; or None, reason.
    `max_reuse`: each held-out source cell in at most that many PICs (None: drawn with
    replacement, so TNBC's 11-18 immune sources stand in some 80-140 of 1,500 PICs each)."""
    loader, n_umis, pop_a, pop_b, sub_key = DATASETS[name]
    got, why = loader(data_dir)
    if got is None:
        return None, why
    adata, pop, subtype, src = got
    cells = np.flatnonzero(pop != "")
    a = _expressed(adata, cells)
    pop, subtype = pop[cells], np.asarray(subtype)[cells]
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    is_src = rng.random(a.n_obs) < holdout
    grp = np.empty(a.n_obs, dtype=object)
    groups = {}
    for side, label in (("A", pop_a), ("B", pop_b)):
        ref_rows = np.flatnonzero((pop == side) & ~is_src)
        src_rows = np.flatnonzero((pop == side) & is_src)
        # at least 3 groups: with 2, the median over groups is their mean and no footprint
        # can reach log2 fp >= 1, so deconvolve finds no marker genes
        k = max(MIN_GROUPS, int(round(ref_rows.size / group_size)))
        lr, ls = _cluster(a.X[ref_rows], a.X[src_rows], k, seed)
        grp[ref_rows] = [f"{label}{i}" for i in lr]
        grp[src_rows] = [f"{label}{i}" for i in ls]
        groups[side] = [f"{label}{i}" for i in range(int(lr.max()) + 1)]
    a.obs["grp"] = pd.Categorical(grp.astype(str))
    a.obs["subtype"] = subtype
    ref = a[~is_src].copy()
    sources = a[is_src].copy()
    present = set(sources.obs["grp"].astype(str))
    pics, attempts = _simulate(sources, [g for g in groups["A"] if g in present],
                               [g for g in groups["B"] if g in present], n_pics, n_umis, seed,
                               max_reuse)
    sizes = ref.obs["grp"].value_counts()
    # subtype of each group = the commonest original label among its reference cells
    major = ref.obs.groupby("grp", observed=True)["subtype"].agg(lambda s: s.value_counts().index[0])
    info = {"source": src, "n_umis": n_umis, "population_a": pop_a, "population_b": pop_b,
            "n_genes": int(a.n_vars), "n_ref_a": int(((pop == "A") & ~is_src).sum()),
            "n_ref_b": int(((pop == "B") & ~is_src).sum()),
            "n_sources_a": int(((pop == "A") & is_src).sum()),
            "n_sources_b": int(((pop == "B") & is_src).sum()),
            "n_groups_a": len(groups["A"]), "n_groups_b": len(groups["B"]),
            "group_size_min": int(sizes.min()), "group_size_median": float(sizes.median()),
            "group_size_max": int(sizes.max()), "n_pics_requested": n_pics,
            "n_pics": int(pics.n_obs), "simulate_attempts": attempts, "max_reuse": max_reuse,
            "source_uses_max": int(max(pics.obs["source_a"].value_counts().max(),
                                       pics.obs["source_b"].value_counts().max())) if pics.n_obs else 0,
            "clustering": "normalize_total 1e4 + log1p + seurat HVG + PCA(20) + KMeans on the "
                          "reference cells, clusters under 10 cells dissolved into the nearest; "
                          "sources assigned to the nearest centre",
            "subtype_key": sub_key,
            "subtypes_a": sorted({major[g] for g in groups["A"] if g in major}),
            "subtypes_b": sorted({major[g] for g in groups["B"] if g in major})}  # fmt: skip
    return {"ref": ref, "pics": pics, "sources": sources, "groups": groups,
            "major": major.astype(str).to_dict(),
            "sub_of_source": sources.obs["subtype"].astype(str).to_dict() if sub_key else None,
            "info": info}, None


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

def _r2(t, e) -> float | None:
    """`r_squared` for the JSON: None where it is not defined."""
    r2 = r_squared(t, e)
    return None if np.isnan(r2) else r2


def calibration(p: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS):
    """Reliability table over `n_bins` equal-width bins of [0, 1] and the expected calibration
    error sum_b n_b / n * |accuracy_b - mean confidence_b|."""
    p = np.clip(np.asarray(p, float), 0, 1)
    correct = np.asarray(correct, bool)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    table, ece = [], 0.0
    for k in range(n_bins):
        m = idx == k
        n = int(m.sum())
        conf = float(p[m].mean()) if n else None
        acc = float(correct[m].mean()) if n else None
        if n:
            ece += n / p.size * abs(acc - conf)
        table.append({"lo": k / n_bins, "hi": (k + 1) / n_bins, "n": n, "confidence": conf,
                      "accuracy": acc})
    return table, (float(ece) if p.size else None)


def hits(obs: pd.DataFrame, major: dict, sub_of_source: dict | None) -> tuple[np.ndarray, dict]:
    """The 'ok' mask and, per PIC, whether the call is right: exact pair, A group, B group and
    (where the data set has labels) A subtype, B subtype and both: the chosen group's commonest
    original label vs the source cell's own label (with one subtype a side it is trivially
    right). Entries of PICs that are not ok are False."""
    ok = obs["pic_status"].astype(str).to_numpy() == "ok"
    pa, pb = obs["pic_a"].astype(str).to_numpy(), obs["pic_b"].astype(str).to_numpy()
    ta, tb = obs["true_a"].astype(str).to_numpy(), obs["true_b"].astype(str).to_numpy()
    out = {"a_accuracy": (pa == ta) & ok, "b_accuracy": (pb == tb) & ok}
    out["pair_accuracy"] = out["a_accuracy"] & out["b_accuracy"]
    if sub_of_source is not None:
        for side, pred, source in (("a", pa, "source_a"), ("b", pb, "source_b")):
            truth = obs[source].astype(str).map(sub_of_source).to_numpy()
            guess = np.array([major.get(g, "") for g in pred], dtype=object)
            out[f"{side}_subtype_accuracy"] = (guess == truth) & ok
        out["subtype_pair_accuracy"] = out["a_subtype_accuracy"] & out["b_subtype_accuracy"]
    return ok, out


def paired_difference(x: np.ndarray, y: np.ndarray, cells_a, cells_b) -> tuple[float, float]:
    """Mean of x - y (0/1 per PIC, two methods on the same PICs) and its standard error, robust
    to PICs that share a source cell: clustered two ways, by the A and by the B cell (the
    variance clustered by each, less that clustered by their intersection, the (A, B) pair of
    cells: Cameron, Gelbach and Miller; where no two PICs share both cells, the PICs' own)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    n = d.size
    if n < 2:
        return (float(d.mean()) if n else float("nan")), float("nan")
    r = d - d.mean()

    def clustered(*codes) -> float:
        sums = pd.Series(r).groupby([np.asarray(c) for c in codes]).sum().to_numpy()
        return float((sums**2).sum())

    var = clustered(cells_a) + clustered(cells_b) - clustered(cells_a, cells_b)
    return float(d.mean()), float(np.sqrt(max(var, 0.0)) / n)


def compare(obs_x: pd.DataFrame, obs_y: pd.DataFrame, major: dict, sub_of_source) -> dict:
    """Method x minus method y on the PICs both kept: per accuracy, the difference and its
    source-cell-robust standard error (`paired_difference`)."""
    ok_x, hx = hits(obs_x, major, sub_of_source)
    ok_y, hy = hits(obs_y, major, sub_of_source)
    both = ok_x & ok_y
    out = {"n_both_ok": int(both.sum())}
    for k in hx:
        d, se = paired_difference(hx[k][both], hy[k][both], obs_x["source_a"].to_numpy()[both],
                                  obs_x["source_b"].to_numpy()[both])
        out[f"{k}_diff"], out[f"{k}_se"] = d, se
    return out


def metrics(obs: pd.DataFrame, major: dict, sub_of_source: dict) -> dict:
    st = obs["pic_status"].astype(str).to_numpy()
    ok, hit = hits(obs, major, sub_of_source)
    n_ok = int(ok.sum())
    out = {"n_ok": n_ok, "ok_share": float(ok.mean()) if ok.size else None,
           "status_counts": {k: int(v) for k, v in zip(*np.unique(st, return_counts=True), strict=True)}}
    for key in ("pair_accuracy", "a_accuracy", "b_accuracy"):
        out[key] = float(hit[key][ok].mean()) if n_ok else None
        out[key + "_all"] = float(hit[key].mean()) if hit[key].size else None  # not-ok PICs count as wrong
    for key in ("a_subtype_accuracy", "b_subtype_accuracy"):
        out[key] = float(hit[key][ok].mean()) if key in hit and n_ok else None
    pair = hit["pair_accuracy"]
    t = obs["true_alpha"].to_numpy(float)[ok]
    e = obs["pic_alpha"].to_numpy(float)[ok]
    out["alpha_r2"] = _r2(t, e)
    # where alpha's error comes from: PICs given their true pair against the rest (at fine groups
    # most of the squared error is on wrong pairs, whose profiles are another group's)
    right = pair[ok]
    out["alpha_r2_right_pair"] = _r2(t[right], e[right])
    sq = (t - e) ** 2
    out["alpha_sse_share_wrong_pair"] = float(sq[~right].sum() / sq.sum()) if n_ok and sq.sum() > 0 else None
    out["alpha_mae"] = float(np.abs(t - e).mean()) if n_ok else None
    out["alpha_bias"] = float((e - t).mean()) if n_ok else None
    out["alpha_true_sd"] = float(t.std()) if n_ok else None  # R^2 is unstable when this is small
    if {"pic_alpha_lo", "pic_alpha_hi"} <= set(obs.columns):  # ml's credible interval
        lo, hi = obs["pic_alpha_lo"].to_numpy(float)[ok], obs["pic_alpha_hi"].to_numpy(float)[ok]
        out["alpha_interval_coverage"] = float(((t >= lo) & (t <= hi)).mean()) if n_ok else None
        out["alpha_interval_width"] = float((hi - lo).mean()) if n_ok else None
    if "pic_n_major" in obs:  # mixture: PICs it calls triplets / contaminated (all are doublets)
        major_n = obs["pic_n_major"].to_numpy(float)[ok]
        out["n_major_gt2_share"] = float((major_n > 2).mean()) if n_ok else None
    p = obs["pic_p_pair"].to_numpy(float)[ok] if "pic_p_pair" in obs else np.full(n_ok, np.nan)
    fin = np.isfinite(p)
    if fin.any():  # mixture has no pair posterior (NaN)
        out["calibration"], out["ece"] = calibration(p[fin], pair[ok][fin])
        out["mean_p_pair"] = float(p[fin].mean())
    else:
        out["calibration"], out["ece"], out["mean_p_pair"] = None, None, None
    return out


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------

def _gpu():
    """(cupy, cupyx.scipy.sparse, synchronise, device name) or None."""
    if not gpu_available():
        return None
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    return cp, cpsp, (lambda: cp.cuda.Device().synchronize()), gpu_name()


def _deconvolve_kwargs(method: str, args) -> dict:
    """deconvolve's arguments for a method name; "<method>-markers" searches pairs over the
    marker design (search_genes="markers") instead of all genes; "ml-posterior" takes ml's
    posterior-mean alpha instead of its alpha regression."""
    kw = {"method": method, "seed": getattr(args, "deconvolve_seed", 0)}
    params = inspect.signature(gsc.pic.deconvolve).parameters
    if method.endswith("-markers") and "search_genes" in params:
        kw.update(method=method.removesuffix("-markers"), search_genes="markers")
    if method == "ml-posterior" and "alpha_model" in params:
        kw.update(method="ml", alpha_model="posterior")
    if kw["method"] in ("picseq", "ml") and "n_train" in params:
        kw["n_train"] = args.n_train
    return kw


def _on_backend(pics, backend: str, gpu):
    """A copy of `pics` whose X lives where `backend` says (cupyx CSR for the GPU)."""
    p = pics.copy()
    if backend == "gpu":
        _, cpsp, _, _ = gpu
        p.X = cpsp.csr_matrix(sp.csr_matrix(p.X))
    return p


def _run_one(pics, ref, groups, backend, gpu, kw, n_umis):
    """(obs, uns['pic'], seconds, where X was) of one deconvolve call, timed around the call only."""
    p = _on_backend(pics, backend, gpu)
    sync = gpu[2] if backend == "gpu" else (lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sync()
        t0 = time.perf_counter()
        gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"], n_umis=n_umis, **kw)
        sync()
        dt = time.perf_counter() - t0
    return p.obs, p.uns.get("pic", {}), dt, describe(p.X)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


# ---------------------------------------------------------------------------------------------
# validation mode
# ---------------------------------------------------------------------------------------------

def validate(args, emit: Callable[[dict], None]) -> list[dict]:
    rows: list[dict] = []

    def add(row):
        rows.append(row)
        emit(row)

    gpu = _gpu() if "gpu" in args.backends else None
    if "gpu" in args.backends and gpu is None:
        print("gpu backend skipped: no CuPy or no GPU on this machine", file=sys.stderr)
    backends = [b for b in args.backends if b == "cpu" or gpu is not None]
    common = {"mode": "validate", "cpu_count": os.cpu_count(), "versions": versions(),
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    rejected: dict[str, str] = {}  # method -> why deconvolve refused it (asked once)
    for ds in args.datasets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            try:
                built, why = build(ds, args.data_dir, seed, args.n_pics, args.group_size,
                                   max_reuse=args.max_reuse)
            except Exception as e:  # a broken data set must not stop the others
                built, why = None, f"build failed: {_short(e)}"
            if built is None:
                print(f"{ds}: skipped ({why})", file=sys.stderr)
                add({**common, "dataset": ds, "seed": seed, "method": None, "backend": None,
                     "skipped": why})
                break  # the same for every seed
            info = {**built["info"], "build_seconds": time.perf_counter() - t0}
            n_umis = info["n_umis"]
            print(f"{ds} seed {seed}: {info['n_pics']} PICs, {info['n_groups_a']} x "
                  f"{info['n_groups_b']} groups", file=sys.stderr, flush=True)
            cpu_obs = {}
            for method in args.methods:
                for backend in backends:
                    device = gpu[3] if backend == "gpu" else cpu_name()
                    base = {**common, "dataset": ds, "seed": seed, "method": method,
                            "backend": backend, "device": device, **info}
                    kw = _deconvolve_kwargs(method, args)
                    base["params"] = {"deconvolve": {**kw, "n_umis": n_umis},
                                      "group_size": args.group_size, "holdout": 0.3}
                    if method in rejected:
                        add({**base, "skipped": rejected[method]})
                        continue
                    print(f"  {method} {backend} ...", file=sys.stderr, flush=True)
                    try:
                        if args.warm_up:  # untimed: JIT / kernel compilation, caches
                            _run_one(built["pics"][: min(20, built["pics"].n_obs)], built["ref"],
                                     built["groups"], backend, gpu, kw, n_umis)
                        obs, uns, dt, where = _run_one(built["pics"], built["ref"],
                                                       built["groups"], backend, gpu, kw, n_umis)
                    except Exception as e:  # recorded, and the run goes on
                        if (isinstance(e, ValueError) and "method" in str(e)
                                and method not in ("ml", "picseq")):
                            rejected[method] = f"deconvolve rejects method={method!r}: {e}"[:300]
                            add({**base, "skipped": rejected[method]})
                        else:
                            why = _short(e)
                            add({**base, "error": why})
                        continue
                    row = {**base, "seconds": dt, "pics_x": where, "warm_up": bool(args.warm_up),
                           "n_markers": len(uns.get("markers", [])),
                           **metrics(obs, built["major"], built["sub_of_source"])}
                    for k in ("alpha_cv_r2", "pair_temper", "alpha_temper", "alpha_calibration_r2",
                              "alpha_model", "alpha_regression_r2", "alpha_interval_margin"):
                        if k in uns:
                            row[k] = uns[k]
                    if backend == "cpu":
                        cpu_obs[method] = obs
                    elif method in cpu_obs:  # GPU must agree with CPU on every argmax and LL
                        c = cpu_obs[method]
                        both = (c["pic_status"].astype(str) == "ok") & (obs["pic_status"].astype(str) == "ok")
                        same = ((c["pic_a"].astype(str) == obs["pic_a"].astype(str))
                                & (c["pic_b"].astype(str) == obs["pic_b"].astype(str)))[both]
                        lc, lg = c["pic_ll"][both].to_numpy(float), obs["pic_ll"][both].to_numpy(float)
                        row["cpu_pair_agreement"] = float(same.mean()) if both.any() else None
                        rel = np.abs(lg - lc) / np.maximum(np.abs(lc), 1e-300)
                        row["cpu_ll_max_rel_diff"] = float(rel.max()) if both.any() else None
                    add(row)
            if {"ml", "picseq"} <= set(cpu_obs):  # is ml ahead beyond what its source cells allow?
                add({**common, "mode": "compare", "dataset": ds, "seed": seed, "method": "ml-picseq",
                     "backend": "cpu", "n_pics": info["n_pics"], "n_groups_a": info["n_groups_a"],
                     "n_groups_b": info["n_groups_b"], "max_reuse": info["max_reuse"],
                     **compare(cpu_obs["ml"], cpu_obs["picseq"], built["major"], built["sub_of_source"])})
    return rows


# ---------------------------------------------------------------------------------------------
# scale mode
# ---------------------------------------------------------------------------------------------

def _faithful_loop(x: sp.csr_matrix, p_ab: tuple[np.ndarray, np.ndarray], alpha: np.ndarray,
                   eps: float) -> np.ndarray:
    """The published exhaustive search the way the R code runs it: one PIC at a time, its dense
    marker-gene UMI vector against every pair at the PIC's fixed alpha; first maximum wins.
    Returns the winning pair index j = i_a + K_A * i_b per PIC."""
    pa, pb = p_ab
    ka, kb = pa.shape[1], pb.shape[1]
    # columns j = i_a + K_A * i_b
    pa_j = np.tile(pa, (1, kb))
    pb_j = np.repeat(pb, ka, axis=1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        u = x[i].toarray().ravel()
        mix = alpha[i] * (pa_j + eps) + (1 - alpha[i]) * (pb_j + eps)
        ll = u @ np.log(mix)
        out[i] = int(np.argmax(ll))
    return out


def _geomean_profiles(x: sp.csr_matrix, labels: np.ndarray, groups: list[str], genes) -> np.ndarray:
    """P = GM / column sums over `genes`, GM = exp(mean log(1 + counts)) - 1 (PICSEQ.md step 3)."""
    sub = sp.csr_matrix(x[:, genes], dtype=np.float64)
    sub.data = np.log1p(sub.data)
    gm = np.column_stack([np.expm1(np.asarray(sub[labels == g].mean(0)).ravel()) for g in groups])
    s = gm.sum(0)
    return gm / np.where(s > 0, s, 1)


def _bootstrap(pool, n: int, seed: int):
    """`n` rows drawn with replacement from the PIC pool, renamed pic0, pic1, ..."""
    from anndata import AnnData

    take = np.random.default_rng(seed).integers(0, pool.n_obs, n)
    obs = pool.obs.iloc[take].reset_index(drop=True)
    obs.index = [f"pic{i}" for i in range(n)]
    return AnnData(X=sp.csr_matrix(pool.X)[take], obs=obs, var=pool.var.copy())


def scale(args, emit: Callable[[dict], None]) -> list[dict]:
    from threadpoolctl import threadpool_limits

    rows: list[dict] = []

    def add(row):
        rows.append(row)
        emit(row)

    ds = args.scale_dataset
    loader, n_umis, pop_a, pop_b, _ = DATASETS[ds]
    got, why = loader(args.data_dir)
    common = {"mode": "scale", "dataset": ds, "cpu_count": os.cpu_count(), "versions": versions(),
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    if got is None:
        print(f"{ds}: skipped ({why})", file=sys.stderr)
        add({**common, "skipped": why})
        return rows
    adata, pop, _, src = got
    cells = np.flatnonzero(pop != "")
    a = _expressed(adata, cells)
    pop = pop[cells]
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    if args.scale_genes and a.n_vars > args.scale_genes:  # top genes by UMIs, before simulating
        top = np.sort(np.argsort(-np.asarray(a.X.sum(0)).ravel(), kind="stable")[: args.scale_genes])
        a = a[:, top].copy()
    k = args.scale_groups
    grp = np.empty(a.n_obs, dtype=object)
    groups = {}
    for side, label in (("A", pop_a), ("B", pop_b)):
        rows_ = np.flatnonzero(pop == side)
        kk = min(k, rows_.size)
        lab, _ = _cluster(a.X[rows_], a.X[rows_[:0]], kk, 0, min_size=1)
        grp[rows_] = [f"{label}{i}" for i in lab]
        groups[side] = [f"{label}{i}" for i in range(int(lab.max()) + 1)]
    a.obs["grp"] = pd.Categorical(grp.astype(str))
    pool_n = min(args.scale_pool, max(args.scale_pics, args.scale_cpu_pics))
    pool, _ = _simulate(a, groups["A"], groups["B"], pool_n, n_umis, 0)
    sizes = a.obs["grp"].value_counts()
    info = {"source": src, "n_umis": n_umis, "n_genes": int(a.n_vars), "n_singlets": int(a.n_obs),
            "n_groups_a": len(groups["A"]), "n_groups_b": len(groups["B"]),
            "n_pairs": len(groups["A"]) * len(groups["B"]), "group_size_min": int(sizes.min()),
            "group_size_median": float(sizes.median()), "pool_pics": int(pool.n_obs),
            "pics": "bootstrap rows of a pool of simulated PICs (all singlets are the reference)",
            "n_pics_target": args.scale_pics, "repeats": args.scale_repeats}  # fmt: skip
    print(f"scale: {ds}, {info['n_groups_a']} x {info['n_groups_b']} groups, {a.n_vars} genes, "
          f"pool of {pool.n_obs} PICs", file=sys.stderr, flush=True)
    gpu = _gpu() if "gpu" in args.backends else None
    if "gpu" in args.backends and gpu is None:
        print("gpu backend skipped: no CuPy or no GPU on this machine", file=sys.stderr)
    backends = [b for b in args.backends if b == "cpu" or gpu is not None]
    small = _bootstrap(pool, args.scale_fixed_pics, 1)
    picseq_run = None  # (PICs, obs, uns) of the CPU picseq call: the loop redoes its search
    for method in args.methods:
        kw = _deconvolve_kwargs(method, args)
        for backend in backends:
            n = args.scale_pics if backend == "gpu" else min(args.scale_pics, args.scale_cpu_pics)
            device = gpu[3] if backend == "gpu" else cpu_name()
            base = {**common, **info, "method": method, "backend": backend, "device": device,
                    "n_pics": n, "params": {"deconvolve": {**kw, "n_umis": n_umis}},
                    "timed": "whole gsc.pic.deconvolve call (markers, profiles, alpha model, "
                             "search, posterior); fixed = the same call on few PICs"}  # fmt: skip
            print(f"  {method} {backend}: {n} PICs ...", file=sys.stderr, flush=True)
            big = _bootstrap(pool, n, 2)
            try:
                _run_one(small, a, groups, backend, gpu, kw, n_umis)  # warm-up, untimed
                fixed_times, times = [], []
                for _ in range(args.scale_repeats):  # in turns: load drift hits both alike
                    fixed_times.append(_run_one(small, a, groups, backend, gpu, kw, n_umis)[2])
                    obs, uns, dt, where = _run_one(big, a, groups, backend, gpu, kw, n_umis)
                    times.append(dt)
                fixed = statistics.median(fixed_times)
            except Exception as e:
                why = _short(e)
                add({**base, "error": why})
                continue
            total = statistics.median(times)
            search = total - fixed
            # the per-PIC part is resolved only where it stands clear of the fixed part's noise
            resolved = search > 0.1 * fixed and n > args.scale_fixed_pics
            per_pic = search / (n - args.scale_fixed_pics) if resolved else None
            row = {**base, "seconds": total, "seconds_fixed": fixed,
                   "fixed_pics": args.scale_fixed_pics, "seconds_search_est": search,
                   "seconds_per_pic_search": per_pic, "pics_x": where,
                   "n_markers": len(uns.get("markers", [])), "search_resolved": resolved,
                   "seconds_at_target": (fixed + per_pic * args.scale_pics if resolved
                                         else (total if n >= args.scale_pics else None)),
                   "extrapolated": n < args.scale_pics}  # fmt: skip
            if not resolved:
                row["note"] = ("seconds - seconds_fixed is within 10 % of the fixed cost: the "
                               "per-PIC time is not resolved; run more PICs")
            add(row)
            if method == "picseq" and backend == "cpu":
                picseq_run = (big, obs, uns)
    # the faithful exhaustive search as the published R code runs it, one thread, per-PIC loop
    if picseq_run is None:  # no CPU picseq run above: a small one gives markers and alpha
        try:
            p = _bootstrap(pool, min(args.scale_loop_pics, pool.n_obs), 3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gsc.pic.deconvolve(p, a, groupby="grp", a=groups["A"], b=groups["B"],
                                   n_umis=n_umis, **_deconvolve_kwargs("picseq", args))
            picseq_run = (p, p.obs, p.uns["pic"])
        except Exception as e:
            add({**common, **info, "method": "faithful_loop", "backend": "cpu-1thread",
                 "error": _short(e)})
            return rows
    pics, obs, uns = picseq_run
    mk = a.var_names.get_indexer(uns["markers"])
    labels = a.obs["grp"].astype(str).to_numpy()
    x = sp.csr_matrix(a.X, dtype=np.float64)
    prof = (_geomean_profiles(x, labels, groups["A"], mk), _geomean_profiles(x, labels, groups["B"], mk))
    # the PICs picseq kept, at its regression's alpha; they already hold exactly n_umis UMIs, so
    # its down-sampling left them as they are and the loop must find the same pairs
    ok = np.flatnonzero(obs["pic_status"].astype(str).to_numpy() == "ok")[: args.scale_loop_pics]
    m = int(ok.size)
    xs = sp.csr_matrix(pics.X, dtype=np.float64)[ok][:, mk].tocsr()
    al = obs["pic_alpha_hat"].to_numpy(float)[ok]
    eps = float(uns.get("eps", 1e-4))
    with threadpool_limits(1):
        _faithful_loop(xs[: min(5, m)], prof, al, eps)  # warm-up
        t0 = time.perf_counter()
        j = _faithful_loop(xs, prof, al, eps)
        dt = time.perf_counter() - t0
    ka = len(groups["A"])
    ga, gb = np.asarray(groups["A"]), np.asarray(groups["B"])
    same = ((ga[j % ka] == obs["pic_a"].astype(str).to_numpy()[ok])
            & (gb[j // ka] == obs["pic_b"].astype(str).to_numpy()[ok]))
    faithful = dict({**common, **info, "method": "faithful_loop", "backend": "cpu-1thread",
         "device": cpu_name(), "n_pics": m, "seconds": dt, "seconds_per_pic_search": dt / max(m, 1),
         "seconds_at_target": dt / max(m, 1) * args.scale_pics, "extrapolated": m < args.scale_pics,
         "n_markers": int(mk.size), "same_pair_as_picseq": float(same.mean()) if m else None,
         "timed": "exhaustive search only (per-PIC loop over dense marker vectors, all pairs at "
                  "the PIC's fixed alpha from picseq's regression, numpy, threadpoolctl limit 1), "
                  "measured on n_pics PICs and extrapolated linearly to n_pics_target"})  # fmt: skip
    # speed-ups at the target size: in the faithful row (the others were written already) and,
    # for the printed table, in the rows kept in memory
    loop = dt / max(m, 1) * args.scale_pics
    speedups = {}
    for r in rows:
        if r.get("seconds_at_target"):
            r["speedup_vs_faithful_loop"] = loop / r["seconds_at_target"]
            speedups[f"{r['method']}/{r['backend']}"] = r["speedup_vs_faithful_loop"]
    add({**faithful, "speedup_vs_faithful_loop": speedups})
    return rows


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _f(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def _speedup(r: dict) -> float | None:
    s = r.get("speedup_vs_faithful_loop")
    return 1.0 if isinstance(s, dict) else s  # the faithful row holds everyone's speed-ups


def summary(rows: list[dict]) -> str:
    """Mean over seeds of each (dataset, method, backend)."""
    keys = ("pair_accuracy", "a_accuracy", "b_accuracy", "alpha_r2", "alpha_mae", "ok_share",
            "ece", "seconds")
    head = (f"{'dataset':8s} {'method':7s} {'backend':7s} {'seeds':>5s} {'pics':>5s} {'groups':>7s} "
            + " ".join(f"{k:>13s}" for k in keys))  # fmt: skip
    lines = [head] if any(r.get("mode") == "validate" for r in rows) else []
    val = [r for r in rows if r.get("mode") == "validate" and r.get("method")]
    seen = []
    for r in val:
        key = (r["dataset"], r["method"], r["backend"])
        if key not in seen:
            seen.append(key)
    for key in seen:
        rs = [r for r in val if (r["dataset"], r["method"], r["backend"]) == key]
        good = [r for r in rs if "seconds" in r]
        if not good:
            why = rs[0].get("skipped") or rs[0].get("error")
            lines.append(f"{key[0]:8s} {key[1]:7s} {str(key[2]):7s}  {why}")
            continue
        vals = []
        for k in keys:
            xs = [r[k] for r in good if r.get(k) is not None]
            vals.append(_f(float(np.mean(xs)) if xs else None))
        g = f"{good[0]['n_groups_a']}x{good[0]['n_groups_b']}"
        lines.append(f"{key[0]:8s} {key[1]:7s} {key[2]:7s} {len(good):5d} {good[0]['n_pics']:5d} "
                     f"{g:>7s} " + " ".join(f"{v:>13s}" for v in vals))
    for r in rows:
        if r.get("mode") == "validate" and r.get("method") is None:
            lines.append(f"{r['dataset']:8s} skipped: {r['skipped']}")
    for r in rows:  # paired, with standard errors robust to shared source cells
        if r.get("mode") == "compare":
            parts = [f"{k[:-5]} {r[k]:+.3f} +- {r[k[:-5] + '_se']:.3f}" for k in r if k.endswith("_diff")]
            lines.append(f"{r['dataset']:8s} seed {r['seed']} ml - picseq: " + ", ".join(parts))
    sc_rows = [r for r in rows if r.get("mode") == "scale"]
    if sc_rows:
        lines.append("")
        lines.append(f"{'scale':8s} {'method':14s} {'backend':11s} {'pics':>7s} {'pairs':>6s} "
                     f"{'seconds':>9s} {'fixed s':>8s} {'s/PIC':>10s} {'s@target':>10s} {'extrap':>6s} "
                     f"{'speedup':>8s}")  # fmt: skip
        for r in sc_rows:
            if "seconds" not in r:
                lines.append(f"{r['dataset']:8s} {str(r.get('method')):14s} {str(r.get('backend')):11s} "
                             f"{r.get('error') or r.get('skipped')}")  # fmt: skip
                continue
            lines.append(f"{r['dataset']:8s} {r['method']:14s} {r['backend']:11s} {r['n_pics']:7d} "
                         f"{r['n_pairs']:6d} {_f(r['seconds'], '9.2f'):>9s} "
                         f"{_f(r.get('seconds_fixed'), '8.2f'):>8s} "
                         f"{_f(r.get('seconds_per_pic_search'), '10.2e'):>10s} "
                         f"{_f(r.get('seconds_at_target'), '10.1f'):>10s} {str(r['extrapolated']):>6s} "
                         f"{_f(_speedup(r), '8.2f'):>8s}")  # fmt: skip
    return "\n".join(lines)


def _calibration_panel(ax, keys, val) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    for k in keys:
        if k[2] != "cpu" and (k[0], k[1], "cpu") in keys:
            continue
        rs = [r for r in val if (r["dataset"], r["method"], r["backend"]) == k]
        n = np.zeros(N_BINS)
        conf = np.zeros(N_BINS)
        acc = np.zeros(N_BINS)
        for r in rs:  # pool the seeds' bins
            for i, b in enumerate(r.get("calibration") or []):
                if b["n"]:
                    n[i] += b["n"]
                    conf[i] += b["n"] * b["confidence"]
                    acc[i] += b["n"] * b["accuracy"]
        m = n >= 5  # a bin of a few PICs says little
        if not m.any():  # e.g. mixture: no pair posterior
            continue
        ece = np.mean([r["ece"] for r in rs if r.get("ece") is not None] or [np.nan])
        ax.plot(conf[m] / n[m], acc[m] / n[m], marker="o", ms=3,
                ls="-" if k[1] == "ml" else "--", label=f"{k[0]} {k[1]} (ECE {ece:.2f})")
    ax.set_xlabel("pic_p_pair (bin mean; bins of >= 5 PICs)")
    ax.set_ylabel("pair accuracy")
    ax.set_title("calibration of pic_p_pair", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [r for r in rows if r.get("mode") == "validate" and "seconds" in r]
    sc_rows = [r for r in rows if r.get("mode") == "scale" and r.get("seconds_at_target")]
    n_panels = 3 * bool(val) + bool(sc_rows)
    if not n_panels:
        return
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.4), squeeze=False)
    axes = list(axes[0])
    if not val:
        axes = [None, None, None, *axes]
    keys = []
    for r in val:
        k = (r["dataset"], r["method"], r["backend"])
        if k not in keys:
            keys.append(k)
    labels = [f"{d}\n{m} {b}" for d, m, b in keys]
    for ax, metric, title in ((axes[0], "pair_accuracy", "exact pair accuracy (ok PICs)"),
                              (axes[1], "alpha_r2", "alpha R^2 (ok PICs)")) if val else ():
        means, errs = [], []
        for k in keys:
            xs = [r[metric] for r in val if (r["dataset"], r["method"], r["backend"]) == k
                  and r.get(metric) is not None]
            means.append(np.mean(xs) if xs else np.nan)
            errs.append(np.std(xs) if len(xs) > 1 else 0)
        colors = ["tab:blue" if k[1] == "ml" else "tab:orange" if k[1] == "picseq" else "tab:gray"
                  for k in keys]
        ax.bar(range(len(keys)), means, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(range(len(keys)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_ylim(min(0, np.nanmin(means) if keys and np.isfinite(np.nanmin(means)) else 0), 1)
        ax.set_title(title, fontsize=10)
    if val:
        _calibration_panel(axes[2], keys, val)
    if sc_rows:
        ax = axes[3]
        names = [f"{r['method']}\n{r['backend']}" for r in sc_rows]
        vals = [r["seconds_at_target"] for r in sc_rows]
        ax.bar(range(len(vals)), vals, color=["tab:red" if r["method"] == "faithful_loop" else "tab:blue"
                                             for r in sc_rows])  # fmt: skip
        for i, r in enumerate(sc_rows):
            if r["extrapolated"]:
                ax.text(i, vals[i], "extrap.", ha="center", va="bottom", fontsize=6)
        ax.set_yscale("log")
        ax.set_xticks(range(len(vals)), names, fontsize=7)
        r0 = sc_rows[0]
        ax.set_title(f"time for {r0['n_pics_target']} PICs x {r0['n_pairs']} pairs (s)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _csv(kind):
    def parse(s: str):
        items = [t.strip() for t in s.split(",") if t.strip()]
        return [kind(t) for t in items]

    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="folder with the shared .h5ad files (default ../shared/data beside the repo)")
    p.add_argument("--datasets", type=_csv(str), default=list(DATASETS),
                   help=f"comma-separated, from {', '.join(DATASETS)}")
    p.add_argument("--methods", type=_csv(str), default=["ml", "picseq"],
                   help="comma-separated deconvolve methods (ml, picseq, mixture, ...)")
    p.add_argument("--backends", type=_csv(str), default=["cpu", "gpu"],
                   help="cpu, gpu or cpu,gpu (gpu rows only where CuPy sees a GPU)")
    p.add_argument("--seeds", type=_csv(int), default=[0, 1, 2])
    p.add_argument("--n-pics", type=int, default=1000, help="synthetic PICs per data set and seed")
    p.add_argument("--group-size", type=int, default=75, help="target reference cells per group")
    p.add_argument("--max-reuse", type=int, default=None,
                   help="each held-out source cell in at most this many PICs (default: no cap)")
    p.add_argument("--n-train", type=int, default=20000,
                   help="picseq: simulated PICs for the alpha LASSO (published: 20000)")
    p.add_argument("--deconvolve-seed", type=int, default=0,
                   help="deconvolve's seed (its simulated training PICs and reference halves): how much "
                        "the results move with the training draw alone, on the same PICs")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                   help="skip the untimed deconvolve on 20 PICs before each timed one")
    p.add_argument("--scale", action="store_true", help="run the scale mode instead of validation")
    p.add_argument("--scale-dataset", default="pbmc4k", choices=list(DATASETS))
    p.add_argument("--scale-pics", type=int, default=100_000, help="PICs to time (GPU) / to extrapolate to")
    p.add_argument("--scale-cpu-pics", type=int, default=1000,
                   help="PICs actually run on the CPU backend (at most --scale-pics)")
    p.add_argument("--scale-groups", type=int, default=50, help="groups per population")
    p.add_argument("--scale-genes", type=int, default=0,
                   help="keep only this many top genes (by UMIs) before simulating; 0 = all expressed")
    p.add_argument("--scale-pool", type=int, default=2000, help="simulated PICs to bootstrap from")
    p.add_argument("--scale-fixed-pics", type=int, default=20, help="PICs of the fixed-cost call")
    p.add_argument("--scale-loop-pics", type=int, default=200, help="PICs timed in the faithful loop")
    p.add_argument("--scale-repeats", type=int, default=1)
    p.add_argument("--out", type=Path, help="append JSON lines here")
    p.add_argument("--plot", type=Path, help="write a PNG here")
    c = p.add_argument_group("population claims (--claims: pic_interaction.py and pic_frequencies.py on the same PICs)")
    c.add_argument("--claims", action="store_true",
                   help="after the validation rows, the interaction test's null and planted programmes and the "
                        "pair composition's TV, interval coverage and abundance test (ml and picseq, CPU)")
    c.add_argument("--folds", default="2,3", help="planted programme folds (pic_interaction.py)")
    c.add_argument("--min-pics", type=int, default=10, help="smallest PIC group tested (pic_interaction.py)")
    c.add_argument("--n-sim", type=int, default=400, help="PICs simulated a pair for the confusion")
    c.add_argument("--n-boot", type=int, default=500, help="bootstrap draws of the composition's interval")
    c.add_argument("--n-splits", type=int, default=20, help="random splits for the abundance test's null and power")
    args = p.parse_args(argv)
    bad = set(args.datasets) - set(DATASETS)
    if bad:
        p.error(f"unknown datasets {sorted(bad)}; choose from {', '.join(DATASETS)}")
    bad = set(args.backends) - {"cpu", "gpu"}
    if bad:
        p.error(f"unknown backend {sorted(bad)}; use cpu, gpu or cpu,gpu")
    if not args.methods or not args.seeds:
        p.error("--methods and --seeds must not be empty")
    if args.claims and args.scale:
        p.error("--claims goes with the validation mode, not --scale")
    if args.max_reuse is not None and args.max_reuse < 1:
        p.error(f"--max-reuse must be at least 1, got {args.max_reuse}")
    if min(args.n_pics, args.scale_pics, args.scale_cpu_pics, args.group_size, args.scale_repeats,
           args.scale_loop_pics, args.scale_fixed_pics) < 1:  # fmt: skip
        p.error("sizes must be at least 1")

    with jsonl_rows(args.out, default=str) as emit:
        rows = scale(args, emit) if args.scale else validate(args, emit)
    print(summary(rows))
    if args.plot:
        plot(rows, args.plot)
    if args.claims and not args.scale:
        claims(args)
    if rows and all("skipped" in r for r in rows):  # nothing measured (no data): not a pass
        print("nothing was measured: every data set or method was skipped (see above); --data-dir names the "
              "folder of the shared .h5ad files", file=sys.stderr)
        return 1
    return 1 if any("error" in r for r in rows) else 0  # on the GPU too: a GPU session must not look fine


def claims(args) -> None:
    """The population-level claims on the same data sets, seeds, PICs and methods (CPU): the
    interaction test's null and planted programmes (`pic_interaction.py`: false calls, recall,
    up-calls outside the programme) and the pair composition (`pic_frequencies.py`: TV distance,
    interval coverage, the abundance test's null and power); their rows (`mode` 'interaction',
    'frequencies') go to the same `--out`."""
    import pic_frequencies
    import pic_interaction

    shared = ["--datasets", ",".join(args.datasets), "--seeds", ",".join(map(str, args.seeds)),
              "--n-pics", str(args.n_pics), "--group-size", str(args.group_size), "--n-train", str(args.n_train),
              "--data-dir", str(args.data_dir), "--deconvolve-seed", str(args.deconvolve_seed)]
    shared += ["--max-reuse", str(args.max_reuse)] if args.max_reuse is not None else []
    shared += ["--out", str(args.out)] if args.out else []
    methods = [m for m in args.methods if m in ("ml", "picseq")]  # the methods that keep a pair posterior
    if not methods:
        print(f"--claims: none of --methods {args.methods} keeps a pair posterior (ml, picseq): no claims rows",
              file=sys.stderr)
        return
    shared += ["--methods", ",".join(methods)]
    pic_interaction.main([*shared, "--min-pics", str(args.min_pics), "--folds", args.folds])
    pic_frequencies.main([*shared, "--n-sim", str(args.n_sim), "--n-boot", str(args.n_boot),
                          "--n-splits", str(args.n_splits)])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
