"""tl.umap / tl.leiden / diffmap / dpt / paga / draw_graph: scanpy on the CPU (rapids-singlecell
for a GPU graph if importable), same keys and results as scanpy on the same graph."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import pytest
import scanpy as sc
from anndata import ImplicitModificationWarning
from _helpers import assert_adata_equal, assert_same

from gpu_sc.preprocessing._neighbors import neighbors
from gpu_sc.tools import _delegate, diffmap, dpt, draw_graph, leiden, paga, umap


@pytest.fixture
def graph(pbmc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(pbmc)
        sc.pp.log1p(pbmc)
        sc.pp.pca(pbmc)
    del pbmc.obsm["X_umap"]
    neighbors(pbmc, n_neighbors=15)
    return pbmc


LEIDEN = {"flavor": "igraph", "n_iterations": 2, "directed": False, "random_state": 0}


def test_leiden_same_as_scanpy(graph):
    ref = graph.copy()
    leiden(graph, **LEIDEN)
    sc.tl.leiden(ref, **LEIDEN)
    assert graph.obs["leiden"].dtype == "category"
    pd.testing.assert_series_equal(graph.obs["leiden"], ref.obs["leiden"])  # same labels, same categories
    assert graph.uns["leiden"] == ref.uns["leiden"]
    out = leiden(graph, key_added="cl", resolution=0.5, copy=True, **LEIDEN)
    assert "cl" in out.obs and "cl" not in graph.obs and "cl" in out.uns


@pytest.mark.parametrize("kwargs", [
    {"flavor": "igraph", "n_iterations": -1, "resolution": 0.4, "random_state": 3, "key_added": "cl"},
    {"flavor": "igraph", "use_weights": False, "obsp": "distances", "beta": 0.05},
    {"flavor": "leidenalg", "n_iterations": 2},  # scanpy's own call
])
def test_leiden_keywords_same_as_scanpy(cliques, kwargs):
    ref, got = cliques.copy(), cliques.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.leiden(ref, **kwargs)
        leiden(got, **kwargs)
    key = kwargs.get("key_added", "leiden")
    pd.testing.assert_series_equal(got.obs[key], ref.obs[key])
    assert got.uns[key] == ref.uns[key]


def test_umap_same_keys_as_scanpy(graph):
    ref = graph.copy()
    umap(graph, maxiter=30, random_state=0)
    sc.tl.umap(ref, maxiter=30, random_state=0)
    assert graph.obsm["X_umap"].shape == (graph.n_obs, 2)
    assert_same(graph.obsm["X_umap"], ref.obsm["X_umap"])  # scanpy's umap on the host, same graph and seed
    assert set(graph.uns["umap"]) == set(ref.uns["umap"])


def test_gpu_graph(device, graph):
    """A GPU graph: rapids-singlecell if importable, else scanpy on the host; results back."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    gpu = graph.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    for key in ("distances", "connectivities"):
        gpu.obsp[key] = cpsp.csr_matrix(gpu.obsp[key])
    leiden(gpu, **LEIDEN)
    umap(gpu, maxiter=30)
    assert "leiden" in gpu.obs and gpu.obsm["X_umap"].shape == (graph.n_obs, 2)
    assert type(gpu.obsm["X_umap"]).__module__.startswith("cupy")
    if _delegate._rsc() is None:  # scanpy on the host: the CPU graph's results, row for row
        leiden(graph, **LEIDEN)
        umap(graph, maxiter=30)
        pd.testing.assert_series_equal(gpu.obs["leiden"], graph.obs["leiden"])
        np.testing.assert_array_equal(cp.asnumpy(gpu.obsm["X_umap"]), graph.obsm["X_umap"])


def test_gpu_graph_keywords_rapids_lacks_go_to_scanpy(device, graph, monkeypatch):
    """rapids-singlecell's leiden takes no flavor (nor directed): such a call goes to scanpy on
    the host instead of raising TypeError there (the CLI passes flavor='igraph'); a call it takes
    still goes to it."""
    import types

    import cupyx.scipy.sparse as cpsp

    calls = []

    def rsc_leiden(adata, resolution=1.0, *, key_added="leiden", neighbors_key=None, copy=False):
        calls.append(resolution)
        adata.obs[key_added] = "0"

    monkeypatch.setattr(_delegate, "_rsc", lambda: types.SimpleNamespace(tl=types.SimpleNamespace(leiden=rsc_leiden)))
    gpu = graph.copy()
    gpu.obsp["connectivities"] = cpsp.csr_matrix(gpu.obsp["connectivities"])
    leiden(gpu, flavor="leidenalg", directed=True, resolution=0.7)
    assert calls == [] and gpu.obs["leiden"].nunique() > 1  # scanpy's clusters, on the host
    leiden(gpu, resolution=0.5, key_added="r")
    assert calls == [0.5]


@pytest.fixture
def cliques(pbmc):
    """A graph of many components (>= 5, with some too small for an eigen-solve after pruning):
    900 cells resampled from 60, so each cell's neighbours are copies of the same source cell."""
    import gpu_sc as gsc

    few = gsc.datasets.resample(pbmc[:60].copy(), 900, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(few)
        sc.pp.log1p(few)
        sc.pp.pca(few, n_comps=20)
    neighbors(few, n_neighbors=10)
    return few


def test_spectral_start_is_umap_learns(cliques):
    """The spectral start, bit for bit and in the same random state afterwards, for one, a few
    (corner placement) and many (centroid layout) components."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from umap.spectral import spectral_layout
    from umap.umap_ import noisy_scale_coords

    from gpu_sc.tools._umap_init import pruned_graph, spectral_init

    x = cliques.obsm["X_pca"]
    full = pruned_graph(cliques.obsp["connectivities"], 200)
    n_comp, labels = connected_components(full)
    assert n_comp >= 5
    # add components too small for an eigen-solve (a lone cell, a pair), laid out uniformly
    pair = sp.csr_matrix(np.array([[0, 0.5], [0.5, 0]], dtype=full.dtype))
    full = sp.block_diag([full, sp.csr_matrix((1, 1), dtype=full.dtype), pair], format="csr")
    x = np.vstack([x, x[:3] + 1])
    labels = np.concatenate([labels, [n_comp, n_comp + 1, n_comp + 1]])
    keep = [np.flatnonzero(np.isin(labels, c)) for c in ([0], [0, 1, n_comp + 1], range(n_comp + 2))]
    for cells in keep:
        graph = sp.coo_matrix(full[cells][:, cells])
        for dim in (2, 3):
            ours, theirs = np.random.RandomState(7), np.random.RandomState(7)
            got = spectral_init(graph, x[cells], dim, ours)
            ref = noisy_scale_coords(spectral_layout(x[cells], graph, dim, theirs), theirs, max_coord=10,
                                     noise=0.0001)
            assert_same(got, ref)
            assert ours.randint(1 << 30) == theirs.randint(1 << 30)


def test_umap_many_components_same_as_scanpy(cliques):
    for kwargs in ({}, {"random_state": 5, "min_dist": 0.2, "key_added": "u2"}, {"random_state": None}):
        ref, got = cliques.copy(), cliques.copy()
        np.random.seed(0)
        sc.tl.umap(ref, maxiter=20, **kwargs)
        np.random.seed(0)
        umap(got, maxiter=20, **kwargs)
        key = kwargs.get("key_added", "umap")
        assert_same(got.obsm["X_" + key if key == "umap" else key], ref.obsm["X_" + key if key == "umap" else key])
        assert got.uns[key] == ref.uns[key]
        assert_same(got.obsp["connectivities"], ref.obsp["connectivities"])


def test_umap_on_x_where_scanpy_reads_x(cliques):
    """50 genes or fewer, or a graph of n_pcs=0: scanpy's representation is X (X_pca is there
    too). The host copy once held no X, so the spectral start fell back to umap-learn's, whose
    component layout draws from numpy's global state: other coordinates than scanpy's, and other
    ones on each call."""
    few = cliques[:, :30].copy()
    few.X = few.X.toarray()
    cases = [few.copy(), cliques.copy()]
    neighbors(cases[0], n_neighbors=10)  # 30 genes: X
    neighbors(cases[1], n_neighbors=10, n_pcs=0)
    for case in cases:
        ref, got = case.copy(), case.copy()
        np.random.seed(0)
        sc.tl.umap(ref, maxiter=20)
        np.random.seed(1)  # the result must not depend on numpy's global state
        umap(got, maxiter=20)
        assert_same(got.obsm["X_umap"], ref.obsm["X_umap"])


def test_umap_keeps_the_pca_scanpy_runs(graph):
    """A graph built without use_rep, X_pca since removed: scanpy's umap runs a PCA first and
    writes its loadings (varm['PCs']) as well as obsm and uns; they must come back from the host
    copy too."""
    for key, where in (("X_pca", graph.obsm), ("PCs", graph.varm), ("pca", graph.uns)):
        del where[key]
    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        umap(graph, maxiter=5)
        sc.tl.umap(ref, maxiter=5)
    assert set(graph.varm) == set(ref.varm) == {"PCs"}
    assert set(graph.obsm) == set(ref.obsm)
    np.testing.assert_array_equal(graph.varm["PCs"], ref.varm["PCs"])
    np.testing.assert_array_equal(graph.obsm["X_umap"], ref.obsm["X_umap"])


def _trajectory(lib, a):
    """diffmap, dpt from the first cell, paga of the published clusters, an 'fr' layout."""
    lib.tl.diffmap(a, n_comps=10)
    a.uns["iroot"] = 0
    lib.tl.dpt(a)
    lib.tl.paga(a, groups="louvain")
    lib.tl.draw_graph(a, layout="fr", random_state=0, init_pos="paga")


def test_trajectory_tools_same_as_scanpy(graph):
    """scanpy's own calls on the same graph: the same keys and values; X is not read."""
    import gpu_sc as gsc

    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.paga(ref, groups="louvain")  # draw_graph's init_pos='paga' needs paga's positions
        sc.pl.paga(ref, show=False)
        _trajectory(sc, ref)
        got = graph.copy()
        sc.tl.paga(got, groups="louvain")
        sc.pl.paga(got, show=False)
        got.X = None  # none of them reads X
        _trajectory(gsc, got)
    for key in ("X_diffmap", "X_draw_graph_fr"):
        assert_same(got.obsm[key], ref.obsm[key])
    assert_same(got.uns["diffmap_evals"], ref.uns["diffmap_evals"])
    pd.testing.assert_series_equal(got.obs["dpt_pseudotime"], ref.obs["dpt_pseudotime"])
    assert_same(got.uns["paga"]["connectivities"].toarray(), ref.uns["paga"]["connectivities"].toarray())
    assert set(got.uns) == set(ref.uns)


def test_tool_on_a_view_warns_once_at_the_callers_line(graph):
    """A delegated tool on a view makes it actual once, with the warning at the user's line
    (anndata's warning, once per attribute written back, named gpu_sc's line); the parent is
    untouched and the result is the actual AnnData's."""
    ref = graph[:400].copy()
    diffmap(ref)
    view = graph[:400]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diffmap(view)
    ours = [w for w in caught if "view" in str(w.message).lower()]
    assert [(w.category, w.filename) for w in ours] == [(ImplicitModificationWarning, __file__)]
    assert str(ours[0].message).startswith("diffmap: writing results into a view")
    assert not view.is_view and "X_diffmap" not in graph.obsm
    assert_same(view.obsm["X_diffmap"], ref.obsm["X_diffmap"])
    view = graph[:400]  # leiden's own igraph path too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leiden(view, **LEIDEN)
    assert [(w.category, w.filename) for w in caught if "view" in str(w.message)] == [
        (ImplicitModificationWarning, __file__)]  # fmt: skip
    assert "leiden" in view.obs and "leiden" not in graph.obs


def test_trajectory_tools_positionals_and_copy(graph):
    """scanpy's old positionals (a FutureWarning) and copy=True, which leaves the input as it was."""
    with pytest.warns(FutureWarning, match="no longer positional"):
        out = diffmap(graph, 5, None, 0, True)
    assert out.obsm["X_diffmap"].shape == (graph.n_obs, 5) and "X_diffmap" not in graph.obsm
    out.uns["iroot"] = 3
    dpt(out, 5)
    assert out.obs["dpt_pseudotime"].iloc[3] == 0
    assert paga(out, "louvain", copy=True).uns["paga"]["connectivities"].shape == (out.obs["louvain"].nunique(),) * 2


def test_trajectory_tools_on_a_gpu_graph(device, graph):
    """A GPU graph: results on the host's obs/uns, embeddings back on the GPU."""
    import cupy as cp
    import cupyx.scipy.sparse as cpsp

    gpu = graph.copy()
    gpu.obsm["X_pca"] = cp.asarray(gpu.obsm["X_pca"])
    for key in ("distances", "connectivities"):
        gpu.obsp[key] = cpsp.csr_matrix(gpu.obsp[key])
    _trajectory_tools(gpu)
    assert type(gpu.obsm["X_tsne"]).__module__.startswith("cupy")  # X_pca lives on the GPU
    assert type(gpu.obsm["X_diffmap"]).__module__.startswith("cupy")
    assert type(gpu.obsm["X_draw_graph_fr"]).__module__.startswith("cupy")
    assert gpu.obs["dpt_pseudotime"].notna().all() and "paga" in gpu.uns
    if _delegate._rsc() is None:  # scanpy on the host: the CPU graph's results, row for row
        cpu = graph.copy()
        _trajectory_tools(cpu)
        for key in ("X_tsne", "X_diffmap", "X_draw_graph_fr"):
            np.testing.assert_array_equal(cp.asnumpy(gpu.obsm[key]), cpu.obsm[key], err_msg=key)
        pd.testing.assert_series_equal(gpu.obs["dpt_pseudotime"], cpu.obs["dpt_pseudotime"])
        np.testing.assert_array_equal(gpu.uns["paga"]["connectivities"].toarray(),
                                      cpu.uns["paga"]["connectivities"].toarray())  # fmt: skip


def _trajectory_tools(adata) -> None:
    import gpu_sc as gsc

    diffmap(adata)
    adata.uns["iroot"] = 0
    dpt(adata)
    paga(adata, "louvain")
    draw_graph(adata, "fr", random_state=0)
    gsc.tl.tsne(adata, n_pcs=10, random_state=0)


def test_umap_pca_of_the_highly_variable_genes_where_x_pca_is_gone(pbmc):
    """scanpy's umap reruns PCA where neighbors named no representation and X_pca is gone: on the
    highly variable genes, as scanpy (the host copy once had no var columns: every gene)."""
    import gpu_sc as gsc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(pbmc)
        sc.pp.log1p(pbmc)
        sc.pp.highly_variable_genes(pbmc, n_top_genes=300)
        sc.pp.pca(pbmc)
        sc.pp.neighbors(pbmc)
        del pbmc.obsm["X_pca"], pbmc.obsm["X_umap"]
        ref = pbmc.copy()
        sc.tl.umap(ref, maxiter=10)
        gsc.tl.umap(pbmc, maxiter=10)
    assert_same(pbmc.obsm["X_pca"], ref.obsm["X_pca"])
    assert pbmc.uns["pca"]["params"] == ref.uns["pca"]["params"]


@pytest.mark.parametrize("name", ["umap", "diffmap", "paga"])
def test_scanpy_swapped_for_ours_globally(graph, monkeypatch, name):
    """`sc.tl.x = gsc.tl.x` (a global swap, as scanpy's suite runs with ours): our delegation
    calls scanpy's own function, not itself (it recursed until Python's limit)."""
    import gpu_sc as gsc

    kwargs = {"umap": {"maxiter": 5}, "diffmap": {}, "paga": {"groups": "louvain"}}[name]
    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(sc.tl, name)(ref, **kwargs)
        monkeypatch.setattr(sc.tl, name, getattr(gsc.tl, name))
        sc.tl.__dict__[name](graph, **kwargs)
    key = {"umap": "umap", "diffmap": "diffmap_evals", "paga": "paga"}[name]
    assert key in graph.uns and set(graph.uns) == set(ref.uns)


def test_paga_again_dpt_from_xroot_and_uns_that_cannot_be_copied(graph):
    """A second paga updates scanpy's uns['paga'] in place: ours too (it kept the first one);
    dpt finds a root given as an expression profile (var['xroot'], uns['xroot']) among X's rows
    (the host copy had no X); an uns entry that cannot be deep-copied is no obstacle."""
    import threading

    import gpu_sc as gsc

    graph.obs["bulk"] = graph.obs["bulk_labels"].astype(str).astype("category")
    ref = graph.copy()
    graph.uns["lock"] = ref.uns["lock"] = threading.Lock()  # (anndata's own copy cannot copy it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lib, a in ((sc, ref), (gsc, graph)):
            lib.tl.paga(a, groups="louvain")
            lib.tl.paga(a, groups="bulk")
    assert graph.uns["paga"]["groups"] == ref.uns["paga"]["groups"] == "bulk"
    assert_same(graph.uns["paga"]["connectivities"].toarray(), ref.uns["paga"]["connectivities"].toarray())
    del graph.uns["lock"]
    root = graph.X[[7]].toarray().ravel()
    for where in ("var", "uns"):
        a, b = graph.copy(), graph.copy()
        for x in (a, b):
            x.X = x.X.toarray()  # (scanpy's search for the root fails on sparse rows)
            if where == "var":
                x.var["xroot"] = root
            else:
                x.uns["xroot"] = root
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.dpt(a)
            gsc.tl.dpt(b)
        assert b.obs["dpt_pseudotime"].iloc[7] == 0
        pd.testing.assert_series_equal(b.obs["dpt_pseudotime"], a.obs["dpt_pseudotime"])


def _knn_overlap(a, b, k: int = 15) -> float:
    """Mean share of each cell's k nearest neighbours that two embeddings have in common."""
    from sklearn.neighbors import NearestNeighbors

    ia, ib = (NearestNeighbors(n_neighbors=k + 1).fit(e).kneighbors(e)[1][:, 1:] for e in (a, b))
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ia, ib, strict=True)]))


def test_tsne_and_embedding_density_as_scanpy(graph):
    """scanpy's own calls on a host copy: t-SNE on X_pca (X not copied), the density of the cells
    in the umap per group (scanpy's values exactly). t-SNE amplifies round-off: scanpy's own
    embedding of an AnnData and of a copy of it differ by up to 38 here (BLAS results depend on
    where an array lies in memory), so ours is held to what such two share: their neighbours."""
    from anndata import AnnData

    import gpu_sc as gsc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.umap(graph, maxiter=10)
        ref = graph.copy()
        bare = AnnData(obs=graph.obs.copy(), var=graph.var[[]].copy(), obsm=dict(graph.obsm.items()))
        for lib, a in ((sc, ref), (sc, bare), (gsc, graph)):
            lib.tl.tsne(a, n_pcs=10, perplexity=20, random_state=0)
        for lib, a in ((sc, ref), (gsc, graph)):
            lib.tl.embedding_density(a, "umap", groupby="louvain")
    scanpys = _knn_overlap(ref.obsm["X_tsne"], bare.obsm["X_tsne"])
    assert graph.obsm["X_tsne"].shape == (graph.n_obs, 2)
    assert _knn_overlap(graph.obsm["X_tsne"], ref.obsm["X_tsne"]) >= min(0.5, scanpys - 0.1), scanpys
    assert graph.uns["tsne"] == ref.uns["tsne"]
    pd.testing.assert_series_equal(graph.obs["umap_density_louvain"], ref.obs["umap_density_louvain"])
    assert set(graph.uns) == set(ref.uns)


def test_delegation_follows_scanpy_sanitize_and_n_pcs(graph):
    """scanpy's tools make text columns of var categorical (sanitize_anndata): ours too (var was
    not copied back); scanpy's settings.N_PCS decides whether t-SNE reads X, as in scanpy (ours
    read 50 and gave scanpy a copy without X: AttributeError)."""
    import gpu_sc as gsc

    graph.var["kind"] = np.where(np.arange(graph.n_vars) % 2 == 0, "a", "b")
    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.paga(ref, groups="louvain")
        gsc.tl.paga(graph, groups="louvain")
    assert ref.var["kind"].dtype == "category" and graph.var["kind"].dtype == "category"
    small = graph[:200, :80].copy()
    want = small.copy()
    n_pcs, sc.settings.N_PCS = sc.settings.N_PCS, 100  # (a property: monkeypatch cannot undo it)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.tsne(want, random_state=0)
            gsc.tl.tsne(small, random_state=0)
    finally:
        sc.settings.N_PCS = n_pcs
    assert small.obsm["X_tsne"].shape == want.obsm["X_tsne"].shape
    assert small.uns["tsne"] == want.uns["tsne"]


def _louvain_pair(graph, got):
    """scanpy's and our Louvain (flavor='igraph', whose multilevel draws from Python's `random`:
    seeded alike for both) on `graph` and `got` (its copy, maybe with the graph on the GPU)."""
    import random

    import gpu_sc as gsc

    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random.seed(0)
        sc.tl.louvain(ref, 0.5, flavor="igraph", key_added="lv")
        random.seed(0)
        with pytest.warns(FutureWarning, match="no longer positional"):
            gsc.tl.louvain(got, 0.5, 0, None, "lv", flavor="igraph")
    pd.testing.assert_series_equal(got.obs["lv"], ref.obs["lv"])
    assert got.uns["lv"] == ref.uns["lv"]


def test_louvain_same_as_scanpy(graph):
    """Also: the default flavor needs the louvain package; without it ours raises scanpy's error."""
    import gpu_sc as gsc

    _louvain_pair(graph, graph.copy())
    try:
        import louvain  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="louvain"):
            gsc.tl.louvain(graph.copy())


def test_louvain_on_a_gpu_graph(device, graph):
    """Also an `adjacency` on the GPU: scanpy's igraph reads a host copy of it."""
    import random

    import cupyx.scipy.sparse as cpsp

    import gpu_sc as gsc

    got = graph.copy()
    for key in ("distances", "connectivities"):
        got.obsp[key] = cpsp.csr_matrix(got.obsp[key])
    _louvain_pair(graph, got)
    ref = graph.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random.seed(1)
        sc.tl.louvain(ref, flavor="igraph", adjacency=graph.obsp["distances"], key_added="adj")
        random.seed(1)
        gsc.tl.louvain(got, flavor="igraph", adjacency=got.obsp["distances"], key_added="adj")
    pd.testing.assert_series_equal(got.obs["adj"], ref.obs["adj"])


def _paga_pair(graph):
    """The graph with scanpy's paga of the published clusters, and a second one from 10 neighbours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.paga(graph, groups="louvain")
        other = graph.copy()
        neighbors(other, n_neighbors=10)
        sc.tl.paga(other, groups="louvain")
    return graph, other


def test_paga_summaries_same_as_scanpy(graph, monkeypatch):
    """Degrees, entropies and path comparison are scanpy's own, also with ours swapped into scanpy."""
    import gpu_sc as gsc

    a, b = _paga_pair(graph)
    want = (sc.tl.paga_degrees(a), sc.tl.paga_expression_entropies(a), sc.tl.paga_compare_paths(a, b, "connectivities_tree"))
    for name in ("paga_degrees", "paga_expression_entropies", "paga_compare_paths"):
        monkeypatch.setattr(sc.tl, name, getattr(gsc.tl, name))  # scanpy's suite swaps them so
    got = (gsc.tl.paga_degrees(a), gsc.tl.paga_expression_entropies(a), gsc.tl.paga_compare_paths(a, b, "connectivities_tree"))
    assert got[0] == want[0] and len(got[0]) == a.obs["louvain"].nunique()
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    assert got[2] == want[2] and got[2].n_paths > 0  # the trees have leaves (the full graphs none: NaN)
    with pytest.raises(TypeError, match="expected an AnnData, got ndarray for adata2"):
        gsc.tl.paga_compare_paths(a, np.zeros(3))


def test_paga_summaries_on_the_gpu(device, graph):
    """X and the PAGA graph on the GPU: scanpy's summaries read host copies; the input stays as it was."""
    import cupyx.scipy.sparse as cpsp

    import gpu_sc as gsc

    a, b = _paga_pair(graph)
    want = (sc.tl.paga_degrees(a), sc.tl.paga_expression_entropies(a), sc.tl.paga_compare_paths(a, b, "connectivities_tree"))
    for x in (a, b):
        x.X = cpsp.csr_matrix(x.X)
        for key in ("connectivities", "connectivities_tree"):
            x.uns["paga"][key] = cpsp.csr_matrix(x.uns["paga"][key])
    got = (gsc.tl.paga_degrees(a), gsc.tl.paga_expression_entropies(a), gsc.tl.paga_compare_paths(a, b, "connectivities_tree"))
    assert got[0] == want[0]
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    assert got[2] == want[2] and got[2].n_paths > 0
    assert type(a.X).__module__.startswith("cupyx") and type(a.uns["paga"]["connectivities"]).__module__.startswith("cupyx")


def test_sim_is_scanpys(tmp_path):
    import gpu_sc as gsc

    kwargs = dict(tmax=20, nrRealizations=2, seed=0)
    got = gsc.tl.sim("toggleswitch", writedir=tmp_path / "ours", **kwargs)
    want = sc.tl.sim("toggleswitch", writedir=tmp_path / "scanpy", **kwargs)
    np.testing.assert_array_equal(got.X, want.X)
    assert got.shape == (20, 2) and set(got.uns) == set(want.uns)


@pytest.mark.parametrize(("tool", "kw"), [(umap, {"min_dsit": 0.3}), (diffmap, {"n_comp": 3}),
                                          (paga, {"group": "x"}), (dpt, {"n_dc": 3})])  # fmt: skip
def test_a_misspelt_keyword_is_refused_before_any_work(graph, tool, kw, monkeypatch):
    """scanpy's TypeError, before the host copy and umap's spectral start (a pass over the graph),
    naming the keywords scanpy's tool takes; the AnnData unchanged."""
    import gpu_sc.tools._delegate as delegate

    def no_copy(*args, **kwargs):
        raise AssertionError("the host copy was made before the keywords were checked")

    monkeypatch.setattr(delegate, "host_copy", no_copy)
    before = graph.copy()
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{next(iter(kw))}' \(the keywords are scanpy's"):
        tool(graph, **kw)
    assert_adata_equal(graph, before)


@pytest.mark.parametrize(("tool", "kw", "err", "match"), [
    (leiden, {"restrict_to": ("nope", ["x"])}, KeyError, r"restrict_to names obs column 'nope', which adata.obs lacks"),
    (leiden, {"restrict_to": "bulk_labels"}, ValueError, r"restrict_to must be \(an obs column, a list of its"),
    (umap, {"init_pos": "X_nope"}, KeyError, r"init_pos='X_nope' is neither 'spectral', 'random' nor 'paga' nor a"),
    (paga, {"groups": "part"}, ValueError, r"adata.obs\['part'\] has 100 cells in no group \(NaN\)"),
], ids=["restrict-to-column", "restrict-to-shape", "init-pos", "paga-nan"])  # fmt: skip
def test_named_inputs_are_checked_before_any_work(graph, tool, kw, err, match, monkeypatch):
    """An obs column or obsm key a keyword names, checked before the host copy: scanpy gave a bare
    KeyError, an UnboundLocalError (umap) and igraph's 'Invalid vertex ID' (paga); data unchanged."""
    import gpu_sc.tools._delegate as delegate

    graph.obs["part"] = graph.obs["bulk_labels"].astype(str).where(np.arange(graph.n_obs) % 7 > 0)

    def no_copy(*args, **kwargs):
        raise AssertionError("the host copy was made before the inputs were checked")

    monkeypatch.setattr(delegate, "host_copy", no_copy)
    before = graph.copy()
    with pytest.raises(err, match=match):
        tool(graph, **kw)
    assert_adata_equal(graph, before)


def test_umap_of_a_cosine_graph_same_as_scanpy(cliques):
    """The spectral start of a graph of many components places them by the graph's own metric
    (umap-learn's component layout reads it): a cosine graph's embedding is scanpy's too."""
    graph = cliques.copy()
    neighbors(graph, n_neighbors=10, metric="cosine")
    ref, got = graph.copy(), graph.copy()
    sc.tl.umap(ref, maxiter=20, random_state=0)
    umap(got, maxiter=20, random_state=0)
    assert_same(got.obsm["X_umap"], ref.obsm["X_umap"])


def test_umap_on_x_with_unsigned_index_arrays_as_scanpy(pbmc):
    """A graph on X (<= 50 genes) whose X some writer stored with unsigned index arrays: our
    spectral start refuses that X, so scanpy's own start runs, as scanpy does."""
    a = pbmc[:, :40].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    neighbors(a, n_neighbors=10)
    a.X.indptr = a.X.indptr.astype(np.uint64)
    ref = a.copy()
    ref.X.indptr = ref.X.indptr.astype(np.uint64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.umap(ref, maxiter=20)
    umap(a, maxiter=20)
    assert_same(a.obsm["X_umap"], ref.obsm["X_umap"])


def test_embedding_density_of_another_basis_as_scanpy():
    """basis='pca' (beside an X_umap it must not read): scanpy's obs['pca_density'], exactly."""
    from anndata import AnnData

    import gpu_sc as gsc

    rng = np.random.default_rng(0)
    obsm = {"X_pca": rng.normal(size=(120, 3)), "X_umap": rng.normal(size=(120, 2)) * 5}
    ref, got = (AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(120)]), obsm=dict(obsm)) for _ in range(2))
    sc.tl.embedding_density(ref, "pca")
    gsc.tl.embedding_density(got, "pca")
    assert "umap_density" not in got.obs
    pd.testing.assert_series_equal(got.obs["pca_density"], ref.obs["pca_density"])
