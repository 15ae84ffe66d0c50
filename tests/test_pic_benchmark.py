"""benchmarks/pic_validate.py runs and writes well-formed rows (no timing or accuracy asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import SUBPROCESS_TIMEOUT
from _helpers import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pic_validate.py"

try:
    import gpu_sc.pic  # noqa: F401
except ImportError:
    pytest.skip("gpu_sc.pic is not importable", allow_module_level=True)

KEYS = {"mode", "dataset", "seed", "method", "backend", "device", "versions", "timestamp",
        "params", "n_pics", "n_groups_a", "n_groups_b", "n_ref_a", "n_ref_b", "seconds",
        "pair_accuracy", "a_accuracy", "b_accuracy", "alpha_r2", "alpha_mae", "ok_share",
        "calibration", "ece", "n_markers"}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("pic_validate") as module:
        yield module


def test_validate_pbmc68k_and_missing_data(tmp_path):
    """An empty --data-dir: pbmc68k falls back to the bundled copy, tnbc is recorded as skipped,
    and a method deconvolve does not know is recorded as skipped with its reason."""
    empty = tmp_path / "data"
    empty.mkdir()
    out, png = tmp_path / "v.jsonl", tmp_path / "v.png"
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(empty), "--datasets", "pbmc68k,tnbc",
           "--methods", "ml,no_such_method", "--backends", "cpu", "--seeds", "0", "--n-pics", "30",
           "--out", str(out), "--plot", str(png)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    ml = [x for x in rows if x.get("method") == "ml"]
    assert len(ml) == 1
    row = ml[0]
    assert set(row) >= KEYS, KEYS - set(row)
    assert row["mode"] == "validate" and row["backend"] == "cpu" and row["dataset"] == "pbmc68k"
    assert "bundled" in row["source"] and row["n_umis"] == 1000
    assert row["n_pics"] == 30 and row["n_groups_a"] >= 3 and row["n_groups_b"] >= 3
    assert row["seconds"] > 0 and 0 <= row["ok_share"] <= 1
    for k in ("pair_accuracy", "a_accuracy", "b_accuracy", "ece"):
        assert 0 <= row[k] <= 1
    assert row["pair_accuracy"] <= min(row["a_accuracy"], row["b_accuracy"])
    assert len(row["calibration"]) == 10
    assert sum(b["n"] for b in row["calibration"]) == row["n_ok"]
    assert {"gpu_sc", "numpy", "scanpy", "python"} <= set(row["versions"])
    skipped = [x for x in rows if x.get("method") == "no_such_method"]
    assert len(skipped) == 1 and "no_such_method" in skipped[0]["skipped"]
    tnbc = [x for x in rows if x["dataset"] == "tnbc"]
    assert len(tnbc) == 1 and "not found" in tnbc[0]["skipped"] and "seconds" not in tnbc[0]
    assert "pbmc68k" in r.stdout and "tnbc" in r.stdout and "skipped" in r.stdout
    assert png.stat().st_size > 1000
    # nothing measured (no data for any data set asked for) is a failure, not an empty pass
    r = subprocess.run([*cmd[:4], "--datasets", "tnbc", *cmd[6:-4]], capture_output=True, text=True,
                       timeout=SUBPROCESS_TIMEOUT)  # fmt: skip
    assert r.returncode == 1 and "nothing was measured" in r.stderr, (r.returncode, r.stderr)


def test_pbmc4k_populations_fall_back_to_the_bundled_cells(bench, tmp_path):
    """The pbmc4k data sets (T x MNP, and the other populations of the same cells) read the bundled
    copy where --data-dir lacks the file: the same cells, so a fresh clone can run them."""
    for name, pop_a in (("pbmc4k", {"T_CD4", "T_CD8"}), ("pbmc4k_bnk", {"B", "NK"}), ("pbmc4k_cd8nk", {"T_CD8", "NK"})):
        (a, pop, labels, src), why = bench.DATASETS[name][0](tmp_path)
        assert why is None and "bundled" in src and a.n_obs == 2_170
        assert set(labels[pop == "A"]) == pop_a and set(labels[pop == "B"]) == {"MNP"}


def test_build_caps_source_reuse(bench, tmp_path):
    """--max-reuse: no held-out cell in more PICs than the cap, so 1,000 PICs asked of
    pbmc68k's 50 A sources give at most 50 with max_reuse=1 (uncapped: far more)."""
    capped, _ = bench.build("pbmc68k", tmp_path, 0, 1000, 75, max_reuse=1)
    info, obs = capped["info"], capped["pics"].obs
    assert info["max_reuse"] == 1 and info["source_uses_max"] == 1
    assert obs["source_a"].is_unique and obs["source_b"].is_unique
    assert 0 < info["n_pics"] <= min(info["n_sources_a"], info["n_sources_b"])
    free, _ = bench.build("pbmc68k", tmp_path, 0, 1000, 75)
    assert free["info"]["n_pics"] == 1000 and free["info"]["source_uses_max"] > 1


def test_paired_difference_clusters_by_source_cells(bench):
    """The difference's standard error, two-way clustered by A and B source cell, against a loop;
    with every PIC of its own cells it is the plain (heteroskedastic) one, and PICs that repeat
    one cell's outcome widen it."""
    rng = np.random.default_rng(0)
    x, y = rng.random(60) < 0.7, rng.random(60) < 0.5
    own = np.arange(60)
    d, se = bench.paired_difference(x, y, own, own + 100)
    r = (x.astype(float) - y) - (x.astype(float) - y).mean()
    assert d == pytest.approx((x.astype(float) - y).mean())
    assert se == pytest.approx(np.sqrt((r**2).sum()) / 60)
    cells_a, cells_b = own // 6, own % 7  # 10 A cells in 6 PICs each, 7 B cells
    _, se2 = bench.paired_difference(x, y, cells_a, cells_b)
    va = sum(r[cells_a == c].sum() ** 2 for c in range(10))
    vb = sum(r[cells_b == c].sum() ** 2 for c in range(7))
    assert se2 == pytest.approx(np.sqrt(va + vb - (r**2).sum()) / 60)
    same = np.repeat(rng.random(10) < 0.5, 6)  # each A cell's PICs share one outcome
    assert bench.paired_difference(same, ~same, cells_a, own)[1] > bench.paired_difference(
        same, ~same, own, own + 100)[1]


def test_compare_rows(bench):
    """compare(): ml minus picseq per accuracy on the PICs both kept, subtype keys only with
    labels."""
    obs = pd.DataFrame({"pic_status": ["ok"] * 4 + ["low_umis"], "true_a": ["T0"] * 5,
                        "true_b": ["D0"] * 5, "source_a": list("aabbc"), "source_b": list("vwxyz")})
    x = obs.assign(pic_a=["T0", "T0", "T1", "T0", "T0"], pic_b=["D0"] * 5)
    y = obs.assign(pic_a=["T1", "T0", "T1", "T1", "T0"], pic_b=["D0", "D0", "D1", "D0", "D0"])
    major = {"T0": "CD4", "T1": "CD8", "D0": "DC", "D1": "DC"}
    sub = {"a": "CD4", "b": "CD4", "c": "CD8", "v": "DC", "w": "DC", "x": "DC", "y": "DC", "z": "DC"}
    row = bench.compare(x, y, major, sub)
    assert row["n_both_ok"] == 4
    assert row["pair_accuracy_diff"] == pytest.approx((3 - 1) / 4)
    assert row["a_subtype_accuracy_diff"] == pytest.approx((3 - 1) / 4)
    assert row["b_subtype_accuracy_diff"] == 0
    # each A cell's two PICs differ in opposite directions: clustered by A cell, no spread left
    assert row["pair_accuracy_se"] == pytest.approx(0, abs=1e-12)
    assert not any(k.startswith("a_subtype") for k in bench.compare(x, y, major, None))


def test_calibration_table(bench):
    p = np.array([0.05, 0.15, 0.95, 0.95, 1.0, 0.5])
    hit = np.array([False, True, True, False, True, True])
    table, ece = bench.calibration(p, hit)
    assert [b["n"] for b in table] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 3]
    assert table[9]["accuracy"] == pytest.approx(2 / 3)
    assert table[9]["confidence"] == pytest.approx(2.9 / 3)
    want = (abs(0 - 0.05) + abs(1 - 0.15) + abs(1 - 0.5) + 3 * abs(2 / 3 - 2.9 / 3)) / 6
    assert ece == pytest.approx(want)
    assert bench.calibration(np.ones(4), np.ones(4, bool))[1] == 0


def test_metrics_count_only_ok_pics(bench):
    obs = pd.DataFrame({
        "pic_status": ["ok", "ok", "ok", "too_few_umis"],
        "pic_a": ["A0", "A1", "A0", None], "pic_b": ["B0", "B0", "B1", None],
        "true_a": ["A0", "A0", "A0", "A1"], "true_b": ["B0", "B0", "B0", "B1"],
        "true_alpha": [0.2, 0.5, 0.8, 0.5], "pic_alpha": [0.2, 0.5, 0.8, np.nan],
        "pic_p_pair": [0.9, 0.6, 0.4, np.nan], "source_a": list("abcd"), "source_b": list("efgh"),
    })  # fmt: skip
    m = bench.metrics(obs, {}, None)
    assert m["n_ok"] == 3 and m["ok_share"] == 0.75
    assert m["pair_accuracy"] == pytest.approx(1 / 3) and m["pair_accuracy_all"] == 0.25
    assert m["a_accuracy"] == pytest.approx(2 / 3) and m["b_accuracy"] == pytest.approx(2 / 3)
    assert m["alpha_r2"] == 1 and m["alpha_mae"] == 0
    assert m["a_subtype_accuracy"] is None


def test_gpu_rows_with_stand_ins(bench, device, monkeypatch):
    """The GPU rows on the device fixture (a GPU, or the kernel emulator, whose PIC kernels
    give the CPU engine's results bit for bit): they must agree exactly with the CPU rows."""
    import argparse

    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    monkeypatch.setattr(bench, "_gpu", lambda: (cp, cpsp, lambda: None, "Stand-in GPU"))
    args = argparse.Namespace(datasets=["pbmc68k"], methods=["ml"], backends=["cpu", "gpu"],
                              seeds=[0], n_pics=20, group_size=75, max_reuse=None, n_train=500, warm_up=False,
                              data_dir=ROOT / "no_such_folder")  # fmt: skip
    emitted = []
    rows = bench.validate(args, emitted.append)
    assert rows == emitted
    assert [(r["backend"], r["device"]) for r in rows][1] == ("gpu", "Stand-in GPU")
    cpu, gpu = rows
    assert "error" not in gpu and gpu["cpu_pair_agreement"] == 1.0
    assert gpu["cpu_ll_max_rel_diff"] == 0.0
    assert gpu["pair_accuracy"] == cpu["pair_accuracy"]
    assert "gpu" in bench.summary(rows)


def test_scale_mode_smoke(tmp_path):
    """Scale mode on the bundled pbmc68k: rows for ml, picseq and the faithful loop, which must
    find the very pairs picseq found (same markers, profiles and alpha)."""
    out = tmp_path / "s.jsonl"
    cmd = [sys.executable, str(SCRIPT), "--scale", "--scale-dataset", "pbmc68k", "--data-dir",
           str(tmp_path), "--scale-groups", "3", "--scale-pics", "30", "--scale-cpu-pics", "30",
           "--scale-pool", "30", "--scale-loop-pics", "20", "--scale-fixed-pics", "10",
           "--n-train", "300", "--backends", "cpu", "--out", str(out),
           "--plot", str(tmp_path / "s.png")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert [(x["method"], x["backend"]) for x in rows] == [
        ("ml", "cpu"), ("picseq", "cpu"), ("faithful_loop", "cpu-1thread")]
    for x in rows:
        assert x["mode"] == "scale" and x["n_pairs"] == 9 and x["seconds"] > 0
        assert {"versions", "device", "timed", "extrapolated", "n_pics"} <= set(x)
    assert rows[0]["n_pics"] == 30 and rows[0]["extrapolated"] is False
    loop = rows[2]
    assert loop["same_pair_as_picseq"] == 1.0 and 0 < loop["n_pics"] <= 20
    assert set(loop["speedup_vs_faithful_loop"]) <= {"ml/cpu", "picseq/cpu"}
    assert "faithful_loop" in r.stdout and (tmp_path / "s.png").stat().st_size > 1000


def test_scale_mode_gpu_rows(bench, device, monkeypatch, tmp_path):
    """Scale mode's GPU rows on the device fixture (the kernel emulator in CI): both methods
    timed on the GPU path without an error row."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    monkeypatch.setattr(bench, "_gpu", lambda: (cp, cpsp, lambda: None, "Stand-in GPU"))
    out = tmp_path / "s.jsonl"
    argv = ["--scale", "--scale-dataset", "pbmc68k", "--data-dir", str(tmp_path), "--scale-groups",
            "3", "--scale-pics", "30", "--scale-cpu-pics", "30", "--scale-pool", "30",
            "--scale-loop-pics", "10", "--scale-fixed-pics", "10", "--n-train", "300",
            "--methods", "ml,picseq", "--backends", "cpu,gpu", "--out", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    gpu = [r for r in _rows(out) if r["backend"] == "gpu"]
    assert [r["method"] for r in gpu] == ["ml", "picseq"]
    for r in gpu:
        assert "error" not in r and r["seconds"] > 0 and r["device"] == "Stand-in GPU", r
        assert r["n_pics"] == 30


def test_alpha_ceiling_smoke(tmp_path):
    """benchmarks/pic_alpha_ceiling.py on the bundled pbmc68k (empty data dir): one row with the
    six estimators; the own-profile oracle bounds the other three on its PICs, and on the split
    PICs the profile holding the PIC's own UMIs beats the one from the cell's other UMIs."""
    out = tmp_path / "ceiling.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_alpha_ceiling.py"), "--datasets",
           "pbmc68k", "--data-dir", str(tmp_path), "--n-pics", "60", "--n-umis", "400",
           "--out", str(out)]  # 400 UMIs: half cells of pbmc68k reach it
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    (row,) = _rows(out)
    assert row["n_umis"] == 400 and row["n_pics_split"] >= 10
    r2 = row["alpha_r2"]
    same = ("group", "size_prior", "oracle_knn", "oracle_own")
    assert set(r2) == {*same, "oracle_split_same", "oracle_split_rest"}
    assert r2["oracle_own"] > 0.9
    assert r2["oracle_own"] >= max(r2[k] for k in same) - 1e-12
    assert r2["oracle_split_same"] > r2["oracle_split_rest"]


def test_validate_with_the_population_claims(tmp_path):
    """--claims: after the validation row, the interaction test's null and planted rows and the
    composition row on the same data set, seed and method, in the same file."""
    out = tmp_path / "v.jsonl"
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--datasets", "pbmc68k", "--methods", "ml",
           "--backends", "cpu", "--seeds", "0", "--n-pics", "80", "--n-train", "400", "--claims", "--min-pics", "3",
           "--folds", "3", "--n-sim", "5", "--n-boot", "20", "--n-splits", "2", "--deconvolve-seed", "2",
           "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert [x["mode"] for x in rows] == ["validate"] + ["interaction"] * 6 + ["frequencies"]
    assert rows[0]["params"]["deconvolve"]["seed"] == 2  # the same deconvolution throughout
    assert all(x["deconvolve_seed"] == 2 and x["n_train"] == 400 for x in rows[1:])
    assert {(x["scenario"], x["test"]) for x in rows if x["mode"] == "interaction"} == {
        (s, t) for s in ("null", "planted_3x") for t in ("matched", "matched_assigned", "chi2")}
    for x in rows[1:]:
        assert x["dataset"] == "pbmc68k" and x["seed"] == 0 and x["n_pics"] == 80 and x["group_size"] == 75
    freq = rows[-1]
    assert freq["method"] == "ml" and freq["n_splits"] == 2 and 0 <= freq["tv_corrected"] <= 1


def test_interaction_benchmark_smoke(tmp_path):
    """benchmarks/pic_interaction.py on the bundled pbmc68k: a null and a planted row per test,
    with the fields benchmarks/README.md documents."""
    out = tmp_path / "inter.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_interaction.py"), "--datasets", "pbmc68k",
           "--data-dir", str(tmp_path), "--n-pics", "80", "--folds", "3", "--n-train", "400",
           "--min-pics", "3", "--dask-rows", "30", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=SUBPROCESS_TIMEOUT)
    rows = _rows(out)
    assert {(r["scenario"], r["test"]) for r in rows} == {(s, t) for s in ("null", "planted_3x")
                                                          for t in ("matched", "matched_assigned", "chi2")}  # fmt: skip
    for r in rows:
        assert r["dask_rows"] == 30  # the tests read the PICs as Dask row blocks
        assert {"n_tested", "n_called", "n_up", "pair_accuracy", "group_size", "n_groups_a"} <= set(r)
        assert 0 <= r["n_called"] <= r["n_tested"]
        if r["scenario"] != "null":
            assert 0 <= r["recall_up"] <= 1 and r["n_pics_planted_pair"] > 0


def test_frequencies_benchmark_smoke(tmp_path):
    """benchmarks/pic_frequencies.py on the bundled pbmc68k: one row per method with the
    composition, null and power fields."""
    out = tmp_path / "freq.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_frequencies.py"), "--datasets", "pbmc68k",
           "--data-dir", str(tmp_path), "--methods", "picseq,ml", "--n-pics", "80", "--n-sim", "5",
           "--n-boot", "20", "--n-splits", "2", "--n-train", "400", "--max-reuse", "2",
           "--two-depths", "300", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=SUBPROCESS_TIMEOUT)
    row, ml = _rows(out)
    assert row["method"] == "picseq" and row["n_splits"] == 2 and row["n_pairs"] >= 9
    assert "two_depths_tv_shallow" not in row and ml["method"] == "ml"
    assert ml["two_depths_median_shallow"] == 300 and ml["two_depths_median_deep"] > 300
    for k in ("two_depths_tv_deep", "two_depths_tv_shallow", "two_depths_coverage_deep", "two_depths_coverage_shallow"):
        assert 0 <= ml[k] <= 1
    for k in ("tv_hard", "tv_mean", "tv_corrected", "tv_oracle_confusion"):
        assert 0 <= row[k] <= 1
    for k in ("coverage_mean", "coverage_corrected", "coverage_mean_cells", "coverage_corrected_cells",
              "null_p_below_0.05"):
        assert 0 <= row[k] <= 1
    assert row["tv_mean_cells"] == row["tv_mean"]  # the same estimate, another interval
    assert 0 <= row["mean_weight"] <= 1 and (row["tv_unmixed"] is None or 0 <= row["tv_unmixed"] <= 1)
    # --max-reuse 2: 80 PICs need at least 40 cells of each population
    assert row["max_reuse"] == 2 and 40 <= row["n_source_cells_a"] <= 80 and 40 <= row["n_source_cells_b"] <= 80
    assert 0 <= row["power_found"] <= 2 and row["null_calls"] >= 0


def test_qc_benchmark_smoke(tmp_path):
    """benchmarks/pic_qc.py on the bundled pbmc4k (T and MNP): a row per PIC with its kind, the
    calls and p-values, and the run's JSON."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_qc.py"), "0", "ml", "major", str(tmp_path)]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=SUBPROCESS_TIMEOUT)
    assert "doublet_test level=0.01" in r.stdout
    res = pd.read_csv(tmp_path / "major_ml_s0.csv", index_col=0)
    assert {"singlet_T", "singlet_MNP", "doublet", "triplet_AAB", "triplet_ABB"} <= set(res["kind"])
    p = res["dp"].dropna()
    assert len(p) > 0.9 * len(res) and ((p > 0) & (p <= 1)).all()
    info = json.loads((tmp_path / "major_ml_s0.json").read_text())
    assert info["groups_b"] == ["MNP"] and info["kw"]["method"] == "ml"
