"""Elementwise work on a value array (a sparse matrix's `.data` or a dense array, any layout),
CPU or GPU: these need no matrix structure, so they take the values, not `Parts`."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from ._backend import is_gpu, xp_of

_THREAD_CHUNK = 1 << 20  # values per task: large enough that the pool's overhead is noise
_CHECK_CHUNK = 1 << 24  # values per chunk when checking for integers (bounded temporaries)


def float_values(x):
    """`x` with float32/float64 values the kernels take; integers and bools go to float64
    (exact for counts below 2**53). Returns `x` itself when it already qualifies."""
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float64)


def not_counts(values) -> bool:
    """Some value is negative (its sign bit set) or, for floats, not a whole number (NaN and inf
    included): scanpy's check_nonnegative_integers, negated; checked in bounded chunks."""
    values = values.reshape(-1)
    xp = xp_of(values)
    for start in range(0, values.size, _CHECK_CHUNK):
        v = values[start : start + _CHECK_CHUNK]
        if bool(xp.signbit(v).any()) or (v.dtype.kind == "f" and bool(xp.any(v % 1 != 0))):
            return True
    return False


def map_chunks(fn, values) -> list:
    """[fn(part) for each part of `values`]: on the host, contiguous slices of a large array on
    numba's number of threads (numpy's ufuncs and reductions release the GIL); else one part,
    `values` itself (GPU arrays, small or strided ones). For elementwise work and reductions
    whose partial results combine exactly (min, max, counts)."""
    n_threads = numba.get_num_threads()
    contiguous = hasattr(values, "flags") and (values.flags.c_contiguous or values.flags.f_contiguous)
    if is_gpu(values) or not contiguous or n_threads == 1 or values.size < 2 * _THREAD_CHUNK:
        return [fn(values)]
    flat = values.reshape(-1, order="A")
    step = max(_THREAD_CHUNK, -(-flat.size // (4 * n_threads)))
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(fn, (flat[i : i + step] for i in range(0, flat.size, step))))


def log1p_(values, base=None) -> None:
    """In place: values = log1p(values) [/ log(base)]. Implicit zeros stay zero (log1p(0) = 0).
    One array-namespace version serves CPU and GPU; numpy's elementwise ufunc on host threads
    gives numpy's values bit for bit, whatever the split."""
    xp = xp_of(values)
    # numpy's log of the base, as scanpy divides by it: a float64 scalar (for a Python base), so the
    # division runs in float64 and rounds once to the values' dtype
    scale = None if base is None else np.log(base)

    def part(v):
        xp.log1p(v, out=v)
        if scale is not None:
            xp.divide(v, scale, out=v)

    map_chunks(part, values)


def value_range(values) -> tuple[float, float]:
    """(min, max) of a non-empty numeric array as Python floats; NaN in both if any value is NaN."""
    if values.dtype in _FLOAT_BITS and not is_gpu(values) and values.flags.c_contiguous:
        return _float_range(values.reshape(-1))
    xp = xp_of(values)
    parts = map_chunks(lambda v: (float(xp.min(v)), float(xp.max(v))), values)
    lows, highs = zip(*parts, strict=True)
    if any(math.isnan(x) for x in lows):
        return math.nan, math.nan
    return min(lows), max(highs)


# A float's bits as a signed integer, with the 31 (63) bits below the sign flipped where the sign is
# set, order like the floats (-0 just below +0) and put NaN outside -inf..inf: min and max over
# these integers vectorise and read the values once (numpy's min and max read them twice, and a
# float min that LLVM may vectorise needs fast-math, which may drop NaN). The map is its own inverse.
_FLOAT_BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


@numba.njit(inline="always", cache=True)
def _flip(k, sign, low_bits):  # pragma: no cover - numba
    """Floats' bits <-> keys (scalars or arrays of int32 / int64)."""
    return k ^ ((k >> sign) & low_bits)


@numba.njit(parallel=True, cache=True)
def _key_range(bits, low_bits):
    sign = bits.itemsize * 8 - 1  # a constant here, so that the loop vectorises
    lo = _flip(bits[0], sign, low_bits)
    hi = lo
    for i in numba.prange(bits.size):
        k = _flip(bits[i], sign, low_bits)
        lo = min(lo, k)
        hi = max(hi, k)
    return lo, hi


def _float_range(values) -> tuple[float, float]:
    ints = _FLOAT_BITS[values.dtype]
    low_bits, sign = ints(np.iinfo(ints).max), ints(values.itemsize * 8 - 1)
    lo, hi = _key_range(values.view(ints), low_bits)
    limits = _flip(np.array([-np.inf, np.inf], values.dtype).view(ints), sign, low_bits)
    if lo < limits[0] or hi > limits[1]:  # a NaN (either sign) lies outside -inf..inf
        return math.nan, math.nan
    low, high = _flip(np.array([lo, hi], ints), sign, low_bits).view(values.dtype)
    return float(low), float(high)


@numba.njit(parallel=True, cache=True)
def _scan(values):
    n_bad = 0
    n_neg = 0
    for i in numba.prange(values.size):
        v = values[i]
        if not np.isfinite(v):
            n_bad += 1
        elif v < 0:
            n_neg += 1
    return n_bad, n_neg


def native_order(values: np.ndarray) -> np.ndarray:
    """Host `values` in the machine's byte order, a copy only where they are not: numba and
    scipy.sparse take no big-endian values ('>f4', as some HDF5 files hold)."""
    return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))


def value_issues(values) -> tuple[int, int]:
    """(number of NaN/inf values, number of negative finite values) in a 1-D float array: the
    values that cannot be counts (input validation)."""
    if is_gpu(values):
        import cupy as cp

        finite = cp.isfinite(values)
        return int((~finite).sum()), int((finite & (values < 0)).sum())
    values = native_order(values)
    if values.dtype == np.float16:  # numba has no float16; every float16 is exact in float32
        values = values.astype(np.float32)
    return _scan(np.ascontiguousarray(values).reshape(-1))
