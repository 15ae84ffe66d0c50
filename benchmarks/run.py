"""Time gpu_sc's steps against scanpy (CPU) and rapids-singlecell / the memory-bandwidth bound
(GPU), on real cells resampled to the size asked for, all in one run.

    python benchmarks/run.py --dataset mouse_brain_10k --n-cells 100000 --backend cpu \
        --steps qc,filter_cells,filter_genes,normalize,log1p --out benchmarks/results/cpu.jsonl

Each step gets a fresh copy of its input (not timed) after one untimed warm-up (JIT and kernel
compilation), then the median of `--repeats` runs is kept. GPU timings synchronise the device.
Rows are JSON lines: step, backend, device, n_cells, n_genes, nnz, seconds, reference,
reference_seconds, ratio (reference_seconds / seconds: > 1 means gpu_sc is faster), versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
import gpu_sc as gsc  # noqa: E402
from gpu_sc._backend import gpu_available  # noqa: E402


@dataclass(frozen=True)
class Step:
    """One benchmarked step: how to prepare its input, and the same call in each library."""

    prepare: str  # "counts" | "lognorm" | "hvg" | "pca" (the state the input must be in)
    call: Callable  # call(pp_module, adata); pp_module is gsc.pp, scanpy.pp or rapids' pp
    bytes_moved: Callable  # bytes the step must read + write at least (adata -> int)


def _csr_bytes(a, passes_read=1, passes_write=0) -> int:
    x = a.X
    stored = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes if hasattr(x, "indptr") else x.nbytes
    values = x.data.nbytes if hasattr(x, "indptr") else x.nbytes
    return passes_read * stored + passes_write * values


STEPS: dict[str, Step] = {
    "qc": Step("counts", lambda pp, a: pp.calculate_qc_metrics(a, inplace=True), _csr_bytes),
    "filter_cells": Step("counts", lambda pp, a: pp.filter_cells(a, min_genes=200), _csr_bytes),
    "filter_genes": Step("counts", lambda pp, a: pp.filter_genes(a, min_cells=3), _csr_bytes),
    "normalize": Step("counts", lambda pp, a: pp.normalize_total(a, target_sum=1e4),
                      lambda a: _csr_bytes(a, 2, 1)),
    "log1p": Step("counts", lambda pp, a: pp.log1p(a), lambda a: _csr_bytes(a, 0, 2)),
    "hvg": Step("lognorm", lambda pp, a: pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars // 2)),
                _csr_bytes),
    "scale": Step("hvg", lambda pp, a: pp.scale(a, max_value=10), lambda a: _csr_bytes(a, 1, 2)),
    "pca": Step("hvg", lambda pp, a: pp.pca(a, n_comps=50), lambda a: _csr_bytes(a, 2, 0)),
    "neighbors": Step("pca", lambda pp, a: pp.neighbors(a, n_neighbors=15),
                      lambda a: a.obsm["X_pca"].nbytes),
}  # fmt: skip


def _versions() -> dict:
    out = {"python": platform.python_version(), "gpu_sc": gsc.__version__}
    for name in ("scanpy", "anndata", "numpy", "scipy", "numba", "cupy-cuda13x", "cupy-cuda12x",
                 "rapids-singlecell-cu13", "rapids-singlecell-cu12"):  # fmt: skip
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # not installed here
            continue
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _prepare(base, state: str):
    """The step's input on the CPU: counts, normalised+log1p, or that restricted to HVGs."""
    a = base.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if state in ("lognorm", "hvg", "pca"):
            gsc.pp.normalize_total(a, target_sum=1e4)
            gsc.pp.log1p(a)
        if state in ("hvg", "pca"):
            gsc.pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars // 2), subset=True)
        if state == "pca":
            gsc.pp.pca(a, n_comps=50)
    return a


def _time(fns, make_input, repeats: int, sync=lambda: None) -> list[float]:
    """Median seconds of each function in `fns` on fresh inputs. The functions take turns
    within every repeat, so neither gets a warmer allocator or cache than the other."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in fns:
            fn(make_input())  # warm-up: JIT / kernel compilation
        sync()
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, out in zip(fns, times, strict=True):
                a = make_input()
                sync()
                t0 = time.perf_counter()
                fn(a)
                sync()
                out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _gpu_tools():
    """(cupy, synchronise, device name, device-to-device copy bandwidth in bytes/s), or None."""
    if not gpu_available():
        return None
    import cupy as cp

    def sync():
        cp.cuda.Device().synchronize()

    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    buf = cp.empty(512 * 2**20, dtype=cp.uint8)
    dst = cp.empty_like(buf)
    cp.copyto(dst, buf)
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        cp.copyto(dst, buf)
    sync()
    bandwidth = 2 * buf.nbytes * 10 / (time.perf_counter() - t0)  # read + write
    return cp, sync, name, bandwidth


def run(args) -> list[dict]:
    base = gsc.datasets.resample(getattr(gsc.datasets, args.dataset)(), args.n_cells,
                                 seed=args.seed, progress=args.n_cells > 200_000)  # fmt: skip
    import scanpy as sc

    gpu = _gpu_tools() if "gpu" in args.backend else None
    if "gpu" in args.backend and gpu is None:
        print("gpu backend skipped: no CuPy or no GPU on this machine", file=sys.stderr)
    try:
        import rapids_singlecell as rsc
    except Exception:
        rsc = None
    common = {"n_cells": base.n_obs, "n_genes": base.n_vars, "nnz": int(base.X.nnz),
              "dataset": args.dataset, "versions": _versions(),
              "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows = []
    steps = [s for s in args.steps.split(",") if s]
    for i, name in enumerate(steps, 1):
        step = STEPS[name]
        prepared = _prepare(base, step.prepare)
        if "cpu" in args.backend:
            print(f"[{i}/{len(steps)}] {name:13s} cpu ...", file=sys.stderr, flush=True)
            row = {"step": name, "backend": "cpu", "device": _cpu_name(), "reference": "scanpy",
                   **common}  # fmt: skip
            try:
                ours, ref = _time([lambda a: step.call(gsc.pp, a), lambda a: step.call(sc.pp, a)],
                                  prepared.copy, args.repeats)  # fmt: skip
                row |= {"seconds": ours, "reference_seconds": ref, "ratio": ref / ours}
            except Exception as e:  # e.g. scanpy's neighbors on data it cannot handle
                (ours,) = _time([lambda a: step.call(gsc.pp, a)], prepared.copy, args.repeats)
                row |= {"seconds": ours, "reference_seconds": None, "ratio": None,
                        "reference_error": repr(e)[:200]}  # fmt: skip
            rows.append(row)
        if gpu is not None:
            cp, sync, device, bandwidth = gpu
            print(f"[{i}/{len(steps)}] {name:13s} gpu ...", file=sys.stderr, flush=True)
            on_gpu = gsc.get.to_gpu(prepared, copy=True)
            (ours,) = _time([lambda a: step.call(gsc.pp, a)], on_gpu.copy, args.repeats, sync)
            bound = step.bytes_moved(on_gpu) / bandwidth
            rows.append({"step": name, "backend": "gpu", "device": device, "seconds": ours,
                         "reference": "bandwidth-bound", "reference_seconds": bound,
                         "ratio": bound / ours, **common})  # fmt: skip
            if rsc is not None:

                def rsc_input(prepared=prepared):
                    a = prepared.copy()
                    rsc.get.anndata_to_GPU(a)
                    return a

                (ref,) = _time([lambda a: step.call(rsc.pp, a)], rsc_input, args.repeats, sync)
                rows.append({"step": name, "backend": "gpu", "device": device, "seconds": ours,
                             "reference": "rapids-singlecell", "reference_seconds": ref,
                             "ratio": ref / ours, **common})  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mouse_brain_10k", choices=["mouse_brain_10k", "pbmc68k_reduced"])
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--steps", default="qc,filter_cells,filter_genes,normalize,log1p")
    p.add_argument("--backend", default="cpu", help="cpu, gpu or cpu,gpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="append JSON lines here")
    args = p.parse_args(argv)
    unknown = set(args.steps.split(",")) - set(STEPS) - {""}
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    rows = run(args)
    print(f"{'step':13s} {'backend':7s} {'seconds':>9s} {'reference':18s} {'ref s':>9s} {'ratio':>7s}")
    for r in rows:
        if r["ratio"] is None:
            print(f"{r['step']:13s} {r['backend']:7s} {r['seconds']:9.4f} {r['reference']:18s} "
                  f"failed: {r['reference_error']}")  # fmt: skip
            continue
        print(f"{r['step']:13s} {r['backend']:7s} {r['seconds']:9.4f} {r['reference']:18s} "
              f"{r['reference_seconds']:9.4f} {r['ratio']:7.2f}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
