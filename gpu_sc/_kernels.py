"""CUDA kernels: sources, compilation and launch wrappers.

`kernels/*.cu` sit at the repository root and travel inside the wheel as `gpu_sc/kernels`.
Each file becomes one `cupy.RawModule`, compiled once per device with every template
instantiation listed in `TEMPLATES` (the same list the nvcc compile test instantiates).
Each kernel has exactly one launch wrapper below; it owns the launch geometry and checks dtypes
and contiguity, so call sites never spell grid or block sizes. cupy is imported lazily: this
module is importable without it.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: C++ spellings of the value and index types the kernels are instantiated for.
VALUE_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
INDEX_TYPES = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}
_ROLES = {"value": VALUE_TYPES, "index": INDEX_TYPES}

_THREADS = 256  # threads per block for every launch
_ROWS_PER_BLOCK = _THREADS // 32  # warp-per-row kernels
_NULL = np.uint64(0)  # a null device pointer argument (optional arrays)


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


TEMPLATES = (
    Template("row_reduce.cu", "row_sums", ("value", "index")),
    Template("row_reduce.cu", "flag_cols_above", ("value", "index")),
    Template("top_sums.cu", "row_top_sums", ("value", "index")),
    Template("col_reduce.cu", "csr_col_sums", ("value", "index")),
    Template("col_reduce.cu", "dense_col_sums", ("value",)),
    Template("scale.cu", "divide_rows", ("value", "index")),
)
_INCLUDE = '#include "common.cuh"'


def kernel_dir() -> Path:
    """The folder holding the `.cu` sources: inside an installed wheel or a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    msg = f"CUDA kernel sources not found next to {here}; reinstall gpu_sc (the wheel ships them)."
    raise FileNotFoundError(msg)


def kernel_files() -> list[str]:
    """Names of the `.cu` files that hold registered templates."""
    return sorted({t.file for t in TEMPLATES})


def source(file: str) -> str:
    """The self-contained source of one kernel file (the shared header inlined).

    Inlining, rather than an include path, makes cupy's compile cache key on the full text.
    """
    d = kernel_dir()
    text = (d / file).read_text()
    return text.replace(_INCLUDE, (d / "common.cuh").read_text())


def name_expressions(file: str) -> list[str]:
    return [e for t in TEMPLATES if t.file == file for e in t.instantiations()]


@functools.cache
def _module(file: str, device_id: int):
    import cupy as cp

    with cp.cuda.Device(device_id):
        return cp.RawModule(
            code=source(file), options=("--std=c++14",), name_expressions=name_expressions(file)
        )


def _function(name: str, *dtypes: np.dtype):
    """The compiled instantiation of template `name` for the given dtypes, on this device."""
    import cupy as cp

    template = next(t for t in TEMPLATES if t.name == name)
    args = [_ROLES[role][np.dtype(dt)] for role, dt in zip(template.params, dtypes, strict=True)]
    module = _module(template.file, cp.cuda.Device().id)
    return module.get_function(f"{name}<{', '.join(args)}>")


# --------------------------------------------------------------------------- launch wrappers
# Each takes the parts of a matrix (see `_ops._layout.parts`): `data`, `indices`, `indptr`
# (both None for a dense C-contiguous matrix, whose raveled values are `data`) and the shape.


def _check(data, indices, indptr) -> np.dtype:
    if np.dtype(data.dtype) not in VALUE_TYPES:
        msg = f"GPU kernels take float32 or float64 values, got {data.dtype}."
        raise TypeError(msg)
    if not data.flags.c_contiguous:
        msg = "GPU kernels need C-contiguous values; call cupy.ascontiguousarray first."
        raise ValueError(msg)
    if indptr is None:
        return np.dtype(np.int32)  # unused by dense launches; any instantiated index type
    if np.dtype(indptr.dtype) not in INDEX_TYPES or (
        indices is not None and indices.dtype != indptr.dtype
    ):
        msg = (
            "GPU kernels take int32 or int64 CSR indices with indptr of the same dtype, got "
            f"indices {indices.dtype} and indptr {indptr.dtype}."
        )
        raise TypeError(msg)
    return np.dtype(indptr.dtype)


def _warp_rows_grid(n_rows: int) -> tuple[int]:
    return (max(1, -(-n_rows // _ROWS_PER_BLOCK)),)


def _ptr(a):
    return _NULL if a is None else a


def _device(a, dtype):
    """`a` (host or device) as a C-contiguous device array of `dtype`; no copy when it already is."""
    import cupy as cp

    return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))


def row_sums(data, indices, indptr, shape, col_mask=None):
    """Per-row float64 sums and int64 nonzero counts, over `col_mask` columns if given."""
    import cupy as cp

    itype = _check(data, indices, indptr)
    n_rows, n_cols = shape
    sums = cp.empty(n_rows, dtype=cp.float64)
    nnz = cp.empty(n_rows, dtype=cp.int64)
    if n_rows:
        mask = None if col_mask is None else _device(col_mask, cp.uint8)
        _function("row_sums", data.dtype, itype)(
            _warp_rows_grid(n_rows), (_THREADS,),
            (data, _ptr(indices), _ptr(indptr), np.int64(n_rows), np.int64(n_cols),
             _ptr(mask), sums, nnz),
        )  # fmt: skip
    return sums, nnz


def flag_cols_above(data, indices, indptr, shape, limits):
    """Boolean per column: some row r holds a value above `limits[r]`."""
    import cupy as cp

    itype = _check(data, indices, indptr)
    n_rows, n_cols = shape
    flags = cp.zeros(n_cols, dtype=cp.int32)
    if n_rows:
        _function("flag_cols_above", data.dtype, itype)(
            _warp_rows_grid(n_rows), (_THREADS,),
            (data, _ptr(indices), _ptr(indptr), np.int64(n_rows), np.int64(n_cols),
             _device(limits, cp.float64), flags),
        )  # fmt: skip
    return flags.astype(bool)


def row_top_sums(data, indptr, shape, ns):
    """(n_rows, len(ns)) float64: per row, the sum of its n largest values for each n in `ns`.

    `ns` must be ascending and the values non-negative.
    """
    import cupy as cp

    itype = _check(data, None, indptr)
    n_rows, n_cols = shape
    ns_dev = _device(np.asarray(ns, dtype=np.int64), cp.int64)
    out = cp.empty((n_rows, len(ns)), dtype=cp.float64)
    if n_rows and len(ns):
        _function("row_top_sums", data.dtype, itype)(
            _warp_rows_grid(n_rows), (_THREADS,),
            (data, _ptr(indptr), np.int64(n_rows), np.int64(n_cols), ns_dev,
             np.int32(len(ns)), out),
        )  # fmt: skip
    return out


def col_sums(data, indices, indptr, shape):
    """Per-column float64 sums and int64 nonzero counts (CSR or dense)."""
    import cupy as cp

    itype = _check(data, indices, indptr)
    n_rows, n_cols = shape
    sums = cp.zeros(n_cols, dtype=cp.float64)
    nnz = cp.zeros(n_cols, dtype=cp.uint64)
    if indptr is not None:
        if data.size:
            n_blocks = min(-(-data.size // _THREADS), 65_536)  # grid-stride beyond that
            _function("csr_col_sums", data.dtype, itype)(
                (n_blocks,), (_THREADS,), (data, indices, np.int64(data.size), sums, nnz)
            )
    elif n_rows and n_cols:
        # at most 65,535 row chunks (grid y limit); at least 256 rows each to amortise atomics
        rows_per_chunk = max(256, -(-n_rows // 65_535))
        grid = (-(-n_cols // _THREADS), -(-n_rows // rows_per_chunk))
        _function("dense_col_sums", data.dtype)(
            grid, (_THREADS,),
            (data, np.int64(n_rows), np.int64(n_cols), np.int64(rows_per_chunk), sums, nnz),
        )  # fmt: skip
    return sums, nnz.view(cp.int64)


def divide_rows(data, indptr, shape, divisors) -> None:
    """In place: row r divided by `divisors[r]` (same dtype as data); zero divisors skip the row."""
    import cupy as cp

    itype = _check(data, None, indptr)
    n_rows, n_cols = shape
    if n_rows:
        _function("divide_rows", data.dtype, itype)(
            _warp_rows_grid(n_rows), (_THREADS,),
            (data, _ptr(indptr), np.int64(n_rows), np.int64(n_cols),
             _device(divisors, data.dtype)),
        )  # fmt: skip
