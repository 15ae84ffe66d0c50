"""Bad input raises a clear error and leaves the AnnData exactly as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _helpers import assert_adata_equal, assert_same

import gpu_sc as gsc

STEPS = {
    "calculate_qc_metrics": lambda a: gsc.pp.calculate_qc_metrics(a, inplace=True, percent_top=(5,)),
    "filter_cells": lambda a: gsc.pp.filter_cells(a, min_genes=5),
    "filter_genes": lambda a: gsc.pp.filter_genes(a, min_cells=2),
    "normalize_total": lambda a: gsc.pp.normalize_total(a, key_added="nf"),
}


def _poison(adata, value):
    x = adata.X.copy()
    x.data[7] = value
    adata.X = x


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize(("value", "match"), [(np.nan, "non-finite"), (np.inf, "non-finite")])
@pytest.mark.parametrize("dense", [False, True])
def test_bad_counts_raise_and_leave_adata(pbmc, step, value, match, dense):
    _poison(pbmc, value)
    if dense:
        pbmc.X = pbmc.X.toarray()
    before = pbmc.copy()
    with pytest.raises(ValueError, match=match) as e:
        STEPS[step](pbmc)
    assert step in str(e.value) and "CPU" in str(e.value)  # says what and where it got
    assert_adata_equal(pbmc, before)


@pytest.mark.parametrize("sparse", [False, True])
def test_scaled_data_taken_as_scanpy_takes_it(sparse):
    """scanpy's QC, filters and normalize_total take negative values (scaled data, e.g. scanpy's
    own pbmc68k_reduced): the same cells and genes kept (filters count the values above zero),
    sums within rounding of the values' magnitudes (totals near zero cancel)."""
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = sc.datasets.pbmc68k_reduced()
    assert base.X.min() < 0
    if sparse:
        base.X = sp.csr_matrix(base.X)
    for name, kw in (("filter_cells", {"min_genes": 300}), ("filter_genes", {"min_cells": 300}),
                     ("filter_cells", {"max_counts": 0}), ("calculate_qc_metrics", {"inplace": True}),
                     ("normalize_total", {})):  # fmt: skip
        ref, got = base.copy(), base.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(sc.pp, name)(ref, **kw)
            getattr(gsc.pp, name)(got, **kw)
        assert got.obs_names.equals(ref.obs_names) and got.var_names.equals(ref.var_names), name
        for key in ("n_genes", "n_cells", "n_genes_by_counts", "n_cells_by_counts"):
            for frame, other in ((got.obs, ref.obs), (got.var, ref.var)):
                if key in other:
                    np.testing.assert_array_equal(frame[key], other[key], err_msg=f"{name} {key}")
        if name == "calculate_qc_metrics":
            magnitude = np.abs(base.X).sum(axis=1)
            magnitude = np.asarray(magnitude).ravel()
            diff = np.abs(got.obs["total_counts"].to_numpy() - ref.obs["total_counts"].to_numpy())
            assert (diff <= 16 * np.finfo(np.float32).eps * magnitude).all()


@pytest.mark.parametrize("dense", [False, True])
def test_no_genes_give_scanpys_empty_results(dense):
    """Every gene filtered away: scanpy's QC gives zero totals and normalize_total leaves nothing
    to scale; both refused such a matrix before."""
    import anndata as ad
    import scanpy as sc

    x = np.zeros((10, 0), np.float32) if dense else sp.csr_matrix((10, 0), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.pp.calculate_qc_metrics(ad.AnnData(x.copy()), percent_top=None, inplace=False)
        got = gsc.pp.calculate_qc_metrics(ad.AnnData(x.copy()), percent_top=None, inplace=False)
        for g, r in zip(got, ref, strict=True):
            pd.testing.assert_frame_equal(g, r)
        for target_sum in (1e4, None):
            out = gsc.pp.normalize_total(a := ad.AnnData(x.copy()), target_sum=target_sum, inplace=False)
            ref = sc.pp.normalize_total(ad.AnnData(x.copy()), target_sum=target_sum, inplace=False)
            assert out["X"].shape == (10, 0) and out["norm_factor"].shape == (10,)
            np.testing.assert_array_equal(out["norm_factor"], ref["norm_factor"])  # no target: NaN, as scanpy's
            assert gsc.pp.normalize_total(a, target_sum=target_sum) is None and a.X.shape == (10, 0)


def test_no_cells_give_scanpys_empty_results(pbmc):
    """A batch that filtering emptied: scanpy's QC gives empty cell metrics and NaN gene means,
    normalize_total leaves nothing to scale (it refused before)."""
    import scanpy as sc

    empty = pbmc[:0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sc.pp.calculate_qc_metrics(empty.copy(), percent_top=(5, 10), inplace=False)
        got = gsc.pp.calculate_qc_metrics(empty.copy(), percent_top=(5, 10), inplace=False)
        for g, r in zip(got, ref, strict=True):
            assert list(g.columns) == list(r.columns) and g.shape == r.shape
            np.testing.assert_array_equal(g.to_numpy(float), r.to_numpy(float))
        for target_sum in (1e4, None):
            out = gsc.pp.normalize_total(empty.copy(), target_sum=target_sum, inplace=False)
            assert out["X"].shape == (0, pbmc.n_vars) and out["norm_factor"].shape == (0,)


@pytest.mark.parametrize("shape", [(0, 3), (5, 0)])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_scale_of_an_empty_matrix_is_scanpys_no_op(shape, sparse, masked):
    """scanpy scales a matrix with no genes (or no cells) to itself, with empty (NaN) statistics;
    with a row mask too (sparse X without genes divided by zero making its centred rows)."""
    import anndata as ad
    import scanpy as sc

    x = sp.csr_matrix(shape, dtype=np.float32) if sparse else np.zeros(shape, np.float32)
    ref, got = ad.AnnData(x.copy()), ad.AnnData(x.copy())
    kw = {"mask_obs": np.arange(shape[0]) % 2 == 0} if masked else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.scale(ref, **kw)
        gsc.pp.scale(got, **kw)
    assert type(got.X) is type(ref.X) and got.X.dtype == ref.X.dtype and got.X.shape == shape
    pd.testing.assert_frame_equal(got.var, ref.var)


@pytest.mark.parametrize("step", STEPS)
def test_boolean_matrix_counts_as_zeros_and_ones(pbmc, step):
    """Bools are counts of 0 and 1, as scanpy's filters take them (they were refused)."""
    pbmc.X = pbmc.X > 0
    ones = pbmc.copy()
    ones.X = ones.X.astype(np.uint8)
    STEPS[step](pbmc)
    STEPS[step](ones)
    assert pbmc.shape == ones.shape
    for frame, other in ((pbmc.obs, ones.obs), (pbmc.var, ones.var)):
        for col in frame.columns:
            if frame[col].dtype.kind in "iufb":
                np.testing.assert_allclose(frame[col].to_numpy(float), other[col].to_numpy(float), rtol=1e-6)
            else:
                assert frame[col].equals(other[col])


def test_missing_layer(pbmc):
    before = pbmc.copy()
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        gsc.pp.normalize_total(pbmc, layer="counts")
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        gsc.pp.log1p(pbmc, layer="counts")
    assert_adata_equal(pbmc, before)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_max_fraction(pbmc, bad):
    with pytest.raises(ValueError, match="max_fraction"):
        gsc.pp.normalize_total(pbmc, exclude_highly_expressed=True, max_fraction=bad)


@pytest.mark.parametrize("bad", [0, -5, np.inf, np.nan])
def test_bad_target_sum(pbmc, bad):
    before = pbmc.copy()
    with pytest.raises(ValueError, match="target_sum"):
        gsc.pp.normalize_total(pbmc, target_sum=bad)
    assert_adata_equal(pbmc, before)


def test_all_cells_zero(pbmc):
    pbmc.X = sp.csr_matrix(pbmc.shape, dtype=np.float32)
    before = pbmc.copy()
    with pytest.raises(ValueError, match="every cell has zero counts"):
        gsc.pp.normalize_total(pbmc)
    assert_adata_equal(pbmc, before)


def test_every_gene_left_out_names_max_fraction(pbmc):
    """max_fraction=0 leaves every gene out of the totals (scanpy: NaN factors): the message
    blames the setting, not the data."""
    before = pbmc.copy()
    with pytest.raises(ValueError, match=r"outside the 765 highly expressed genes left out \(max_fraction=0"):
        gsc.pp.normalize_total(pbmc, exclude_highly_expressed=True, max_fraction=0)
    assert_adata_equal(pbmc, before)
    pbmc.X = sp.csr_matrix(pbmc.shape, dtype=np.float32)  # no gene left out: the data's fault
    with pytest.raises(ValueError, match=r"every cell has zero counts \(so the median"):
        gsc.pp.normalize_total(pbmc, exclude_highly_expressed=True)


def test_not_an_array(pbmc):
    with pytest.raises(TypeError, match="expected a 2-D"):
        gsc.pp.filter_cells([[1, 2], [3, 4]], min_counts=1)
    with pytest.raises(TypeError, match="expected an AnnData"):
        gsc.pp.normalize_total(pbmc.X)


@pytest.mark.parametrize("step", ["scale", "filter_cells"])
def test_one_dimensional_array_names_its_shape(step):
    """An array in memory of the wrong rank: the error names its shape, not 'load it first'
    (log1p takes any shape, as scanpy's does)."""
    x = np.ones(3)
    call = {"scale": gsc.pp.scale, "filter_cells": lambda v: gsc.pp.filter_cells(v, min_counts=1)}[step]
    with pytest.raises(ValueError, match=r"2-D matrix .* 1-D array of shape \(3,\)") as err:
        call(x)
    assert "to_memory" not in str(err.value)
    np.testing.assert_array_equal(x, np.ones(3))


BACKED_STEPS = {
    **STEPS,
    "log1p": lambda a: gsc.pp.log1p(a),
    "highly_variable_genes": lambda a: gsc.pp.highly_variable_genes(a, n_top_genes=50),
    "scale": lambda a: gsc.pp.scale(a),
    "pca": lambda a: gsc.pp.pca(a, n_comps=5),
    "dendrogram": lambda a: gsc.tl.dendrogram(a, "bulk_labels"),  # named itself: the PCA it runs did
}


@pytest.mark.parametrize("step", BACKED_STEPS)
def test_backed_adata_asks_to_load_it(pbmc, tmp_path, step):
    """A backed X (an h5py dataset on disk) is refused with what to do; log1p gave
    AttributeError "'_CSRDataset' object has no attribute 'size'". The error is a TypeError and,
    as scanpy raises there, a NotImplementedError."""
    import anndata as ad

    pbmc.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(TypeError, match=f"{step}: expected .*to_memory") as e:
        BACKED_STEPS[step](backed)
    assert isinstance(e.value, NotImplementedError)
    assert_adata_equal(backed.to_memory(), pbmc)


def test_to_gpu_refuses_backed_adata(pbmc, tmp_path):
    """to_gpu moved layers and obsm but left X on disk, without a word; to_cpu has nothing to do."""
    import anndata as ad

    pbmc.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    obsm = dict(backed.obsm)
    with pytest.raises(ValueError, match="to_gpu: adata is backed .*to_memory"):
        gsc.get.to_gpu(backed)
    assert all(backed.obsm[k] is v for k, v in obsm.items())
    assert gsc.get.to_cpu(backed) is None and not gsc.get.is_on_gpu(backed)


def test_csc_is_accepted_and_left_as_it_is(pbmc):
    ref, _ = gsc.pp.calculate_qc_metrics(pbmc, percent_top=(5,))
    pbmc.X = pbmc.X.tocsc()
    obs, _ = gsc.pp.calculate_qc_metrics(pbmc, percent_top=(5,))
    assert obs.astype(ref.dtypes).equals(ref)  # same values; the count dtypes follow scanpy's CSC rule
    assert pbmc.X.format == "csc"  # QC does not rewrite the user's matrix


def test_coo_matrix_input(pbmc):
    ref = gsc.pp.filter_cells(pbmc.X, min_genes=100)
    out = gsc.pp.filter_cells(pbmc.X.tocoo(), min_genes=100)
    assert np.array_equal(ref[0], out[0]) and np.array_equal(ref[1], out[1])


LOG_STEPS = {
    "log1p": lambda a: gsc.pp.log1p(a),
    "hvg seurat": lambda a: gsc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=50),
    "hvg cell_ranger": lambda a: gsc.pp.highly_variable_genes(a, flavor="cell_ranger", n_top_genes=50),
    "hvg seurat_v3": lambda a: gsc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=50),
}


@pytest.mark.parametrize("step", LOG_STEPS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dense", [False, True])
def test_non_finite_values_raise_and_leave_adata(pbmc, step, value, dense):
    """scanpy writes NaN (dense log1p), selects genes from NaN statistics (seurat_v3, seurat
    with -inf) or fails inside pandas; ours say what they found, before any change."""
    if step == "hvg seurat_v3":
        pytest.importorskip("skmisc")
    _poison(pbmc, value)
    if dense:
        pbmc.X = pbmc.X.toarray()
    before = pbmc.copy()
    with pytest.raises(ValueError, match="NaN or inf|non-finite|below -1"):
        LOG_STEPS[step](pbmc)
    assert_adata_equal(pbmc, before)


def test_log1p_below_minus_one(pbmc):
    """log(1 + x) is NaN below -1: an error naming the minimum, not NaN in X."""
    _poison(pbmc, -3.0)
    before = pbmc.copy()
    with pytest.raises(ValueError, match=r"below -1 \(minimum -3\)"):
        gsc.pp.log1p(pbmc)
    assert_adata_equal(pbmc, before)
    pbmc.X.data[7] = -0.5  # scaled data above -1 stays allowed, as in scanpy
    gsc.pp.log1p(pbmc)
    assert np.isfinite(pbmc.X.data).all()


def test_seurat_hvg_on_counts_names_expm1_overflow(pbmc):
    """flavor='seurat' takes expm1 of log data: raw float32 counts above ~88 overflow to inf."""
    pbmc.X.data[7] = 200.0
    before = pbmc.copy()
    with pytest.raises(ValueError, match="too large for expm1"):
        gsc.pp.highly_variable_genes(pbmc, flavor="seurat", n_top_genes=50)
    assert_adata_equal(pbmc, before)


BAD_INTS = [(10.5, TypeError), ("10", TypeError), (True, TypeError)]


@pytest.mark.parametrize(
    ("call", "value", "error"),
    [("pca n_comps", v, e) for v, e in BAD_INTS + [(0, ValueError)]]
    + [("pca random_state", v, e) for v, e in [(-1, ValueError), ("x", TypeError), (1.5, TypeError)]]
    + [("pca chunk_size", v, e) for v, e in [(0, ValueError), (2.5, TypeError)]]
    + [("pca dtype", v, ValueError) for v in ["int8", "nope"]]
    + [("neighbors n_neighbors", v, e) for v, e in BAD_INTS + [(None, TypeError), (1, ValueError)]]
    + [("neighbors n_pcs", v, e) for v, e in [(-1, ValueError), (2.5, TypeError), ("5", TypeError)]],
)
def test_integer_parameters_are_checked(pbmc, call, value, error):
    """10.5 and "10" were coerced with int(); random_state=-1 failed inside numpy; n_pcs=-1 cut
    a column off the representation; dtype="int8" truncated the embedding. Each is refused,
    naming the parameter, before any change."""
    step, name = call.split()
    before = pbmc.copy()
    run = gsc.pp.pca if step == "pca" else gsc.pp.neighbors
    kwargs = {"n_comps": 5} if step == "pca" else {}
    with pytest.raises(error, match=name):
        run(pbmc, **{**kwargs, name: value})
    assert_adata_equal(pbmc, before)


def test_integer_parameters_accept_numpy_integers_and_generators(pbmc):
    a = gsc.pp.pca(pbmc, n_comps=np.int64(5), copy=True)
    b = gsc.pp.pca(pbmc, n_comps=5, random_state=np.random.RandomState(0), copy=True)
    assert_same(np.abs(a.obsm["X_pca"]), np.abs(b.obsm["X_pca"]))  # the exact solver ignores random_state
    gsc.pp.neighbors(a, n_neighbors=np.int32(10), n_pcs=np.int64(4))
    assert a.uns["neighbors"]["params"]["n_neighbors"] == 10


@pytest.mark.parametrize("step", ["normalize_total", "log1p", "regress_out"])
def test_view_warns_as_scanpy_and_parent_is_untouched(step):
    """scanpy's view_to_actual warning in the steps where scanpy gives it (scale: tests/test_scale.py),
    attributed to the caller's line; the parent keeps its values."""
    a = gsc.datasets.pbmc68k_reduced()
    a.obs["depth"] = np.asarray(a.X.sum(axis=1)).ravel()
    before = a.X.copy()
    v = a[:100]
    call = {"regress_out": lambda x: gsc.pp.regress_out(x, "depth")}.get(step, getattr(gsc.pp, step))
    with pytest.warns(UserWarning, match=r"^Received a view of an AnnData\. Making a copy\.$") as caught:
        call(v)
    assert [w.filename for w in caught if "view" in str(w.message)] == [__file__]
    assert not v.is_view and np.array_equal(a.X.toarray(), before.toarray())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        call(a[:100].copy())


def test_step_warnings_name_the_callers_line():
    """Warnings raised deep inside a step (HVG's non-integer counts, scale's densifying, the
    neighbour graph's PCA fallback) are attributed to the line that called the step."""
    a = gsc.datasets.pbmc68k_reduced()
    a.X = a.X.astype(np.float32)
    logged = a.copy()
    logged.X.data = np.log1p(logged.X.data)
    narrow = a[:, :60].copy()
    narrow.obsm.clear()  # no X_pca: neighbors computes one
    few = gsc.datasets.pbmc4k_half()[:300]
    gsc.pp.normalize_total(few)
    gsc.pp.log1p(few)
    few = few[:, np.asarray((few.X > 0).sum(axis=0)).ravel() < 2].copy()  # undefined dispersions
    calls = [
        (lambda: gsc.pp.highly_variable_genes(logged.copy(), flavor="seurat_v3", n_top_genes=100),
         "non-integers"),
        (lambda: gsc.pp.scale(a.copy()), "densifies"),
        (lambda: gsc.pp.highly_variable_genes(few, n_top_genes=few.n_vars), "number of normalized dispersions"),
        (lambda: gsc.pp.neighbors(narrow, n_neighbors=5), "Falling back"),
    ]
    for call, text in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        hits = [w for w in caught if text in str(w.message)]
        assert hits and all(w.filename == __file__ for w in hits), (text, [(w.filename, str(w.message)[:60]) for w in caught])


UNSIGNED_STEPS = {**STEPS, "log1p": gsc.pp.log1p, "scale": lambda a: gsc.pp.scale(a, zero_center=False),
                  "highly_variable_genes": gsc.pp.highly_variable_genes, "pca": lambda a: gsc.pp.pca(a, n_comps=5),
                  "aggregate": lambda a: gsc.get.aggregate(a, "bulk_labels", "sum"),
                  "neighbors_on_x": lambda a: gsc.pp.neighbors(a, use_rep="X"), "sqrt": gsc.pp.sqrt,
                  "pic_loglik": lambda a: gsc.pic.pic_loglik(a.X, np.full((a.n_vars, 2), 1e-3), np.zeros(a.n_obs, int),
                                                             np.ones(a.n_obs, int), np.full(a.n_obs, 0.5))}  # fmt: skip


@pytest.mark.parametrize("step", UNSIGNED_STEPS)
@pytest.mark.parametrize("name", ["indptr", "indices"])
def test_unsigned_index_arrays_are_refused_saying_how_to_cast(pbmc, step, name):
    """A CSR whose indptr (or indices) some writer stored as uint64: scipy cannot use it, and a
    step failed deep in numba or scipy; now one TypeError naming the array and the cast."""
    x = sp.csr_matrix(pbmc.X)
    setattr(x, name, getattr(x, name).astype(np.uint64))
    pbmc.X = x
    obs, var = list(pbmc.obs), list(pbmc.var)
    with pytest.raises(TypeError, match=rf"{name} is uint64.*astype\(np.int64\)"):
        UNSIGNED_STEPS[step](pbmc)
    assert pbmc.X is x and getattr(x, name).dtype == np.uint64  # (AnnData.copy would cast them)
    assert list(pbmc.obs) == obs and list(pbmc.var) == var


def test_neighbors_on_no_gene_is_refused(pbmc):
    """X with no column: a graph of all-zero distances was built without a word (scanpy raises)."""
    a = pbmc[:, :0].copy()
    with pytest.raises(ValueError, match=r"neighbors: the representation has no column \(700 cells x 0\)"):
        gsc.pp.neighbors(a, use_rep="X")
    assert "neighbors" not in a.uns and not a.obsp


@pytest.mark.parametrize(("call", "match"), [
    (lambda a: gsc.pp.log1p(a, base="e"), r"log1p: base must be a number or None, got 'e' \(str\)"),
    (lambda a: gsc.pp.normalize_total(a, target_sum="1e4"), r"target_sum must be a number or None, got '1e4'"),
    (lambda a: gsc.pp.normalize_total(a, exclude_highly_expressed=True, max_fraction="x"), r"max_fraction must be a number"),
    (lambda a: gsc.pp.filter_cells(a, min_genes="5"), r"filter_cells: min_genes must be a number or None, got '5'"),
    (lambda a: gsc.pp.filter_genes(a, max_counts=[3]), r"filter_genes: max_counts must be a number or None"),
    (lambda a: gsc.pp.highly_variable_genes(a, min_mean="a"), r"highly_variable_genes: min_mean must be a number"),
    (lambda a: gsc.pp.harmony_integrate(a, "phase", random_state="a"), r"random_state must be a non-negative integer or None"),
    (lambda a: gsc.pp.harmony_integrate(a, "phase", random_state=-3), r"random_state must be a non-negative integer"),
    (lambda a: gsc.pp.harmony_integrate(a, "phase", basis=["X_pca"]), r"basis must be the name of an obsm entry \(a str\)"),
])  # fmt: skip
def test_parameters_of_the_wrong_type_are_named(pbmc, call, match):
    """A string (or list) where a number or name belongs: a TypeError naming the parameter (Python's
    or NumPy's comparison error named none), the data unchanged."""
    a = pbmc.copy()
    a.obs["phase"] = np.where(np.arange(a.n_obs) % 2, "a", "b")
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 5))
    before = a.copy()
    with pytest.raises((TypeError, ValueError), match=match):  # ValueError: a number out of range
        call(a)
    assert_adata_equal(a, before)


def test_numeric_parameters_take_numpy_scalars_and_0d_arrays(pbmc):
    """What scanpy takes: numpy scalars and 0-d arrays (a reduction's result) pass the type check."""
    for call in (lambda a: gsc.pp.filter_cells(a, min_counts=np.array(10)),
                 lambda a: gsc.pp.normalize_total(a, target_sum=np.float32(1e4)),
                 lambda a: gsc.pp.normalize_total(a, target_sum=np.array(1e4)),
                 lambda a: gsc.pp.log1p(a, base=np.array(2.0)),
                 lambda a: gsc.pp.filter_genes(a, min_cells=np.int64(3)),
                 lambda a: gsc.pp.harmony_integrate(a, "phase", tau=np.array(0.0), max_iter_harmony=1)):  # fmt: skip
        a = pbmc.copy()
        a.obs["phase"] = np.where(np.arange(a.n_obs) % 2, "a", "b")
        a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 5))
        call(a)
    sc = pytest.importorskip("scanpy")
    ours, theirs = pbmc.copy(), pbmc.copy()  # the value given is what uns keeps, as in scanpy
    gsc.pp.log1p(ours, base=np.array(2.0))
    sc.pp.log1p(theirs, base=np.array(2.0))
    got, want = ours.uns["log1p"]["base"], theirs.uns["log1p"]["base"]
    assert type(got) is type(want) and got == want


def test_0d_array_parameters_on_the_device(device, pbmc):
    """0-d arrays reach the device's arithmetic as scalars: CuPy refuses NumPy arrays, 0-d ones
    too (the emulator now does as well); the results are those of the plain numbers."""
    import gpu_sc as gsc

    def run(a, *values):
        gsc.pp.filter_cells(a, min_counts=values[0])
        gsc.pp.normalize_total(a, target_sum=values[1])
        gsc.pp.log1p(a, base=values[2])
        return a

    want = run(pbmc.copy(), 10, 1e4, 2.0)
    got = gsc.get.to_gpu(pbmc, copy=True)
    run(got, np.array(10), np.array(1e4), np.array(2.0))
    assert got.n_obs == want.n_obs
    gsc.get.to_cpu(got)
    np.testing.assert_allclose(got.X.toarray(), want.X.toarray(), rtol=1e-6)


def test_pca_of_a_list_says_to_make_it_an_array():
    with pytest.raises(TypeError, match=r"pca: expected an AnnData or a matrix, got a list; pass numpy.asarray"):
        gsc.pp.pca([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]], n_comps=1)
