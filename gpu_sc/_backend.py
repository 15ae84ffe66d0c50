"""Where data lives decides where work runs.

numpy / scipy.sparse -> CPU; cupy / cupyx.scipy.sparse -> GPU. Detection looks at the
type's module name, so nothing here imports cupy on a machine without it.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

import numpy as np
import scipy.sparse as sp


@functools.cache
def _device_kind(cls: type) -> str | None:
    """'sparse' (cupyx.scipy.sparse), 'dense' (cupy) or None, from the first CuPy class in the
    type's MRO: anndata's views of device arrays (CupyArrayView, CupySparseCSRView) are anndata
    classes that subclass CuPy's, and live on the GPU all the same."""
    for c in cls.__mro__:
        module = getattr(c, "__module__", None) or ""
        if module.startswith("cupyx.scipy.sparse"):
            return "sparse"
        if module.split(".", 1)[0] in ("cupy", "cupyx"):
            return "dense"
    return None


def is_gpu(x: Any) -> bool:
    """True for cupy arrays and cupyx sparse matrices (and anndata's views of them)."""
    return _device_kind(type(x)) is not None


def is_dask(x: Any) -> bool:
    """True for a Dask array or a subclass (anndata's views); no Dask array can exist before
    dask.array is imported, so Dask need not be installed."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def is_sparse(x: Any) -> bool:
    """True for scipy or cupyx sparse matrices/arrays."""
    kind = _device_kind(type(x))
    return kind == "sparse" if kind is not None else sp.issparse(x)


def blocks_like(x: Any) -> Any:
    """What `x`'s storage is like: a Dask array's meta (every block is of its kind: numpy or
    cupy, scipy or cupyx sparse), anything else itself."""
    return x._meta if is_dask(x) else x


def sparse_format(x: Any) -> str | None:
    """'csr', 'csc', 'coo', ... for sparse input, None for dense."""
    return x.format if is_sparse(x) else None


@functools.cache
def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        cp = importlib.import_module("cupy")
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device: all mean "CPU only"
        return False


def xp_of(x: Any):
    """The array namespace (numpy or cupy) that owns `x`."""
    return importlib.import_module("cupy") if is_gpu(x) else np


def sparse_module(x: Any):
    """scipy.sparse or cupyx.scipy.sparse, matching where `x` lives."""
    return importlib.import_module("cupyx.scipy.sparse") if is_gpu(x) else sp


def to_host(a: Any) -> np.ndarray:
    """A host numpy array from a numpy or cupy array (no copy for numpy)."""
    return a.get() if is_gpu(a) else np.asarray(a)


def describe(x: Any) -> str:
    """A short human description for error messages: 'a CSC matrix on the GPU'."""
    if is_dask(x):
        inner = describe(x._meta).removeprefix("a ")
        return f"a Dask array ({len(x.chunks[0])} row blocks) of {inner}"
    where = "GPU" if is_gpu(x) else "CPU"
    fmt = sparse_format(x)
    kind = f"{fmt.upper()} matrix" if fmt else type(x).__name__
    dtype = getattr(x, "dtype", None)
    return f"a {kind} of dtype {dtype} on the {where}"
