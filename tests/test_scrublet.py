"""scrublet / scrublet_simulate_doublets against scanpy's (same seed: same doublets, scores and
calls), on the bundled pbmc4k half and, where ../shared/data has it, the hgmm barnyard; the GPU
path (device fixture) against the CPU; bad input refused with the data unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import assert_adata_equal, to_host
from scipy.stats import spearmanr

import gpu_sc as gsc
from gpu_sc.preprocessing._scrublet import _score, scrublet, scrublet_simulate_doublets
from gpu_sc.preprocessing._scrublet._simulate import sample_without_replacement
from gpu_sc.preprocessing._scrublet._threshold import threshold_minimum

BARNYARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "hgmm_1k_v3"
UNS_KEYS = {"doublet_scores_sim", "doublet_parents", "parameters", "threshold"}


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _agreement(ref, got) -> tuple[float, float]:
    """(Spearman of the doublet scores, share of cells with the same call)."""
    rho = spearmanr(ref.obs["doublet_score"], got.obs["doublet_score"])[0]
    same = np.mean(ref.obs["predicted_doublet"].to_numpy() == got.obs["predicted_doublet"].to_numpy())
    return rho, same


def _sim_neighbours(adata, scores) -> np.ndarray:
    """The number of simulated doublets among a cell's k_adj neighbours behind its `scores`
    (scrublet's Bayesian score ld = q rho / r / (1 - rho - q (1 - rho - rho / r)) solved for
    q = (n + 1) / (k_adj + 2)): a whole number."""
    uns = adata.uns["scrublet"]
    rho, k = uns["parameters"]["expected_doublet_rate"], uns["parameters"]["n_neighbors"]
    r = len(uns["doublet_scores_sim"]) / adata.n_obs
    k_adj = round(k * (1 + r))
    q = scores * (1 - rho) / (rho / r + scores * (1 - rho - rho / r))
    return q * (k_adj + 2) - 1


@pytest.fixture(scope="module")
def pbmc4k_runs():
    """scanpy's and our scrublet on the bundled 2,170 x 33,694 PBMCs, default parameters."""
    adata = gsc.datasets.pbmc4k_half()
    ref, got = adata.copy(), adata.copy()
    _quiet(sc.pp.scrublet, ref, random_state=0)
    _quiet(scrublet, got, random_state=0)
    return adata, ref, got


def test_matches_scanpy_pbmc4k(pbmc4k_runs):
    adata, ref, got = pbmc4k_runs
    rho, same = _agreement(ref, got)
    assert rho >= 0.98 and same >= 0.98, (rho, same)
    # the same doublets, and (exact embedding up to round-off) the same neighbour counts
    assert set(got.uns["scrublet"]) == set(ref.uns["scrublet"]) == UNS_KEYS
    np.testing.assert_array_equal(got.uns["scrublet"]["doublet_parents"], ref.uns["scrublet"]["doublet_parents"])
    assert got.uns["scrublet"]["parameters"] == ref.uns["scrublet"]["parameters"]
    assert np.mean(got.obs["doublet_score"].to_numpy() == ref.obs["doublet_score"].to_numpy()) > 0.99
    # seed 0 here is the rare run where a near-duplicate doublet tips scanpy into leaving every row out
    # of its own list (see _score.search): each doublet's score is one neighbour higher here, the
    # threshold moves (0.277 against 0.217) and 11 of 2,170 calls differ
    sim_ref, sim_got = ref.uns["scrublet"]["doublet_scores_sim"], got.uns["scrublet"]["doublet_scores_sim"]
    assert spearmanr(sim_ref, sim_got)[0] > 0.999
    assert got.obs["predicted_doublet"].dtype == bool and got.obs["doublet_score"].dtype == np.float64
    # only the result keys were added
    assert list(got.obs.columns) == [*adata.obs.columns, "doublet_score", "predicted_doublet"]
    assert got.var.equals(adata.var) and (got.X != adata.X).nnz == 0


def test_threshold_minimum_matches_skimage():
    skimage_filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(50, 3000))
        x = np.r_[rng.gamma(2, 0.02, n), rng.normal(rng.uniform(0.2, 0.8), 0.1, int(rng.integers(1, n)))]
        if trial % 3 == 0:
            x = np.round(x, 2)  # plateaus and empty bins
        try:
            ref = skimage_filters.threshold_minimum(x)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                threshold_minimum(x)
            continue
        got = threshold_minimum(x)
        assert got == ref and type(got) is type(ref)  # numpy's float64: scanpy's uns['scrublet']['threshold']
    for one_mode in (np.full(100, 0.3), np.r_[np.zeros(50), np.ones(5)]):
        with pytest.raises(RuntimeError, match="two maxima"):
            skimage_filters.threshold_minimum(one_mode)
        with pytest.raises(RuntimeError, match="two maxima"):
            threshold_minimum(one_mode)


def test_pairs_are_scikit_learns_draws():
    random = pytest.importorskip("sklearn.utils.random")
    # permutation (0.01 < ratio < 0.99), tracking selection (ratio < 0.01, repeats redrawn),
    # reservoir sampling (ratio >= 0.99)
    # (the state after the draws too: scanpy draws the subsampling from the same RandomState)
    for n_pop, n in [(2500, 100), (22500, 300), (4_708_900, 4340), (10**10, 200_000), (1000, 150), (9, 9),
                     (100, 99)]:  # fmt: skip
        rs_ref, rs_got = np.random.RandomState(3), np.random.RandomState(3)
        ref = random.sample_without_replacement(n_pop, n, random_state=rs_ref)
        np.testing.assert_array_equal(sample_without_replacement(n_pop, n, rs_got), ref)
        assert rs_got.randint(2**31) == rs_ref.randint(2**31)


@pytest.mark.parametrize("subsampling", [1.0, 0.5])
def test_simulate_doublets_matches_scanpy(pbmc, subsampling):
    kw = dict(sim_doublet_ratio=1.5, synthetic_doublet_umi_subsampling=subsampling, random_seed=4)
    np.random.seed(11)  # below 1, scanpy draws the totals' correction from NumPy's global generator; ours too
    ref = sc.pp.scrublet_simulate_doublets(pbmc, **kw)
    np.random.seed(11)
    got = scrublet_simulate_doublets(pbmc, **kw)
    assert got.shape == ref.shape == (1050, pbmc.n_vars)
    np.testing.assert_array_equal(got.obsm["doublet_parents"], ref.obsm["doublet_parents"])
    assert sp.issparse(got.X) and got.X.format == ref.X.format == "csc"  # (it was CSR)
    np.testing.assert_array_equal(to_host(got.X), to_host(ref.X))  # the same binomial draws
    assert got.X.dtype == ref.X.dtype and got.obs["n_counts"].dtype == ref.obs["n_counts"].dtype  # int64 if thinned
    assert got.uns["scrublet"] == ref.uns["scrublet"]
    np.testing.assert_array_equal(got.obs["n_counts"], ref.obs["n_counts"])
    assert (got.obs["n_counts"] >= np.asarray(got.X.sum(axis=1)).ravel()).all()


@pytest.mark.parametrize(
    "kw",
    [
        {"mean_center": False},
        {"normalize_variance": False, "log_transform": True, "knn_dist_metric": "cosine"},
        {"use_approx_neighbors": False, "n_neighbors": 10, "threshold": 0.3, "get_doublet_neighbor_parents": True},
    ],
    ids=["svd", "log-cosine", "exact-k10-parents"],
)
def test_options_match_scanpy(pbmc, kw):
    ref, got = pbmc.copy(), pbmc.copy()
    _quiet(sc.pp.scrublet, ref, random_state=1, **kw)
    _quiet(scrublet, got, random_state=1, **kw)
    rho, same = _agreement(ref, got)
    assert rho >= 0.98 and same >= 0.98, (rho, same)
    assert set(got.uns["scrublet"]) == set(ref.uns["scrublet"])
    # the cells' scores are scanpy's exactly (mean_center ignored moved them by 0.036) but where
    # scanpy's own neighbours tie: cell 261's score is scanpy's under OpenBLAS's Haswell kernels
    # and not under its AVX-512 ones (OPENBLAS_CORETYPE=SkylakeX), where ours stays the same; so
    # are the doublets', but an (i, i) doublet's, which can tie its parent in scanpy's float32
    # distances (README; whether it does follows scanpy's thread count), and the calls where the
    # threshold is given (threshold= ignored changed 8 calls) or the doublets' scores all agree
    scores_got, scores_ref = got.obs["doublet_score"].to_numpy(), ref.obs["doublet_score"].to_numpy()
    differ = np.flatnonzero(~np.isclose(scores_got, scores_ref, rtol=1e-9, atol=1e-12))
    assert differ.size <= 1, differ
    # ... and there by one simulated neighbour, the most one tied neighbour can move
    counts_got, counts_ref = (_sim_neighbours(got, s[differ]) for s in (scores_got, scores_ref))
    np.testing.assert_allclose(np.abs(counts_got - counts_ref), 1, atol=1e-6)
    parents = got.uns["scrublet"]["doublet_parents"]
    twins = parents[:, 0] == parents[:, 1]
    sim_got, sim_ref = got.uns["scrublet"]["doublet_scores_sim"], ref.uns["scrublet"]["doublet_scores_sim"]
    if "knn_dist_metric" not in kw:  # log-cosine: the tie moves other doublets' lists too (0.17)
        np.testing.assert_allclose(sim_got[~twins], sim_ref[~twins], rtol=1e-9, atol=1e-12)
    if "threshold" in kw or np.allclose(sim_got, sim_ref, rtol=1e-9, atol=1e-12):
        assert got.uns["scrublet"]["threshold"] == ref.uns["scrublet"]["threshold"]
        np.testing.assert_array_equal(got.obs["predicted_doublet"], ref.obs["predicted_doublet"])
    if kw.get("get_doublet_neighbor_parents"):
        parents = got.uns["scrublet"]["doublet_neighbor_parents"]
        assert len(parents) == pbmc.n_obs
        hits = [np.array_equal(a, b) for a, b in zip(parents, ref.uns["scrublet"]["doublet_neighbor_parents"], strict=True)]
        assert np.mean(hits) > 0.98


@pytest.mark.parametrize("seed", [0, 1])
def test_over_50_components_searched_on_their_50_pcs_as_scanpy(pbmc, seed):
    """With n_prin_comps > 50 scanpy's neighbour search runs on 50 PCs (float32) of the joined
    embedding, with its warning; ours searched the embedding itself (scores off by up to 0.08).
    Our PCs are exact, scanpy's ARPACK's, so a near tie may move one neighbour of a cell."""
    ref, got = pbmc.copy(), pbmc.copy()
    with pytest.warns(UserWarning, match="run this on 60 dimensions"):
        sc.pp.scrublet(ref, n_prin_comps=60, random_state=seed)
    with pytest.warns(UserWarning, match="run this on 60 dimensions"):
        scrublet(got, n_prin_comps=60, random_state=seed)
    diff = np.abs(got.obs["doublet_score"].to_numpy() - ref.obs["doublet_score"].to_numpy())
    assert (diff > 1e-9).mean() <= 0.01 and diff.max() < 0.01, (np.sum(diff > 1e-9), diff.max())


def test_over_50_components_on_the_device(device, pbmc):
    """The joined embedding's 50 PCs on the device (CuPy blocks through our pca) score as on the
    host, but where float32 PCs leave two neighbours tied."""
    cells = pbmc[:300].copy()
    cpu, gpu = cells.copy(), gsc.get.to_gpu(cells, copy=True)
    _quiet(scrublet, cpu, n_prin_comps=60, random_state=2)
    _quiet(scrublet, gpu, n_prin_comps=60, random_state=2)
    assert np.mean(np.isclose(gpu.obs["doublet_score"], cpu.obs["doublet_score"], rtol=1e-9, atol=0)) >= 0.99


def test_thinned_doublets_match_scanpy():
    """With synthetic_doublet_umi_subsampling < 1 the doublets of (i, j) and (j, i) are two draws,
    not twins: scanpy's search then prepends each row to its own list, as for distinct data (we
    left the rows out wherever such a pair was drawn: every doublet's score up to 0.17 apart)."""
    adata = gsc.datasets.pbmc4k_half()
    adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, 600, replace=False))].copy()
    ref, got = adata.copy(), adata.copy()
    _quiet(sc.pp.scrublet, ref, synthetic_doublet_umi_subsampling=0.6)
    _quiet(scrublet, got, synthetic_doublet_umi_subsampling=0.6)
    parents = got.uns["scrublet"]["doublet_parents"]
    pairs = {tuple(p) for p in parents.tolist()}
    assert any((j, i) in pairs for i, j in pairs if i != j)  # the case: a pair and its reverse drawn
    np.testing.assert_array_equal(got.uns["scrublet"]["doublet_scores_sim"], ref.uns["scrublet"]["doublet_scores_sim"])
    assert got.uns["scrublet"]["threshold"] == ref.uns["scrublet"]["threshold"]
    np.testing.assert_array_equal(got.obs["predicted_doublet"], ref.obs["predicted_doublet"])


def test_reversed_twins():
    x = sp.csr_matrix(np.array([[1, 0, 2], [1, 0, 2], [0, 3, 0], [1, 0, 2]], dtype=np.float32))
    assert _score.reversed_twins(np.array([[0, 1], [1, 0], [2, 2], [0, 3]]), x)  # rows 0 and 1 equal
    assert not _score.reversed_twins(np.array([[0, 1], [2, 3], [1, 0], [4, 4]]), x)  # rows 0 and 2 differ
    assert not _score.reversed_twins(np.array([[0, 0], [1, 1], [2, 2], [3, 3]]), x)  # (i, i) only
    assert _score.reversed_twins(np.array([[5, 6], [0, 1], [1, 2], [6, 5]]), x.toarray())  # rows 0 and 3, dense
    stored_zero = sp.csr_matrix((np.array([1, 0, 2, 1, 2], np.float32), np.array([0, 1, 2, 0, 2]),
                                 np.array([0, 3, 5])), shape=(2, 3))  # equal rows, one storing a 0  # fmt: skip
    assert _score.reversed_twins(np.array([[0, 1], [1, 0]]), stored_zero)


def test_adata_sim_matches_scanpy(pbmc):
    """The advanced path: doublets simulated and processed outside."""
    obs = pbmc.copy()
    sim = scrublet_simulate_doublets(obs, random_seed=2)
    for a in (obs, sim):
        sc.pp.normalize_total(a, target_sum=1e6)
    ref, got = obs.copy(), obs.copy()
    _quiet(sc.pp.scrublet, ref, adata_sim=sim)
    _quiet(scrublet, got, adata_sim=sim)
    rho, same = _agreement(ref, got)
    assert rho >= 0.98 and same >= 0.98
    assert got.uns["scrublet"]["parameters"] == ref.uns["scrublet"]["parameters"]


def test_filtered_cells_and_copy(pbmc):
    """A cell with fewer than 3 genes is dropped before scoring: NaN, as scanpy's alignment gives;
    copy=True leaves the input as it was."""
    x = pbmc.X.copy()
    x.data[x.indptr[5] : x.indptr[6]] = 0
    x.eliminate_zeros()
    pbmc.X = x
    ref = _quiet(sc.pp.scrublet, pbmc, copy=True)
    before = pbmc.copy()
    got = _quiet(scrublet, pbmc, copy=True)
    assert_adata_equal(pbmc, before)
    assert np.isnan(got.obs["doublet_score"].iloc[5]) and np.isnan(ref.obs["doublet_score"].iloc[5])
    assert got.obs["predicted_doublet"].dtype == ref.obs["predicted_doublet"].dtype
    keep = np.arange(pbmc.n_obs) != 5
    assert spearmanr(got.obs["doublet_score"][keep], ref.obs["doublet_score"][keep])[0] >= 0.98
    assert len(got.uns["scrublet"]["doublet_scores_sim"]) == 2 * (pbmc.n_obs - 1)


def test_batch_key_matches_scanpy(pbmc):
    pbmc.obs["batch"] = pd.Categorical(np.where(np.arange(pbmc.n_obs) % 3 == 0, "b", "a"))
    ref, got = pbmc.copy(), pbmc.copy()
    _quiet(sc.pp.scrublet, ref, batch_key="batch")
    _quiet(scrublet, got, batch_key="batch")
    rho, same = _agreement(ref, got)
    assert rho >= 0.98 and same >= 0.98
    assert list(got.obs.columns) == list(ref.obs.columns)  # scanpy writes the batches' obs back: n_genes too
    np.testing.assert_array_equal(got.obs["n_genes"], ref.obs["n_genes"])
    assert got.uns["scrublet"]["batched_by"] == "batch"
    assert list(got.uns["scrublet"]["batches"]) == list(ref.uns["scrublet"]["batches"]) == ["a", "b"]
    for b in ("a", "b"):
        mine, theirs = got.uns["scrublet"]["batches"][b], ref.uns["scrublet"]["batches"][b]
        assert set(mine) == set(theirs)
        np.testing.assert_array_equal(mine["doublet_parents"], theirs["doublet_parents"])
        np.testing.assert_array_equal(mine["doublet_scores_sim"], theirs["doublet_scores_sim"])
        assert mine["threshold"] == theirs["threshold"]
    # a batch is scored on its own: the same as running it alone
    alone = pbmc[pbmc.obs["batch"] == "b"].copy()
    _quiet(scrublet, alone)
    np.testing.assert_array_equal(got.obs["doublet_score"][alone.obs_names], alone.obs["doublet_score"])


@pytest.mark.skipif(not (BARNYARD / "filtered_feature_bc_matrix.h5").exists(), reason="needs ../shared/data")
def test_barnyard_doublet_scores_at_the_top():
    """hgmm_1k_v3: of its 7 species-mixed barcodes, the one full-size heterotypic doublet (39k UMIs,
    64 % human) scores above the 95th percentile; the 6 near-empty ones (< 1,500 UMIs: ambient
    RNA) do not."""
    adata = _quiet(sc.read_10x_h5, BARNYARD / "filtered_feature_bc_matrix.h5")
    _quiet(adata.var_names_make_unique)
    adata.obs = adata.obs.join(pd.read_csv(BARNYARD / "species_calls.csv", index_col="barcode"))
    _quiet(scrublet, adata)
    obs = adata.obs
    mixed = obs[obs["species_call"] == "mixed"]
    umis = mixed["umi_hg19"] + mixed["umi_mm10"]
    assert len(mixed) == 7 and (umis > 30_000).sum() == 1
    top = obs["doublet_score"] > np.percentile(obs["doublet_score"], 95)
    assert top[umis.idxmax()] and obs.loc[umis.idxmax(), "predicted_doublet"]
    assert not top[umis.index[umis < 1500]].any()


def test_gpu_equals_cpu(device, pbmc, monkeypatch):
    cells = pbmc[:400].copy() if device == "emulated" else pbmc
    cpu = cells.copy()
    _quiet(scrublet, cpu, random_state=5)
    # the second run searches with the blocked argpartition path (k above the kernel's limit)
    for limit in (_score.MAX_GPU_K, 8):
        monkeypatch.setattr(_score, "MAX_GPU_K", limit)
        gpu = gsc.get.to_gpu(cells, copy=True)
        _quiet(scrublet, gpu, random_state=5)
        assert type(gpu.X).__module__.startswith("cupyx")  # X untouched, on the device
        # the same doublets; the embedding agrees to round-off (cuBLAS sums in another order), so
        # a neighbour list may differ only where two candidates tie to that precision
        np.testing.assert_array_equal(gpu.uns["scrublet"]["doublet_parents"], cpu.uns["scrublet"]["doublet_parents"])
        for g, c in [(gpu.obs["doublet_score"], cpu.obs["doublet_score"]),
                     (gpu.uns["scrublet"]["doublet_scores_sim"], cpu.uns["scrublet"]["doublet_scores_sim"])]:  # fmt: skip
            assert np.mean(np.isclose(g, c, rtol=1e-12, atol=0)) >= (1.0 if device == "emulated" else 0.995)
        assert np.mean(gpu.obs["predicted_doublet"] == cpu.obs["predicted_doublet"]) >= 0.995
    np.random.seed(3)  # the totals' correction: NumPy's global generator, as scanpy's
    sim_cpu = scrublet_simulate_doublets(cells, synthetic_doublet_umi_subsampling=0.7, random_seed=1)
    np.random.seed(3)
    sim_gpu = scrublet_simulate_doublets(gsc.get.to_gpu(cells, copy=True), synthetic_doublet_umi_subsampling=0.7,
                                         random_seed=1)
    assert type(sim_gpu.X).__module__.startswith("cupyx")
    np.testing.assert_array_equal(to_host(sim_gpu.X), to_host(sim_cpu.X))
    np.testing.assert_array_equal(sim_gpu.obs["n_counts"], sim_cpu.obs["n_counts"])


def test_adata_sim_on_the_device(device, pbmc):
    """scrublet(adata_sim=) with both moved by to_gpu (obsm['doublet_parents'] moves too): the
    CPU's scores; a simulation left on the other device is refused with what to do."""
    obs = pbmc[:400].copy()
    sim = scrublet_simulate_doublets(obs, random_seed=2)
    for a in (obs, sim):
        gsc.pp.normalize_total(a, target_sum=1e6)
    cpu = obs.copy()
    _quiet(scrublet, cpu, adata_sim=sim, random_state=3)
    gpu, sim_gpu = gsc.get.to_gpu(obs, copy=True), gsc.get.to_gpu(sim, copy=True)
    _quiet(scrublet, gpu, adata_sim=sim_gpu, random_state=3)
    close = np.isclose(gpu.obs["doublet_score"], cpu.obs["doublet_score"], rtol=1e-12, atol=0)
    assert close.mean() >= (1.0 if device == "emulated" else 0.995)
    with pytest.raises(ValueError, match="adata_sim.X is a CSR matrix of dtype float32 on the CPU.*to_gpu or gsc.get.to_cpu"):
        scrublet(gpu, adata_sim=sim)


def _refused(adata, error, match, **kw):
    before = adata.copy()
    with pytest.raises(error, match=match):
        scrublet(adata, **kw)
    assert_adata_equal(adata, before)


def test_bad_input_changes_nothing(pbmc):
    pbmc.obs["batch"] = np.where(np.arange(pbmc.n_obs) == 0, "lonely", "main")
    _refused(pbmc, ValueError, r"'lonely': 1 cell\b", batch_key="batch")
    _refused(pbmc, ValueError, "must be a column of .obs", batch_key="nope")
    pbmc.obs["batch"] = pd.Series(np.where(np.arange(pbmc.n_obs) < 5, None, "main"), index=pbmc.obs_names)
    _refused(pbmc, ValueError, "5 missing values", batch_key="batch")
    for kw, match in [({"sim_doublet_ratio": 0}, "sim_doublet_ratio"),
                      ({"synthetic_doublet_umi_subsampling": 1.5}, "synthetic_doublet_umi_subsampling"),
                      ({"expected_doublet_rate": 1.0}, "expected_doublet_rate"),
                      ({"knn_dist_metric": "manhattan"}, "knn_dist_metric"),
                      ({"n_prin_comps": 700}, "n_prin_comps"),
                      ({"random_state": "x"}, "random_state")]:  # fmt: skip
        _refused(pbmc, ValueError, match, **kw)
    bad = pbmc.copy()
    bad.X = bad.X.copy()
    bad.X.data[3] = -1
    _refused(bad, ValueError, "negative", random_state=0)
    bad.X.data[3] = np.nan
    _refused(bad, ValueError, "non-finite")
    one_gene = pbmc[:, :1].copy()  # its own filters leave no cell (the error named highly_variable_genes)
    _refused(one_gene, ValueError, r"no cell is left after scrublet's filters .* of 700 cells x 1 genes")


def test_dask_is_refused(pbmc):
    da = pytest.importorskip("dask.array")
    pbmc.X = da.from_array(pbmc.X.toarray(), chunks=(200, -1))
    with pytest.raises(gsc._validation.UnsupportedMatrixError, match="compute it into memory"):
        scrublet(pbmc)
    assert "doublet_score" not in pbmc.obs and "scrublet" not in pbmc.uns


def test_doublet_neighbor_parents_match_scanpy_cell_by_cell(pbmc):
    """uns['scrublet']['doublet_neighbor_parents'] lists, for every cell, the distinct parents of
    the doublets among its neighbours (the first doublet, row n_obs of the search, included), as
    scanpy's do: equal cell by cell, but for the parents of (i, i) doublets, which can tie their
    parent in scanpy's float32 distances (README)."""
    kw = {"use_approx_neighbors": False, "n_neighbors": 10, "threshold": 0.3, "get_doublet_neighbor_parents": True}
    ref, got = pbmc.copy(), pbmc.copy()
    _quiet(sc.pp.scrublet, ref, random_state=1, **kw)
    _quiet(scrublet, got, random_state=1, **kw)
    parents = got.uns["scrublet"]["doublet_parents"]
    tied = set(parents[parents[:, 0] == parents[:, 1], 0].tolist())
    ours, theirs = got.uns["scrublet"]["doublet_neighbor_parents"], ref.uns["scrublet"]["doublet_neighbor_parents"]
    assert len(ours) == len(theirs) == pbmc.n_obs
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if i not in tied:
            np.testing.assert_array_equal(a, b, err_msg=f"cell {i}")
