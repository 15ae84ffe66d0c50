"""sample and subsample: scanpy's draws of cells (or genes), for every matrix we accept.

Which rows are drawn is scanpy's business (its seed rules and checks), so scanpy draws them;
ours is taking them from a matrix scanpy cannot index (a cupy or cupyx matrix on its own).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._backend import is_gpu, to_host, xp_of
from .._scanpy_own import scanpy_own
from .._validation import old_positionals


def sample(data, fraction: float | None = None, *, n: int | None = None, rng=None, copy: bool = False,
           replace: bool = False, axis="obs", p=None):  # fmt: skip
    """Draw cells or genes, like :func:`scanpy.pp.sample` (scanpy 1.11+).

    An AnnData (with X on the CPU, the GPU or Dask) is scanpy's case: subset in place, or a
    copy with `copy`. A matrix gives ``(subset, indices)``; a cupy or cupyx matrix gets the same
    indices scanpy would draw for a host matrix of its shape, and the subset stays on the GPU.
    """
    import scanpy as sc

    if not hasattr(sc.pp, "sample"):
        msg = f"pp.sample needs scanpy 1.11 or later (installed: {sc.__version__}); use pp.subsample."
        raise ImportError(msg)
    draw = scanpy_own("pp", "sample", "scanpy.preprocessing._simple")
    if p is not None and is_gpu(p):  # a mask or probabilities made from GPU data: scanpy draws on the host
        p = to_host(p)
    _check_size(data, n, replace, axis)
    if isinstance(data, AnnData) or not is_gpu(data):
        return draw(data, fraction, n=n, rng=rng, copy=copy, replace=replace, axis=axis, p=p)
    along = 1 if axis in ("var", 1) else 0  # anything else: scanpy's error below
    _, indices = draw(_stand_in(data.shape, along), fraction, n=n, rng=rng, replace=replace, axis=axis, p=p)
    return _take(data, indices, axis=along), indices


@old_positionals("n_obs", "random_state", "copy")
def subsample(data, fraction: float | None = None, *, n_obs: int | None = None, random_state=0, copy: bool = False):
    """Draw cells, like :func:`scanpy.pp.subsample` (deprecated in scanpy 1.11 for `sample`).

    AnnData and host matrices are scanpy's case; a cupy or cupyx matrix gets the indices scanpy
    would draw for a host matrix of its shape and returns ``(subset, indices)`` on the GPU.
    """
    draw = scanpy_own("pp", "subsample", "scanpy.preprocessing._deprecated.sampling")
    if isinstance(data, AnnData) or not is_gpu(data):
        return draw(data, fraction, n_obs=n_obs, random_state=random_state, copy=copy)
    _, indices = draw(_stand_in(data.shape, 0), fraction, n_obs=n_obs, random_state=random_state)
    return _take(data, indices, axis=0), indices


def _check_size(data, n, replace: bool, axis) -> None:
    """numpy's words where scanpy passes them on ("a must be a positive integer unless no samples
    are taken", "Cannot take a larger sample than population"), with the sizes and the way out."""
    if axis not in ("obs", "var", 0, 1) or not isinstance(n, int | np.integer) or isinstance(n, bool):
        return  # scanpy's own checks
    along = 1 if axis in ("var", 1) else 0
    length = data.shape[along]
    what = "genes" if along else "cells"
    if length == 0 and n > 0:
        msg = f"sample: there are no {what} to draw from (shape {tuple(data.shape)}); n={n}."
        raise ValueError(msg)
    if not replace and n > length:
        msg = (f"sample: n={n} is more than the {length} {what}; pass replace=True to draw with replacement, "
               "or a smaller n.")  # fmt: skip
        raise ValueError(msg)


def _stand_in(shape, axis: int) -> np.ndarray:
    """A host matrix as long as `shape` along `axis` and empty along the other (so its subset is
    empty too): scanpy draws from its length."""
    return np.empty((shape[0], 0) if axis == 0 else (0, shape[1]), dtype=np.bool_)


def _take(x, indices, *, axis: int):
    idx = xp_of(x).asarray(indices)
    return x[idx] if axis == 0 else x[:, idx]
