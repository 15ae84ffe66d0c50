"""Elementwise log1p on stored values; one array-namespace version serves CPU and GPU."""

from __future__ import annotations

import math

from .._backend import xp_of


def log1p_(values, base=None) -> None:
    """In place on a value array (a sparse matrix's `.data` or a dense array, any layout):
    values = log1p(values) [/ log(base)]. Implicit zeros stay zero (log1p(0) = 0)."""
    xp = xp_of(values)
    xp.log1p(values, out=values)
    if base is not None:
        xp.divide(values, math.log(base), out=values)
