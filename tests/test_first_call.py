"""benchmarks/first_call.py: its child process runs every step and reports times (no timing is
asserted; the cold/warm comparison itself is a benchmark, run by hand)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from _helpers import SUBPROCESS_TIMEOUT, benchmark_script

ROOT = Path(__file__).resolve().parents[1]


def test_child_times_import_and_every_step():
    with benchmark_script("first_call") as fc:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(s for s in (str(ROOT), os.environ.get("PYTHONPATH")) if s)}
        got = fc._child("cpu", env, SUBPROCESS_TIMEOUT, n_cells=300)
    assert got["import"] > 0
    assert list(got["steps"]) == ["qc", "filter", "normalize", "log1p", "hvg", "scale", "pca", "neighbors"]
    assert all(first > 0 and again > 0 for first, again in got["steps"].values())


def test_rows_and_table(monkeypatch, capsys, tmp_path):
    """Two processes (cold, then warm caches) give one row per case and cache; the table pairs them."""
    with benchmark_script("first_call") as fc:
        seen_envs = []

        def child(backend, env, timeout, n_cells=2000, on_result=None):
            seen_envs.append(env)
            on_result("import", 1.0)
            on_result("step", ["qc", 2.0, 0.5])
            return {"import": 1.0, "steps": {"qc": [2.0, 0.5]}, "timed_out": False}

        monkeypatch.setattr(fc, "_child", child)
        out = tmp_path / "f.jsonl"
        assert fc.main(["--no-demo", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["case"], r["cache"]) for r in rows] == [("import", "cold"), ("qc", "cold"), ("import", "warm"),
                                                       ("qc", "warm")]  # fmt: skip
    assert rows[1]["steady_seconds"] == 0.5 and {"versions", "backend", "timestamp"} <= set(rows[0])
    assert seen_envs[0]["NUMBA_CACHE_DIR"] == seen_envs[1]["NUMBA_CACHE_DIR"]  # the warm one reuses it
    assert "qc" in capsys.readouterr().out


def test_gpu_child_runs_every_step(device, monkeypatch, capsys):
    """The child's GPU branch, in this process (through the kernel emulator where there is no
    GPU): it moves the cells to the device and runs every step (its to_gpu once worked in place
    and returned None, unseen until a GPU session)."""
    with benchmark_script("first_call") as fc:
        monkeypatch.setattr("sys.argv", ["-c", "gpu", "300"])
        exec(compile(fc.CHILD, "first_call_child", "exec"), {"__name__": "first_call_child"})
        parsed = [fc.parse_child_line(ln) for ln in capsys.readouterr().out.splitlines()]
    parsed = [x for x in parsed if x is not None]
    assert parsed[0][0] == "import" and [v[0] for k, v in parsed[1:]] == [
        "qc", "filter", "normalize", "log1p", "hvg", "scale", "pca", "neighbors"]


def test_a_child_stopped_at_its_time_keeps_what_it_measured(tmp_path, monkeypatch):
    """A cold GPU child compiles every kernel and can outlive its time: the rows it printed before
    it was stopped are written as they came (it once reported only at its end, so nothing); the
    stop is a failure (exit 1, a timed_out row), as no warm run could follow."""
    with benchmark_script("first_call") as fc:
        slow = ("import json, time\nprint('FIRST_CALL_IMPORT ' + json.dumps(0.5), flush=True)\n"
                "print('FIRST_CALL_STEP ' + json.dumps(['qc', 1.0, 0.1]), flush=True)\ntime.sleep(60)\n")
        monkeypatch.setattr(fc, "CHILD", slow)
        out = tmp_path / "f.jsonl"
        assert fc.main(["--no-demo", "--timeout", "3", "--out", str(out)]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["case"], r["cache"]) for r in rows] == [("import", "cold"), ("qc", "cold"), ("timed_out", "cold")]
    assert rows[-1]["timed_out"] is True
