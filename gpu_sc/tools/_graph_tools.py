"""scanpy's trajectory tools on the neighbour graph, by delegation (`_delegate.run`): diffusion
map (`diffmap`), diffusion pseudotime (`dpt`), partition-based graph abstraction (`paga`), the
force-directed layout (`draw_graph`) and Louvain clusters (`louvain`). rapids-singlecell's
`diffmap`, `draw_graph` and `louvain` run a GPU graph where importable and given only keywords
they take; everything else is scanpy's own call on a host copy of the graph and the
obs/obsm/uns entries, its results written back (obsm ones to the GPU where the graph lives).
None of them reads X (dpt only to find a root given as an expression profile, `xroot`), so X is
not copied otherwise."""

from __future__ import annotations

from anndata import AnnData

from .._scanpy_signatures import scanpy_signature
from .._validation import old_positionals
from ._delegate import run


@scanpy_signature("diffmap")
@old_positionals("neighbors_key", "random_state", "copy")
def diffmap(adata: AnnData, n_comps: int = 15, **kwargs):
    """Diffusion map of the neighbour graph, like :func:`scanpy.tl.diffmap` (same keywords).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``obsm['X_diffmap']`` and
    ``uns['diffmap_evals']`` as scanpy does.
    """
    return run("diffmap", adata, {"n_comps": n_comps, **kwargs}, x="never")


@scanpy_signature("dpt")
@old_positionals("n_branchings", "min_group_size", "allow_kendall_tau_shift", "neighbors_key", "copy")
def dpt(adata: AnnData, n_dcs: int = 10, **kwargs):
    """Diffusion pseudotime from ``uns['iroot']`` (or the cell closest to ``var['xroot']`` /
    ``uns['xroot']``), like :func:`scanpy.tl.dpt` (same keywords;
    the diffusion map is computed first where ``obsm['X_diffmap']`` is missing, as in scanpy).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``obs['dpt_pseudotime']`` (and,
    with ``n_branchings``, ``obs['dpt_groups']``, ``obs['dpt_order']`` ...) as scanpy does.
    """
    # a root given as an expression profile (var or uns 'xroot') is found among X's rows
    xroot = "xroot" in adata.var or "xroot" in adata.uns
    return run("dpt", adata, {"n_dcs": n_dcs, **kwargs}, x="always" if xroot else "never")


@scanpy_signature("paga")
@old_positionals("use_rna_velocity", "model", "neighbors_key", "copy")
def paga(adata: AnnData, groups: str | None = None, **kwargs):
    """Partition-based graph abstraction of the groups ``obs[groups]`` (default: leiden or
    louvain), like :func:`scanpy.tl.paga` (same keywords).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``uns['paga']`` and
    ``uns[groups + '_sizes']`` as scanpy does.
    """
    return run("paga", adata, {"groups": groups, **kwargs}, x="never")


@scanpy_signature("draw_graph")
@old_positionals("init_pos", "root", "random_state", "n_jobs", "adjacency", "key_added_ext", "neighbors_key",
                 "obsp", "copy")  # fmt: skip
def draw_graph(adata: AnnData, layout: str = "fa", **kwargs):
    """Force-directed layout of the neighbour graph, like :func:`scanpy.tl.draw_graph` (same
    keywords; ``layout='fa'`` needs the fa2-modified package there, else scanpy falls back to
    'fr' with its warning).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``obsm['X_draw_graph_' + layout]``
    and ``uns['draw_graph']`` as scanpy does.
    """
    return run("draw_graph", adata, {"layout": layout, **kwargs}, x="never")


@scanpy_signature("louvain")
@old_positionals("random_state", "restrict_to", "key_added", "adjacency", "flavor", "directed", "use_weights",
                 "partition_type", "partition_kwargs", "neighbors_key", "obsp", "copy")  # fmt: skip
def louvain(adata: AnnData, resolution: float | None = None, **kwargs):
    """Louvain clusters of the neighbour graph, like :func:`scanpy.tl.louvain` (same keywords):
    ``flavor='vtraag'`` (scanpy's default) needs the louvain package, as in scanpy;
    ``flavor='igraph'`` runs igraph's multilevel method. On a GPU graph without keywords
    rapids-singlecell does not take, rapids-singlecell's Louvain runs (cuGraph's: other labels).

    Returns ``adata`` when ``copy=True``, else ``None``; sets ``obs[key_added]`` (default
    ``'louvain'``) and ``uns['louvain']`` as scanpy does.
    """
    if resolution is not None:  # None is scanpy's "the partition's own" (1); rapids' default is 1.0
        kwargs = {"resolution": resolution, **kwargs}
    return run("louvain", adata, kwargs, x="never")
