"""scanpy's `tl`: marker genes (`rank_genes_groups`, `filter_rank_genes_groups`, the groups'
`dendrogram`, `marker_gene_overlap`) and gene-set scores (`score_genes`, `score_genes_cell_cycle`) on
every backend, and the tools on the neighbour graph and embeddings (umap, leiden, louvain, tsne,
embedding_density, diffmap, dpt, paga, draw_graph: rapids-singlecell on the GPU where available,
scanpy otherwise; ingest and its `Ingest` class: scanpy's on host copies; the PAGA summaries and sim: scanpy's own)."""

from ._dendrogram import dendrogram
from ._embeddings import embedding_density, tsne
from ._filter_rank_genes_groups import filter_rank_genes_groups
from ._graph_tools import diffmap, dpt, draw_graph, louvain, paga
from ._ingest import ingest
from ._leiden import leiden
from ._marker_gene_overlap import marker_gene_overlap
from ._paga_stats import paga_compare_paths, paga_degrees, paga_expression_entropies, sim
from ._rank_genes_groups import rank_genes_groups
from ._score_genes import score_genes, score_genes_cell_cycle
from ._umap import umap

__all__ = ["umap", "leiden", "tsne", "embedding_density", "diffmap", "dpt", "paga", "draw_graph",
           "rank_genes_groups", "filter_rank_genes_groups", "dendrogram", "score_genes", "score_genes_cell_cycle",
           "marker_gene_overlap", "louvain", "ingest", "paga_degrees", "paga_expression_entropies",
           "paga_compare_paths", "sim", "Ingest"]


def __getattr__(name: str):
    """`Ingest`: scanpy's class with its search index working with pynndescent 0.7 (`_ingest`),
    made on first use (it subclasses scanpy's, which is imported only then). `pca`: `pp.pca`, as
    scanpy's `tl.pca` is its `pp.pca` (tutorials call it there)."""
    if name == "Ingest":
        from ._ingest import _ingest_class

        return _ingest_class()
    if name == "pca":
        from ..preprocessing import pca

        return pca
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), "Ingest", "pca"})
