"""Packaging: import without cupy, kernels found from a checkout and inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gpu_sc
from gpu_sc import _kernels

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_import_cupy():
    code = "import sys, gpu_sc; gpu_sc.pp; gpu_sc.get; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_namespace():
    for name in ["calculate_qc_metrics", "filter_cells", "filter_genes", "normalize_total", "log1p"]:
        assert callable(getattr(gpu_sc.pp, name))
    assert callable(gpu_sc.get.to_gpu) and callable(gpu_sc.get.to_cpu)
    with pytest.raises(AttributeError):
        gpu_sc.nothing_here  # noqa: B018


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
