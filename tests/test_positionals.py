"""scanpy still takes the arguments that were positional before they became keyword-only (with
a FutureWarning), and leiden's resolution is positional: a call swapped from sc. to gsc. must
run and give scanpy's result."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import gpu_sc as gsc

CALLS = {
    "filter_cells": (lambda m, a: m.pp.filter_cells(a, 600), "obs"),
    "filter_genes": (lambda m, a: m.pp.filter_genes(a, 30), "var"),
    "normalize_total": (lambda m, a: m.pp.normalize_total(a, 1e4, False, 0.05, "nf"), "X"),
    "scale": (lambda m, a: m.pp.scale(a, False, 5.0), "X"),
    "highly_variable_genes": (lambda m, a: (m.pp.log1p(a), m.pp.highly_variable_genes(a, None, 50)), "var"),
}


@pytest.mark.parametrize("step", list(CALLS))
def test_old_positionals_as_scanpy(pbmc, step):
    call, where = CALLS[step]
    ours, theirs = pbmc.copy(), pbmc.copy()
    with pytest.warns(FutureWarning, match="positional"):
        call(gsc, ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call(sc, theirs)
    assert ours.shape == theirs.shape
    if where == "X":
        np.testing.assert_allclose(ours.X.toarray() if hasattr(ours.X, "toarray") else ours.X,
                                   theirs.X.toarray() if hasattr(theirs.X, "toarray") else theirs.X,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        # and every column a positional names (normalize_total's key_added 'nf' was never checked)
        assert list(ours.obs.columns) == list(theirs.obs.columns)
        for c in theirs.obs.columns:
            if theirs.obs[c].dtype.kind in "iuf":
                np.testing.assert_allclose(ours.obs[c], theirs.obs[c], rtol=1e-5, err_msg=c)
            else:
                pd.testing.assert_series_equal(ours.obs[c], theirs.obs[c])
    else:
        got, ref = getattr(ours, where), getattr(theirs, where)
        assert list(got.columns) == list(ref.columns)
        for c in ref.columns:
            if ref[c].dtype.kind == "f":
                np.testing.assert_allclose(got[c], ref[c], rtol=1e-5, atol=1e-6, err_msg=c)  # float32 statistics
            else:
                pd.testing.assert_series_equal(got[c], ref[c], check_dtype=False)


def test_positionals_refused_clearly(pbmc):
    a = pbmc.copy()
    with pytest.raises(TypeError, match="by keyword"):
        gsc.pp.filter_cells(a, 1, 2, 3, 4, True, False, "extra")
    with pytest.raises(TypeError, match="both by position and by keyword"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pp.filter_cells(a, 1, min_counts=2)
    assert a.n_obs == pbmc.n_obs


def test_leiden_resolution_by_position(pbmc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(pbmc, n_neighbors=10)
    ours, theirs = pbmc.copy(), pbmc.copy()
    kw = {"flavor": "igraph", "n_iterations": 2, "directed": False}
    gsc.tl.leiden(ours, 0.3, **kw)
    sc.tl.leiden(theirs, 0.3, **kw)
    pd.testing.assert_series_equal(ours.obs["leiden"], theirs.obs["leiden"])
    assert ours.uns["leiden"]["params"]["resolution"] == 0.3
