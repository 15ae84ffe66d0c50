"""marker_gene_overlap: scanpy's own, which reads only the ranking in `uns` (never X)."""

from __future__ import annotations

from .._scanpy_own import scanpy_own
from .._scanpy_signatures import scanpy_signature


@scanpy_signature("marker_gene_overlap")
def marker_gene_overlap(adata, reference_markers, **kwargs):
    """Overlap of the ranked marker genes with reference markers: :func:`scanpy.tl.marker_gene_overlap`.

    It reads ``adata.uns[key]`` (a ranking from :func:`gpu_sc.tl.rank_genes_groups` or scanpy's)
    and never X, so scanpy's code runs as it is, wherever X lives; the keyword arguments are
    scanpy's (`key`, `method`, `normalize`, `top_n_markers`, `adj_pval_threshold`, `key_added`,
    `inplace`).
    """
    fn = scanpy_own("tl", "marker_gene_overlap", "scanpy.tools._marker_gene_overlap")
    return fn(adata, reference_markers, **kwargs)
