"""The embedding of observed cells and simulated doublets: genes scaled by the observed cells'
standard deviation (and centred on their mean), PCA (or truncated SVD) fitted on the observed
cells, both projected onto it. Sparse matrices stay sparse: centring is implicit (the
projection of x - mu is x V - mu V), where scanpy densifies both z-scored matrices."""

from __future__ import annotations

import numpy as np

from ... import _ops
from ..._backend import is_sparse, sparse_module, xp_of
from ..._settings import settings
from .._pca import pca


def _scale_columns(x, factor):
    """x * factor per column, float64, a new matrix (CSR stays CSR)."""
    xp = xp_of(x)
    if is_sparse(x):
        data = x.data.astype(np.float64) * factor[x.indices]
        return sparse_module(x).csr_matrix((data, x.indices, x.indptr), shape=x.shape)
    return xp.ascontiguousarray(x, dtype=np.float64) * factor[None, :]


def embed(obs, sim, *, mean_center: bool, normalize_variance: bool, n_comps: int, rs):
    """(observed embedding, simulated embedding), float64 (n x n_comps) on the device of the
    input. `obs` and `sim`: CSR or dense, normalised, same genes. Statistics (mean, standard
    deviation with ddof=1, as scanpy's) come from `obs` only; a gene with zero deviation is
    divided by 1. `rs` gets the draw scikit-learn's arpack start vector takes
    (uniform(-1, 1, min(shape))), so that a later approximate kNN search draws what scanpy's
    does."""
    xp = xp_of(obs)
    p = _ops.parts(obs)
    mean, var = _ops.col_mean_var(p, ddof=1)
    mean, var = xp.asarray(mean), xp.asarray(var)
    if normalize_variance:
        std = xp.sqrt(var)
        std[std == 0] = 1.0
        factor = 1.0 / std
        obs, sim = _scale_columns(obs, factor), _scale_columns(sim, factor)
        mean = mean * factor
    else:
        obs, sim = _scale_columns(obs, xp.ones(obs.shape[1])), _scale_columns(sim, xp.ones(sim.shape[1]))
    rs.uniform(-1, 1, min(obs.shape))
    with settings.muted():  # scanpy's scrublet runs scikit-learn's PCA, which writes no line
        emb_obs, components, _, _ = pca(obs, n_comps, zero_center=mean_center, svd_solver=None, dtype="float64",
                                        return_info=True)  # fmt: skip
    v = xp.ascontiguousarray(components.T, dtype=np.float64)
    emb_sim = xp.asarray(sim @ v)
    if mean_center:
        emb_sim = emb_sim - (mean @ v)[None, :]
    return xp.asarray(emb_obs, dtype=np.float64), emb_sim
