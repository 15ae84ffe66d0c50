"""Preprocessing steps with scanpy's signatures; each runs where its data lives (CPU or GPU)."""

from ._combat import combat
from ._downsample import downsample_counts
from ._filter import filter_cells, filter_genes
from ._filter_genes_dispersion import filter_genes_dispersion
from ._harmony import harmony_integrate
from ._hvg import highly_variable_genes
from ._log1p import log1p
from ._neighbors import neighbors
from ._normalize import normalize_total
from ._normalize_per_cell import normalize_per_cell
from ._pca import pca
from ._regress_out import regress_out
from ._sampling import sample, subsample
from ._qc import calculate_qc_metrics
from ._recipes import recipe_seurat, recipe_weinreb17, recipe_zheng17
from ._scale import scale
from ._scrublet import scrublet, scrublet_simulate_doublets
from ._sqrt import sqrt

__all__ = [
    "calculate_qc_metrics", "filter_cells", "filter_genes", "normalize_total", "log1p",
    "highly_variable_genes", "scale", "pca", "neighbors", "harmony_integrate", "regress_out",
    "scrublet", "scrublet_simulate_doublets", "combat", "downsample_counts", "filter_genes_dispersion",
    "recipe_zheng17", "recipe_seurat", "recipe_weinreb17", "sample", "subsample", "sqrt",
    "normalize_per_cell",
]  # fmt: skip
