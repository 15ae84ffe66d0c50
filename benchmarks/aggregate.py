"""gsc.get.aggregate and gsc.tl.rank_genes_groups (t-test, wilcoxon) against scanpy at full gene
width, in the same run.

    python benchmarks/aggregate.py --cells 100000 --groups 20 \
        --out benchmarks/results/aggregate-cpu-$(date +%F).jsonl

Cells resampled (`gsc.datasets.resample`) from the bundled 33,694-gene pbmc4k matrix
(`gsc.datasets.pbmc4k_half`, or the h5ad given as `--data`), raw counts and their log1p of
normalize_total; `--groups` groups of cells drawn at random with unequal sizes. Per data kind
(counts, log) and func set: the median of `--repeats` timings of each library, their ratio, and
whether the layers are identical; then rank_genes_groups per `--methods` (log data): timings and
whether the top-100 genes of every group are identical in order, and filter_rank_genes_groups of
that ranking: timings and whether the same genes are kept. GPU rows (`--backend gpu`) time
our kernel on cupyx input. `--skip-aggregate` times the marker genes only.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import cpu_name, jsonl_rows, versions

FUNC_SETS = (["sum"], ["mean", "var"], ["sum", "mean", "var", "count_nonzero"])


def source(data: Path | None) -> tuple[ad.AnnData, str]:
    a, name = (ad.read_h5ad(data), data.name) if data else (gsc.datasets.pbmc4k_half(), "bundled pbmc4k_half")
    return ad.AnnData(a.X.tocsr() if hasattr(a.X, "tocsr") else a.X, obs=a.obs), name  # obs: its annotation


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def identical(a: ad.AnnData, b: ad.AnnData) -> bool:
    return all(np.asarray(a.layers[k]).dtype == np.asarray(b.layers[k]).dtype
               and np.array_equal(np.asarray(a.layers[k]), np.asarray(b.layers[k]), equal_nan=True)
               for k in b.layers)  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--data", type=Path, default=None, help="an h5ad of raw counts (default: the bundled pbmc4k)")
    ap.add_argument("--methods", default="t-test,wilcoxon", help="rank_genes_groups methods, comma-separated")
    ap.add_argument("--marker-groupby", default="grp",
                    help="the obs column the marker genes are ranked by: grp (the random groups) or one of the "
                         "data's (the bundled pbmc4k's Annotation: cell types, whose markers the filter keeps)")
    ap.add_argument("--skip-aggregate", action="store_true", help="time rank_genes_groups only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import scanpy as sc

    raw, name = source(args.data)
    cells = gsc.datasets.resample(raw, args.cells, seed=0)
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.full(args.groups, 2.0))
    names = np.asarray([f"g{i}" for i in range(args.groups)])
    cells.obs["grp"] = names[rng.choice(args.groups, cells.n_obs, p=weights)]
    logged = cells.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.normalize_total(logged)
        gsc.pp.log1p(logged)
    with jsonl_rows(args.out) as emit:
        for kind, a in () if args.skip_aggregate else (("counts", cells), ("log", logged)):
            for funcs in FUNC_SETS:
                row = {"step": "aggregate", "data": kind, "funcs": funcs, "backend": args.backend,
                       "n_cells": a.n_obs, "n_genes": a.n_vars, "nnz": int(a.X.nnz), "n_groups": args.groups,
                       "source": name, "repeats": args.repeats}  # fmt: skip
                t_sc, ref = timed(lambda a=a, funcs=funcs: sc.get.aggregate(a, "grp", funcs), args.repeats)
                g = a
                if args.backend == "gpu":
                    import cupy as cp

                    g = a.copy()
                    gsc.get.to_gpu(g)

                    def run(g=g, funcs=funcs):
                        out = gsc.get.aggregate(g, "grp", funcs)
                        cp.cuda.Device().synchronize()
                        return out

                    gsc.get.aggregate(g, "grp", funcs)  # compile the kernels once
                else:
                    gsc.get.aggregate(g, "grp", funcs)  # numba's first call

                    def run(g=g, funcs=funcs):
                        return gsc.get.aggregate(g, "grp", funcs)

                t_us, got = timed(run, args.repeats)
                if args.backend == "gpu":
                    gsc.get.to_cpu(got)
                row.update(seconds_scanpy=t_sc, seconds_gpu_sc=t_us, speedup=t_sc / t_us,
                           identical_to_scanpy=identical(got, ref), time=datetime.now(UTC).isoformat(),
                           cpu=cpu_name(), versions=versions())  # fmt: skip
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                       if k not in ("versions", "time", "cpu")}, flush=True)  # fmt: skip
                emit(row)
        for method in args.methods.split(","):
            for row in _markers(logged, args, method):
                emit(row)
    return 0


def _row(args, a, **fields) -> dict:
    row = {**fields, "groupby": args.marker_groupby, "data": "log", "backend": args.backend, "n_cells": a.n_obs,
           "n_genes": a.n_vars, "n_groups": a.obs[args.marker_groupby].nunique(), "repeats": args.repeats,
           "time": datetime.now(UTC).isoformat(),
           "cpu": cpu_name(), "versions": versions()}  # fmt: skip
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
           if k not in ("versions", "time", "cpu")}, flush=True)  # fmt: skip
    return row


def _markers(a, args, method: str) -> list[dict]:
    """rank_genes_groups by `method`, then filter_rank_genes_groups of that ranking (its shares
    computed from X: the ranking has no pts), each against scanpy's."""
    import scanpy as sc

    ref, got = a.copy(), a.copy()
    if args.backend == "gpu":
        gsc.get.to_gpu(got)
    key = args.marker_groupby
    t_sc, _ = timed(lambda: sc.tl.rank_genes_groups(ref, key, method=method), args.repeats)
    gsc.tl.rank_genes_groups(got, key, method=method)  # compile once
    t_us, _ = timed(lambda: gsc.tl.rank_genes_groups(got, key, method=method), args.repeats)
    r, g = ref.uns["rank_genes_groups"]["names"], got.uns["rank_genes_groups"]["names"]
    same = all(np.array_equal(r[f][:100], g[f][:100]) for f in r.dtype.names)
    rows = [_row(args, a, step="rank_genes_groups", method=method, seconds_scanpy=t_sc, seconds_gpu_sc=t_us,
                 speedup=t_sc / t_us, top100_identical_to_scanpy=bool(same))]  # fmt: skip
    t_sc, _ = timed(lambda: sc.tl.filter_rank_genes_groups(ref), args.repeats)
    gsc.tl.filter_rank_genes_groups(got)  # compile once
    t_us, _ = timed(lambda: gsc.tl.filter_rank_genes_groups(got), args.repeats)
    r, g = (x.uns["rank_genes_groups_filtered"]["names"] for x in (ref, got))
    same = all(pd.Series(r[f]).equals(pd.Series(g[f])) for f in r.dtype.names)
    rows.append(_row(args, a, step="filter_rank_genes_groups", method=method, seconds_scanpy=t_sc,
                     seconds_gpu_sc=t_us, speedup=t_sc / t_us, kept=int(pd.DataFrame(g).notna().sum().sum()),
                     identical_to_scanpy=bool(same)))  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
