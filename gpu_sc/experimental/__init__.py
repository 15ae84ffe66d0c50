"""scanpy's `experimental`: its `pp` (analytic Pearson residuals)."""

from . import pp

__all__ = ["pp"]
