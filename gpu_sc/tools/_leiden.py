"""leiden: scanpy's tl.leiden on the neighbour graph (rapids-singlecell on the GPU if importable)."""

from __future__ import annotations

from anndata import AnnData

from ._delegate import run


def leiden(adata: AnnData, **kwargs):
    """Leiden clustering of the neighbour graph, like :func:`scanpy.tl.leiden` (same keywords).

    Parameters
    ----------
    adata
        Annotated data matrix after ``neighbors``.
    **kwargs
        Passed to :func:`scanpy.tl.leiden` (or ``rapids_singlecell.tl.leiden`` for a GPU graph).

    Returns
    -------
    ``adata`` when ``copy=True``, else ``None``. Sets ``obs['leiden']`` (or ``obs[key_added]``;
    categorical) and ``uns['leiden']`` (or ``uns[key_added]``), as scanpy does. Without
    rapids-singlecell a GPU graph is moved to the host (one info line).
    """
    return run("leiden", adata, kwargs)
