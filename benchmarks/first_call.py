"""What a user waits on before any work is done: the import, the first call of each step in a
new process (Numba compiles the CPU kernels, CuPy / NVRTC the CUDA ones), and `gpu-sc demo`,
each in a cold process (empty compilation caches) and then in a warm one (the caches the cold
one wrote), as separate Python processes.

    python3 benchmarks/first_call.py --backend cpu --out benchmarks/results/first-call-cpu.jsonl

Rows: case ("import", a step, "demo"), backend, cache ("cold" / "warm"), seconds, plus the
versions. The step timings are each step's first call on 2,000 cells of the bundled PBMCs
(`gsc.datasets.resample`), so they are almost all compilation; `steady_seconds` is the same call
again in the same process (the work itself). The caches: NUMBA_CACHE_DIR and CuPy's
CUPY_CACHE_DIR, pointed at a fresh folder for the cold process and kept for the warm one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import cpu_name, gpu_name, jsonl_rows, versions

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: prints a line per result as it is measured (the import's seconds, then each
# step's first and second call), so that a child stopped at its time keeps what it measured.
CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import gpu_sc as gsc
print("FIRST_CALL_IMPORT " + json.dumps(time.perf_counter() - t0), flush=True)
gpu = sys.argv[1] == "gpu"
base = gsc.datasets.resample(gsc.datasets.pbmc4k_half(), int(sys.argv[2]), seed=0)
steps = [
    ("qc", lambda a: gsc.pp.calculate_qc_metrics(a, inplace=True)),
    ("filter", lambda a: (gsc.pp.filter_cells(a, min_genes=10), gsc.pp.filter_genes(a, min_cells=3))),
    ("normalize", lambda a: gsc.pp.normalize_total(a, target_sum=1e4)),
    ("log1p", lambda a: gsc.pp.log1p(a)),
    ("hvg", lambda a: gsc.pp.highly_variable_genes(a, n_top_genes=1000, subset=True)),
    ("scale", lambda a: gsc.pp.scale(a.copy(), max_value=10)),
    ("pca", lambda a: gsc.pp.pca(a, n_comps=30)),
    ("neighbors", lambda a: gsc.pp.neighbors(a, n_neighbors=15)),
]
a = gsc.get.to_gpu(base, copy=True) if gpu else base  # to_gpu works in place unless copy=True
for name, fn in steps:
    before = a.copy()
    t = time.perf_counter(); fn(a)
    if gpu:
        import cupy; cupy.cuda.Device().synchronize()
    first = time.perf_counter() - t
    again = before.copy()
    t = time.perf_counter(); fn(again)
    if gpu:
        cupy.cuda.Device().synchronize()
    print("FIRST_CALL_STEP " + json.dumps([name, first, time.perf_counter() - t]), flush=True)
"""


def parse_child_line(line: str):
    """('import', seconds) or ('step', [name, first, again]) from a child's line; None otherwise."""
    for tag, kind in (("FIRST_CALL_IMPORT ", "import"), ("FIRST_CALL_STEP ", "step")):
        if line.startswith(tag):
            return kind, json.loads(line.removeprefix(tag))
    return None


def _child(backend: str, env: dict, timeout: float, n_cells: int = 2000, on_result=None) -> dict:
    """Import seconds and [first, second] seconds per step, from a new Python process; each result
    also goes to on_result(kind, value) as it arrives. Past `timeout` the child is stopped and what
    it measured is returned, with "timed_out" set (a cold GPU child compiles every kernel)."""
    out: dict = {"import": None, "steps": {}, "timed_out": False}
    # stderr to a file: read from a pipe after stdout, more than a pipe's worth of warnings would
    # block the child until the timer killed it
    with tempfile.TemporaryFile(mode="w+") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, backend, str(n_cells)], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)  # fmt: skip
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                got = parse_child_line(line.strip())
                if got is None:
                    continue
                kind, value = got
                if kind == "import":
                    out["import"] = value
                else:
                    out["steps"][value[0]] = value[1:]
                if on_result is not None:
                    on_result(kind, value)
            proc.wait()
        finally:
            out["timed_out"] = not timer.is_alive() and proc.returncode != 0
            timer.cancel()
        err_file.seek(0)
        err = err_file.read()
    if proc.returncode and not out["timed_out"]:
        raise RuntimeError(f"first-call child failed ({proc.returncode}): {err[-2000:]}")
    return out


def _demo(backend: str, env: dict, timeout: float, where: Path) -> float:
    cmd = [sys.executable, "-m", "gpu_sc.cli", "demo", "--device", backend, "--plot", str(where / "umap.png")]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=where, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode:
        raise RuntimeError(f"gpu-sc demo failed ({r.returncode}): {r.stderr[-2000:]}")
    return time.perf_counter() - t


def run(backend: str, demo: bool, timeout: float, emit) -> list[dict]:
    common = {"backend": backend, "device": cpu_name() if backend == "cpu" else gpu_name(), "cpu_count": os.cpu_count(),
              "versions": versions(), "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="gsc-first-call-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp / "numba"), "CUPY_CACHE_DIR": str(tmp / "cupy"),
               "PYTHONPATH": os.pathsep.join(s for s in (str(ROOT), os.environ.get("PYTHONPATH")) if s)}  # fmt: skip
        for cache in ("cold", "warm"):
            print(f"first calls, {cache} caches ...", file=sys.stderr, flush=True)

            def put(row, cache=cache):
                row = {**row, "cache": cache, **common}
                rows.append(row)
                emit(row)  # written as measured: a part stopped at its budget keeps these

            def on_result(kind, value, put=put):
                if kind == "import":
                    put({"case": "import", "seconds": value})
                else:
                    put({"case": value[0], "seconds": value[1], "steady_seconds": value[2]})

            got = _child(backend, env, timeout, on_result=on_result)
            if got["timed_out"]:
                put({"case": "timed_out", "timed_out": True, "seconds": timeout,
                     "note": f"child stopped after {timeout:g} s"})
                break  # a warm child needs the caches a finished cold one writes
            if demo:
                print(f"gpu-sc demo, {cache} caches ...", file=sys.stderr, flush=True)
                put({"case": "demo", "seconds": _demo(backend, env, timeout, tmp)})
    return rows


def _cell(value, width: int, digits: int) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--no-demo", action="store_true", help="leave out gpu-sc demo")
    p.add_argument("--timeout", type=float, default=900, help="seconds per child process")
    p.add_argument("--out", type=Path, help="append JSON lines here")
    args = p.parse_args(argv)
    with jsonl_rows(args.out) as emit:
        rows = run(args.backend, not args.no_demo, args.timeout, emit)
    print(f"{'case':10s} {'cold s':>8s} {'warm s':>8s} {'steady s':>9s}")
    by = {(r["case"], r["cache"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        cold, warm = by.get((case, "cold"), {}), by.get((case, "warm"), {})
        steady = cold.get("steady_seconds")
        print(f"{case:10s} {_cell(cold.get('seconds'), 8, 2)} {_cell(warm.get('seconds'), 8, 2)} "
              f"{_cell(steady, 9, 3)}")  # fmt: skip
    return 1 if any(r.get("timed_out") for r in rows) else 0  # a stopped child measured nothing


if __name__ == "__main__":
    sys.exit(main())
