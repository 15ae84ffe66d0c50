"""Time gpu_sc's regress_out against scanpy's on the CPU, on real cells resampled to the size
asked for (as run.py does), normalised, log1p and cut to the highly variable genes:

    python3 benchmarks/regress_out.py --n-cells 100000 --repeats 3 \
        --out benchmarks/results/cpu-regress-out-100k-2026-12-03.jsonl

Cases (`--cases`):
- `numeric-csr`, `numeric-dense`: keys total_counts + pct_counts_mt (calculate_qc_metrics) on
  the CSR matrix the pipeline holds, and on the same matrix dense. scanpy solves its normal
  equations once here; all genes are timed for both libraries.
- `categorical`: the published cell types of pbmc4k (`Annotation`) as the key, where scanpy fits
  a statsmodels GLM per gene. That took 0.14-0.18 s a gene at 100,000 cells (2 busy cores), about
  5 minutes a run for 2,000 genes, so both libraries are timed on the first `--categorical-genes`
  genes only (the row says so: `n_genes_timed`, `note`), and gpu_sc once more on all of them
  (`seconds_all_genes`); nothing is extrapolated.

Each library gets a fresh copy for every run and runs once untimed first (Numba compilation);
the two take turns and the median is kept (run.py's timing). Rows are JSON lines as run.py's,
with `parity_max_rel_diff`: the largest |ours - scanpy| over the largest |scanpy| of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, run.py
import gpu_sc as gsc
from _common import add_timing_arguments, check_cases, cpu_name, jsonl_rows, versions
from gpu_sc.preprocessing._regress_out import regress_out
from run import _time, _touch_memory

KEYS = ["total_counts", "pct_counts_mt"]
CASES = ("numeric-csr", "numeric-dense", "categorical")


def prepare(n_cells: int, seed: int, n_top_genes: int):
    """Resampled pbmc4k_half counts with QC columns, normalised, log1p, the HVG subset (CSR)."""
    base = gsc.datasets.pbmc4k_half()
    a = gsc.datasets.resample(base, n_cells, seed=seed)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    nnz = int(a.X.nnz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.calculate_qc_metrics(a, qc_vars=["mt"], inplace=True)
        gsc.pp.normalize_total(a, target_sum=1e4)
        gsc.pp.log1p(a)
        gsc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, subset=True)
    return a, base.n_vars, nnz


def _parity(prepared, keys) -> float:
    import scanpy as sc

    ours, ref = prepared.copy(), prepared.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regress_out(ours, keys)
        sc.pp.regress_out(ref, keys)
    return float(np.max(np.abs(ours.X.astype(np.float64) - ref.X)) / np.max(np.abs(ref.X)))


def run(args, emit=lambda row: None) -> list[dict]:
    import scanpy as sc
    import statsmodels.api  # noqa: F401  (imported inside a warnings filter, it would put "always" ahead of it)

    lognorm, n_genes_counts, nnz = prepare(args.n_cells, args.seed, args.n_top_genes)
    if args.touch_memory > 0:
        _touch_memory(int(args.touch_memory * 2**30))
    common = {"n_cells": lognorm.n_obs, "n_genes": lognorm.n_vars, "n_genes_counts": n_genes_counts,
              "nnz_counts": nnz, "dataset": "pbmc4k_half", "seed": args.seed, "repeats": args.repeats,
              "cpu_count": os.cpu_count(), "versions": versions(),
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        print(f"{case} ...", file=sys.stderr, flush=True)
        prepared, keys, extra = lognorm, KEYS, {}
        if case == "numeric-dense":
            prepared = lognorm.copy()
            prepared.X = prepared.X.toarray()
        if case == "categorical":
            keys = "Annotation"
            genes = min(args.categorical_genes, lognorm.n_vars)
            prepared = lognorm[:, :genes].copy()
            everything = _time([lambda a: regress_out(a, keys)], lognorm.copy, args.repeats)[0]
            extra = {"n_genes_timed": genes, "seconds_all_genes": everything,
                     "note": f"scanpy fits a GLM per gene: both libraries timed on the first {genes} of "
                             f"{lognorm.n_vars} genes; seconds_all_genes is gpu_sc on all of them"}  # fmt: skip
        peaks: list = []
        fns = [lambda a: regress_out(a, keys), lambda a: sc.pp.regress_out(a, keys)]
        ours, ref = _time(fns, prepared.copy, args.repeats, peaks=peaks)
        row = {"step": "regress_out", "case": case, "keys": keys, "backend": "cpu", "device": cpu_name(),
               "storage": "dense" if case == "numeric-dense" else "csr", "seconds": ours, "reference": "scanpy",
               "reference_seconds": ref, "ratio": ref / ours,
               "peak_rss_mib": None if peaks[0] is None else round(peaks[0] / 2**20, 1),
               "reference_peak_rss_mib": None if peaks[1] is None else round(peaks[1] / 2**20, 1),
               "parity_max_rel_diff": _parity(prepared, keys), **extra, **common}  # fmt: skip
        rows.append(row)
        emit(row)
        print(f"{case:14s} gpu_sc {ours:8.3f} s  scanpy {ref:8.3f} s  ratio {ref / ours:6.1f}  "
              f"parity {row['parity_max_rel_diff']:.2e}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--n-top-genes", type=int, default=2000)
    p.add_argument("--categorical-genes", type=int, default=100, metavar="N",
                   help="genes both libraries are timed on in the categorical case (scanpy's GLM per gene)")
    add_timing_arguments(p, CASES)
    args = p.parse_args(argv)
    check_cases(p, args.cases, CASES)
    if args.repeats < 1 or args.n_cells < 1 or args.categorical_genes < 1:
        p.error("--repeats, --n-cells and --categorical-genes must be at least 1")
    with jsonl_rows(args.out) as emit:
        run(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
