"""The `gpu-sc` command line (CPU only): demo, run against scanpy, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.cli import main
from gpu_sc.datasets import pbmc68k_reduced

ROOT = Path(__file__).resolve().parents[1]


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@pytest.fixture
def counts_file(tmp_path) -> Path:
    path = tmp_path / "in.h5ad"
    pbmc68k_reduced().write_h5ad(path)
    return path


def test_demo_prints_summary(tmp_path, capsys):
    png = tmp_path / "umap.png"
    assert main(["demo", "--device", "cpu", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 5000
    for text in ("[1/9] qc", "[4/9] log1p", "[6/9] pca", "[7/9] neighbors", "[8/9] leiden",
                 "[9/9] umap", "leiden clusters", "UMAP image", "highly variable genes: ", "PC1-5",
                 "cells x genes before", "median total counts",
                 "median genes per cell", "top 5 genes", "wall time per step", "backend"):  # fmt: skip
        assert text in out, text


def test_demo_writes_output(tmp_path, capsys):
    out = tmp_path / "demo.h5ad"
    assert main(["demo", "--device", "cpu", "-o", str(out), "--plot", ""]) == 0
    adata = ad.read_h5ad(out)
    assert "total_counts" in adata.obs and "log1p" in adata.uns


def test_run_matches_scanpy(counts_file, tmp_path):
    sc = pytest.importorskip("scanpy")
    out = tmp_path / "out.h5ad"
    argv = ["run", str(counts_file), "-o", str(out), "--device", "cpu",
            "--steps", "qc,filter,normalize,log1p", "--min-genes", "230", "--min-cells", "20"]  # fmt: skip
    assert main(argv) == 0
    got = ad.read_h5ad(out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ad.read_h5ad(counts_file)
        n_obs, n_vars = ref.shape
        ref.var["mt"] = ref.var_names.str.startswith(("MT-", "mt-"))
        qc_vars = ["mt"] if ref.var["mt"].any() else []
        sc.pp.calculate_qc_metrics(ref, qc_vars=qc_vars, percent_top=[50, 100, 200, 500], inplace=True)
        sc.pp.filter_cells(ref, min_genes=230)
        sc.pp.filter_genes(ref, min_cells=20)
        sc.pp.normalize_total(ref)
        sc.pp.log1p(ref)

    assert got.shape == ref.shape
    assert got.n_obs < n_obs and got.n_vars < n_vars  # the filters did remove cells and genes
    assert got.obs_names.equals(ref.obs_names) and got.var_names.equals(ref.var_names)
    np.testing.assert_allclose(_dense(got.X), _dense(ref.X), rtol=1e-6)
    np.testing.assert_allclose(got.obs["total_counts"], ref.obs["total_counts"], rtol=1e-6)


def test_run_steps_in_given_order(counts_file, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    assert main(["run", str(counts_file), "-o", str(out), "--device", "cpu", "--steps", "log1p,qc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[1/2] log1p") for line in lines)
    assert any(line.startswith("[2/2] qc") for line in lines)


def test_bad_step_exits_2(counts_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(counts_file), "-o", str(tmp_path / "o.h5ad"), "--steps", "qc,bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown step 'bogus'" in err and "qc, filter, normalize, log1p" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.h5ad").exists()


def test_missing_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "missing.h5ad"), "-o", str(tmp_path / "o.h5ad")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing.h5ad" in err and "Traceback" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert gpu_sc.__version__ in capsys.readouterr().out


def test_module_entry_point_runs_demo():
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_sc.cli", "demo", "--plot", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "top 5 genes" in proc.stdout


def test_run_hvg_scale_pca_matches_scanpy(tmp_path, capsys):
    import anndata as ad
    import numpy as np
    import scanpy as sc

    from gpu_sc.datasets import pbmc68k_reduced

    src = tmp_path / "in.h5ad"
    pbmc68k_reduced().write_h5ad(src)
    out = tmp_path / "out.h5ad"
    args = ["run", str(src), "-o", str(out), "--device", "cpu", "--steps",
            "normalize,log1p,hvg,scale,pca", "--n-top-genes", "200", "--n-comps", "10"]  # fmt: skip
    assert main(args) == 0
    ours = ad.read_h5ad(out)
    ref = pbmc68k_reduced()
    sc.pp.normalize_total(ref)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=200)
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=10)
    assert (ours.var["highly_variable"] == ref.var["highly_variable"]).all()
    np.testing.assert_allclose(ours.uns["pca"]["variance_ratio"], ref.uns["pca"]["variance_ratio"], rtol=1e-4)
