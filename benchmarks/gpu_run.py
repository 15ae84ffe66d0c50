"""The whole GPU session in one command: record the machine, run the GPU tests, time the steps at
1M cells against rapids-singlecell and the bandwidth bound, validate and scale PIC-seq on the GPU,
each part under its own time budget, and write everything to one flat output folder.

    bash benchmarks/gpu_run.sh "$OUT"          # on the GPU machine (installs the .whl/ wheels first)
    python3 benchmarks/gpu_run.py --plan       # the budget table and the commands, nothing run
    python3 benchmarks/gpu_run.py --small OUT  # the dry run the tests make: tiny sizes, any machine

Every part runs as its own process group; one that outlives its time is interrupted (SIGINT, then
SIGKILL two seconds later), marked `timed_out`, and the next part starts, so whatever the parts
wrote (their JSON-lines writers flush every row) comes back. Time a part leaves unused goes to the
parts after it, never past the session's deadline (`--total` minus the reserve, counted from the
start of gpu_run.sh). The summary JSON is rewritten after every part. Stdlib only; also loaded as
a pytest plugin (`-p gpu_run`) by the tests part, to write one JSON line per test as it ends.
See benchmarks/README.md, "The GPU run".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = 540  # the device tool allows 600 s a command; 60 s stay for its own start and copying back
INSTALL_S = 60  # gpu_run.sh's `timeout` of the wheel install (tests/test_gpu_run.py checks they agree)
GRACE_S = 2  # between SIGINT and SIGKILL of an overrunning part
MAX_FILES = 8  # the device tool returns at most 8 files from its output folder
MAX_FILE_BYTES = 16 * 2**20  # ... each at most 16 MiB
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")  # ... with names of these characters only
TESTS_ENV = "GPU_RUN_TESTS_JSONL"  # where the pytest plugin below writes its rows

# (part, budget in seconds, what it does): install and setup come first whatever is selected,
# reserve is kept free at the end (stopping parts, writing the summary)
# Sized from the first session on an H200 (2026-12-04, benchmarks/results/gpu-run-h200-2026-12-04.*):
# install 2 s, setup 11 s, bench 89 s; the GPU tests 254 s one at a time with CuPy's kernel cache
# warm (and 5 of 209 in the first 120 s cold, compiling), hence several pytest workers below;
# pic-validate and pic-scale ran past 146 s and 90 s, hence one dataset and one method each, and
# pic-scale on the GPU alone (the CPU's fixed cost, 17 s, was timed twice before the GPU began).
# Install's unused budget (58 s of 60 there) passes to the parts after it.
BUDGETS = {"install": INSTALL_S, "setup": 20, "tests": 185, "bench": 110, "first-call": 60, "pic-validate": 50,
           "pic-scale": 40, "reserve": 15}  # fmt: skip
TEST_WORKERS = 8  # pytest-xdist processes sharing the GPU (16 cores there), where xdist imports
# --small: the same total, spent generously on tiny sizes (a loaded 2-core machine is slow to start Python);
# a part given 0 is left out: first-call, whose compile timings mean nothing there and whose cold
# Numba compiles of every step would cost the CI run a minute
SMALL_BUDGETS = {"install": INSTALL_S, "setup": 45, "tests": 60, "bench": 120, "first-call": 0, "pic-validate": 120,
                 "pic-scale": 120, "reserve": 15}  # fmt: skip
PARTS = ("tests", "bench", "first-call", "pic-validate", "pic-scale")  # in order of value: run first
FIXED = ("install", "setup", "reserve")
# At full width (1M cells drawn from 100,000 resampled pbmc4k cells, 33,694 genes, some 1.1 billion
# counts; the 2026-12-04 session had 1,000 mouse-brain genes, 60 million counts). filter took 1.16 s
# there against qc's 0.08: its two halves come after the main steps, apart, to show which one costs
# it; neighbors works in 50 PCA dimensions whatever the width (9.2 s a call at 1M there, four calls
# with its warm-up), so it comes after the main steps: an overrun loses a figure measured before,
# not a new one; the experimental Pearson-residual HVG (dense residuals of every gene, never run
# on a GPU before) comes after it, the step an overrun may cost
BENCH_STEPS = "qc,filter,normalize,log1p,hvg,scale,pca,filter_cells,filter_genes,neighbors,pearson_hvg"


# ---------------------------------------------------------------------------------------------
# the pytest plugin (tests part): one JSON line per collected set, test outcome and session end
# ---------------------------------------------------------------------------------------------

def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _worker() -> str | None:
    """The pytest-xdist worker this process is ('gw0', ...), None in the controller or without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def _test_row(row: dict) -> None:
    path = os.environ.get(TESTS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


# Under xdist each worker collects every test and the controller collects none, while the
# controller receives every worker's reports: the first worker says how many were collected, the
# controller writes the rest (a worker writing too would count each test twice).
def pytest_collection_finish(session) -> None:
    if _worker() in (None, "gw0"):
        _test_row({"event": "collected", "n": len(session.items)})


def pytest_collectreport(report) -> None:
    if report.failed and _worker() is None:
        _test_row({"event": "collect_error", "nodeid": report.nodeid, "longrepr": _tail(str(report.longrepr), 3000)})


def pytest_runtest_logreport(report) -> None:
    if _worker() is not None or (report.passed and report.when != "call"):  # setup / teardown that went well
        return
    row = {"event": "test", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
           "duration": round(report.duration, 4)}  # fmt: skip
    if hasattr(report, "wasxfail"):
        row["xfail"] = True
    if report.failed:
        row["longrepr"] = _tail(str(report.longrepr), 3000)
    elif report.skipped and isinstance(report.longrepr, tuple):
        row["reason"] = str(report.longrepr[-1])[:300]
    _test_row(row)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _worker() is None:
        _test_row({"event": "finished", "exitstatus": int(exitstatus)})


def count_tests(path: Path) -> dict:
    """passed / failed / errors / skipped / xfailed / xpassed / collected / not_run from the plugin's
    rows, complete or not (a part stopped at its budget leaves the tests it reached)."""
    c = {"collected": None, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "xpassed": 0,
         "not_run": None, "finished": False, "failures": []}  # fmt: skip
    if not path.exists():
        return c
    done = set()
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        ev = r.get("event")
        if ev == "collected":
            c["collected"] = r["n"]
        elif ev == "finished":
            c["finished"], c["exitstatus"] = True, r["exitstatus"]
        elif ev == "collect_error":
            c["errors"] += 1
            c["failures"].append({"nodeid": r["nodeid"], "when": "collect", "longrepr": r.get("longrepr")})
        elif ev == "test":
            done.add(r["nodeid"])
            if r.get("xfail"):
                c["xfailed" if r["outcome"] == "skipped" else "xpassed"] += 1
            elif r["outcome"] == "skipped":
                c["skipped"] += 1
            elif r["outcome"] == "passed":
                c["passed"] += 1
            elif r["when"] == "call":
                c["failed"] += 1
            else:
                c["errors"] += 1
            if r["outcome"] == "failed":
                c["failures"].append({k: r.get(k) for k in ("nodeid", "when", "longrepr")})
    c["not_run"] = None if c["collected"] is None else max(c["collected"] - len(done), 0)
    for f in c["failures"][30:]:  # the first 30 with their traceback tail, the others by name
        f.pop("longrepr", None)
    return c


# ---------------------------------------------------------------------------------------------
# the machine: nvidia-smi here, the library versions in a child (--env-info: imports may hang)
# ---------------------------------------------------------------------------------------------

def nvidia_smi(timeout: float = 10) -> dict:
    q = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        r = subprocess.run(q, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode or not lines:
        return {"error": f"nvidia-smi exit {r.returncode}: {(r.stderr or r.stdout).strip()[:300]}"}
    name, memory, driver = ([*(s.strip() for s in lines[0].split(",")), "", ""])[:3]
    return {"name": name, "memory_total": memory, "driver_version": driver, "n_gpus": len(lines),
            "nvidia_smi": lines}  # fmt: skip


def slug(name: str | None) -> str:
    """A file-name-safe short device name: 'NVIDIA H200' -> 'h200'; no GPU -> 'nogpu'."""
    s = re.sub(r"[^a-z0-9]+", "-", (name or "").lower().replace("nvidia", "")).strip("-")
    return s[:40].strip("-") or "nogpu"


CORE_MODULES = ("numpy", "scipy", "anndata", "gpu_sc")  # without any of these no part can run
MODULES = {"numpy": "numpy", "scipy": "scipy", "anndata": "anndata", "scanpy": "scanpy", "numba": "numba",
           "dask": "dask", "gpu_sc": "gpu_sc", "cupy": "cupy"}  # fmt: skip


def _import_version(info: dict, name: str, module: str) -> None:
    try:
        with warnings.catch_warnings():  # anndata and scanpy deprecate __version__; it still tells
            warnings.simplefilter("ignore")
            info["versions"][name] = str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception as e:  # not installed, or its CUDA libraries missing
        info["versions"][name] = None
        info["import_errors"][name] = f"{type(e).__name__}: {e}"[:300]


def env_info(save=lambda info: None) -> dict:
    """CUDA runtime and driver versions as CuPy sees them, the device, and the library versions
    (imported: what the parts will really use; rapids-singlecell last, where importable).
    `save(info)` is called after each step, so that a setup stopped at its budget keeps the rest."""
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "versions": {}, "import_errors": {}}
    for name, module in MODULES.items():
        _import_version(info, name, module)
        save(info)
    try:
        import cupy as cp

        def dotted(v: int) -> str:
            return f"{v // 1000}.{v % 1000 // 10}"

        rt, drv = cp.cuda.runtime.runtimeGetVersion(), cp.cuda.runtime.driverGetVersion()
        info["cuda_runtime"], info["cuda_driver_api"] = dotted(rt), dotted(drv)
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["device"] = {"name": name.decode() if isinstance(name, bytes) else str(name),
                          "memory_bytes": int(props["totalGlobalMem"]),
                          "compute_capability": f"{props['major']}.{props['minor']}",
                          "multiprocessors": int(props["multiProcessorCount"])}  # fmt: skip
    except Exception as e:
        info["cuda_error"] = f"{type(e).__name__}: {e}"[:300]
    try:
        from gpu_sc._backend import gpu_available

        info["gpu_available"] = bool(gpu_available())
    except Exception as e:
        info["gpu_available"] = f"{type(e).__name__}: {e}"[:300]
    try:  # the package metadata every benchmark row records
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _common import versions

        info["package_versions"] = versions()
    except Exception as e:
        info["package_versions"] = f"{type(e).__name__}: {e}"[:300]
    save(info)
    _import_version(info, "rapids-singlecell", "rapids_singlecell")
    save(info)
    return info


# ---------------------------------------------------------------------------------------------
# the plan: parts, their commands, budgets and output files
# ---------------------------------------------------------------------------------------------

@dataclass
class Part:
    name: str
    budget: float
    what: str
    cmd: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # file names in the output folder
    env: dict = field(default_factory=dict)


def _cells(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def pic_data_dir() -> Path | None:
    """../shared/data beside the checkout where it is there, else the bundled gpu_sc/_data (the GPU
    machine has no shared/: pbmc68k and pbmc4k are bundled, tnbc then gives a 'skipped' row)."""
    for d in (ROOT.parent / "shared" / "data", ROOT / "gpu_sc" / "_data"):
        if (d / "soupx_pbmc4k_half.h5ad").exists():
            return d
    return None


def _parallel_tests() -> list[str]:
    """pytest-xdist's options for TEST_WORKERS workers where it imports (the GPU machine's image
    has it), else none: the tests run one at a time."""
    try:
        import xdist  # noqa: F401
    except ImportError:
        return []
    return ["-n", str(TEST_WORKERS), "-p", "no:cacheprovider"]


def plan(args, dev: str, date: str, out: Path) -> list[Part]:
    """Every part of the session; `dev` (device slug) and `date` name the files."""
    tag = f"{dev}-{date}"
    budgets = dict(SMALL_BUDGETS if args.small else BUDGETS)
    budgets.update(args.budget)
    py = sys.executable
    data = pic_data_dir()
    data_args = ["--data-dir", str(data)] if data else []
    if args.small:  # the dry run: a couple of fast tests, tiny sizes
        tests = ["tests/test_kernels_compile.py", "-k", "registered or on_device"]
        n_cells, pool, dataset, steps, repeats = 2000, 500, "pbmc68k_reduced", "qc,normalize", 1
        validate = ["--datasets", "pbmc68k", "--methods", "ml", "--n-pics", "30", "--n-train", "300"]
        scale = ["--scale-dataset", "pbmc68k", "--scale-pics", "60", "--scale-cpu-pics", "60", "--scale-groups", "3",
                 "--scale-pool", "60", "--scale-fixed-pics", "10", "--scale-loop-pics", "20", "--methods", "picseq",
                 "--n-train", "300"]  # fmt: skip
        scale_backends = "cpu,gpu"
    else:
        # a test file that fails to import (a missing wheel) must not stop the others from running
        tests = ["-m", "gpu", "--continue-on-collection-errors", *_parallel_tests()]
        n_cells, pool, dataset, steps, repeats = args.n_cells, args.pool_cells, args.dataset, BENCH_STEPS, 3
        # one dataset of realistic width (17,646 genes); pbmc68k gave CPU-GPU pair agreement 1.0
        # for ml, picseq and mixture on 2026-12-04, with mixture 4.5 times slower on the GPU;
        # mixture comes last (its EM since reads the device once an iteration), on time left over
        validate = ["--datasets", "pbmc4k", "--methods", "ml,picseq,mixture", "--n-pics", "1000"]
        scale = ["--scale-pics", "100000", "--methods", "ml"]
        scale_backends = "gpu"  # the CPU's rows at this size: benchmarks/results/pic-scale-cpu-*
    bench = f"gpu-{dev}-{_cells(n_cells)}-{date}.jsonl"
    parts = [
        Part("install", budgets["install"], "wheels from .whl/ into /tmp/site (gpu_run.sh, before Python starts)"),
        Part("setup", budgets["setup"], "nvidia-smi; CUDA runtime, device and library versions",
             [py, "benchmarks/gpu_run.py", "--env-info"]),
        Part("tests", budgets["tests"], f"python3 -m pytest {' '.join(tests)}",
             [py, "-m", "pytest", "-q", "--tb=short", "-p", "gpu_run", *tests], [f"gpu-tests-{tag}.jsonl"]),
        Part("bench", budgets["bench"],
             f"run.py --backend gpu, {n_cells:,} {dataset} cells (drawn from {pool:,}), {steps.count(',') + 1} "
             f"steps, {repeats} repeats",
             [py, "benchmarks/run.py", "--backend", "gpu", "--dataset", dataset, "--n-cells", str(n_cells),
              "--pool-cells", str(pool),
              "--steps", steps, "--repeats", str(repeats), "--touch-memory", "0", "--out", str(out / bench)],
             [bench]),
        Part("first-call", budgets["first-call"],
             "first_call.py --backend gpu --no-demo: import and each step's first call, cold and warm caches",
             [py, "benchmarks/first_call.py", "--backend", "gpu", "--no-demo",
              "--timeout", str(max(budgets["first-call"] - 5, 5)),  # rows are written as measured
              "--out", str(out / f"first-call-gpu-{tag}.jsonl")], [f"first-call-gpu-{tag}.jsonl"]),
        Part("pic-validate", budgets["pic-validate"],
             "pic_validate.py --backends cpu,gpu --seeds 0 " + " ".join(validate),
             [py, "benchmarks/pic_validate.py", "--backends", "cpu,gpu", "--seeds", "0", *validate, *data_args,
              "--out", str(out / f"pic-gpu-{tag}.jsonl")], [f"pic-gpu-{tag}.jsonl"]),
        Part("pic-scale", budgets["pic-scale"],
             f"pic_validate.py --scale --backends {scale_backends} " + " ".join(scale),
             [py, "benchmarks/pic_validate.py", "--scale", "--backends", scale_backends, *scale, *data_args,
              "--out", str(out / f"pic-scale-gpu-{tag}.jsonl")], [f"pic-scale-gpu-{tag}.jsonl"]),
        Part("reserve", budgets["reserve"], f"stopping overrunning parts ({GRACE_S} s each), the summary"),
    ]  # fmt: skip
    for name, command in args.replace.items():  # tests of this script: a stand-in command
        next(p for p in parts if p.name == name).cmd = shlex.split(command)
    return [p for p in parts if p.name in FIXED or (p.name in args.parts and p.budget > 0)]


def check_budgets(parts: list[Part], total: float) -> None:
    """Raises ValueError where the budgets (install, setup, parts, reserve) add up to more than `total`."""
    s = sum(p.budget for p in parts)
    if s > total:
        raise ValueError(f"the budgets add up to {s:g} s, more than the total of {total:g} s")
    bad = [p.name for p in parts if p.budget < 0]
    if bad:
        raise ValueError(f"negative budgets: {bad}")


def check_files(names: list[str]) -> None:
    """Raises ValueError unless `names` fit what the device tool returns: at most MAX_FILES plain
    names (no folders) of letters, digits, '.', '_' and '-'."""
    if len(names) > MAX_FILES:
        raise ValueError(f"{len(names)} output files; the device tool returns at most {MAX_FILES}")
    bad = [n for n in names if not NAME_OK.match(n)]
    if bad:
        raise ValueError(f"output names the device tool would not return: {bad}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate output names: {names}")


def budget_table(parts: list[Part], total: float) -> str:
    lines = [f"{'part':13s} {'budget_s':>8s}  what"]
    lines += [f"{p.name:13s} {p.budget:8g}  {p.what}" for p in parts]
    lines.append(f"{'sum':13s} {sum(p.budget for p in parts):8g}  of at most {total:g} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# running a part
# ---------------------------------------------------------------------------------------------

class Stopped(Exception):
    """gpu_run itself was told to stop (SIGTERM, SIGHUP: the device tool's time limit)."""


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def run_part(cmd: list[str], limit: float, log, env: dict) -> tuple[int | None, bool, float]:
    """Run `cmd` in a process group of its own (in this session, which the device tool ends
    with the command) with output appended to `log`; past `limit` seconds the group gets SIGINT
    (pytest and the benchmarks stop cleanly on it), GRACE_S later SIGKILL, and whatever ends
    this call (a `Stopped` too) kills what is left of the group: no part outlives it to hold
    the GPU or write into the results. Returns (exit status, timed out, seconds)."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    except OSError as e:
        log.write(f"cannot start: {e}\n".encode())
        return None, False, time.monotonic() - t0
    timed_out = False
    try:
        proc.wait(timeout=max(limit, 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, wait in ((signal.SIGINT, GRACE_S), (signal.SIGKILL, 10)):  # a process stuck in the driver: move on
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # what the part left in its group goes too
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, timed_out, time.monotonic() - t0


def _failed_rows(path: Path) -> int:
    """Rows of a part's JSON lines that record a failure (`error`) or a stop (`timed_out`): a part
    whose rows failed did not succeed, whatever its exit status."""
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        n += bool(isinstance(row, dict) and (row.get("error") or row.get("timed_out") is True))
    return n


def _lines(path: Path) -> int | None:
    return sum(1 for _ in path.open("rb")) if path.exists() else None


def _log_tail(log_path: Path, start: int, n: int = 15) -> list[str]:
    with log_path.open("rb") as f:
        f.seek(max(start, log_path.stat().st_size - 64 * 1024))
        text = f.read().decode(errors="replace")
    return [ln[-300:] for ln in text.splitlines() if ln.strip()][-n:]


def _cap_log(path: Path, limit: int = MAX_FILE_BYTES - 2**20) -> None:
    """Keep the log under the device tool's file limit: its head and tail where it is longer."""
    size = path.stat().st_size
    if size <= limit:
        return
    with path.open("rb") as f:
        head = f.read(limit // 4)
        f.seek(size - limit // 2)
        tail = f.read()
    path.write_bytes(head + f"\n... [{size - len(head) - len(tail)} bytes cut] ...\n".encode() + tail)


def _unique_date(out: Path, dev: str) -> str:
    """Today (UTC), with -2, -3 ... added where `out` or the repository's benchmarks/results (which
    travels with the tree: the device tool empties `out`) holds a file of this device and date."""
    date = day = datetime.now(UTC).date().isoformat()
    folders = [d for d in (out, ROOT / "benchmarks" / "results") if d.is_dir()]
    k = 1
    while any(dev in f.name and f.name.split(dev, 1)[1].startswith(f"-{date}") for d in folders for f in d.iterdir()):
        k += 1
        date = f"{day}-{k}"
    return date


# what the GPU machine's image lacks and the parts import (../shared/gpu/fetch-wheels.sh's list,
# less igraph/leidenalg/... that only UMAP and Leiden need, plus Dask's three for the Dask tests)
WHEELS_NEEDED = ("anndata", "scanpy", "natsort", "session-info2", "legacy-api-wrap", "array-api-compat", "zarr",
                 "numcodecs", "donfig", "pynndescent", "umap-learn", "fast-array-utils", "scverse-misc",
                 "dask", "partd", "locket")  # fmt: skip
CARRY_MAX_BYTES = 64 * 2**20  # what the device tool carries: the tree and the wheels together


_GLIBC_PLATFORM = re.compile(r"(any|linux_x86_64|manylinux(1|2010|2014|_2_\d+)_x86_64)$")


def _wheel_fits(name: str) -> bool:
    """Whether a wheel file name's tags install on the GPU machine (CPython 3.12, x86_64 Linux,
    glibc): one of its python tags, its abi and one of its platform tags must fit, as pip
    reads them; a name without the three tags does not fit."""
    parts = name[:-4].split("-") if name.endswith(".whl") else []
    if len(parts) < 5:
        return False
    py, abi, plat = parts[-3:]

    def py_fits(t: str) -> bool:
        m = re.fullmatch(r"(py|cp)(\d)(\d*)", t)
        if not m or m[2] != "3":
            return False
        minor = int(m[3]) if m[3] else None
        if m[1] == "py":
            return minor is None or minor <= 12
        return minor == 12 or (abi == "abi3" and minor is not None and minor <= 12)

    abi_ok = abi in ("none", "abi3", "cp312")
    return any(py_fits(t) for t in py.split(".")) and abi_ok and any(_GLIBC_PLATFORM.match(p) for p in plat.split("."))


def _tree_bytes() -> int | None:
    """Bytes of the files that travel with the tree (tracked, and untracked not ignored)."""
    try:
        names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               capture_output=True, check=True, timeout=30).stdout.split(b"\0")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def _wheel_project(path: Path) -> str:
    """A wheel file's project name, normalised as pip compares them ('session_info2' -> 'session-info2')."""
    return re.sub(r"[-_.]+", "-", path.name.split("-")[0]).lower()


def install_order(folder: Path) -> list[Path]:
    """The folder's wheels, those the parts need first (in WHEELS_NEEDED's order), then the rest by
    name: gpu_run.sh's one-by-one install (after pip refused the set) stops at its budget, and what
    it leaves out should be what matters least."""
    rank = {n: i for i, n in enumerate(WHEELS_NEEDED)}
    return sorted(folder.glob("*.whl"), key=lambda w: (rank.get(_wheel_project(w), len(rank)), w.name))


def check_wheels(folder: Path) -> list[str]:
    """What would spoil the session in the carried wheel folder, checked here before it (pip
    refuses the whole install where two versions of one package are there, and then nothing can
    be imported on the GPU machine): one version per package, the needed ones present, the size
    within what the device tool carries, and COMMIT (the commit measured) written."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return [f"no wheels in {folder}: run ../shared/gpu/fetch-wheels.sh"]
    versions: dict[str, set[str]] = {}
    named = [w for w in wheels if len(w.name.split("-")) >= 5]  # name-version-python-abi-platform
    problems = [f"{w.name} is not a wheel's name (name-version-python-abi-platform.whl)"
                for w in wheels if w not in named]  # fmt: skip
    for w in named:
        versions.setdefault(_wheel_project(w), set()).add(w.name.split("-")[1])
    problems += [f"{n} has {len(v)} versions ({', '.join(sorted(v))}): keep one, pip refuses the install"
                 for n, v in versions.items() if len(v) > 1]  # fmt: skip
    problems += [f"no {n} wheel" for n in WHEELS_NEEDED if n not in versions]
    problems += [f"{w.name} does not install on CPython 3.12, x86_64 Linux (pip would refuse the set)"
                 for w in named if not _wheel_fits(w.name)]  # fmt: skip
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    tree = _tree_bytes() or 16 * 2**20
    if size + tree > CARRY_MAX_BYTES:
        problems.append(f"{size / 2**20:.1f} MiB of wheels and {tree / 2**20:.1f} MiB of tree: more than the "
                        f"{CARRY_MAX_BYTES // 2**20} MiB the device tool carries")  # fmt: skip
    commit = folder / "COMMIT"
    if not commit.exists():
        problems.append(f"no {commit}: write it with  git rev-parse HEAD > {folder}/COMMIT")
    else:
        head = _git("rev-parse", "HEAD")
        if head and commit.read_text().strip() != head:
            problems.append(f"{commit} names {commit.read_text().strip()[:12]}, HEAD is {head[:12]}: rewrite it")
        if _git("status", "--porcelain", "--untracked-files=no"):
            problems.append("uncommitted changes: the run measures the tree, COMMIT names HEAD; commit first")
    return problems


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------

def _budget_arg(s: str) -> tuple[str, float]:
    name, _, value = s.partition("=")
    if name not in BUDGETS or not value:
        raise argparse.ArgumentTypeError(f"expected PART=SECONDS with PART one of {', '.join(BUDGETS)}")
    return name, float(value)


def _replace_arg(s: str) -> tuple[str, str]:
    name, _, command = s.partition("=")
    if name not in ("setup", *PARTS) or not command:
        raise argparse.ArgumentTypeError(f"expected PART=COMMAND with PART one of setup, {', '.join(PARTS)}")
    return name, command


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks" / "results",
                   help="output folder (default benchmarks/results/); at most 8 files go there, flat")
    p.add_argument("--small", action="store_true", help="dry run: tiny sizes, a couple of tests (any machine)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    p.add_argument("--budget", action="append", type=_budget_arg, default=[], metavar="PART=SECONDS",
                   help="change one budget (repeatable); 0 leaves a part out")
    p.add_argument("--total", type=float, default=TOTAL_S, help="the budgets may add up to this (seconds)")
    p.add_argument("--dataset", default="pbmc4k_half", help="run.py --dataset of the bench part (full width)")
    p.add_argument("--n-cells", type=int, default=1_000_000, help="run.py --n-cells of the bench part")
    p.add_argument("--pool-cells", type=int, default=100_000,
                   help="run.py --pool-cells of the bench part: resampled on the host, the cells drawn on the GPU")
    p.add_argument("--plan", action="store_true", help="print the budget table and the commands; run nothing")
    p.add_argument("--check-wheels", type=Path, default=None, metavar="DIR",
                   help="check the wheel folder to carry (e.g. .whl) before a session; run nothing")
    p.add_argument("--install-order", type=Path, default=None, metavar="DIR",
                   help=argparse.SUPPRESS)  # gpu_run.sh's fallback: the wheels, needed first, one a line
    p.add_argument("--replace", action="append", type=_replace_arg, default=[], metavar="PART=COMMAND",
                   help=argparse.SUPPRESS)  # tests: run a stand-in command as that part
    p.add_argument("--env-info", action="store_true", help=argparse.SUPPRESS)  # the setup part's child
    args = p.parse_args(argv)
    args.budget, args.replace = dict(args.budget), dict(args.replace)
    args.parts = [s for s in args.parts.split(",") if s]
    bad = set(args.parts) - set(PARTS)
    if bad:
        p.error(f"unknown parts {sorted(bad)}; choose from {', '.join(PARTS)}")
    return args


def _outputs(p, out: Path) -> dict:
    """A part's record of what it wrote: the output files it made and their JSON lines."""
    made = [f for f in p.outputs if (out / f).exists()]
    return {"outputs": made, "rows": {f: _lines(out / f) for f in made}}


def _run_parts(runs, args, planned_end, deadline, t_smi, smi, env, scratch, out, log, log_path, summary, save):
    """Each part in turn, under its limit, into `summary` (saved after each part)."""
    stop_note = None
    for i, p in enumerate(runs):
        now = time.time()
        planned_end += p.budget
        # a part runs to where the plan ends it: its budget and whatever the install, setup and
        # earlier parts left of theirs (never so long that the parts after it lose theirs)
        limit = p.budget - t_smi if p.name == "setup" else planned_end - now
        limit = min(limit, deadline - now - sum(q.budget for q in runs[i + 1 :]))
        rec = {"name": p.name, "budget_s": p.budget, "limit_s": round(limit, 1), "command": shlex.join(p.cmd),
               "outputs": p.outputs}  # fmt: skip
        skip = stop_note or ("no time left before the deadline" if limit < 1 else None)
        if skip:
            rec.update(run=False, note=skip)
            summary["parts"].append(rec)
            save()
            continue
        penv = dict(env)
        if p.name == "tests":
            penv[TESTS_ENV] = str(out / p.outputs[0])
        if p.name == "setup":
            penv["GPU_RUN_ENV_JSON"] = str(scratch / "env.json")
        print(f"[{p.name}] limit {limit:.0f} s: {shlex.join(p.cmd)}", flush=True)
        log.write(f"==== {p.name} (budget {p.budget:g} s, limit {limit:.0f} s): {shlex.join(p.cmd)}\n".encode())
        log.flush()
        start = log.tell()
        t_part = time.monotonic()
        try:
            code, timed_out, seconds = run_part(p.cmd, limit, log, penv)
        except BaseException:  # gpu_run stopped (a signal, Ctrl-C): this part's record is kept too
            log.flush()
            rec.update(run=True, stopped=True, seconds=round(time.monotonic() - t_part, 1),
                       tail=_log_tail(log_path, start), **_outputs(p, out))  # fmt: skip
            summary["parts"].append(rec)
            raise
        log.flush()
        tail = _log_tail(log_path, start)
        log.write(f"==== {p.name}: exit {code}, {seconds:.1f} s{', TIMED OUT' if timed_out else ''}\n\n".encode())
        log.flush()
        if p.name == "setup":
            seconds += t_smi  # nvidia-smi ran before the log was opened
        rec.update(run=True, seconds=round(seconds, 1), exit_status=code, timed_out=timed_out, tail=tail,
                   **_outputs(p, out))  # fmt: skip
        rec["failed_rows"] = sum(_failed_rows(out / f) for f in rec["outputs"] if f.endswith(".jsonl"))
        if p.name == "tests":
            rec["tests"] = summary["tests"] = count_tests(out / p.outputs[0])
        if p.name == "setup" and (scratch / "env.json").exists():
            info = json.loads((scratch / "env.json").read_text())  # written whole (renamed into place)
            summary["device"] = {**smi, **({"cupy": info.pop("device")} if "device" in info else {})}
            summary["driver"] = smi.get("driver_version")
            summary["cuda_runtime"] = info.pop("cuda_runtime", None)
            summary["versions"] = info.pop("versions")
            summary["env"] = info
            # cupy comes last in setup: missing only where its import failed or setup ran to its end
            gpu_known = not args.small and (not timed_out or "cupy" in info.get("import_errors", {}))
            core = (*CORE_MODULES, "cupy") if gpu_known else CORE_MODULES
            missing = [m for m in core if summary["versions"].get(m) is None]
            if missing:  # every part would fail: stop now and leave the device time for a rerun
                stop_note = (f"not run: {', '.join(missing)} cannot be imported (see setup's import_errors; "
                             "check .whl with gpu_run.py --check-wheels)")  # fmt: skip
            elif gpu_known and not timed_out and info.get("gpu_available") is not True:  # every GPU row a skip
                stop_note = (f"not run: gpu_sc sees no usable GPU (gpu_available: {info.get('gpu_available')}; "
                             f"cuda_error: {info.get('cuda_error')})")  # fmt: skip
        summary["parts"].append(rec)
        save()
        print(f"[{p.name}] exit {code}, {seconds:.1f} s{' TIMED OUT' if timed_out else ''}; "
              + "; ".join(rec["tail"][-3:]), flush=True)  # fmt: skip


def main(argv=None) -> int:
    t_start = float(os.environ.get("GPU_RUN_T0") or time.time())  # gpu_run.sh's start: install counts
    args = parse(argv)
    if args.check_wheels is not None:
        problems = check_wheels(args.check_wheels)
        for line in problems or [f"{args.check_wheels}: ready to carry"]:
            print(line)
        return 1 if problems else 0
    if args.install_order is not None:
        print("\n".join(str(w) for w in install_order(args.install_order)))
        return 0
    if args.env_info:
        path = os.environ.get("GPU_RUN_ENV_JSON")
        info = env_info(lambda info: path and _write_json(Path(path), info))
        print(f"cuda runtime {info.get('cuda_runtime')}, device {info.get('device', {}).get('name')}, "
              + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))  # fmt: skip
        for name, err in info["import_errors"].items():
            print(f"cannot import {name}: {err}")
        return 0
    out = args.out.resolve()
    t_smi = time.time()
    smi = nvidia_smi()
    t_smi = time.time() - t_smi
    dev = slug(smi.get("name"))
    date = _unique_date(out, dev)
    parts = plan(args, dev, date, out)
    summary_name, log_name = f"gpu-run-{dev}-{date}.json", f"gpu-run-{dev}-{date}.log"
    files = [summary_name, log_name, *(f for p in parts for f in p.outputs)]
    print(budget_table(parts, args.total), flush=True)
    try:
        check_budgets(parts, args.total)
        check_files(files)
    except ValueError as e:
        print(f"gpu_run: refused: {e}", file=sys.stderr)
        return 2
    if args.plan:
        for p in parts:
            if p.cmd:
                print(f"\n[{p.name}] {shlex.join(p.cmd)}")
        print(f"\nfiles in {out}: {', '.join(files)}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    log_path, summary_path = out / log_name, out / summary_name
    scratch = Path(tempfile.mkdtemp(prefix="gpu-run-"))
    (scratch / "gpu_run.py").symlink_to(Path(__file__).resolve())  # the pytest plugin, by itself on the path
    # the parts are sessions of their own: an xdist worker's variables (when this runs inside
    # one, as in the tests under pytest -n) would make a part's pytest count as that worker
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(s for s in (str(scratch), str(ROOT), env.get("PYTHONPATH")) if s)
    deadline = t_start + args.total - next(p.budget for p in parts if p.name == "reserve")
    summary: dict = {
        "script": "benchmarks/gpu_run.py", "argv": sys.argv[1:], "small": args.small,
        "started": datetime.fromtimestamp(t_start, UTC).isoformat(timespec="seconds"), "total_budget_s": args.total,
        "commit": os.environ.get("GPU_RUN_COMMIT"),
        "budget": {p.name: p.budget for p in parts}, "device": smi, "driver": smi.get("driver_version"),
        "cuda_runtime": None, "versions": None, "cpu_count": os.cpu_count(), "parts": [],
    }  # fmt: skip

    def save() -> None:
        summary["seconds"] = round(time.time() - t_start, 1)
        summary["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        _cap_log(log_path)
        summary["files"] = {f: (out / f).stat().st_size for f in files if (out / f).exists()}
        _write_json(summary_path, summary)

    with log_path.open("ab") as log:
        log.write(f"{budget_table(parts, args.total)}\n\n".encode())
        # install: done by gpu_run.sh before this process started; it passes its exit status and times
        rc = os.environ.get("GPU_RUN_INSTALL_RC")
        t1 = os.environ.get("GPU_RUN_T1")
        inst = {"name": "install", "budget_s": parts[0].budget, "run": rc is not None,
                "exit_status": int(rc) if rc else None, "timed_out": rc in ("124", "137"),
                "seconds": round(float(t1) - t_start, 1) if t1 and rc is not None else 0.0}  # fmt: skip
        install_log = os.environ.get("GPU_RUN_INSTALL_LOG")
        if install_log and Path(install_log).exists():
            log.write(b"==== install ====\n" + Path(install_log).read_bytes()[-20000:] + b"\n")
            if Path(install_log).name.startswith("gpu-run-install."):  # gpu_run.sh's mktemp
                Path(install_log).unlink()
        if rc is None:
            inst["note"] = "no .whl/*.whl, or not started through gpu_run.sh: nothing installed"
        summary["parts"].append(inst)
        save()
        runs = [p for p in parts if p.name not in ("install", "reserve")]
        planned_end = t_start + parts[0].budget  # the install's, counted from gpu_run.sh's start
        for sig in (signal.SIGTERM, signal.SIGHUP):  # the running part is killed, the summary kept
            signal.signal(sig, _stop)
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started as a script's background job:
            # an ignored signal stays ignored in the parts, a handled one is reset to the default,
            # so an overrunning part gets its SIGINT (and writes what it has) instead of SIGKILL
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            _run_parts(runs, args, planned_end, deadline, t_smi, smi, env, scratch, out, log, log_path,
                       summary, save)  # fmt: skip
        except (Stopped, KeyboardInterrupt) as e:
            running = [r["name"] for r in summary["parts"] if r.get("stopped")]
            summary["stopped"] = (f"gpu_run was stopped ({type(e).__name__} {e}) during "
                                  f"{running[0] if running else 'a part'}; what ran is kept")  # fmt: skip
            print(summary["stopped"], flush=True)
        finally:  # the summary's last save and the clean-up are not interrupted
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
    save()
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'part':13s} {'budget':>6s} {'limit':>6s} {'seconds':>8s} {'exit':>5s} timed_out")
    for r in summary["parts"]:
        print(f"{r['name']:13s} {r['budget_s']:6g} {r.get('limit_s', '-')!s:>6s} {r.get('seconds', '-')!s:>8s} "
              f"{r.get('exit_status')!s:>5s} {r.get('timed_out', False)}")  # fmt: skip
    if "tests" in summary:
        t = summary["tests"]
        print("tests: " + ", ".join(f"{k} {t[k]}" for k in ("collected", "passed", "failed", "errors", "skipped",
                                                           "not_run")))  # fmt: skip
    print(f"files in {out}: " + ", ".join(f"{k} ({v} B)" for k, v in summary["files"].items()))
    ok = "stopped" not in summary and all(
        r.get("exit_status") == 0 and not r.get("timed_out") and not r.get("failed_rows")
        for r in summary["parts"] if r.get("run") or r["name"] != "install")  # a part left out counts too
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
