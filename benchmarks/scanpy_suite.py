"""scanpy's own test suite with gpu_sc's steps swapped in: the outside check of "replace sc.pp.x
with gsc.pp.x and change nothing else" (issue 20).

    python3 benchmarks/scanpy_suite.py --out benchmarks/results/scanpy-suite-$(date +%F).json

Fetches the sdist of the installed scanpy from the package index (cached in `--cache`), and runs
the test modules that exercise our steps twice, each in its own pytest process: plain, and with
`scanpy.pp.<step>` replaced by `gpu_sc.pp.<step>` for every step we export (a pytest plugin does
it before any test module is imported, so `from scanpy.pp import x` gets ours too; scanpy's own
internal calls stay scanpy's). Only tests that pass on plain scanpy are judged; of those, the
ones whose run called one of our functions "reach" gpu_sc. Per module: reached, passed, failed,
and each failure's message. Tests that need the internet are left out (scanpy's `internet`
mark, skipped unless asked for).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

MODULES = ("test_normalization", "test_qc_metrics", "test_highly_variable_genes", "test_pca", "test_scaling",
           "test_preprocessing", "test_neighbors", "test_neighbors_key_added", "test_preprocessing_distributed",
           "test_deprecations", "test_ingest", "test_scrublet", "test_recipes", "test_rank_genes_groups",
           "test_rank_genes_groups_logreg", "test_filter_rank_genes_groups", "test_score_genes",
           "test_aggregated", "test_get", "test_dendrogram", "test_combat", "test_paga", "test_embedding",
           "test_embedding_density", "test_marker_gene_overlap", "test_clustering", "test_sim", "test_backed",
           "external/test_harmony_integrate")  # fmt: skip
#: scanpy's functions replaced by ours: `pp.x` swaps scanpy.pp.x for gpu_sc.pp.x (`tl.`, `get.`
#: alike; `experimental.pp.x` for gpu_sc.experimental.pp.x); `external.pp.x` swaps
#: scanpy.external.pp.x for gpu_sc.pp.x. A bare name means `pp.`.
STEPS = ("calculate_qc_metrics", "filter_cells", "filter_genes", "normalize_total", "log1p",
         "highly_variable_genes", "scale", "pca", "neighbors", "regress_out", "combat", "downsample_counts", "scrublet",
         "filter_genes_dispersion", "recipe_zheng17", "recipe_seurat", "recipe_weinreb17", "sample", "subsample",
         "sqrt", "normalize_per_cell", "tl.marker_gene_overlap", "tl.louvain", "tl.ingest",
         "scrublet_simulate_doublets", "tl.rank_genes_groups", "tl.score_genes", "tl.score_genes_cell_cycle",
         "tl.filter_rank_genes_groups", "tl.dendrogram", "get.aggregate", "get.rank_genes_groups_df", "get.obs_df",
         "get.var_df", "tl.umap", "tl.leiden", "tl.diffmap", "tl.dpt", "tl.paga", "tl.draw_graph", "tl.tsne",
         "tl.embedding_density",
         "tl.paga_degrees", "tl.paga_expression_entropies", "tl.paga_compare_paths", "tl.sim",
         "external.pp.harmony_integrate", "experimental.pp.highly_variable_genes",
         "experimental.pp.normalize_pearson_residuals", "experimental.pp.normalize_pearson_residuals_pca",
         "experimental.pp.recipe_pearson_residuals")  # fmt: skip

# The pytest plugin both runs load (-p gsc_suite_plugin): with GSC_SWAP=1 it swaps our steps in and
# notes which tests called them; always, it writes each test's outcome to GSC_SUITE_ROWS.
PLUGIN = r'''
import functools, json, os
_current = [None]
_rows = os.environ["GSC_SUITE_ROWS"]

def _write(row):
    with open(_rows, "a") as f:
        f.write(json.dumps(row) + "\n")

if os.environ.get("GSC_SWAP") == "1":
    import importlib, scanpy, gpu_sc
    for _step in os.environ["GSC_SUITE_STEPS"].split(","):
        _ns, _, _name = _step.rpartition(".")
        _ns = _ns or "pp"
        def _wrap(fn, name):
            @functools.wraps(fn)
            def call(*args, **kwargs):
                if _current[0] is not None:
                    _write({"event": "reached", "nodeid": _current[0], "step": name})
                return fn(*args, **kwargs)
            return call
        _ours_ns = _ns.removeprefix("external.")  # external.pp.x is our pp.x; experimental.pp.x our experimental.pp.x
        _ours = functools.reduce(getattr, [*_ours_ns.split("."), _name], gpu_sc)
        setattr(importlib.import_module("scanpy." + _ns), _name, _wrap(_ours, _step))

def pytest_runtest_setup(item):
    _current[0] = item.nodeid

def pytest_runtest_teardown(item):
    _current[0] = None

def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        row = {"event": "test", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
        if report.failed:
            row["message"] = str(report.longrepr).strip().splitlines()[-1][:300] if report.longrepr else ""
        _write(row)
'''


def fetch(version: str, cache: Path) -> Path:
    """The extracted sdist of scanpy `version` (downloaded once into `cache`)."""
    root = cache / f"scanpy-{version}"
    if (root / "tests").is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"scanpy=={version}", "-d", str(cache)], check=True)  # fmt: skip
    with tarfile.open(cache / f"scanpy-{version}.tar.gz") as tar:
        tar.extractall(cache, filter="data")
    return root


def run_module(root: Path, module: str, *, swap: bool, work: Path, timeout: float) -> tuple[dict, set, float]:
    """({nodeid: (outcome, message)}, nodeids that reached gpu_sc, seconds) of one module."""
    rows = work / f"{module}-{'swap' if swap else 'plain'}.jsonl"
    rows.unlink(missing_ok=True)
    path = os.pathsep.join([str(work), str(work / "testing_path"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "GSC_SUITE_ROWS": str(rows), "GSC_SWAP": "1" if swap else "0",
           "GSC_SUITE_STEPS": ",".join(STEPS), "MPLBACKEND": "agg", "PYTHONPATH": path}  # fmt: skip
    t0 = time.perf_counter()
    with contextlib.suppress(subprocess.TimeoutExpired):  # the rows written so far count; the rest did not run
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gsc_suite_plugin",
                        "--no-header", f"tests/{module}.py"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
    outcomes, reached = {}, set()
    if rows.exists():
        for line in rows.read_text().splitlines():
            r = json.loads(line)
            if r["event"] == "reached":
                reached.add(r["nodeid"])
            elif r["outcome"] != "passed" or r["nodeid"] not in outcomes:
                outcomes[r["nodeid"]] = (r["outcome"], r.get("message", ""))
    return outcomes, reached, time.perf_counter() - t0


def judge(plain: dict, swapped: dict, reached: set) -> dict:
    """Per module: tests passing on plain scanpy that reached gpu_sc, how many of those pass."""
    judged = [n for n, (o, _) in plain.items() if o == "passed" and n in reached]
    failed = {}
    for n in judged:
        outcome, message = swapped.get(n, ("not run", ""))
        if outcome != "passed":
            failed[n] = message or outcome
    return {"tests": len(plain), "plain_passed": sum(o == "passed" for o, _ in plain.values()),
            "reached": len(judged), "passed": len(judged) - len(failed), "failed": len(failed),
            "failures": failed}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", default=",".join(MODULES), help="scanpy test modules, comma-separated")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "gpu_sc" / "scanpy-sdist")
    p.add_argument("--timeout", type=float, default=900, help="seconds per module and run")
    p.add_argument("--out", type=Path, help="write the summary JSON here")
    args = p.parse_args(argv)
    version = metadata.version("scanpy")
    root = fetch(version, args.cache)
    summary = {"scanpy": version, "gpu_sc": metadata.version("gpu_sc"), "steps": list(STEPS), "modules": {},
               "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gsc-suite-") as tmp:
        work = Path(tmp)
        (work / "gsc_suite_plugin.py").write_text(PLUGIN)
        (work / "testing_path").mkdir()
        (work / "testing_path" / "testing").symlink_to(root / "src" / "testing")  # scanpy's test helpers
        for module in [m for m in args.modules.split(",") if m]:
            if not (root / "tests" / f"{module}.py").is_file():
                summary["modules"][module] = {"error": "not in this scanpy's tests"}
                continue
            print(f"{module}: plain ...", file=sys.stderr, flush=True)
            plain, _, t_plain = run_module(root, module, swap=False, work=work, timeout=args.timeout)
            print(f"{module}: gpu_sc swapped in ...", file=sys.stderr, flush=True)
            swapped, reached, t_swap = run_module(root, module, swap=True, work=work, timeout=args.timeout)
            summary["modules"][module] = {**judge(plain, swapped, reached), "seconds": [round(t_plain, 1),
                                                                                       round(t_swap, 1)]}  # fmt: skip
            m = summary["modules"][module]
            print(f"{module}: {m['reached']} reached gpu_sc, {m['passed']} passed, {m['failed']} failed", flush=True)
    total = {k: sum(m.get(k, 0) for m in summary["modules"].values()) for k in ("reached", "passed", "failed")}
    summary["total"] = total
    print(f"total: {total['reached']} reached gpu_sc, {total['passed']} passed, {total['failed']} failed")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
