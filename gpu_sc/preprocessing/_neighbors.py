"""neighbors: exact kNN graph with UMAP or Gaussian connectivities, like scanpy.pp.neighbors."""

from __future__ import annotations

import importlib

import numpy as np
from anndata import AnnData

from .._backend import is_sparse, xp_of
from .._ops.connectivities import gauss_connectivities, knn_csr, umap_connectivities
from .._keys import OBSP_CONNECTIVITIES, OBSP_DISTANCES, UNS_NEIGHBORS
from .._settings import settings
from .._ops.knn import knn as exact_knn

_STEP = "neighbors"
_N_PCS = 50  # scanpy: more genes than this and no X_pca -> PCA first
_METRICS = ("euclidean", "cosine")


def _representation(adata: AnnData, use_rep, n_pcs):
    if use_rep is None and n_pcs == 0:
        return adata.X
    if use_rep is None:
        if adata.n_vars > _N_PCS:
            if "X_pca" not in adata.obsm:
                try:
                    importlib.import_module("gpu_sc.preprocessing._pca")
                except ImportError:
                    msg = f"{_STEP}: no adata.obsm['X_pca'] and {adata.n_vars} genes; run gsc.pp.pca first or pass use_rep='X'."
                    raise ValueError(msg) from None
                return None  # computed by the caller after validation
            rep = adata.obsm["X_pca"]
            if n_pcs is not None and n_pcs > rep.shape[1]:
                msg = f"{_STEP}: n_pcs={n_pcs} exceeds the {rep.shape[1]} components in X_pca."
                raise ValueError(msg)
            return rep[:, :n_pcs] if n_pcs is not None else rep
        return adata.X
    if use_rep == "X":
        return adata.X
    if use_rep not in adata.obsm:
        msg = f"{_STEP}: use_rep={use_rep!r} not in adata.obsm ({list(adata.obsm)})."
        raise KeyError(msg)
    rep = adata.obsm[use_rep]
    if n_pcs is not None:
        if n_pcs > rep.shape[1]:
            msg = f"{_STEP}: n_pcs={n_pcs} exceeds the {rep.shape[1]} columns of obsm[{use_rep!r}]."
            raise ValueError(msg)
        rep = rep[:, :n_pcs]
    return rep


def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    knn: bool = True,  # noqa: A002 - scanpy's name
    method: str = "umap",
    metric: str = "euclidean",
    random_state=0,
    key_added: str | None = None,
    copy: bool = False,
    algorithm: str | None = None,
) -> AnnData | None:
    """Exact k-nearest-neighbour graph, like :func:`scanpy.pp.neighbors`.

    Parameters
    ----------
    adata
        Annotated data matrix.
    n_neighbors
        Neighbours per cell, the cell itself included (as in scanpy).
    n_pcs
        Use this many leading columns of the representation.
    use_rep
        ``'X'`` or an ``adata.obsm`` key; default X_pca (X for <= 50 genes).
    knn
        Only ``True`` (a kNN graph) is supported.
    method
        ``'umap'`` (fuzzy simplicial set) or ``'gauss'``.
    metric
        ``'euclidean'`` or ``'cosine'``.
    random_state
        Recorded in ``uns``; the exact search is deterministic.
    key_added
        Prefix: writes ``obsp['{key}_distances']``, ``obsp['{key}_connectivities']``, ``uns[key]``.
    copy
        Work on and return a copy.
    algorithm
        ``None`` or ``'brute'`` (exact brute force in memory-bounded tiles).

    Returns
    -------
    ``adata`` when ``copy`` else ``None``. Sets ``obsp['distances']`` (CSR, n_neighbors - 1
    neighbours per row, self excluded), ``obsp['connectivities']`` (CSR) and
    ``uns['neighbors']`` = {'connectivities_key', 'distances_key', 'params'}, on the device of
    the representation.
    """
    if not isinstance(adata, AnnData):
        msg = f"{_STEP}: expected an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if not knn:
        msg = f"{_STEP}: knn=False (a dense all-pairs graph) is not supported; use knn=True."
        raise NotImplementedError(msg)
    if method not in ("umap", "gauss"):
        msg = f"{_STEP}: method must be 'umap' or 'gauss', got {method!r}."
        raise ValueError(msg)
    if metric not in _METRICS:
        msg = f"{_STEP}: metric {metric!r} is not supported; choose one of {_METRICS}."
        raise ValueError(msg)
    if algorithm not in (None, "brute"):
        msg = f"{_STEP}: algorithm must be None or 'brute', got {algorithm!r}."
        raise ValueError(msg)
    n_neighbors = int(n_neighbors)
    if n_neighbors < 2:
        msg = f"{_STEP}: n_neighbors must be at least 2 (it counts the cell itself), got {n_neighbors}."
        raise ValueError(msg)
    if n_neighbors >= adata.n_obs:
        msg = f"{_STEP}: n_neighbors={n_neighbors} must be smaller than the number of cells ({adata.n_obs})."
        raise ValueError(msg)
    if copy:
        adata = adata.copy()
    rep = _representation(adata, use_rep, n_pcs)
    if rep is None:
        from ._pca import pca

        # as scanpy: PCA with n_pcs (default 50) components, written to adata
        settings.info(f"{_STEP}: no X_pca; computing gsc.pp.pca first.")
        pca(adata, n_comps=n_pcs if n_pcs is not None else _N_PCS)
        rep = adata.obsm["X_pca"]
    if is_sparse(rep):
        rep = rep.toarray()
    xp = xp_of(rep)
    rep = xp.asarray(rep)
    if rep.dtype.kind not in "iufb":
        msg = f"{_STEP}: the representation must be numeric, got dtype {rep.dtype}."
        raise TypeError(msg)
    if rep.dtype.kind == "f" and not bool(xp.isfinite(rep).all()):
        msg = f"{_STEP}: the representation holds NaN or inf values; fix or drop those cells first."
        raise ValueError(msg)
    out_dtype = np.float32 if rep.dtype == np.float32 or rep.dtype.kind != "f" else np.float64

    ind, dist = exact_knn(xp.ascontiguousarray(rep), n_neighbors, metric=metric)
    n = adata.n_obs
    distances = knn_csr(ind, dist.astype(out_dtype), n, drop_first=True)
    if method == "umap":
        conn = umap_connectivities(ind, dist, n, n_neighbors)
    else:
        conn = gauss_connectivities(distances)

    dkey, ckey, ukey = (OBSP_DISTANCES, OBSP_CONNECTIVITIES, UNS_NEIGHBORS) if key_added is None else (
        f"{key_added}_distances", f"{key_added}_connectivities", key_added)  # fmt: skip
    params = {"n_neighbors": n_neighbors, "method": method, "random_state": random_state, "metric": metric}
    if use_rep is not None:
        params["use_rep"] = use_rep
    if n_pcs is not None:
        params["n_pcs"] = n_pcs
    adata.obsp[dkey] = distances
    adata.obsp[ckey] = conn
    adata.uns[ukey] = {"connectivities_key": ckey, "distances_key": dkey, "params": params}
    return adata if copy else None
