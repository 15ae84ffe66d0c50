"""Calibration and power of ``gsc.pic.interaction_genes`` on synthetic PICs from real singlets.

    python benchmarks/pic_interaction.py --datasets pbmc4k,pbmc68k,tnbc --seeds 0,1 \
        --n-pics 1500 --out benchmarks/results/pic-interaction-cpu-$(date +%F).jsonl

For each data set and seed, reference singlets and held-out source cells are built as in
`pic_validate.py` (the PICs' cells are never in the reference). Then, per deconvolution method:

* null: the PICs as simulated (no gene induced); every call at FDR 0.1 is false;
* planted (fold 2 and 3): in the PICs of the commonest true pair, 20 genes expressed in that
  pair's reference cells (>= 0.3 UMIs per PIC) get (fold - 1) x their count added as Poisson draws, before
  deconvolution; recall = share of the 20 called 'up', and the share of up-calls outside them.

``method="matched"`` (the calibrated default: doublets of the assigned pairs and of pairs drawn
from the pair posterior, the larger p-value), ``matched_assigned`` (``pair_uncertainty=False``:
the assigned pairs' doublets only) and ``method="chi2"`` (the published test) are run on the same
deconvolved PICs. With ``--true-pairs``, also ``matched_true_pairs``: ``matched_assigned`` on the
same PICs with each PIC's true pair and alpha in place of the calls (every PIC kept): what the
test finds when the pair calls are right, so that a shortfall in recall can be put on the calls
or on the test. With ``--replicate-key source_a``, also ``matched_units``: ``matched`` with
each group judged by the spread of its PICs' A source cells as well (``replicate_key``; the
synthetic PICs reuse those cells, real data's units are mice or patients). One JSON row per
(dataset, seed, deconvolution, scenario, test).
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

N_PROGRAMME = 20
FDR = 0.1


def plant(pics, ref, fold: float, seed: int):
    """A copy of `pics` with a programme of N_PROGRAMME genes induced `fold`-fold in the PICs of
    the commonest true pair, and the programme's gene names."""
    rng = np.random.default_rng(seed + 7919)
    pairs = pics.obs["true_a"].astype(str) + "|" + pics.obs["true_b"].astype(str)
    top = pairs.value_counts().index[0]
    target = (pairs == top).to_numpy()
    a, b = top.split("|")
    cells = ref.obs["grp"].astype(str).isin([a, b]).to_numpy()
    x = sp.csr_matrix(ref.X[cells], dtype=np.float64)
    share = np.asarray((sp.diags(1 / np.maximum(x.sum(axis=1).A1, 1)) @ x).mean(axis=0)).ravel()
    depth = float(np.asarray(pics.X.sum(axis=1)).mean())
    # expressed in the pair (at least 0.3 UMIs per PIC before induction), so that an induced gene
    # can show at all; the 20 are drawn among those
    candidates = np.flatnonzero(share * depth >= 0.3)
    genes = rng.choice(candidates, size=N_PROGRAMME, replace=False)
    out = pics.copy()
    x = sp.csr_matrix(out.X, dtype=np.float32).tolil()
    rows = np.flatnonzero(target)
    block = x[rows][:, genes].toarray()
    block += rng.poisson((fold - 1) * block)
    for j, g in enumerate(genes):
        x[rows, g] = block[:, j][:, None]
    out.X = sp.csr_matrix(x)
    return out, list(pics.var_names[genes]), top, int(target.sum())


def distinct_cells(pics):
    """The PICs whose A and B source cells appear in no earlier PIC: as real PICs are, each from
    cells of its own (the simulation draws sources with replacement, so 1,500 PICs from a few
    hundred held-out cells share them; that shared-cell structure is not in real data)."""
    seen_a, seen_b, keep = set(), set(), []
    for i, (sa, sb) in enumerate(zip(pics.obs["source_a"], pics.obs["source_b"], strict=True)):
        if sa not in seen_a and sb not in seen_b:
            seen_a.add(sa)
            seen_b.add(sb)
            keep.append(i)
    return pics[keep].copy()


def with_true_pairs(pics):
    """A copy of deconvolved `pics` whose calls are the truth: each PIC's true A and B group and
    alpha, every PIC 'ok' (the posterior dropped: it belongs to the calls)."""
    out = pics.copy()
    for call, truth in (("pic_a", "true_a"), ("pic_b", "true_b")):
        out.obs[call] = pd.Categorical(out.obs[truth].astype(str), categories=pics.obs[call].cat.categories)
    out.obs["pic_alpha"] = out.obs["true_alpha"].astype(np.float64)
    out.obs["pic_status"] = "ok"
    out.obsm.pop("pic_pair_posterior", None)
    return out


def score(table, programme: list[str] | None) -> dict:
    called = table["significant"].to_numpy()
    up = called & (table["direction"].to_numpy() == "up")
    row = {"n_tested": int(table["tested"].sum()), "n_called": int(called.sum()), "n_up": int(up.sum()),
           "n_called_fdr_0.01": int((table["fdr"] < 0.01).sum())}
    if programme is not None:
        in_prog = table.index.isin(programme)
        row["recall_up"] = float(up[in_prog].mean())
        row["up_outside_share"] = float((up & ~in_prog).sum() / max(up.sum(), 1))
    return row


def run(args, emit) -> list[dict]:
    rows = []
    for name in args.datasets:
        for seed in args.seeds:
            built, why = build(name, Path(args.data_dir), seed, args.n_pics, args.group_size,
                               max_reuse=args.max_reuse)
            if built is None:
                print(f"{name}: skipped ({why})", file=sys.stderr)
                continue
            ref, pics0, groups = built["ref"], built["pics"], built["groups"]
            if args.distinct:
                pics0 = distinct_cells(pics0)
            if args.replicate_key == "pic":  # every PIC a unit of its own: its own residual's spread
                pics0.obs["pic"] = pics0.obs_names.astype(str)
            scenarios = [("null", None)] + [(f"planted_{f:g}x", f) for f in args.folds]
            for scen, fold in scenarios:
                pics, programme, pair, n_target = (pics0.copy(), None, None, 0) if fold is None \
                    else plant(pics0, ref, fold, seed)  # fmt: skip
                for method in args.methods:
                    p = pics.copy()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t0 = time.perf_counter()
                        gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"],
                                           method=method, n_umis=built["info"]["n_umis"], seed=args.deconvolve_seed,
                                           n_train=args.n_train)  # fmt: skip
                        t_dec = time.perf_counter() - t0
                        gsc.pic.expected_expression(p, ref, groupby="grp")
                    if args.dask_rows:  # the test reads the PICs as Dask row blocks (deconvolved in memory)
                        import dask.array as da

                        p.X = da.from_array(sp.csr_matrix(p.X), chunks=(args.dask_rows, -1), asarray=False)
                    ok = p.obs["pic_status"] == "ok"
                    kept, right = hits(p.obs, {}, None)
                    pair_acc = float(right["pair_accuracy"][kept].mean())
                    tests = ("matched", "matched_assigned", "chi2") + (("matched_units",) if args.replicate_key else ())
                    tests += ("matched_true_pairs",) if args.true_pairs else ()
                    for test in tests:
                        t0 = time.perf_counter()
                        tested = with_true_pairs(p) if test == "matched_true_pairs" else p
                        kw = {"method": "chi2" if test == "chi2" else "matched", "min_pics": args.min_pics,
                              "fdr": FDR, "inplace": False, "groupby_keys": args.groupby_keys}
                        if test != "chi2":
                            kw.update(singlets=ref, groupby="grp",
                                      pair_uncertainty=test not in ("matched_assigned", "matched_true_pairs"),
                                      replicate_key=args.replicate_key if test == "matched_units" else None)
                        tab, skipped = None, None
                        try:
                            tab = gsc.pic.interaction_genes(tested, **kw)
                        except ValueError as e:  # e.g. --max-reuse: no group reaches --min-pics
                            skipped = str(e)
                        row = {"mode": "interaction", "dataset": name, "seed": seed, "scenario": scen,
                               "group_size": args.group_size,
                               "distinct_cells": args.distinct, "max_reuse": args.max_reuse,
                               "dask_rows": args.dask_rows, "n_train": args.n_train,
                               "deconvolve_seed": args.deconvolve_seed, "min_pics": args.min_pics,
                               "replicate_key": args.replicate_key if test == "matched_units" else None,
                               "groupby_keys": args.groupby_keys, "deconvolution": method,
                               "test": test, "n_pics": int(p.n_obs), "n_ok": int(ok.sum()),
                               "pair_accuracy": pair_acc, "planted_pair": pair, "n_pics_planted_pair": n_target,
                               "seconds_deconvolve": t_dec, "seconds_test": time.perf_counter() - t0,
                               **(score(tab, programme) if tab is not None else {"skipped": skipped}),
                               "fdr": FDR, "n_groups_a": len(groups["A"]),
                               "n_groups_b": len(groups["B"]), "time": datetime.now(UTC).isoformat(),
                               "cpu": cpu_name(), "versions": versions()}  # fmt: skip
                        print({k: row[k] for k in ("dataset", "seed", "scenario", "deconvolution", "test",
                                                   "n_tested", "n_called", "n_up", "recall_up",
                                                   "up_outside_share", "seconds_test", "skipped")
                               if k in row}, flush=True)  # fmt: skip
                        emit(row)
                        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="pbmc4k", type=lambda s: s.split(","))
    ap.add_argument("--seeds", default="0", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--methods", default="picseq", type=lambda s: s.split(","))
    ap.add_argument("--folds", default="2,3", type=lambda s: [float(v) for v in s.split(",") if v])
    ap.add_argument("--n-pics", type=int, default=1500)
    ap.add_argument("--distinct", action="store_true", help="keep only PICs of cells no other PIC uses")
    ap.add_argument("--max-reuse", type=int, default=None,
                    help="each held-out source cell in at most this many PICs (default: no cap)")
    ap.add_argument("--replicate-key", default=None,
                    help="obs column of the matched tests' units (source_a: the PICs' A cells; pic: each PIC)")
    ap.add_argument("--true-pairs", action="store_true",
                    help="also test with each PIC's true pair and alpha in place of the calls (matched_true_pairs)")
    ap.add_argument("--groupby-keys", default="pic_a,pic_b", type=lambda s: s.split(","))
    ap.add_argument("--group-size", type=int, default=30)
    ap.add_argument("--min-pics", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--deconvolve-seed", type=int, default=0, help="deconvolve's seed (its training draws)")
    ap.add_argument("--dask-rows", type=int, default=None,
                    help="test the deconvolved PICs as a Dask array of row blocks of this many PICs")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with jsonl_rows(args.out) as emit:
        run(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
