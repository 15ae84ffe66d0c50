"""gsc.tl.score_genes / score_genes_cell_cycle against scanpy on real data: the same control
genes for the same seed, hence the same scores, without touching numpy's global generator."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from _helpers import as_type, assert_close, counted_dask

import gpu_sc as gsc


@pytest.fixture
def logged(pbmc):
    a = pbmc.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    return a


def _genes(a, start, step, n):
    return list(a.var_names[start::step][:n])


CASES = [
    {},
    {"ctrl_size": 10, "n_bins": 10, "random_state": 3},
    {"ctrl_as_ref": False},
    {"pool": True},
    {"score_name": "sig", "layer": "counts"},
]


# csc: scanpy sums float32 CSC as CSC, which rounds otherwise than CSR
@pytest.mark.parametrize("kind", ["csr", "csc", "numpy"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c) or "default")
def test_equals_scanpy(logged, pbmc, kind, case):
    a = logged.copy()
    a.X = as_type(sp.csr_matrix(a.X), kind)
    a.layers["counts"] = as_type(sp.csr_matrix(pbmc.X), kind)
    genes = [*_genes(a, 0, 37, 15), "NOT_A_GENE"]
    kw = dict(case)
    if kw.pop("pool", False):
        kw["gene_pool"] = list(a.var_names[:400]) + genes[:-1]
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(5)
        sc.tl.score_genes(ref, genes, **kw)
        after_scanpy = np.random.get_state()[1].copy()
        np.random.seed(5)
        gsc.tl.score_genes(got, genes, **kw)
    key = kw.get("score_name", "score")
    pd.testing.assert_series_equal(got.obs[key], ref.obs[key])  # bit for bit
    # numpy's global generator where scanpy leaves it (seeded with random_state, then drawn from),
    # so that a later unseeded draw is scanpy's too
    assert np.array_equal(np.random.get_state()[1], after_scanpy)


def test_ignored_genes_are_reported(logged, capsys):
    gsc.tl.score_genes(logged.copy(), [*_genes(logged, 0, 37, 5), "TYPO_GENE"])
    assert "WARNING: genes are not in var_names and ignored: Index(['TYPO_GENE']" in capsys.readouterr().err
    # written before a refusal too, as scanpy writes them: the warning says why the list is empty
    with pytest.raises(ValueError, match="No valid genes"):
        gsc.tl.score_genes(logged.copy(), ["TYPO_GENE"])
    assert "WARNING: genes are not in var_names and ignored: Index(['TYPO_GENE']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="No valid genes"):
        gsc.tl.score_genes_cell_cycle(logged.copy(), s_genes=_genes(logged, 5, 41, 12), g2m_genes=["TYPO_G2M"])
    assert "ignored: Index(['TYPO_G2M']" in capsys.readouterr().err


def test_unseeded_draws_follow_numpy_global_state(logged):
    genes = _genes(logged, 3, 29, 12)
    ref, got = logged.copy(), logged.copy()
    np.random.seed(11)
    sc.tl.score_genes(ref, genes, random_state=None)
    np.random.seed(11)
    gsc.tl.score_genes(got, genes, random_state=None)
    pd.testing.assert_series_equal(got.obs["score"], ref.obs["score"])


def _cell_cycle_both(a):
    """(scanpy's, ours) score_genes_cell_cycle of copies of `a`, their scores checked equal."""
    s_genes, g2m_genes = _genes(a, 5, 41, 12), _genes(a, 9, 43, 14)
    ref, got = a.copy(), a.copy()
    sc.tl.score_genes_cell_cycle(ref, s_genes=s_genes, g2m_genes=g2m_genes)
    gsc.tl.score_genes_cell_cycle(got, s_genes=s_genes, g2m_genes=g2m_genes)
    for k in ("S_score", "G2M_score"):
        pd.testing.assert_series_equal(got.obs[k], ref.obs[k])
    return ref, got


def test_cell_cycle_equals_scanpy(logged):
    ref, got = _cell_cycle_both(logged)
    assert (got.obs["phase"] == ref.obs["phase"]).all() and set(got.obs["phase"]) <= {"S", "G2M", "G1"}


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_cell_cycle_ties_of_empty_cells_as_scanpy(logged, kind):
    """Cells with no counts score 0 on both lists: neither G2M > S nor both below 0, so scanpy
    calls them 'S' (not G1 or G2M)."""
    a = logged.copy()
    x = a.X.toarray()
    x[:6] = 0
    a.X = as_type(sp.csr_matrix(x), kind)
    ref, got = _cell_cycle_both(a)
    for k in ("S_score", "G2M_score"):
        assert (got.obs[k].iloc[:6] == 0).all()
    assert list(ref.obs["phase"].iloc[:6]) == ["S"] * 6
    assert (got.obs["phase"] == ref.obs["phase"]).all()


def test_stored_nan_values_of_a_csr_as_scanpy():
    """NaN values stored in a CSR: scanpy's means skip them (sums over the non-NaN count), for
    the genes' binning and the scores."""
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(1.0, (100, 200)).astype(np.float64))
    x[rng.random(x.shape) < 0.05] = np.nan
    a = sc.AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=[f"g{i}" for i in range(200)]))
    assert np.isnan(a.X.data).sum() > 500
    genes = [f"g{i}" for i in range(10)]
    ref, got = a.copy(), a.copy()
    sc.tl.score_genes(ref, genes, random_state=0)
    gsc.tl.score_genes(got, genes, random_state=0)
    assert ref.obs["score"].notna().all()
    pd.testing.assert_series_equal(got.obs["score"], ref.obs["score"])


def test_cell_cycle_refusals_leave_obs_as_it_was(logged):
    """A G2M list of no known gene is refused after the S list was scored: obs must be as before
    (scanpy leaves S_score behind); an empty list is named (it was refused as ctrl_size=0)."""
    s_genes = _genes(logged, 5, 41, 12)
    before = logged.obs.copy()
    with pytest.raises(ValueError, match="No valid genes"):
        gsc.tl.score_genes_cell_cycle(logged, s_genes=s_genes, g2m_genes=["NOPE1", "NOPE2"])
    pd.testing.assert_frame_equal(logged.obs, before)
    with pytest.raises(ValueError, match="g2m_genes is empty"):
        gsc.tl.score_genes_cell_cycle(logged, s_genes=s_genes, g2m_genes=[])
    pd.testing.assert_frame_equal(logged.obs, before)

@pytest.mark.parametrize("kind", ["cupy", "cupyx_csr"])
def test_gpu_equals_cpu(device, logged, kind):
    """On the device the means run in cupy: the same control genes (their bins agree), scores
    within float32 rounding of the sums over the genes: numpy's nanmean sums a float32 matrix in
    float32, and scipy's and cupyx's sparse sums add float32 values in float32 too (dtype=float64
    casts the result; in other orders on each side: 7e-8 apart on an H100, 2026-12-06)."""
    genes = _genes(logged, 0, 37, 15)
    cpu, gpu = logged.copy(), logged.copy()
    cpu.X = as_type(sp.csr_matrix(logged.X), "numpy" if kind == "cupy" else "csr")
    gpu.X = as_type(sp.csr_matrix(logged.X), kind)
    gsc.tl.score_genes(cpu, genes)
    gsc.tl.score_genes(gpu, genes)
    assert_close(gpu.obs["score"].to_numpy(), cpu.obs["score"].to_numpy(),
                 dtype=np.float32, n_terms=logged.n_vars, scale=1.0)  # fmt: skip


def test_bad_input(logged):
    a = logged.copy()
    before = a.obs.copy()
    with pytest.raises(ValueError, match="none of the 2 genes"):
        gsc.tl.score_genes(a, ["x", "y"])
    with pytest.raises(ValueError, match="no gene of gene_pool"):
        gsc.tl.score_genes(a, _genes(a, 0, 37, 5), gene_pool=["x"])
    with pytest.raises(KeyError, match="not in gene_pool"):
        gsc.tl.score_genes(a, _genes(a, 0, 37, 5), gene_pool=list(a.var_names[1:50]))
    with pytest.raises(KeyError, match="layer 'nope'"):
        gsc.tl.score_genes(a, _genes(a, 0, 37, 5), layer="nope")
    with pytest.raises(ValueError, match=r"got an empty matrix \(0 cells"):  # not a word on gene_pool
        gsc.tl.score_genes(a[:0].copy(), _genes(a, 0, 37, 5))
    bad = a.copy()
    bad.X = sp.csr_matrix(bad.X)
    col = bad.var_names.get_loc(_genes(a, 0, 37, 5)[0])
    bad.X.data[bad.X.indices == col] = np.inf
    with pytest.raises(ValueError, match="have no finite mean expression"):
        gsc.tl.score_genes(bad, _genes(a, 0, 37, 5))
    with pytest.raises(ValueError, match="ctrl_size"):
        gsc.tl.score_genes(a, _genes(a, 0, 37, 5), ctrl_size=0)
    with pytest.raises(TypeError, match="ctrl_size"):
        gsc.tl.score_genes_cell_cycle(a, s_genes=["x"], g2m_genes=["y"], ctrl_size=3)
    pd.testing.assert_frame_equal(a.obs, before)


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_dask_row_blocks_equal_in_memory(logged, kind):
    """Dask input (row blocks, NaN included): the column means from the blocks' float64 sums pick
    the same control genes, and the row means per block give the in-memory scores (CSR: bit for
    bit; dense: scanpy's own Dask path, which takes dense blocks only)."""
    import dask.array as da

    x = sp.csr_matrix(logged.X, dtype=np.float32)
    x.data[::997] = np.nan
    x = as_type(x, kind)
    genes = _genes(logged, 0, 37, 15)
    mem, lazy = logged.copy(), logged.copy()
    mem.X = x
    lazy.X = da.from_array(x, chunks=(700, -1 if kind == "csr" else 5000), asarray=False)
    gsc.tl.score_genes(mem, genes, ctrl_size=20)
    gsc.tl.score_genes(lazy, genes, ctrl_size=20)
    if kind == "csr":
        pd.testing.assert_series_equal(lazy.obs["score"], mem.obs["score"])
    else:
        ref = logged.copy()
        ref.X = lazy.X
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.score_genes(ref, genes, ctrl_size=20)
        pd.testing.assert_series_equal(lazy.obs["score"], ref.obs["score"])
        assert_close(lazy.obs["score"].to_numpy(), mem.obs["score"].to_numpy(), dtype=np.float32,
                     n_terms=logged.n_vars, scale=1.0)  # fmt: skip


@pytest.mark.parametrize("kind", ["csr", "numpy"])
def test_dask_blocks_split_along_genes_equal_row_blocks(logged, kind):
    """A Dask X chunked along genes too (uneven blocks both ways) is joined into whole rows: the
    scores of row blocks."""
    import dask.array as da

    x = as_type(sp.csr_matrix(logged.X, dtype=np.float32), kind)
    genes = _genes(logged, 0, 37, 15)
    rows, split = logged.copy(), logged.copy()
    rows.X = da.from_array(x, chunks=(700, -1), asarray=False)
    split.X = da.from_array(x, chunks=(700, 333), asarray=False)
    gsc.tl.score_genes(rows, genes, ctrl_size=20)
    gsc.tl.score_genes(split, genes, ctrl_size=20)
    pd.testing.assert_series_equal(split.obs["score"], rows.obs["score"])

def test_dask_sparse_blocks_under_a_dense_meta_are_scored(logged):
    """map_blocks that could not infer its blocks' kind labels CSR blocks dense: the genes' means
    then came from np.asarray of a sparse block ("setting an array element with a sequence", from
    an audit); now each such block adds its float64 sums, which are divided in float64 as the
    in-memory CSR's (in float32 a tie of two means could move a gene to another bin): the scores
    are the CSR ones, bit for bit, over several blocks and with NaN."""
    import dask.array as da

    x = sp.csr_matrix(logged.X, dtype=np.float32)
    x.data[::997] = np.nan
    genes = _genes(logged, 0, 37, 15)
    mem, lazy = logged.copy(), logged.copy()
    mem.X = x
    lazy.X = da.from_array(x, chunks=(150, -1), asarray=False).map_blocks(
        sp.csr_matrix, dtype=x.dtype, meta=np.empty((0, 0), x.dtype))
    assert lazy.X.numblocks[0] > 1
    gsc.tl.score_genes(mem, genes, ctrl_size=20)
    gsc.tl.score_genes(lazy, genes, ctrl_size=20)
    pd.testing.assert_series_equal(lazy.obs["score"], mem.obs["score"])


def test_dask_reads_the_blocks_twice(logged):
    """One pass for the genes' means (the control draw needs them), one for the cells' means of
    the gene list and of the controls together."""
    lazy = logged.copy()
    lazy.X, made = counted_dask(sp.csr_matrix(logged.X, dtype=np.float32))
    gsc.tl.score_genes(lazy, _genes(logged, 0, 37, 15))
    assert sorted(made) == sorted(list(range(lazy.X.numblocks[0])) * 2)


def test_dask_cell_cycle_reads_the_blocks_twice(logged):
    """score_genes_cell_cycle reads a Dask X twice, as one score_genes (it took four): the pool's
    means once for both lists' control draws (S first, then G2M, as scanpy draws them), then
    the cells' means of both lists and both controls; the scores are scanpy's, seeded or not
    (numpy's global generator left where scanpy leaves it)."""
    s_genes, g2m_genes = _genes(logged, 5, 41, 12), _genes(logged, 9, 43, 14)
    pool = sorted(set(_genes(logged, 0, 2, 300)) | set(s_genes) | set(g2m_genes))
    for kw in ({}, {"random_state": None, "gene_pool": pool, "n_bins": 10}):
        lazy = logged.copy()
        lazy.X, made = counted_dask(sp.csr_matrix(logged.X, dtype=np.float32))
        ref = logged.copy()
        np.random.seed(5)
        sc.tl.score_genes_cell_cycle(ref, s_genes=s_genes, g2m_genes=g2m_genes, **kw)
        after_ref = np.random.random()
        np.random.seed(5)
        gsc.tl.score_genes_cell_cycle(lazy, s_genes=s_genes, g2m_genes=g2m_genes, **kw)
        assert np.random.random() == after_ref
        assert sorted(made) == sorted(list(range(lazy.X.numblocks[0])) * 2)
        for k in ("S_score", "G2M_score", "phase"):
            pd.testing.assert_series_equal(lazy.obs[k], ref.obs[k], check_dtype=k != "phase", check_categorical=False)


@pytest.mark.parametrize("use_raw", [None, True, False])
def test_raw_and_copy_as_scanpy(logged, use_raw):
    """With adata.raw (the log counts of every gene) and X a scaled subset, as after a scanpy
    workflow: scanpy's default reads raw, use_raw=False X; copy=True returns the result and leaves
    the input unchanged."""
    a = logged.copy()
    a.raw = a
    a = a[:, a.var_names[::2]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.scale(a)
    genes = _genes(a, 0, 11, 12)
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.score_genes(ref, genes, use_raw=use_raw, random_state=2)
        out = gsc.tl.score_genes(got, genes, use_raw=use_raw, random_state=2, copy=True)
    pd.testing.assert_series_equal(out.obs["score"], ref.obs["score"])
    assert "score" not in got.obs  # copy=True: the input as it was
    other = a.copy()
    gsc.tl.score_genes(other, genes, use_raw=not bool(use_raw) if use_raw is not None else False, random_state=2)
    assert not np.allclose(other.obs["score"], out.obs["score"])  # raw and X give other scores here


def test_repeated_gene_names_are_refused(logged):
    """pandas' 'Reindexing only valid with uniquely valued Index objects' before; scanpy's too."""
    a = logged.copy()
    names = a.var_names.to_numpy().copy()
    names[5] = names[4]
    a.var_names = names
    before = a.obs.copy()
    with pytest.raises(ValueError, match=r"names read .* repeat \(e.g. \['" + names[4] + r"'\]\).*var_names_make_unique"):
        gsc.tl.score_genes(a, list(a.var_names[10:20]))
    pd.testing.assert_frame_equal(a.obs, before)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32])
def test_dense_dask_blocks_bin_the_genes_as_in_memory(logged, dtype):
    """Dense row blocks: the genes' means (which bin them for the control draw) are summed as
    NumPy's nanmean sums the whole matrix, so the scores are the in-memory ones; float16 blocks
    took float64 sums and drew 32 of 401 control genes differently (scores up to 0.029 off)."""
    import dask.array as da

    x = logged.X.toarray()
    x = (x * 3).astype(dtype) if dtype == np.int32 else x.astype(dtype)
    mem, lazy = logged.copy(), logged.copy()
    mem.X = x
    lazy.X = da.from_array(x, chunks=(150, -1))
    genes = _genes(logged, 0, 50, 15)
    gsc.tl.score_genes(mem, genes, random_state=0)
    gsc.tl.score_genes(lazy, genes, random_state=0)
    pd.testing.assert_series_equal(lazy.obs["score"], mem.obs["score"])


def _tiered(n_cells=30):
    """Cells whose genes have fixed per-gene levels (times a per-cell factor): 10 genes never
    expressed (one tied expression bin), then genes of levels 1..40 (bins of three: 80 genes, 25 bins), and
    30 genes tied at the top level (one large bin)."""
    levels = np.concatenate([np.zeros(10), np.arange(1, 41), np.full(30, 41.0)])
    x = np.outer(1 + np.arange(n_cells) / n_cells, levels)
    names = [f"g{i}" for i in range(levels.size)]
    return sc.AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=pd.DataFrame(index=names))


def test_cell_cycle_zero_s_score_is_not_g1_as_scanpy():
    """S genes unexpressed, as their controls: S_score exactly 0; G2M genes below their
    controls in every cell: G2M_score < 0. scanpy calls G1 only where both scores are below 0 (here: S)."""
    a = _tiered()
    kw = {"s_genes": ["g0", "g1"], "g2m_genes": ["g12", "g14"]}
    ref, got = a.copy(), a.copy()
    sc.tl.score_genes_cell_cycle(ref, **kw)
    gsc.tl.score_genes_cell_cycle(got, **kw)
    assert (got.obs["S_score"] == 0).all() and (got.obs["G2M_score"] < 0).all()
    pd.testing.assert_frame_equal(got.obs, ref.obs)


def test_a_bin_of_exactly_ctrl_size_genes_draws_nothing_as_scanpy():
    """A gene-list bin holding exactly ctrl_size genes takes them all without a draw (scanpy
    samples only from larger bins), so the next bin's draw from the seeded generator is scanpy's."""
    a = _tiered()
    for genes in (["g12", "g75"], ["g21", "g60"]):
        ref, got = a.copy(), a.copy()
        sc.tl.score_genes(ref, genes, ctrl_size=3)
        gsc.tl.score_genes(got, genes, ctrl_size=3)
        np.testing.assert_array_equal(got.obs["score"].to_numpy(), ref.obs["score"].to_numpy())


def test_one_bin_is_refused(logged):
    """n_bins=1 (every gene in one expression bin) is refused with our message (from a mutation
    audit: accepting it went unnoticed)."""
    a = logged.copy()
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        gsc.tl.score_genes(a, _genes(a, 0, 37, 15), n_bins=1)
    assert "score" not in a.obs


def test_no_control_genes_is_a_runtime_error_as_scanpy(logged):
    """A gene_pool of the list's genes alone with ctrl_as_ref=False leaves no control gene:
    scanpy's RuntimeError (from a mutation audit: dropping the error went unnoticed)."""
    genes = _genes(logged, 0, 37, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="No control genes found in any cut"):
            sc.tl.score_genes(logged.copy(), genes, gene_pool=genes, ctrl_as_ref=False)
    a = logged.copy()
    with pytest.raises(RuntimeError, match="No control genes found in any cut"):
        gsc.tl.score_genes(a, genes, gene_pool=genes, ctrl_as_ref=False)
    assert "score" not in a.obs


def test_layer_is_used_when_raw_is_set_as_scanpy(logged):
    """With adata.raw set, a layer given still scores that layer (use_raw's default is False
    then), as scanpy (from a mutation audit: reading raw went unnoticed)."""
    a = logged.copy()
    a.raw = a.copy()
    a.layers["L"] = a.X.multiply(2).tocsr()
    genes = _genes(a, 0, 37, 15)
    ref, got = a.copy(), a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.score_genes(ref, genes, layer="L", random_state=0)
    gsc.tl.score_genes(got, genes, layer="L", random_state=0)
    pd.testing.assert_series_equal(got.obs["score"], ref.obs["score"])
    plain = a.copy()
    gsc.tl.score_genes(plain, genes, random_state=0)
    assert not np.allclose(plain.obs["score"], got.obs["score"])  # the layer matters here


def test_random_state_instance_is_drawn_from(logged):
    """A numpy RandomState as random_state is drawn from (scanpy's np.random.seed refuses it):
    two equal generators give equal scores, numpy's global state is left alone (from a mutation
    audit: not using the instance went unnoticed)."""
    genes = _genes(logged, 0, 37, 15)
    a, b = logged.copy(), logged.copy()
    np.random.seed(7)
    state = np.random.get_state()[1].copy()
    gsc.tl.score_genes(a, genes, random_state=np.random.RandomState(1), ctrl_size=5)
    assert np.array_equal(np.random.get_state()[1], state)
    gsc.tl.score_genes(b, genes, random_state=np.random.RandomState(1), ctrl_size=5)
    pd.testing.assert_series_equal(a.obs["score"], b.obs["score"])
    assert np.isfinite(a.obs["score"]).all()
    other = logged.copy()  # (a review: a fixed generator in place of the instance passed the above)
    gsc.tl.score_genes(other, genes, random_state=np.random.RandomState(2), ctrl_size=5)
    assert not np.array_equal(other.obs["score"], a.obs["score"])
