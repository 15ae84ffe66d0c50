"""Summaries of a PAGA graph (`paga_degrees`, `paga_expression_entropies`, `paga_compare_paths`)
and scanpy's simulated data sets (`sim`): scanpy's own functions, fed host copies where the graph
or X lives on the GPU (they read `uns['paga']`, obs and, for the entropies, X with NumPy)."""

from __future__ import annotations

from anndata import AnnData

from .._backend import is_gpu
from .._scanpy_own import scanpy_own
from .._scanpy_signatures import scanpy_signature
from .._validation import check_anndata
from ..get import array_to_cpu

_PAGA = "scanpy.tools._paga"


def _on_host(adata: AnnData, step: str, *, with_x: bool = False, name: str = "adata") -> AnnData:
    """`adata` itself where what the step reads is on the host, else a host AnnData of just that
    (obs, uns['paga'], and X where `with_x`) for scanpy to read; the user's object untouched."""
    check_anndata(adata, step=step, name=name)
    paga = adata.uns.get("paga")
    gpu_paga = isinstance(paga, dict) and any(is_gpu(v) for v in paga.values())
    if not gpu_paga and not (with_x and is_gpu(adata.X)):
        return adata
    if gpu_paga:
        paga = {k: array_to_cpu(v) if is_gpu(v) else v for k, v in paga.items()}
    x = array_to_cpu(adata.X) if with_x else None
    return AnnData(X=x, obs=adata.obs, var=adata.var if with_x else None, uns={"paga": paga})


def paga_degrees(adata: AnnData) -> list:
    """Weighted degree of each group in the PAGA graph, like :func:`scanpy.tl.paga_degrees`."""
    return scanpy_own("tl", "paga_degrees", _PAGA)(_on_host(adata, "paga_degrees"))


def paga_expression_entropies(adata: AnnData) -> list:
    """Entropy of each PAGA group's median expression, like
    :func:`scanpy.tl.paga_expression_entropies` (X sparse, as scanpy's needs; a GPU X is read on
    the host)."""
    host = _on_host(adata, "paga_expression_entropies", with_x=True)
    return scanpy_own("tl", "paga_expression_entropies", _PAGA)(host)


def paga_compare_paths(adata1: AnnData, adata2: AnnData, adjacency_key: str = "connectivities",
                       adjacency_key2: str | None = None):  # fmt: skip
    """Fraction of consistent paths between the leaves of two PAGA graphs, like
    :func:`scanpy.tl.paga_compare_paths` (same keywords and result)."""
    fn = scanpy_own("tl", "paga_compare_paths", _PAGA)
    step = "paga_compare_paths"
    return fn(_on_host(adata1, step, name="adata1"), _on_host(adata2, step, name="adata2"),
              adjacency_key=adjacency_key, adjacency_key2=adjacency_key2)  # fmt: skip


@scanpy_signature("sim")
def sim(model, **kwargs) -> AnnData:
    """A simulated data set from a gene-regulatory model, :func:`scanpy.tl.sim` itself (same
    keywords; it makes a new host AnnData and reads no data of ours)."""
    return scanpy_own("tl", "sim", "scanpy.tools._sim")(model, **kwargs)
