"""Scrublet doublet detection: gpu_sc's `scrublet` against scanpy's `sc.pp.scrublet`, on the same
resampled cells (full 33,694-gene width of the bundled pbmc4k half), same parameters and seed.

    python3 benchmarks/scrublet.py --n-cells 100000 \
        --out benchmarks/results/cpu-scrublet-100k-$(date +%F).jsonl

Two cases per size: `default` (use_approx_neighbors=None: scanpy takes pynndescent once cells +
doublets reach 8,192, which fails in scanpy 1.11.5 with pynndescent 0.7: "'csr_array' object has
no attribute 'getnnz'") and `exact` (use_approx_neighbors=False: both exact kNN). Each library
runs once untimed on 1,000 resampled cells first (Numba / pynndescent compilation excluded),
then `--repeats` timed runs on fresh copies (median kept). Rows: step, backend, device, n_cells,
n_genes, nnz, seconds, reference ('scanpy'), reference_seconds, ratio (scanpy / gpu_sc), errors,
peak_rss_mib (gpu_sc) / reference_peak_rss_mib (resident memory added at the peak), the
Spearman correlation of the two libraries' doublet scores and the share of equal calls, versions,
timestamp.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
import gpu_sc as gsc
from _common import cpu_name, jsonl_rows, versions

CASES = {"default": {}, "exact": {"use_approx_neighbors": False}}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _timed(fn):
    """(seconds, peak resident bytes added, error or None)."""
    start, peak, done = _rss(), [0], threading.Event()

    def watch():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss() - start)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    try:
        fn()
        error = None
    except Exception as e:  # a failing reference is a result
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    return seconds, max(peak[0], _rss() - start), error


def _spearman(a, b) -> float:
    ra, rb = (np.argsort(np.argsort(x, kind="stable"), kind="stable") for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run(n_cells: int, repeats: int, seed: int, cases, emit) -> list[dict]:
    import scanpy as sc

    from gpu_sc.preprocessing._scrublet import scrublet

    source = gsc.datasets.pbmc4k_half()
    small = gsc.datasets.resample(source, 1000, seed=seed)
    base = gsc.datasets.resample(source, n_cells, seed=seed)
    libs = {"gpu_sc": scrublet, "scanpy": sc.pp.scrublet}
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            kw = dict(CASES[case], random_state=0)
            for fn in libs.values():
                _timed(lambda fn=fn: fn(small.copy(), **kw))  # compile, untimed
            times = {name: [] for name in libs}
            peaks = {name: 0 for name in libs}
            errors = {name: None for name in libs}
            results = {}
            for _ in range(repeats):
                for name, fn in libs.items():
                    a = base.copy()
                    s, p, e = _timed(lambda a=a, fn=fn: fn(a, **kw))
                    times[name].append(s)
                    peaks[name], errors[name] = max(peaks[name], p), e
                    results[name] = a
                    print(f"  {case} {name}: {s:.1f} s{' (' + e + ')' if e else ''}", file=sys.stderr, flush=True)
            ours, ref = (None if errors[n] else statistics.median(times[n]) for n in libs)
            row = {
                "step": f"scrublet_{case}", "backend": "cpu", "device": cpu_name(), "n_cells": base.n_obs,
                "n_genes": base.n_vars, "nnz": int(base.X.nnz), "params": {k: v for k, v in kw.items()},
                "seconds": ours, "error": errors["gpu_sc"], "reference": "scanpy", "reference_seconds": ref,
                "reference_error": errors["scanpy"], "ratio": ref / ours if ours and ref else None,
                "peak_rss_mib": round(peaks["gpu_sc"] / 2**20),
                "reference_peak_rss_mib": round(peaks["scanpy"] / 2**20),
                "repeats": repeats, "seed": seed, "versions": versions(), "timestamp": datetime.now(UTC).isoformat(),
            }  # fmt: skip
            if ours and ref:
                got, want = results["gpu_sc"].obs, results["scanpy"].obs
                row["spearman"] = _spearman(got["doublet_score"].to_numpy(), want["doublet_score"].to_numpy())
                row["same_calls"] = float(np.mean(got["predicted_doublet"].to_numpy() ==
                                                  want["predicted_doublet"].to_numpy()))  # fmt: skip
            emit(row)
            rows.append(row)
            print({k: row.get(k) for k in ("step", "n_cells", "seconds", "reference_seconds", "ratio", "spearman",
                                          "same_calls", "reference_error")})  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default="default,exact", help=f"comma-separated, of {sorted(CASES)}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    with jsonl_rows(args.out) as emit:
        run(args.n_cells, args.repeats, args.seed, cases, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
