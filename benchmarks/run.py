"""Time gpu_sc's steps against scanpy (CPU) and rapids-singlecell / the memory-bandwidth bound
(GPU), on real cells resampled to the size asked for, all in one run.

    python benchmarks/run.py --dataset pbmc4k_half --n-cells 100000 --backend cpu \
        --steps qc,filter,normalize,log1p --out benchmarks/results/cpu.jsonl

Each step gets a fresh copy of its input (not timed) after one untimed warm-up (JIT and kernel
compilation), then the median of `--repeats` runs is kept. GPU timings synchronise the device.
Rows are JSON lines: step, backend, device, n_cells, n_genes, nnz, seconds, reference,
reference_seconds, ratio (reference_seconds / seconds: > 1 means gpu_sc is faster), versions.
Each row is appended to `--out` as soon as it is measured. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
import gpu_sc as gsc
from _common import cpu_name, gpu_name, jsonl_rows, versions
from gpu_sc._backend import gpu_available, is_dask, xp_of


@dataclass(frozen=True)
class Step:
    """One benchmarked step: how to prepare its input, and the same call in each library.

    ``call(pp, adata, p)`` runs the step, with ``pp`` one of ``gsc.pp``, ``scanpy.pp`` and
    rapids-singlecell's ``pp``, and ``p`` the run's parameters (:func:`_params`). ``rapids``
    replaces ``call`` for rapids-singlecell where that library spells the step differently.
    """

    prepare: str  # "counts" | "lognorm" | "hvg" | "pca" | "graph" (the state the input must be in)
    call: Callable  # call(pp_module, adata, params)
    bytes_moved: Callable  # bytes the step must read + write at least (adata -> int)
    rapids: Callable | None = None  # call(rsc.pp, adata, params) where rapids' API differs
    rapids_note: str | None = None  # where rapids-singlecell does different work
    repeats: int | None = None  # at most this many timed runs (slow steps that gpu_sc delegates)
    warm_up_cells: int | None = None  # warm up on the first cells only (the same JIT compilation)


def _csr_bytes(a, passes_read=1, passes_write=0) -> int:
    x = a.X
    stored = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes if hasattr(x, "indptr") else x.nbytes
    values = x.data.nbytes if hasattr(x, "indptr") else x.nbytes
    return passes_read * stored + passes_write * values


def _rapids_filter(pp, a, axis: str, threshold: int) -> None:
    """rapids-singlecell's filter_cells / filter_genes: scanpy's keywords where it takes them,
    else its older ``qc_var=..., min_count=...`` spelling."""
    fn = pp.filter_cells if axis == "cells" else pp.filter_genes
    key = "min_genes" if axis == "cells" else "min_cells"
    if key in inspect.signature(fn).parameters:
        fn(a, **{key: threshold})
    else:
        qc_var = "n_genes_by_counts" if axis == "cells" else "n_cells_by_counts"
        fn(a, qc_var=qc_var, min_count=threshold, verbose=False)


def _filter(pp, a, p, rapids=False) -> None:
    if rapids:
        _rapids_filter(pp, a, "cells", p["min_genes"])
        _rapids_filter(pp, a, "genes", p["min_cells"])
    else:
        pp.filter_cells(a, min_genes=p["min_genes"])
        pp.filter_genes(a, min_cells=p["min_cells"])


_RAPIDS_FILTER_NOTE = "rapids-singlecell releases whose filter_* take qc_var run calculate_qc_metrics first"

# A new step is one more entry: the state of its input, the call, the bytes it must move.
STEPS: dict[str, Step] = {
    "qc": Step("counts", lambda pp, a, p: pp.calculate_qc_metrics(a, percent_top=p["percent_top"], inplace=True),
               _csr_bytes, rapids=lambda pp, a, p: pp.calculate_qc_metrics(a),
               rapids_note="rapids-singlecell computes no percent_top columns"),
    "filter_cells": Step("counts", lambda pp, a, p: pp.filter_cells(a, min_genes=p["min_genes"]),
                         lambda a: _csr_bytes(a, 2, 0),
                         rapids=lambda pp, a, p: _rapids_filter(pp, a, "cells", p["min_genes"]),
                         rapids_note=_RAPIDS_FILTER_NOTE),
    "filter_genes": Step("counts", lambda pp, a, p: pp.filter_genes(a, min_cells=p["min_cells"]),
                         lambda a: _csr_bytes(a, 2, 0),
                         rapids=lambda pp, a, p: _rapids_filter(pp, a, "genes", p["min_cells"]),
                         rapids_note=_RAPIDS_FILTER_NOTE),
    "filter": Step("counts", _filter, lambda a: _csr_bytes(a, 4, 0),
                   rapids=lambda pp, a, p: _filter(pp, a, p, rapids=True), rapids_note=_RAPIDS_FILTER_NOTE),
    "normalize": Step("counts", lambda pp, a, p: pp.normalize_total(a, target_sum=p["target_sum"]),
                      lambda a: _csr_bytes(a, 2, 1)),
    "log1p": Step("counts", lambda pp, a, p: pp.log1p(a), lambda a: _csr_bytes(a, 0, 2)),
    "hvg": Step("lognorm", lambda pp, a, p: pp.highly_variable_genes(a, n_top_genes=p["n_top_genes"]),
                _csr_bytes),
    "scale": Step("hvg", lambda pp, a, p: pp.scale(a, max_value=10), lambda a: _csr_bytes(a, 1, 2)),
    "pca": Step("hvg", lambda pp, a, p: pp.pca(a, n_comps=p["n_comps"]), lambda a: _csr_bytes(a, 2, 0)),
    "neighbors": Step("pca", lambda pp, a, p: pp.neighbors(a, n_neighbors=15),
                      lambda a: a.obsm["X_pca"].nbytes),
    "neighbors_exact": Step("pca", lambda pp, a, p: pp.neighbors(a, n_neighbors=15, transformer="sklearn"),
                            lambda a: a.obsm["X_pca"].nbytes,
                            rapids=lambda pp, a, p: pp.neighbors(a, n_neighbors=15, algorithm="brute")),
    "umap": Step("graph", lambda pp, a, p: _tl(pp).umap(a), lambda a: a.obsm["X_pca"].nbytes, repeats=1,
                 warm_up_cells=2000),
    "recipe_zheng17": Step("counts", lambda pp, a, p: pp.recipe_zheng17(a, n_top_genes=p["n_top_genes"]),
                           lambda a: _csr_bytes(a, 5, 3), rapids_note="rapids-singlecell has no recipe_zheng17"),
    "pearson_hvg": Step("counts",
                        lambda pp, a, p: _experimental(pp).highly_variable_genes(a, n_top_genes=p["n_top_genes"]),
                        _csr_bytes, rapids=lambda pp, a, p: pp.highly_variable_genes(
                            a, flavor="pearson_residuals", n_top_genes=p["n_top_genes"])),
    "leiden": Step("graph", lambda pp, a, p: _tl(pp).leiden(a, flavor="igraph", n_iterations=2, directed=False),
                   lambda a: a.obsp["connectivities"].data.nbytes,
                   rapids=lambda pp, a, p: _tl(pp).leiden(a)),
}  # fmt: skip


def _tl(pp):
    """The tools module beside the preprocessing module `pp` (gsc.tl, scanpy.tl, rsc.tl)."""
    import importlib

    return importlib.import_module(pp.__name__.split(".")[0]).tl


def _experimental(pp):
    """The experimental.pp module beside `pp` (gsc's, scanpy's; rapids-singlecell's is its pp)."""
    import importlib

    return importlib.import_module(pp.__name__.split(".")[0] + ".experimental").pp


def _params(base) -> dict:
    """Thresholds and sizes passed to the steps, fixed once per run from the resampled counts.

    ``min_genes`` is the 10th percentile of genes per cell, so that filter_cells removes about a
    tenth of the cells on any data set (a fixed 200 would remove nearly all of mouse_brain_10k's
    cells, which have about 60 of its 1,000 genes).
    """
    genes_per_cell = np.diff(base.X.indptr)
    return {
        "percent_top": [t for t in (50, 100, 200, 500) if t <= base.n_vars],
        "min_genes": max(1, int(np.percentile(genes_per_cell, 10))),
        "min_cells": 3,
        "target_sum": 1e4,
        "n_top_genes": min(2000, base.n_vars // 2),
        "n_comps": 50,
    }


def _prepare(base, state: str, p: dict):
    """The step's input on the CPU: counts, normalised+log1p, that restricted to HVGs, with PCA,
    or with the exact 15-neighbour graph too."""
    a = base.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if state in ("lognorm", "hvg", "pca", "graph"):
            gsc.pp.normalize_total(a, target_sum=p["target_sum"])
            gsc.pp.log1p(a)
        if state in ("hvg", "pca", "graph"):
            gsc.pp.highly_variable_genes(a, n_top_genes=p["n_top_genes"], subset=True)
        if state in ("pca", "graph"):
            gsc.pp.pca(a, n_comps=p["n_comps"])
        if state == "graph":
            gsc.pp.neighbors(a, n_neighbors=15, transformer="sklearn")
    return a


def _as_dask(a, rows: int):
    """`a` with X a Dask array of `rows`-cell blocks (what a lazily read file gives)."""
    import dask.array as da

    a.X = da.from_array(a.X, chunks=(rows, -1), asarray=False)
    return a


def _computed(a) -> None:
    """Compute what a step left lazy (X, obsm), so that timings include the work itself."""
    import dask

    if is_dask(a.X):
        (a.X,) = dask.persist(a.X)
    for key in list(a.obsm):
        if is_dask(a.obsm[key]):
            a.obsm[key] = a.obsm[key].compute()


class PeakRSS:
    """The peak resident memory above the start while the block runs, sampled every `every`
    seconds from /proc/self/statm by a thread (sees what tracemalloc does not: Numba's, BLAS's
    and the allocator's pages). None where /proc is missing."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak = every, None

    @staticmethod
    def _rss() -> int | None:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None

    def __enter__(self):
        import threading

        self._start = self._rss()
        self._top = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.every):
                rss = self._rss()
                self._top = max(self._top, rss)

        if self._start is not None:
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._top, self._rss()) - self._start


def _time(fns, make_input, repeats: int, sync=lambda: None, warm_up: bool = True, peaks=None,
          runs=None) -> list[float]:  # fmt: skip
    """Median seconds of each function in `fns` on fresh inputs. The functions take turns
    within every repeat, so neither gets a warmer allocator or cache than the other.
    `make_input` is one input maker for all, or one per function. With a list `peaks`, each
    function's largest resident-memory rise over its runs (bytes, host) is appended to it; with
    a list `runs`, each function's seconds of every repeat (the spread behind the median)."""
    makers = list(make_input) if isinstance(make_input, Sequence) else [make_input] * len(fns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if warm_up:
            for fn, make in zip(fns, makers, strict=True):
                fn(make())  # warm-up: JIT / kernel compilation
            sync()
        times: list[list[float]] = [[] for _ in fns]
        rises: list[list[int]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, make, out, rise in zip(fns, makers, times, rises, strict=True):
                a = make()
                sync()
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    fn(a)
                    sync()
                    out.append(time.perf_counter() - t0)
                if mem.peak is not None:
                    rise.append(mem.peak)
                del a
    if peaks is not None:
        peaks.extend(max(r) if r else None for r in rises)
    if runs is not None:
        runs.extend(times)
    return [statistics.median(t) for t in times]


def _measure(fns, make_input, repeats: int, sync=lambda: None, warm_up_cells: int | None = None,
             runs: list | None = None) -> list[tuple[float | None, str | None, int | None]]:  # fmt: skip
    """(median seconds, None, peak resident-memory rise in bytes) for each function in `fns`,
    or (None, its error, None) where it raises; with a list `runs`, each function's seconds of
    every repeat (None where it raised) are appended to it.

    The warm-up run of each function finds those that fail; the others are timed in turns. With
    `warm_up_cells` the warm-up sees only that many first cells, with their own graph (for steps
    of many minutes).
    """
    makers = list(make_input) if isinstance(make_input, Sequence) else [make_input] * len(fns)
    errors: list[str | None] = []
    for fn, make in zip(fns, makers, strict=True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = make()
                if warm_up_cells is not None and a.n_obs > warm_up_cells:
                    a = _first_cells(a, warm_up_cells)
                fn(a)  # warm-up: JIT / kernel compilation
            sync()
            errors.append(None)
        except Exception as e:  # e.g. a library that cannot run this step on this data: keep going
            errors.append(f"{type(e).__name__}: {e}"[:300])
    ok = [i for i, err in enumerate(errors) if err is None]
    peaks: list[int | None] = []
    every: list[list[float]] = []
    times = _time([fns[i] for i in ok], [makers[i] for i in ok], repeats, sync, warm_up=False, peaks=peaks,
                  runs=every) if ok else []  # fmt: skip
    seconds = dict(zip(ok, times, strict=True))
    rise = dict(zip(ok, peaks, strict=True))
    if runs is not None:
        each = dict(zip(ok, every, strict=True))
        runs.extend(each.get(i) for i in range(len(fns)))
    return [(seconds.get(i), errors[i], rise.get(i)) for i in range(len(fns))]


def _first_cells(a, n: int):
    """The first `n` cells, with their own 15-neighbour graph: cut from the full graph, most of
    their neighbours would be missing and UMAP's start would lay out a thousand fragments."""
    a = a[:n].copy()
    if "neighbors" in a.uns:
        gsc.pp.neighbors(a, n_neighbors=15)
    return a


def _touch_memory(nbytes: int) -> None:
    """Write `nbytes` once and free them. On a virtual machine the first write to memory the
    guest has never used can cost ~3 ms per MiB (the host backs it then), ten times a later
    write; without this the first library to allocate in a run pays that and the other does not."""
    chunk = 256 * 2**20
    bufs = [np.ones(chunk, dtype=np.uint8) for _ in range(max(1, nbytes // chunk))]
    del bufs


def _gpu_tools():
    """(cupy, synchronise, device name, device-to-device copy bandwidth in bytes/s), or None."""
    if not gpu_available():
        return None
    import cupy as cp

    def sync():
        cp.cuda.Device().synchronize()

    name = gpu_name()
    buf = cp.empty(512 * 2**20, dtype=cp.uint8)
    dst = cp.empty_like(buf)
    cp.copyto(dst, buf)
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        cp.copyto(dst, buf)
    sync()
    bandwidth = 2 * buf.nbytes * 10 / (time.perf_counter() - t0)  # read + write
    del buf, dst
    cp.get_default_memory_pool().free_all_blocks()
    return cp, sync, name, bandwidth


def _mib(nbytes):
    return None if nbytes is None else round(nbytes / 2**20, 1)


def _row(name, backend, device, ours, error, reference, ref, ref_error, common, note=None, peaks=(None, None),
         runs=(None, None)) -> dict:  # fmt: skip
    row = {"step": name, "backend": backend, "device": device, "seconds": ours, "reference": reference,
           "reference_seconds": ref, "ratio": ref / ours if ours and ref else None,
           "peak_rss_mib": _mib(peaks[0]), "reference_peak_rss_mib": _mib(peaks[1]), **common}  # fmt: skip
    # every repeat's seconds, so that the spread behind the medians is on record
    row.update({key: [round(t, 6) for t in r] for key, r in zip(("seconds_runs", "reference_seconds_runs"), runs,
                                                                  strict=True) if r})  # fmt: skip
    if error:
        row["error"] = error
    if ref_error:
        row["reference_error"] = ref_error
    if note:
        row["note"] = note
    return row


def _drawn(pool, n_cells: int, seed: int):
    """`n_cells` rows of `pool` drawn with replacement on the pool's device, named cell_0, ...
    (`--pool-cells`): a million cells at full width in seconds, where resampling them takes minutes
    (its binomial thinning runs on one thread, about 100 ns a count: 1.1 billion counts)."""
    import anndata as ad

    rows = np.random.default_rng([seed, 1]).integers(0, pool.n_obs, n_cells)
    obs = pool.obs.iloc[rows].reset_index(drop=True)
    obs.index = "cell_" + obs.index.astype(str)
    return ad.AnnData(pool.X[xp_of(pool.X.data).asarray(rows)], obs=obs, var=pool.var.copy())


def run(args, emit: Callable[[dict], None] = lambda row: None) -> list[dict]:
    """Run the asked steps on the asked backends; `emit` gets each row as soon as it is measured.
    Each backend prepares its steps' inputs itself: the GPU's run on the GPU, as a GPU user's do."""
    pool_cells = getattr(args, "pool_cells", None)
    backends = args.backend.split(",")
    made = gsc.datasets.resample(getattr(gsc.datasets, args.dataset)(), pool_cells or args.n_cells,
                                 seed=args.seed, progress=(pool_cells or args.n_cells) > 200_000)  # fmt: skip
    base = (_drawn(made, args.n_cells, args.seed) if "cpu" in backends else None) if pool_cells else made
    import scanpy as sc

    x = (made if base is None else base).X
    data_bytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    _touch_memory(int(args.touch_memory * 2**30) if args.touch_memory is not None else min(8 * 2**30, 6 * data_bytes))
    gpu = _gpu_tools() if "gpu" in backends else None
    if "gpu" in backends and gpu is None:
        print("gpu backend skipped: no CuPy or no GPU on this machine", file=sys.stderr)
    rsc = None
    if gpu is not None:
        try:
            import rapids_singlecell as rsc
        except Exception:  # not installed, or without the CUDA libraries it needs
            print("rapids-singlecell cannot be imported: GPU rows compare with the bandwidth bound only",
                  file=sys.stderr)  # fmt: skip
    p = _params(made)
    gpu_base = None
    if gpu is not None:  # the pool goes to the device and is drawn from there
        gpu_base = gsc.get.to_gpu(made, copy=True)
        gpu_base = _drawn(gpu_base, args.n_cells, args.seed) if pool_cells else gpu_base
    shown = next(a for a in (base, gpu_base, made) if a is not None)
    common = {"n_cells": shown.n_obs, "n_genes": shown.n_vars, "nnz": int(shown.X.nnz), "pool_cells": pool_cells,
              "dataset": args.dataset, "seed": args.seed, "repeats": args.repeats, "params": p,
              "cpu_count": os.cpu_count(), "versions": versions(), "dask_chunk_rows": args.chunk_rows,
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows = []

    def add(row):
        rows.append(row)
        emit(row)

    steps = [s for s in args.steps.split(",") if s]
    for i, name in enumerate(steps, 1):
        step = STEPS[name]
        repeats = min(args.repeats, step.repeats or args.repeats)
        here = {**common, "repeats": repeats}
        if "cpu" in backends:
            prepared = _prepare(base, step.prepare, p)
            print(f"[{i}/{len(steps)}] {name} cpu ...", file=sys.stderr, flush=True)
            def make(prepared=prepared):  # with --chunk-rows both libraries get the same Dask input
                a = prepared.copy()
                return _as_dask(a, args.chunk_rows) if args.chunk_rows else a

            fns = [lambda a, pp=pp: (step.call(pp, a, p), _computed(a)) for pp in (gsc.pp, sc.pp)]
            runs: list = []
            (ours, err, mem), (ref, ref_err, ref_mem) = _measure(fns, make, repeats, warm_up_cells=step.warm_up_cells,
                                                                 runs=runs)  # fmt: skip
            add(_row(name, "cpu", cpu_name(), ours, err, "scanpy", ref, ref_err, here, peaks=(mem, ref_mem),
                     runs=tuple(runs)))  # fmt: skip
        if gpu is not None:
            cp, sync, device, bandwidth = gpu
            print(f"[{i}/{len(steps)}] {name} gpu ...", file=sys.stderr, flush=True)
            on_gpu = _prepare(gpu_base, step.prepare, p)
            fns, makers = [lambda a: step.call(gsc.pp, a, p)], [on_gpu.copy]
            if rsc is not None:

                def rsc_input(on_gpu=on_gpu):
                    a = on_gpu.copy()
                    rsc.get.anndata_to_GPU(a)  # already on the GPU: the call its users make all the same
                    return a

                call = step.rapids or step.call
                fns.append(lambda a: call(rsc.pp, a, p))
                makers.append(rsc_input)
            runs = []
            results = _measure(fns, makers, repeats, sync, step.warm_up_cells, runs=runs)
            (ours, err, _) = results[0]
            bound = step.bytes_moved(on_gpu) / bandwidth
            add(_row(name, "gpu", device, ours, err, "bandwidth-bound", bound, None, here, runs=(runs[0], None)))
            if rsc is not None:
                ref, ref_err, _ = results[1]
                add(_row(name, "gpu", device, ours, err, "rapids-singlecell", ref, ref_err, here,
                         note=step.rapids_note, runs=tuple(runs)))  # fmt: skip
            del on_gpu
            cp.get_default_memory_pool().free_all_blocks()
    return rows


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _print_row(r: dict) -> None:
    line = (f"{r['step']:16s} {r['backend']:7s} {_fmt(r['seconds'], '9.4f'):>9s} {r['reference']:18s} "
            f"{_fmt(r['reference_seconds'], '9.4f'):>9s} {_fmt(r['ratio'], '7.2f'):>7s} "
            f"{_fmt(r.get('peak_rss_mib'), '9.0f'):>9s} {_fmt(r.get('reference_peak_rss_mib'), '9.0f'):>9s}")
    for key in ("error", "reference_error"):
        if key in r:
            line += f"  {key}: {r[key]}"
    print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pbmc4k_half", choices=["pbmc4k_half", "mouse_brain_10k", "pbmc68k_reduced"],
                   help="the cells to resample: pbmc4k_half (33,694 genes, the default) is a real run's width")
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--pool-cells", type=int, default=None, metavar="N",
                   help="resample N cells only and draw --n-cells from them with replacement, on the GPU for "
                        "GPU rows (1M cells at full width in seconds; each pooled cell about n/N times)")
    p.add_argument("--steps", default="qc,filter_cells,filter_genes,normalize,log1p",
                   help=f"comma-separated, run in this order; from: {', '.join(STEPS)}")  # fmt: skip
    p.add_argument("--backend", default="cpu", help="cpu, gpu or cpu,gpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="append JSON lines here")
    p.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                   help="CPU rows: X as a Dask array of N-cell blocks for both libraries (lazy results computed)")
    p.add_argument("--touch-memory", type=float, default=None, metavar="GIB",
                   help="write and free this much memory first, so that no library pays the host's first "
                        "touch (default: 6 times the counts' size, at most 8 GiB)")
    args = p.parse_args(argv)
    unknown = set(args.steps.split(",")) - set(STEPS) - {""}
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    bad_backends = set(args.backend.split(",")) - {"cpu", "gpu"}
    if bad_backends:
        p.error(f"unknown backend {sorted(bad_backends)}; use cpu, gpu or cpu,gpu")
    if args.repeats < 1 or args.n_cells < 1 or (args.pool_cells is not None and args.pool_cells < 1):
        p.error("--repeats, --n-cells and --pool-cells must be at least 1")

    with jsonl_rows(args.out) as emit:
        rows = run(args, emit)
    print(f"{'step':16s} {'backend':7s} {'seconds':>9s} {'reference':18s} {'ref s':>9s} {'ratio':>7s} "
          f"{'MiB':>9s} {'ref MiB':>9s}")
    for r in rows:
        _print_row(r)
    failed = sorted({r["step"] for r in rows if "error" in r})
    if failed:
        print(f"gpu_sc failed on: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
