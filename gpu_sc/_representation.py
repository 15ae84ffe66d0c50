"""Which matrix a graph step works on (``use_rep``, ``n_pcs``): scanpy's rule, shared by
``pp.neighbors``, ``tl.dendrogram`` and ``tl.umap``, with the line scanpy logs about it."""

from __future__ import annotations

import importlib

from anndata import AnnData

from . import _keys as K
from ._settings import default_n_pcs, settings
from ._validation import check_index_dtype


def representation(adata: AnnData, use_rep, n_pcs, *, step: str):
    """The matrix scanpy's `_choose_representation` picks for a graph: X_pca (its first `n_pcs`
    columns) above 50 genes, else X; obsm[use_rep]; X for use_rep='X' or n_pcs=0. None where
    X_pca is missing above 50 genes and gsc.pp.pca can make it (the caller does, as scanpy).
    A matrix of no column, or a sparse one with unsigned index arrays, is refused. Where the
    choice is scanpy's default (no `use_rep`), its info line says which ("    using 'X_pca' with
    n_pcs = 50", "    using data matrix X directly"); `settings.muted()` where scanpy's is silent."""
    rep = _chosen(adata, use_rep, n_pcs, step=step)
    if use_rep is None and n_pcs != 0 and rep is not None:
        chose_x = adata.n_vars <= default_n_pcs()
        settings.log("    using data matrix X directly" if chose_x else
                     f"    using 'X_pca' with n_pcs = {rep.shape[1]}")  # fmt: skip
    if rep is not None:
        check_index_dtype(rep, step=step)
        if len(rep.shape) == 2 and rep.shape[1] == 0:  # a graph of all-zero distances otherwise
            msg = (f"{step}: the representation has no column ({rep.shape[0]} cells x 0); a graph needs "
                   "at least one gene or component.")
            raise ValueError(msg)
    return rep


def _chosen(adata: AnnData, use_rep, n_pcs, *, step: str):
    if use_rep is None and n_pcs == 0:
        return adata.X
    if use_rep is None:
        if adata.n_vars > default_n_pcs():
            if K.OBSM_PCA not in adata.obsm:
                try:
                    importlib.import_module("gpu_sc.preprocessing._pca")
                except ImportError:
                    msg = (f"{step}: no adata.obsm['X_pca'] and {adata.n_vars} genes; run gsc.pp.pca first "
                           "or pass use_rep='X'.")
                    raise ValueError(msg) from None
                return None  # computed by the caller after validation
            rep = adata.obsm[K.OBSM_PCA]
            if n_pcs is not None and n_pcs > rep.shape[1]:
                msg = f"{step}: n_pcs={n_pcs} exceeds the {rep.shape[1]} components in X_pca."
                raise ValueError(msg)
            return rep[:, :n_pcs] if n_pcs is not None else rep
        return adata.X
    if use_rep == "X":
        return adata.X
    if use_rep not in adata.obsm:
        msg = f"{step}: use_rep={use_rep!r} not in adata.obsm ({list(adata.obsm)})."
        raise ValueError(msg)  # as scanpy
    rep = adata.obsm[use_rep]
    if n_pcs is not None:
        if n_pcs > rep.shape[1]:
            msg = f"{step}: n_pcs={n_pcs} exceeds the {rep.shape[1]} columns of obsm[{use_rep!r}]."
            raise ValueError(msg)
        rep = rep[:, :n_pcs]
    return rep
