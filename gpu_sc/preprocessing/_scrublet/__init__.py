"""scrublet / scrublet_simulate_doublets: doublet detection (Wolock et al. 2019) like scanpy's,
on our own steps (filters, normalize_total, log1p, highly_variable_genes, PCA, kNN), on the CPU
or the GPU. One module per job: `_pipeline` (one batch, end to end), `_simulate` (doublets, with scanpy's
random draws), `_embed` (z-score and PCA), `_score` (kNN and the likelihoods), `_threshold`
(the automatic threshold); here the public functions, the checks and the writing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._backend import describe, is_dask, is_gpu, is_sparse, to_host, xp_of
from ..._settings import settings
from ..._validation import (UnsupportedMatrixError, canonical, check_anndata, check_counts, check_finite, check_int,
                            check_number, get_matrix, old_positionals)
from ._pipeline import scrub, simulate_doublets
from ._score import METRICS
from ._simulate import check_random_state

_STEP = "scrublet"
_SIM_STEP = "scrublet_simulate_doublets"


@old_positionals("batch_key", "sim_doublet_ratio", "expected_doublet_rate", "stdev_doublet_rate",
                 "synthetic_doublet_umi_subsampling", "knn_dist_metric", "normalize_variance",
                 "log_transform", "mean_center", "n_prin_comps", "use_approx_neighbors",
                 "get_doublet_neighbor_parents", "n_neighbors", "threshold", "verbose", "copy",
                 "random_state")
def scrublet(
    adata: AnnData,
    adata_sim: AnnData | None = None,
    *,
    batch_key: str | None = None,
    sim_doublet_ratio: float = 2.0,
    expected_doublet_rate: float = 0.05,
    stdev_doublet_rate: float = 0.02,
    synthetic_doublet_umi_subsampling: float = 1.0,
    knn_dist_metric: str = "euclidean",
    normalize_variance: bool = True,
    log_transform: bool = False,
    mean_center: bool = True,
    n_prin_comps: int = 30,
    use_approx_neighbors: bool | None = None,
    get_doublet_neighbor_parents: bool = False,
    n_neighbors: int | None = None,
    threshold: float | None = None,
    verbose: bool = True,
    copy: bool = False,
    random_state=0,
) -> AnnData | None:
    """Predict doublets with Scrublet, like :func:`scanpy.pp.scrublet`.

    Each cell is scored by the share of simulated doublets among its nearest neighbours in a
    PCA embedding of observed cells and doublets simulated from random pairs of them. The steps
    are scanpy's, on gpu_sc's implementations, where the data live (numpy / scipy: CPU; cupy /
    cupyx: GPU): genes in fewer than 3 cells and cells with fewer than 3 genes are dropped
    (:func:`filter_genes`, :func:`filter_cells`); counts are normalised (:func:`normalize_total`)
    and the highly variable genes chosen on their log1p (:func:`highly_variable_genes`,
    flavor 'seurat'); ``n_obs * sim_doublet_ratio`` doublets are simulated from the raw counts
    of those genes (:func:`scrublet_simulate_doublets`, scanpy's random draws for the same
    `random_state`); observed cells and doublets are (log1p'd if `log_transform`) normalised to
    1e6 counts, z-scored with the observed cells' gene statistics and embedded by PCA fitted on
    the observed cells (:func:`pca`: exact unless genes and cells both exceed 8,000; sparse
    stays sparse); with ``k_adj = round(n_neighbors * (1 + n_sim / n_obs))``, the k_adj
    nearest of every cell and doublet (itself included, or its k_adj - 1 nearest others where
    scanpy's search leaves it out: see ``gpu_sc.preprocessing._scrublet._score.search``) give
    its score
    ``q rho / r / (1 - rho - q (1 - rho - rho / r))``, q = (doublet neighbours + 1) /
    (k_adj + 2), rho the expected doublet rate, r = n_sim / n_obs. A cell is called a doublet
    when its score is above `threshold`.

    Parameters
    ----------
    adata
        Raw counts, cells x genes, in X (unless `adata_sim` is given). Not changed except for
        the result keys. A bool X counts as 0/1: a doublet sums its two cells (scanpy's bool
        addition is a logical or).
    adata_sim
        Advanced: doublets from :func:`scrublet_simulate_doublets`, processed like `adata`
        (then `adata` must hold the processed observed cells, same genes, and no filtering,
        normalisation or gene selection is done here).
    batch_key
        ``adata.obs`` column: run Scrublet separately on each batch (its own genes, doublets,
        embedding and threshold).
    sim_doublet_ratio
        Doublets to simulate per observed cell.
    expected_doublet_rate, stdev_doublet_rate
        Prior doublet rate and its uncertainty (in the score and its error).
    synthetic_doublet_umi_subsampling
        In (0, 1]: below 1, each doublet's summed counts are thinned binomially at this rate.
    knn_dist_metric
        ``'euclidean'`` or ``'cosine'``.
    normalize_variance, mean_center
        Divide the genes by their standard deviation / subtract their mean before embedding
        (``mean_center=False``: truncated SVD instead of PCA).
    log_transform
        log1p the normalised counts before the 1e6 normalisation.
    n_prin_comps
        Components of the embedding; fewer than the cells and the genes used.
    use_approx_neighbors
        ``None`` or ``False``: the exact search (CPU or GPU). ``True``: pynndescent (its own
        defaults, on the host), as scanpy's. scanpy's ``None`` takes pynndescent from 8,192
        cells + doublets, which fails in scanpy 1.11.5 with pynndescent 0.7 and, at scrublet's
        large k (about 1.5 sqrt(n_cells)), is slower than brute force (10,000 cells: 155 s
        against 14 s); each list then still holds the cell itself, as scanpy's would.
    get_doublet_neighbor_parents
        Also store, per cell, the parents of the doublets among its neighbours.
    n_neighbors
        Default ``round(0.5 * sqrt(n_cells))``.
    threshold
        Score above which a cell is a doublet; ``None``: the minimum between the two modes of
        the simulated doublets' score histogram (scikit-image's ``threshold_minimum``, our
        own implementation). When that fails, a warning, and every cell is predicted a singlet.
    verbose
        At ``gsc.settings.verbosity`` 2, report the threshold and the doublet rates.
    copy
        Work on and return a copy.
    random_state
        Seed (int, None or a numpy RandomState) of the doublet simulation and the approximate
        kNN search.

    Returns
    -------
    The copy when `copy`, else ``None``. Sets

    ``adata.obs['doublet_score']``, ``adata.obs['predicted_doublet']``
        Per cell (NaN for cells the gene-count filter dropped; the predictions are then an
        object column, as scanpy's pandas alignment gives).
    ``adata.uns['scrublet']``
        ``doublet_scores_sim``, ``doublet_parents`` (n_sim x 2 indices into the cells kept),
        ``parameters`` (``expected_doublet_rate``, ``sim_doublet_ratio``, ``n_neighbors``,
        ``random_state``), ``threshold`` (when found), ``doublet_neighbor_parents`` (when
        asked). With `batch_key`: ``{'batches': {batch: that dict}, 'batched_by': batch_key}``,
        and ``obs['n_genes']`` as well (scanpy writes the batch's filtered obs back).

    Raises
    ------
    ValueError
        Bad parameters; `batch_key` not a column of obs, or holding missing values; a batch
        (or the data) with too few cells or highly variable genes for `n_prin_comps`;
        negative or non-finite counts. Nothing is changed then.
    UnsupportedMatrixError
        A Dask array (compute it into memory first) or a matrix no step takes.
    """
    check_anndata(adata, step=_STEP)
    opts = _options(locals())
    x0 = _matrix(adata.X, step=_STEP)
    if adata_sim is None:
        check_counts(x0, step=_STEP)
    else:
        _check_sim(adata_sim, x0)
        check_finite(x0, step=_STEP)
    min_cells = opts["n_prin_comps"] + 1
    groups = [(None, np.arange(adata.n_obs))] if batch_key is None else _batches(adata, batch_key, min_cells)
    if adata.n_obs < min_cells:
        msg = (f"{_STEP}: {adata.n_obs} cells; n_prin_comps={opts['n_prin_comps']} needs at least "
               f"{min_cells}.")  # fmt: skip
        raise ValueError(msg)

    start = settings.log("Running Scrublet")
    results = []
    for _, rows in groups:
        x = x0 if batch_key is None else x0[xp_of(x0).asarray(rows)]
        if x is x0:
            x = x.copy()  # every step below works in place on its own matrix
        results.append(scrub(x, adata_sim, opts))

    adata = adata.copy() if copy else adata
    n = adata.n_obs
    if batch_key is None:
        kept, score, predicted, _, uns = results[0]
        adata.obs["doublet_score"] = _spread(score, kept, n)
        adata.obs["predicted_doublet"] = _spread(predicted, kept, n)
        adata.uns["scrublet"] = uns
    else:
        kept = np.concatenate([rows[r[0]] for (_, rows), r in zip(groups, results, strict=True)])
        if adata_sim is None:
            adata.obs["n_genes"] = _spread(np.concatenate([r[3] for r in results]), kept, n)
        adata.obs["doublet_score"] = _spread(np.concatenate([r[1] for r in results]), kept, n)
        adata.obs["predicted_doublet"] = _spread(np.concatenate([r[2] for r in results]), kept, n)
        adata.uns["scrublet"] = {
            "batches": {batch: r[4] for (batch, _), r in zip(groups, results, strict=True)},
            "batched_by": batch_key,
        }
    settings.log("    Scrublet finished", start=start)
    return adata if copy else None


@old_positionals("layer", "sim_doublet_ratio", "synthetic_doublet_umi_subsampling", "random_seed")
def scrublet_simulate_doublets(
    adata: AnnData,
    *,
    layer: str | None = None,
    sim_doublet_ratio: float = 2.0,
    synthetic_doublet_umi_subsampling: float = 1.0,
    random_seed=0,
) -> AnnData:
    """Simulate doublets by adding the counts of random pairs of cells, like
    :func:`scanpy.pp.scrublet_simulate_doublets`.

    ``int(n_obs * sim_doublet_ratio)`` distinct ordered pairs are drawn with the random calls
    scanpy makes (scikit-learn's ``sample_without_replacement`` on a numpy RandomState), so
    the same `random_seed` gives the same pairs and doublets.

    Parameters
    ----------
    adata
        Raw counts (cells x genes), usually after gene filtering and selection.
    layer
        Take the counts from ``adata.layers[layer]`` instead of X (``'X'``: X).
    sim_doublet_ratio
        Doublets per cell.
    synthetic_doublet_umi_subsampling
        In (0, 1]: below 1, the summed counts are thinned binomially at this rate (drawn in
        scanpy's order; the totals' correction term comes, as in scanpy, from NumPy's global
        generator: the same totals as scanpy's under ``np.random.seed``).
    random_seed
        int, None or a numpy RandomState.

    Returns
    -------
    A new AnnData: X the doublets' counts (CSC for sparse input, as scanpy's; dense for dense)
    on the input's device (int64 on the host when thinned, as scanpy's), ``obs['n_counts']``
    their totals,
    ``obsm['doublet_parents']`` (n_sim x 2 int64 row indices of `adata`),
    ``uns['scrublet'] = {'parameters': {'sim_doublet_ratio': ...}}``.
    """
    check_anndata(adata, step=_SIM_STEP)
    _check_ratio(sim_doublet_ratio, synthetic_doublet_umi_subsampling, step=_SIM_STEP)
    if layer == "X" and "X" not in adata.layers:
        layer = None
    x = _matrix(get_matrix(adata, layer=layer, step=_SIM_STEP), step=_SIM_STEP)
    check_counts(x, step=_SIM_STEP)
    rs = check_random_state(random_seed, step=_SIM_STEP)
    sim, totals, pairs = simulate_doublets(x, sim_doublet_ratio, synthetic_doublet_umi_subsampling, rs, step=_SIM_STEP)
    if synthetic_doublet_umi_subsampling < 1 and not is_gpu(sim):
        # scanpy's thinned doublets are its binomial draws, int64 (a device matrix keeps floats:
        # cupyx holds no integer sparse data)
        sim, totals = sim.astype(np.int64), np.asarray(to_host(totals)).astype(np.int64)
    out = AnnData(sim.tocsc() if is_sparse(sim) else sim)  # scanpy's doublets are CSC
    out.obs["n_counts"] = to_host(totals)
    out.obsm["doublet_parents"] = pairs
    out.uns["scrublet"] = {"parameters": {"sim_doublet_ratio": sim_doublet_ratio}}
    return out


# --- checks --------------------------------------------------------------------------------------
def _check_ratio(ratio, subsampling, *, step: str) -> None:
    check_number(ratio, "sim_doublet_ratio", step=step, low=0, high=math.inf, high_open=True)
    check_number(subsampling, "synthetic_doublet_umi_subsampling", step=step, low=0, high=1)


def _options(args: dict) -> dict:
    """The validated parameters of `scrublet` (raises before any work)."""
    _check_ratio(args["sim_doublet_ratio"], args["synthetic_doublet_umi_subsampling"], step=_STEP)
    check_number(args["expected_doublet_rate"], "expected_doublet_rate", step=_STEP, low=0, high=1, high_open=True)
    check_number(args["stdev_doublet_rate"], "stdev_doublet_rate", step=_STEP, low=0, high=math.inf, low_open=False,
            high_open=True)  # fmt: skip
    if args["knn_dist_metric"] not in METRICS:
        msg = f"{_STEP}: knn_dist_metric must be one of {METRICS}, got {args['knn_dist_metric']!r}."
        raise ValueError(msg)
    if args["use_approx_neighbors"] not in (None, True, False):
        msg = f"{_STEP}: use_approx_neighbors must be None, True or False, got {args['use_approx_neighbors']!r}."
        raise ValueError(msg)
    if args["threshold"] is not None:
        check_number(args["threshold"], "threshold", step=_STEP, low=-math.inf, high=math.inf)
    check_int(args["n_prin_comps"], step=_STEP, name="n_prin_comps")
    check_int(args["n_neighbors"], step=_STEP, name="n_neighbors", none_ok=True)
    check_random_state(args["random_state"], step=_STEP)  # the type only; drawn from per batch
    keys = ("sim_doublet_ratio", "expected_doublet_rate", "stdev_doublet_rate", "synthetic_doublet_umi_subsampling",
            "knn_dist_metric", "normalize_variance", "log_transform", "mean_center", "n_prin_comps",
            "use_approx_neighbors", "get_doublet_neighbor_parents", "n_neighbors", "threshold", "verbose",
            "random_state")  # fmt: skip
    return {k: args[k] for k in keys}


def _matrix(x, *, step: str):
    if x is None:
        msg = f"{step}: adata.X is None; Scrublet needs the counts in X."
        raise ValueError(msg)
    if is_dask(x):
        msg = (f"{step}: Dask arrays are not supported (the doublets pair cells from anywhere in the "
               "matrix); compute it into memory first, e.g. adata.X = adata.X.compute().")  # fmt: skip
        raise UnsupportedMatrixError(msg)
    x = canonical(x, step=step)
    if x.dtype.kind not in "iubf":
        msg = f"{step}: expects a numeric matrix, got dtype {x.dtype}."
        raise TypeError(msg)
    return x.astype(np.float32) if x.dtype == bool else x  # bools are counts of 0 and 1


def _check_sim(adata_sim, x) -> None:
    """adata_sim against adata's matrix `x`: its genes, its parents, and the same device."""
    check_anndata(adata_sim, step=_STEP, name="adata_sim")
    if adata_sim.n_vars != x.shape[1]:
        msg = f"{_STEP}: adata_sim has {adata_sim.n_vars} genes, adata {x.shape[1]}; they must match."
        raise ValueError(msg)
    if "doublet_parents" not in adata_sim.obsm:
        msg = f"{_STEP}: adata_sim has no obsm['doublet_parents']; make it with scrublet_simulate_doublets."
        raise ValueError(msg)
    sim = _matrix(adata_sim.X, step=_STEP)
    if is_gpu(sim) != is_gpu(x):
        msg = (f"{_STEP}: adata.X is {describe(x)} but adata_sim.X is {describe(sim)}; move both to "
               "one device first (gsc.get.to_gpu or gsc.get.to_cpu).")  # fmt: skip
        raise ValueError(msg)
    check_finite(sim, step=_STEP)


def _batches(adata: AnnData, batch_key, min_cells: int) -> list:
    """[(batch value, row positions)] in np.unique order (scanpy's), after the checks."""
    if batch_key not in adata.obs.columns:
        msg = (f"{_STEP}: `batch_key` must be a column of .obs in the input AnnData object, but "
               f"{batch_key!r} is not in {list(adata.obs.columns)}.")  # fmt: skip
        raise ValueError(msg)
    col = adata.obs[batch_key]
    missing = int(col.isna().sum())
    if missing:
        msg = (f"{_STEP}: batch_key {batch_key!r} has {missing} missing values (NaN); give every cell "
               "a batch, or drop those cells first.")  # fmt: skip
        raise ValueError(msg)
    values = col.to_numpy()
    batches = np.unique(values)
    groups = [(b, np.flatnonzero(values == b)) for b in batches]
    small = [(b, rows.size) for b, rows in groups if rows.size < min_cells]
    if small:
        listed = ", ".join(f"{b!r}: {n} cell{'s' if n != 1 else ''}" for b, n in small[:10])
        msg = (f"{_STEP}: every batch needs at least n_prin_comps + 1 = {min_cells} cells, but batch_key "
               f"{batch_key!r} has {listed}; merge or drop those batches, or lower n_prin_comps.")  # fmt: skip
        raise ValueError(msg)
    return groups


def _spread(values, kept, n: int):
    """A per-cell column from values for the `kept` positions: as is when every cell was kept,
    else aligned as pandas aligns scanpy's result (NaN for the others)."""
    values = np.asarray(values)
    if kept.size == n and np.array_equal(kept, np.arange(n)):
        return values
    if kept.size == n:
        out = np.empty_like(values)
        out[kept] = values
        return out
    return pd.Series(values, index=kept).reindex(np.arange(n)).to_numpy()
