"""How well can alpha be estimated at all? Alpha R^2 of synthetic PICs with the TRUE pair given,
under references of decreasing coarseness, on real singlets with the PIC sources held out.

    python benchmarks/pic_alpha_ceiling.py --datasets pbmc68k,pbmc4k,tnbc \
        --out benchmarks/results/pic-alpha-ceiling-$(date +%F).jsonl

Estimators (all maximise or average the multinomial mixture likelihood of the PIC over all
genes, alpha on [0, 1], the pair fixed to the truth):
- group: pooled-count profiles of the reference groups (what deconvolve's pair search uses);
- size_prior: the posterior mean that deconvolve's ml reports (group profiles, cell-size prior,
  likelihood tempered; the temperature picked here on the PICs themselves, an optimistic bound);
- oracle_knn: profiles of the 10 reference cells nearest (PCA of log-normalised counts) to each
  TRUE source cell: the best a nearest-singlet refinement could reach;
- oracle_own: the two source cells' own profiles (they are not in the reference). These
  profiles contain the very UMIs the PIC was drawn from, so this flatters: the next two do not;
- oracle_split_same / oracle_split_rest: every source cell's UMIs split into two binomial
  halves, PICs drawn (a second set) from one half; profiles from that same half (as oracle_own)
  or from the other half, which under Poisson sampling is independent of the PIC given the
  cell's state: what knowing each PIC's own two cells (at half their depth) can give.
The gap between group / size_prior and oracle_split_rest is the coarseness of the reference;
oracle_knn bounds what finer, local references can recover when the source cells are held out.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import cpu_name, versions
from pic_validate import DATASETS, DEFAULT_DATA

from gpu_sc._stats import r_squared
from gpu_sc.pic._alpha_ml import optimise_alpha
from gpu_sc.pic._posterior import GRID, TAUS, SizePrior, best_tau, grid_loglik


def _r2(truth, est):
    r2 = r_squared(truth, est) if truth.size >= 10 else float("nan")
    return None if np.isnan(r2) else r2


def _profile(x: sp.csr_matrix, rows) -> np.ndarray:
    v = np.asarray(x[rows].sum(0)).ravel()
    return v / max(v.sum(), 1.0)


def _pca(x: sp.csr_matrix, n_comps: int = 30) -> np.ndarray:
    """Cells in a PCA of log-normalised counts (top 2000 genes by total), for the oracle kNN."""
    tot = np.asarray(x.sum(1)).ravel()
    genes = np.argsort(-np.asarray(x.sum(0)).ravel())[:2000]
    lg = np.log1p(x[:, genes].toarray() / np.maximum(tot, 1)[:, None] * 1e4)
    lg -= lg.mean(0)
    u, s, _ = np.linalg.svd(lg, full_matrices=False)
    return u[:, :n_comps] * s[:n_comps]


def _split_oracle(sources, xs: sp.csr_matrix, ga, gb, n_umis: int, args) -> tuple[dict, int]:
    """Alpha R^2 of PICs drawn from one binomial half of each source cell's UMIs, with
    profiles from that half (same) and from the other half (rest) (None under 10 PICs: half
    cells reach the PIC's UMI total less often), and the number of those PICs."""
    rng = np.random.default_rng(args.seed + 2)
    half = xs.copy()
    half.data = rng.binomial(xs.data.astype(np.int64), 0.5).astype(np.float64)
    rest = xs - half
    thin = sources.copy()
    thin.X = half
    pics = gsc.pic.simulate_pics(thin, groupby="grp", a=ga, b=gb, n_pics=args.n_pics,
                                 n_umis=n_umis, seed=args.seed + 3)
    row = {n: i for i, n in enumerate(thin.obs_names)}
    u_all = sp.csr_matrix(pics.X, dtype=np.float64)
    est = {"oracle_split_same": np.empty(pics.n_obs), "oracle_split_rest": np.empty(pics.n_obs)}
    for n in range(pics.n_obs):
        g_ = u_all.indices[u_all.indptr[n]:u_all.indptr[n + 1]]
        u = u_all.data[u_all.indptr[n]:u_all.indptr[n + 1]]
        sa, sb = row[pics.obs["source_a"].iloc[n]], row[pics.obs["source_b"].iloc[n]]
        for key, m in (("oracle_split_same", half), ("oracle_split_rest", rest)):
            pa, pb = _profile(m, [sa]), _profile(m, [sb])
            est[key][n] = optimise_alpha(u, pa[g_, None], pb[g_, None], 1e-6)[0][0, 0]
    truth = pics.obs["true_alpha"].to_numpy()
    return {k: _r2(truth, v) for k, v in est.items()}, int(pics.n_obs)


def run(args) -> dict:
    loader, n_umis = DATASETS[args.dataset][:2]
    n_umis = args.n_umis or n_umis
    loaded, why = loader(args.data_dir)
    if loaded is None:
        raise SystemExit(f"pic_alpha_ceiling: {args.dataset}: {why}")
    cells, pop = loaded[0], loaded[1]
    cells, pop = cells[pop != ""].copy(), pop[pop != ""]
    x = sp.csr_matrix(cells.X, dtype=np.float64)
    rng = np.random.default_rng(args.seed)
    src = rng.random(cells.n_obs) < 0.3
    # groups: contiguous blocks of cells along the first PC within each population, ~group_size
    emb = _pca(x)
    labels = np.empty(cells.n_obs, dtype=object)
    for p in ("A", "B"):
        rows = np.flatnonzero(pop == p)
        order = rows[np.argsort(emb[rows, 0])]
        k = max(1, rows.size // args.group_size)
        for i, part in enumerate(np.array_split(order, k)):
            labels[part] = f"{p}{i}"
    cells.obs["grp"] = labels.astype(str)
    ga = sorted({g for g in labels[pop == "A"] if (labels[src] == g).any() and (labels[~src] == g).any()})
    gb = sorted({g for g in labels[pop == "B"] if (labels[src] == g).any() and (labels[~src] == g).any()})
    pics = gsc.pic.simulate_pics(cells[src], groupby="grp", a=ga, b=gb, n_pics=args.n_pics,
                                 n_umis=n_umis, seed=args.seed + 1)
    ref = np.flatnonzero(~src)
    name_to_row = {n: i for i, n in enumerate(cells.obs_names)}
    prof = {g: _profile(x, ref[labels[ref] == g]) for g in ga + gb}
    u_all = sp.csr_matrix(pics.X, dtype=np.float64)
    truth = pics.obs["true_alpha"].to_numpy()
    est = {k: np.empty(pics.n_obs) for k in ("group", "oracle_knn", "oracle_own")}
    for n in range(pics.n_obs):
        s_, e_ = u_all.indptr[n], u_all.indptr[n + 1]
        g_, u = u_all.indices[s_:e_], u_all.data[s_:e_]

        def fit(pa, pb):
            return optimise_alpha(u, pa[g_, None], pb[g_, None], 1e-6)[0][0, 0]

        sa = name_to_row[pics.obs["source_a"].iloc[n]]
        sb = name_to_row[pics.obs["source_b"].iloc[n]]
        est["group"][n] = fit(prof[pics.obs["true_a"].iloc[n]], prof[pics.obs["true_b"].iloc[n]])
        est["oracle_own"][n] = fit(_profile(x, [sa]), _profile(x, [sb]))
        near = []
        for s in (sa, sb):
            cand = ref[pop[ref] == pop[s]]
            near.append(cand[np.argsort(((emb[cand] - emb[s]) ** 2).sum(1))[:10]])
        est["oracle_knn"][n] = fit(_profile(x, near[0]), _profile(x, near[1]))
    ia = np.array([ga.index(a) for a in pics.obs["true_a"]])
    ib = np.array([gb.index(b) for b in pics.obs["true_b"]])
    full = np.stack([prof[g] for g in ga + gb], 1)
    ll = grid_loglik(u_all, full[:, : len(ga)], full[:, len(ga):], ia, ib, eps=1e-6)
    prior = SizePrior.from_counts(np.asarray(x[ref].sum(1)).ravel(), labels[ref].astype(str), ga + gb)
    tau, r2_prior = best_tau(ll, prior.log_density(ia, ib, len(ga)), truth, taus=TAUS)
    r2 = {k: _r2(truth, v) for k, v in est.items()}
    r2["size_prior"] = r2_prior
    split, n_split = _split_oracle(cells[src], x[src], ga, gb, n_umis, args)
    r2.update(split)
    return {"mode": "alpha_ceiling", "dataset": args.dataset, "n_pics": int(pics.n_obs),
            "n_pics_split": n_split, "n_umis": int(n_umis),
            "n_groups_a": len(ga), "n_groups_b": len(gb),
            "group_size": args.group_size, "seed": args.seed, "alpha_r2": r2,
            "size_prior_tau": tau, "alpha_true_sd": float(truth.std()), "grid_points": GRID.size,
            "device": cpu_name(), "versions": versions(),
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="pbmc4k", help="comma-separated: pbmc68k, pbmc4k, tnbc")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n-pics", type=int, default=400)
    p.add_argument("--group-size", type=int, default=100, help="reference cells per group")
    p.add_argument("--n-umis", type=int, default=None,
                   help="PIC UMIs (default: the data set's, as in pic_validate.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="append one JSON line per data set")
    args = p.parse_args(argv)
    for name in args.datasets.split(","):
        args.dataset = name
        row = run(args)
        print(name, json.dumps({k: v if v is None else round(v, 3)
                                for k, v in row["alpha_r2"].items()}))
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
