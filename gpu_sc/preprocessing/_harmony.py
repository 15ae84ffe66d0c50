"""harmony_integrate: batch correction of an embedding with Harmony, scanpy's external API."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData, ImplicitModificationWarning

from .. import _keys as K
from .._backend import describe, is_dask, is_sparse, xp_of
from .._ops.harmony import Batches, harmonize
from .._settings import user_stacklevel
from .._validation import check_anndata, check_finite, check_int, check_number, make_actual, old_positionals

_STEP = "harmony_integrate"


@old_positionals("basis", "adjusted_basis")
def harmony_integrate(
    adata: AnnData,
    key: str | Sequence[str],
    *,
    basis: str = K.OBSM_PCA,
    adjusted_basis: str = K.OBSM_PCA_HARMONY,
    theta=None,
    lamb=None,
    sigma=0.1,
    nclust: int | None = None,
    tau: float = 0,
    block_size: float = 0.05,
    max_iter_harmony: int = 10,
    max_iter_kmeans: int = 20,
    epsilon_cluster: float = 1e-5,
    epsilon_harmony: float = 1e-4,
    random_state: int | None = 0,
    cluster_fn: str | Callable = "kmeans",
    verbose: bool | None = None,
    plot_convergence: bool = False,
    reference_values=None,
    cluster_prior=None,
) -> None:
    """Correct ``adata.obsm[basis]`` for the batches in ``adata.obs[key]`` with Harmony, like
    :func:`scanpy.external.pp.harmony_integrate` (which calls harmonypy).

    Runs where the embedding lives: NumPy on the CPU, CuPy on the GPU (the k-means start is
    computed on the host). The parameters are harmonypy's (its defaults of version 0.0.10, the
    release scanpy 1.11's wrapper reads correctly), and the same `random_state` gives harmonypy's
    embedding up to rounding.

    Parameters
    ----------
    adata
        An AnnData with the embedding in ``obsm[basis]`` (cells x components).
    key
        The ``adata.obs`` column, or columns, of batches to remove (categories or labels, no
        missing values).
    basis, adjusted_basis
        Where the embedding is read and where the corrected one (float64) is written.
    theta
        Diversity penalty: one number, one per batch variable, or one per batch level;
        default 1. Larger values push clusters towards the whole data's batch mix.
    lamb
        Ridge penalty of the correction, given like `theta`; default 1.
    sigma
        Width of the soft k-means: one number, or one per cluster.
    nclust
        Number of clusters; default ``min(round(n_cells / 30), 100)``.
    tau
        Expected cells per cluster; > 0 lowers theta for small batches.
    block_size
        Share of cells reassigned per block in the k-means updates.
    max_iter_harmony, max_iter_kmeans
        Iterations of Harmony, and of k-means within each.
    epsilon_cluster, epsilon_harmony
        Relative changes of the objective below which k-means, and Harmony, stop.
    random_state
        Seed of the k-means start and of the block orders; None draws them afresh.
    cluster_fn
        ``'kmeans'`` (scikit-learn's KMeans, k-means++, 10 starts of 25 iterations), or a
        callable ``(data, n_clusters) -> centroids`` (cells x components in, clusters x
        components out), as harmonypy takes.
    verbose
        Accepted for harmonypy's signature; progress follows ``gsc.settings.verbosity``.
    plot_convergence, reference_values, cluster_prior
        Accepted and ignored, as harmonypy 0.0.10 takes them (it uses none of them for the
        embedding), so that scanpy's calls that pass them run unchanged.

    Returns
    -------
    None; sets ``adata.obsm[adjusted_basis]``. An embedding held as a Dask array is computed
    first (an embedding of 10M cells x 50 components is 4 GB).
    """
    del verbose, plot_convergence, reference_values, cluster_prior
    check_anndata(adata, step=_STEP)
    for name, value in (("basis", basis), ("adjusted_basis", adjusted_basis)):
        if not isinstance(value, str):  # a list failed with 'unhashable type'
            msg = f"{_STEP}: {name} must be the name of an obsm entry (a str), got {value!r} ({type(value).__name__})."
            raise TypeError(msg)
    check_int(random_state, step=_STEP, name="random_state", minimum=0, none_ok=True,
              hint=" (harmonypy seeds numpy with it)")  # numpy's own message named no parameter
    z = _embedding(adata, basis)
    n = z.shape[0]
    key = list(key) if isinstance(key, Iterator) else key  # read once (its names are needed twice)
    batches, level_names = _batches(adata, key)
    k = _n_clusters(nclust, n)
    params = dict(  # checked before any work, so that a bad value leaves adata as it was
        theta=_per_level(1.0 if theta is None else theta, batches, "theta"),
        lamb=_per_level(1.0 if lamb is None else lamb, batches, "lamb"),
        sigma=_per_cluster(sigma, k),
        tau=check_number(tau, "tau", step=_STEP, low=0, high=math.inf, low_open=False),
        block_size=check_number(block_size, "block_size (a share of the cells)", step=_STEP, low=0, high=1),
        max_iter_harmony=check_int(max_iter_harmony, step=_STEP, name="max_iter_harmony", minimum=0),
        max_iter_kmeans=check_int(max_iter_kmeans, step=_STEP, name="max_iter_kmeans"),
        epsilon_cluster=check_number(epsilon_cluster, "epsilon_cluster", step=_STEP, low=0, high=math.inf,
                                     low_open=False),
        epsilon_harmony=check_number(epsilon_harmony, "epsilon_harmony", step=_STEP, low=0, high=math.inf,
                                     low_open=False),
    )
    _check_ridge(params["lamb"], batches, key, level_names)
    out = harmonize(z, batches, n_clusters=k, random_state=random_state,
                    init_centroids=_init_centroids(cluster_fn), **params)
    if adata.is_view:  # anndata's warning, as scanpy's wrapper gives it when it writes into a view
        warnings.warn(f"Setting element `.obsm['{adjusted_basis}']` of view, initializing view as actual.",
                      ImplicitModificationWarning, stacklevel=user_stacklevel())  # fmt: skip
    make_actual(adata)
    adata.obsm[adjusted_basis] = out.z_corr


def _embedding(adata: AnnData, basis: str):
    if basis not in adata.obsm:
        msg = (f"{_STEP}: basis {basis!r} not in adata.obsm ({list(adata.obsm)}); run gsc.pp.pca first "
               "or pass basis=.")  # fmt: skip
        raise KeyError(msg)
    z = adata.obsm[basis]
    if is_dask(z):
        z = z.compute()
    if isinstance(z, pd.DataFrame):
        z = z.to_numpy()
    numeric = hasattr(z, "ndim") and z.ndim == 2 and getattr(z, "dtype", np.dtype(object)).kind in "biuf"
    if is_sparse(z) or not numeric:
        hint = " (a dense one: .toarray())" if is_sparse(z) else ""
        msg = f"{_STEP}: obsm[{basis!r}] must be a numeric cells x components array{hint}, got {describe(z)}."
        raise TypeError(msg)
    if z.shape[0] < 2 or z.shape[1] < 1:
        msg = f"{_STEP}: obsm[{basis!r}] has shape {z.shape}; Harmony needs at least 2 cells and 1 component."
        raise ValueError(msg)
    check_finite(z, step=f"{_STEP} (obsm[{basis!r}])")  # described as the user's array, not our copy
    xp = xp_of(z)
    z = xp.array(z, dtype=np.float64, order="C")  # always a copy: the result must not share the basis's memory
    if bool((z.max(axis=1) == 0).any()):
        msg = (f"{_STEP}: obsm[{basis!r}] has cells whose largest component is 0 (all-zero or non-positive "
               "rows); Harmony scales each cell by it. Drop those cells or use another basis.")  # fmt: skip
        raise ValueError(msg)
    return z


def _key_list(key) -> list | None:
    """`key` as a list of names (a string is one name); None where it is neither."""
    return [key] if isinstance(key, str) else list(key) if isinstance(key, Iterable) else None


def _batches(adata: AnnData, key) -> tuple[Batches, list[str]]:
    """The cells' batch codes, and each level's name ('key=value'), levels numbered as the codes."""
    keys = _key_list(key)
    if keys is None or not all(isinstance(k, str) for k in keys):
        msg = (f"{_STEP}: key must be an adata.obs column name or a list of them, got {key!r} "
               f"({type(key).__name__}).")  # fmt: skip
        raise TypeError(msg)
    if not keys:
        msg = f"{_STEP}: key must name at least one adata.obs column, got {key!r}."
        raise ValueError(msg)
    codes, n_levels, level_names = [], [], []
    for name in keys:
        if name not in adata.obs.columns:
            msg = f"{_STEP}: key {name!r} not in adata.obs; columns are {list(adata.obs.columns)}."
            raise KeyError(msg)
        col = adata.obs[name]
        if col.isna().any():
            msg = (f"{_STEP}: adata.obs[{name!r}] has {int(col.isna().sum())} missing values; label those "
                   "cells' batch or remove the cells.")  # fmt: skip
            raise ValueError(msg)
        # levels in pandas.get_dummies' order (categories, else sorted values); unused
        # categories are dropped
        cat = pd.Categorical(col).remove_unused_categories()
        codes.append(np.asarray(cat.codes, dtype=np.int64))
        n_levels.append(len(cat.categories))
        level_names += [f"{name}={c}" for c in cat.categories]
    return Batches(codes=codes, n_levels=n_levels), level_names


def _n_clusters(nclust, n: int) -> int:
    if nclust is None:
        k = int(min(round(n / 30.0), 100))
        if k < 1:
            msg = f"{_STEP}: {n} cells give the default nclust = round(n / 30) = 0; pass nclust (1 to {n})."
            raise ValueError(msg)
        return k
    k = check_int(nclust, step=_STEP, name="nclust")
    if k > n:
        msg = f"{_STEP}: nclust={k} exceeds the {n} cells; pass at most {n}."
        raise ValueError(msg)
    return k


def _floats(value) -> np.ndarray:
    """`value` as a 1-D float64 array; NaN where it holds no numbers, which the callers refuse with
    the argument's name (numpy's own error names none)."""
    try:
        return np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        return np.full(1, np.nan)


def _per_level(value, batches: Batches, name: str) -> np.ndarray:
    """One value per batch level, from one number, one per variable or one per level."""
    v = _floats(value)
    if v.ndim == 1 and v.size == 1:
        v = np.repeat(v, batches.n_total)
    elif v.ndim == 1 and v.size == len(batches.n_levels) and v.size != batches.n_total:
        v = np.repeat(v, batches.n_levels)
    if v.shape != (batches.n_total,) or not np.isfinite(v).all() or (v < 0).any():
        msg = (f"{_STEP}: {name} must be a non-negative number, one per batch variable "
               f"({len(batches.n_levels)}) or one per batch level ({batches.n_total}); got {value!r}.")
        raise ValueError(msg)
    return v


def _check_ridge(lamb: np.ndarray, batches: Batches, key, level_names: list[str]) -> None:
    """The terms the ridge leaves free (the intercept and every level of lamb 0) must be linearly
    independent over the cells, or the correction's least squares has no unique solution (numpy:
    "Singular matrix", as harmonypy's; CuPy's solve does not raise by default): a variable all of
    whose levels have lamb 0 (its indicators sum to the intercept), or levels of lamb 0 whose
    cells are those of other such levels together (nested or identical keys)."""
    ends = np.cumsum(batches.n_levels)
    for name, end, size in zip(_key_list(key), ends, batches.n_levels, strict=True):
        if not (lamb[end - size : end] > 0).any():
            msg = (f"{_STEP}: lamb is 0 for every level of batch variable {name!r}, so its batch terms "
                   "sum to the intercept and the correction has no unique solution; give lamb > 0 for at "
                   "least one of its levels (the default is 1).")  # fmt: skip
            raise ValueError(msg)
    free = np.flatnonzero(lamb == 0)
    if free.size < 2:  # one free level beside the intercept: dependent only if it holds every cell,
        return  # and then its variable has no other level, which the check above refused
    # Gram matrix of [1, the free levels' indicators]: how many cells each two of them share
    n = batches.codes[0].size
    column = np.zeros(batches.n_total, dtype=np.int64)  # a free level's column; 0: penalised
    column[free] = np.arange(1, free.size + 1)
    rows, cols = [np.arange(n)], [np.zeros(n, dtype=np.int64)]
    for codes in batches.global_codes():
        c = column[codes]
        rows.append(np.flatnonzero(c))
        cols.append(c[c > 0])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    design = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, free.size + 1))
    values, vectors = np.linalg.eigh((design.T @ design).toarray())
    if values[0] > 1e-9 * values[-1]:
        return
    tied = [level_names[free[j - 1]] for j in np.flatnonzero(np.abs(vectors[:, 0]) > 1e-6) if j > 0]
    msg = (f"{_STEP}: lamb is 0 for batch levels {', '.join(map(repr, tied))}, whose indicators are linearly "
           "dependent, among themselves or with the intercept (one variable's level holds exactly the cells of "
           "another's levels, as nested or identical batch variables do), so the correction has no unique "
           "solution; give lamb > 0 for at least one of them.")  # fmt: skip
    raise ValueError(msg)


def _per_cluster(sigma, k: int) -> np.ndarray:
    s = _floats(sigma)
    if s.size == 1:
        s = np.repeat(s, k)
    if s.shape != (k,) or not (np.isfinite(s) & (s > 0)).all():
        msg = f"{_STEP}: sigma must be a positive number or one per cluster ({k}); got {sigma!r}."
        raise ValueError(msg)
    return s


def _init_centroids(cluster_fn):
    if callable(cluster_fn):
        return lambda data, k, seed: _checked_centroids(cluster_fn(data, k), k, data.shape[1])
    if cluster_fn != "kmeans":
        msg = f"{_STEP}: cluster_fn must be 'kmeans' or a callable (data, n_clusters) -> centroids, got {cluster_fn!r}."
        raise ValueError(msg)
    return _kmeans_centroids


def _checked_centroids(centroids, k: int, d: int) -> np.ndarray:
    c = np.asarray(centroids, dtype=np.float64)
    if c.shape != (k, d) or not np.isfinite(c).all():
        msg = (f"{_STEP}: cluster_fn must return finite centroids of shape (n_clusters, n_components) = "
               f"({k}, {d}), got shape {c.shape}.")  # fmt: skip
        raise ValueError(msg)
    return c


def _kmeans_centroids(data: np.ndarray, k: int, seed) -> np.ndarray:
    """harmonypy's start: scikit-learn's k-means++ KMeans, 10 starts of at most 25 iterations."""
    try:
        from sklearn.cluster import KMeans
    except ImportError as err:
        msg = (f"{_STEP}: the k-means start needs scikit-learn (pip install scikit-learn), or pass "
               "cluster_fn=a callable (data, n_clusters) -> centroids.")  # fmt: skip
        raise ImportError(msg) from err
    seed = int(seed) if isinstance(seed, Integral) else seed
    model = KMeans(n_clusters=k, init="k-means++", n_init=10, max_iter=25, random_state=seed)
    return model.fit(data).cluster_centers_

