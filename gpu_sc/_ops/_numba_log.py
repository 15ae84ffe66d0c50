"""A natural log that LLVM vectorises, for the numba engines (glibc's log() is a scalar call and
was ~40 % of the PIC engine's time).

x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f), and
log(m) = 2 atanh(s) = f - f^2/2 + s (f^2/2 + R), R = sum_k 2 s^(2k) / (2k + 1) (k = 1..13, enough
for |s| <= 0.172); log 2 split into a 21-bit head (e * head exact) and its tail. Max error 1 ulp
(checked against math.log in tests/test_pic_loglik.py). kernels/pic_loglik.cu has the same
function (gsc_pic_log, same operations, no FMA contraction), so CPU and GPU LL agree bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_LN2_HI = 0.6931467056274414  # 0x1.62e42p-1: ln 2 to 21 bits
_LN2_LO = 4.7493250390316726e-07  # ln 2 - _LN2_HI
_SQRT2_BITS = 0x3FF6A09E667F3BCD  # bits of sqrt(2.0)
_MIN_NORMAL = 2.2250738585072014e-308
_TWO54 = 18014398509481984.0
(_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = (
    2.0 / (2 * k + 1) for k in range(1, 14))  # fmt: skip


@intrinsic
def _bits(typingctx, x):
    """float64 -> its int64 bit pattern."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """int64 bit pattern -> float64."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(inline="always", error_model="numpy")
def log(x):  # pragma: no cover - numba
    sub = x < _MIN_NORMAL
    bits = _bits(x * (_TWO54 if sub else 1.0))
    mb = (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    big = mb > _SQRT2_BITS
    mb = mb - (np.int64(big) << 52)
    e = (bits >> 52) - 1023 + np.int64(big) - (54 if sub else 0)
    de = _from_bits(e + 0x4338000000000000) - 6755399441055744.0  # float(e), vectorisable
    f = _from_bits(mb) - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = _C13 * z + _C12
    r = r * z + _C11
    r = r * z + _C10
    r = r * z + _C9
    r = r * z + _C8
    r = r * z + _C7
    r = r * z + _C6
    r = r * z + _C5
    r = r * z + _C4
    r = r * z + _C3
    r = r * z + _C2
    r = r * z + _C1
    hfsq = 0.5 * f * f
    v = de * _LN2_HI + (f - (hfsq - (s * (hfsq + z * r) + de * _LN2_LO)))
    if (x > 0.0) & (x < np.inf):
        return v
    return -np.inf if x == 0.0 else (np.inf if x == np.inf else np.nan)


@numba.njit(error_model="numpy")
def log_array(x):  # pragma: no cover - numba
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = log(x[i])
    return out
