"""umap: scanpy's tl.umap on the neighbour graph (rapids-singlecell on the GPU if importable)."""

from __future__ import annotations

from anndata import AnnData

from ._delegate import run


def umap(adata: AnnData, **kwargs):
    """UMAP embedding of the neighbour graph, like :func:`scanpy.tl.umap` (same keywords).

    Parameters
    ----------
    adata
        Annotated data matrix after ``neighbors``.
    **kwargs
        Passed to :func:`scanpy.tl.umap` (or ``rapids_singlecell.tl.umap`` for a GPU graph).

    Returns
    -------
    ``adata`` when ``copy=True``, else ``None``. Sets ``obsm['X_umap']`` (or
    ``obsm[key_added]``) and ``uns['umap']`` (or ``uns[key_added]``), as scanpy does. Without
    rapids-singlecell a GPU graph is moved to the host (one info line) and the embedding goes back
    to the GPU.
    """
    return run("umap", adata, kwargs)
