"""Packaging: import without cupy, kernels found from a checkout and inside the wheel."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _helpers import run_without_cupy

import gpu_sc
from gpu_sc import _kernels

ROOT = Path(__file__).resolve().parents[1]


def test_works_where_cupy_cannot_be_imported():
    code = (
        "import gpu_sc as gsc\n"
        "import anndata as ad, numpy as np\n"
        "a = ad.AnnData(np.arange(12, dtype=np.float32).reshape(3, 4))\n"
        "gsc.pp.normalize_total(a); gsc.pp.log1p(a)\n"
        "print(gsc._backend.gpu_available())\n"
    )
    assert run_without_cupy(code).endswith("False")


def test_no_module_level_cupy_import():
    """cupy is imported inside functions only, so importing gpu_sc never needs it."""
    offenders = []
    for path in (ROOT / "gpu_sc").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level statements only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("cupy", "cupyx")]
    assert not offenders


def test_public_namespace():
    for name in ["calculate_qc_metrics", "filter_cells", "filter_genes", "normalize_total", "log1p",
                 "highly_variable_genes", "scale", "pca", "neighbors"]:
        assert callable(getattr(gpu_sc.pp, name))
    assert callable(gpu_sc.get.to_gpu) and callable(gpu_sc.get.to_cpu)
    # what a user sees of get: scanpy's readers and the device moves, not the helpers imported there
    assert dir(gpu_sc.get) == sorted(gpu_sc.get.__all__)
    assert {"aggregate", "obs_df", "var_df", "rank_genes_groups_df"} <= set(gpu_sc.get.__all__)
    assert all(callable(getattr(gpu_sc.get, n)) for n in gpu_sc.get.__all__)
    with pytest.raises(AttributeError):
        gpu_sc.nothing_here  # noqa: B018


@pytest.mark.parametrize("module", ["pp", "tl", "get", "experimental.pp"])
def test_every_scanpy_name_is_there(module):
    """A user swaps sc.<module>.x for gsc.<module>.x: every public name of scanpy's module (its
    __all__, and tl.pca, which scanpy serves from its module __getattr__ and its tutorials call)
    is there; gsc.tl.pca was missing."""
    import scanpy as sc

    import functools

    theirs = functools.reduce(getattr, module.split("."), sc)
    names = {n for n in getattr(theirs, "__all__", None) or dir(theirs) if not n.startswith("_")}  # (get's __all__
    # holds private helpers too: _get_obs_rep, ...)
    names |= {"pca"} if module == "tl" else set()
    ours = functools.reduce(getattr, module.split("."), gpu_sc)
    assert sorted(n for n in names if not hasattr(ours, n)) == []
    if module == "tl":
        assert gpu_sc.tl.pca is gpu_sc.pp.pca and "pca" in dir(gpu_sc.tl)


#: keywords of ours that scanpy's function lacks, on purpose
OUR_EXTRA_KEYWORDS = {"pp.neighbors": {"algorithm"}, "pp.normalize_total": {"obsm"}, "pp.scale": {"return_mean_std"}}


@pytest.mark.parametrize("module", ["pp", "tl", "get", "experimental.pp"])
def test_every_scanpy_function_shows_scanpys_keywords(module):
    """What help() and an editor's call tips show: each of scanpy's parameters, of the same kind
    and default (compared as shown, by repr), and no more than the listed extras. The tools that
    hand work to scanpy showed `**kwargs` (now `_scanpy_signatures`' stubs, checked here against
    the installed scanpy)."""
    import inspect

    import scanpy as sc

    import functools

    theirs = functools.reduce(getattr, module.split("."), sc)
    ours = functools.reduce(getattr, module.split("."), gpu_sc)
    names = {n for n in getattr(theirs, "__all__", None) or dir(theirs) if not n.startswith("_")}
    problems, checked = [], 0
    for name in sorted(names):
        fn = getattr(theirs, name)
        if isinstance(fn, type) or not callable(fn):
            continue
        want, got = inspect.signature(fn).parameters, inspect.signature(getattr(ours, name)).parameters
        checked += 1
        for p in want.values():
            q = got.get(p.name)
            if q is None or q.kind != p.kind or repr(q.default) != repr(p.default):
                problems.append(f"{name}: {p} shown as {q}")
        extra = set(got) - set(want) - OUR_EXTRA_KEYWORDS.get(f"{module}.{name}", set())
        problems += [f"{name}: extra {got[k]}" for k in sorted(extra)]
    assert problems == [] and checked >= 4


@pytest.mark.parametrize("name", ["to_gpu", "to_cpu", "is_on_gpu"])
def test_get_needs_an_anndata(name):
    import numpy as np

    x = np.ones((2, 2))
    with pytest.raises(TypeError, match=f"{name}: expected an AnnData, got ndarray"):
        getattr(gpu_sc.get, name)(x)
    assert (x == 1).all()


def test_failed_move_leaves_adata(pbmc, monkeypatch):
    """A move that fails part-way (no CuPy, device out of memory) changes nothing: before, X
    was already on the device and a view had become an actual AnnData."""
    import gpu_sc.get as get

    calls = []

    def fail_on_second(x):
        calls.append(x)
        if len(calls) == 2:
            raise MemoryError("out of device memory")
        return x.copy()

    monkeypatch.setattr(get, "array_to_gpu", fail_on_second)
    assert len(pbmc.obsm) >= 1  # X and at least one obsm array to move
    x, view = pbmc.X, pbmc[:10]
    for adata in (pbmc, view):
        calls.clear()
        with pytest.raises(MemoryError, match=r"to_gpu: the GPU ran out of memory .* GiB .*Dask"):
            get.to_gpu(adata)
    assert pbmc.X is x and view.is_view


def test_moved_copy_of_a_view_owns_its_data(pbmc):
    """Host arrays of a view are not reassigned into the copy, which would share the parent's memory."""
    pbmc.X = pbmc.X.toarray()
    view = pbmc[:10]
    out = gpu_sc.get.to_cpu(view, copy=True)
    assert out is not view and not out.is_view and not np.shares_memory(out.X, pbmc.X)
    out.X[0, 0] = -5
    gpu_sc.get.to_cpu(view)
    view.X[0, 1] = -7
    assert pbmc.X[0, 0] != -5 and pbmc.X[0, 1] != -7


def test_kernel_sources_found():
    d = _kernels.kernel_dir()
    assert (d / "common.cuh").is_file()
    for f in _kernels.kernel_files():
        assert '#include "common.cuh"' not in _kernels.source(f)


def test_wheel_ships_kernels(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    wheel = next(tmp_path.glob("gpu_sc-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in [*_kernels.kernel_files(), "common.cuh"]:
        assert f"gpu_sc/kernels/{f}" in names
    assert "gpu_sc/_data/pbmc68k_reduced_counts.h5ad" in names


def test_ruff_passes():
    """The lint configuration of pyproject.toml holds for the package, tests and benchmarks."""
    import importlib.util

    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "gpu_sc", "tests", "benchmarks"],
                          cwd=root, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr



def _cached_njit(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        if isinstance(d, ast.Call) and any(k.arg == "cache" and getattr(k.value, "value", False) for k in d.keywords):
            name = d.func.attr if isinstance(d.func, ast.Attribute) else getattr(d.func, "id", "")
            if name in ("njit", "jit"):
                return True
    return False


def test_cached_numba_functions_can_be_cached():
    """numba refuses to cache a function that calls numba.get_num_threads() inside ("dynamic
    globals"): it warns in every new process and compiles again (scrublet's sparse Gram did).
    Cached functions take the thread count as an argument instead."""
    offenders = []
    for f in (ROOT / "gpu_sc").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and _cached_njit(node):
                calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                         and c.func.attr == "get_num_threads"]  # fmt: skip
                offenders += [f"{f.relative_to(ROOT)}:{node.name}" for _ in calls[:1]]
    assert offenders == []


def test_scanpy_silenced_silences_gpu_sc(monkeypatch, capsys):
    """A swapped script that sets sc.settings.verbosity = 0 (errors only) hears nothing from us."""
    import scanpy as sc

    from gpu_sc._settings import settings

    settings.info("a step's news")
    assert "a step's news" in capsys.readouterr().err
    before = sc.settings.verbosity  # a class property of scanpy's settings: set and restored by hand
    try:
        sc.settings.verbosity = 0
        settings.info("a step's news")
        monkeypatch.setattr(settings, "verbosity", 2)
        settings.progress("halfway")
    finally:
        sc.settings.verbosity = before
    assert capsys.readouterr().err == ""


def test_scanpys_logfile_gets_our_lines(tmp_path, capsys):
    """A swapped script that logs to a file (sc.settings.logfile) finds our lines there: they
    went to the terminal, the file stayed empty."""
    import scanpy as sc

    from gpu_sc._settings import settings

    before = sc.settings.logfile
    try:
        sc.settings.logfile = tmp_path / "log.txt"
        settings.info("WARNING: a step's news")
        sc.settings.logfile.flush()
        assert (tmp_path / "log.txt").read_text() == "WARNING: a step's news\n"
    finally:
        sc.settings.logfile = before
    assert capsys.readouterr().err == ""
    settings.info("back on stderr")
    assert capsys.readouterr().err == "back on stderr\n"


def test_lines_go_to_stdout_in_a_notebook(capsys, monkeypatch):
    """In IPython / Jupyter scanpy logs to stdout; ours went to stderr, which a notebook shows in
    red, apart from scanpy's lines."""
    import builtins

    from gpu_sc._settings import settings

    monkeypatch.setattr(builtins, "__IPYTHON__", True, raising=False)
    settings.info("a step's news")
    assert capsys.readouterr() == ("a step's news\n", "")


def test_readme_quick_start_runs():
    """The README's quick start (its `<!-- quick-start -->` block) runs as written on the CPU and
    leaves scanpy's keys."""
    pytest.importorskip("igraph")
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- quick-start -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(block, "README.md quick start", "exec"), scope)
    adata = scope["adata"]
    assert {"leiden", "n_genes", "pct_counts_mt"} <= set(adata.obs)
    assert adata.var["highly_variable"].sum() == 2000 and adata.obsm["X_pca"].shape == (adata.n_obs, 50)
    assert {"neighbors", "rank_genes_groups", "leiden", "pca", "hvg", "log1p"} <= set(adata.uns)
