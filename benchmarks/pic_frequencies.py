"""Pair composition and its test between conditions (``gsc.pic.pair_frequencies``,
``gsc.pic.pair_abundance_test``) on synthetic PICs from real singlets.

    python benchmarks/pic_frequencies.py --datasets pbmc68k,pbmc4k,tnbc --seeds 1,2 \
        --group-size 150 --out benchmarks/results/pic-frequencies-cpu-$(date +%F).jsonl

Reference and held-out sources as in `pic_validate.py`. Per data set, seed and method:

* composition: total-variation distance (TV) of the estimate from the PICs' true pair
  composition, for hard calls, the mean posterior and the confusion-corrected estimate
  (``singlets=``: the blend of the mean, the hard calls and the unmixed composition,
  ``mean_weight`` on the mean and ``hard_weight`` on the calls; ``tv_unmixed``: the unmixed part
  alone), and the share of pairs whose true fraction the
  95 % interval covers, with the interval over PICs and over their source cells (``_cells``:
  ``replicate_key=["source_a", "source_b"]``; the PICs share cells, which the PIC bootstrap
  takes as independent);
  ``tv_oracle_confusion``: the mean posterior unmixed through the confusion of fresh PICs
  simulated from the held-out cells themselves (the exact confusion, up to noise): what
  unmixing alone reaches with the right confusion. Not a floor of the estimate: among similar
  groups unmixing is badly conditioned, and the blend with the mean does better (pbmc4k_bnk
  seeds 71-72, ml: 0.30-0.35 against the estimate's 0.107-0.116);
* null: the PICs split at random into two conditions, ``--n-splits`` times: calls at FDR 0.1
  (every one false) and the share of p values under 0.05;
* power: condition y loses two thirds of the PICs of the commonest true pair (`--n-splits`
  times): is that pair called (down in y, i.e. up in x); and how many calls fall on other pairs
  (`power_calls_elsewhere`): shares are relative, so every other pair's share rises in y by
  the same factor, and those calls are true too where the pair holds enough PICs;
* two depths (``--two-depths UMIS``): 40 % of the PICs thinned to UMIS UMIs (condition
  'shallow', the rest 'deep'), deconvolved together without ``n_umis`` (so the temperatures are
  fitted at the median depth), then ``pair_frequencies(..., singlets, condition_key=...)``: each
  condition's TV and interval coverage (``two_depths_*``; ml: picseq down-samples to 1,000).
One JSON row per (dataset, seed, method).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import cpu_name, jsonl_rows, versions
from pic_validate import DEFAULT_DATA, build, hits

from gpu_sc.pic._confusion import confusion, kept_posterior, simulated_posteriors, unmix


SOURCE_CELLS = ["source_a", "source_b"]


def _keys(pic_a, pic_b) -> pd.Index:
    """'a|b' per pair, the index of the truth (`_truth`)."""
    return pd.Index(pic_a).astype(str) + "|" + pd.Index(pic_b).astype(str)


def _truth(p, ok):
    return pd.Series(_keys(p.obs["true_a"], p.obs["true_b"]))[ok].value_counts(normalize=True)


def _aligned(truth, pic_a, pic_b) -> np.ndarray:
    """The true share of each pair (pic_a[i], pic_b[i]), 0 where the PICs hold none."""
    return truth.reindex(_keys(pic_a, pic_b), fill_value=0).to_numpy()


def _inside(tab, true) -> np.ndarray:
    """Whether each pair's interval holds its true share."""
    return (tab["ci_low"].to_numpy() <= true) & (true <= tab["ci_high"].to_numpy())


def _tv(estimate, true) -> float:
    return float(0.5 * np.abs(np.asarray(estimate) - true).sum())


def _oracle_tv(p, ref, sources, truth, n_sim: int) -> float:
    """TV of the mean posterior unmixed through the confusion of fresh PICs from the very cells
    these PICs came from (deconvolved against the same reference): unmixing with its confusion
    exactly right, i.e. the noise of unmixing itself (the blended estimate can do better)."""
    sim = simulated_posteriors(p, ref, n_sim, seed=10_000, sources=sources)
    kept, ok, names_a, names_b = kept_posterior(p, "oracle")
    mean = np.asarray(kept[np.flatnonzero(ok)].mean(axis=0)).ravel()
    fit = unmix(confusion(sim.post, sim.truth, kept.shape[1]), mean)
    return _tv(fit, _aligned(truth, names_a, names_b))


def composition(p, ref, sources, n_sim: int, n_boot: int) -> dict:
    ok = (p.obs["pic_status"] == "ok").to_numpy()
    truth = _truth(p, ok)
    row = {"tv_oracle_confusion": _oracle_tv(p, ref, sources, truth, n_sim),
           "n_source_cells_a": int(p.obs["source_a"][ok].nunique()),
           "n_source_cells_b": int(p.obs["source_b"][ok].nunique())}
    # "_cells": the interval of a bootstrap over the source cells (crossed A x B), which these
    # PICs share (1,500 PICs from a few dozen to a few hundred cells); real PICs never do
    for name, singlets, units in (("mean", None, None), ("corrected", ref, None),
                                  ("mean_cells", None, SOURCE_CELLS), ("corrected_cells", ref, SOURCE_CELLS)):
        t0 = time.perf_counter()
        tab = gsc.pic.pair_frequencies(p, singlets, replicate_key=units, n_sim=n_sim, n_boot=n_boot)
        row[f"seconds_{name}"] = time.perf_counter() - t0
        tr = _aligned(truth, tab["pic_a"], tab["pic_b"])
        row[f"tv_{name}"] = _tv(tab["fraction"], tr)
        inside = _inside(tab, tr)
        row[f"coverage_{name}"] = float(inside.mean())
        # the pairs that matter: those the truth or the estimate holds at >= 1 %
        big = (tr >= 0.01) | (tab["fraction"].to_numpy() >= 0.01)
        row[f"coverage_{name}_1pct"] = float(inside[big].mean())
        row[f"ci_width_{name}"] = float((tab["ci_high"] - tab["ci_low"]).mean())
        if name == "mean":
            row["tv_hard"] = _tv(tab["n_called"].to_numpy() / tab["n_pics"].to_numpy(), tr)
            row["n_pairs"] = len(tab)
            mean = pd.Series(tab["fraction"].to_numpy(), index=_keys(tab["pic_a"], tab["pic_b"]))
        if name == "corrected":  # the blend w * mean + h * hard + (1 - w - h) * unmixed: the unmixed part alone
            w, h = float(tab["mean_weight"].iloc[0]), float(tab["hard_weight"].iloc[0])
            row["mean_weight"], row["hard_weight"] = w, h
            hard = tab["n_called"].to_numpy() / tab["n_pics"].to_numpy()
            blend_part = (tab["fraction"].to_numpy() - w * mean.reindex(_keys(tab["pic_a"], tab["pic_b"])).to_numpy()
                          - h * hard)  # fmt: skip
            row["tv_unmixed"] = _tv(blend_part / (1 - w - h), tr) if w + h < 1 - 1e-12 else None
    return row


def two_depths(pics, ref, groups, method: str, umis: int, seed: int, n_boot: int, n_train: int,
               deconvolve_seed: int = 0) -> dict:
    """40 % of the PICs thinned to `umis` UMIs (without replacement), all deconvolved at their
    own depths, each condition's corrected composition against its truth."""
    rng = np.random.default_rng(seed)
    p = pics.copy()
    shallow = rng.random(p.n_obs) < 0.4
    x = sp.csr_matrix(p.X, dtype=np.float64)
    for i in np.flatnonzero(shallow):
        part = slice(x.indptr[i], x.indptr[i + 1])
        counts = x.data[part].astype(np.int64)
        x.data[part] = rng.multivariate_hypergeometric(counts, min(umis, int(counts.sum())))
    x.eliminate_zeros()
    p.X = x.astype(np.float32)
    p.obs["cond"] = np.where(shallow, "shallow", "deep")
    gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"], method=method, seed=deconvolve_seed,
                       n_train=n_train)
    t0 = time.perf_counter()
    tab = gsc.pic.pair_frequencies(p, ref, condition_key="cond", n_boot=n_boot)
    row = {"two_depths_umis": umis, "two_depths_seconds": time.perf_counter() - t0,
           "two_depths_calibration_depth": p.uns["pic"].get("calibration_depth")}
    ok = (p.obs["pic_status"] == "ok").to_numpy()
    for cond in ("deep", "shallow"):
        m = ok & (p.obs["cond"] == cond).to_numpy()
        t = tab[tab["cond"] == cond]
        tr = _aligned(_truth(p, m), t["pic_a"], t["pic_b"])
        row[f"two_depths_tv_{cond}"] = _tv(t["fraction"], tr)
        row[f"two_depths_coverage_{cond}"] = float(_inside(t, tr).mean())
        row[f"two_depths_median_{cond}"] = float(np.median(np.asarray(p.X[m].sum(1)).ravel()))
    return row


def null_and_power(p, n_splits: int, seed: int) -> dict:
    ok = (p.obs["pic_status"] == "ok").to_numpy()
    pairs = (p.obs["true_a"].astype(str) + "|" + p.obs["true_b"].astype(str)).to_numpy()
    top = _truth(p, ok).index[0]
    null_calls, null_sets, pvals, found, other, calls = 0, 0, [], 0, 0, 0
    for s in range(n_splits):
        rng = np.random.default_rng(seed * 1000 + s)
        cond = np.where(rng.random(p.n_obs) < 0.5, "x", "y")
        q = p.copy()
        q.obs["cond"] = cond
        tab = gsc.pic.pair_abundance_test(q, "cond", groups=("x", "y"), inplace=False)
        null_calls += int(tab["significant"].sum())
        null_sets += bool(tab["significant"].any())
        pvals += list(tab["pval"])
        drop = (cond == "y") & (pairs == top) & (rng.random(p.n_obs) < 2 / 3)
        q = p[~drop].copy()
        q.obs["cond"] = cond[~drop]
        tab = gsc.pic.pair_abundance_test(q, "cond", groups=("x", "y"), inplace=False)
        sig = tab[tab["significant"]]
        key = sig["pic_a"].astype(str) + "|" + sig["pic_b"].astype(str)
        found += bool(((key == top) & (sig["direction"] == "up")).any())
        other += int((key != top).sum())
        calls += len(sig)
    pvals = np.asarray(pvals)
    return {"n_splits": n_splits, "null_calls": null_calls, "null_sets_with_calls": null_sets,
            "null_p_below_0.05": float((pvals < 0.05).mean()), "power_found": found,
            "power_calls_elsewhere": other, "power_calls": calls, "depleted_pair": top,
            "depleted_pair_share": float(_truth(p, ok).iloc[0])}  # fmt: skip


def run(args, emit) -> None:
    for name in args.datasets:
        for seed in args.seeds:
            built, why = build(name, Path(args.data_dir), seed, args.n_pics, args.group_size,
                               max_reuse=args.max_reuse)
            if built is None:
                print(f"{name}: skipped ({why})", file=sys.stderr)
                continue
            ref, pics, groups = built["ref"], built["pics"], built["groups"]
            for method in args.methods:
                p = pics.copy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"], method=method,
                                       n_umis=built["info"]["n_umis"], seed=args.deconvolve_seed,
                                       n_train=args.n_train)  # fmt: skip
                    t_dec = time.perf_counter() - t0
                    ok = p.obs["pic_status"] == "ok"
                    kept, right = hits(p.obs, {}, None)
                    acc = float(right["pair_accuracy"][kept].mean())
                    row = {"mode": "frequencies", "dataset": name, "seed": seed, "method": method,
                           "group_size": args.group_size,
                           "max_reuse": args.max_reuse, "n_groups_a": len(groups["A"]), "n_groups_b": len(groups["B"]),
                           "n_pics": int(p.n_obs), "n_ok": int(ok.sum()), "pair_accuracy": acc,
                           "seconds_deconvolve": t_dec, "n_sim": args.n_sim, "n_boot": args.n_boot,
                           "n_train": args.n_train, "deconvolve_seed": args.deconvolve_seed,
                           **composition(p, ref, built["sources"], args.n_sim, args.n_boot),
                           **null_and_power(p, args.n_splits, seed),
                           **(two_depths(pics, ref, groups, method, args.two_depths, seed, args.n_boot, args.n_train,
                                         args.deconvolve_seed)
                              if args.two_depths and method == "ml" else {}),  # picseq reads 1,000 UMIs
                           "time": datetime.now(UTC).isoformat(), "cpu": cpu_name(),
                           "versions": versions()}  # fmt: skip
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                       if k not in ("versions", "time", "cpu")}, flush=True)  # fmt: skip
                emit(row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="pbmc68k,pbmc4k,tnbc", type=lambda s: s.split(","))
    ap.add_argument("--seeds", default="1", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--methods", default="ml,picseq", type=lambda s: s.split(","))
    ap.add_argument("--n-pics", type=int, default=1500)
    ap.add_argument("--group-size", type=int, default=150)
    ap.add_argument("--max-reuse", type=int, default=None,
                    help="each held-out source cell in at most this many PICs (default: no cap)")
    ap.add_argument("--n-sim", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--n-splits", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--deconvolve-seed", type=int, default=0, help="deconvolve's seed (its training draws)")
    ap.add_argument("--two-depths", type=int, default=None, metavar="UMIS",
                    help="also thin 40 %% of the PICs to UMIS UMIs and estimate each depth's composition")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with jsonl_rows(args.out) as emit:
        run(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
