"""CPU primitives against plain NumPy on real counts, CSR and dense alike."""

from __future__ import annotations

import math
import numpy as np
import pytest
import scipy.sparse as sp

from _helpers import assert_close, assert_same

from gpu_sc import _ops


@pytest.fixture(params=["csr", "dense"])
def x(request, brain):
    x = brain.X.astype(np.float64)
    return x if request.param == "csr" else x.toarray()


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else x


def test_row_and_col_sums(x):
    d = _dense(x)
    mask = np.arange(d.shape[1]) % 4 == 1
    s, n = _ops.row_sums(_ops.parts(x), col_mask=mask)
    assert_same(s, d[:, mask].sum(1))  # integer counts: float64 sums exact in any order
    np.testing.assert_array_equal(n, (d[:, mask] != 0).sum(1))
    s, n = _ops.col_sums(_ops.parts(x))
    assert_same(s, d.sum(0))
    np.testing.assert_array_equal(n, (d != 0).sum(0))


def test_dense_reductions_by_row_bands(brain, monkeypatch):
    """Dense row sums, nonzero counts and flags are made band by band (a few rows at a time here):
    the whole matrix's results, with temporaries (the masked copy, the bool masks) of one band."""
    import tracemalloc

    from gpu_sc._ops import _layout

    d = brain.X.toarray().astype(np.float32)
    mask = np.arange(d.shape[1]) % 4 != 1
    limits = np.asarray(d.sum(1)).ravel() * 0.01
    want = (d[:, mask].sum(1, dtype=np.float64), np.count_nonzero(d[:, mask], 1), np.count_nonzero(d, 0),
            (d > limits[:, None]).any(0))
    tracemalloc.start()
    got = (*_ops.row_sums(_ops.parts(d), col_mask=mask), _ops.col_sums(_ops.parts(d))[1],
           _ops.flag_cols_above(_ops.parts(d), limits))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < d.nbytes / 3  # whole-matrix temporaries: 3/4 of X for the masked copy alone (measured 0.94)
    monkeypatch.setattr(_layout, "DENSE_CHUNK", 3 * d.shape[1] + 7)  # bands of 3 rows, the last shorter
    banded = (*_ops.row_sums(_ops.parts(d), col_mask=mask), _ops.col_sums(_ops.parts(d))[1],
              _ops.flag_cols_above(_ops.parts(d), limits))
    for w, g, b in zip(want, got, banded, strict=True):
        assert_same(g, w.astype(g.dtype))
        assert_same(b, g)


@pytest.mark.parametrize("ddof", [0, 1])
def test_col_mean_var(x, ddof):
    d = _dense(x)
    mean, var = _ops.col_mean_var(_ops.parts(x), ddof=ddof)
    assert_same(mean, d.mean(0))  # an exact integer sum over the same n
    # another variance formula: float64 sums over cells, relative to the mean of squares (cancellation)
    ref = d.var(0, ddof=ddof)
    assert_close(var, ref, dtype=np.float64, n_terms=d.shape[0], scale=float((ref + d.mean(0) ** 2).max()))


def test_top_sums(x):
    d = _dense(x)
    ns = [1, 3, 50, 999]
    ref = np.cumsum(-np.sort(-d, axis=1), axis=1)[:, np.array(ns) - 1]
    assert_same(_ops.top_sums(_ops.parts(x), ns), ref)  # integer counts: exact


def test_flag_cols_above(x):
    d = _dense(x)
    limits = 0.05 * d.sum(1)
    np.testing.assert_array_equal(
        _ops.flag_cols_above(_ops.parts(x), limits), (d > limits[:, None]).any(0)
    )


def test_divide_rows_skips_zero_divisors(x):
    d = _dense(x).copy()
    divisors = np.arange(d.shape[0], dtype=np.float64) % 5  # every fifth row: zero
    y = x.copy()
    _ops.divide_rows(_ops.parts(y), divisors)
    safe = np.where(divisors == 0, 1, divisors)
    np.testing.assert_array_equal(_dense(y), d / safe[:, None])


def test_parts_rejects_other_layouts(brain):
    with pytest.raises(TypeError, match="CSR"):
        _ops.parts(brain.X.tocsc())
    with pytest.raises(TypeError, match="C-contiguous"):
        _ops.parts(np.asfortranarray(brain.X[:5].toarray()))


def test_sparse_gram_equals_blas(brain):
    """The numba pair sweep (very sparse CSR) and the dense-block BLAS path give the same X^T X,
    for real counts and for rows with unsorted and repeated column indices."""
    from gpu_sc._ops import gram

    x = sp.csr_matrix(brain.X)
    p = _ops.parts(x)
    assert gram._pairs_cheaper(p)  # the bundled brain data: ~60 of 1,000 genes per cell
    dense = x.toarray().astype(np.float64)
    assert_same(gram.gram(p), dense.T @ dense)  # products and sums of integer counts: exact
    odd = sp.csr_matrix((np.array([1.0, 2, 3, 4, 5]), np.array([2, 0, 2, 1, 1]), np.array([0, 3, 5])), shape=(2, 3))
    assert not odd.has_canonical_format
    d = odd.toarray()
    assert_same(gram._sparse_gram(_ops.parts(odd)), d.T @ d)  # small integers: exact


@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("cls", [sp.csr_matrix, sp.csr_array])
def test_take_cols_is_scipys_column_indexing(brain, cls, index):
    from gpu_sc._ops.take_cols import take_cols

    x = cls(brain.X[:300], dtype=np.float32)
    x.indptr, x.indices = x.indptr.astype(index), x.indices.astype(index)
    x.data[::5] = 0  # explicit zeros stay stored, as in scipy
    keep = np.random.default_rng(0).random(x.shape[1]) < 0.4
    got, ref = take_cols(x, keep), x[:, keep]
    assert type(got) is type(ref) and got.shape == ref.shape
    for name in ("data", "indices", "indptr"):
        assert getattr(got, name).dtype == getattr(ref, name).dtype
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_take_cols_arrays_is_take_cols_on_the_device(device, brain, index):
    """The GPU's column take (filter_genes) gives the host's: values, order within rows (unsorted
    rows and duplicates kept), every mask from none to all kept."""
    import cupyx.scipy.sparse as cpsp

    from gpu_sc._ops.take_cols import take_cols, take_cols_arrays

    x = sp.csr_matrix(brain.X[:300], dtype=np.float32)
    x.indptr, x.indices = x.indptr.astype(index), x.indices.astype(index)
    x.indices[x.indptr[1] : x.indptr[2]] = x.indices[x.indptr[1] : x.indptr[2]][::-1].copy()  # unsorted
    x.indices[x.indptr[2] + 1] = x.indices[x.indptr[2]]  # a duplicate
    x.data[::5] = 0
    rng = np.random.default_rng(0)
    for keep in (rng.random(x.shape[1]) < 0.4, np.zeros(x.shape[1], bool), np.ones(x.shape[1], bool)):
        ref = take_cols(x, keep)
        got = take_cols_arrays(cpsp.csr_matrix(x), keep)
        assert isinstance(got, cpsp.csr_matrix) and got.shape == ref.shape
        got = got.get()
        for name in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_range_one_pass_as_numpy(dtype):
    from gpu_sc._values import value_range

    rng = np.random.default_rng(0)
    for case in range(40):
        x = (rng.standard_normal(3 * 2**20 if case == 0 else 57) * 10.0 ** rng.integers(-30, 30)).astype(dtype)
        if case % 4 == 1:
            x[rng.integers(x.size)] = np.inf * rng.choice([-1, 1])
        elif case % 4 == 2:
            x[:] = -0.0
        got = value_range(x)
        assert got == (float(x.min()), float(x.max())) and str(got) == str((float(x.min()), float(x.max())))
    for nan in (np.nan, -np.nan):  # either sign of NaN, wherever it is
        x = np.arange(100, dtype=dtype)
        x[37] = nan
        assert all(np.isnan(value_range(x)))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.float64])
def test_row_sums_every_value_type(dtype):
    """Rows are summed in four running float64 sums: each row's exact sum (math.fsum) for
    float32 and integer values (float64 holds their sums exactly over this range of magnitudes),
    the exact sum to float64 round-off for float64 values; with and without a column mask;
    nonzero counts skip stored zeros."""
    rng = np.random.default_rng(3)
    x = sp.random(200, 301, density=0.2, format="csr", random_state=4)
    values = rng.lognormal(0, 1.5, x.nnz) * rng.choice([-1, 1], x.nnz)
    x.data = (np.round(values) if np.dtype(dtype).kind == "i" else values).astype(dtype)
    x.data[::5] = 0  # stored zeros
    mask = rng.random(301) < 0.4
    for m in (None, mask):
        s, n = _ops.row_sums(_ops.parts(x), col_mask=m)
        for r in range(x.shape[0]):
            seg = slice(x.indptr[r], x.indptr[r + 1])
            v = x.data[seg].astype(np.float64)
            v = v if m is None else v[m[x.indices[seg]]]
            if dtype == np.float64:
                assert s[r] == pytest.approx(math.fsum(v), rel=1e-13, abs=1e-12)
            else:
                assert s[r] == math.fsum(v)
            assert n[r] == np.count_nonzero(v)


def test_top_sums_values_of_every_kind():
    """Small integers are tallied, other values sorted: rows mixing both, negatives, values at
    and above the tally's 64 levels and runs of ties give the sums of a full descending sort."""
    rng = np.random.default_rng(5)
    rows = [rng.poisson(1.5, 300) + 1.0, rng.normal(0, 40, 300), np.full(300, 63.0), np.full(300, 64.0),
            np.where(rng.random(300) < 0.5, rng.poisson(3, 300), rng.random(300) * 90),
            rng.integers(-5, 150, 300).astype(float), np.array([2.0]), np.array([])]  # fmt: skip
    x = sp.csr_matrix((np.concatenate(rows), np.concatenate([np.arange(r.size) for r in rows]),
                       np.cumsum([0] + [r.size for r in rows])), shape=(len(rows), 300))  # fmt: skip
    ns = [1, 2, 63, 64, 65, 150, 299, 300, 1000]
    got = _ops.top_sums(_ops.parts(x), ns)
    for i, r in enumerate(rows):
        desc = np.sort(r)[::-1]
        np.testing.assert_allclose(got[i], [desc[:n].sum() for n in ns], rtol=1e-13, atol=1e-12)


def test_segment_ids_with_empty_segments():
    """The segment of each stored value from a pointer array, empty segments included (one
    searchsorted on either device: cupy.repeat takes no array of repeats)."""
    from gpu_sc._ops._layout import segment_ids

    ptr = np.array([0, 0, 2, 2, 3, 6], dtype=np.int32)
    np.testing.assert_array_equal(segment_ids(ptr), np.repeat(np.arange(5), np.diff(ptr)))
    assert segment_ids(np.array([0], dtype=np.int64)).size == 0
