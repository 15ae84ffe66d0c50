"""benchmarks/pic_validate.py runs and writes well-formed rows (no timing or accuracy asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
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
    # two PICs of the same two cells: the intersection's clustered variance is subtracted, not
    # the PICs' own (which counted their cross term twice): r = +-0.5, V_A = V_B = V_AB = 1.5
    assert bench.paired_difference(np.array([1, 1, 0, 0]), np.zeros(4), list("aabc"), list("xxyz"))[1] == (
        pytest.approx(np.sqrt(1.5) / 4))
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


def test_side_ceiling_smoke(tmp_path):
    """benchmarks/pic_side_ceiling.py on the bundled pbmc68k: one row; every share is a share,
    and both sides right alone is at most either side right alone."""
    out = tmp_path / "side.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_side_ceiling.py"), "--datasets", "pbmc68k",
           "--seeds", "0", "--n-pics", "120", "--data-dir", str(tmp_path), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    (row,) = _rows(out)
    assert row["mode"] == "side_ceiling" and row["n_pics"] == 120 and 0 < row["n_scored"] <= 120
    shares = [row[k] for k in ("pic_exact_pair", "pic_a", "pic_b", "alone_a", "alone_b", "alone_both")]
    assert all(0 <= v <= 1 for v in shares)
    assert row["alone_both"] <= min(row["alone_a"], row["alone_b"])
    assert row["pic_exact_pair"] <= min(row["pic_a"], row["pic_b"])
    empty = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pic_side_ceiling.py"), "--datasets",
                            "tnbc", "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert empty.returncode == 1 and "skipped" in empty.stderr  # nothing measured is no pass


def test_side_ceiling_thins_each_cell_to_its_share():
    """Each row is its cell with exactly the asked UMIs drawn from the cell's own counts (all of
    them where it holds fewer), in the order of the names asked, a cell asked twice drawn twice."""
    import anndata as ad

    with benchmark_script("pic_side_ceiling") as mod:
        x = sp.csr_matrix(np.array([[5, 0, 3, 0], [0, 2, 0, 1], [1, 1, 1, 1]], dtype=np.float32))
        cells = ad.AnnData(x, obs=pd.DataFrame(index=["c0", "c1", "c2"]))
        got = mod.thinned(cells, ["c2", "c0", "c0", "c1"], np.array([2, 6, 8, 9]), seed=3)
    d = got.X.toarray()
    assert got.obs["cell"].tolist() == ["c2", "c0", "c0", "c1"]
    np.testing.assert_array_equal(d.sum(1), [2, 6, 8, 3])
    full = x.toarray()[[2, 0, 0, 1]]
    assert (d <= full).all() and (d >= 0).all()
    np.testing.assert_array_equal(d[2], full[2])
    np.testing.assert_array_equal(d[3], full[3])


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
           "--min-pics", "3", "--dask-rows", "30", "--true-pairs", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=SUBPROCESS_TIMEOUT)
    rows = _rows(out)
    tests = ("matched", "matched_assigned", "chi2", "matched_true_pairs")
    assert {(r["scenario"], r["test"]) for r in rows} == {(s, t) for s in ("null", "planted_3x") for t in tests}
    for r in rows:
        assert r["dask_rows"] == 30  # the tests read the PICs as Dask row blocks
        assert {"n_tested", "n_called", "n_up", "pair_accuracy", "group_size", "n_groups_a"} <= set(r)
        assert 0 <= r["n_called"] <= r["n_tested"]
        if r["scenario"] != "null":
            assert 0 <= r["recall_up"] <= 1 and r["n_pics_planted_pair"] > 0
        else:  # nothing planted where nothing is induced
            assert "recall_up" not in r and r["planted_pair"] is None and r["n_pics_planted_pair"] == 0


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
    assert 0 <= row["mean_weight"] <= 1 and 0 <= row["hard_weight"] <= 1 - row["mean_weight"] + 1e-12
    assert row["tv_unmixed"] is None or 0 <= row["tv_unmixed"] <= 1
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
    # the held-out 30 % (the PICs' cells) are not in the reference: together they are the cells
    n_cells = int((gsc_datasets_annotation() != "?").sum())
    assert info["n_ref"] + info["n_src"] == n_cells and 0.25 < info["n_src"] / n_cells < 0.35
    assert (res["dcall_p0.05"] == (res["dp"] <= 0.05)).all()
    assert (res["tcall_p0.05"] == (res["tp"] <= 0.05)).all() and "triplet_scan level=0.01" in r.stdout
    # the printed rates are over the 'test' PICs of each kind
    line = next(x for x in r.stdout.splitlines() if x.startswith("doublet_test level=0.01"))
    printed = [float(v) for v in line.split()[-5:]]
    test = res[res["set"] == "test"]
    want = [round(float(test.loc[test["kind"] == k, "dcall_p0.01"].astype(bool).mean()), 3)
            for k in ("singlet_T", "singlet_MNP", "doublet", "triplet_AAB", "triplet_ABB")]
    assert printed == pytest.approx(want, abs=1e-9)


def test_triplet_null_benchmark_smoke(tmp_path):
    """benchmarks/pic_qc_triplet_null.py on pbmc68k (bundled where ../shared lacks it): one run's
    JSON with the null drawn and each kind's shares, consistent with its counts."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pic_qc_triplet_null.py"), "pbmc68k", "0", "400", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=SUBPROCESS_TIMEOUT)
    info = json.loads((tmp_path / "pbmc68k_d400_s0.json").read_text())
    assert info["n_null"] == 1000 and info["table"]["doublet"]["n"] == 600
    for t in info["table"].values():
        if t is not None:
            assert t["k01"] <= t["k05"] <= t["k10"] <= t["n"]
            assert t["p05"] == pytest.approx(t["k05"] / t["n"])


def gsc_datasets_annotation():
    import gpu_sc as gsc

    return gsc.datasets.pbmc4k_half().obs["Annotation"].astype(str)


# --- the scoring and planting functions on hand-made inputs (hand-computed values) -------------

@pytest.fixture(scope="module")
def inter():
    with benchmark_script("pic_interaction") as module:
        yield module


@pytest.fixture(scope="module")
def freq():
    with benchmark_script("pic_frequencies") as module:
        yield module


def test_true_pairs_replace_the_calls(inter):
    """--true-pairs: the copy's calls are each PIC's true groups and alpha, every PIC kept and
    the calls' posterior dropped; the deconvolved PICs are left as they were."""
    pics = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)))
    cats = ["A0", "A1"]
    pics.obs = pd.DataFrame({
        "pic_a": pd.Categorical(["A0", "A0", None], categories=cats), "pic_b": pd.Categorical(["B0", "B1", None]),
        "pic_alpha": [0.5, 0.6, np.nan], "pic_status": ["ok", "ok", "low_umis"],
        "true_a": ["A1", "A0", "A1"], "true_b": ["B1", "B1", "B0"], "true_alpha": [0.2, 0.7, 0.9],
    }, index=["p0", "p1", "p2"])  # fmt: skip
    pics.obsm["pic_pair_posterior"] = sp.csr_matrix(np.eye(3, 4))
    before = pics.obs.copy()
    out = inter.with_true_pairs(pics)
    assert out.obs["pic_a"].tolist() == ["A1", "A0", "A1"] and out.obs["pic_b"].tolist() == ["B1", "B1", "B0"]
    assert list(out.obs["pic_a"].cat.categories) == cats
    np.testing.assert_array_equal(out.obs["pic_alpha"], [0.2, 0.7, 0.9])
    assert (out.obs["pic_status"] == "ok").all() and "pic_pair_posterior" not in out.obsm
    pd.testing.assert_frame_equal(pics.obs, before)
    assert "pic_pair_posterior" in pics.obsm


def test_metrics_alpha_interval_and_calibration_by_hand(bench):
    """alpha R^2 / MAE / bias / SD, the interval's coverage and width, and the calibration table
    over ok PICs against 'exact pair correct' (not A alone): values worked out by hand."""
    obs = pd.DataFrame({
        "pic_status": ["ok", "ok", "ok", "low"],
        "pic_a": ["A0", "A1", "A0", None], "pic_b": ["B0", "B0", "B1", None],
        "true_a": ["A0", "A0", "A0", "A1"], "true_b": ["B0", "B0", "B0", "B1"],
        "true_alpha": [0.2, 0.5, 0.8, 0.5], "pic_alpha": [0.3, 0.5, 0.6, np.nan],
        "pic_alpha_lo": [0.25, 0.4, 0.7, np.nan], "pic_alpha_hi": [0.35, 0.6, 0.8, np.nan],
        "pic_p_pair": [0.9, 0.6, 0.4, np.nan], "source_a": list("abcd"), "source_b": list("efgh"),
    })  # fmt: skip
    m = bench.metrics(obs, {}, None)
    assert m["alpha_r2"] == pytest.approx(1 - 0.05 / 0.18)  # SSE 0.01 + 0 + 0.04, SS 0.09 + 0 + 0.09
    assert m["alpha_mae"] == pytest.approx(0.1) and m["alpha_bias"] == pytest.approx(-0.1 / 3)
    assert m["alpha_true_sd"] == pytest.approx(np.sqrt(0.06))
    assert m["alpha_sse_share_wrong_pair"] == pytest.approx(0.8)  # 0.04 of 0.05 on PIC 2 (wrong B)
    assert m["alpha_interval_coverage"] == pytest.approx(2 / 3)  # 0.2 outside [0.25, 0.35]; 0.8 = hi inside
    assert m["alpha_interval_width"] == pytest.approx(0.4 / 3)
    table = m["calibration"]
    assert [b["n"] for b in table] == [0, 0, 0, 0, 1, 0, 1, 0, 0, 1]
    # PIC 2 has its A group right but not its pair: the bin at 0.4 is wrong
    assert [table[k]["accuracy"] for k in (4, 6, 9)] == [0, 0, 1]
    assert m["ece"] == pytest.approx((0.4 + 0.6 + 0.1) / 3)
    assert m["mean_p_pair"] == pytest.approx(1.9 / 3)


def test_hits_subtypes_read_each_side_source(bench):
    """A and B subtype: the chosen group's commonest label against the label of that side's own
    source cell."""
    obs = pd.DataFrame({"pic_status": ["ok", "ok", "no"], "pic_a": ["T0", "T1", "T0"], "pic_b": ["D0", "D1", "D0"],
                        "true_a": ["T0"] * 3, "true_b": ["D0"] * 3, "source_a": ["a", "b", "a"],
                        "source_b": ["x", "y", "x"]})  # fmt: skip
    major = {"T0": "CD4", "T1": "CD8", "D0": "DC", "D1": "mono"}
    sub = {"a": "CD4", "b": "CD4", "x": "DC", "y": "mono"}
    ok, hit = bench.hits(obs, major, sub)
    assert ok.tolist() == [True, True, False]
    assert hit["a_subtype_accuracy"].tolist() == [True, False, False]
    assert hit["b_subtype_accuracy"].tolist() == [True, True, False]
    assert hit["subtype_pair_accuracy"].tolist() == [True, False, False]
    assert hit["pair_accuracy"].tolist() == [True, False, False]
    # the PIC that is not ok names its true groups, and still counts as wrong
    assert hit["a_accuracy"].tolist() == [True, False, False] and hit["b_accuracy"].tolist() == [True, False, False]


def test_compare_keeps_pics_both_kept_and_clusters_by_b_cells(bench):
    """compare(): only PICs ok under both methods; the error clustered by the B source cells
    too (A cells all distinct, B cells shared by two PICs each: var = V_A + V_B - V_PIC)."""
    obs = pd.DataFrame({"pic_status": ["ok"] * 5, "true_a": ["T0"] * 5, "true_b": ["D0"] * 5,
                        "source_a": list("abcde"), "source_b": list("xxyyz")})
    x = obs.assign(pic_a=["T0", "T0", "T1", "T1", "T0"], pic_b=["D0"] * 5)
    y = obs.assign(pic_a=["T1"] * 5, pic_b=["D0"] * 5, pic_status=["ok"] * 4 + ["low"])
    row = bench.compare(x, y, {}, None)
    assert row["n_both_ok"] == 4
    assert row["pair_accuracy_diff"] == 0.5  # PIC 4 (right under x) is not kept by y
    # residuals 0.5, 0.5, -0.5, -0.5: V_A = 1, V_B = 1 + 1, V_PIC = 1
    assert row["pair_accuracy_se"] == pytest.approx(np.sqrt(2) / 4)


def _toy_dataset(n_a=120, n_b=30, n_genes=80, seed=0):
    """A loader of a small synthetic data set: population B much smaller than A, so its held-out
    cells are reused most."""
    import anndata as ad

    def load(_data_dir):
        rng = np.random.default_rng(seed)
        x = rng.poisson(rng.gamma(2.0, 12.0, n_genes), size=(n_a + n_b, n_genes)).astype(np.float32)
        a = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=[f"c{i}" for i in range(n_a + n_b)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))  # fmt: skip
        pop = np.array(["A"] * n_a + ["B"] * n_b)
        return (a, pop, np.where(pop == "A", "tA", "tB"), "toy"), None

    return load


def _by_total(x_ref, x_src, k, seed):
    """Stand-in for _cluster: reference cells in turn, a source cell's group = its UMI total mod 3."""
    return np.arange(x_ref.shape[0]) % 3, np.asarray(x_src.sum(1)).ravel().astype(int) % 3


def test_build_holds_sources_out_and_keeps_their_truth(bench, monkeypatch):
    """build(): about 30 % of the cells are sources, none of them (nor any PIC's source cell) in the
    reference; each PIC's true groups are its source cells' own; source_uses_max is the most PICs
    any A or B source cell is in."""
    monkeypatch.setitem(bench.DATASETS, "toy", (_toy_dataset(), 300, "T", "D", None))
    monkeypatch.setattr(bench, "_cluster", _by_total)
    built, why = bench.build("toy", Path("/nowhere"), 0, 200, 20)
    assert why is None
    ref, src, pics, info = built["ref"], built["sources"], built["pics"], built["info"]
    assert not set(ref.obs_names) & set(src.obs_names) and ref.n_obs + src.n_obs == 150
    assert 0.2 < src.n_obs / 150 < 0.4
    used = set(pics.obs["source_a"]) | set(pics.obs["source_b"])
    assert used <= set(src.obs_names) and not used & set(ref.obs_names)
    tot = pd.Series(np.asarray(sp.csr_matrix(src.X).sum(1)).ravel().astype(int) % 3, index=src.obs_names)
    assert (pics.obs["true_a"].astype(str).to_numpy() == ("T" + tot[pics.obs["source_a"]].astype(str)).to_numpy()).all()
    assert (pics.obs["true_b"].astype(str).to_numpy() == ("D" + tot[pics.obs["source_b"]].astype(str)).to_numpy()).all()
    uses_a, uses_b = pics.obs["source_a"].value_counts().max(), pics.obs["source_b"].value_counts().max()
    assert uses_b > uses_a  # B: few held-out cells
    assert info["source_uses_max"] == uses_b and info["n_pics"] == pics.n_obs == 200


def test_score_counts_up_calls_of_the_programme(inter):
    """recall_up: share of the programme's genes called up ('down' calls are not recall);
    up_outside_share: up-calls outside the programme over all up-calls."""
    tab = pd.DataFrame({"significant": [True, True, True, False, True, True, False],
                        "direction": ["up", "up", "down", "up", "up", "down", ""],
                        "tested": [True] * 6 + [False],
                        "fdr": [0.001, 0.05, 0.02, 0.5, 0.005, 0.09, np.nan]},
                       index=[f"g{i}" for i in range(7)])  # fmt: skip
    row = inter.score(tab, ["g0", "g2", "g3", "g5"])
    assert row == {"n_tested": 6, "n_called": 5, "n_up": 3, "n_called_fdr_0.01": 2,
                   "recall_up": 0.25, "up_outside_share": pytest.approx(2 / 3)}
    assert set(inter.score(tab, None)) == {"n_tested", "n_called", "n_up", "n_called_fdr_0.01"}
    none_up = tab.assign(direction="down")
    assert inter.score(none_up, ["g0"]) == {**inter.score(none_up, None), "recall_up": 0.0, "up_outside_share": 0.0}


def test_plant_multiplies_the_commonest_pairs_programme(inter):
    """plant(): 20 genes expressed in the commonest true pair's reference cells (A or B), their
    counts in that pair's PICs raised to about fold x (Poisson), every other count unchanged."""
    import anndata as ad

    n_genes = 60
    x = np.full((40, n_genes), 10.0, dtype=np.float32)
    obs = pd.DataFrame({"true_a": ["A1"] * 10 + ["A0"] * 25 + ["A2"] * 5,
                        "true_b": ["B1"] * 10 + ["B0"] * 25 + ["B0"] * 5}, index=[f"p{i}" for i in range(40)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    pics = ad.AnnData(sp.csr_matrix(x), obs=obs, var=var)
    r = np.zeros((6, n_genes), dtype=np.float32)
    r[0, :14] = 5  # A0 expresses g0-g13, B0 g14-g27, the other groups g28-g59 only
    r[1, 14:28] = 5
    r[2:, 28:] = 5
    ref = ad.AnnData(sp.csr_matrix(r), obs=pd.DataFrame({"grp": ["A0", "B0", "A1", "B1", "A2", "A2"]},
                                                        index=[f"r{i}" for i in range(6)]), var=var.copy())  # fmt: skip
    out, genes, pair, n_target = inter.plant(pics, ref, 3.0, 0)
    assert pair == "A0|B0" and n_target == 25 and len(set(genes)) == 20
    idx = pics.var_names.get_indexer(genes)
    assert (idx < 28).all() and (idx < 14).any() and (idx >= 14).any()  # from both of the pair's groups
    y = out.X.toarray()
    target = np.arange(10, 35)
    other = np.setdiff1d(np.arange(40), target)
    assert (y[other] == 10).all() and (np.delete(y[target], idx, axis=1) == 10).all()
    block = y[np.ix_(target, idx)]
    assert (block >= 10).all() and abs(block.mean() - 30) < 1.5  # 10 + Poisson(20): mean 30, SE 0.2
    same, _, _, _ = inter.plant(pics, ref, 1.0, 0)
    assert (same.X.toarray() == x).all()


def test_tv_inside_truth_and_alignment(freq):
    """_truth: shares of the ok PICs' true pairs; _aligned: the true share of each listed pair, 0
    where none; _inside: closed intervals; _tv: half the L1 distance."""
    import anndata as ad

    obs = pd.DataFrame({"true_a": ["A0", "A0", "A1", "A1"], "true_b": ["B0", "B0", "B0", "B1"]},
                       index=list("pqrs"))
    p = ad.AnnData(obs=obs)
    truth = freq._truth(p, np.array([True, True, True, False]))
    assert truth.to_dict() == {"A0|B0": pytest.approx(2 / 3), "A1|B0": pytest.approx(1 / 3)}
    al = freq._aligned(truth, pd.Series(["A1", "A1", "A0", "A0"]), pd.Series(["B0", "B1", "B0", "B1"]))
    assert al == pytest.approx([1 / 3, 0, 2 / 3, 0])
    tab = pd.DataFrame({"ci_low": [0.1, 0.0, 0.7, 0.05], "ci_high": [1 / 3, 0.1, 0.9, 0.2]})
    assert freq._inside(tab, al).tolist() == [True, True, False, False]
    assert freq._tv([0.5, 0.1, 0.4, 0.0], al) == pytest.approx(0.5 * (1 / 6 + 0.1 + 4 / 15))


def _fake_frequencies(calls):
    """Stand-in for gsc.pic.pair_frequencies: a fixed mean table, and with singlets the blend
    0.25 x mean + 0.15 x the hard calls' shares + 0.6 x (the true shares 2/3, 1/3), rows in
    another order."""

    def fake(p, singlets=None, *, replicate_key=None, n_sim=None, n_boot=None, **kw):
        calls.append((singlets is None, replicate_key))
        mean = pd.DataFrame({"pic_a": ["A1", "A0", "A0", "A1"], "pic_b": ["B0", "B0", "B1", "B1"],
                             "n_pics": 9, "n_called": [2, 6, 1, 0], "fraction": [0.25, 0.6, 0.145, 0.005],
                             "ci_low": [0.2, 0.5, 0.05, 0.0], "ci_high": [0.3, 6 / 9, 0.2, 0.01]})  # fmt: skip
        if singlets is None:
            return mean
        out = mean.iloc[[3, 1, 2, 0]].reset_index(drop=True)
        unmixed = np.array([0.0, 2 / 3, 0.0, 1 / 3])
        hard = out["n_called"].to_numpy() / out["n_pics"].to_numpy()
        out["fraction"] = 0.25 * out["fraction"].to_numpy() + 0.15 * hard + 0.6 * unmixed
        out["mean_weight"], out["hard_weight"] = 0.25, 0.15
        return out

    return fake


def test_composition_scores_by_hand(freq, monkeypatch):
    """composition(): TV of hard calls, mean and corrected estimate against the ok PICs' true
    composition, the unmixed part recovered from the blend, coverage (all pairs and those at
    >= 1 %), interval width, source cells of ok PICs."""
    import anndata as ad

    calls = []
    monkeypatch.setattr(freq.gsc.pic, "pair_frequencies", _fake_frequencies(calls))
    monkeypatch.setattr(freq, "_oracle_tv", lambda *a, **k: 0.0)
    obs = pd.DataFrame({"pic_status": ["ok"] * 9 + ["low"], "true_a": ["A0"] * 6 + ["A1"] * 4,
                        "true_b": ["B0"] * 9 + ["B1"], "source_a": [f"a{i % 4}" for i in range(9)] + ["z"],
                        "source_b": [f"b{i % 2}" for i in range(9)] + ["y"]}, index=[f"p{i}" for i in range(10)])  # fmt: skip
    row = freq.composition(ad.AnnData(obs=obs), "the reference", None, 5, 5)
    assert calls == [(True, None), (False, None), (True, freq.SOURCE_CELLS), (False, freq.SOURCE_CELLS)]
    assert row["n_source_cells_a"] == 4 and row["n_source_cells_b"] == 2 and row["n_pairs"] == 4
    # truth: A0|B0 6/9, A1|B0 3/9 (the not-ok A1|B1 PIC does not count)
    assert row["tv_mean"] == pytest.approx(0.5 * (1 / 12 + 1 / 15 + 0.145 + 0.005))
    assert row["tv_hard"] == pytest.approx(1 / 9)  # calls 2, 6, 1, 0 of 9
    # corrected - truth per pair: 0.25 (mean - truth) + 0.15 (calls - truth)
    off = 0.25 * np.array([0.25 - 1 / 3, 0.6 - 2 / 3, 0.145, 0.005]) + 0.15 * np.array([2 / 9 - 1 / 3, 0, 1 / 9, 0])
    assert row["tv_corrected"] == pytest.approx(0.5 * np.abs(off).sum())
    assert row["mean_weight"] == 0.25 and row["hard_weight"] == 0.15
    assert row["tv_unmixed"] == pytest.approx(0, abs=1e-12)
    # intervals: A1|B0 misses 1/3, A0|B0 holds 2/3 at its upper end, A0|B1 misses 0, A1|B1 holds 0 at its lower end
    assert row["coverage_mean"] == 0.5 and row["coverage_mean_1pct"] == pytest.approx(1 / 3)
    assert row["ci_width_mean"] == pytest.approx((0.1 + 1 / 6 + 0.15 + 0.01) / 4)
    assert row["tv_mean_cells"] == row["tv_mean"] and row["coverage_corrected_cells"] == row["coverage_corrected"]


def test_null_and_power_by_hand(freq, monkeypatch):
    """null_and_power(): null calls, splits with calls and the share of p < 0.05 over the random
    splits; power: the commonest true pair, thinned in y, found only as 'up' (more in x), and the
    calls on other pairs."""
    import anndata as ad

    def fake_test(q, key, groups, inplace):
        pairs = (q.obs["pic_a"].astype(str) + "|" + q.obs["pic_b"].astype(str)).to_numpy()
        names = ["A0|B0", "A1|B0", "A1|B1"]
        if q.n_obs == n:  # a null split: fixed p-values, calls in the first split only
            first = not seen
            seen.append(1)
            return pd.DataFrame({"pic_a": [s[:2] for s in names], "pic_b": [s[3:] for s in names],
                                 "pval": [0.01, 0.2, 0.6], "significant": [first, first, False],
                                 "direction": ["up", "down", "up"]})  # fmt: skip
        cond = q.obs[key].to_numpy()
        share = {g: np.array([(pairs[cond == g] == s).mean() for s in names]) for g in groups}
        diff = share["x"] - share["y"]
        return pd.DataFrame({"pic_a": [s[:2] for s in names], "pic_b": [s[3:] for s in names],
                             "pval": np.where(np.abs(diff) > 0.05, 1e-3, 0.5), "significant": np.abs(diff) > 0.05,
                             "direction": np.where(diff > 0, "up", "down")})  # fmt: skip

    seen = []
    n = 320
    a = ["A0"] * 200 + ["A1"] * 120
    b = ["B0"] * 260 + ["B1"] * 60
    obs = pd.DataFrame({"pic_status": "ok", "true_a": a, "true_b": b, "pic_a": a, "pic_b": b},
                       index=[f"p{i}" for i in range(n)])
    monkeypatch.setattr(freq.gsc.pic, "pair_abundance_test", fake_test)
    row = freq.null_and_power(ad.AnnData(obs=obs), 3, 1)
    assert row["depleted_pair"] == "A0|B0" and row["depleted_pair_share"] == pytest.approx(200 / 320)
    assert row["null_calls"] == 2 and row["null_sets_with_calls"] == 1
    assert row["null_p_below_0.05"] == pytest.approx(1 / 3)
    # y keeps a third of its A0|B0 PICs: that pair is up in x, the two others down (rising in y)
    assert row["power_found"] == 3 and row["power_calls_elsewhere"] == 6 and row["power_calls"] == 9


def test_claims_plot_counts_each_criterion_against_its_bound(tmp_path):
    """The done-when figure: a later file's row replaces the same row of an earlier one; each
    panel counts the runs that meet its bound (recall and coverage from below, the rest from
    above, the accuracy difference at 0), checked by hand on rows built here and on the
    committed claims run (whose figures the README quotes)."""
    with benchmark_script("pic_claims_plot") as cp:
        def row(**kw):
            return {"dataset": "d", "method": "ml", "deconvolution": "ml", **kw}

        first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        first.write_text("\n".join(json.dumps(r) for r in (
            row(mode="interaction", seed=1, scenario="planted_3x", test="matched", recall_up=0.5, up_outside_share=0.1),
            row(mode="interaction", seed=2, scenario="planted_3x", test="matched", recall_up=0.8, up_outside_share=0.3),
            row(mode="frequencies", seed=1, tv_corrected=0.1, coverage_corrected=0.84),
            row(mode="compare", seed=1, pair_accuracy_diff=-0.01, pair_accuracy_se=0.01,
                subtype_pair_accuracy_diff=0.0, subtype_pair_accuracy_se=0.01),
            row(mode="validate", seed=1, seconds=31.0, source_uses_max=4))))  # fmt: skip
        second.write_text(json.dumps(row(mode="interaction", seed=1, scenario="planted_3x", test="matched",
                                         recall_up=0.9, up_outside_share=0.2)))  # fmt: skip
        rows = cp.read_rows([first, second])
        assert len(rows) == 5
        counts = cp.plot(rows, tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 0
        assert counts["recall"] == {"calls": (2, 2)} and counts["outside"] == {"calls": (1, 2)}
        assert counts["tv"] == {"ml": (1, 1)} and counts["coverage"] == {"ml": (0, 1)}
        assert counts["pair_diff"] == {"exact pair": (0, 1), "subtype pair": (1, 1)}
        assert counts["seconds"] == {"ml": (0, 1)} and counts["null_calls"] == {}
        results = ROOT / "benchmarks" / "results"
        counts = cp.plot(cp.read_rows([results / "pic-claims-cpu-2026-12-06-new-populations.jsonl",
                                       results / "pic-interaction-cpu-2026-12-07-true-pairs.jsonl"]),
                         tmp_path / "g.png")  # fmt: skip
        assert counts["recall"] == {"calls": (4, 6), "true pairs": (6, 6)}
        assert counts["null_calls"] == {"calls": (6, 6), "true pairs": (6, 6)}
        assert counts["tv"]["ml"] == (1, 6) and counts["pair_diff"]["exact pair"] == (6, 6)
