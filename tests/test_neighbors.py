"""neighbors: exact kNN and UMAP / Gaussian connectivities, parity with scanpy and a float64
brute-force reference; the brain data (duplicate and all-zero cells) where scanpy fails."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import UMAP_CONN, assert_adata_equal, assert_close, assert_same, to_host
from scipy.spatial.distance import cdist

from gpu_sc._ops.neighbors.knn import _NEAR, knn
from gpu_sc.preprocessing._neighbors import neighbors

# scanpy's own small example (tests/test_neighbors.py): n_neighbors=3 includes the point itself
X_SMALL = np.array([[1, 0], [3, 0], [5, 6], [0, 4]])
DIST_SMALL = [[0.0, 2.0, 0.0, 4.123105525970459], [2.0, 0.0, 0.0, 5.0],
              [0.0, 6.324555397033691, 0.0, 5.385164737701416], [4.123105525970459, 5.0, 0.0, 0.0]]  # fmt: skip
UMAP_SMALL = [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.5849691143165735, 0.8277419907567016],
              [0.0, 0.5849691143165735, 0.0, 1.0], [1.0, 0.8277419907567016, 1.0, 0.0]]  # fmt: skip
GAUSS_SMALL = [[0.0, 0.8466368913650513, 0.0, 0.5660185813903809],
               [0.8466368913650513, 0.0, 0.4223647117614746, 0.4902938902378082],
               [0.0, 0.4223647117614746, 0.0, 0.5840492248535156],
               [0.5660185813903809, 0.4902938902378082, 0.5840492248535156, 0.0]]  # fmt: skip


_PCA = {}


@pytest.fixture
def pbmc_pca(pbmc):
    """pbmc after scanpy's normalize_total, log1p and pca (cached)."""
    if "a" not in _PCA:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(pbmc)
            sc.pp.log1p(pbmc)
            sc.pp.pca(pbmc)
        _PCA["a"] = pbmc
    return _PCA["a"].copy()


@pytest.mark.parametrize("method,expected", [("umap", UMAP_SMALL), ("gauss", GAUSS_SMALL)])
def test_scanpy_small_example(method, expected):
    import anndata as ad

    a = ad.AnnData(X_SMALL.astype(np.float32))
    neighbors(a, n_neighbors=3, method=method)
    # scanpy's distances are float32 roundings of the float64 ones we keep
    assert_close(a.obsp["distances"].toarray(), DIST_SMALL, dtype=np.float64, out=np.float32)
    conn = a.obsp["connectivities"].toarray()
    if method == "umap":  # two bisections for each sigma, each stopped within its tolerance
        assert np.abs(conn - expected).max() <= UMAP_CONN
    else:  # a few float32 operations on each side (exp of arguments below 1 here)
        assert_close(conn, expected, dtype=np.float32)


def _pairwise_scale(x, metric):
    """`scale` of pairwise()'s distances against cdist's (float64 rows `x`). Cosine: 1 - u.v of unit
    rows, relative to 1. Euclidean: ||x||^2 + ||y||^2 - 2 x.y over centred rows rounds d^2 relative
    to s = ||x||^2 + ||y||^2, which d = sqrt(d^2) halves and divides by d; the pairs below d^2 =
    _NEAR s are recomputed directly, so elsewhere d >= sqrt(_NEAR s): |dd| <= tol sqrt(s / _NEAR) / 2."""
    if metric == "cosine":
        return 1.0
    centred = x - x.mean(axis=0)
    return np.sqrt(2 * (centred * centred).sum(axis=1).max() / _NEAR) / 2


def _reference(x, k, metric):
    """float64 brute force over all pairs: self first, then (distance, index)."""
    d = cdist(x.astype(np.float64), x.astype(np.float64), metric=metric)
    np.fill_diagonal(d, -1)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), d.shape), d), axis=1)[:, :k]
    dist = np.take_along_axis(d, order, axis=1)
    dist[:, 0] = 0
    return order, dist


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_exact(pbmc_pca, metric):
    x = pbmc_pca.obsm["X_pca"]
    ind, dist = knn(x, 15, metric=metric, block_bytes=2**20)  # several row blocks
    ref_i, ref_d = _reference(x, 15, metric)
    assert (ind[:, 0] == np.arange(len(x))).all()
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(ind, ref_i, strict=True)])
    assert recall == 1.0
    # float64 sums over the 50 dimensions in another order; 1 - cos cancels: relative to 1
    assert_close(dist, ref_d, dtype=np.float64, n_terms=x.shape[1], scale=1.0 if metric == "cosine" else None)


@pytest.mark.parametrize("method", ["umap", "gauss"])
def test_parity_with_scanpy(pbmc_pca, method):
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=15, method=method)
    neighbors(pbmc_pca, n_neighbors=15, method=method)
    d, d_ref = pbmc_pca.obsp["distances"], ref.obsp["distances"]
    assert (d.getnnz(axis=1) == 14).all()
    assert ((d != 0).astype(int) != (d_ref != 0).astype(int)).nnz == 0  # same neighbours
    # float32 distances: sums of 50 squared float32 differences in another order (BLAS)
    assert_close(d, d_ref, dtype=np.float32, n_terms=pbmc_pca.obsm["X_pca"].shape[1])
    assert abs(pbmc_pca.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= UMAP_CONN
    assert pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]
    for key in ("distances", "connectivities"):  # float64 / float32 exactly as scanpy's
        assert pbmc_pca.obsp[key].dtype == ref.obsp[key].dtype, key
    assert pbmc_pca.obsp["connectivities"].diagonal().max() == 0


def test_cosine(pbmc_pca):
    """Distances equal scanpy's; connectivities equal UMAP's fuzzy_simplicial_set on our kNN.
    (scanpy's own cosine graph differs where sklearn's float32 self-distance is 1e-7 instead
    of 0, which UMAP then takes as rho.)"""
    from umap.umap_ import fuzzy_simplicial_set

    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, metric="cosine")
    neighbors(pbmc_pca, metric="cosine")
    d, d_ref = pbmc_pca.obsp["distances"], ref.obsp["distances"]
    # as test_matches_scanpy; 1 - cos cancels: relative to 1
    assert_close(d, d_ref, dtype=np.float32, n_terms=pbmc_pca.obsm["X_pca"].shape[1], scale=1.0)
    assert pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]
    assert d.dtype == d_ref.dtype == np.float32
    ind, dist = knn(pbmc_pca.obsm["X_pca"], 15, metric="cosine")
    n = pbmc_pca.n_obs
    conn, _, _ = fuzzy_simplicial_set(sp.coo_matrix((n, 1)), 15, None, None, knn_indices=ind,
                                      knn_dists=dist)  # fmt: skip
    assert abs(pbmc_pca.obsp["connectivities"] - conn.tocsr()).max() <= UMAP_CONN


def test_key_added_and_params(pbmc_pca):
    neighbors(pbmc_pca, n_neighbors=10, n_pcs=20, key_added="k")
    assert set(pbmc_pca.obsp) == {"k_distances", "k_connectivities"}
    assert pbmc_pca.uns["k"] == {
        "connectivities_key": "k_connectivities", "distances_key": "k_distances",
        "params": {"n_neighbors": 10, "method": "umap", "random_state": 0, "metric": "euclidean", "n_pcs": 20},
    }  # fmt: skip
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=10, n_pcs=20, key_added="k")
    assert ref.uns["k"] == pbmc_pca.uns["k"]
    assert abs(ref.obsp["k_connectivities"] - pbmc_pca.obsp["k_connectivities"]).max() <= UMAP_CONN
    out = neighbors(pbmc_pca, n_neighbors=5, use_rep="X_pca", copy=True)
    assert out is not pbmc_pca and out.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    assert "neighbors" not in pbmc_pca.uns


@pytest.mark.parametrize(
    "kwargs,match",
    [({"metric": "manhattan", "algorithm": "brute"}, "metric"),
     ({"metric": "manhattan", "knn": False, "method": "gauss", "algorithm": "brute"}, "metric"),
     ({"use_rep": "nan"}, "NaN"), ({"method": "jaccard"}, "method"), ({"use_rep": "nope"}, "nope")],
)  # fmt: skip
def test_bad_input_leaves_adata_unchanged(pbmc_pca, kwargs, match):
    rep = pbmc_pca.obsm["X_pca"].copy()
    rep[5, 3] = np.nan
    pbmc_pca.obsm["nan"] = rep
    before = pbmc_pca.copy()
    with pytest.raises(ValueError, match=match):  # ValueError for a missing use_rep too, as scanpy
        neighbors(pbmc_pca, **kwargs)
    assert_adata_equal(pbmc_pca, before)
    assert not pbmc_pca.obsp and set(pbmc_pca.uns) == set(before.uns)


def test_no_pca_many_genes(pbmc):
    """Without X_pca and with > 50 genes, PCA is computed (gsc.pp.pca), as scanpy does, with
    scanpy's warning (its words: scanpy's test_neighbors_key_added.py matches them); with X_pca,
    or with few genes, no warning."""
    del pbmc.obsm["X_pca"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(pbmc)
        sc.pp.log1p(pbmc)
    from scanpy.tools._utils import _choose_representation  # where scanpy's neighbors warns

    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        _choose_representation(pbmc.copy())
    with pytest.warns(UserWarning, match=r".*Falling back to preprocessing with `sc.pp.pca` and default params") as ours:
        neighbors(pbmc, n_neighbors=5)
    assert pbmc.obsp["distances"].shape == (700, 700) and pbmc.obsm["X_pca"].shape == (700, 50)
    ref = [str(w.message) for w in theirs if "Falling back" in str(w.message)]
    assert [str(w.message) for w in ours] == ref and len(ref) == 1  # the same text, once
    assert ours[0].filename == __file__  # points at the caller, as scanpy's stacklevel does
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neighbors(pbmc, n_neighbors=5)  # X_pca now there
        few = pbmc[:, :40].copy()
        del few.obsm["X_pca"]
        neighbors(few, n_neighbors=5)  # <= 50 genes: X itself


def test_int64_and_integer_inputs(pbmc):
    """X as CSR with int64 index arrays and integer counts (use_rep='X') gives the same graph
    as the dense float64 matrix."""
    x = pbmc.X[:300, :40].astype(np.int64)
    x = sp.csr_matrix((x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)), shape=x.shape)
    import anndata as ad

    a, b = ad.AnnData(x), ad.AnnData(x.toarray().astype(np.float64))
    neighbors(a, n_neighbors=8, use_rep="X")
    neighbors(b, n_neighbors=8, use_rep="X")
    assert abs(a.obsp["distances"] - b.obsp["distances"]).max() <= 1e-6
    assert abs(a.obsp["connectivities"] - b.obsp["connectivities"]).max() <= 1e-6


def test_brain_duplicates_and_empty_cell(brain):
    """scanpy 1.11 fails on this data here; every cell gets n_neighbors - 1 neighbours other
    than itself, duplicates (cells 991, 6410, 8293) at distance 0, a symmetric finite graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(brain)
        sc.pp.log1p(brain)
        sc.pp.pca(brain)
    rows = np.r_[0:2500, 6410, 8293]  # time budget: the empty cell 1520 and the duplicates
    sub = brain[rows].copy()
    sub.X = sub.X.toarray()
    dup = [991, 2500, 2501]
    for a, rep, method in ((brain, None, "umap"), (sub, "X", "umap"), (sub, "X", "gauss")):
        neighbors(a, n_neighbors=10, use_rep=rep, method=method)
        d, c = a.obsp["distances"], a.obsp["connectivities"]
        assert (d.getnnz(axis=1) == 9).all()
        assert (d.indices.reshape(-1, 9) != np.arange(a.n_obs)[:, None]).all()
        assert np.isfinite(c.data).all() and abs(c - c.T).max() <= 1e-6
        assert c.diagonal().max() == 0
    ind = sub.obsp["distances"].indices.reshape(-1, 9)
    for i in dup:
        assert set(ind[i, :2]) == set(dup) - {i}
        np.testing.assert_array_equal(sub.obsp["distances"][i, ind[i, :2]].toarray(), 0)


@pytest.mark.parametrize("method", ["umap", "gauss"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gpu_equals_cpu(device, pbmc_pca, method, metric):
    import cupy as cp

    gpu = pbmc_pca.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    neighbors(pbmc_pca, method=method, metric=metric)
    neighbors(gpu, method=method, metric=metric)
    for key in ("distances", "connectivities"):
        g, c = gpu.obsp[key], pbmc_pca.obsp[key]
        assert type(g).__module__.startswith("cupyx")
        g = g.get()
        assert abs(g - c).max() <= 1e-5
    np.testing.assert_array_equal(gpu.obsp["distances"].get().indices, pbmc_pca.obsp["distances"].indices)
    assert gpu.uns["neighbors"] == pbmc_pca.uns["neighbors"]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gpu_knn_tiles_and_select_kernel(brain, device, metric):
    """Several row and column tiles, k up to the kernel's limit, duplicates: same lists as CPU
    (on a GPU, or through the kernel emulator on 3,000 cells)."""
    import cupy as cp

    if device == "emulated":
        brain = brain[:3000].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(brain)
        sc.pp.log1p(brain)
        sc.pp.pca(brain)
    x = brain.obsm["X_pca"]
    for k in (2, 30, 256):
        ind_c, dist_c = knn(x, k, metric=metric, block_bytes=2**22)
        ind_g, dist_g = knn(cp.asarray(x), k, metric=metric, block_bytes=2**22)
        ind_g, dist_g = to_host(ind_g), to_host(dist_g)
        # both re-rank in float64, but the device picks candidates from float32 |a|^2 + |b|^2 - 2 a.b
        # tiles: a neighbour within their float32 error of the k-th may be another (the index check
        # allows it), its distance off by that error, which cancels: relative to the largest
        assert_close(dist_g, dist_c, dtype=np.float32, n_terms=x.shape[1], scale="max")
        assert np.mean(ind_g == ind_c) > 0.999  # exact ties aside


def test_exact_knn_reports_progress(device, capsys, monkeypatch):
    """At verbosity 2 the exact search says how far it is, about every tenth of the cells and
    at the end (after the device finished); at the default verbosity it says nothing."""
    import cupy as cp

    from gpu_sc import settings

    x = np.random.default_rng(0).normal(size=(500, 8))
    for where, data in (("CPU", x), ("GPU", cp.asarray(x))):
        knn(data, 5, block_bytes=2**14)  # row blocks of a few cells
        assert capsys.readouterr().err == ""
        monkeypatch.setattr(settings, "verbosity", 2)
        knn(data, 5, block_bytes=2**14)
        monkeypatch.setattr(settings, "verbosity", 1)
        lines = capsys.readouterr().err.splitlines()
        assert 5 <= len(lines) <= 12, lines
        assert lines[-1] == f"neighbors: exact kNN ({where}): 500/500 cells"


# --- algorithm= (brute / pynndescent / cuml / cuvs) and knn=False ------------------------------

from gpu_sc._ops.neighbors import knn_approx  # noqa: E402
from gpu_sc._ops.neighbors.knn import pairwise  # noqa: E402
from gpu_sc.preprocessing import _neighbors as nb  # noqa: E402

_BRAIN = {}


@pytest.fixture
def brain_pca(brain):
    """The 10k mouse brain cells (1 all-zero cell, 3 identical cells) after scanpy's
    normalize_total, log1p and a 30-component pca (cached)."""
    if "a" not in _BRAIN:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(brain)
            sc.pp.log1p(brain)
            sc.pp.pca(brain, n_comps=30)
        _BRAIN["a"] = brain
    return _BRAIN["a"].copy()


def _scanpy_neighbors(adata, monkeypatch, **kwargs):
    """scanpy's neighbors, with csr_array.getnnz back (gone in scipy >= 1.14; scanpy's
    transformer graphs need it)."""
    monkeypatch.setattr(sp.csr_array, "getnnz", lambda s, axis=None: np.diff(s.indptr) if axis == 1 else s.nnz,
                        raising=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(adata, **kwargs)


def _rows(csr, n, drop=None):
    """Each row's stored columns in stored order (without `drop`'s own index if given)."""
    return [[j for j in csr.indices[csr.indptr[i] : csr.indptr[i + 1]] if j != i][:drop] for i in range(n)]


def test_pynndescent_matches_scanpy_on_brain(brain_pca, monkeypatch):
    """scanpy's default search for 10k cells is pynndescent; it fails here only on scipy >= 1.14
    (csr_array.getnnz is gone), so emulate the older scipy it was written for. Same random_state:
    the same neighbours (measured: 99.9993% shared, 1 row of 10,000 differs, by a tie among the
    3 identical cells), connectivities equal up to float32 distance round-off, same uns. And
    algorithm=None picks pynndescent here (>= 8192 cells), exactly as scanpy does."""
    ref = brain_pca.copy()
    _scanpy_neighbors(ref, monkeypatch)
    ours = brain_pca.copy()
    neighbors(ours, algorithm="pynndescent")
    n = ours.n_obs
    d, c = ours.obsp["distances"], ours.obsp["connectivities"]
    # our layout for every algorithm: 14 neighbours other than the cell itself, by distance
    assert (d.getnnz(axis=1) == 14).all() and isinstance(d, sp.csr_matrix)
    ind = d.indices.reshape(n, 14)
    assert (ind != np.arange(n)[:, None]).all() and (np.diff(d.data.reshape(n, 14), axis=1) >= 0).all()
    # scanpy's pynndescent distances hold 16 entries per row (the cell itself included)
    ref_rows = _rows(ref.obsp["distances"], n, drop=14)
    shared = np.mean([len(set(a) & set(b)) / 14 for a, b in zip(ind, ref_rows, strict=True)])
    same_rows = np.mean([set(a) == set(b) for a, b in zip(ind, ref_rows, strict=True)])
    assert shared >= 0.9999 and same_rows >= 0.999, (shared, same_rows)
    cr = ref.obsp["connectivities"]
    assert ((c != 0).astype(np.int8) != (cr != 0).astype(np.int8)).nnz <= 1e-4 * cr.nnz
    diff = abs(c - cr).tocsr()
    assert (diff.data > 1e-4).sum() <= 1e-3 * cr.nnz  # measured: 28 of 170,724 above 1e-5
    assert np.isfinite(c.data).all() and abs(c - c.T).max() <= 1e-6 and c.diagonal().max() == 0
    assert ours.uns["neighbors"] == ref.uns["neighbors"]
    # the default for 10k CPU cells is this same search
    default = brain_pca.copy()
    neighbors(default)
    assert abs(default.obsp["connectivities"] - c).max() == 0
    np.testing.assert_array_equal(default.obsp["distances"].indices, d.indices)
    # the 3 identical cells find each other at distance 0; gauss works on the same lists
    neighbors(default, algorithm="pynndescent", method="gauss")
    g = default.obsp["connectivities"]
    assert np.isfinite(g.data).all() and abs(g - g.T).max() <= 1e-6 and g.diagonal().max() == 0
    for i, others in ((991, {6410, 8293}), (6410, {991, 8293}), (8293, {991, 6410})):
        assert set(ind[i, :2]) == others and (d[i, ind[i, :2]].toarray() == 0).all()


def test_pynndescent_small_data_close_to_exact(pbmc_pca):
    """Asked for explicitly below scanpy's threshold: near-exact lists on 700 cells."""
    a, b = pbmc_pca.copy(), pbmc_pca.copy()
    neighbors(a, algorithm="pynndescent", random_state=3)
    neighbors(b, algorithm="brute")
    ia, ib = (x.obsp["distances"].indices.reshape(-1, 14) for x in (a, b))
    assert np.mean([len(set(x) & set(y)) / 14 for x, y in zip(ia, ib, strict=True)]) >= 0.99
    assert a.uns["neighbors"]["params"]["random_state"] == 3


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_refine_makes_candidates_exact(pbmc_pca, metric):
    """Candidate lists as approximate searches return them (shuffled, the cell itself missing
    or repeated, -1 padding, rows with too few candidates) become the exact brute-force lists."""
    x = pbmc_pca.obsm["X_pca"]
    k = 10
    ind, dist = knn(x, k, metric=metric)
    rng = np.random.default_rng(0)
    cand = rng.permuted(ind, axis=1)  # the right cells, in any order
    cand[::3] = np.where(cand[::3] == np.arange(0, len(x), 3)[:, None], -1, cand[::3])  # self dropped
    extra = np.full((len(x), 3), -1)  # padding
    extra[1::5, 0] = cand[1::5, 1]  # a repeated candidate
    extra[2::5, 1] = np.arange(2, len(x), 5)  # the cell itself twice
    cand = np.hstack([cand, extra])
    cand[::50, 4:] = -1  # too few: searched exactly
    out_i, out_d = knn_approx.refine(x, cand, k, metric=metric, block_bytes=2**16)
    np.testing.assert_array_equal(out_i, ind)
    assert_same(out_d, dist)  # rank() recomputes each pair's distance with the same operations


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_false_matches_scanpy(pbmc_pca, metric):
    """knn=False, method='gauss': scanpy's dense all-pairs graph, same values (scanpy's distances
    carry float32 round-off, 1.4e-6 here; ours are exact). Ours are float64 for both metrics;
    scanpy's are float64 for euclidean, float32 for cosine (sklearn's two distance paths)."""
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, knn=False, method="gauss", metric=metric)
    neighbors(pbmc_pca, knn=False, method="gauss", metric=metric)
    for key, tol in (("distances", 2e-6), ("connectivities", 5e-6)):
        ours, theirs = pbmc_pca.obsp[key], ref.obsp[key]
        assert type(ours) is type(theirs) is np.ndarray and ours.dtype == np.float64
        assert np.abs(ours - theirs).max() <= tol
    x = pbmc_pca.obsm["X_pca"].astype(np.float64)
    assert_close(pbmc_pca.obsp["distances"], cdist(x, x, metric=metric), dtype=np.float64, n_terms=x.shape[1],
                 scale=_pairwise_scale(x, metric))  # fmt: skip
    assert pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]


@pytest.mark.parametrize(("metric", "kwds"), [("manhattan", {}), ("braycurtis", {}), ("minkowski", {"p": 3})])
def test_knn_false_with_another_metric_is_scanpys(pbmc_pca, metric, kwds):
    """Other metrics with knn=False: scanpy takes scikit-learn's all-pairs distances; ours refused
    them (an audit). The same distances and graph, to the bit."""
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, knn=False, method="gauss", metric=metric, metric_kwds=kwds)
    neighbors(pbmc_pca, knn=False, method="gauss", metric=metric, metric_kwds=kwds)
    for key in ("distances", "connectivities"):
        np.testing.assert_array_equal(pbmc_pca.obsp[key], ref.obsp[key])
    assert pbmc_pca.uns["neighbors"] == ref.uns["neighbors"]


def test_knn_false_identical_cells_and_pairwise_blocks(brain_pca):
    """Exact zeros for identical cells whatever the block size; a finite symmetric graph where
    n_neighbors identical cells give scanpy a zero kernel width (NaN there)."""
    rows = np.r_[0:400, 991, 6410, 8293, 1520]
    x = brain_pca.obsm["X_pca"][rows]
    d = pairwise(x, block_bytes=2**14)
    x64 = x.astype(np.float64)
    assert_close(d, cdist(x64, x64), dtype=np.float64, n_terms=x.shape[1], scale=_pairwise_scale(x64, "euclidean"))
    assert (d[400:403, 400:403] == 0).all()
    a = brain_pca[rows].copy()
    neighbors(a, n_neighbors=3, knn=False, method="gauss", use_rep="X_pca")
    c = a.obsp["connectivities"]
    assert np.isfinite(c).all() and (c == c.T).all() and (np.diag(c) == 1).all()
    assert (c[400:403, 400:403] == 1).all()


def test_knn_false_errors(pbmc_pca, monkeypatch):
    before = pbmc_pca.copy()
    with pytest.raises(ValueError, match="only with knn=True"):
        neighbors(pbmc_pca, knn=False)  # method='umap', as scanpy
    with pytest.raises(ValueError, match="algorithm must be None or 'brute'"):
        neighbors(pbmc_pca, knn=False, method="gauss", algorithm="pynndescent")
    monkeypatch.setattr(nb, "MAX_DENSE_OBS", 500)
    with pytest.raises(ValueError, match="limited to 500 cells"):
        neighbors(pbmc_pca, knn=False, method="gauss")
    assert_adata_equal(pbmc_pca, before)


def test_default_algorithm_follows_scanpy():
    """scanpy: exact below 4096 cells (8192 for euclidean), pynndescent above; GPU: brute."""
    choose = nb._choose_algorithm
    kw = {"on_gpu": False, "knn": True}
    assert choose(None, n_obs=4095, metric="cosine", **kw) == "brute"
    assert choose(None, n_obs=4096, metric="cosine", **kw) == "pynndescent"
    assert choose(None, n_obs=8191, metric="euclidean", **kw) == "brute"
    assert choose(None, n_obs=8192, metric="euclidean", **kw) == "pynndescent"
    assert choose(None, n_obs=10**6, metric="euclidean", on_gpu=True, knn=True) == "brute"
    assert choose(None, n_obs=10**4, metric="euclidean", on_gpu=False, knn=False) == "brute"
    assert choose("pynndescent", n_obs=100, metric="euclidean", **kw) == "pynndescent"


def test_default_brute_below_threshold(pbmc_pca, monkeypatch):
    """700 cells: the default never calls pynndescent and equals algorithm='brute'; without
    pynndescent installed, large data falls back to brute too."""

    def boom(*args, **kwargs):
        raise AssertionError("pynndescent called")

    monkeypatch.setattr(knn_approx, "pynndescent_knn", boom)
    a, b = pbmc_pca.copy(), pbmc_pca.copy()
    neighbors(a)
    neighbors(b, algorithm="brute")
    assert_adata_equal(a, b)
    assert a.uns["neighbors"]["params"] == {"n_neighbors": 15, "method": "umap", "random_state": 0,
                                            "metric": "euclidean"}  # fmt: skip
    monkeypatch.setattr(knn_approx, "available", lambda name: False)
    assert nb._choose_algorithm(None, on_gpu=False, n_obs=10**5, metric="euclidean", knn=True) == "brute"


@pytest.mark.parametrize(
    "algorithm,error,match",
    [("kd_tree", ValueError, "algorithm must be one of .* got 'kd_tree'"),
     ("cuml", ValueError, "algorithm='cuml' runs on the GPU .* on the CPU"),
     ("cuvs", ValueError, "algorithm='cuvs' runs on the GPU .* on the CPU")],
)  # fmt: skip
def test_bad_algorithm(pbmc_pca, algorithm, error, match):
    before = pbmc_pca.copy()
    with pytest.raises(error, match=match):
        neighbors(pbmc_pca, algorithm=algorithm)
    assert_adata_equal(pbmc_pca, before)


@pytest.mark.parametrize("name", ["cuml", "cuvs"])
def test_missing_backend_says_what_to_install(name):
    if knn_approx.available(name):
        pytest.skip(f"{name} is installed")
    with pytest.raises(ImportError, match=f"algorithm='{name}' needs .*pip install {name}-cu12"):
        knn_approx.backend(name)
    with pytest.raises(ImportError, match="algorithm='brute'"):
        nb._choose_algorithm(name, on_gpu=True, n_obs=100, metric="euclidean", knn=True)


def test_gpu_pynndescent_and_dense(device, pbmc_pca):
    """GPU data: pynndescent searched on the host gives the CPU graph, back on the GPU; the
    dense knn=False graph equals the CPU one."""
    import cupy as cp

    for kwargs in ({"algorithm": "pynndescent"}, {"knn": False, "method": "gauss"}):
        cpu, gpu = pbmc_pca.copy(), pbmc_pca.copy()
        gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
        neighbors(cpu, **kwargs)
        neighbors(gpu, **kwargs)
        for key in ("distances", "connectivities"):
            g, c = gpu.obsp[key], cpu.obsp[key]
            assert type(g).__module__.startswith("cupy")
            g = g.get()
            assert abs(g - c).max() <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuml", "cuvs"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gpu_rapids_equals_brute(pbmc_pca, name, metric):
    import cupy as cp

    if not knn_approx.available(name):
        pytest.skip(f"{name} is not installed")
    a, b = pbmc_pca.copy(), pbmc_pca.copy()
    for x in (a, b):
        x.obsm["X_pca"] = cp.asarray(x.obsm["X_pca"])
    neighbors(a, algorithm=name, metric=metric)
    neighbors(b, algorithm="brute", metric=metric)
    for key in ("distances", "connectivities"):
        assert abs(a.obsp[key].get() - b.obsp[key].get()).max() <= 1e-6


@pytest.mark.parametrize("method", ["umap", "gauss"])
def test_transformer_names_match_scanpy(pbmc_pca, monkeypatch, method):
    """scanpy's transformer='sklearn' is the exact search; 'pynndescent' is pynndescent with its
    own defaults (not scanpy's default search's settings): the same graph as scanpy's. (scanpy
    fails on 'pynndescent' with method='gauss': its Gaussian kernel rejects the csr_array.)"""
    for name in ("sklearn", "pynndescent") if method == "umap" else ("sklearn",):
        ref, ours = pbmc_pca.copy(), pbmc_pca.copy()
        _scanpy_neighbors(ref, monkeypatch, n_neighbors=10, transformer=name, method=method)
        neighbors(ours, n_neighbors=10, transformer=name, method=method)
        assert ours.uns["neighbors"] == ref.uns["neighbors"]
        tol = UMAP_CONN if method == "umap" else 1e-5  # gauss: float32 kernel weights <= 1 of float32 distances
        assert abs(ours.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= tol, name
        if name == "sklearn":
            brute = pbmc_pca.copy()
            neighbors(brute, n_neighbors=10, algorithm="brute", method=method)
            assert_adata_equal(ours, brute)


def test_transformer_instance_matches_scanpy(pbmc_pca, monkeypatch):
    """An instance brings its own metric (here manhattan and minkowski p=3, which gpu_sc's
    searches lack) and n_neighbors; the UMAP graph equals scanpy's, the distances are the
    exact lists of that metric, metric_kwds are recorded as scanpy records them."""
    from sklearn.neighbors import KNeighborsTransformer

    x = pbmc_pca.obsm["X_pca"].astype(np.float64)
    for metric, kwds, cdist_kw in (("manhattan", {}, {"metric": "cityblock"}),
                                   ("minkowski", {"p": 3}, {"metric": "minkowski", "p": 3})):  # fmt: skip
        ref, ours = pbmc_pca.copy(), pbmc_pca.copy()
        args = {"metric": metric, "metric_kwds": kwds}
        for adata, run in ((ref, lambda a, **kw: _scanpy_neighbors(a, monkeypatch, **kw)), (ours, neighbors)):
            tr = KNeighborsTransformer(n_neighbors=8, metric=metric, p=kwds.get("p", 2))
            run(adata, n_neighbors=30, transformer=tr, **args)  # n_neighbors: the transformer's
        assert ours.uns["neighbors"] == ref.uns["neighbors"]
        assert ours.uns["neighbors"]["params"]["n_neighbors"] == 8
        assert ("metric_kwds" in ours.uns["neighbors"]["params"]) == bool(kwds)
        assert abs(ours.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= UMAP_CONN
        d = ours.obsp["distances"]
        n = ours.n_obs
        assert (d.getnnz(axis=1) == 7).all()
        full = cdist(x, x, **cdist_kw)
        np.fill_diagonal(full, np.inf)
        exact = np.sort(full, axis=1)[:, :7]
        # float64 sums over the 50 dimensions in another order (sklearn's), stored as float32
        assert_close(d.data.reshape(n, 7), exact, dtype=np.float64, n_terms=x.shape[1], out=np.float32)


def test_transformer_on_gpu_data(device, pbmc_pca):
    """GPU data with a host transformer: searched on the host, the graph back on the GPU."""
    import cupy as cp
    from sklearn.neighbors import KNeighborsTransformer

    cpu, gpu = pbmc_pca.copy(), pbmc_pca.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    for adata in (cpu, gpu):
        neighbors(adata, transformer=KNeighborsTransformer(n_neighbors=6, metric="manhattan"), metric="manhattan")
    for key in ("distances", "connectivities"):
        assert type(gpu.obsp[key]).__module__.startswith("cupy")
        assert abs(gpu.obsp[key].get() - cpu.obsp[key]).max() <= 1e-6


class _TooFew:
    """A transformer whose graph lists only the cell itself and its first neighbour."""

    def get_params(self):
        return {"n_neighbors": 5}

    def fit_transform(self, x):
        n = x.shape[0]
        nxt = (np.arange(n) + 1) % n
        return sp.csr_matrix((np.ones(n), (np.arange(n), nxt)), shape=(n, n))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [({"transformer": "annoy"}, ValueError, "unknown transformer 'annoy'"),
     ({"transformer": "sklearn", "algorithm": "brute"}, ValueError, "not both"),
     ({"transformer": "sklearn", "knn": False, "method": "gauss"}, ValueError, "transformer must be None"),
     ({"transformer": object()}, TypeError, "kNN transformer with fit_transform"),
     ({"metric_kwds": {"p": 3}, "algorithm": "brute"}, ValueError, "takes no parameters"),
     ({"transformer": _TooFew()}, ValueError, "gave 1 neighbours besides the cell itself for 700 of 700"),
     ({"transformer": "rapids"}, ValueError, "algorithm='cuml' runs on the GPU")],
)  # fmt: skip
def test_bad_transformer_leaves_adata_unchanged(pbmc_pca, kwargs, error, match):
    before = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 'rapids' is deprecated, as in scanpy
        with pytest.raises(error, match=match):
            neighbors(pbmc_pca, **kwargs)
    assert_adata_equal(pbmc_pca, before)


def test_many_identical_rows_keep_self_first(device):
    """More identical rows (60) than k + MARGIN candidates: each row still lists itself first
    (the CPU's argpartition, the GPU kernel's smallest-index rule and the exact fallback of the
    approximate searches could each leave it out), then the others at distance 0."""
    import cupy as cp

    rng = np.random.default_rng(0)
    x = np.vstack([np.tile(rng.normal(size=(1, 20)), (60, 1)), rng.normal(size=(40, 20))]).astype(np.float32)
    k, rows = 15, np.arange(100)
    exact = np.sort(cdist(x.astype(np.float64), x.astype(np.float64)), axis=1)[:, :k]
    no_candidates = np.full((100, k + 1), -1)  # refine() searches every row exactly
    for ind, dist in (knn(x, k), knn(cp.asarray(x), k), knn_approx.refine(x, no_candidates, k)):
        ind, dist = to_host(ind), to_host(dist)
        np.testing.assert_array_equal(ind[:, 0], rows)
        assert (ind[:, 1:] != rows[:, None]).all()
        assert_close(dist, exact, dtype=np.float64, n_terms=x.shape[1])  # float64 sums over 20 dimensions
        assert (dist[:60] == 0).all() and (ind[:60] < 60).all()
    a = sc.AnnData(np.zeros((100, 1), np.float32), obsm={"X_pca": x})
    neighbors(a, n_neighbors=k)
    d = a.obsp["distances"]
    assert (d.getnnz(axis=1) == k - 1).all() and d.diagonal().max() == 0 and not d[rows, rows].any()


@pytest.mark.parametrize("k", [1, 5, 40])
def test_select_tile_keeps_the_first_k_by_distance_then_index(k):
    """The host merge screens runs of columns before walking them; its lists must still be the k
    smallest (float32 distance, column) of every tile merged so far, whatever the tiles' order:
    ties (integer dots), NaN never entering, the row's own column always first, tiles narrower
    and wider than a run; the transposed merge gives the columns' lists the same way."""
    from gpu_sc._ops.neighbors.select import select_tile, select_tile_columns

    rng = np.random.default_rng(k)
    n_rows, n_cols = 7, 300
    dots = rng.integers(-6, 7, (n_rows, n_cols)).astype(np.float32)
    dots[2, 17] = np.nan
    sq_rows = rng.integers(20, 30, n_rows).astype(np.float32)
    sq_cols = rng.integers(20, 30, n_cols).astype(np.float32)
    row_offset = 150  # row r is column 150 + r
    best_d = np.full((n_rows, k), np.inf, np.float32)
    best_i = np.full((n_rows, k), -1, np.int64)
    for c0, c1 in [(140, 300), (0, 10), (10, 140)]:  # not in column order
        select_tile(np.ascontiguousarray(dots[:, c0:c1]), sq_rows, sq_cols[c0:c1], row_offset, c0, best_d, best_i)
    d2 = (sq_rows[:, None] + sq_cols[None, :]) - np.float32(2) * dots
    for r in range(n_rows):
        d = d2[r].copy()
        d[row_offset + r] = -np.inf
        keep = np.flatnonzero(~np.isnan(d))
        order = keep[np.lexsort((keep, d[keep]))][:k]  # by distance, then column (arrival)
        np.testing.assert_array_equal(best_i[r], order)
        np.testing.assert_array_equal(best_d[r], d[order])
    # the transpose: rows 0..n_cols-1 of another range take the 7 rows above as columns
    col_d = np.full((n_cols, k), np.inf, np.float32)
    col_i = np.full((n_cols, k), -1, np.int64)
    for r0, r1 in [(4, 7), (0, 4)]:
        select_tile_columns(np.ascontiguousarray(dots[r0:r1]), sq_rows[r0:r1], sq_cols, row_offset + r0, col_d, col_i)
    for c in range(n_cols):
        d = d2[:, c]
        keep = np.flatnonzero(~np.isnan(d))
        order = keep[np.lexsort((keep, d[keep]))][:k]
        m = min(k, keep.size)
        np.testing.assert_array_equal(col_i[c, :m], row_offset + order)
        np.testing.assert_array_equal(col_d[c, :m], d[order])


def test_symmetric_host_search_matches_brute_force():
    """The host search takes each pair of row ranges once, merging its tiles into both ranges'
    lists: with 16 ranges of ~19 rows (small tiles), rows repeated up to 5 times (ties at 0, broken
    by index) and k above a range's size, the lists are the brute-force ones."""
    from gpu_sc._ops.neighbors.knn import _pair_rounds

    for n_parts in (2, 4, 16):
        rounds = _pair_rounds(n_parts)
        pairs = [tuple(sorted(p)) for r in rounds for p in r]
        assert len(pairs) == len(set(pairs)) == n_parts * (n_parts - 1) // 2
        assert all(len({i for p in r for i in p}) == n_parts for r in rounds)  # no part twice in a round
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12))
    x = np.concatenate([x, x[:40], x[:20], x[:10], x[:10]])  # 300 rows, some 5 times
    for k in (1, 7, 30):
        ind, dist = knn(x, k, block_bytes=4 * 2048 * 16)  # 16-row tiles: 16 ranges
        ref_i, ref_d = _reference(x, k, "euclidean")
        np.testing.assert_array_equal(ind[:, 0], np.arange(len(x)))
        np.testing.assert_array_equal(ind[:, 1:], ref_i[:, 1:])
        assert_close(dist, ref_d, dtype=np.float64, n_terms=x.shape[1])


def test_host_search_independent_of_threads_and_tiles():
    """Candidates rank by (float32 distance, index): with 60 copies of one row (more ties than
    k + MARGIN candidates) the lists do not depend on the number of threads or the tile size."""
    import numba

    x = np.random.default_rng(1).normal(size=(1200, 6))
    x[-60:] = x[0]
    runs = []
    threads = numba.get_num_threads()
    try:
        for n_threads, block_bytes in ((1, 2**22), (threads, 2**16), (threads, 2**22)):
            numba.set_num_threads(n_threads)
            runs.append(knn(x, 5, block_bytes=block_bytes))
    finally:
        numba.set_num_threads(threads)
    for ind, dist in runs[1:]:
        np.testing.assert_array_equal(ind, runs[0][0])
        np.testing.assert_array_equal(dist, runs[0][1])


def _rows_with_zeros():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 200))
    x[rng.choice(400, 60, replace=False)] = 0
    return x


def test_cosine_zero_rows_do_not_crowd_the_candidates_on_the_gpu(device):
    """The GPU search has its own handling of zero rows: the CPU's neighbours (below) there too."""
    import cupy as cp

    x = _rows_with_zeros()
    ind, dist = (to_host(a) for a in knn(cp.asarray(x), 10, metric="cosine"))
    ref_ind, ref_dist = knn(x, 10, metric="cosine")
    assert_close(dist, ref_dist, dtype=np.float64, n_terms=x.shape[1], scale=1.0)


def test_cosine_zero_rows_do_not_crowd_the_candidates():
    """A zero row is at cosine distance 1 from every row; searched as |u - 0|^2 = 1 (cosine 0.5)
    sixty of them filled the candidate lists of rows whose true neighbours lie beyond 0.5."""
    x = _rows_with_zeros()
    ind, dist = knn(x, 10, metric="cosine")
    norms = np.linalg.norm(x, axis=1)
    u = x / np.where(norms > 0, norms, 1)[:, None]
    d = np.maximum(1 - u @ u.T, 0)
    np.fill_diagonal(d, 0)
    ref = np.sort(d, axis=1)[:, :10]
    assert_close(dist, ref, dtype=np.float64, n_terms=x.shape[1], scale=1.0)


def test_metric_kwds_of_our_metrics_go_to_scikit_learn_as_in_scanpy(pbmc_pca):
    """metric_kwds with euclidean (scanpy hands them to scikit-learn, which runs): scikit-learn's
    exact transformer with them, scanpy's graph (they were refused)."""
    ref = pbmc_pca.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, metric="euclidean", metric_kwds={"p": 2})
    neighbors(pbmc_pca, metric="euclidean", metric_kwds={"p": 2})
    assert abs(pbmc_pca.obsp["distances"] - ref.obsp["distances"]).max() == 0
    assert abs(pbmc_pca.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= 1e-6
    assert pbmc_pca.uns["neighbors"]["params"] == ref.uns["neighbors"]["params"]


def test_more_neighbors_than_cells_like_scanpy(pbmc_pca):
    """n_neighbors above the number of cells becomes 1 + n_obs // 2, as scanpy's rule for very
    small data: the same neighbour lists, graph and recorded n_neighbors as scanpy's."""
    small = pbmc_pca[:12].copy()
    ref = small.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(ref, n_neighbors=15)
    neighbors(small, n_neighbors=15)
    assert small.uns["neighbors"]["params"] == ref.uns["neighbors"]["params"]
    assert small.uns["neighbors"]["params"]["n_neighbors"] == 7
    d, d_ref = small.obsp["distances"], ref.obsp["distances"]
    assert (d.getnnz(axis=1) == 6).all()
    assert ((d != 0).astype(int) != (d_ref != 0).astype(int)).nnz == 0  # same neighbours
    assert_close(d, d_ref, dtype=np.float32, n_terms=small.obsm["X_pca"].shape[1])
    assert abs(small.obsp["connectivities"] - ref.obsp["connectivities"]).max() <= UMAP_CONN
