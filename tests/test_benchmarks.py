"""The benchmark commands run and write well-formed output (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import SUBPROCESS_TIMEOUT
from _helpers import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
PLOT = ROOT / "benchmarks" / "plot.py"

try:  # the benchmarks time gsc.pp; without it there is nothing to run
    import gpu_sc.preprocessing  # noqa: F401
except ImportError:
    pytest.skip("gpu_sc.pp is not importable", allow_module_level=True)

KEYS = {"step", "backend", "device", "n_cells", "n_genes", "nnz", "seconds", "reference",
        "reference_seconds", "ratio", "versions", "timestamp"}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_cpu_writes_json_lines(tmp_path):
    out = tmp_path / "b.jsonl"
    cmd = [sys.executable, str(RUN), "--dataset", "mouse_brain_10k", "--n-cells", "2000", "--steps", "filter,normalize,log1p",
           "--backend", "cpu", "--repeats", "1", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "[3/3] log1p cpu" in r.stderr and "ratio" in r.stdout
    rows = _rows(out)
    assert [row["step"] for row in rows] == ["filter", "normalize", "log1p"]
    for row in rows:
        assert set(row) >= KEYS
        assert row["backend"] == "cpu" and row["reference"] == "scanpy"
        assert row["n_cells"] == 2000 and row["n_genes"] == 1000 and row["nnz"] > 0
        assert row["seconds"] > 0 and row["reference_seconds"] > 0
        assert row["ratio"] == pytest.approx(row["reference_seconds"] / row["seconds"])
        assert {"gpu_sc", "scanpy", "numpy", "python"} <= set(row["versions"])
        assert row["peak_rss_mib"] >= 0 and row["reference_peak_rss_mib"] >= 0
    subprocess.run(cmd, check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    assert len(_rows(out)) == 6  # appended, not overwritten


def test_run_and_plot(tmp_path):
    out = tmp_path / "b.jsonl"
    cmd = [sys.executable, str(RUN), "--dataset", "pbmc68k_reduced", "--n-cells", "400",
           "--steps", "qc,pca,neighbors_exact,leiden", "--backend", "cpu,gpu", "--repeats", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    rows = _rows(out)
    assert [r["step"] for r in rows if r["backend"] == "cpu"] == ["qc", "pca", "neighbors_exact", "leiden"]
    for r in rows:
        assert r["n_cells"] == 400 and r["seconds"] > 0 and r["reference_seconds"] > 0
        assert set(r) >= KEYS
    png = tmp_path / "b.png"
    subprocess.run([sys.executable, str(PLOT), str(out), "-o", str(png)], check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(("args", "message"), [(["--steps", "nonsense"], "unknown steps"),
                                                (["--backend", "tpu"], "unknown backend")])  # fmt: skip
def test_bad_arguments_are_refused(args, message):
    r = subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 2 and message in r.stderr


@pytest.fixture
def bench():
    with benchmark_script("run") as module:
        yield module


def test_failures_are_recorded_not_fatal(bench):
    def boom(a):
        raise ValueError("cannot")

    runs = []
    (ours, err, mem), (ref, ref_err, ref_mem) = bench._measure([lambda a: None, boom], lambda: object(), repeats=3,
                                                               runs=runs)  # fmt: skip
    assert ours > 0 and err is None and ref is None and ref_err == "ValueError: cannot"
    assert mem >= 0 and ref_mem is None
    # every repeat's seconds beside the median: the spread a benchmark shows
    assert len(runs) == 2 and len(runs[0]) == 3 and min(runs[0]) <= ours <= max(runs[0]) and runs[1] is None
    row = bench._row("qc", "cpu", "x", ours, err, "scanpy", ref, ref_err, {}, runs=tuple(runs))
    assert row["seconds_runs"] == [round(t, 6) for t in runs[0]] and "reference_seconds_runs" not in row


def test_failed_rows_print_and_plot(bench, tmp_path, capsys):
    row = bench._row("pca", "cpu", "x", 0.5, None, "scanpy", None, "ValueError: no", {"n_cells": 9})
    assert row["ratio"] is None and row["reference_error"] == "ValueError: no"
    bench._print_row(row)
    assert "reference_error: ValueError: no" in capsys.readouterr().out
    good = bench._row("log1p", "cpu", "x", 0.5, None, "scanpy", 1.0, None, {"n_cells": 9},
                      runs=([0.4, 0.5, 0.7], [0.9, 1.0, 1.3]))  # drawn as min-max bars
    assert good["ratio"] == 2.0 and "reference_error" not in good
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text(json.dumps(row) + "\n" + json.dumps(good) + "\n")
    subprocess.run([sys.executable, str(PLOT), str(jsonl)], check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT)
    assert jsonl.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize("chunk_rows", [None, 120], ids=["in-memory", "dask"])
def test_gpu_rows_every_step(bench, device, monkeypatch, chunk_rows):
    """Every step's GPU row, in memory and on Dask blocks, on the device fixture (the kernel
    emulator in CI), with no rapids-singlecell: timed against the bandwidth bound, no error."""
    import argparse

    import cupy as cp

    monkeypatch.setattr(bench, "_gpu_tools", lambda: (cp, lambda: None, "Stand-in GPU", 1e12))
    monkeypatch.setitem(sys.modules, "rapids_singlecell", None)  # import fails
    steps = "qc,filter,normalize,log1p,hvg,scale,pca,neighbors,neighbors_exact"
    args = argparse.Namespace(dataset="pbmc68k_reduced", n_cells=300, steps=steps, backend="gpu",
                              chunk_rows=chunk_rows, repeats=1, seed=0, touch_memory=0)  # fmt: skip
    rows = bench.run(args, lambda r: None)
    assert [r["step"] for r in rows] == steps.split(",")
    for r in rows:
        assert "error" not in r and r["reference"] == "bandwidth-bound" and r["seconds"] > 0, r


def test_gpu_rows_with_stand_ins(bench, device, monkeypatch):
    """The GPU branch run on the CPU: our steps on the device fixture (a GPU, or the kernel
    emulator's stand-in CuPy), against a stand-in older rapids-singlecell (its qc_var /
    min_count filter spelling)."""
    import argparse
    import types

    import cupy as cp
    import scanpy as sc

    import gpu_sc as gsc

    monkeypatch.setattr(bench, "_gpu_tools", lambda: (cp, lambda: None, "Stand-in GPU", 1e12))
    calls = []

    def qc(adata, *, expr_type="counts", var_type="genes", qc_vars=None, log1p=True, layer=None):
        sc.pp.calculate_qc_metrics(adata, percent_top=None, log1p=log1p, inplace=True)

    def filter_cells(adata, *, qc_var, min_count=None, max_count=None, verbose=True):
        calls.append((qc_var, min_count))
        sc.pp.filter_cells(adata, min_genes=min_count)

    def filter_genes(adata, *, qc_var="n_cells_by_counts", min_count=None, max_count=None, verbose=True):
        calls.append((qc_var, min_count))
        sc.pp.filter_genes(adata, min_cells=min_count)

    pp = types.SimpleNamespace(calculate_qc_metrics=qc, filter_cells=filter_cells, filter_genes=filter_genes,
                               log1p=sc.pp.log1p)  # fmt: skip
    # its anndata_to_GPU takes the GPU input back to the host, where the stand-in's scanpy runs
    rsc = types.SimpleNamespace(pp=pp, get=types.SimpleNamespace(anndata_to_GPU=lambda a: gsc.get.to_cpu(a)))
    monkeypatch.setitem(sys.modules, "rapids_singlecell", rsc)
    args = argparse.Namespace(dataset="pbmc68k_reduced", n_cells=300, steps="qc,filter,log1p", backend="gpu", chunk_rows=None, touch_memory=0,
                              repeats=1, seed=0)  # fmt: skip
    emitted = []
    rows = bench.run(args, emitted.append)
    assert rows == emitted
    assert [(r["step"], r["reference"]) for r in rows] == [
        (s, ref) for s in ("qc", "filter", "log1p") for ref in ("bandwidth-bound", "rapids-singlecell")
    ]
    for r in rows:
        assert r["backend"] == "gpu" and r["device"] == "Stand-in GPU" and "error" not in r
        assert r["seconds"] > 0 and r["reference_seconds"] > 0 and r["ratio"] > 0
    assert {r["step"] for r in rows if "note" in r} == {"qc", "filter"}
    min_genes = rows[0]["params"]["min_genes"]
    assert ("n_genes_by_counts", min_genes) in calls and ("n_cells_by_counts", 3) in calls


def test_aggregate_benchmark_smoke(tmp_path):
    """benchmarks/aggregate.py on the bundled pbmc4k: a row per data kind and func set, each
    identical to scanpy's; a row per marker-gene method, with scanpy's top 100."""
    out = tmp_path / "agg.jsonl"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "aggregate.py"
    subprocess.run([sys.executable, str(script), "--cells", "300", "--groups", "4", "--repeats", "1",
                    "--out", str(out)], check=True, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    agg = [r for r in rows if r["step"] == "aggregate"]
    assert len(agg) == 6 and {r["data"] for r in agg} == {"counts", "log"}
    assert all(r["identical_to_scanpy"] and r["seconds_gpu_sc"] > 0 and "bundled" in r["source"] for r in agg)
    markers = [r for r in rows if r["step"] == "rank_genes_groups"]
    assert [r["method"] for r in markers] == ["t-test", "wilcoxon"]
    assert all(r["top100_identical_to_scanpy"] and r["seconds_scanpy"] > 0 for r in markers)


def test_warm_up_on_first_cells_with_their_own_graph(bench):
    """A slow step warms up on its first cells, re-graphed (cut from the full graph, their
    neighbours would be missing), and is then timed on the whole input."""
    import anndata as ad
    import numpy as np

    import gpu_sc as gsc

    rng = np.random.default_rng(0)
    full = ad.AnnData(np.zeros((120, 60), dtype=np.float32), obsm={"X_pca": rng.normal(size=(120, 8)).astype(np.float32)})
    gsc.pp.neighbors(full, n_neighbors=15)
    seen = []

    def step(a):
        g = a.obsp["connectivities"]
        seen.append((a.n_obs, g.shape[0], int((g.getnnz(axis=1) >= 14).sum())))

    bench._measure([step], full.copy, repeats=1, warm_up_cells=40)
    assert seen == [(40, 40, 40), (120, 120, 120)]


def test_pool_cells_draws_the_same_rows_on_both_backends(bench, device, monkeypatch):
    """--pool-cells: the pool resampled once, --n-cells rows drawn from it with replacement, on
    the host for the CPU rows and on the device for the GPU rows (the same rows: one generator),
    each backend preparing its own inputs."""
    import argparse

    import cupy as cp

    import gpu_sc as gsc

    monkeypatch.setattr(bench, "_gpu_tools", lambda: (cp, lambda: None, "Stand-in GPU", 1e12))
    monkeypatch.setitem(sys.modules, "rapids_singlecell", None)
    pool = gsc.datasets.resample(gsc.datasets.pbmc68k_reduced(), 100, seed=0)
    host = bench._drawn(pool, 300, 0)
    dev = bench._drawn(gsc.get.to_gpu(pool, copy=True), 300, 0)
    assert host.n_obs == 300 and (dev.X.get() != host.X).nnz == 0
    assert host.obs["source_cell"].nunique() <= 100 and list(host.obs_names[:2]) == ["cell_0", "cell_1"]
    args = argparse.Namespace(dataset="pbmc68k_reduced", n_cells=300, pool_cells=100, steps="qc,pca",
                              backend="cpu,gpu", chunk_rows=None, repeats=1, seed=0, touch_memory=0)  # fmt: skip
    rows = bench.run(args, lambda r: None)
    assert [(r["step"], r["backend"]) for r in rows] == [("qc", "cpu"), ("qc", "gpu"), ("pca", "cpu"), ("pca", "gpu")]
    for r in rows:
        assert "error" not in r and r["n_cells"] == 300 and r["pool_cells"] == 100 and r["nnz"] == host.X.nnz, r


def test_scanpy_swap_key_by_key(tmp_path):
    """benchmarks/scanpy_swap.py on the bundled pbmc68k: scanpy's tutorial workflow with gpu_sc
    swapped in gives scanpy's AnnData after every step (keys, key order, dtypes, values), given
    the same input; only PCA differs, at solver tolerance (float64 against scanpy's float32
    ARPACK), and what follows it in the chain carries that. The diff itself sees a key order,
    a dtype and a value."""
    import anndata as ad
    import numpy as np

    out = tmp_path / "swap.jsonl"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scanpy_swap.py"
    with benchmark_script("scanpy_swap") as swap:
        steps = [name for name, _ in swap.STEPS if name != "umap"]  # umap: scanpy's own code
        subprocess.run([sys.executable, str(script), "--dataset", "pbmc68k_reduced", "--min-genes", "50",
                        "--steps", ",".join(steps), "--out", str(out)],
                       check=True, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["step"] for r in rows] == steps
        for r in rows:
            assert r["errors"] == {"scanpy": None, "gpu_sc": None}, r["step"]
            own = r["same_input_differences"]
            assert r["inputs_identical"] <= (own == r["chain_differences"]), r["step"]
            if r["step"] == "pca":
                assert own and all(d.startswith(("obsm['X_pca']", "varm['PCs']")) for d in own)
                assert max(float(d.rsplit("rel ", 1)[1]) for d in own) < 1e-3
            else:
                assert own == [], r["step"]
            if steps.index(r["step"]) < steps.index("pca"):
                assert r["inputs_identical"] or r["chain_n_differences"] == 0, r["step"]
        # counts from a file of one's own: the same workflow
        swap._counts("pbmc68k_reduced")[:300].copy().write_h5ad(tmp_path / "own.h5ad")
        subprocess.run([sys.executable, str(script), "--dataset", str(tmp_path / "own.h5ad"), "--min-genes", "50",
                        "--steps", "calculate_qc_metrics,filter_cells", "--out", str(tmp_path / "own.jsonl")],
                       check=True, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
        own_rows = [json.loads(line) for line in (tmp_path / "own.jsonl").read_text().splitlines()]
        assert [(r["step"], r["same_input_n_differences"]) for r in own_rows] == [
            ("calculate_qc_metrics", 0), ("filter_cells", 0)]
        assert own_rows[0]["dataset"] == str(tmp_path / "own.h5ad")
        a = ad.AnnData(np.ones((3, 2), np.float32), uns={"p": {"x": 1, "y": 2.0}})
        b = a.copy()
        b.uns["p"] = {"y": 2.0, "x": 1}
        b.obs["n"] = np.arange(3)
        a.obs["n"] = np.arange(3, dtype=np.int32)
        b.X[0, 0] = 1.5
        found = swap.anndata_diff(a, b, 1e-5)
        assert any("dtype int32 vs int64" in d for d in found) and any("keys ['x', 'y'] vs ['y', 'x']" in d for d in found)
        assert any(d.startswith("X: 1 of 6 values") for d in found)
