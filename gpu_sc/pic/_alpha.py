"""The published alpha regression: LASSO on alpha genes of simulated PICs (PICSEQ.md section 4)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._stats import r_squared


def _running_median(v: np.ndarray, w: int) -> np.ndarray:
    h = w // 2
    pad = np.pad(v, h, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * h + 1)
    return np.median(win, axis=1)


#: variance, relative to E[x^2], below which a gene is constant (a coefficient of variation of 1e-6)
_CONSTANT = 1e-12


def alpha_genes(x: sp.csr_matrix, rows: np.ndarray, n_top: int = 100, window: int = 101):
    """Top genes by correlation with cell total UMIs, minus a running median over expression
    (`x` float64: the constant-gene guard below is float64's round-off)."""
    sub = x[rows]
    tot = np.asarray(sub.sum(1)).ravel()
    mean = np.asarray(sub.mean(0)).ravel()
    sq = np.asarray(sub.multiply(sub).mean(0)).ravel()
    var = sq - mean**2
    # E[x^2] - E[x]^2 leaves a constant gene a round-off variance (1.8e-16 for 0.23 in 50 cells),
    # whose correlation is then noise over noise: such a gene has none
    sd = np.sqrt(np.where(var > _CONSTANT * sq, var, 0))
    cov = np.asarray(sub.T @ tot).ravel() / len(rows) - mean * tot.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        cor = cov / (sd * tot.std())
    expressed = np.flatnonzero(sd > 0)
    order = expressed[np.argsort(mean[expressed], kind="stable")]
    resid = np.full(x.shape[1], -np.inf)
    c = cor[order]
    resid[order] = c - _running_median(c, min(window, len(c) | 1))
    top = np.argsort(-resid, kind="stable")[:n_top]
    return top[np.isfinite(resid[top])]


def fit_alpha_model(sim_x: sp.csr_matrix, sim_alpha: np.ndarray, features: np.ndarray, *,
                    scale: float, cv: int = 10, seed: int = 0):
    """LassoCV on scaled counts of `features`; returns (model, CV R^2 at the chosen lambda)."""
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.linear_model import Lasso

    f = np.asarray(sim_x[:, features].todense()) * scale
    folds = KFold(cv, shuffle=True, random_state=seed)
    model = LassoCV(cv=folds, random_state=seed, max_iter=5000).fit(f, sim_alpha)
    pred = cross_val_predict(Lasso(alpha=model.alpha_, max_iter=5000), f, sim_alpha, cv=folds)
    return model, r_squared(sim_alpha, pred)
