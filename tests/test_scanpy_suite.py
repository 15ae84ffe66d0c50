"""benchmarks/scanpy_suite.py's machinery (the full run fetches scanpy's sdist and takes long:
a documented command, results in benchmarks/results/): the plugin swaps our steps into
scanpy.pp and notes the tests that reach them; only tests passing on plain scanpy are judged."""

from __future__ import annotations

import os
import subprocess
import sys

from _helpers import SUBPROCESS_TIMEOUT, benchmark_script

FAKE = '''
import numpy as np
import scanpy as sc
from scanpy.pp import log1p

def test_reaches():
    x = np.ones((2, 2), np.float32)
    assert sc.pp.log1p(x) is not None and log1p(x) is not None
    assert sc.pp.log1p.__wrapped__.__module__.startswith(EXPECTED)

def test_does_not_reach():
    assert 1 + 1 == 2
'''


def test_plugin_swaps_and_records(tmp_path):
    with benchmark_script("scanpy_suite") as suite:
        (tmp_path / "gsc_suite_plugin.py").write_text(suite.PLUGIN)
        results = {}
        for swap in (False, True):
            test = tmp_path / f"test_fake_{int(swap)}.py"
            expected = "gpu_sc" if swap else "scanpy"
            body = FAKE.replace("EXPECTED", repr(expected))
            if not swap:  # scanpy's own function has no __wrapped__
                body = body.replace("sc.pp.log1p.__wrapped__.__module__", "sc.pp.log1p.__module__")
            test.write_text(body)
            rows = tmp_path / f"rows{int(swap)}.jsonl"
            env = {**os.environ, "GSC_SUITE_ROWS": str(rows), "GSC_SWAP": str(int(swap)), "GSC_SUITE_STEPS": "log1p",
                   "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gsc_suite_plugin", str(test)], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
            results[swap] = rows.read_text()
        assert '"reached"' not in results[False] and results[True].count('"reached"') == 2
        plain = {"a": ("passed", ""), "b": ("passed", ""), "c": ("failed", "x")}
        swapped = {"a": ("passed", ""), "b": ("failed", "AssertionError: no"), "c": ("failed", "x")}
        got = suite.judge(plain, swapped, {"a", "b", "c"})
        assert (got["reached"], got["passed"], got["failed"]) == (2, 1, 1)  # c fails on plain scanpy: not judged
        assert got["failures"] == {"b": "AssertionError: no"}


SWAPPED = '''
import scanpy as sc
import scanpy.external
import gpu_sc

def test_each_step_is_ours():
    assert sc.experimental.pp.highly_variable_genes.__wrapped__ is gpu_sc.experimental.pp.highly_variable_genes
    assert sc.external.pp.harmony_integrate.__wrapped__ is gpu_sc.pp.harmony_integrate
    assert sc.tl.umap.__wrapped__ is gpu_sc.tl.umap and sc.get.aggregate.__wrapped__ is gpu_sc.get.aggregate
    assert sc.pp.highly_variable_genes.__wrapped__ is gpu_sc.pp.highly_variable_genes
'''


def test_plugin_swaps_each_namespace_for_ours(tmp_path):
    """Every entry of STEPS is swapped for our function of that namespace: an experimental.pp step
    was swapped for our pp function of its name (pp.highly_variable_genes for the Pearson one)."""
    with benchmark_script("scanpy_suite") as suite:
        (tmp_path / "gsc_suite_plugin.py").write_text(suite.PLUGIN)
        (tmp_path / "test_swapped.py").write_text(SWAPPED)
        env = {**os.environ, "GSC_SUITE_ROWS": str(tmp_path / "rows.jsonl"), "GSC_SWAP": "1",
               "GSC_SUITE_STEPS": ",".join(suite.STEPS),
               "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gsc_suite_plugin", "test_swapped.py"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
