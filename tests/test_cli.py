"""The `gpu-sc` command line: demo (CPU, and `--device gpu` on a GPU or the kernel emulator), run
against scanpy, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from _helpers import SUBPROCESS_TIMEOUT, assert_close

import gpu_sc
from gpu_sc.cli import CliError, main
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
    for text in ("[1/10] qc", "[4/10] log1p", "[6/10] pca", "[7/10] neighbors", "[8/10] leiden",
                 "[9/10] umap", "[10/10] markers", "top markers (t-test):", "leiden clusters", "UMAP image",
                 "highly variable genes: ", "PC1-5",
                 "cells x genes before", "median total counts",
                 "median genes per cell", "top 5 genes", "wall time per step", "backend",
                 "[pic] deconvolve", "PIC pair accuracy", "PIC A / B accuracy", "PIC alpha MAE"):  # fmt: skip
        assert text in out, text
    pic_png = tmp_path / "gpu-sc-demo-pic-pairs.png"  # next to the UMAP image
    assert pic_png.stat().st_size > 5000 and f"PIC pair heatmap:         {pic_png}" in out


def test_demo_writes_output(tmp_path, capsys):
    out = tmp_path / "demo.h5ad"
    assert main(["demo", "--device", "cpu", "-o", str(out), "--plot", ""]) == 0
    adata = ad.read_h5ad(out)
    assert "total_counts" in adata.obs and "log1p" in adata.uns


def test_demo_on_the_gpu_equals_the_cpu(device, tmp_path, capsys, monkeypatch):
    """`--device gpu` end to end (on a GPU, or through the kernel emulator): the same steps,
    PIC calls and results as on the CPU, written back from the device."""
    from gpu_sc import _backend

    if device == "emulated":
        monkeypatch.setattr(_backend, "gpu_available", lambda: True)
    paths = {d: tmp_path / f"{d}.h5ad" for d in ("cpu", "gpu")}
    for d, path in paths.items():
        assert main(["demo", "--device", d, "-o", str(path), "--plot", ""]) == 0
    assert "backend: gpu (CuPy" in capsys.readouterr().out
    cpu, gpu = (ad.read_h5ad(p) for p in paths.values())
    assert gpu.shape == cpu.shape and (gpu.obs_names == cpu.obs_names).all()
    assert list(gpu.obs.columns) == list(cpu.obs.columns)
    for col in cpu.obs.columns:
        if col == "leiden":  # a graph tool: rapids-singlecell on a GPU may cluster otherwise
            continue
        if pd.api.types.is_numeric_dtype(cpu.obs[col]):
            # QC of integer counts: exact sums (integer columns equal), then a few elementwise
            # roundings (ratios, log1p, the device's libm) in the column's dtype
            assert_close(gpu.obs[col], cpu.obs[col], dtype=cpu.obs[col].dtype, err_msg=col)
        else:
            assert (gpu.obs[col].astype(str) == cpu.obs[col].astype(str)).all(), col
    # exact totals; normalisation and log1p round a few times in float32 (as test_run_matches_scanpy)
    assert_close(_dense(gpu.X), _dense(cpu.X), dtype=np.float32)
    # Not a rounding bound (kept as set): two eigensolvers (LAPACK, cuSOLVER) on float64
    # covariances summed in another order turn each component by up to that rounding x the
    # largest eigenvalue / its gap to the next (Davis-Kahan), unbounded for near-ties, and the
    # embedding is float32: 1e-3 relative, 1e-4 absolute
    np.testing.assert_allclose(np.abs(gpu.obsm["X_pca"]), np.abs(cpu.obsm["X_pca"]), rtol=1e-3, atol=1e-4)


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
    # integer counts: exact totals; normalisation and log1p round a few times in float32
    assert_close(_dense(got.X), _dense(ref.X), dtype=np.float32)
    assert_close(got.obs["total_counts"], ref.obs["total_counts"], dtype=np.float32)


def test_run_chunk_rows_equals_in_memory(counts_file, tmp_path, capsys):
    """--chunk-rows reads X lazily as Dask blocks; the written result is the in-memory one."""
    pytest.importorskip("dask")
    steps = ["--steps", "qc,filter,normalize,log1p", "--min-genes", "230", "--min-cells", "20", "--device", "cpu"]
    mem, lazy = tmp_path / "mem.h5ad", tmp_path / "lazy.h5ad"
    assert main(["run", str(counts_file), "-o", str(mem), *steps]) == 0
    assert main(["run", str(counts_file), "-o", str(lazy), "--chunk-rows", "99", *steps]) == 0
    assert "as Dask blocks of 99 cells" in capsys.readouterr().out
    a, b = ad.read_h5ad(mem), ad.read_h5ad(lazy)
    assert a.obs.equals(b.obs) and a.var.equals(b.var) and a.uns.keys() == b.uns.keys()
    assert type(a.X) is type(b.X) and (a.X != b.X).nnz == 0
    with pytest.raises(SystemExit) as e:
        main(["run", str(counts_file), "-o", str(tmp_path / "o.h5ad"), "--chunk-rows", "0"])
    assert e.value.code == 2 and "--chunk-rows must be a positive" in capsys.readouterr().err


def test_run_chunk_rows_keeps_raw_and_graphs(counts_file, tmp_path):
    """--chunk-rows writes back .raw and obsp as the in-memory run does (it dropped them)."""
    pytest.importorskip("dask")
    a = ad.read_h5ad(counts_file)
    a.raw = a.copy()
    a.obsp["graph"] = sp.identity(a.n_obs, format="csr", dtype=np.float32)
    src = tmp_path / "with_raw.h5ad"
    a.write_h5ad(src)
    steps = ["--steps", "normalize,log1p", "--device", "cpu"]
    mem, lazy = tmp_path / "mem.h5ad", tmp_path / "lazy.h5ad"
    assert main(["run", str(src), "-o", str(mem), *steps]) == 0
    assert main(["run", str(src), "-o", str(lazy), "--chunk-rows", "99", *steps]) == 0
    m, z = ad.read_h5ad(mem), ad.read_h5ad(lazy)
    assert z.raw is not None and z.raw.shape == m.raw.shape and (z.raw.X != m.raw.X).nnz == 0
    assert set(z.obsp) == set(m.obsp) == {"graph"}


def test_output_paths_checked_before_any_work(counts_file, tmp_path, capsys, monkeypatch):
    """An -o that cannot be written is refused at once, with one line, not after the steps;
    --chunk-rows reads h5ad only."""
    (tmp_path / "afile").write_text("")
    zarr = tmp_path / "in.zarr"
    ad.read_h5ad(counts_file).write_zarr(zarr)
    cases = [
        (["run", str(counts_file), "-o", str(tmp_path)], "is a folder"),
        (["run", str(counts_file), "-o", str(tmp_path / "afile" / "o.h5ad")], "is a file, not a folder"),
        (["run", str(counts_file), "-o", str(counts_file), "--chunk-rows", "99"], "is the input"),
        (["run", str(zarr), "-o", str(tmp_path / "o.h5ad"), "--chunk-rows", "99"], "reads h5ad files only"),
        (["demo", "--plot", str(tmp_path / "afile" / "u.png")], "is a file, not a folder"),
        (["demo", "--plot", str(tmp_path / "u.xyz")], "matplotlib cannot write '.xyz' files"),
        (["demo", "--plot", str(tmp_path / "gpu-sc-demo-pic-pairs.png")], "give the UMAP another name"),
        (["demo", "--plot", str(tmp_path / "in")], "is a folder"),  # in.png: the name written
    ]
    (tmp_path / "in.png").mkdir()
    # a folder named .zarr that is not a store would be replaced by the output: refused, kept
    notes = tmp_path / "results.zarr"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    (tmp_path / "file.zarr").write_text("")
    cases += [(["run", str(counts_file), "-o", str(notes)], "is a folder but not a zarr store"),
              (["run", str(counts_file), "-o", str(tmp_path / "file.zarr")], "a .zarr output is a folder")]
    for argv, expect in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and expect in err and "Traceback" not in err, (argv, err)
    assert (notes / "notes.txt").read_text() == "mine"
    assert main(["run", str(counts_file), "-o", str(zarr), "--steps", "qc"]) == 0  # a store is replaced
    assert "total_counts" in ad.read_zarr(zarr).obs
    # zarr format 2 (readable with zarr 2 and 3), without anndata's notice of its coming default
    assert (zarr / ".zgroup").exists() and "zarr v2" not in capsys.readouterr().err
    if hasattr(ad.settings, "zarr_write_format"):  # a format the user chose is kept
        monkeypatch.setenv("ANNDATA_ZARR_WRITE_FORMAT", "3")
        with ad.settings.override(zarr_write_format=3):
            assert main(["run", str(counts_file), "-o", str(zarr), "--steps", "qc"]) == 0
        assert (zarr / "zarr.json").exists()


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
        cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
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
    r = ref.uns["pca"]["variance_ratio"]  # scanpy's PCA of float32 data in float32: sums over cells
    assert_close(ours.uns["pca"]["variance_ratio"], r, dtype=np.float32, n_terms=ours.n_obs, scale="max")


# --- gpu-sc pic ----------------------------------------------------------------------------------

PIC_T = ["CD4+/CD25 T Reg", "CD8+ Cytotoxic T", "CD8+/CD45RA+ Naive Cytotoxic", "CD4+/CD45RO+ Memory"]
PIC_B = ["Dendritic", "CD14+ Monocyte"]


@pytest.fixture(scope="module")
def pic_files(tmp_path_factory) -> dict[str, Path]:
    """Reference singlets (70% of the bundled PBMCs) and 60 synthetic T + DC/monocyte PICs built
    from the other 30%, plus a PIC file with non-integer counts."""
    d = tmp_path_factory.mktemp("pic")
    cells = pbmc68k_reduced()
    source = np.random.default_rng(0).random(cells.n_obs) < 0.3
    pics = gpu_sc.pic.simulate_pics(cells[source], groupby="bulk_labels", a=PIC_T, b=PIC_B,
                                    n_pics=60, seed=1)  # fmt: skip
    files = {"singlets": d / "singlets.h5ad", "pics": d / "pics.h5ad", "halves": d / "halves.h5ad",
             "reversed": d / "reversed.h5ad"}
    cells[~source].copy().write_h5ad(files["singlets"])
    pics.write_h5ad(files["pics"])
    halves = pics.copy()
    halves.X = halves.X * 0.5
    halves.write_h5ad(files["halves"])
    pics[:, ::-1].copy().write_h5ad(files["reversed"])  # the same genes in another order
    return files


def _pic_argv(files: dict[str, Path], out: Path, **override: str) -> list[str]:
    opts = {"--singlets": str(files["singlets"]), "--pics": str(files["pics"]),
            "--groupby": "bulk_labels", "--a": ",".join(PIC_T), "--b": ",".join(PIC_B),
            "-o": str(out)}  # fmt: skip
    opts.update({k.replace("_", "-") if k.startswith("--") else k: v for k, v in override.items()})
    return ["pic"] + [x for kv in opts.items() for x in kv]


def _digests(files: dict[str, Path]) -> dict[str, str]:
    import hashlib

    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}


def test_pic_end_to_end(pic_files, tmp_path, capsys):
    out = tmp_path / "sub" / "out.h5ad"
    # spaces around the commas are dropped
    assert main(_pic_argv(pic_files, out, **{"--b": "Dendritic , CD14+ Monocyte"})) == 0
    text = capsys.readouterr().out
    for s in ("[1/4] read singlets", "[2/4] read pics", "[3/4] deconvolve", "[4/4] write",
              "PICs deconvolved:", "status counts:", "top pairs (A + B):", "accuracy vs truth:"):  # fmt: skip
        assert s in text, s
    got = ad.read_h5ad(out)
    src = ad.read_h5ad(pic_files["pics"])
    assert got.obs_names.equals(src.obs_names)
    np.testing.assert_array_equal(_dense(got.X), _dense(src.X))
    assert {"pic_a", "pic_b", "pic_alpha", "pic_status"} <= set(got.obs.columns)
    assert got.uns["pic"]["method"] == "ml" and list(got.uns["pic"]["groups_b"]) == PIC_B
    ok = got.obs["pic_status"].astype(str) == "ok"
    assert ok.mean() > 0.9
    assert set(got.obs.loc[ok, "pic_a"].astype(str)) <= set(PIC_T)
    assert set(got.obs.loc[ok, "pic_b"].astype(str)) <= set(PIC_B)
    alpha = got.obs.loc[ok, "pic_alpha"].to_numpy(float)
    assert np.all((alpha >= 0) & (alpha <= 1))
    # B (DC vs monocyte) is easy on real PBMCs; the summary reports the same number
    hit_b = (got.obs["pic_b"].astype(str) == got.obs["true_b"].astype(str))[ok].mean()
    assert hit_b > 0.7
    assert f"B {hit_b:.3f}" in text
    assert f"{int(ok.sum())} of {got.n_obs} (status 'ok')" in text


def test_pic_plots(pic_files, tmp_path, capsys):
    plots = tmp_path / "plots"
    argv = _pic_argv(pic_files, tmp_path / "out.h5ad", **{"--plots": str(plots), "--seed": "3"})
    assert main(argv) == 0
    assert "[5/5] plots" in capsys.readouterr().out
    for name in ("pic-pairs.png", "pic-alpha.png"):
        png = plots / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ({"--singlets": "{tmp}/missing.h5ad"}, ["--singlets", "missing.h5ad", "not found"]),
        ({"--pics": "{tmp}/nope.h5ad"}, ["--pics", "nope.h5ad", "not found"]),
        ({"--groupby": "grp"}, ["--groupby 'grp'", "not a column", "bulk_labels"]),
        ({"--a": "nope,CD8+ Cytotoxic T"}, ["--a", "['nope']", "available groups", "CD19+ B"]),
        ({"--b": "Dendritic,CD8+ Cytotoxic T"}, ["['CD8+ Cytotoxic T']", "both --a and --b"]),
        ({"--a": " , "}, ["--a", "no group names"]),
        ({"--method": "bogus"}, ["--method 'bogus'", "'ml'"]),
        ({"--n-umis": "0"}, ["--n-umis 0", "positive"]),
        ({"--alpha-model": "lasso"}, ["--alpha-model 'lasso'", "'regression', 'posterior'"]),
        ({"--seed": "-1"}, ["--seed -1", "0 or more"]),
        ({"--plots": "{pics}/sub"}, ["--plots", "is a file, not a folder"]),  # once after the deconvolution
        ({"--pics": "{halves}"}, ["deconvolve", "integer counts"]),
        ({"-o": "{pics}"}, ["is the --pics input", "another output path"]),
        # from a second audit (the first two failed after the work, the output written; the next
        # two ran, a huge --n-umis failing at the write; the last two named deconvolve's arguments)
        ({"--plots": "{tmp}/out.h5ad"}, ["--plots", "is the -o output's path"]),
        ({"--pics": "{singlets}"}, ["--singlets and --pics are the same file"]),
        ({"--n-umis": "99999999999999999999"}, ["--n-umis 99999999999999999999", "at most 2,147,483,647"]),
        ({"--method": "mixture", "--alpha-model": "posterior"}, ["--alpha-model posterior chooses ml's alpha"]),
        ({"--pics": "{reversed}"}, ["deconvolve (--method ml): PICs and singlets must have the same var_names", "(the same genes in another order)"]),
        ({"--method": "picseq"}, ["deconvolve (--method picseq): --method picseq finds no marker genes between the "
                                  "two groups of --b (", "Give --b three or more groups, or use --method ml."]),
    ],
)  # fmt: skip
def test_pic_bad_input_exits_2(pic_files, tmp_path, capsys, override, expect):
    before = _digests(pic_files)
    out = tmp_path / "out.h5ad"
    fill = {"tmp": str(tmp_path), **{k: str(v) for k, v in pic_files.items()}}
    argv = _pic_argv(pic_files, out, **{k: v.format(**fill) for k, v in override.items()})
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu-sc: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for s in expect:
        assert s in err, (s, err)
    assert not out.exists()
    assert _digests(pic_files) == before


def test_columns_and_paths_later_steps_make_pass_the_early_checks(counts_file, tmp_path, monkeypatch):
    """From a review of those checks: columns that filter, scrublet and hvg make (obs n_genes,
    doublet_score; var highly_variable for --qc-vars) pass --regress-keys' check, a zarr store
    named with a trailing '/' is written, and deconvolve's warnings reach the user in the
    command's terms (those refused or failed: a KeyError from the qc probe)."""
    import gpu_sc.cli as cli

    slim = ad.read_h5ad(counts_file)
    slim.obs = slim.obs[["bulk_labels", "phase"]]
    path = tmp_path / "slim.h5ad"
    slim.write_h5ad(path)
    for argv in (["--steps", "filter,normalize,log1p,regress_out", "--regress-keys", "n_genes", "--min-genes", "10"],
                 ["--steps", "normalize,log1p,hvg,qc,regress_out", "--qc-vars", "highly_variable",
                  "--regress-keys", "total_counts", "--n-top-genes", "50"],
                 ["--steps", "scrublet,normalize,log1p,regress_out", "--regress-keys", "doublet_score"]):  # fmt: skip
        assert main(["run", str(path), "-o", str(tmp_path / "o.h5ad"), "--device", "cpu", *argv]) == 0, argv
    store = tmp_path / "o.zarr"
    assert main(["run", str(path), "-o", f"{store}/", "--device", "cpu", "--steps", "qc"]) == 0
    assert ad.read_zarr(store).n_obs == slim.n_obs

    def shallow(*_a, **_k):
        warnings.warn("deconvolve: 9 of 10 PICs have fewer UMIs; pass a lower n_umis= to down-sample them all to "
                      "it.", UserWarning, stacklevel=2)  # fmt: skip

    monkeypatch.setattr(gpu_sc.pic, "deconvolve", shallow)
    with pytest.warns(UserWarning, match=r"deconvolve \(--method ml\): 9 of 10 .* pass a lower --n-umis to down"):
        cli._deconvolve(None, None, method="ml")


def test_interrupt_and_empty_pics(pic_files, tmp_path, capsys, monkeypatch):
    """Ctrl-C ends in one line and status 130 (a traceback before); a PIC file of no cells is
    refused before the training (it ran it and printed an empty table)."""
    import gpu_sc.cli as cli

    def interrupted(_args):
        raise KeyboardInterrupt

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), interrupted))
    with pytest.raises(SystemExit) as e:
        main(["run", str(pic_files["pics"]), "-o", str(tmp_path / "o.h5ad")])
    assert e.value.code == 130 and capsys.readouterr().err.strip() == \
        "gpu-sc: interrupted (an output is written whole or not at all)"
    monkeypatch.undo()
    empty = tmp_path / "empty.h5ad"
    ad.read_h5ad(pic_files["pics"])[:0].copy().write_h5ad(empty)
    with pytest.raises(SystemExit) as e:
        main(_pic_argv(pic_files, tmp_path / "out.h5ad", **{"--pics": str(empty)}))
    assert e.value.code == 2 and "holds no PICs (0 cells)" in capsys.readouterr().err


def _with_func(parser, func):
    """`parser` whose subcommands all run `func`."""
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser


def test_failed_write_leaves_no_folder_it_made(tmp_path):
    """write_output makes the output's missing folders; a write that fails removes them again (an
    empty folder was left) and leaves the folders that were there."""
    from gpu_sc.cli import write_output

    bad = ad.AnnData(np.zeros((2, 2)))
    bad.uns["x"] = object()  # h5ad cannot store it
    with pytest.raises(Exception):  # noqa: B017 (anndata's own error type)
        write_output(bad, str(tmp_path / "new" / "sub" / "o.h5ad"))
    assert list(tmp_path.iterdir()) == []


def _write_10x(folder: Path, a: ad.AnnData, *, h5: bool) -> Path:
    """`a`'s counts as Cell Ranger writes them: a v3 .h5 (matrix/ with features/) or a matrix
    folder (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz), genes x cells."""
    import gzip

    import h5py
    import scipy.io

    x = sp.csc_matrix(a.X.T.astype(np.int32))  # genes x cells, CSC by cell = CSR of cells x genes
    genes, cells = a.var_names.to_numpy(), a.obs_names.to_numpy()
    if h5:
        path = folder / "filtered_feature_bc_matrix.h5"
        with h5py.File(path, "w") as f:
            m = f.create_group("matrix")
            for k, v in (("data", x.data), ("indices", x.indices), ("indptr", x.indptr), ("shape", x.shape),
                         ("barcodes", cells.astype("S"))):  # fmt: skip
                m.create_dataset(k, data=v)
            feat = m.create_group("features")
            feat.create_dataset("id", data=np.char.add("ENSG", genes.astype(str)).astype("S"))
            feat.create_dataset("name", data=genes.astype("S"))
            feat.create_dataset("feature_type", data=np.full(len(genes), b"Gene Expression"))
            feat.create_dataset("genome", data=np.full(len(genes), b"GRCh38"))
        return path
    path = folder / "filtered_feature_bc_matrix"
    path.mkdir()
    with gzip.open(path / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, sp.coo_matrix(x))
    with gzip.open(path / "features.tsv.gz", "wt") as f:
        f.writelines(f"ENSG{g}\t{g}\tGene Expression\n" for g in genes)
    with gzip.open(path / "barcodes.tsv.gz", "wt") as f:
        f.writelines(f"{c}\n" for c in cells)
    return path


@pytest.mark.parametrize("kind", ["10x-h5", "10x-mtx", "zarr"])
def test_run_reads_what_a_reanalysis_starts_from(tmp_path, kind, capsys):
    """`gpu-sc run` on a Cell Ranger .h5 (v3), a 10x matrix folder and a zarr store: the same
    counts in, the same steps run; output as zarr where the name says so."""
    a = pbmc68k_reduced()[:200].copy()
    a.var_names_make_unique()
    if kind == "zarr":
        src = tmp_path / "in.zarr"
        a.write_zarr(src)
    else:
        src = _write_10x(tmp_path, a, h5=kind == "10x-h5")
    out = tmp_path / ("o.zarr" if kind == "zarr" else "o.h5ad")
    assert main(["run", str(src), "-o", str(out), "--steps", "qc", "--device", "cpu"]) == 0
    got = ad.read_zarr(out) if kind == "zarr" else ad.read_h5ad(out)
    assert list(got.obs_names) == list(a.obs_names) and list(got.var_names) == list(a.var_names)
    np.testing.assert_array_equal(_dense(got.X), _dense(a.X))
    np.testing.assert_array_equal(got.obs["total_counts"].to_numpy(), _dense(a.X).sum(axis=1))
    assert "Traceback" not in capsys.readouterr().err


def test_unreadable_input_names_the_formats(tmp_path, capsys):
    bad = tmp_path / "counts.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(bad), "-o", str(tmp_path / "o.h5ad")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "counts.csv" in err and "10x Cell Ranger .h5" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_reads_the_real_barnyard_h5(tmp_path):
    """The shared 10x hgmm_1k_v3 Cell Ranger 3 file (where present): read as scanpy reads it."""
    from _helpers import SHARED

    src = SHARED / "hgmm_1k_v3" / "filtered_feature_bc_matrix.h5"
    if not src.is_file():
        pytest.skip(f"{src} not present")
    import scanpy as sc

    out = tmp_path / "o.h5ad"
    assert main(["run", str(src), "-o", str(out), "--steps", "qc", "--device", "cpu"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.read_10x_h5(src)
    ref.var_names_make_unique()
    got = ad.read_h5ad(out)
    assert got.shape == ref.shape == (1046, 112137) and got.var_names.equals(ref.var_names)
    assert (sp.csr_matrix(got.X) != sp.csr_matrix(ref.X)).nnz == 0


def test_run_harmony_step_feeds_neighbors(tmp_path, capsys):
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    cells = pbmc68k_reduced()
    cells.obs["run"] = np.where(np.arange(cells.n_obs) < 350, "a", "b")
    cells.write_h5ad(src)
    steps = ["--device", "cpu", "--steps", "normalize,log1p,pca,harmony,neighbors", "--n-comps", "10"]
    assert main(["run", str(src), "-o", str(out), *steps, "--batch-key", "run"]) == 0
    got = ad.read_h5ad(out)
    assert got.obsm["X_pca_harmony"].shape == (cells.n_obs, 10)
    assert got.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    with pytest.raises(SystemExit) as e:
        main(["run", str(src), "-o", str(tmp_path / "o.h5ad"), *steps])
    assert e.value.code == 2 and "--batch-key" in capsys.readouterr().err


def test_run_regress_out_step_matches_scanpy(tmp_path, capsys):
    import scanpy as sc

    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    pbmc68k_reduced().write_h5ad(src)
    steps = ["--device", "cpu", "--steps", "qc,normalize,log1p,regress_out", "--regress-keys", "total_counts"]
    assert main(["run", str(src), "-o", str(out), *steps]) == 0
    ref = pbmc68k_reduced()
    sc.pp.calculate_qc_metrics(ref, inplace=True, percent_top=None)
    sc.pp.normalize_total(ref)
    sc.pp.log1p(ref)
    sc.pp.regress_out(ref, ["total_counts"])
    got = ad.read_h5ad(out).X
    assert np.abs(got - ref.X).max() <= 1e-5 * np.abs(ref.X).max()
    with pytest.raises(SystemExit):
        main(["run", str(src), "-o", str(out), "--steps", "regress_out", "--device", "cpu"])
    assert "not in the input's obs (the 'qc' step, put before regress_out, makes total_counts" in \
        capsys.readouterr().err


def test_run_markers_method(tmp_path):
    pytest.importorskip("igraph")
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    pbmc68k_reduced().write_h5ad(src)
    steps = ["--device", "cpu", "--steps", "normalize,log1p,pca,neighbors,leiden,markers", "--n-comps", "10",
             "--markers-method", "wilcoxon"]  # fmt: skip
    assert main(["run", str(src), "-o", str(out), *steps]) == 0
    assert ad.read_h5ad(out).uns["rank_genes_groups"]["params"]["method"] == "wilcoxon"


def test_run_scrublet_step_equals_the_api(tmp_path):
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    cells = pbmc68k_reduced()
    cells.write_h5ad(src)
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "scrublet"]) == 0
    got = ad.read_h5ad(out)
    gpu_sc.pp.scrublet(cells)
    assert np.array_equal(got.obs["doublet_score"], cells.obs["doublet_score"])
    assert (got.obs["predicted_doublet"] == cells.obs["predicted_doublet"]).all()
    # per batch, a category without cells no batch (the early batch-size check passes it)
    cells = pbmc68k_reduced()
    cells.obs["half"] = pd.Categorical(np.where(np.arange(cells.n_obs) % 2, "a", "b"), categories=["a", "b", "none"])
    cells.write_h5ad(src)
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "scrublet", "--batch-key", "half"]) == 0
    gpu_sc.pp.scrublet(cells, batch_key="half")
    assert np.array_equal(ad.read_h5ad(out).obs["doublet_score"], cells.obs["doublet_score"])
    # from a review: a batch too small in the input but dropped by the filter before scrublet
    # (10 cells of one count each) is no reason to refuse the run
    junk = ad.AnnData(sp.csr_matrix((np.ones(10, np.float32), (np.arange(10), np.arange(10))), shape=(10, cells.n_vars)),
                      obs=pd.DataFrame({"half": pd.Categorical(["none"] * 10, categories=["a", "b", "none"])},
                                       index=[f"junk{i}" for i in range(10)]), var=cells.var[[]])  # fmt: skip
    ad.concat([cells[:, :].copy(), junk], merge="first").write_h5ad(src)
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "filter,scrublet", "--batch-key",
                 "half", "--min-genes", "5"]) == 0  # fmt: skip


def test_outputs_are_written_whole_or_not_at_all(counts_file, tmp_path, capsys, monkeypatch):
    """A write that fails (a full disk) leaves the earlier output as it was and no temporary
    file; a .zarr output can be written again (a store is a folder); a folder the user cannot
    write in is refused before any work."""
    out = tmp_path / "o.h5ad"
    out.write_text("earlier output")

    def failing(self, path, *a, **k):
        Path(path).write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", failing)
    with pytest.raises(SystemExit):
        main(["run", str(counts_file), "-o", str(out), "--device", "cpu", "--steps", "qc"])
    assert out.read_text() == "earlier output" and sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "o.h5ad"]
    monkeypatch.undo()
    store = tmp_path / "o.zarr"
    for _ in range(2):
        assert main(["run", str(counts_file), "-o", str(store), "--device", "cpu", "--steps", "qc"]) == 0
    assert "total_counts" in ad.read_zarr(store).obs
    monkeypatch.setattr("gpu_sc.cli.os.access", lambda *a: False)  # as on a read-only file system
    with pytest.raises(SystemExit) as e:
        main(["run", str(counts_file), "-o", str(tmp_path / "new.h5ad"), "--steps", "qc"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cannot write in" in err and "[1/1]" not in err


def test_bad_option_values_and_missing_graph(counts_file, tmp_path, capsys, monkeypatch):
    """Option values are refused before the input is read (they failed in their step, after the
    steps before it), --qc-vars before the first step."""
    ran = []
    monkeypatch.setattr("gpu_sc.cli.read_input", lambda path: ran.append(path) or pbmc68k_reduced())
    for argv, expect in ((["--min-genes", "-5"], "--min-genes: must be an integer of 0 or more"), (["--resolution", "-1"], "above 0"),
                         (["--n-neighbors", "1"], "--n-neighbors: must be an integer of 2 or more"),
                         (["--n-comps", "0"], "--n-comps: must be an integer of 1 or more"),
                         (["--n-top-genes", "-5"], "--n-top-genes: must be an integer of 1 or more"),
                         (["--target-sum", "nan"], "--target-sum: must be a finite number above 0")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(["run", str(counts_file), "-o", str(tmp_path / "o.h5ad"), "--device", "cpu", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and expect in err and "Traceback" not in err, (argv, err)
    assert not ran
    for argv, expect in ((["--steps", "qc,leiden"], "put neighbors before it"),
                         (["--steps", "qc,normalize", "--qc-vars", "mt,bogus"], "--qc-vars: 'bogus' not a column")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(["run", str(counts_file), "-o", str(tmp_path / "o.h5ad"), "--device", "cpu", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and expect in err and "Traceback" not in err, (argv, err)
    assert "[1/2] qc" not in capsys.readouterr().out and not (tmp_path / "o.h5ad").exists()


def test_options_checked_before_the_first_step(counts_file, tmp_path, capsys):
    """From a new user's audit: --batch-key and a later qc's --qc-vars are checked against the
    input before the first step, and --chunk-rows with a step that needs the cells in memory is
    refused at once with advice for the command line (they failed after the steps before them);
    other suffixes for -o, an empty path and a truncated file are named; --traceback is taken
    after the subcommand too; warnings are one line each."""
    out = str(tmp_path / "o.h5ad")
    for argv, expect in (
        (["--steps", "qc,filter,normalize,log1p,pca,harmony", "--batch-key", "nosuch"], "--batch-key: 'nosuch' not a column"),
        (["--steps", "normalize,log1p,hvg,pca,qc", "--qc-vars", "nosuch"], "--qc-vars: 'nosuch' not a column"),
        (["--steps", "qc,filter,scrublet", "--chunk-rows", "300"], "step 'scrublet' needs the cells in memory"),
        (["--steps", "qc,filter,scrublet", "--batch-key", "phase,louvain"], "step 'scrublet' takes one batch column"),
        # from a docs walkthrough: a batch too small for scrublet's PCA failed after qc and filter
        (["--steps", "qc,normalize,log1p,scrublet", "--batch-key", "phase"],
         "'phase' has batches of 30 cells or fewer ('G2M': 17)"),
        (["--steps", "qc,normalize,log1p,pca,neighbors,leiden,markers", "--chunk-rows", "300",
          "--markers-method", "wilcoxon"], "use --markers-method t-test with --chunk-rows"),
        # from a second audit: these failed when their step came, after the steps before it
        (["--steps", "qc,filter,normalize,log1p,pca,harmony"], "step 'harmony' corrects the PCA for batches: pass"),
        (["--steps", "qc,filter,normalize,log1p,hvg,scale,regress_out", "--regress-keys", "total_counts,pct_mito"],
         "--regress-keys: 'pct_mito' neither in the input's obs nor made by the 'qc' step"),
        (["--steps", "qc,filter,normalize,umap,neighbors"], "step 'umap' needs a neighbour graph, which the input"),
        (["--steps", "qc,filter,normalize,log1p,pca,neighbors,markers,leiden"], "step 'markers' needs Leiden"),
        (["--steps", "qc", "-o", str(tmp_path / "dir") + "/"], "names a folder; give a file name"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(["run", str(counts_file), "-o", out, "--device", "cpu", *argv])
        captured = capsys.readouterr()
        assert e.value.code == 2 and expect in captured.err and "[1/" not in captured.out, (argv, captured)
    for path, flag, expect in ((str(tmp_path / "o.csv"), "-o", "gpu-sc writes an .h5ad file"), ("", "-o", "-o is empty"),
                               ("", "in", "input file not found: ''")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["run", path if flag == "in" else str(counts_file), "-o", out if flag == "in" else path])
        assert expect in capsys.readouterr().err
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(counts_file.read_bytes()[:200_000])
    with pytest.raises(SystemExit):
        main(["run", str(cut), "-o", out])
    assert "is the file complete" in capsys.readouterr().err
    with pytest.raises(CliError, match="step 'markers' needs Leiden clusters, which the input lacks: put leiden "
                                       "before it"):  # --traceback after the subcommand: raised
        main(["run", str(counts_file), "-o", out, "--device", "cpu", "--steps", "markers", "--traceback"])
    upper = tmp_path / "o.ZARR"  # a zarr store whatever the suffix's case
    assert main(["run", str(counts_file), "-o", str(upper), "--device", "cpu", "--steps", "qc"]) == 0
    assert upper.is_dir() and ad.read_zarr(upper).n_obs == 700
    assert main(["run", str(counts_file), "-o", out, "--device", "cpu", "--steps", "normalize,log1p,log1p"]) == 0
    err = capsys.readouterr().err
    assert "gpu-sc: warning:" in err and "already log-transformed" in err and ".py:" not in err
    with pytest.raises(SystemExit) as e:  # a filter that keeps nothing stops there, not at a later step
        main(["run", str(counts_file), "-o", out, "--device", "cpu", "--steps", "qc,filter,hvg", "--min-genes",
              "100000"])  # fmt: skip
    assert e.value.code == 2 and "step 'filter' left 0 cells x 0 genes of 700 cells" in capsys.readouterr().err


def test_run_option_edge_cases(counts_file, tmp_path, capsys):
    """--qc-vars mt (the default's column) works, and a column a step before qc makes; the
    default qc marks MT genes afresh (a stale var['mt'] is replaced); PCA after hvg takes fewer
    components than HVGs; a step given twice keeps both times; regress_out without MT genes
    says why, and only then."""
    out = tmp_path / "o.h5ad"
    stale = pbmc68k_reduced()
    stale.var["mt"] = False
    stale.var["mt_free"] = ~stale.var_names.str.startswith("MT-")
    stale.write_h5ad(tmp_path / "stale.h5ad")
    assert main(["run", str(tmp_path / "stale.h5ad"), "-o", str(out), "--device", "cpu", "--steps", "qc"]) == 0
    assert ad.read_h5ad(out).obs["pct_counts_mt"].gt(0).any()
    assert main(["run", str(counts_file), "-o", str(out), "--device", "cpu", "--steps", "normalize,log1p,hvg,qc",
                 "--qc-vars", "highly_variable", "--n-top-genes", "20"]) == 0  # fmt: skip
    assert "pct_counts_highly_variable" in ad.read_h5ad(out).obs
    with pytest.raises(SystemExit):  # --qc-vars left MT genes out (the stale column has none): not "none found"
        main(["run", str(tmp_path / "stale.h5ad"), "-o", str(out), "--device", "cpu", "--steps", "qc,regress_out",
              "--qc-vars", "mt_free"])  # fmt: skip
    err = capsys.readouterr().err
    assert "'pct_counts_mt' neither in the input's obs nor made by the 'qc' step" in err and "found no MT" not in err
    assert main(["run", str(counts_file), "-o", str(out), "--device", "cpu", "--qc-vars", "mt",
                 "--steps", "qc,normalize,log1p,hvg,pca,qc", "--n-top-genes", "20"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    got = ad.read_h5ad(out)
    assert "pct_counts_mt" in got.obs and got.obsm["X_pca"].shape[1] == 19
    assert "pca: --n-comps 50 is more than" in text and "computing 19" in text  # said, not silent
    steps = [float(line.split()[2]) for line in text.splitlines() if line.startswith("[")]
    total = float(text.split(" s in steps")[0].rsplit("(", 1)[1])
    assert len(steps) == 6 and abs(total - sum(steps)) <= 0.005 * len(steps)  # each step's time rounded
    no_mt = pbmc68k_reduced()
    no_mt = no_mt[:, ~no_mt.var_names.str.startswith("MT-")].copy()
    no_mt.write_h5ad(tmp_path / "no_mt.h5ad")
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "no_mt.h5ad"), "-o", str(out), "--device", "cpu", "--steps", "qc,regress_out"])
    assert "qc found no MT-/mt- genes" in capsys.readouterr().err


def test_demo_without_scikit_learn_reads_alpha_from_the_posterior(tmp_path, capsys, monkeypatch):
    """The demo's PIC part needs no extra: without scikit-learn, ml's alpha is its posterior
    mean (the demo stopped with ml's ImportError before its summary and -o)."""
    monkeypatch.setitem(sys.modules, "sklearn", None)
    out = tmp_path / "d.h5ad"
    assert main(["demo", "--device", "cpu", "--plot", "", "-o", str(out)]) == 0
    assert "posterior mean: the alpha regression needs scikit-learn" in capsys.readouterr().out and out.exists()


def test_demo_without_umap_draws_no_stale_embedding(tmp_path, capsys, monkeypatch):
    """Without scanpy's graph tools the demo skips leiden and umap; the bundled data's old
    X_umap must not be drawn as if it were this run's."""
    monkeypatch.setattr("gpu_sc.cli._graph_tools_available", lambda: False)
    png = tmp_path / "u.png"
    assert main(["demo", "--device", "cpu", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "UMAP image:" in out and "skipped: umap did not run" in out and not png.exists()


def test_run_option_values_reach_their_steps(tmp_path):
    """--target-sum, --n-neighbors, --resolution and the harmony step take effect with the values
    given (each could be replaced by its default, or harmony run for no iteration, unseen)."""
    src = tmp_path / "in.h5ad"
    cells = pbmc68k_reduced()
    cells.obs["run"] = np.where(np.arange(cells.n_obs) < 350, "a", "b")
    cells.write_h5ad(src)
    out = tmp_path / "norm.h5ad"
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "normalize", "--target-sum", "5000"]) == 0
    np.testing.assert_allclose(np.asarray(ad.read_h5ad(out).X.sum(axis=1)).ravel(), 5000, rtol=1e-4)
    out = tmp_path / "graph.h5ad"
    steps = "normalize,log1p,pca,harmony,neighbors,leiden"
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", steps, "--n-comps", "10",
                 "--batch-key", "run", "--n-neighbors", "7", "--resolution", "0.4"]) == 0  # fmt: skip
    got = ad.read_h5ad(out)
    assert got.uns["neighbors"]["params"]["n_neighbors"] == 7
    assert got.uns["leiden"]["params"]["resolution"] == 0.4
    ref = ad.AnnData(obs=got.obs[["run"]].copy(), obsm={"X_pca": got.obsm["X_pca"]})
    gpu_sc.pp.harmony_integrate(ref, "run")
    np.testing.assert_allclose(got.obsm["X_pca_harmony"], ref.obsm["X_pca_harmony"], rtol=1e-6, atol=1e-6)
    assert not np.allclose(got.obsm["X_pca_harmony"], got.obsm["X_pca"], atol=1e-3)


def test_scaled_input_refused_before_normalize(tmp_path, capsys):
    """A scaled X (negative values) reached log1p after qc, filter and normalize, which refused it
    only where a normalised value fell below -1 (and took -0.3): now refused before the first step,
    in memory and with --chunk-rows; steps that take scaled data still run on it."""
    a = pbmc68k_reduced()
    a.X = sp.csr_matrix(a.X)
    a.X.data[0] = -0.3
    src = tmp_path / "scaled.h5ad"
    a.write_h5ad(src)
    out = tmp_path / "o.h5ad"
    for extra in ([], ["--chunk-rows", "200"]):
        with pytest.raises(SystemExit) as e:
            main(["run", str(src), "-o", str(out), "--device", "cpu", "--min-genes", "0", *extra])
        captured = capsys.readouterr()
        assert e.value.code == 2, captured.err
        assert "step 'normalize' expects counts, and the input's X holds 1 negative value (" in captured.err
        assert "[1/4] qc" not in captured.out and not out.exists()
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "scale,pca"]) == 0
    # a step that makes negative values before them: the input is not taken as counts
    assert main(["run", str(src), "-o", str(out), "--device", "cpu", "--steps", "scale,normalize"]) == 0
    a.X.data[1] = -0.2
    a.write_h5ad(src)
    with pytest.raises(SystemExit):
        main(["run", str(src), "-o", str(tmp_path / "o2.h5ad"), "--device", "cpu", "--steps", "log1p"])
    assert "step 'log1p' expects counts, and the input's X holds 2 negative values" in capsys.readouterr().err
