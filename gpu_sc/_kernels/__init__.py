"""CUDA kernels: sources, compilation, and (in the submodules) launch wrappers.

`kernels/*.cu` sit at the repository root and travel inside the wheel as `gpu_sc/kernels`.
Each `.cu` file has one wrapper module here of the same stem (`row_reduce.cu` ->
`gpu_sc._kernels.row_reduce`) that declares its templates with `register(...)` and holds one
launch wrapper per kernel; the wrapper owns the launch geometry and checks dtypes and
contiguity, so call sites never spell grid or block sizes. Each file becomes one
`cupy.RawModule`, compiled once per device with every registered instantiation (the same list
the nvcc compile test instantiates). cupy is imported lazily: all of this imports without it.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: C++ spellings of the value and index types the kernels are instantiated for.
VALUE_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
INDEX_TYPES = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}
_ROLES = {"value": VALUE_TYPES, "index": INDEX_TYPES}

THREADS = 256  # threads per block for every launch
ROWS_PER_BLOCK = THREADS // 32  # warp-per-row kernels
NULL = np.uint64(0)  # a null device pointer argument (optional arrays)


@dataclass(frozen=True)
class Template:
    """One `__global__` template: the file it lives in and its template parameter roles."""

    file: str
    name: str
    params: tuple[str, ...]

    def instantiations(self) -> list[str]:
        """Every `name<...>` expression compiled for this template."""
        spellings = [list(_ROLES[p].values()) for p in self.params]
        return [f"{self.name}<{', '.join(c)}>" for c in itertools.product(*spellings)]


_REGISTRY: dict[str, Template] = {}


def register(file: str, name: str, params: tuple[str, ...]) -> Template:
    """Declare a `__global__` template of `kernels/<file>`; wrapper modules call this on import."""
    t = Template(file, name, params)
    if _REGISTRY.setdefault(name, t) != t:
        msg = f"kernel {name!r} registered twice with different signatures"
        raise ValueError(msg)
    return t


def templates() -> list[Template]:
    """Every registered template; imports every wrapper module so the list is complete."""
    for file in kernel_dir().glob("*.cu"):
        importlib.import_module(f"{__name__}.{file.stem}")
    return list(_REGISTRY.values())


_INCLUDE = '#include "common.cuh"'


def kernel_dir() -> Path:
    """The folder holding the `.cu` sources: inside an installed wheel or a source checkout."""
    here = Path(__file__).resolve().parents[1]  # the gpu_sc package folder
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    msg = f"CUDA kernel sources not found next to {here}; reinstall gpu_sc (the wheel ships them)."
    raise FileNotFoundError(msg)


def kernel_files() -> list[str]:
    """Names of the `.cu` files that hold registered templates."""
    return sorted({t.file for t in templates()})


def source(file: str) -> str:
    """The self-contained source of one kernel file (the shared header inlined).

    Inlining, rather than an include path, makes cupy's compile cache key on the full text.
    """
    d = kernel_dir()
    text = (d / file).read_text()
    return text.replace(_INCLUDE, (d / "common.cuh").read_text())


def name_expressions(file: str) -> list[str]:
    return [e for t in templates() if t.file == file for e in t.instantiations()]


# --fmad=false: no product is fused into an FMA, so a kernel rounds every product and sum as the
# CPU (and the CI emulator, built with -ffp-contract=off) does
COMPILE_OPTIONS = ("--std=c++14", "--fmad=false")


@functools.cache
def _module(file: str, device_id: int):
    import cupy as cp

    with cp.cuda.Device(device_id):
        return cp.RawModule(
            code=source(file), options=COMPILE_OPTIONS, name_expressions=name_expressions(file)
        )


def function(name: str, *dtypes: np.dtype):
    """The compiled instantiation of template `name` for the given dtypes, on this device."""
    import cupy as cp

    template = _REGISTRY[name]
    args = [_ROLES[role][np.dtype(dt)] for role, dt in zip(template.params, dtypes, strict=True)]
    module = _module(template.file, cp.cuda.Device().id)
    return module.get_function(f"{name}<{', '.join(args)}>")


# --------------------------------------------------------------------------- launch helpers
# Wrappers take the parts of a matrix (see `gpu_sc._ops._layout.Parts`): `data`, `indices`,
# `indptr` (both None for a dense C-contiguous matrix, whose raveled values are `data`).


def check(data, indices, indptr) -> np.dtype:
    """Validate dtypes and contiguity; return the index dtype to instantiate for."""
    if np.dtype(data.dtype) not in VALUE_TYPES:
        msg = (f"GPU kernels take float32 or float64 values, got {data.dtype}; convert with "
               ".astype(numpy.float32).")
        raise TypeError(msg)
    if not data.flags.c_contiguous:
        msg = "GPU kernels need C-contiguous values; call cupy.ascontiguousarray first."
        raise ValueError(msg)
    if indptr is None:
        return np.dtype(np.int32)  # unused by dense launches; any instantiated index type
    if not all(a.flags.c_contiguous for a in (indices, indptr) if a is not None):
        msg = "GPU kernels need C-contiguous CSR index arrays; call cupy.ascontiguousarray first."
        raise ValueError(msg)
    if np.dtype(indptr.dtype) not in INDEX_TYPES or (
        indices is not None and indices.dtype != indptr.dtype
    ):
        got = f"indptr {indptr.dtype}" + ("" if indices is None else f", indices {indices.dtype}")
        msg = f"GPU kernels take int32 or int64 CSR index arrays of one dtype, got {got}."
        raise TypeError(msg)
    return np.dtype(indptr.dtype)


def warp_rows_grid(n_rows: int) -> tuple[int]:
    """Grid for the one-warp-per-row kernels."""
    return (max(1, -(-n_rows // ROWS_PER_BLOCK)),)


def ptr(a):
    """An optional array argument: the array, or a null pointer for None."""
    return NULL if a is None else a


def device(a, dtype, length: int | None = None, what: str = "the vector"):
    """`a` (host or device) as a C-contiguous device array of `dtype`; no copy when it already is.
    With `length`: it must be 1-D of that length (a kernel would read past a shorter one)."""
    import cupy as cp

    out = cp.ascontiguousarray(cp.asarray(a, dtype=dtype))
    if length is not None and out.shape != (length,):
        msg = f"{what} must hold {length} values (1-D), got shape {out.shape}."
        raise ValueError(msg)
    return out
