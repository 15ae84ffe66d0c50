"""scanpy.experimental.pp's normalize_pearson_residuals and normalize_pearson_residuals_pca."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._backend import to_host, xp_of
from ..._settings import settings
from ..._validation import EMPTY, check_anndata, get_matrix, handle_mask_var, make_actual, set_matrix
from ...preprocessing import pca
from ._residuals import check_theta_clip, counts_matrix, pearson_residuals, residual_dtype

UNS_KEY = "pearson_residuals_normalization"
_STEP = "normalize_pearson_residuals"


def normalize_pearson_residuals(adata: AnnData, *, theta: float = 100, clip: float | None = None,
                                check_values: bool = True, layer: str | None = None, inplace: bool = True,
                                copy: bool = False) -> AnnData | dict[str, np.ndarray] | None:  # fmt: skip
    """Analytic Pearson residuals (Lause et al. 2021), as scanpy.experimental.pp's.

    Residuals of a negative binomial offset model with overdispersion `theta` shared across
    genes (``np.inf``: Poisson), clipped to ``[-clip, clip]`` (None: ``sqrt(n_obs)``). Expects
    raw counts (`check_values`: a warning where some are not whole and non-negative). The
    result is dense (cells x genes) where the counts were, numpy on the CPU, cupy on the GPU,
    in scanpy's dtype: float64, or float32 for float32 counts with `clip` given as a number.
    It is computed in float64 from float64 totals (scanpy computes in the counts' dtype, so on
    float32 counts the two differ at float32 rounding).

    Returns
    -------
    With `inplace`, X (or `layer`) holds the residuals and
    ``uns['pearson_residuals_normalization']`` = {'theta', 'clip', 'computed_on'}; otherwise a
    dict of those with the residuals under 'X'. With `copy` (and `inplace`), the changed copy.
    Nothing changes when an error is raised.
    """
    return _normalize(adata, theta=theta, clip=clip, check_values=check_values, layer=layer, inplace=inplace,
                      copy=copy, step=_STEP)  # fmt: skip


def _normalize(adata: AnnData, *, theta, clip, check_values: bool, layer: str | None, inplace: bool, copy: bool,
               step: str):  # fmt: skip
    """`normalize_pearson_residuals`, its messages naming `step` (the function the user called)."""
    check_anndata(adata, step=step)
    if copy and not inplace:
        msg = "`copy=True` cannot be used with `inplace=False`."
        raise ValueError(msg)
    check_theta_clip(theta, clip, step=step)
    given = get_matrix(adata, layer=layer, step=step)
    start = settings.log(f"computing analytic Pearson residuals on {layer if layer else 'adata.X'}")
    x = counts_matrix(given, step=step, check_values=check_values, what="`normalize_pearson_residuals()`")
    residuals = pearson_residuals(x, theta, clip, dtype=residual_dtype(given.dtype, theta, clip), step=step)
    params = {"theta": theta, "clip": clip, "computed_on": layer if layer else "adata.X"}
    if not inplace:
        settings.log("    finished ({time_passed})", start=start)
        return {"X": residuals, **params}
    if copy:
        adata = adata.copy()
    make_actual(adata, warn=True)
    set_matrix(adata, residuals, layer=layer)
    adata.uns[UNS_KEY] = params
    settings.log("    finished ({time_passed})", start=start)
    return adata if copy else None


def normalize_pearson_residuals_pca(adata: AnnData, *, theta: float = 100, clip: float | None = None,
                                    n_comps: int | None = 50, random_state: float = 0,
                                    kwargs_pca: Mapping[str, Any] = MappingProxyType({}), mask_var=EMPTY,
                                    use_highly_variable: bool | None = None, check_values: bool = True,
                                    inplace: bool = True) -> AnnData | None:  # fmt: skip
    """Pearson residuals and PCA of them, as scanpy.experimental.pp's: on the genes of
    `mask_var` (default: ``var['highly_variable']`` where it exists), residuals by
    :func:`normalize_pearson_residuals`, then :func:`gpu_sc.pp.pca` with `n_comps`,
    `random_state` and `kwargs_pca`.

    Returns
    -------
    With `inplace`, ``obsm['X_pca']``, ``varm['PCs']`` (zero rows for genes outside the mask),
    ``uns['pca']`` and ``uns['pearson_residuals_normalization']`` (its settings and
    'pearson_residuals_df', the residuals as a host DataFrame); otherwise the AnnData of the
    masked genes holding the residuals and the PCA.
    """
    step = "normalize_pearson_residuals_pca"
    check_anndata(adata, step=step)
    _, mask = handle_mask_var(adata.var, mask_var, use_highly_variable, n_vars=adata.n_vars, step=step)
    sub = adata[:, mask] if mask is not None else adata
    work = AnnData(sub.X.copy(), obs=sub.obs[[]], var=sub.var[[]])
    _normalize(work, theta=theta, clip=clip, check_values=check_values, layer=None, inplace=True, copy=False,
               step=step)  # fmt: skip
    pca(work, n_comps=n_comps, random_state=random_state, **kwargs_pca)
    if not inplace:
        return work
    store_pca(adata, work, mask)
    return None


def store_pca(adata: AnnData, work: AnnData, mask) -> None:
    """Write the residuals' PCA of `work` (the genes of `mask`, None: all) into `adata`, as
    scanpy's residual steps do: loadings of genes outside the mask are float64 zeros."""
    loadings = work.varm["PCs"]
    if mask is not None:
        xp = xp_of(loadings)
        full = xp.zeros((adata.n_vars, loadings.shape[1]))
        full[xp.asarray(mask)] = loadings
        loadings = full
    adata.varm["PCs"] = loadings
    adata.uns["pca"] = work.uns["pca"]
    frame = pd.DataFrame(to_host(work.X), index=work.obs_names, columns=work.var_names)
    adata.uns[UNS_KEY] = {**work.uns[UNS_KEY], "pearson_residuals_df": frame}
    adata.obsm["X_pca"] = work.obsm["X_pca"]
