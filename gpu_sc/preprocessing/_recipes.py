"""scanpy's preprocessing recipes, built from our steps so that they run where the data lives
(CPU, GPU, Dask) and give scanpy's result."""

from __future__ import annotations

import warnings

from anndata import AnnData

from .._backend import describe, is_dask, is_gpu, is_sparse
from .._scanpy_own import scanpy_own
from .._scanpy_signatures import scanpy_signature
from .._settings import settings, user_stacklevel
from .._validation import check_anndata, check_int, old_positionals
from ._filter import _filter, _subset_inplace, filter_genes
from ._filter_genes_dispersion import filter_genes_dispersion
from ._log1p import log1p
from ._normalize import normalize_total
from ._scale import scale


@old_positionals("n_top_genes", "log", "plot", "copy")
def recipe_zheng17(
    adata: AnnData, *, n_top_genes: int = 1000, log: bool = True, plot: bool = False, copy: bool = False
) -> AnnData | None:
    """Normalise and filter as Zheng et al. (2017), like :func:`scanpy.pp.recipe_zheng17`.

    Expects counts (pass ``log=False`` for data already logged). The steps, each ours::

        filter_genes(adata, min_counts=1)
        normalize_total(adata, key_added="n_counts_all")
        keep = filter_genes_dispersion(adata.X, flavor="cell_ranger", n_top_genes=n_top_genes, log=False)
        adata = adata[:, keep.gene_subset]   # in place
        normalize_total(adata)
        log1p(adata)                         # if log
        scale(adata)

    `plot` draws scanpy's dispersion plot (needs scanpy). With a Dask X every step stays lazy
    except the passes that compute per-gene statistics. Like scanpy's, the recipe changes
    `adata` step by step: an error in a later step leaves the earlier steps done (pass
    ``copy=True`` to keep `adata` as it was); with `log`, an X that is not counts (NaN, inf,
    negative values) is refused before the first step changes adata (a Dask X in the first
    filter's pass). Where a filter leaves no gene
    (filter_genes, or the dispersion filter) it warns, naming that filter, and stops there.
    """
    check_anndata(adata, step="recipe_zheng17")
    check_int(n_top_genes, step="recipe_zheng17", name="n_top_genes")
    start = settings.log("running recipe zheng17")
    if copy:
        adata = adata.copy()
    _first_filter(adata, "recipe_zheng17", log=log, axis=1, counts=(1, None))
    if _none_left(adata, "recipe_zheng17", "filter_genes(min_counts=1)"):
        return adata if copy else None
    normalize_total(adata, key_added="n_counts_all")
    result = filter_genes_dispersion(adata.X, flavor="cell_ranger", n_top_genes=n_top_genes, log=False)
    if plot:
        _plot(result, log=True)
    _subset_inplace(adata, result.gene_subset, axis=1)
    if _none_left(adata, "recipe_zheng17", log=log):
        return adata if copy else None
    normalize_total(adata)
    if log:
        log1p(adata)
    scale(adata)
    settings.log("    finished", start=start)
    return adata if copy else None


@old_positionals("log", "plot", "copy")
def recipe_seurat(adata: AnnData, *, log: bool = True, plot: bool = False, copy: bool = False) -> AnnData | None:
    """Normalise and filter as Seurat (Satija et al. 2015), like :func:`scanpy.pp.recipe_seurat`.

    Expects counts (pass ``log=False`` for data already logged). The steps, each ours::

        filter_cells(adata, min_genes=200)
        filter_genes(adata, min_cells=3)
        normalize_total(adata, target_sum=1e4)
        keep = filter_genes_dispersion(adata.X, min_mean=0.0125, max_mean=3, min_disp=0.5, log=not log)
        adata = adata[:, keep.gene_subset]   # in place
        log1p(adata)                         # if log
        scale(adata, max_value=10)

    `plot` and partial changes on error as in :func:`recipe_zheng17`. Where a filter leaves no
    cell or gene (filter_cells, filter_genes, the dispersion cutoffs) it warns, naming that
    filter, and stops, `adata` left as that filter made it.
    """
    check_anndata(adata, step="recipe_seurat")
    if copy:
        adata = adata.copy()
    _first_filter(adata, "recipe_seurat", log=log, axis=0, nums=(200, None))
    if _none_left(adata, "recipe_seurat", "filter_cells(min_genes=200)"):
        return adata if copy else None
    filter_genes(adata, min_cells=3)
    if _none_left(adata, "recipe_seurat", "filter_genes(min_cells=3)"):
        return adata if copy else None
    normalize_total(adata, target_sum=1e4)
    result = filter_genes_dispersion(adata.X, min_mean=0.0125, max_mean=3, min_disp=0.5, log=not log)
    if plot:
        _plot(result, log=not log)
    _subset_inplace(adata, result.gene_subset, axis=1)
    if _none_left(adata, "recipe_seurat", log=log):
        return adata if copy else None
    if log:
        log1p(adata)
    scale(adata, max_value=10)
    return adata if copy else None


@scanpy_signature("recipe_weinreb17")
@old_positionals("log", "mean_threshold", "cv_threshold", "n_pcs", "svd_solver", "random_state", "copy")
def recipe_weinreb17(adata: AnnData, *, copy: bool = False, **kwargs) -> AnnData | None:
    """Normalise and filter as Weinreb et al. (2017): :func:`scanpy.pp.recipe_weinreb17` itself.

    The recipe is defined for dense in-memory NumPy X only (scanpy refuses sparse X), so it runs
    scanpy's code, with scanpy's parameters (`log`, `mean_threshold`, `cv_threshold`, `n_pcs`,
    `svd_solver`, `random_state`); other matrices get a clear error before anything changes. It
    runs on a copy that replaces `adata` only once the recipe has finished, so an error in one of
    its later steps leaves `adata` as it was (scanpy's leaves the earlier steps done).
    """
    check_anndata(adata, step="recipe_weinreb17")
    x = adata.X
    if x is None or is_sparse(x) or is_gpu(x) or is_dask(x) or adata.isbacked:
        what = "a backed X" if adata.isbacked else describe(x) if x is not None else "no X"
        msg = (f"recipe_weinreb17 is defined for a dense in-memory NumPy X (scanpy refuses sparse X), got {what}; "
               "densify a small dataset on the host (adata.X = adata.X.toarray()), or use recipe_zheng17 or "
               "the steps themselves.")  # fmt: skip
        raise ValueError(msg)
    recipe = scanpy_own("pp", "recipe_weinreb17", "scanpy.preprocessing._recipes")
    if copy:
        return recipe(adata, copy=True, **kwargs)
    # scanpy's recipe changes adata step by step and can fail late (no gene above mean_threshold:
    # scikit-learn's PCA error after the filter and the logs); run it on a copy, keep it on success
    work = adata.copy()
    recipe(work, copy=False, **kwargs)
    adata._init_as_actual(work)
    return None


def _first_filter(adata: AnnData, step: str, *, log: bool, axis: int, counts=(None, None), nums=(None, None)) -> None:
    """The recipe's first filter, in place (filter_cells for axis 0, filter_genes for 1), whose
    own check of X (in memory, or in a Dask X's statistics' pass) refuses NaN and inf, and with
    `log` negative values, under the recipe's name, before any step changes adata (log1p, the
    recipe's later step, refused them only after the filters and normalisation had run, and a
    negative count normalised above -1 not at all)."""
    _filter(adata, axis=axis, counts=counts, nums=nums, inplace=True, copy=False, step=step, negative_ok=not log)


def _none_left(adata: AnnData, step: str, after: str = "the dispersion filter", *, log: bool = False) -> bool:
    """No cell or no gene passed a filter of the recipe: say which, and stop there (scanpy goes on
    into steps on no genes, which fail on some inputs and do nothing on others, and a later
    step's 'empty matrix' error named that step, not the filter). `log`: the recipe was to log
    the data, so logged input may be why no gene's dispersion passed."""
    if adata.n_vars and adata.n_obs:
        return False
    what = "cell" if not adata.n_obs else "gene"
    why = " Too few cells, or not counts (pass log=False for data already logged)?" if log else ""
    warnings.warn(f"{step}: no {what} passed {after} ({adata.n_obs} cells x {adata.n_vars} genes left); adata "
                  f"is left so and the recipe stops.{why}", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
    return True


def _plot(result, *, log: bool) -> None:
    """scanpy's plot of the dispersions against the means."""
    import scanpy as sc

    sc.pl.filter_genes_dispersion(result, log=log)
