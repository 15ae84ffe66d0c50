"""log1p equals scanpy's."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from _helpers import as_type, assert_close, to_host

import gpu_sc as gsc


@pytest.mark.parametrize("base", [None, 2, 10.0])
def test_matches_scanpy(pbmc, cpu_type, base):
    sc.pp.normalize_total(pbmc, target_sum=1e4)
    pbmc.X = as_type(pbmc.X, cpu_type)
    ref = pbmc.copy()
    sc.pp.log1p(ref, base=base)
    gsc.pp.log1p(pbmc, base=base)
    assert pbmc.uns["log1p"] == {"base": base}
    assert pbmc.X.dtype == ref.X.dtype
    # numpy's log1p, then a division by numpy's log(base) in float64, rounded once (a Python float
    # divisor once made it a float32 division: 94 values a step off): scanpy's values to the bit
    np.testing.assert_array_equal(to_host(pbmc.X), to_host(ref.X))


def test_matrix_input(pbmc):
    x = pbmc.X.copy()
    out = gsc.pp.log1p(x, copy=True)
    assert out is not x and (x != pbmc.X).nnz == 0
    assert_close(out, np.log1p(pbmc.X.toarray()))  # float32 log1p: a step or two per implementation
    dense = pbmc.X.toarray()
    assert gsc.pp.log1p(dense) is dense


def test_integer_input_becomes_float64(pbmc):
    pbmc.X = pbmc.X.astype(np.int32)
    gsc.pp.log1p(pbmc)
    assert pbmc.X.dtype == np.float64


def test_layer_obsm_copy(pbmc):
    pbmc.layers["a"] = pbmc.X.copy()
    pbmc.obsm["b"] = pbmc.X[:, :10].toarray()
    out = gsc.pp.log1p(pbmc, layer="a", copy=True)
    assert (pbmc.layers["a"] != pbmc.X).nnz == 0 and "log1p" not in pbmc.uns
    assert_close(out.layers["a"], np.log1p(pbmc.X.toarray()))  # as test_matrix_input
    gsc.pp.log1p(pbmc, obsm="b")
    assert_close(pbmc.obsm["b"], np.log1p(pbmc.X[:, :10].toarray()))


def test_warns_when_already_logged(pbmc):
    gsc.pp.log1p(pbmc)
    with pytest.warns(UserWarning, match="already log-transformed"):
        gsc.pp.log1p(pbmc)


@pytest.mark.parametrize("base", [1, 0, -2])
def test_bad_base(pbmc, base):
    with pytest.raises(ValueError, match="base"):
        gsc.pp.log1p(pbmc, base=base)


def test_deprecated_x_keyword_as_scanpy():
    """scanpy still takes log1p(X=...) with a FutureWarning; so do we, with the same message."""
    import warnings

    import scanpy as sc

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = gsc.pp.log1p(X=x.copy())
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        ref = sc.pp.log1p(X=x.copy())
    np.testing.assert_array_equal(got, ref)
    assert [(w.category, str(w.message)) for w in ours] == [(w.category, str(w.message)) for w in theirs]
    with pytest.raises(TypeError, match="both `X` and `data`"):
        gsc.pp.log1p(x, X=x)


def test_chunked_on_backed_adata_as_scanpy(tmp_path):
    """scanpy's tests/test_preprocessing.py::test_log1p: chunked=True on an AnnData backed on disk;
    a bad value anywhere leaves the file unchanged."""
    import anndata as ad

    x = np.random.default_rng(0).random((200, 10)).astype(np.float32)
    a = ad.AnnData(x.copy())
    a.filename = tmp_path / "backed.h5ad"
    gsc.pp.log1p(a, chunked=True, chunk_size=33)
    assert_close(a.X[:], np.log1p(x), dtype=np.float32)  # one float32 log1p: an ulp at most
    assert a.uns["log1p"] == {"base": None}
    bad = x.copy()
    bad[150, 3] = -2
    b = ad.AnnData(bad.copy())
    b.filename = tmp_path / "bad.h5ad"
    with pytest.raises(ValueError, match="below -1"):
        gsc.pp.log1p(b, chunked=True, chunk_size=33)
    assert np.array_equal(b.X[:], bad)


def test_backed_refusals_in_scanpys_words(tmp_path):
    """scanpy's tests/test_backed.py::test_log1p_backed_errors: read-only file with chunked=True, r+
    without chunked, a layer; NotImplementedError with scanpy's texts, the file unchanged."""
    import anndata as ad

    x = np.random.default_rng(1).random((40, 6)).astype(np.float32)
    path = tmp_path / "x.h5ad"
    ad.AnnData(x.copy()).write_h5ad(path)
    a = ad.read_h5ad(path, backed="r")
    with pytest.raises(NotImplementedError, match=r"log1p is not implemented for backed AnnData with backed mode not r\+"):
        gsc.pp.log1p(a, chunked=True)
    a.file.close()
    a = ad.read_h5ad(path, backed="r+")
    with pytest.raises(NotImplementedError, match=f"log1p is not implemented for matrices of type {type(a.X)} "
                                                  "without `chunked=True`"):  # fmt: skip
        gsc.pp.log1p(a)
    a.layers["X_copy"] = a.X
    with pytest.raises(NotImplementedError, match=f"log1p is not implemented for matrices of type {type(a.X)} "
                                                  "from layers"):  # fmt: skip
        gsc.pp.log1p(a, layer="X_copy")
    assert np.array_equal(a.X[:], x)
    a.file.close()


def test_chunked_backed_integer_x_is_refused_before_truncating(tmp_path):
    """Logs written back into an integer dataset would be truncated: refused, the file unchanged."""
    import anndata as ad

    x = np.array([[1, 2], [3, 0]], dtype=np.int32)
    a = ad.AnnData(x.copy())
    a.filename = tmp_path / "ints.h5ad"
    with pytest.raises(NotImplementedError, match="int32 values"):
        gsc.pp.log1p(a, chunked=True)
    assert np.array_equal(a.X[:], x) and "log1p" not in a.uns


def test_chunked_on_backed_adata_with_base_as_scanpy(tmp_path):
    """chunked=True on a backed AnnData honours `base` in every chunk, as scanpy's chunked path."""
    import anndata as ad

    x = np.random.default_rng(1).random((200, 10)).astype(np.float32) * 50
    a, ref = ad.AnnData(x.copy()), ad.AnnData(x.copy())
    a.filename, ref.filename = tmp_path / "ours.h5ad", tmp_path / "scanpy.h5ad"
    gsc.pp.log1p(a, base=2, chunked=True, chunk_size=33)
    sc.pp.log1p(ref, base=2, chunked=True, chunk_size=33)
    assert a.uns["log1p"] == ref.uns["log1p"] == {"base": 2}
    # numpy's log1p, then a division by numpy's log(2) in float64, rounded once: as in memory
    assert_close(a.X[:], ref.X[:], dtype=np.float32)
    assert_close(a.X[:], np.log1p(x.astype(np.float64)) / np.log(2), dtype=np.float32)


def test_bad_values_of_a_view_refused_while_it_is_a_view(pbmc):
    """A value below -1 in a view: the error leaves it a view of its parent (it became an object
    of its own first, so later writes to the parent no longer showed through it)."""
    a = pbmc[:120].copy()
    a.X.data[0] = -5.0
    v = a[:60]
    with pytest.raises(ValueError, match="below -1"):
        gsc.pp.log1p(v)
    assert v.is_view
    a.X[0, 0] = 123.0
    assert v.X[0, 0] == 123.0
    w = a[60:]  # a good view is logged as scanpy logs it (made actual)
    ref = w.copy()
    sc.pp.log1p(ref)
    gsc.pp.log1p(w)
    assert not w.is_view
    np.testing.assert_array_equal(w.X.toarray(), ref.X.toarray())
