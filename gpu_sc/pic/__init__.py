"""PIC-seq: deconvolution of physically interacting cells (doublets) into their partners
(Giladi et al., Nat Biotechnol 2020; Cohen et al., Nat Cancer 2022; README.md, "PIC-seq
deconvolution"), and what follows from it: expected expression, interaction-induced genes,
pair frequencies, doublet/triplet QC and plots."""

from ._deconvolve import CHOICES as DECONVOLVE_CHOICES
from ._deconvolve import MAX_UMIS as DECONVOLVE_MAX_UMIS
from ._deconvolve import deconvolve
from ._expected import expected_expression
from ._frequencies import pair_abundance_test, pair_frequencies
from .._stats import bh_fdr
from ._interaction import interaction_genes
from ._plot import PLOT_FILES, alpha_hist, interaction_plot, pair_heatmap, write_plots
from ._qc import doublet_test, pic_loglik, triplet_scan
from ._simulate import simulate_pics
from ._summary import accuracy, summary

__all__ = [
    "simulate_pics", "deconvolve", "expected_expression", "interaction_genes", "bh_fdr",
    "pair_frequencies", "pair_abundance_test",
    "doublet_test", "triplet_scan", "pic_loglik", "pair_heatmap", "alpha_hist", "interaction_plot",
    "write_plots", "PLOT_FILES", "summary", "accuracy", "DECONVOLVE_CHOICES",
    "DECONVOLVE_MAX_UMIS",
]  # fmt: skip
