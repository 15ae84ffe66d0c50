"""Fixtures and hooks: bundled real data, array types, the `gpu` marker's automatic skip. The
plain helpers the test modules share are in _helpers.py (`from _helpers import ...`)."""

from __future__ import annotations

import anndata as ad
import pytest
from _helpers import CPU_TYPES, GPU_TYPES, _load
from cuda_emu import CXX, emulated_cupy

from gpu_sc._backend import gpu_available


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=CPU_TYPES + tuple(pytest.param(t, marks=pytest.mark.gpu) for t in GPU_TYPES))
def array_type(request):
    return request.param


@pytest.fixture(
    params=[
        pytest.param("cuda", marks=pytest.mark.gpu),
        pytest.param("emulated", marks=pytest.mark.skipif(CXX is None, reason="the kernel emulator needs g++")),
    ]
)
def device(request):
    """Where the device-array tests run: 'cuda' (CuPy on a GPU) or 'emulated' (the stand-in cupy
    of tests/cuda_emu: our kernels compiled for the CPU, device arrays that are NumPy arrays)."""
    if request.param == "cuda":
        yield "cuda"
        return
    with emulated_cupy():
        yield "emulated"


@pytest.fixture(params=CPU_TYPES)
def cpu_type(request):
    return request.param


@pytest.fixture
def pbmc() -> ad.AnnData:
    """700 PBMCs x 765 genes, raw counts (float32 CSR)."""
    return _load("pbmc68k_reduced_counts.h5ad")


@pytest.fixture
def brain() -> ad.AnnData:
    """10,000 mouse brain cells x 1,000 genes; one all-zero cell and duplicate rows."""
    return _load("mouse_brain_10k_subset.h5ad")


@pytest.fixture(params=["pbmc", "brain"])
def counts(request) -> ad.AnnData:
    return request.getfixturevalue(request.param)
