"""scanpy.experimental.pp: analytic Pearson residuals (Lause et al. 2021) for normalization,
gene selection and PCA, on the CPU and the GPU."""

from ._highly_variable_genes import highly_variable_genes
from ._normalization import normalize_pearson_residuals, normalize_pearson_residuals_pca
from ._recipes import recipe_pearson_residuals

__all__ = ["highly_variable_genes", "normalize_pearson_residuals", "normalize_pearson_residuals_pca",
           "recipe_pearson_residuals"]
