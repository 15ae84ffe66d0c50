"""Time gpu_sc's combat against scanpy's on the CPU, on real cells resampled to the size asked
for (regress_out.py's preparation: pbmc4k_half, normalised, log1p, the highly variable genes):

    python3 benchmarks/combat.py --n-cells 100000 --repeats 3 \
        --out benchmarks/results/cpu-combat-100k-$(date +%F).jsonl

Batches: the cells are split into `--batches` batches at random, and each batch's log values are
shifted and scaled per gene (a planted batch effect, drawn with the seed), so the correction has
something to remove. Cases (`--cases`): `batch` (the batch key only) and `covariate` (plus a
numeric covariate, the cells' total counts). Each library gets a fresh copy for every run after
one untimed run (Numba compilation); the two take turns and the median is kept, with each one's
peak resident-memory rise (run.py's timing). `parity_max_abs_diff` is the largest |ours -
scanpy| of one run; `batch_mean_spread_before/after` the mean over genes of the standard
deviation of the batch means (what the correction should remove).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, run.py
import gpu_sc as gsc
from _common import add_timing_arguments, check_cases, cpu_name, jsonl_rows, versions
from regress_out import prepare
from run import _time, _touch_memory

CASES = ("batch", "covariate")


def planted(lognorm, n_batches: int, seed: int):
    """`lognorm` (CSR) with obs['batch'] at random and each batch's stored values scaled and
    shifted per gene (zeros stay zeros: the sparsity is the data's)."""
    rng = np.random.default_rng(seed)
    a = lognorm.copy()
    codes = rng.integers(0, n_batches, a.n_obs)
    a.obs["batch"] = pd.Categorical([f"b{c}" for c in codes])
    scale = rng.uniform(0.8, 1.25, (n_batches, a.n_vars))
    shift = rng.normal(0, 0.2, (n_batches, a.n_vars))
    x = a.X.tocsr(copy=True)
    rows = np.repeat(codes, np.diff(x.indptr))
    x.data = np.maximum(x.data * scale[rows, x.indices] + shift[rows, x.indices], 0).astype(x.dtype)
    a.X = x
    return a


def batch_mean_spread(x, batch) -> float:
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    means = pd.DataFrame(x).groupby(np.asarray(batch), observed=True).mean().to_numpy()
    return float(means.std(axis=0).mean())


def run(args, emit=lambda row: None) -> list[dict]:
    import scanpy as sc

    lognorm, n_genes_counts, nnz = prepare(args.n_cells, args.seed, args.n_top_genes)
    data = planted(lognorm, args.batches, args.seed)
    if args.touch_memory > 0:
        _touch_memory(int(args.touch_memory * 2**30))
    common = {"n_cells": data.n_obs, "n_genes": data.n_vars, "n_genes_counts": n_genes_counts, "nnz_counts": nnz,
              "n_batches": args.batches, "dataset": "pbmc4k_half", "seed": args.seed, "repeats": args.repeats,
              "cpu_count": os.cpu_count(), "versions": versions(),
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        print(f"{case} ...", file=sys.stderr, flush=True)
        cov = ["total_counts"] if case == "covariate" else None
        peaks: list = []
        fns = [lambda a: gsc.pp.combat(a, "batch", covariates=cov), lambda a: sc.pp.combat(a, "batch", covariates=cov)]
        ours, ref = _time(fns, data.copy, args.repeats, peaks=peaks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = gsc.pp.combat(data.copy(), "batch", covariates=cov, inplace=False)
            want = sc.pp.combat(data.copy(), "batch", covariates=cov, inplace=False)
        row = {"step": "combat", "case": case, "covariates": cov, "backend": "cpu", "device": cpu_name(),
               "storage": "csr", "seconds": ours, "reference": "scanpy", "reference_seconds": ref, "ratio": ref / ours,
               "peak_rss_mib": None if peaks[0] is None else round(peaks[0] / 2**20, 1),
               "reference_peak_rss_mib": None if peaks[1] is None else round(peaks[1] / 2**20, 1),
               "parity_max_abs_diff": float(np.max(np.abs(got - want))),
               "batch_mean_spread_before": batch_mean_spread(data.X, data.obs["batch"]),
               "batch_mean_spread_after": batch_mean_spread(got, data.obs["batch"]), **common}  # fmt: skip
        del got, want
        rows.append(row)
        emit(row)
        print(f"{case:10s} gpu_sc {ours:8.3f} s  scanpy {ref:8.3f} s  ratio {ref / ours:6.1f}  "
              f"parity {row['parity_max_abs_diff']:.1e}  peak MiB {row['peak_rss_mib']} vs "
              f"{row['reference_peak_rss_mib']}  batch spread {row['batch_mean_spread_before']:.3f} -> "
              f"{row['batch_mean_spread_after']:.3f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--n-top-genes", type=int, default=2000)
    p.add_argument("--batches", type=int, default=4)
    add_timing_arguments(p, CASES)
    args = p.parse_args(argv)
    check_cases(p, args.cases, CASES)
    if args.repeats < 1 or args.n_cells < 1 or args.batches < 2:
        p.error("--repeats and --n-cells must be at least 1, --batches at least 2")
    with jsonl_rows(args.out) as emit:
        run(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
