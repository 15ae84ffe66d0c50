"""Preprocessing steps with scanpy's signatures; each runs where its data lives (CPU or GPU)."""

from ._combat import combat
from ._downsample import downsample_counts
from ._filter import filter_cells, filter_genes
from ._harmony import harmony_integrate
from ._hvg import highly_variable_genes
from ._log1p import log1p
from ._neighbors import neighbors
from ._normalize import normalize_total
from ._pca import pca
from ._regress_out import regress_out
from ._qc import calculate_qc_metrics
from ._scale import scale
from ._scrublet import scrublet, scrublet_simulate_doublets

__all__ = [
    "calculate_qc_metrics", "filter_cells", "filter_genes", "normalize_total", "log1p",
    "highly_variable_genes", "scale", "pca", "neighbors", "harmony_integrate", "regress_out",
    "scrublet", "scrublet_simulate_doublets", "combat", "downsample_counts",
]  # fmt: skip
