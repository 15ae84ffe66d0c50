"""Calibration (null) and power of gsc.pic.triplet_scan(level=0.01) on other data sets, depths, seeds.
Adapted from a review helper's null check of doublet_test (its data set builds) and benchmarks/pic_qc.py (triplets
through simulate_pics). Results: benchmarks/results/pic-qc-cpu-2026-12-07-triplet-level-other-data.txt.

    python3 benchmarks/pic_qc_triplet_null.py DATASET SEED DEPTH [OUT_DIR]

DATASET: pbmc4k (pic_qc.py 'major': A = T_CD4, T_CD8, B = MNP (one group: no ABB)),
         pbmc4kK (pic_validate.py build: KMeans subgroups of T and MNP),
         tnbc, pbmc68k (pic_validate.py build: populations and KMeans groups of ~75 cells).
From held-out cells (30 %, never in the reference): 600 AB doublets, and where a population has
>= 2 groups among the held-out cells 100 AAB / 100 ABB triplets whose two same-population members
are of two distinct groups (simulate_pics composition 'AAB'/'ABB' as pic_qc.py: members' counts
pooled and drawn down to DEPTH; draws with the two members in one group dropped), all at DEPTH UMIs.
deconvolve(method='ml', n_umis=DEPTH), then triplet_scan(level=0.01, seed=SEED) and
triplet_scan(min_llr=0). The null LLRs are captured by wrapping gpu_sc.pic._qc.doublet_null.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pic_validate
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # gpu_sc from this checkout
import gpu_sc as gsc
from _common import pbmc4k_held_out
import gpu_sc.pic._qc as qcmod

ds, seed, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
OUT = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("pic-qc-triplet-out")
OUT.mkdir(parents=True, exist_ok=True)
t0 = time.time()
allw = []

def note(ws, where):
    for w in ws:
        allw.append(f"{where}: {w.category.__name__}: {str(w.message)[:300]}")

captured = []
_orig_null = qcmod.doublet_null
def _wrap_null(*a, **k):
    r = _orig_null(*a, **k)
    captured.append(np.asarray(r).copy())
    return r
qcmod.doublet_null = _wrap_null

if ds == "pbmc4k":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata, held = pbmc4k_held_out(seed)
    adata.obs["grp"] = adata.obs["Annotation"]
    ga, gb = ["T_CD4", "T_CD8"], ["MNP"]
    keep = adata.obs["grp"].isin(ga + gb).to_numpy()
    ref = adata[~held].copy()   # as pic_qc.py: all groups in the reference; the tests use A/B
    src = adata[held & keep].copy()
    src.obs_names_make_unique()
    ga_s, gb_s = ga, gb
else:
    import pic_validate as pv
    name = {"pbmc4kK": "pbmc4k"}.get(ds, ds)
    loader, n_u, pa_, pb_, sk = pv.DATASETS[name]
    pv.DATASETS[name] = (loader, depth, pa_, pb_, sk)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        built, why = pv.build(name, pv.DEFAULT_DATA, seed, 10, 75)
    if built is None:
        raise SystemExit(why)
    ref, src, groups = built["ref"], built["sources"], built["groups"]
    ga, gb = groups["A"], groups["B"]
    present = set(src.obs["grp"].astype(str))
    ga_s, gb_s = [g for g in ga if g in present], [g for g in gb if g in present]
assert not set(src.obs_names) & set(ref.obs_names), "held-out cells in the reference"

def sim(n, comp, s):
    """n PICs of `comp` at depth from the held-out cells; triplets with two distinct groups."""
    parts, made, rnd = [], 0, 0
    while made < n and rnd < 12:
        p = gsc.pic.simulate_pics(src, groupby="grp", a=ga_s, b=gb_s, n_pics=int((n - made) * 1.6) + 20,
                                  n_umis=depth, composition=comp, seed=s + rnd)
        if comp == "AAB":
            p = p[p.obs["true_a"].astype(str) != p.obs["true_a2"].astype(str)].copy()
        elif comp == "ABB":
            p = p[p.obs["true_b"].astype(str) != p.obs["true_b2"].astype(str)].copy()
        parts.append(p)
        made += p.n_obs
        rnd += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ad.concat(parts, join="outer") if len(parts) > 1 else parts[0]
    return p[:n].copy()

kinds = {"AB": ("doublet", 600, True), "AAB": ("triplet_AAB", 100, len(ga_s) >= 2),
         "ABB": ("triplet_ABB", 100, len(gb_s) >= 2)}
blocks, no_triplet = [], {}
for i, (comp, (kind, n, ok)) in enumerate(kinds.items()):
    if not ok:
        side, held = ("A", ga_s) if comp == "AAB" else ("B", gb_s)
        no_triplet[kind] = f"population {side} has {len(held)} held-out group(s)"
        continue
    p = sim(n, comp, seed * 100 + 10 * (i + 1))
    p.obs["kind"] = kind
    p.obs_names = [f"{comp}_{j}" for j in range(p.n_obs)]
    keepc = [c for c in ("kind", "true_a", "true_b", "true_a2", "true_b2", "true_alpha", "source_a", "source_b")
             if c in p.obs]
    p.obs = p.obs[keepc]
    blocks.append(p)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pics = ad.concat(blocks, join="outer")
pics.X = sp.csr_matrix(pics.X, dtype=np.float32)
tot = np.asarray(pics.X.sum(1)).ravel()
assert np.all(tot == depth)
t_build = time.time() - t0

t1 = time.time()
with warnings.catch_warnings(record=True) as ws:
    warnings.simplefilter("always")
    gsc.pic.deconvolve(pics, ref, groupby="grp", a=ga, b=gb, method="ml", n_umis=depth, seed=seed)
note(ws, "deconvolve")
t_dec = time.time() - t1
res = pics.obs.copy()
with warnings.catch_warnings(record=True) as ws:
    warnings.simplefilter("always")
    t1 = time.time()
    tl = gsc.pic.triplet_scan(pics, ref, groupby="grp", level=0.01, seed=seed, inplace=False)
    t_lv = time.time() - t1
note(ws, "triplet_scan(level=0.01)")
with warnings.catch_warnings(record=True) as ws:
    warnings.simplefilter("always")
    t1 = time.time()
    t0r = gsc.pic.triplet_scan(pics, ref, groupby="grp", min_llr=0, inplace=False)
    t_0 = time.time() - t1
note(ws, "triplet_scan(min_llr=0)")
null = captured[-1] if captured else np.array([])
res["tllr"] = tl["pic_triplet_llr"]
res["tp"] = tl["pic_triplet_p"]
res["tcall01"] = tl["pic_is_triplet"]
res["tside"] = tl["pic_triplet_side"].astype(str)
res["tgroups"] = tl["pic_triplet_groups"].astype(str)
res["tllr0"] = t0r["pic_triplet_llr"]
res["tcall0"] = t0r["pic_is_triplet"]
stem = OUT / f"{ds}_d{depth}_s{seed}"
res.to_csv(f"{stem}.csv")
np.save(f"{stem}_null.npy", null)
table = {}
for k in ("doublet", "triplet_AAB", "triplet_ABB"):
    r = res[res["kind"] == k]
    if len(r) == 0:
        table[k] = None
        continue
    pv_ = r["tp"]
    table[k] = dict(n=len(r), n_ok=int(r["pic_status"].astype(str).eq("ok").sum()), n_p=int(pv_.notna().sum()),
                    k01=int((pv_ <= 0.01).sum()), k05=int((pv_ <= 0.05).sum()), k10=int((pv_ <= 0.1).sum()),
                    p01=float((pv_ <= 0.01).mean()), p05=float((pv_ <= 0.05).mean()),
                    p10=float((pv_ <= 0.1).mean()), llr0=float(r["tcall0"].astype(bool).mean()),
                    call01=float(r["tcall01"].astype(bool).mean()))
lab = ref.obs["grp"].astype(str)
info = dict(ds=ds, seed=seed, depth=depth, groups_A=list(ga), groups_B=list(gb), held_groups_A=list(ga_s),
            held_groups_B=list(gb_s), n_ref_A=int(lab.isin(ga).sum()), n_ref_B=int(lab.isin(gb).sum()),
            n_src_A=int(src.obs["grp"].astype(str).isin(ga_s).sum()),
            n_src_B=int(src.obs["grp"].astype(str).isin(gb_s).sum()),
            n_null=int(null.size), null_q95=float(np.quantile(null, 0.95)) if null.size else None,
            null_q99=float(np.quantile(null, 0.99)) if null.size else None,
            no_triplet=no_triplet, table=table,
            status=res["pic_status"].astype(str).value_counts().to_dict(),
            warnings=allw, t_build=round(t_build, 1), t_deconvolve=round(t_dec, 1), t_level=round(t_lv, 1),
            t_min_llr0=round(t_0, 1), t_total=round(time.time() - t0, 1))
Path(f"{stem}.json").write_text(json.dumps(info, indent=1, default=str))
print(json.dumps({k: v for k, v in info.items() if k != "table"}, default=str))
print(pd.DataFrame({k: v for k, v in table.items() if v}).T.to_string())
