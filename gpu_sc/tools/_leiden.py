"""leiden: scanpy's tl.leiden on the neighbour graph (rapids-singlecell on the GPU if importable)."""

from __future__ import annotations

from anndata import AnnData

from .._scanpy_signatures import scanpy_signature
from .._validation import check_anndata
from . import _leiden_igraph
from ._delegate import actual_for_results, neighbors_graph, run


@scanpy_signature("leiden")
def leiden(adata: AnnData, resolution: float = 1, **kwargs):
    """Leiden clustering of the neighbour graph, like :func:`scanpy.tl.leiden` (same keywords).

    With ``flavor="igraph"`` on a host graph (undirected, no ``restrict_to``) the clustering runs
    here, with scanpy's graph, arithmetic and random stream but a faster hand-over to igraph, so
    the labels are scanpy's exactly; everything else is scanpy's own call.

    Parameters
    ----------
    adata
        Annotated data matrix after ``neighbors``.
    resolution
        Higher values give more clusters (scanpy's default 1; positional, as in scanpy).
    restrict_to, random_state, key_added, ...
        scanpy's keywords, as the signature shows them (:func:`scanpy.tl.leiden` documents
        each); those given are passed on as given (to ``rapids_singlecell.tl.leiden`` for a GPU
        graph where it takes them all), the others keep scanpy's defaults.

    Returns
    -------
    ``adata`` when ``copy=True``, else ``None``. Sets ``obs['leiden']`` (or ``obs[key_added]``;
    categorical) and ``uns['leiden']`` (or ``uns[key_added]``), as scanpy does. Without
    rapids-singlecell a GPU graph is moved to the host (one info line).
    """
    check_anndata(adata, step="leiden")
    kwargs = {"resolution": resolution, **kwargs}
    graph = _graph(adata, kwargs)
    if not _leiden_igraph.applicable(graph, kwargs):
        return run("leiden", adata, kwargs)
    out = adata.copy() if kwargs.get("copy") else adata
    actual_for_results(out, "leiden")
    own = {k: v for k, v in kwargs.items() if k not in ("flavor", "directed", "adjacency", "neighbors_key", "obsp",
                                                        "copy", "restrict_to", "partition_type")}
    _leiden_igraph.leiden(out, graph, **own)
    return out if kwargs.get("copy") else None


def _graph(adata: AnnData, kwargs: dict):
    """The adjacency scanpy would cluster, or None where scanpy should decide (and raise)."""
    if kwargs.get("adjacency") is not None:
        return kwargs["adjacency"]
    if kwargs.get("obsp") is not None:
        return adata.obsp[kwargs["obsp"]] if kwargs.get("neighbors_key") is None and kwargs["obsp"] in adata.obsp \
            else None  # fmt: skip
    found = neighbors_graph(adata, kwargs.get("neighbors_key"))
    return None if found is None else found[1]
