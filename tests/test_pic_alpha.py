"""picseq's alpha regression (PICSEQ.md section 4): the alpha genes and the LASSO's CV R^2,
against the definitions written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.pic import _alpha

pytest.importorskip("sklearn")


def _alpha_genes_by_hand(x: np.ndarray, rows: np.ndarray, n_top: int, window: int) -> np.ndarray:
    """Pearson r of each gene with the cells' totals (over `rows`), minus the median of the r of
    the `window` genes around it in order of mean expression (the ends repeat the first and last
    gene's r); the n_top largest, among the genes that vary."""
    sub = x[rows]
    tot = sub.sum(axis=1)
    varies = np.flatnonzero(np.ptp(sub, axis=0) > 0)
    r = np.array([np.corrcoef(sub[:, g], tot)[0, 1] for g in varies])
    order = np.argsort(sub.mean(axis=0)[varies], kind="stable")
    r_sorted = r[order]
    n = r_sorted.size
    h = min(window, n if n % 2 else n + 1) // 2
    med = np.array([np.median([r_sorted[min(max(j, 0), n - 1)] for j in range(i - h, i + h + 1)]) for i in range(n)])
    resid = np.empty(n)
    resid[order] = r_sorted - med
    return varies[np.argsort(-resid, kind="stable")[:n_top]]


@pytest.mark.parametrize(("n_top", "window"), [(8, 7), (100, 101)])
def test_alpha_genes_are_the_top_correlates_of_depth_by_hand(n_top, window):
    """Genes that do not vary over the rows never enter (their r is undefined; a constant one's
    round-off variance too), also where
    n_top asks for more genes than vary; the rows given are the cells read, not the others."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 70, 40
    depth = rng.uniform(0.3, 3.0, n_cells)
    x = rng.poisson(depth[:, None] * rng.gamma(0.8, 4.0, n_genes)).astype(float)
    x[:, 3] = 0.0  # expressed nowhere
    rows = np.sort(rng.choice(n_cells, 50, replace=False))
    x[:, 4] = 0.0
    x[np.setdiff1d(np.arange(n_cells), rows), 4] = 50.0  # expressed only in cells not read
    x[:, 5] = 0.23  # the same everywhere: E[x^2] - E[x]^2 leaves it 1.8e-16
    means = x[rows].mean(axis=0)
    assert np.unique(means).size == n_genes - 1  # no ties in the order of mean expression
    want = _alpha_genes_by_hand(x, rows, n_top, window)
    got = _alpha.alpha_genes(sp.csr_matrix(x), rows, n_top=n_top, window=window)
    np.testing.assert_array_equal(got, want)
    assert not {3, 4, 5} & set(got.tolist())
    assert got.size == min(n_top, n_genes - 3)


def test_alpha_model_r2_is_the_cross_validated_r2_at_the_chosen_lambda():
    """R^2 of the out-of-fold predictions of a LASSO at the lambda LassoCV chose, on the counts
    times `scale`, over the same shuffled folds (sklearn's r2_score of cross_val_predict)."""
    from sklearn.linear_model import Lasso
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (120, 6)).astype(float)
    alpha = np.clip(0.5 + 0.05 * (counts[:, 0] - counts[:, 1]) + rng.normal(0, 0.05, 120), 0, 1)
    model, r2 = _alpha.fit_alpha_model(sp.csr_matrix(counts), alpha, np.array([0, 1, 2]), scale=0.1, cv=4, seed=2)
    f = counts[:, :3] * 0.1
    folds = KFold(4, shuffle=True, random_state=2)
    pred = cross_val_predict(Lasso(alpha=model.alpha_, max_iter=5000), f, alpha, cv=folds)
    assert r2 == pytest.approx(r2_score(alpha, pred), rel=1e-12)
    assert 0.5 < r2 < 1
    np.testing.assert_allclose(model.predict(f), model.coef_ @ f.T + model.intercept_)
    _, flat = _alpha.fit_alpha_model(sp.csr_matrix(counts), np.full(120, 0.5), np.array([0, 1]), scale=0.1, cv=4)
    assert np.isnan(flat)  # alpha does not vary: no R^2
