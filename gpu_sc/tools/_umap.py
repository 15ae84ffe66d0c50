"""umap: scanpy's tl.umap on the neighbour graph (rapids-singlecell on the GPU if importable)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._scanpy_signatures import scanpy_signature
from .._settings import settings
from .._validation import old_positionals
from ._delegate import neighbors_graph, run


@scanpy_signature("umap")
@old_positionals("min_dist", "spread", "n_components", "maxiter", "alpha", "gamma", "negative_sample_rate",
                 "init_pos", "random_state", "a", "b", "copy", "method", "neighbors_key")
def umap(adata: AnnData, **kwargs):
    """UMAP embedding of the neighbour graph, like :func:`scanpy.tl.umap` (same keywords).

    On the CPU the default spectral start is computed by :mod:`gpu_sc.tools._umap_init` (the same
    array and random state as umap-learn's, without its per-component pass over the whole graph)
    and handed to scanpy, so ``obsm['X_umap']`` is scanpy's to the bit.

    Parameters
    ----------
    adata
        Annotated data matrix after ``neighbors``.
    min_dist, spread, ...
        scanpy's keywords, as the signature shows them (:func:`scanpy.tl.umap` documents
        each); those given are passed on as given (to ``rapids_singlecell.tl.umap`` for a GPU
        graph where it takes them all), the others keep scanpy's defaults.

    Returns
    -------
    ``adata`` when ``copy=True``, else ``None``. Sets ``obsm['X_umap']`` (or
    ``obsm[key_added]``) and ``uns['umap']`` (or ``uns[key_added]``), as scanpy does. Without
    rapids-singlecell a GPU graph is moved to the host (one info line) and the embedding goes back
    to the GPU.
    """
    return run("umap", adata, kwargs, prepare=_spectral_start)


def _spectral_start(host: AnnData, kwargs: dict):
    """scanpy's keywords with ``init_pos`` set to umap-learn's spectral start and ``random_state``
    to the generator in the state umap-learn leaves it in; and the fix-up of ``uns`` that makes
    the stored parameters those the user passed. Other starts and methods go to scanpy as given."""
    from sklearn.utils import check_random_state

    from .._representation import representation
    from ._umap_init import pruned_graph, spectral_init

    init_pos = kwargs.get("init_pos", "spectral")
    if not (isinstance(init_pos, str) and init_pos == "spectral" and kwargs.get("method", "umap") == "umap"):
        return kwargs, None
    found = neighbors_graph(host, kwargs.get("neighbors_key"))
    if found is None:
        return kwargs, None  # scanpy's own error
    meta, graph = found
    params = meta.get("params", {})
    try:
        with settings.muted():  # scanpy's spectral start chooses it silently
            rep = representation(host, params.get("use_rep"), params.get("n_pcs"), step="umap")
    except (ValueError, TypeError):  # scanpy's own start then (unsigned index arrays: TypeError here)
        return kwargs, None
    if not (sp.issparse(graph) and isinstance(rep, np.ndarray)):  # `host` is run()'s host copy
        return kwargs, None
    seed = kwargs.get("random_state", 0)
    rng = check_random_state(seed)
    start = spectral_init(pruned_graph(graph, kwargs.get("maxiter")), rep, kwargs.get("n_components", 2), rng,
                          metric=params.get("metric", "euclidean"), metric_kwds=params.get("metric_kwds", {}))
    key = kwargs.get("key_added") or "umap"

    def stored_params(adata: AnnData) -> None:
        stored = adata.uns[key]["params"]
        if seed != 0:  # scanpy's rule: a seed of 0 is not stored
            stored["random_state"] = seed
        else:
            stored.pop("random_state", None)

    return {**kwargs, "init_pos": start, "random_state": rng}, stored_params
