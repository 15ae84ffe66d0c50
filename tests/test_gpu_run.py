"""benchmarks/gpu_run.sh and gpu_run.py, the one command of a GPU session, run here as a dry run
(`--small`: tiny sizes, two tests; without a GPU the GPU rows are skipped) so that it cannot break
unseen before the next session on a GPU machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import SUBPROCESS_TIMEOUT, benchmark_script

ROOT = Path(__file__).resolve().parents[1]
SH = ROOT / "benchmarks" / "gpu_run.sh"


@pytest.fixture(scope="module")
def gr():
    with benchmark_script("gpu_run") as module:
        yield module


def _run(out: Path, *args: str, wheels: Path, sigint_ignored: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_RUN_")}
    env["GPU_RUN_WHEELS"] = str(wheels)  # never the checkout's .whl/ here
    # `trap "" INT`: SIGINT ignored, as in a background job that a script starts
    cmd = ["bash", "-c", 'trap "" INT; exec bash "$@"', "bash"] if sigint_ignored else ["bash"]
    return subprocess.run([*cmd, str(SH), str(out), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=SUBPROCESS_TIMEOUT, check=False)  # fmt: skip


def _summary(out: Path) -> dict:
    (path,) = out.glob("gpu-run-*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The whole session with --small, through gpu_run.sh, into an empty folder."""
    out = tmp_path_factory.mktemp("gpu_out")
    r = _run(out, "--small", wheels=tmp_path_factory.mktemp("no_wheels"))
    return out, r


def _assert_gone(pid: int) -> None:
    """The process `pid` (a part's child) has ended: gone or a zombie."""
    time.sleep(0.5)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X"), f"the part's child {pid} survived ({state})"


def test_dry_run_writes_every_part(dry_run, gr):
    out, r = dry_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = _summary(out)
    assert [p["name"] for p in s["parts"]] == ["install", "setup", *(p for p in gr.PARTS if gr.SMALL_BUDGETS[p])]
    assert s["parts"][0]["run"] is False  # no wheels: nothing installed
    for p in s["parts"][1:]:
        assert p["run"] and p["exit_status"] == 0 and p["timed_out"] is False, p
        assert 0 < p["seconds"] <= p["limit_s"] and p["budget_s"] == gr.SMALL_BUDGETS[p["name"]]
    assert s["versions"]["gpu_sc"] and s["versions"]["numpy"] and "cuda_runtime" in s
    planned = {k: v for k, v in gr.SMALL_BUDGETS.items() if v}
    assert s["budget"] == planned and s["total_budget_s"] == gr.TOTAL_S
    # the tests part: its plugin wrote one row per test; counts from them
    t = s["tests"]
    assert t["collected"] == 9 and t["passed"] == 1 and t["skipped"] == 8 and t["failed"] == 0
    assert t["finished"] and t["not_run"] == 0
    by_name = {p["name"]: p for p in s["parts"]}
    assert by_name["tests"]["outputs"] == [f for f in s["files"] if f.startswith("gpu-tests-")]
    # PIC validation and scale rows on the CPU (GPU rows skipped without a GPU)
    for name in ("pic-validate", "pic-scale"):
        (f,) = by_name[name]["outputs"]
        rows = [json.loads(line) for line in (out / f).read_text().splitlines()]
        assert rows and by_name[name]["rows"][f] == len(rows)
        assert {row["backend"] for row in rows} <= {"cpu", "cpu-1thread"}
    log = (out / next(f for f in s["files"] if f.endswith(".log"))).read_text()
    assert "gpu backend skipped" in log and "==== pic-scale: exit 0" in log


def test_dry_run_files_fit_the_device_tool(dry_run, gr):
    out, _ = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir())  # flat
    gr.check_files(files)  # <= 8 names of the allowed characters
    assert files == sorted(_summary(out)["files"])
    assert all((out / f).stat().st_size <= gr.MAX_FILE_BYTES for f in files)
    dev, date = re.match(r"gpu-run-(.+)-(\d{4}-\d\d-\d\d)\.json$", next(f for f in files if f.endswith(".json"))).groups()
    assert dev == "nogpu" or dev in _summary(out)["device"]["name"].lower()
    assert f"gpu-{dev}-2k-{date}.jsonl" in _summary(out)["parts"][3]["command"]


def test_overrun_is_stopped_and_later_parts_still_run(tmp_path):
    """A part past its limit is interrupted, then killed with what it started (even where both
    ignore SIGINT), marked timed_out, and the parts after it run; a failed install is recorded
    (a bad wheel: the whole install, then each wheel alone, fail). Install and setup get small
    budgets here, as what they leave goes to the parts after them."""
    pids = tmp_path / "pids"
    ignore = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN)"
    sleeper = (f"{ignore}; import subprocess, sys; "
               f"c = subprocess.Popen([sys.executable, '-c', '{ignore}; time.sleep(300)']); "
               f"open('{pids}', 'w').write(str(c.pid)); time.sleep(300)")  # fmt: skip
    py = sys.executable
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("bogus", "zarr"):  # zarr, needed, is tried first in the one-by-one fallback
        (wheels / f"{name}-0.0-py3-none-any.whl").write_bytes(b"not a zip")
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = _run(out, "--budget", "install=0", "--budget", "setup=2", "--budget", "tests=8", "--replace", f"setup={py} -c pass",
             "--replace", f"tests={py} -c \"{sleeper}\"", "--replace", f"bench={py} -c \"print('bench ran')\"",
             "--replace", f"pic-validate={py} -c \"import sys; sys.exit(3)\"",
             "--replace", f"pic-scale={py} -c \"print('scale ran')\"", wheels=wheels)  # fmt: skip
    assert time.monotonic() - t0 < 60, r.stdout
    assert r.returncode == 1, r.stdout + r.stderr
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert s["install"]["run"] and s["install"]["exit_status"] not in (0, None)
    log = next(out.glob("gpu-run-*.log")).read_text()
    tried = re.findall(r"failed: \S+/(\w+)-0\.0", log)
    assert tried == ["zarr", "bogus"], log[-2000:]
    assert s["tests"]["timed_out"] and 1 <= s["tests"]["limit_s"] <= 10
    assert s["tests"]["seconds"] < s["tests"]["limit_s"] + 2 + 3
    assert s["tests"]["exit_status"] == -9  # SIGINT ignored: SIGKILL
    _assert_gone(int(pids.read_text()))
    assert s["bench"]["exit_status"] == 0 and not s["bench"]["timed_out"] and "bench ran" in s["bench"]["tail"]
    assert s["pic-validate"]["exit_status"] == 3
    assert s["pic-scale"]["exit_status"] == 0 and "scale ran" in s["pic-scale"]["tail"]
    # nothing left over from the overrun: the bench's own budget less what the overrun's stop took
    assert s["bench"]["budget_s"] - 8 <= s["bench"]["limit_s"] <= s["bench"]["budget_s"]


def test_overrun_gets_sigint_where_gpu_run_was_started_ignoring_it(tmp_path):
    """Started with SIGINT ignored (a background job of a script), gpu_run's parts would inherit
    that and an overrunning part would be killed without writing what it had: they get SIGINT's
    default, so Python's KeyboardInterrupt stops them cleanly."""
    mark = tmp_path / "interrupted"
    part = (f"import time\ntry:\n    time.sleep(300)\nexcept KeyboardInterrupt:\n"
            f"    open({str(mark)!r}, 'w').write('yes')\n    raise SystemExit(130)")  # fmt: skip
    script = tmp_path / "part.py"
    script.write_text(part)
    py = sys.executable
    out = tmp_path / "out"
    r = _run(out, "--budget", "install=0", "--budget", "setup=2", "--budget", "tests=4", "--replace",
             f"setup={py} -c pass", "--replace", f"tests={py} {script}", *(f"--replace={p}={py} -c pass" for p in
             ("bench", "first-call", "pic-validate", "pic-scale")), wheels=tmp_path, sigint_ignored=True)  # fmt: skip
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert s["tests"]["timed_out"] and s["tests"]["exit_status"] == 130, (s["tests"], r.stdout[-2000:])
    assert mark.read_text() == "yes"


def test_budget_table_adds_up(gr, tmp_path, capsys):
    assert sum(gr.BUDGETS.values()) <= gr.TOTAL_S and sum(gr.SMALL_BUDGETS.values()) <= gr.TOTAL_S
    assert set(gr.BUDGETS) == {"install", "setup", *gr.PARTS, "reserve"}
    assert gr.main([str(tmp_path), "--plan"]) == 0
    table = capsys.readouterr().out
    assert re.search(rf"^sum +{sum(gr.BUDGETS.values()):g}  of at most {gr.TOTAL_S:g} s$", table, flags=re.M)
    assert "--dataset pbmc4k_half --n-cells 1000000 --pool-cells 100000" in table  # full width
    assert f"--steps {gr.BENCH_STEPS} " in table and gr.BENCH_STEPS.endswith(",neighbors,pearson_hvg")
    assert gr.main([str(tmp_path), "--plan", "--budget", "bench=400"]) == 2  # refused: over the total
    assert gr.main([str(tmp_path), "--plan", "--budget", "bench=10", "--total", "450"]) == 0
    parts = [gr.Part("a", 300, ""), gr.Part("b", 241, "")]
    with pytest.raises(ValueError, match="541 s, more than the total of 540 s"):
        gr.check_budgets(parts, 540)
    gr.check_budgets(parts[:1], 540)
    assert not list(tmp_path.iterdir())  # --plan writes nothing


def test_install_budget_matches_the_wrapper(gr):
    (install_s,) = re.findall(r"^install_s=(\d+)", SH.read_text(), flags=re.M)
    assert int(install_s) == gr.INSTALL_S == gr.BUDGETS["install"]


def test_file_limits(gr, tmp_path):
    with pytest.raises(ValueError, match="at most 8"):
        gr.check_files([f"f{i}.jsonl" for i in range(9)])
    for bad in ("sub/f.json", "f g.json", "f\u00e9.json"):
        with pytest.raises(ValueError, match="would not return"):
            gr.check_files([bad])
    gr.check_files([f"f{i}.jsonl" for i in range(8)])
    assert gr.slug("NVIDIA H200") == "h200" and gr.slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gr.slug(None) == "nogpu"


def test_test_counts_from_partial_rows(gr, tmp_path):
    """A tests part stopped at its budget: counts from the rows it left, the rest not_run."""
    p = tmp_path / "t.jsonl"
    rows = [{"event": "collected", "n": 6},
            {"event": "test", "nodeid": "a", "when": "call", "outcome": "passed", "duration": 0.1},
            {"event": "test", "nodeid": "b", "when": "call", "outcome": "failed", "duration": 0.1, "longrepr": "E x"},
            {"event": "test", "nodeid": "c", "when": "setup", "outcome": "skipped", "duration": 0.0},
            {"event": "test", "nodeid": "d", "when": "setup", "outcome": "failed", "duration": 0.0, "longrepr": "E y"}]  # fmt: skip
    p.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"event": "te')  # cut by the kill
    c = gr.count_tests(p)
    assert (c["collected"], c["passed"], c["failed"], c["errors"], c["skipped"], c["not_run"]) == (6, 1, 1, 1, 1, 2)
    assert not c["finished"] and [f["nodeid"] for f in c["failures"]] == ["b", "d"]


def test_plugin_counts_each_test_once_under_xdist(gr, tmp_path):
    """With pytest-xdist (the tests part's workers on the GPU machine) the workers collect and the
    controller receives their reports: each test is counted once, none is left not_run."""
    pytest.importorskip("xdist")
    (tmp_path / "test_three.py").write_text(
        "import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    assert False\n\n"
        "@pytest.mark.skip\ndef test_c():\n    pass\n")
    rows = tmp_path / "rows.jsonl"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")},  # a session of its own
           "GPU_RUN_TESTS_JSONL": str(rows),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "gpu_run", "-n", "2", "-p", "no:cacheprovider",
                    "--rootdir", str(tmp_path), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                   timeout=SUBPROCESS_TIMEOUT, check=False)  # fmt: skip
    c = gr.count_tests(rows)
    assert (c["collected"], c["passed"], c["failed"], c["skipped"], c["not_run"], c["finished"]) == (3, 1, 1, 1, 0, True)


def test_readme_table_is_the_scripts(gr):
    """benchmarks/README.md's budget table says what the script does: the same parts, budgets and
    bench steps (it had fallen behind a re-sizing once)."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (\d+) \|", text, flags=re.M))
    assert {k: int(v) for k, v in rows.items()} == gr.BUDGETS
    assert f"--steps {gr.BENCH_STEPS} " in text


def test_time_install_and_setup_leave_goes_to_the_parts(tmp_path):
    """The install's budget is spent before Python starts and setup's is seldom used up; what they
    leave goes to the first part (it was dropped: 65 s of a real session)."""
    py = sys.executable
    out = tmp_path / "out"
    r = _run(out, "--parts", "tests", "--budget", "tests=5", "--replace", f"setup={py} -c pass",
             "--replace", f"tests={py} -c \"print('ok')\"", wheels=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert 5 + 60 < s["tests"]["limit_s"] <= 5 + 60 + 20  # its 5 s, install's 60 and most of setup's 20


def test_core_imports_missing_stops_the_session(tmp_path):
    """Setup finds that numpy, scipy, anndata or gpu_sc cannot be imported (a bad wheel set): the
    parts are not started, so the device time is left for a corrected rerun."""
    py = sys.executable
    out = tmp_path / "out"
    fake = ("import json, os; json.dump({'versions': {'numpy': '2', 'scipy': None, 'anndata': '0.12', "
            "'gpu_sc': '0.1'}, 'import_errors': {'scipy': 'ModuleNotFoundError'}}, open(os.environ['GPU_RUN_ENV_JSON'], 'w'))")
    r = _run(out, "--parts", "tests,bench", "--replace", f"setup={py} -c \"{fake}\"",
             "--replace", f"tests={py} -c \"print('tests ran')\"", wheels=tmp_path)  # fmt: skip
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert not s["tests"]["run"] and "scipy, cupy cannot be imported" in s["tests"]["note"] and not s["bench"]["run"]
    assert r.returncode == 1


def test_no_usable_gpu_stops_the_session(tmp_path):
    """Every module imports but gpu_sc sees no GPU (a wheel shadowing CuPy's libraries, no
    device): the parts would only write skipped rows and exit 0, so they are not started."""
    py = sys.executable
    out = tmp_path / "out"
    fake = ("import json, os; v = dict.fromkeys(['numpy', 'scipy', 'anndata', 'gpu_sc', 'cupy'], '1'); "
            "json.dump({'versions': v, 'import_errors': {}, 'gpu_available': False, 'cuda_error': 'no device'}, "
            "open(os.environ['GPU_RUN_ENV_JSON'], 'w'))")  # fmt: skip
    r = _run(out, "--parts", "tests", "--replace", f"setup={py} -c \"{fake}\"",
             "--replace", f"tests={py} -c \"print('tests ran')\"", wheels=tmp_path)  # fmt: skip
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert not s["tests"]["run"] and "sees no usable GPU" in s["tests"]["note"] and r.returncode == 1


def test_failed_rows_fail_the_part(gr, tmp_path):
    """A part that exits 0 but whose rows record errors (a GPU step that raised) or a stopped
    child is not a success: the summary counts them and the session exits 1."""
    py = sys.executable
    out = tmp_path / "out"
    plan = _run(out, "--parts", "pic-validate", "--plan", wheels=tmp_path).stdout
    (name,) = re.findall(r"pic-gpu-[^,\s]+\.jsonl", plan.split("files in")[-1])  # the part's output
    script = tmp_path / "part.py"
    rows = [{"backend": "cpu"}, {"backend": "gpu", "error": "MemoryError: out of memory"}]
    script.write_text(f"import json\nwith open({str(out / name)!r}, 'w') as f:\n"
                      f"    f.writelines(json.dumps(r) + '\\n' for r in {rows!r})\n")  # fmt: skip
    r = _run(out, "--parts", "pic-validate", "--replace", f"setup={py} -c pass",
             "--replace", f"pic-validate={py} {script}", wheels=tmp_path)  # fmt: skip
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert s["pic-validate"]["exit_status"] == 0 and s["pic-validate"]["failed_rows"] == 1
    assert r.returncode == 1
    (tmp_path / "t.jsonl").write_text('{"case": "timed_out", "timed_out": true}\n{"case": "cold"}\nnot json\n')
    assert gr._failed_rows(tmp_path / "t.jsonl") == 1


def test_a_stopped_session_kills_the_running_part(tmp_path):
    """SIGTERM to gpu_run (the device tool's time limit) kills the running part and what it
    started (a part in a session of its own once ran on, holding the GPU and writing into the
    results) and keeps the summary."""
    pids = tmp_path / "pids"
    sleeper = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
               f"open('{pids}', 'w').write(str(c.pid)); time.sleep(300)")  # fmt: skip
    py = sys.executable
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_RUN_")}
    env["GPU_RUN_WHEELS"] = str(tmp_path)
    proc = subprocess.Popen(["bash", str(SH), str(out), "--parts", "tests", "--replace", f"setup={py} -c pass",
                             "--replace", f"tests={py} -c \"{sleeper}\""], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    for _ in range(200):
        if pids.exists() and pids.read_text():
            break
        time.sleep(0.1)
    proc.terminate()  # gpu_run.sh exec'd gpu_run.py: the same process
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    _assert_gone(int(pids.read_text()))
    summary = _summary(out)
    assert "SIGTERM" in summary["stopped"] and "during tests" in summary["stopped"]
    (tests,) = [p for p in summary["parts"] if p["name"] == "tests"]  # the running part is kept too
    assert tests["stopped"] and tests["run"] and tests["seconds"] >= 0  # (stopped as it started: 0.0)


def test_a_slow_setup_does_not_stop_the_session(tmp_path):
    """Setup stopped at its limit before it reached CuPy (CUDA's start is its slowest step)
    names no import error: the parts still run (it once cancelled them all, blaming CuPy)."""
    py = sys.executable
    out = tmp_path / "out"
    fake = ("import json, os, time; v = dict.fromkeys(['numpy', 'scipy', 'anndata', 'gpu_sc'], '1'); "
            "json.dump({'versions': v, 'import_errors': {}}, open(os.environ['GPU_RUN_ENV_JSON'], 'w')); "
            "time.sleep(30)")  # fmt: skip
    r = _run(out, "--parts", "tests", "--budget", "setup=2", "--replace", f"setup={py} -c \"{fake}\"",
             "--replace", f"tests={py} -c \"print('tests ran')\"", wheels=tmp_path)  # fmt: skip
    s = {p["name"]: p for p in _summary(out)["parts"]}
    assert s["setup"]["timed_out"] and s["tests"]["run"] and "tests ran" in s["tests"]["tail"]
    assert r.returncode == 1  # (setup's overrun)


@pytest.mark.parametrize(("name", "fits"), [
    ("anndata-0.12.1-py3-none-any.whl", True), ("texttable-1.7.0-py2.py3-none-any.whl", True),
    ("igraph-0.11.8-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("x-1.0-1b-cp312-cp312-manylinux_2_28_x86_64.whl", True), ("x-1.0-py37-none-any.whl", True),
    ("x-1.0-py3-none-macosx_11_0_arm64.manylinux_2_17_x86_64.whl", True),  # one platform tag fits
    ("msgspec-0.19.0-cp312-cp312-musllinux_1_2_x86_64.whl", False),  # not glibc
    ("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", False), ("x-1.0-cp3-abi3-any.whl", False),
    ("numcodecs-0.16-cp313-cp313-macosx_11_0_arm64.whl", False), ("x.whl", False), ("x-1.0.whl", False),
])  # fmt: skip
def test_wheel_tags_as_pip_reads_them(gr, name, fits):
    assert gr._wheel_fits(name) is fits


def test_check_wheels(gr, tmp_path, monkeypatch):
    """Before a session: two versions of one package (pip then installs nothing), a needed wheel
    missing, a wheel for another platform, no COMMIT or one that is not HEAD, uncommitted
    changes are reported; a good folder passes."""
    monkeypatch.setattr(gr, "_git", lambda *a: "abc" if a[0] == "rev-parse" else "")
    monkeypatch.setattr(gr, "_tree_bytes", lambda: 15 * 2**20)  # (a clone's own venv would count: it travels)
    for name in gr.WHEELS_NEEDED:
        (tmp_path / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(b"x")
    (tmp_path / "anndata-1.0-py3-none-any.whl").rename(tmp_path / "anndata-0.12.1-py3-none-any.whl")
    (tmp_path / "scanpy-1.0-py3-none-any.whl").rename(tmp_path / "scanpy-1.11.5-py3-none-any.whl")
    assert gr.check_wheels(tmp_path) == [f"no {tmp_path / 'COMMIT'}: write it with  git rev-parse HEAD > {tmp_path}/COMMIT"]
    (tmp_path / "COMMIT").write_text("abc\n")
    assert gr.check_wheels(tmp_path) == []
    mac = tmp_path / "msgspec-0.19-cp313-cp313-macosx_11_0_arm64.whl"
    mac.write_bytes(b"x")
    assert gr.check_wheels(tmp_path) == [f"{mac.name} does not install on CPython 3.12, x86_64 Linux (pip would refuse the set)"]
    mac.unlink()
    (tmp_path / "odd.whl").write_bytes(b"x")
    assert gr.check_wheels(tmp_path) == ["odd.whl is not a wheel's name (name-version-python-abi-platform.whl)"]
    (tmp_path / "odd.whl").unlink()
    (tmp_path / "COMMIT").write_text("old\n")
    monkeypatch.setattr(gr, "_git", lambda *a: "abc" if a[0] == "rev-parse" else " M gpu_sc/cli.py")
    problems = gr.check_wheels(tmp_path)
    assert any("names old, HEAD is abc" in p for p in problems) and any("uncommitted" in p for p in problems)
    (tmp_path / "COMMIT").write_text("abc\n")
    monkeypatch.setattr(gr, "_git", lambda *a: "abc" if a[0] == "rev-parse" else "")
    (tmp_path / "anndata-0.12.2-py3-none-any.whl").write_bytes(b"x")
    (tmp_path / "scanpy-1.11.5-py3-none-any.whl").unlink()
    problems = gr.check_wheels(tmp_path)
    assert any("anndata has 2 versions" in p for p in problems) and "no scanpy wheel" in problems
    assert gr.main(["--check-wheels", str(tmp_path)]) == 1
