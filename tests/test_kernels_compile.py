"""Every registered kernel instantiation compiles for sm_80 and sm_90 (nvcc, or NVRTC through
cupy); skipped only where neither exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from gpu_sc import _kernels

NVCC = shutil.which("nvcc")
ARCHS = ("80", "90")


def _translation_unit(file: str) -> str:
    """The kernel source plus a reference to every instantiation, which forces nvcc to emit it."""
    refs = "\n".join(
        f"void* gsc_instance_{i} = (void*)&{expr};"
        for i, expr in enumerate(_kernels.name_expressions(file))
    )
    return f"{_kernels.source(file)}\n{refs}\n"


def test_every_cu_file_is_registered():
    on_disk = {p.name for p in _kernels.kernel_dir().glob("*.cu")}
    assert on_disk == set(_kernels.kernel_files())


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", _kernels.kernel_files())
def test_nvcc_compiles(tmp_path, file, arch):
    src = tmp_path / file
    src.write_text(_translation_unit(file))
    ptx = subprocess.run(
        [NVCC, *_kernels.COMPILE_OPTIONS, f"-arch=sm_{arch}", "-ptx", "-o", "-", str(src)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ptx.returncode == 0, ptx.stderr
    entries = re.findall(r"^\.visible \.entry (\S+)\(", ptx.stdout, flags=re.M)
    assert len(entries) == len(_kernels.name_expressions(file))
    assert "fma." not in ptx.stdout  # rounded as on the CPU and in the emulator
    cubin = subprocess.run(
        [NVCC, *_kernels.COMPILE_OPTIONS, f"-arch=sm_{arch}", "-cubin", "-o", str(tmp_path / "k.cubin"), str(src)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cubin.returncode == 0, cubin.stderr


def _nvrtc():
    """cupy's NVRTC binding when the library loads (no GPU needed), else None."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return nvrtc
    except Exception:  # no cupy, or no libnvrtc
        return None


NVRTC = _nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="NVRTC (cupy + libnvrtc) not available")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", _kernels.kernel_files())
def test_nvrtc_compiles(file, arch):
    """What cupy.RawModule does on a GPU machine, minus the device: NVRTC with our name list."""
    prog = NVRTC.createProgram(_kernels.source(file), file, [], [])
    try:
        for expr in _kernels.name_expressions(file):
            NVRTC.addNameExpression(prog, expr)
        try:
            NVRTC.compileProgram(prog, [f"-arch=compute_{arch}", *_kernels.COMPILE_OPTIONS])
        except Exception as e:
            pytest.fail(f"{e}\n{NVRTC.getProgramLog(prog)}")
        for expr in _kernels.name_expressions(file):
            assert NVRTC.getLoweredName(prog, expr)
    finally:
        NVRTC.destroyProgram(prog)


@pytest.mark.gpu
@pytest.mark.parametrize("file", _kernels.kernel_files())
def test_nvrtc_compiles_on_device(file):
    import cupy as cp

    module = _kernels._module(file, cp.cuda.Device().id)
    for expr in _kernels.name_expressions(file):
        assert module.get_function(expr) is not None
