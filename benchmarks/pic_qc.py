"""Null and power of gsc.pic.doublet_test and gsc.pic.triplet_scan on PICs made from held-out
real singlets (pbmc4k, bundled): which true singlets a study would keep as doublets, which true
doublets it would flag as triplets, and how many of the real ones each test finds.

    python3 benchmarks/pic_qc.py SEED METHOD GROUPING [OUT_DIR]

METHOD: ml or picseq. GROUPING: major (Annotation: A = T_CD4, T_CD8; B = MNP), fine (leiden T
subclusters of the reference + MNP), wideA (A = T_CD4, T_CD8, B, NK: a triplet positive control).
Each group's cells are split 70/30 (seeded) into reference and held-out; from the held-out ones
600 AB doublets, 100 AAB and 50 ABB triplets at 800 UMIs (simulate_pics), and 100 T and 100 MNP
singlets down-sampled to 800 UMIs (singlets sorted as PICs); a calibration set (300 doublets,
100 singlets) goes through the same deconvolve. Writes OUT_DIR/<grouping>_<method>_s<seed>.csv
(each PIC's truth, calls and LLRs) and .json (run info), and prints the rates: the share of
each kind called a doublet / flagged a triplet, per setting (level: doublet_test's p-value
against reference singlets, triplet_scan's against doublets drawn from the reference). First written by a review helper
(2026-12-06); results of seeds 0-2: benchmarks/results/pic-qc-cpu-2026-12-06.txt.
"""

import json
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import gpu_sc as gsc
from _common import pbmc4k_held_out

warnings.simplefilter("ignore")
seed, method, grouping = int(sys.argv[1]), sys.argv[2], sys.argv[3]
OUT = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("pic-qc-out")
OUT.mkdir(parents=True, exist_ok=True)
n_train = None
N_UMIS = 800
t0 = time.time()

adata, held = pbmc4k_held_out(seed)  # 70/30 split within each Annotation group

lab = adata.obs["Annotation"].to_numpy()
if grouping == "major":
    key, ga, gb = "Annotation", ["T_CD4", "T_CD8"], ["MNP"]
    adata.obs["grp"] = lab
elif grouping == "wideA":  # positive control: A = T_CD4, T_CD8, B, NK (distinct lineages to mix)
    key, ga, gb = "Annotation", ["T_CD4", "T_CD8", "B", "NK"], ["MNP"]
    adata.obs["grp"] = lab
else:
    # leiden on the reference T cells (normalize_total + log1p + HVG + PCA), held-out T cells
    # assigned to the nearest reference cluster centroid in the same PCA space
    import scanpy as sc
    from sklearn.decomposition import PCA

    is_t = np.isin(lab, ["T_CD4", "T_CD8"])
    def lognorm(x):
        tot = np.asarray(x.sum(1)).ravel()
        y = sp.csr_matrix(sp.diags(1e4 / np.maximum(tot, 1)) @ x)
        y.data = np.log1p(y.data)
        return y
    rt, ht = np.flatnonzero(is_t & ~held), np.flatnonzero(is_t & held)
    r = ad.AnnData(lognorm(adata.X[rt]))
    sc.pp.highly_variable_genes(r, n_top_genes=2000, flavor="seurat")
    hv = np.flatnonzero(r.var["highly_variable"].to_numpy())
    pca = PCA(n_components=20, random_state=seed)
    pr = pca.fit_transform(np.asarray(r.X[:, hv].todense()))
    ph = pca.transform(np.asarray(lognorm(adata.X[ht])[:, hv].todense()))
    r.obsm["X_pca"] = pr
    sc.pp.neighbors(r, n_neighbors=15, use_rep="X_pca", random_state=seed)
    sc.tl.leiden(r, resolution=0.6, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    cl = r.obs["leiden"].astype(int).to_numpy()
    # drop clusters under 15 reference cells into the nearest remaining centroid
    for _ in range(20):
        sizes = np.bincount(cl)
        small = [k for k in np.unique(cl) if sizes[k] < 15]
        if not small:
            break
        keep = [k for k in np.unique(cl) if k not in small]
        cen = np.vstack([pr[cl == k].mean(0) for k in keep])
        m = np.isin(cl, small)
        cl[m] = np.asarray(keep)[((pr[m][:, None] - cen[None]) ** 2).sum(-1).argmin(1)]
    ks = np.unique(cl)
    cen = np.vstack([pr[cl == k].mean(0) for k in ks])
    clh = ks[((ph[:, None] - cen[None]) ** 2).sum(-1).argmin(1)]
    grp = lab.astype(object).copy()
    grp[rt] = [f"T{k}" for k in cl]
    grp[ht] = [f"T{k}" for k in clh]
    adata.obs["grp"] = grp.astype(str)
    key = "grp"
    ga, gb = sorted({f"T{k}" for k in ks}), ["MNP"]
adata.obs["grp"] = adata.obs["grp"].astype(str)
ref = adata[~held].copy()
src = adata[held].copy()
src.obs_names_make_unique()


def sim(n, comp, s):
    parts, made, rnd = [], 0, 0
    while made < n and rnd < 5:
        p = gsc.pic.simulate_pics(src, groupby="grp", a=ga, b=gb, n_pics=int((n - made) * 1.3) + 10,
                                  n_umis=N_UMIS, composition=comp, seed=s + rnd)
        parts.append(p)
        made += p.n_obs
        rnd += 1
    p = ad.concat(parts, join="outer") if len(parts) > 1 else parts[0]
    return p[:n].copy()


blocks = []
for comp, n, set_, s in (("AB", 600, "test", 1), ("AB", 300, "calib", 2), ("AAB", 100, "test", 3),
                         ("ABB", 50, "test", 4)):
    p = sim(n, comp, seed * 100 + s * 10)
    p.obs["kind"] = {"AB": "doublet", "AAB": "triplet_AAB", "ABB": "triplet_ABB"}[comp]
    p.obs["set"] = set_
    p.obs_names = [f"{comp}_{set_}_{i}" for i in range(p.n_obs)]
    blocks.append(p)

# singlets sorted as PICs: held-out T and MNP cells down-sampled to exactly N_UMIS
t_src = np.flatnonzero(np.isin(src.obs["Annotation"], ["T_CD4", "T_CD8"]))  # wideA too: T singlets only
m_src = np.flatnonzero(src.obs["Annotation"] == "MNP")
rs = np.random.default_rng(seed + 7)
t_pick, m_pick = rs.permutation(t_src)[:150], rs.permutation(m_src)[:150]
for name, pick in (("singlet_T", t_pick), ("singlet_MNP", m_pick)):
    sg = src[pick].copy()
    gsc.pp.downsample_counts(sg, counts_per_cell=N_UMIS, random_state=seed)
    sg.obs = pd.DataFrame({"kind": name, "set": ["test"] * 100 + ["calib"] * (sg.n_obs - 100),
                           "true_a": np.where(name == "singlet_T", sg.obs["grp"], None),
                           "true_b": np.where(name == "singlet_MNP", sg.obs["grp"], None),
                           "true_alpha": 1.0 if name == "singlet_T" else 0.0,
                           "source_s": sg.obs_names.to_numpy()},
                          index=[f"{name}_{i}" for i in range(sg.n_obs)])
    blocks.append(ad.AnnData(sp.csr_matrix(sg.X, dtype=np.float32), obs=sg.obs, var=pd.DataFrame(index=src.var_names)))

pics = ad.concat(blocks, join="outer")
pics.X = sp.csr_matrix(pics.X, dtype=np.float32)
tot = np.asarray(pics.X.sum(1)).ravel()
t_build = time.time() - t0

kw = {"method": method, "seed": seed}
if method == "picseq":
    kw["n_umis"] = N_UMIS  # picseq's default 1000 would drop every 800-UMI PIC
if n_train is not None:
    kw["n_train"] = n_train
t1 = time.time()
gsc.pic.deconvolve(pics, ref, groupby="grp", a=ga, b=gb, **kw)
t_dec = time.time() - t1

res = pics.obs.copy()
res["total"] = tot
t2 = time.time()
d_obs = gsc.pic.doublet_test(pics, ref, groupby="grp", inplace=False)
d_fit = gsc.pic.doublet_test(pics, ref, groupby="grp", alpha="fit", inplace=False)
d_fit33 = gsc.pic.doublet_test(pics, ref, groupby="grp", alpha="fit", min_llr=3.3, inplace=False)
t_level = time.time()
d_level = gsc.pic.doublet_test(pics, ref, groupby="grp", alpha="fit", level=0.01, seed=seed, inplace=False)
t_level = time.time() - t_level
res["dllr_obs"] = d_obs["pic_doublet_llr"]
res["dcall_obs0"] = d_obs["pic_is_doublet"]
res["dllr_fit"] = d_fit["pic_doublet_llr"]
res["dcall_fit0"] = d_fit["pic_is_doublet"]
res["dcall_fit3.3"] = d_fit33["pic_is_doublet"]
res["dp"] = d_level["pic_doublet_p"]
res["dcall_p0.01"] = d_level["pic_is_doublet"]
res["dcall_p0.05"] = d_level["pic_doublet_p"] <= 0.05
t_scan = time.time()
tr = gsc.pic.triplet_scan(pics, ref, groupby="grp", min_llr=0, inplace=False)
res["tllr"] = tr["pic_triplet_llr"]
res["tcall0"] = tr["pic_is_triplet"]
res["tside"] = tr["pic_triplet_side"].astype(str)
res["tgroups"] = tr["pic_triplet_groups"].astype(str)
tr20 = gsc.pic.triplet_scan(pics, ref, groupby="grp", min_llr=20, inplace=False)
res["tcall20"] = tr20["pic_is_triplet"]
trg = gsc.pic.triplet_scan(pics, ref, groupby="grp", weights=np.linspace(0.2, 0.8, 4), min_llr=0, inplace=False)
res["tllr_grid"] = trg["pic_triplet_llr"]
tro = gsc.pic.triplet_scan(pics, ref, groupby="grp", alpha="obs", inplace=False)
res["tllr_obsalpha"] = tro["pic_triplet_llr"]
t_tlevel = time.time()
trl = gsc.pic.triplet_scan(pics, ref, groupby="grp", level=0.01, seed=seed, inplace=False)
t_tlevel = time.time() - t_tlevel
res["tp"] = trl["pic_triplet_p"]
res["tcall_p0.01"] = trl["pic_is_triplet"]
res["tcall_p0.05"] = trl["pic_triplet_p"] <= 0.05
t_qc = time.time() - t2
stem = OUT / f"{grouping}_{method}_s{seed}"
res.to_csv(f"{stem}.csv")
info = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in pics.uns["pic"].items()
        if k in ("alpha_model", "pair_temper", "alpha_temper", "alpha_regression_r2", "alpha_cv_r2",
                 "calibration_depth", "n_umis", "groups_a", "groups_b")}
gsc.pic.doublet_test(pics, ref, groupby="grp")
info.update(n_markers=len(pics.uns["pic"]["markers"]), markers=list(pics.uns["pic"]["markers"]),
            qc_n_markers=pics.uns["pic_qc"]["doublet"]["n_markers"], t_build=t_build, t_deconvolve=t_dec, t_qc=t_qc,
            t_level=t_level, t_triplet_level=t_tlevel,
            t_triplet=time.time() - t_scan, groups_a=ga, groups_b=gb, n_ref=int(ref.n_obs), n_src=int(src.n_obs),
            ref_sizes=ref.obs["grp"].value_counts().to_dict(), kw={k: v for k, v in kw.items()})
Path(f"{stem}.json").write_text(json.dumps(info, indent=1, default=str))
print(json.dumps(info, default=str))
print(res.groupby(["kind", "set"]).size())

test = res["set"] == "test"
rates = {}
for name, col in (("doublet_test obs, min_llr=0", "dcall_obs0"), ("doublet_test fit, min_llr=0", "dcall_fit0"),
                  ("doublet_test fit, min_llr=3.3", "dcall_fit3.3"), ("doublet_test level=0.01", "dcall_p0.01"),
                  ("doublet_test p <= 0.05", "dcall_p0.05"), ("triplet_scan min_llr=0", "tcall0"),
                  ("triplet_scan min_llr=20", "tcall20"), ("triplet_scan level=0.01", "tcall_p0.01"),
                  ("triplet_scan p <= 0.05", "tcall_p0.05")):
    called = res[col].fillna(False).astype(bool)
    rates[name] = {k: round(float(called[test & (res["kind"] == k)].mean()), 3)
                   for k in ("singlet_T", "singlet_MNP", "doublet", "triplet_AAB", "triplet_ABB")}
print(pd.DataFrame(rates).T.to_string())
print(f"doublet_test(level=0.01) took {t_level:.2f} s (the published rule: {t_qc / 4:.2f} s a call, about)")
print(f"triplet_scan(level=0.01) took {t_tlevel:.2f} s")
