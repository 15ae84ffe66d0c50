"""neighbors: kNN graph (exact brute force, pynndescent, cuML or cuVS) with UMAP or Gaussian
connectivities, or scanpy's dense Gaussian graph (knn=False), like scanpy.pp.neighbors."""

from __future__ import annotations

import warnings
from types import MappingProxyType

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._backend import blocks_like, describe, is_dask, is_gpu, is_sparse, to_host, xp_of
from .._ops.neighbors import knn_approx
from .._ops.neighbors.connectivities import gauss_connectivities, knn_csr, umap_connectivities
from .._ops.neighbors.knn import knn as exact_knn
from .._ops.neighbors.knn import pairwise
from .._representation import representation
from .._settings import BLOCK_BYTES, DEBUG, default_n_pcs, settings, user_stacklevel
from .._validation import check_anndata, check_int

_STEP = "neighbors"
_METRICS = ("euclidean", "cosine")
ALGORITHMS = (None, "brute", "pynndescent", "cuml", "cuvs")
# scanpy's transformer names and the search that gives their graph here
TRANSFORMERS = {"sklearn": "brute", "pynndescent": "pynndescent", "rapids": "cuml"}
# scanpy's own rule for its default search (scanpy.neighbors, Neighbors._handle_transformer):
# exact below 4096 cells, and below 8192 for euclidean; pynndescent above
BRUTE_MAX_OBS = 4096
BRUTE_MAX_OBS_EUCLIDEAN = 8192
MAX_DENSE_OBS = 20_000  # knn=False: two dense float64 n_obs x n_obs matrices (6.4 GB at 20,000)
_GAUSS_ZERO = 1e-14  # knn=False: weights at or below this are set to 0, as scanpy does


def _choose_algorithm(algorithm, *, on_gpu: bool, n_obs: int, metric: str, knn: bool, what: str = "") -> str:
    """The kNN search to run (see `algorithm` in :func:`neighbors`); raises for names that
    cannot run here. Nothing is computed. `what` describes the data for error messages."""
    if algorithm not in ALGORITHMS:
        msg = f"{_STEP}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}."
        raise ValueError(msg)
    if not knn:
        if algorithm not in (None, "brute"):
            msg = (f"{_STEP}: knn=False computes the distances between all pairs of cells exactly; "
                   f"algorithm must be None or 'brute', got {algorithm!r}.")  # fmt: skip
            raise ValueError(msg)
        return "brute"
    if algorithm is None:
        if on_gpu:
            return "brute"
        small = n_obs < BRUTE_MAX_OBS or (metric == "euclidean" and n_obs < BRUTE_MAX_OBS_EUCLIDEAN)
        if small:
            return "brute"
        if not knn_approx.available("pynndescent"):
            settings.info(f"{_STEP}: pynndescent is not installed (scanpy's search for {n_obs} cells); "
                          "using the exact brute-force search instead.")  # fmt: skip
            return "brute"
        return "pynndescent"
    if algorithm in ("cuml", "cuvs"):
        if not on_gpu:
            msg = (f"{_STEP}: algorithm={algorithm!r} runs on the GPU and needs the representation on "
                   f"the GPU (a cupy array); got {what or 'data on the CPU'}. Move the data to the "
                   "GPU first, or use algorithm='brute' (exact) or 'pynndescent' (scanpy's search) "
                   "on the CPU.")  # fmt: skip
            raise ValueError(msg)
        knn_approx.backend(algorithm)  # ImportError naming what to install
    if algorithm == "pynndescent":
        knn_approx.backend("pynndescent")
    return algorithm


def _resolve_transformer(transformer, algorithm, *, knn: bool):
    """(algorithm, the transformer instance or None) for scanpy's `transformer` argument: a
    name maps to the search that gives its graph (TRANSFORMERS), an instance is used as it is.
    Raises where `transformer` cannot be honoured; nothing is computed."""
    if transformer is None:
        return algorithm, None
    if not knn:
        msg = (f"{_STEP}: knn=False computes the distances between all pairs of cells exactly; "
               f"transformer must be None, got {transformer!r} (as in scanpy).")  # fmt: skip
        raise ValueError(msg)
    if algorithm is not None:
        msg = (f"{_STEP}: give transformer (scanpy's name) or algorithm, not both; got "
               f"transformer={transformer!r} and algorithm={algorithm!r}.")  # fmt: skip
        raise ValueError(msg)
    if isinstance(transformer, str):
        if transformer not in TRANSFORMERS:
            msg = (f"{_STEP}: unknown transformer {transformer!r}; use one of {tuple(TRANSFORMERS)}, "
                   "an instance with fit_transform (like sklearn's KNeighborsTransformer), or None.")  # fmt: skip
            raise ValueError(msg)
        if transformer == "rapids":
            warnings.warn("neighbors: transformer='rapids' is deprecated in scanpy; it runs as "
                          "algorithm='cuml' here.", FutureWarning, stacklevel=user_stacklevel())  # fmt: skip
        return TRANSFORMERS[transformer], None
    params = transformer.get_params() if hasattr(transformer, "get_params") else {}
    if not hasattr(transformer, "fit_transform") or "n_neighbors" not in params:
        msg = (f"{_STEP}: transformer must be one of {tuple(TRANSFORMERS)} or a kNN transformer with "
               f"fit_transform and get_params()['n_neighbors'] (like sklearn's KNeighborsTransformer); "
               f"got {type(transformer).__name__}.")  # fmt: skip
        raise TypeError(msg)
    return "transformer", transformer


def _search(rep, n_neighbors: int, metric: str, algorithm: str, random_state, transformer=None, *,
            scanpy_default: bool = True):  # fmt: skip
    if transformer is not None:
        return knn_approx.transformer_knn(rep, transformer, n_neighbors)
    if algorithm == "pynndescent":
        return knn_approx.pynndescent_knn(rep, n_neighbors, metric=metric, random_state=random_state,
                                          scanpy_default=scanpy_default)  # fmt: skip
    if algorithm == "cuml":
        return knn_approx.cuml_knn(rep, n_neighbors, metric=metric)
    if algorithm == "cuvs":
        return knn_approx.cuvs_knn(rep, n_neighbors, metric=metric)
    return exact_knn(rep, n_neighbors, metric=metric)


def _dense_gauss(dist, n_neighbors: int, block_bytes: int = BLOCK_BYTES):
    """scanpy's knn=False graph from dense all-pairs distances: sigma_i^2 a quarter of the
    n_neighbors-th smallest squared distance of row i (the row itself, at 0, counts as the
    first), w_ij = sqrt(2 s_i s_j / (s_i^2 + s_j^2)) exp(-d_ij^2 / (s_i^2 + s_j^2)), weights
    <= 1e-14 set to 0; a dense float64 matrix with ones on the diagonal. Where s_i = s_j = 0
    (n_neighbors identical cells; scanpy gives NaN) w_ij is 1 for identical cells, else 0."""
    xp = xp_of(dist)
    n = dist.shape[0]
    step = max(1, block_bytes // (8 * max(n, 1)))
    s2 = xp.empty(n, np.float64)
    for start in range(0, n, step):
        d2 = dist[start : start + step] ** 2
        s2[start : start + step] = xp.partition(d2, n_neighbors - 1, axis=1)[:, n_neighbors - 1] / 4
    s = xp.sqrt(s2)
    out = xp.empty((n, n), np.float64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        d2 = dist[start:stop] ** 2
        den = s2[start:stop, None] + s2[None, :]
        zero = den == 0
        den = xp.where(zero, 1.0, den)
        w = xp.sqrt(2.0 * s[start:stop, None] * s[None, :] / den) * xp.exp(-d2 / den)
        w = xp.where(zero, (d2 == 0).astype(np.float64), w)
        w[w <= _GAUSS_ZERO] = 0.0
        out[start:stop] = w
    return out


def warn_pca_fallback(n_dims: int) -> None:
    """scanpy's warning where a graph's representation is a PCA made first (its words: scanpy's
    tests match them)."""
    warnings.warn(f"You’re trying to run this on {n_dims} dimensions of `.X`, if you really want this, set "
                  "`use_rep='X'`.\n         Falling back to preprocessing with `sc.pp.pca` and default params.",
                  UserWarning, stacklevel=user_stacklevel())  # fmt: skip


def _sklearn_transformer(n_neighbors: int, metric, metric_kwds):
    """scanpy's exact search for a metric of scikit-learn's: its brute-force kNN transformer."""
    from sklearn.neighbors import KNeighborsTransformer

    return KNeighborsTransformer(n_neighbors=n_neighbors, algorithm="brute", metric=metric,
                                 metric_params=dict(metric_kwds) if metric_kwds else None)  # fmt: skip


def _sklearn_pairwise(rep, metric, metric_kwds):
    """All-pairs distances for a metric our own `pairwise` does not compute, as scanpy gets them:
    the brute-force transformer over every other cell (on the host; back on `rep`'s device),
    dense float64."""
    host = to_host(rep)
    dist = _sklearn_transformer(host.shape[0] - 1, metric, metric_kwds).fit_transform(host).toarray().astype(np.float64)
    np.fill_diagonal(dist, 0.0)
    return xp_of(rep).asarray(dist)


def _in_memory(rep):
    """A Dask representation computed into memory (the kNN search needs every cell at once;
    n_cells x n_pcs is small), with one info line."""
    if rep is None or not is_dask(rep):
        return rep
    settings.info(f"{_STEP}: computing the Dask representation ({describe(rep)}) into memory.")
    return rep.compute()


def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    knn: bool = True,  # noqa: A002 - scanpy's name
    method: str = "umap",
    transformer=None,
    metric: str = "euclidean",
    metric_kwds=MappingProxyType({}),
    random_state=0,
    key_added: str | None = None,
    copy: bool = False,
    algorithm: str | None = None,
) -> AnnData | None:
    """k-nearest-neighbour graph, like :func:`scanpy.pp.neighbors`.

    Parameters
    ----------
    adata
        Annotated data matrix.
    n_neighbors
        Neighbours per cell, the cell itself included (as in scanpy).
    n_pcs
        Use this many leading columns of the representation.
    use_rep
        ``'X'`` or an ``adata.obsm`` key; default X_pca (X for <= 50 genes).
    knn
        ``True``: a kNN graph. ``False`` (``method='gauss'`` only, as in scanpy): scanpy's dense
        graph over all pairs of cells, a Gaussian kernel whose width is set by the
        ``n_neighbors``-th nearest neighbour; distances (exact in float64) and connectivities
        are then dense float64 ``n_obs x n_obs`` arrays (scanpy writes float64 for euclidean,
        float32 for cosine), so at most ``MAX_DENSE_OBS`` = 20,000 cells are accepted (6.4 GB
        for the two matrices there).
    method
        ``'umap'`` (fuzzy simplicial set) or ``'gauss'``.
    transformer
        scanpy's choice of search; give it or ``algorithm``, not both. ``None``: see
        ``algorithm``. ``'sklearn'``: the exact search (``algorithm='brute'``).
        ``'pynndescent'``: ``algorithm='pynndescent'`` with pynndescent's own defaults, as
        scanpy's ``transformer='pynndescent'`` (its n_trees and n_iters, numba's threads).
        ``'rapids'`` (deprecated in scanpy): ``algorithm='cuml'``. An instance with
        ``fit_transform`` and ``get_params()['n_neighbors']`` (e.g. sklearn's
        ``KNeighborsTransformer`` or pynndescent's ``PyNNDescentTransformer``): called on the
        representation (GPU data on the host, except for cuML's transformers); its
        ``n_neighbors`` replaces ``n_neighbors`` (as in scanpy), its distances (its own metric;
        ``metric`` and ``metric_kwds`` are then only recorded) are kept (its n_neighbors - 1
        nearest besides the cell itself, the layout of every search here: see Returns), each row ordered by
        (distance, index), in the dtype of our searches for that representation (float32 for a
        float32 one). The cell's distance to itself is 0 whatever the transformer stored: scikit-
        learn's brute search stores round-off there (~1e-7), which scanpy keeps and UMAP's
        per-cell offset (the nearest positive distance) then takes for the nearest neighbour's,
        so scanpy's connectivities from such an instance differ (up to 0.6) from its own exact
        search's; ours equal the exact search's.
    metric
        ``'euclidean'`` or ``'cosine'`` (our searches), or with ``knn=True`` and the default
        (or ``'sklearn'``) search any metric scikit-learn's ``KNeighborsTransformer`` takes, a
        name or a callable: then the exact search is scikit-learn's brute force with that
        metric, as scanpy's below 4,096 cells (scanpy uses pynndescent above). With ``knn=False``
        any such metric too: the all-pairs distances scikit-learn's brute-force transformer gives
        (scanpy's). Any name with a transformer instance.
    metric_kwds
        Parameters of the metric, given to scikit-learn as ``metric_params``: the search is
        then scikit-learn's exact one, as scanpy's below 4,096 cells (euclidean and cosine
        included, as scanpy hands them on too). Only recorded with a transformer instance, as
        in scanpy; refused with an ``algorithm`` of ours. Written to
        ``uns[...]['params']['metric_kwds']`` when not empty.
    random_state
        Seed of the pynndescent search (as in scanpy); recorded in ``uns``. The exact searches
        are deterministic.
    key_added
        Prefix: writes ``obsp['{key}_distances']``, ``obsp['{key}_connectivities']``, ``uns[key]``.
    copy
        Work on and return a copy.
    algorithm
        The kNN search. Every search's candidates are re-ranked with float64 distances (the
        cell itself first, then by distance and index), so the graph code is the same for all.
        Rounding, a documented choice: the distances are computed exactly in float64 and rounded
        once to the output dtype; scanpy's come from scikit-learn's or pynndescent's own
        arithmetic (e.g. squared distances by the dot-product expansion, rounded, then the
        square root), so about one in eight differs from ours by a unit in the last place of
        float32 (1,255 of 9,800 on pbmc68k), and neighbours tied within that change order. We
        keep the exact value rather than copy one library's rounding.

        ``None`` (default)
            GPU data: ``'brute'``. CPU data: what scanpy does, ``'brute'`` below 4,096 cells
            (below 8,192 for ``metric='euclidean'``), ``'pynndescent'`` above (``'brute'`` with
            an info line when pynndescent is not installed).
        ``'brute'``
            Exact brute force in memory-bounded tiles (CPU or GPU).
        ``'pynndescent'``
            Approximate nearest-neighbour descent with scanpy's settings (``n_neighbors + 1``
            neighbours, ``n_trees = min(64, 5 + round(sqrt(n_obs) / 20))``,
            ``n_iters = max(5, round(log2(n_obs)))``, ``random_state``, one thread), so the
            same ``random_state`` finds the neighbours scanpy finds. GPU data are searched on
            the host. Needs ``pynndescent``.
        ``'cuml'`` / ``'cuvs'``
            Exact brute force of RAPIDS cuML (``cuml.neighbors.NearestNeighbors``) or cuVS
            (``cuvs.neighbors.brute_force``); GPU data only, and only where installed.

        The algorithm used is not written to ``uns`` (whose keys stay scanpy's); with
        ``gsc.settings.verbosity = 2`` it is printed.

    A representation held as a Dask array (``obsm[use_rep]``, ``X_pca`` or ``X``) is computed
    into memory first (an info line says so): the search needs all cells at once, and the
    result is the one for the in-memory array (numpy / scipy, or cupy / cupyx for GPU blocks).

    Returns
    -------
    ``adata`` when ``copy`` else ``None``. Sets ``obsp['distances']`` (CSR, n_neighbors - 1
    neighbours per row in ascending distance, self excluded, for every algorithm; dense with
    ``knn=False``), ``obsp['connectivities']`` (CSR, zero diagonal; dense with ones on the
    diagonal with ``knn=False``) and ``uns['neighbors']`` = {'connectivities_key',
    'distances_key', 'params'}, on the device of the representation. (scanpy's own
    pynndescent path and a transformer instance store the transformer's graph, n_neighbors + 1
    distances per row with the cell itself; here every search gives scanpy's exact-search
    layout, so the search never changes the shape of the result. The UMAP connectivities use
    the same n_neighbors lists in both. With an instance and ``method='gauss'``, scanpy also
    weights the instance's extra neighbour and the diagonal; here the Gaussian graph is built
    from the n_neighbors lists, as for every other search.)

    Raises
    ------
    ValueError
        Unknown ``method``, ``metric``, ``transformer`` or ``algorithm``, or both of the last
        two; ``metric_kwds`` with an ``algorithm`` of ours; ``knn=False`` with
        ``method='umap'``, with an approximate ``algorithm``, with a ``transformer`` or above
        ``MAX_DENSE_OBS`` cells; ``'cuml'`` / ``'cuvs'`` with data on the CPU; bad
        ``n_neighbors``, ``n_pcs`` or representation; a transformer graph with too few
        neighbours per cell.
    TypeError
        ``transformer`` is neither a known name nor a kNN transformer.
    ImportError
        ``algorithm`` names a package that is not installed.
    """
    check_anndata(adata, step=_STEP)
    start = settings.log("computing neighbors")
    start_neighbors = settings.log("computing neighbors", level=DEBUG)
    knn = bool(knn)
    if method not in ("umap", "gauss"):
        msg = f"{_STEP}: method must be 'umap' or 'gauss', got {method!r}."
        raise ValueError(msg)
    if not knn and method != "gauss":
        msg = (f"{_STEP}: method={method!r} only with knn=True (as in scanpy); knn=False builds "
               "the dense Gaussian-kernel graph of method='gauss'.")  # fmt: skip
        raise ValueError(msg)
    if algorithm not in ALGORITHMS:
        msg = f"{_STEP}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}."
        raise ValueError(msg)
    search, instance = _resolve_transformer(transformer, algorithm, knn=knn)
    # another metric (a name scikit-learn knows, or a callable) or one given metric_kwds, with
    # knn=True and the default or sklearn search: scanpy's exact search, scikit-learn's brute-force
    # transformer with that metric and its parameters (scanpy takes it below 4,096 cells and
    # pynndescent above; exact here at every size)
    unknown = instance is None and metric not in _METRICS  # not a metric of our own searches
    parametrised = instance is None and bool(metric_kwds)  # ours take no parameters: scikit-learn's too
    other_metric = (unknown or parametrised) and knn and algorithm is None and transformer in (None, "sklearn")
    # knn=False: scanpy's all-pairs distances come from scikit-learn with any metric it takes
    all_pairs_other = (unknown or parametrised) and not knn and algorithm is None
    if unknown and not (other_metric or all_pairs_other):
        msg = (f"{_STEP}: metric {metric!r} is supported with the default search (algorithm=None, transformer "
               f"None or 'sklearn'), or a transformer instance that computes it; here: choose one of "
               f"{_METRICS}.")  # fmt: skip
        raise ValueError(msg)
    if instance is None and metric_kwds and not (other_metric or all_pairs_other):
        msg = (f"{_STEP}: metric {metric!r} takes no parameters, got metric_kwds={dict(metric_kwds)!r}; "
               "leave it empty, or pass a transformer instance for a parametrised metric.")  # fmt: skip
        raise ValueError(msg)
    if instance is not None:
        n_neighbors = instance.get_params()["n_neighbors"]  # as scanpy: the transformer's count
    n_neighbors = check_int(n_neighbors, step=_STEP, name="n_neighbors", minimum=2,
                            hint=" (it counts the cell itself)")  # fmt: skip
    check_int(n_pcs, step=_STEP, name="n_pcs", minimum=0, none_ok=True)
    if adata.n_obs < 2:  # scanpy fails here too, inside scikit-learn (n_neighbors adjusted to 0)
        msg = f"{_STEP}: a neighbour graph needs at least 2 cells, got {adata.n_obs}."
        raise ValueError(msg)
    if n_neighbors > adata.n_obs and instance is None:  # scanpy's rule for very small data sets, and its warning
        n_neighbors = 1 + int(0.5 * adata.n_obs)
        settings.warning(f"n_obs too small: adjusting to `n_neighbors = {n_neighbors}`")
    if other_metric:
        instance = _sklearn_transformer(n_neighbors, metric, metric_kwds)
    if not knn and adata.n_obs > MAX_DENSE_OBS:
        gb = 2 * 8 * adata.n_obs**2 / 1e9
        msg = (f"{_STEP}: knn=False writes two dense {adata.n_obs} x {adata.n_obs} float64 matrices "
               f"({gb:.1f} GB); it is limited to {MAX_DENSE_OBS} cells. Use knn=True.")  # fmt: skip
        raise ValueError(msg)
    if not knn and adata.n_obs >= 10_000:
        settings.warning("Using high n_obs without `knn=True` takes a lot of memory...")  # scanpy's
    rep = representation(adata, use_rep, n_pcs, step=_STEP)
    where = rep if rep is not None else adata.X
    on_gpu = is_gpu(blocks_like(where))  # Dask X, no X_pca: pca gives it
    if instance is None:
        search = _choose_algorithm(search, on_gpu=on_gpu, n_obs=adata.n_obs, metric=metric, knn=knn,
                                   what=describe(where))  # fmt: skip
    settings.progress(f"{_STEP}: {'all pairs' if not knn else search} search on {describe(where)}.")
    if copy:
        adata = adata.copy()  # rep (if any) holds the same values, and is only read
    if rep is None:
        from ._pca import pca

        # as scanpy: PCA with n_pcs (default 50) components, written to adata, with its warning
        # (its words: scanpy's tests match them)
        warn_pca_fallback(adata.n_vars)
        pca(adata, n_comps=n_pcs if n_pcs is not None else default_n_pcs())
        rep = adata.obsm[K.OBSM_PCA]
    rep = _in_memory(rep)  # after validation: nothing is computed for a call that fails
    sparse_rep = is_sparse(rep)
    if sparse_rep:
        rep = rep.toarray()
    xp = xp_of(rep)
    rep = xp.asarray(rep)
    if rep.dtype.kind not in "iufb":
        msg = f"{_STEP}: the representation must be numeric, got dtype {rep.dtype}."
        raise TypeError(msg)
    if rep.dtype.kind == "f" and not bool(xp.isfinite(rep).all()):
        msg = f"{_STEP}: the representation holds NaN or inf values; fix or drop those cells first."
        raise ValueError(msg)
    # scanpy's dtypes: its exact euclidean search (sklearn) gives float64 distances on a dense
    # representation, its others (sklearn's on sparse input, cosine, pynndescent) keep float32;
    # sklearn's searches take integers as float64, pynndescent as float32
    exact_euclidean = knn and instance is None and search == "brute" and metric == "euclidean" and not sparse_rep
    single = rep.dtype == np.float32 or rep.dtype.kind != "f" and search != "brute"
    out_dtype = np.float32 if single and not exact_euclidean else np.float64
    if other_metric and isinstance(metric, str):  # scikit-learn's named metrics: scipy's float64
        out_dtype = np.float64

    n = adata.n_obs
    if not knn:
        distances = (_sklearn_pairwise(rep, metric, metric_kwds) if all_pairs_other else
                     pairwise(xp.ascontiguousarray(rep), metric=metric))  # fmt: skip
        start_connect = settings.log("computed neighbors", level=DEBUG, start=start_neighbors)
        conn = _dense_gauss(distances, n_neighbors)
    else:
        ind, dist = _search(xp.ascontiguousarray(rep), n_neighbors, metric, search, random_state, instance,
                            scanpy_default=transformer is None)  # fmt: skip
        distances = knn_csr(ind, dist.astype(out_dtype), n, drop_first=True)
        start_connect = settings.log("computed neighbors", level=DEBUG, start=start_neighbors)
        conn = umap_connectivities(ind, dist, n, n_neighbors) if method == "umap" else gauss_connectivities(distances)
    settings.log("computed connectivities", level=DEBUG, start=start_connect)

    dkey, ckey, ukey = K.neighbors_keys(key_added)
    params = {"n_neighbors": n_neighbors, "method": method, "random_state": random_state, "metric": metric}
    if metric_kwds:
        params["metric_kwds"] = dict(metric_kwds)
    if use_rep is not None:
        params["use_rep"] = use_rep
    if n_pcs is not None:
        params["n_pcs"] = n_pcs
    adata.obsp[dkey] = distances
    adata.obsp[ckey] = conn
    adata.uns[ukey] = {"connectivities_key": ckey, "distances_key": dkey, "params": params}
    settings.log("    finished", start=start, deep=f"added to `.uns[{ukey!r}]`\n"
                 f"    `.obsp[{dkey!r}]`, distances for each pair of neighbors\n"
                 f"    `.obsp[{ckey!r}]`, weighted adjacency matrix")  # fmt: skip
    return adata if copy else None
