"""The benchmark commands run and write well-formed output (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_and_plot(tmp_path):
    out = tmp_path / "b.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--dataset", "pbmc68k_reduced",
           "--n-cells", "400", "--steps", "normalize,log1p,pca", "--backend", "cpu,gpu",
           "--repeats", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows if r["backend"] == "cpu"] == ["normalize", "log1p", "pca"]
    for r in rows:
        assert r["n_cells"] == 400 and r["seconds"] > 0 and r["reference_seconds"] > 0
        assert {"device", "nnz", "ratio", "reference", "versions"} <= set(r)
    png = tmp_path / "b.png"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot.py"), str(out), "-o", str(png)],
                   check=True, capture_output=True)  # fmt: skip
    assert png.stat().st_size > 1000


def test_unknown_step_is_refused():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--steps", "nonsense"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown steps" in r.stderr
