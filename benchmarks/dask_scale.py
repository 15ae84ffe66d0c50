"""A million full-width cells through gpu_sc's CPU pipeline on Dask, in bounded memory, with
scanpy's time for the same step on the same Dask input.

    python benchmarks/dask_scale.py --n-cells 1000000 \
        --out benchmarks/results/cpu-dask-pbmc4k-1m-$(date +%F).jsonl

The counts are never whole in memory: ``gsc.datasets.resample(..., as_dask=True)`` makes each
`--chunk-rows`-cell CSR block when a computation reads it (the same rows as the in-memory
resample for the same seed), so every pass over the full-width matrix makes the blocks again.
Steps, in order, each on the previous one's result: qc, filter_cells (min_genes = the 10th
percentile of genes per cell in the first block), filter_genes (min_cells=3), normalize
(target_sum=1e4), log1p, hvg_batches (if asked for: seurat HVG with batch_key over 4 samples,
cells dealt round them; its result not kept), combat (if asked for, after hvg: ComBat over those
4 samples on the HVG matrix, its dense corrected blocks read through once; result not kept),
recipe_zheng17 (if asked for, on the counts: scanpy's Zheng et al. recipe, 2,000 genes; its
dense scaled blocks read through once; result not kept), pearson_hvg (if asked for, on the
counts: gsc.experimental.pp's Pearson-residual selection over the 4 samples; result not kept),
markers (if asked for: rank_genes_groups by the source's cell types, then
filter_rank_genes_groups, each one pass; result not kept), hvg (seurat flavour, 2,000 genes,
subset=True; the HVG matrix is then persisted: the only matrix kept in memory), scale
(max_value=10; timed, its result dropped so that pca runs on the HVG matrix as in run.py), pca
(50), neighbors (the default search), then umap and leiden if asked for (skipped rows
otherwise).

A step's time includes computing what it leaves lazy: a lazy full-width X is read through once
(each block made and dropped), the HVG matrix is persisted, obsm is computed. So every step
before the HVG matrix includes at least one pass of making the blocks; the ``source`` rows time
such a pass alone (``source`` the first pass, which also finds each block's generator state;
``source_warm`` a later one). scanpy (same call, on a lazy copy of the same input) runs before
gpu_sc at each step; where it raises, ``reference_error`` says ``unsupported: ...``. Each step
runs once (a million cells), after an untimed warm-up of the whole pipeline on 10,000 cells
(Numba compilation). Rows follow run.py's keys; also ``process_peak_rss_mib`` (the process's
high-water mark so far), ``shape_after`` and ``seconds_since_start``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, run.py
import gpu_sc as gsc
from _common import cpu_name, jsonl_rows, versions
from gpu_sc._backend import is_dask
from run import PeakRSS, _experimental, _row


@dataclass(frozen=True)
class Step:
    call: Callable  # call(pp, tl, adata, params)
    then: str = "read"  # what is done with a lazy X afterwards: "read" (one pass), "persist", "drop"
    reference: bool = True  # also time scanpy's same call (else NO_REFERENCE says why not)
    keep: bool = True  # the next step takes this step's result (else the input again)


STEPS: dict[str, Step] = {
    "qc": Step(lambda pp, tl, a, p: pp.calculate_qc_metrics(a, percent_top=p["percent_top"], inplace=True)),
    "filter_cells": Step(lambda pp, tl, a, p: pp.filter_cells(a, min_genes=p["min_genes"])),
    "filter_genes": Step(lambda pp, tl, a, p: pp.filter_genes(a, min_cells=p["min_cells"])),
    "normalize": Step(lambda pp, tl, a, p: pp.normalize_total(a, target_sum=p["target_sum"])),
    "log1p": Step(lambda pp, tl, a, p: pp.log1p(a)),
    "hvg": Step(lambda pp, tl, a, p: pp.highly_variable_genes(a, n_top_genes=p["n_top_genes"], flavor="seurat",
                                                             subset=True), then="persist"),
    "hvg_batches": Step(lambda pp, tl, a, p: pp.highly_variable_genes(
        _with_samples(a), n_top_genes=p["n_top_genes"], flavor="seurat", batch_key="sample"), keep=False),
    "pearson_hvg": Step(lambda pp, tl, a, p: _experimental(pp).highly_variable_genes(
        _with_samples(a), n_top_genes=p["n_top_genes"], batch_key="sample"), keep=False),  # on the counts
    "markers": Step(lambda pp, tl, a, p: _markers(tl, a), keep=False, reference=False),
    "combat": Step(lambda pp, tl, a, p: pp.combat(_with_samples(a), "sample"), keep=False, reference=False),
    "recipe_zheng17": Step(lambda pp, tl, a, p: pp.recipe_zheng17(a, n_top_genes=p["n_top_genes"]), keep=False),
    "scale": Step(lambda pp, tl, a, p: pp.scale(a, max_value=10), keep=False),
    "pca": Step(lambda pp, tl, a, p: pp.pca(a, n_comps=p["n_comps"])),
    "neighbors": Step(lambda pp, tl, a, p: pp.neighbors(a, n_neighbors=15), reference=False),
    "umap": Step(lambda pp, tl, a, p: tl.umap(a), reference=False),
    "leiden": Step(lambda pp, tl, a, p: tl.leiden(a, flavor="igraph", n_iterations=2, directed=False),
                   reference=False),
}  # fmt: skip
NO_REFERENCE = {
    "neighbors": "unsupported (not run): scanpy 1.11.5's default neighbors with pynndescent 0.7 raises "
    "AttributeError: 'csr_array' object has no attribute 'getnnz' above 8,192 cells, after its kNN search "
    "(checked on 10,000 cells on this machine)",
    "markers": "unsupported (not run): scanpy 1.11.5's rank_genes_groups on a Dask matrix raised TypeError "
    "(_cs_matrix.sum() got an unexpected keyword argument 'keepdims') at 20,000 cells, and at a million cells "
    "it filled this machine's 23 GiB and was killed by the kernel before that error (2026-12-06)",
    "combat": "unsupported (not run): scanpy 1.11.5's combat densifies X into pandas frames, five or more dense "
    "float64 copies (its peak at 100,000 cells x 2,000 genes was 7.6 GiB, benchmarks/combat.py: about 76 GiB at "
    "a million, beyond this machine's 23 GiB)",
    "umap": "not run: gpu_sc's umap is scanpy's",
    "leiden": "not run: gpu_sc's leiden is scanpy's",
}
DEFAULT_STEPS = "qc,filter_cells,filter_genes,normalize,log1p,hvg,scale,pca,neighbors"


N_SAMPLES = 4


def _with_samples(a):
    """`a` with obs['sample']: cells dealt round N_SAMPLES samples (the batch_key of hvg_batches)."""
    import pandas as pd

    a.obs["sample"] = pd.Categorical([f"s{i % N_SAMPLES}" for i in range(a.n_obs)])
    return a


def _markers(tl, a) -> None:
    """Marker genes of the source's cell types (pbmc4k's Annotation) on the full-width log data:
    rank_genes_groups (t-test), then filter_rank_genes_groups of that ranking (its shares from X)."""
    tl.rank_genes_groups(a, "Annotation", method="t-test")
    tl.filter_rank_genes_groups(a)


def _block_nnz(b) -> np.ndarray:
    return np.array([b.nnz if hasattr(b, "nnz") else np.count_nonzero(b)], dtype=np.int64)


def _read_through(x) -> int:
    """Compute every block of the Dask array `x` once, keeping nothing; the stored values."""
    return int(x.map_blocks(_block_nnz, drop_axis=1, chunks=((1,) * x.numblocks[0],), dtype=np.int64)
               .sum().compute())  # fmt: skip


def _finish(a, name_before: str | None, then: str) -> None:
    """Compute what a step left lazy: a new lazy X (read through, persisted or dropped), obsm.
    A Dask X is new when its name is (scanpy's log1p changes the array object in place)."""
    import dask

    if is_dask(a.X) and a.X.name != name_before:
        if then == "persist":
            (a.X,) = dask.persist(a.X)
        else:
            _read_through(a.X)
    for key in list(a.obsm):
        if is_dask(a.obsm[key]):
            a.obsm[key] = a.obsm[key].compute()


def _run_step(step: Step, pp, tl, a, p) -> tuple[float | None, str | None, int | None]:
    """(seconds, error, peak RSS rise in bytes) of one call plus _finish, on `a` in place."""
    name_before = a.X.name if is_dask(a.X) else None
    try:
        with PeakRSS(every=0.02) as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            step.call(pp, tl, a, p)
            _finish(a, name_before, step.then)
            seconds = time.perf_counter() - t0
        return seconds, None, mem.peak
    except Exception as e:  # a library that cannot run this step on Dask input: keep going
        return None, f"{type(e).__name__}: {e}"[:300], None


def _process_peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _rss_gib() -> float:
    return PeakRSS._rss() / 2**30


def _params(first_block, n_vars: int) -> dict:
    genes_per_cell = np.diff(first_block.indptr)
    return {"percent_top": [t for t in (50, 100, 200, 500) if t <= n_vars],
            "min_genes": max(1, int(np.percentile(genes_per_cell, 10))), "min_cells": 3, "target_sum": 1e4,
            "n_top_genes": min(2000, n_vars // 2), "n_comps": 50}  # fmt: skip


def _warm_up(source, steps: list[str]) -> None:
    """The whole pipeline once on 10,000 lazy cells, both libraries (Numba compiling; above 8,192
    cells neighbors takes pynndescent, as on a million)."""
    import scanpy as sc

    small = gsc.datasets.resample(source, 10_000, seed=1, chunk_size=2500, as_dask=True)
    p = _params(small.X.blocks[0].compute(), small.n_vars)
    p["n_top_genes"], p["n_comps"] = min(p["n_top_genes"], 500), 20
    ours, ref = small, small.copy()
    for name in steps:
        step = STEPS[name]
        for lib, a in ((gsc, ours), (sc, ref)):
            if lib is sc and not step.reference:
                continue
            b = a if step.keep else a.copy()
            _run_step(step, lib.pp, lib.tl, b, p)


def run(args, emit: Callable[[dict], None]) -> list[dict]:
    import scanpy as sc

    t_start = time.perf_counter()
    steps = [s for s in args.steps.split(",") if s]
    source = getattr(gsc.datasets, args.dataset)()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s rss {_rss_gib():5.1f} GiB] {msg}", file=sys.stderr, flush=True)

    if not args.no_warm_up:
        log("warm-up on 10,000 cells ...")
        _warm_up(source, steps)
    a = gsc.datasets.resample(source, args.n_cells, seed=args.seed, chunk_size=args.chunk_rows, as_dask=True)
    log(f"lazy source: {a.n_obs:,} x {a.n_vars:,} in {a.X.numblocks[0]} blocks")
    p = _params(a.X.blocks[0].compute(), a.n_vars)
    common = {"n_cells": a.n_obs, "n_genes": a.n_vars, "nnz": None, "dataset": args.dataset, "seed": args.seed,
              "repeats": 1, "params": p, "cpu_count": os.cpu_count(), "versions": versions(),
              "dask_chunk_rows": args.chunk_rows,
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows: list[dict] = []

    def add(row: dict, shape=None) -> None:
        row.update(process_peak_rss_mib=_process_peak_mib(), shape_after=list(shape) if shape else None,
                   seconds_since_start=round(time.perf_counter() - t_start, 1))  # fmt: skip
        rows.append(row)
        emit(row)
        log(
            f"{row['step']}: ours {row['seconds']} s, scanpy {row['reference_seconds']} s"
            f"{'  ' + row['reference_error'] if 'reference_error' in row else ''}"
            f"{'  error ' + row['error'] if 'error' in row else ''}"
        )

    for name in ("source", "source_warm"):
        log(f"{name}: making every block once ...")
        with PeakRSS(every=0.02) as mem:
            t0 = time.perf_counter()
            nnz = _read_through(a.X)
            seconds = time.perf_counter() - t0
        common["nnz"] = nnz
        note = (
            "one pass making every block (the first: also finds each block's generator state by "
            "replaying the earlier blocks' draws)"
            if name == "source"
            else "a later pass making every block"
        )
        add(_row(name, "cpu", cpu_name(), seconds, None, None, None, None, common, note=note,
                 peaks=(mem.peak, None)), a.shape)  # fmt: skip

    for name in ("umap", "leiden"):
        if name not in steps:
            skipped = {
                **common,
                "step": name,
                "backend": "cpu",
                "seconds": None,
                "skipped": "not run: add it to --steps (umap and leiden on a million cells take long on 2 cores)",
            }
            rows.append(skipped)
            emit(skipped)
    reference_steps = set(STEPS) if args.reference_steps is None else set(args.reference_steps.split(","))
    for i, name in enumerate(steps, 1):
        step = STEPS[name]
        ref, ref_err, ref_mem = None, None, None
        if step.reference and name not in reference_steps:
            ref_err = "not run: left out by --reference-steps"
        elif step.reference:
            log(f"[{i}/{len(steps)}] {name} scanpy ...")
            b = a.copy()
            ref, ref_err, ref_mem = _run_step(step, sc.pp, sc.tl, b, p)
            if ref_err:
                ref_err = f"unsupported: {ref_err}"
            del b
        log(f"[{i}/{len(steps)}] {name} gpu_sc ...")
        ours_input = a if step.keep else a.copy()
        ours, err, mem = _run_step(step, gsc.pp, gsc.tl, ours_input, p)
        if not step.reference:
            ref_err = NO_REFERENCE[name]
        add(_row(name, "cpu", cpu_name(), ours, err, "scanpy", ref, ref_err, common,
                 peaks=(mem, ref_mem)), ours_input.shape)  # fmt: skip
        if step.keep:
            a = ours_input
        del ours_input
        if err:
            log(f"gpu_sc failed on {name}: stopping")
            break

    total = {**common, "step": "total", "backend": "cpu", "device": cpu_name(),
             "seconds": round(time.perf_counter() - t_start, 1), "peak_rss_mib": _process_peak_mib(),
             "note": "wall time of the whole run (warm-up, scanpy's steps included); peak_rss_mib: the "
                     "process's high-water mark (ru_maxrss)"}  # fmt: skip
    rows.append(total)
    emit(total)
    log(f"total {total['seconds']} s, process peak {total['peak_rss_mib']} MiB")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pbmc4k_half", choices=["pbmc4k_half", "mouse_brain_10k", "pbmc68k_reduced"])
    ap.add_argument("--n-cells", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=100_000, help="cells per lazily made block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default=DEFAULT_STEPS, help=f"comma-separated, in order; from: {', '.join(STEPS)}")
    ap.add_argument(
        "--reference-steps",
        default=None,
        metavar="STEPS",
        help="time scanpy on these steps only (comma-separated; default all it can run, '' none)",
    )
    ap.add_argument("--no-warm-up", action="store_true")
    ap.add_argument("--out", type=Path, help="append JSON lines here")
    args = ap.parse_args(argv)
    unknown = set(args.steps.split(",")) - set(STEPS) - {""}
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    with jsonl_rows(args.out) as emit:
        rows = run(args, emit)
    print(f"{'step':14s} {'seconds':>9s} {'scanpy s':>9s} {'MiB':>8s} {'ref MiB':>8s}  note")
    for r in rows:
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        extra = r.get("error") or r.get("reference_error") or r.get("skipped") or ""
        print(
            f"{r['step']:14s} {fmt(r['seconds'], '9.1f')} {fmt(r.get('reference_seconds'), '9.1f')} "
            f"{fmt(r.get('peak_rss_mib'), '8.0f')} {fmt(r.get('reference_peak_rss_mib'), '8.0f')}  {extra}"
        )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
