"""ingest: new cells mapped onto a reference's PCA, UMAP and labels, with scanpy's `Ingest`.

scanpy's `tl.ingest` projects the new cells' X on the reference's principal axes, finds their
neighbours among the reference cells with pynndescent, places them in the reference's UMAP
(umap-learn's transform) and votes their labels. It runs here through scanpy's `Ingest` class on
host copies, so reference and new cells may live on the GPU; the results (obs labels, obsm
embeddings) go back where the new cells' X lives. One change: scanpy 1.11's rebuild of the
search index's random-projection forest fails with pynndescent 0.7 (TypeError, its tree count
is None), and there the index builds its own forest (`prepare`), as pynndescent does.
"""

from __future__ import annotations

import functools

from anndata import AnnData

from .._backend import is_dask, is_gpu
from .._settings import settings
from .._validation import check_anndata, old_positionals
from ._delegate import host_copy, run


@old_positionals("obs", "embedding_method", "labeling_method", "neighbors_key", "inplace")
def ingest(adata: AnnData, adata_ref: AnnData, *, obs=None, embedding_method=("umap", "pca"),
           labeling_method="knn", neighbors_key: str | None = None, inplace: bool = True, **kwargs):  # fmt: skip
    """Map labels and embeddings from a reference onto new cells, like :func:`scanpy.tl.ingest`
    (same keywords; the reference needs `pca`, `neighbors` and, for the UMAP, `umap` results,
    ours or scanpy's; both share the same genes).

    Returns None with ``inplace=True`` (the default), setting ``adata.obs[obs]`` and
    ``adata.obsm['X_umap']`` / ``['X_pca']``; else a copy of `adata` with them. Extra keywords
    go to the neighbour search (`k`, `queue_size`, `epsilon`, `random_state`), as in scanpy.
    """
    check_anndata(adata, step="ingest")
    check_anndata(adata_ref, step="ingest", name="adata_ref")
    if is_dask(adata.X):  # the reference's X is read only where its graph was built on X: scanpy decides
        msg = ("ingest: adata.X is a Dask array; the mapping projects the new cells' X in memory: compute it "
               "first (adata.X = adata.X.compute()).")  # fmt: skip
        raise TypeError(msg)
    start = settings.log("running ingest")
    obs = [obs] if isinstance(obs, str) else obs
    embedding_method = [embedding_method] if isinstance(embedding_method, str) else list(embedding_method)
    labeling_method = [labeling_method] if isinstance(labeling_method, str) else list(labeling_method)
    if len(labeling_method) == 1 and len(obs or []) > 1:
        labeling_method = labeling_method * len(obs)
    if obs is not None and len(labeling_method) < len(obs):  # scanpy: IndexError after the embeddings
        msg = (f"ingest: {len(obs)} obs columns to map ({obs}) but {len(labeling_method)} labeling methods; "
               "give one method, or one per column.")  # fmt: skip
        raise ValueError(msg)
    missing = [c for c in (obs or []) if c not in adata_ref.obs.columns]
    if missing:  # scanpy: a bare KeyError after the embeddings were mapped
        msg = (f"ingest: obs {missing} not in adata_ref.obs (columns: {list(adata_ref.obs.columns)[:10]}); name "
               "columns of the reference to map.")  # fmt: skip
        raise KeyError(msg)
    if "umap" in embedding_method and not ("X_umap" in adata_ref.obsm and "umap" in adata_ref.uns):
        # scanpy: AttributeError "'_Ingest' object has no attribute '_umap'" or a bare KeyError 'umap'
        what = "uns['umap']" if "X_umap" in adata_ref.obsm else "obsm['X_umap']"
        msg = (f"ingest: embedding_method 'umap' maps onto the reference's UMAP, but adata_ref has no {what}; run "
               "tl.umap on the reference first, or pass embedding_method='pca'.")  # fmt: skip
        raise ValueError(msg)
    if not inplace:
        adata = adata.copy()
    on_device = [adata_ref.X, *adata_ref.obsm.values(), *adata_ref.varm.values(), *adata_ref.obsp.values()]
    ref = host_copy(adata_ref, with_x=True, varm=True) if any(is_gpu(a) for a in on_device) else adata_ref

    def mapped(host: AnnData) -> None:
        ing = _ingest_class()(ref, neighbors_key)
        ing.fit(host)
        for method in embedding_method:
            ing.map_embedding(method)
        if obs is not None:
            ing.neighbors(**kwargs)
            for i, col in enumerate(obs):
                ing.map_labels(col, labeling_method[i])
        ing.to_adata(inplace=True)

    run("ingest", adata, {}, x="always", on_gpu=is_gpu(adata.X), host_tool=mapped)
    settings.log("    finished", start=start)
    return None if inplace else adata


@functools.cache
def _ingest_class():
    """scanpy's `Ingest`, its search index made to work with pynndescent 0.7 (module docstring)."""
    from scanpy.tools._ingest import Ingest

    class _Ingest(Ingest):
        def _init_pynndescent(self, distances):
            try:
                super()._init_pynndescent(distances)
            except TypeError:
                if getattr(self, "_nnd_idx", None) is None:
                    raise
                self._nnd_idx.prepare()  # the index's own search forest

    return _Ingest
