"""scanpy's t-SNE (`tsne`) and the density of cells in an embedding (`embedding_density`), by
delegation (`_delegate.run`): rapids-singlecell's where the input lives on the GPU and it takes
every keyword given, else scanpy's own call on a host copy, its results written back (to the GPU
where the input lives there). X is copied only where t-SNE reads it (scanpy's representation
rule, `_delegate.reads_x`)."""

from __future__ import annotations

from anndata import AnnData

from .._backend import is_gpu
from .._keys import OBSM_PCA
from .._scanpy_signatures import scanpy_signature
from .._validation import old_positionals
from ._delegate import reads_x, run

_TSNE_DEFAULTS = {"perplexity": 30, "early_exaggeration": 12, "learning_rate": 1000}  # scanpy 1.11's


@scanpy_signature("tsne")
@old_positionals("use_rep", "perplexity", "early_exaggeration", "learning_rate", "random_state", "use_fast_tsne",
                 "n_jobs", "copy")  # fmt: skip
def tsne(adata: AnnData, n_pcs: int | None = None, **kwargs):
    """t-SNE of the cells, like :func:`scanpy.tl.tsne` (same keywords, scanpy's embedding).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``obsm['X_tsne']`` (or
    ``obsm[key_added]``) and ``uns['tsne']`` as scanpy does.
    """
    rep = kwargs.get("use_rep")
    with_x = reads_x(adata, rep, n_pcs)
    source = adata.X if with_x else adata.obsm.get(rep or OBSM_PCA)
    # scanpy's values of the parameters rapids-singlecell takes too (its own defaults differ:
    # learning_rate 200 against scanpy's 1000), so that a GPU call means what scanpy's does
    kwargs = {**_TSNE_DEFAULTS, **kwargs}
    return run("tsne", adata, {"n_pcs": n_pcs, **kwargs}, x="always" if with_x else "never",
               on_gpu=is_gpu(source))  # fmt: skip


@scanpy_signature("embedding_density")
@old_positionals("groupby", "key_added", "components")
def embedding_density(adata: AnnData, basis: str = "umap", **kwargs):
    """Gaussian kernel density of the cells in ``obsm['X_' + basis]`` (per ``groupby`` category
    where given), like :func:`scanpy.tl.embedding_density` (same keywords).

    Returns ``None``; sets ``obs[basis + '_density']`` (or ``key_added``) and its ``uns`` parameters
    as scanpy does.
    """
    return run("embedding_density", adata, {"basis": basis, **kwargs}, x="never",
               on_gpu=is_gpu(adata.obsm.get(f"X_{basis}")))  # fmt: skip
