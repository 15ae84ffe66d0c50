"""filter_genes_dispersion: scanpy's deprecated gene filter, which its recipes still call.

It differs from highly_variable_genes in four ways that change which genes are kept, so it is
its own step: the data are taken as they are (no expm1), `log` alone decides whether
dispersions and means are logged, whatever the flavor, 'cell_ranger' ranks genes by the
absolute distance of their dispersion from their bin's median (far below counts as variable),
and the normalised dispersions are rounded to float32 before the cutoffs and the ranking.
The per-gene statistics and the binning are highly_variable_genes' own (`_hvg`).
"""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._settings import DEBUG, settings, user_stacklevel
from .._validation import check_anndata, check_n_top_genes, make_actual, old_positionals
from ._filter import _subset_inplace
from ._hvg import _dispersion_frame, check_n_bins, col_mean_var, numeric_matrix

_STEP = "filter_genes_dispersion"
_DEPRECATED = "Use sc.pp.highly_variable_genes instead"
_RESULT_DTYPE = [("gene_subset", bool), ("means", "float32"), ("dispersions", "float32"),
                 ("dispersions_norm", "float32")]  # fmt: skip


@old_positionals("flavor", "min_disp", "max_disp", "min_mean", "max_mean", "n_bins", "n_top_genes", "log",
                 "subset", "copy")  # fmt: skip
def filter_genes_dispersion(
    data,
    *,
    flavor: str = "seurat",
    min_disp: float | None = None,
    max_disp: float | None = None,
    min_mean: float | None = None,
    max_mean: float | None = None,
    n_bins: int = 20,
    n_top_genes: int | None = None,
    log: bool = True,
    subset: bool = True,
    copy: bool = False,
):
    """Select highly variable genes, like scanpy's deprecated :func:`scanpy.pp.filter_genes_dispersion`.

    Prefer :func:`gpu_sc.pp.highly_variable_genes`; this step exists because scanpy's recipes
    (:func:`gpu_sc.pp.recipe_zheng17`, :func:`gpu_sc.pp.recipe_seurat`) and older scripts call
    it, and its choice of genes differs from the newer step's. It warns as scanpy does.

    Each gene's dispersion (variance / mean) is normalised within bins of its mean: equal-width
    bins and mean / standard deviation for ``'seurat'``, bins at the 10th, 15th, ... percentiles
    and the absolute distance from the median / MAD for ``'cell_ranger'``. With `log` (default),
    dispersions are logged and means log1p'd first, whatever the flavor; the data themselves are
    used as given.

    Parameters
    ----------
    data
        An AnnData or a matrix (cells x genes): numpy, scipy sparse, cupy, cupyx sparse, or a
        Dask array chunked by rows.
    flavor
        ``'seurat'`` or ``'cell_ranger'``.
    min_disp, max_disp, min_mean, max_mean
        Cutoffs (defaults 0.5, none, 0.0125, 3) on the normalised dispersion and the (logged)
        mean; a gene is kept when strictly inside all of them. Ignored, with a warning, when
        `n_top_genes` is given.
    n_bins
        Number of mean bins (``'seurat'``). Used for AnnData input too (scanpy's uses 20 there,
        whatever is passed).
    n_top_genes
        Keep the genes of the `n_top_genes` highest normalised dispersions (ties included).
        Where fewer genes have one, all of those are kept, with a warning (scanpy raises
        IndexError).
    log
        Log dispersions and means.
    subset
        AnnData input: keep only the selected genes; otherwise mark them in
        ``adata.var['highly_variable']``.
    copy
        AnnData input: work on and return a copy.

    Returns
    -------
    For a matrix: a :class:`numpy.recarray` with fields ``gene_subset`` (bool), ``means``,
    ``dispersions``, ``dispersions_norm`` (float32), one record per gene. For an AnnData: the
    copy when `copy`, else None; ``adata.var['means']``, ``['dispersions']``,
    ``['dispersions_norm']`` are set and the genes subset (or marked).
    """
    warnings.warn(_DEPRECATED, FutureWarning, stacklevel=user_stacklevel())
    if flavor not in ("seurat", "cell_ranger"):
        msg = f"{_STEP}: flavor must be 'seurat' or 'cell_ranger', got {flavor!r}."
        raise ValueError(msg)
    check_n_top_genes(n_top_genes, step=_STEP)
    if flavor == "seurat":
        check_n_bins(n_bins, step=_STEP)
    cutoffs = {"min_disp": min_disp, "max_disp": max_disp, "min_mean": min_mean, "max_mean": max_mean}
    # scanpy passes an AnnData's X on with the default cutoffs filled in, so it always warns there
    if n_top_genes is not None and (isinstance(data, AnnData) or any(v is not None for v in cutoffs.values())):
        warnings.warn("If you pass `n_top_genes`, all cutoffs are ignored.", UserWarning, stacklevel=user_stacklevel())
    defaults = {"min_disp": 0.5, "max_disp": np.inf, "min_mean": 0.0125, "max_mean": 3}
    cutoffs = {k: defaults[k] if v is None else v for k, v in cutoffs.items()}

    if not isinstance(data, AnnData):  # copy and subset do not apply (scanpy ignores them too)
        return _dispersion_record(data, flavor=flavor, cutoffs=cutoffs, n_bins=n_bins, n_top_genes=n_top_genes,
                                  log=log)  # fmt: skip
    check_anndata(data, step=_STEP, name="data")
    result = _dispersion_record(data.X, flavor=flavor, cutoffs=cutoffs, n_bins=n_bins, n_top_genes=n_top_genes,
                                log=log)  # fmt: skip
    adata = data.copy() if copy else data
    make_actual(adata)
    for col in (K.VAR_MEANS, K.VAR_DISPERSIONS, K.VAR_DISPERSIONS_NORM):
        adata.var[col] = result[col]
    if subset:
        _subset_inplace(adata, result["gene_subset"], axis=1)
    else:
        adata.var[K.VAR_HIGHLY_VARIABLE] = result["gene_subset"]
    return adata if copy else None


def _dispersion_record(x, *, flavor, cutoffs, n_bins, n_top_genes, log) -> np.recarray:
    """Every gene's statistics and whether it is selected (scanpy's record), from one pass over X."""
    if x.shape[0] < 2:  # scanpy keeps the genes whose round-off gives a variance over one cell
        warnings.warn(f"{_STEP}: {x.shape[0]} cell(s): a gene's variance over fewer than 2 cells is undefined, so no "
                      "gene has a dispersion and none is kept; give more cells.", UserWarning,
                      stacklevel=user_stacklevel())  # fmt: skip
    start = settings.log("extracting highly variable genes")
    mean, var = col_mean_var(numeric_matrix(x, step=_STEP))
    df = _dispersion_frame(mean, var, None, flavor=flavor, n_bins=n_bins, cutoff=None, log=log, step=_STEP,
                           lone_repr=lambda positions: str(positions.tolist()),  # scanpy's list here
                           n_cells=x.shape[0])  # fmt: skip
    mean = df[K.VAR_MEANS].to_numpy()  # zero means at 1e-12, log1p'd with `log`
    norm = df[K.VAR_DISPERSIONS_NORM].to_numpy()
    if flavor == "cell_ranger":  # scanpy's deprecated filter: |distance| from the bin's median
        norm = np.abs(norm)
    norm32 = norm.astype(np.float32)  # scanpy rounds before the cutoffs and the ranking
    if n_top_genes is None:
        n32 = np.where(np.isnan(norm32), 0, norm32)  # an undefined dispersion counts as 0, as in Seurat; an
        # infinite one (a bin whose MAD is 0) stays infinite, outside max_disp's strict bound, as in scanpy
        c = cutoffs
        keep = (mean > c["min_mean"]) & (mean < c["max_mean"]) & (n32 > c["min_disp"]) & (n32 < c["max_disp"])
    else:
        defined = np.sort(norm32[~np.isnan(norm32)])[::-1]
        n = int(n_top_genes)
        if n > defined.size:
            warnings.warn(f"{_STEP}: n_top_genes ({n}) is more than the {defined.size} genes with a normalised "
                          "dispersion; keeping all of those.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
            n = defined.size
        # scanpy's cutoff is the n-th float32 value, compared with the float64 values: the n-th gene
        # drops out where its rounding to float32 went up, and ties of the float32 values need not be
        # (infinite dispersions rank first; an undefined one compares False, as in scanpy)
        keep = norm >= np.float64(defined[n - 1]) if n else np.zeros(norm.size, dtype=bool)
        if n:
            settings.log(f"the {n} top genes correspond to a normalized dispersion cutoff of {defined[n - 1]}",
                         level=DEBUG)  # fmt: skip
    settings.log("    finished", start=start)
    return np.rec.fromarrays((keep, mean, df[K.VAR_DISPERSIONS].to_numpy(), norm32), dtype=_RESULT_DTYPE)
