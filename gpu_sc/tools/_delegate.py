"""Run a scanpy tool on the host (or rapids-singlecell's on the GPU) and bring its results back."""

from __future__ import annotations

import copy
import importlib

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._backend import is_gpu
from .._settings import settings
from ..get import array_to_cpu as _host  # host copy, same container type
from .._validation import check_anndata


def _gpu_graph(adata: AnnData, neighbors_key: str | None) -> bool:
    meta = adata.uns.get(neighbors_key or "neighbors", {})
    key = meta.get("connectivities_key", "connectivities") if isinstance(meta, dict) else "connectivities"
    return key in adata.obsp and is_gpu(adata.obsp[key])


def _rsc():
    try:
        return importlib.import_module("rapids_singlecell")
    except Exception:  # not installed, or installed without a working CUDA stack
        return None


def _needs_x(adata: AnnData, kwargs: dict) -> bool:
    meta = adata.uns.get(kwargs.get("neighbors_key") or "neighbors", {})
    params = meta.get("params", {}) if isinstance(meta, dict) else {}
    rep = kwargs.get("use_rep", params.get("use_rep"))
    return rep == "X" or (rep is None and K.OBSM_PCA not in adata.obsm)


def run(name: str, adata: AnnData, kwargs: dict):
    """Call `tl.<name>(adata, **kwargs)`: rapids-singlecell when the graph is on the GPU and it
    imports, else scanpy on a host shallow copy whose new obs/obsm/uns entries are copied back
    (obsm results go back to the GPU when the graph lives there)."""
    check_anndata(adata, step=name)
    on_gpu = _gpu_graph(adata, kwargs.get("neighbors_key"))
    if kwargs.get("copy"):
        adata = adata.copy()
        kwargs = {**kwargs, "copy": False}
        run(name, adata, kwargs)
        return adata
    if on_gpu and (rsc := _rsc()) is not None:
        return getattr(rsc.tl, name)(adata, **kwargs)
    import scanpy as sc

    if on_gpu:
        settings.info(f"{name}: rapids_singlecell is not importable; running scanpy's {name} on the CPU.")
    host = AnnData(
        X=_host(adata.X) if _needs_x(adata, kwargs) else None,
        obs=adata.obs.copy(), var=adata.var[[]].copy(),
        obsm={k: _host(v) for k, v in adata.obsm.items()},
        obsp={k: _host(v) for k, v in adata.obsp.items()},
        uns=copy.deepcopy(dict(adata.uns)),
    )  # fmt: skip
    obs0, obsm0, uns0 = set(host.obs.columns), dict(host.obsm.items()), dict(host.uns)
    out = getattr(sc.tl, name)(host, **kwargs)
    for col in host.obs.columns:
        if col not in obs0 or not host.obs[col].equals(adata.obs[col]):
            adata.obs[col] = host.obs[col]
    for key, val in host.obsm.items():
        if key not in obsm0 or val is not obsm0[key]:
            if on_gpu:
                import cupy as cp

                val = cp.asarray(np.asarray(val))
            adata.obsm[key] = val
    for key, val in host.uns.items():
        if key not in uns0 or val is not uns0[key]:
            adata.uns[key] = val
    return out
