"""How often the Dask steps that read X more than once read it, and what that costs, on a lazily
made full-width matrix: every pass makes the blocks again, as a file read lazily is read again.

    python benchmarks/dask_passes.py --n-cells 200000 --out benchmarks/results/cpu-dask-passes-$(date +%F).jsonl
    python benchmarks/dask_passes.py --code ../older-checkout ...   # the same steps on another version

The counts are pbmc4k's cells resampled lazily (``gsc.datasets.resample(..., as_dask=True)``,
33,694 genes, `--chunk-rows` cells a block), normalised (target_sum 1e4) and log1p lazily, with
seurat HVG flags (2,000 genes, no subset: what scanpy's default flow leaves). Then, each timed
with its result computed, and each counting the blocks of the counts it made:

- ``pca``: 50 components of the HVG columns (``mask_var``: each pass reads the full width);
- ``regress_out_numeric`` / ``regress_out_categorical``: on the lazy HVG columns, by the cells'
  total counts, or by 4 samples dealt round the cells; the residuals read through;
- ``normalize_exclude``: ``normalize_total(exclude_highly_expressed=True)`` of the counts, read
  through;
- ``score_genes_cell_cycle``: 40 S and 45 G2M genes (HVGs taken at fixed strides) scored on the
  full-width log data;
- ``combat``: ComBat of the lazy HVG columns over the 4 samples, read through.

Each step runs once, after an untimed run of all of them on 10,000 cells (Numba compiling).
Rows: step, seconds, passes (blocks made / blocks), the code run (`--code`; its commit in
`versions`), CPU.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEP_NAMES = ("pca", "regress_out_numeric", "regress_out_categorical", "normalize_exclude", "score_genes_cell_cycle",
              "combat")  # fmt: skip
N_SAMPLES = 4
_MADE = [0]
_LOCK = threading.Lock()


def _counted(block):
    with _LOCK:
        _MADE[0] += 1
    return block


def _read_through(x) -> None:
    """Compute every block of the Dask array `x` once, keeping nothing."""
    x.map_blocks(lambda b: np.zeros((1,)), drop_axis=1, chunks=((1,) * x.numblocks[0],), dtype=float).sum().compute()


def _steps(gsc):
    import pandas as pd

    def pca(a):
        gsc.pp.pca(a, n_comps=50)

    def regress(keys):
        def run(a):
            b = a[:, a.var["highly_variable"].to_numpy()].copy()
            b.obs["sample"] = pd.Categorical([f"s{i % N_SAMPLES}" for i in range(b.n_obs)])
            gsc.pp.regress_out(b, keys)
            _read_through(b.X)

        return run

    def normalize_exclude(a):
        c = a.copy()
        c.X = a.layers["counts"]
        gsc.pp.normalize_total(c, exclude_highly_expressed=True)
        _read_through(c.X)

    def cell_cycle(a):
        hvg = a.var_names[a.var["highly_variable"].to_numpy()]
        gsc.tl.score_genes_cell_cycle(a, s_genes=list(hvg[::47][:40]), g2m_genes=list(hvg[5::41][:45]))

    def combat(a):
        b = a[:, a.var["highly_variable"].to_numpy()].copy()
        b.obs["sample"] = pd.Categorical([f"s{i % N_SAMPLES}" for i in range(b.n_obs)])
        gsc.pp.combat(b, "sample")
        _read_through(b.X)

    return {"pca": pca, "regress_out_numeric": regress(["total_counts"]),
            "regress_out_categorical": regress("sample"), "normalize_exclude": normalize_exclude,
            "score_genes_cell_cycle": cell_cycle, "combat": combat}  # fmt: skip


def _prepared(gsc, source, n_cells: int, chunk_rows: int):
    """`n_cells` of `source` resampled lazily, counted, normalised and log1p lazily, with HVG flags
    and total counts (a pass each, untimed); the counts in layers['counts']."""
    a = gsc.datasets.resample(source, n_cells, seed=0, chunk_size=chunk_rows, as_dask=True)
    a.X = a.X.map_blocks(_counted, dtype=a.X.dtype, meta=a.X._meta)
    a.layers["counts"] = a.X
    gsc.pp.calculate_qc_metrics(a, inplace=True)  # total_counts, the numeric key
    gsc.pp.normalize_total(a, target_sum=1e4)
    gsc.pp.log1p(a)
    gsc.pp.highly_variable_genes(a, n_top_genes=2000)  # flags only
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-cells", type=int, default=200_000)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--code", type=Path, default=HERE.parent, help="the checkout whose gpu_sc runs (default: this one)")
    ap.add_argument("--steps", default=None, help="comma-separated (default all): " + ", ".join(STEP_NAMES))
    ap.add_argument("--out", type=Path, default=None, help="append JSON rows here")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    sys.path.insert(1, str(HERE))
    import dask
    import gpu_sc as gsc
    from _common import commit, cpu_name, jsonl_rows, versions

    assert Path(gsc.__file__).resolve().is_relative_to(args.code.resolve()), gsc.__file__
    dask.config.set(scheduler="threads")
    warnings.simplefilter("ignore")
    source = gsc.datasets.pbmc4k_half()
    steps = {k: v for k, v in _steps(gsc).items() if args.steps is None or k in args.steps.split(",")}
    for step in steps.values():  # untimed, on 10,000 cells: Numba compiles (or loads its cache)
        step(_prepared(gsc, source, 10_000, 2_500))
    a = _prepared(gsc, source, args.n_cells, args.chunk_rows)
    n_blocks = a.X.numblocks[0]
    code = commit(args.code.resolve())
    with jsonl_rows(args.out) as emit:
        for name, step in steps.items():
            _MADE[0] = 0
            t0 = time.perf_counter()
            step(a.copy())
            seconds = time.perf_counter() - t0
            row = {"step": name, "seconds": round(seconds, 2), "passes": round(_MADE[0] / n_blocks, 2),
                   "n_cells": args.n_cells, "n_genes": int(a.n_vars), "chunk_rows": args.chunk_rows,
                   "code": str(args.code), "cpu": cpu_name(), "versions": versions() | {"commit": code},
                   "date": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
            print(f"{name}: {row['seconds']} s, {row['passes']} passes", flush=True)
            emit(row)


if __name__ == "__main__":
    main()
