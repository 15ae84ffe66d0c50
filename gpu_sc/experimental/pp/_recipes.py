"""scanpy.experimental.pp.recipe_pearson_residuals: gene selection, residuals and PCA in one."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pandas as pd
from anndata import AnnData

from ..._validation import check_anndata
from ...preprocessing import pca
from ._highly_variable_genes import highly_variable_genes
from ._normalization import _normalize, store_pca
from ._residuals import refuse_dask


def recipe_pearson_residuals(adata: AnnData, *, theta: float = 100, clip: float | None = None,
                             n_top_genes: int = 1000, batch_key: str | None = None, chunksize: int = 1000,
                             n_comps: int | None = 50, random_state: float | None = 0,
                             kwargs_pca: Mapping[str, Any] = MappingProxyType({}), check_values: bool = True,
                             inplace: bool = True) -> tuple[AnnData, pd.DataFrame] | None:  # fmt: skip
    """Pearson-residual gene selection (:func:`highly_variable_genes`), then residuals and PCA
    of the selected genes, as scanpy.experimental.pp's.

    Returns
    -------
    With `inplace`, the gene selection's var columns and ``uns['hvg']``, and the PCA's
    ``obsm['X_pca']``, ``varm['PCs']`` (zero rows for the genes not selected), ``uns['pca']``
    and ``uns['pearson_residuals_normalization']`` (with 'pearson_residuals_df'); otherwise
    (the AnnData of the selected genes with residuals and PCA, the gene selection DataFrame).
    """
    check_anndata(adata, step="recipe_pearson_residuals")
    refuse_dask(adata.X, step="recipe_pearson_residuals")  # before the selection writes var, which takes Dask
    hvg_args = {"flavor": "pearson_residuals", "n_top_genes": n_top_genes, "batch_key": batch_key, "theta": theta,
                "clip": clip, "chunksize": chunksize, "check_values": check_values}  # fmt: skip
    if inplace:
        highly_variable_genes(adata, **hvg_args, inplace=True)
        mask = adata.var["highly_variable"].to_numpy()
    else:
        hvg = highly_variable_genes(adata, **hvg_args, inplace=False)
        mask = hvg["highly_variable"].to_numpy()
    sub = adata[:, mask].copy()
    _normalize(sub, theta=theta, clip=clip, check_values=check_values, layer=None, inplace=True, copy=False,
               step="recipe_pearson_residuals")  # fmt: skip
    pca(sub, n_comps=n_comps, random_state=random_state, **kwargs_pca)
    if not inplace:
        return sub, hvg
    store_pca(adata, sub, mask)
    return None
