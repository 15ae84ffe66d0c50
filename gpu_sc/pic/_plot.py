"""Plots of PIC-seq results. matplotlib (imported only when a plot is drawn) builds each
`matplotlib.figure.Figure` without pyplot, so no backend is switched and no figure is left open;
PNGs are written through Agg. Each function returns the Figure and writes it when `save` is
given: in the format the path's extension names (.pdf, .svg, ...), else PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import (
    OBS_PIC_A,
    OBS_PIC_ALPHA,
    OBS_PIC_B,
    OBS_PIC_STATUS,
    OBS_TRUE_ALPHA,
    UNS_PIC,
    UNS_PIC_INTERACTION,
)
from .._stats import r_squared
from .._validation import check_anndata, check_int
from ._args import text
from ._expected import obs_column, ok_mask
from ._frequencies import FREQUENCY_COLUMNS


def _figure(rows: int, cols: int, figsize):
    """A Figure outside pyplot (no global state, nothing to close; PNG through Agg) and its
    axes grid."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib ships with the test/bench extras
        msg = "gpu_sc.pic plots need matplotlib: pip install matplotlib."
        raise ImportError(msg) from e
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _finish(fig, save):
    fig.tight_layout()
    if save is not None:
        _save(fig, save)
    return fig


def _save(fig, path) -> None:
    """At `path`, in the format its extension names (.pdf, .svg, ...; PNG for any other); its
    missing folders made, as write_plots makes its own."""
    if not isinstance(path, str | os.PathLike) or not str(path) or str(path).endswith(("/", os.sep)) \
            or Path(path).is_dir():
        msg = f"save={path!r} is no file name; give a file to write, e.g. save='pairs.png'."
        raise ValueError(msg)
    fmt = Path(path).suffix[1:].lower()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(path), dpi=100, format=fmt if fmt in fig.canvas.get_supported_filetypes() else "png")


def _order(pics: AnnData, key: str, present: pd.Index) -> list[str]:
    """Group order: pics.uns['pic'][key] (those present) then the rest, sorted."""
    info = pics.uns.get(UNS_PIC)
    first = [str(g) for g in info.get(key, [])] if isinstance(info, dict) and info.get(key) is not None else []
    present = [str(p) for p in present]
    return [g for g in first if g in present] + sorted(g for g in present if g not in first)


def pair_heatmap(pics: AnnData, *, a_key: str = OBS_PIC_A, b_key: str = OBS_PIC_B,
                 status_key: str | None = OBS_PIC_STATUS, normalize: bool = False,
                 annotate: bool = True, frequencies: pd.DataFrame | None = None,
                 save: str | Path | None = None):  # fmt: skip
    """Heatmap of how many PICs (status 'ok') were assigned to each A group x B group.

    `normalize`: show each row (A group) as fractions of its PICs. `frequencies`: a table of
    :func:`gpu_sc.pic.pair_frequencies` for one condition instead: each cell shows the pair's
    fraction of all PICs and its interval. Returns the Figure.
    """
    check_anndata(pics, step="pair_heatmap", name="pics")
    if normalize and frequencies is not None:
        msg = ("pair_heatmap: normalize=True shows PIC counts as fractions of their row; frequencies are "
               "fractions of all PICs already: pass one of them.")
        raise ValueError(msg)
    if frequencies is not None:
        tab, lo, hi = _frequency_grid(pics, frequencies)
        n_shown = int(frequencies["n_pics"].iloc[0])
    else:
        use = ok_mask(pics, status_key=status_key, step="pair_heatmap")
        a = obs_column(pics, a_key, step="pair_heatmap", what="the assigned A group").astype(object)[use]
        b = obs_column(pics, b_key, step="pair_heatmap", what="the assigned B group").astype(object)[use]
        if len(a) == 0:
            msg = "pair_heatmap: no PIC with status 'ok'."
            raise ValueError(msg)
        missing = int((a.isna() | b.isna()).sum())
        if missing:
            msg = (f"pair_heatmap: {missing} PICs with status 'ok' have no assigned group in obs[{a_key!r}] or "
                   f"obs[{b_key!r}]; fill them or mark those PICs in obs[{status_key!r}].")
            raise ValueError(msg)
        # as arrays: crosstab lines Series up by their index, which repeated PIC names break
        tab = pd.crosstab(a.astype(str).to_numpy(), b.astype(str).to_numpy(), rownames=[a_key], colnames=[b_key])
        tab = tab.loc[_order(pics, "groups_a", tab.index), _order(pics, "groups_b", tab.columns)]
        n_shown = int(tab.to_numpy().sum())
    values = tab.to_numpy(dtype=float)
    if normalize and frequencies is None:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    fig, axes = _figure(1, 1, (3.2 + (0.9 if frequencies is not None else 0.5) * values.shape[1],
                               2.2 + 0.4 * values.shape[0]))  # fmt: skip
    ax = axes[0, 0]
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(values.shape[1]), tab.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(values.shape[0]), tab.index, fontsize=7)
    ax.set_xlabel(b_key)
    ax.set_ylabel(a_key)
    if annotate and values.size <= 400:
        top = values.max() if values.size else 0
        for i, j in np.ndindex(values.shape):
            if frequencies is not None:
                txt = f"{values[i, j]:.3f}\n[{lo[i, j]:.3f}, {hi[i, j]:.3f}]"
            else:
                txt = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=6 if frequencies is None else 5,
                    color="black" if values[i, j] > 0.6 * top else "white")  # fmt: skip
    label = "fraction of PICs" if frequencies is not None else "fraction of row" if normalize else "PICs"
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"PIC pairs (n = {n_shown})")
    return _finish(fig, save)


def _frequency_grid(pics: AnnData, freq: pd.DataFrame):
    """A x B grids of fraction, ci_low and ci_high from one condition's pair_frequencies table."""
    need = {OBS_PIC_A, OBS_PIC_B, "fraction", "ci_low", "ci_high", "n_pics"}
    if not isinstance(freq, pd.DataFrame) or not need <= set(freq.columns):
        msg = ("pair_heatmap: frequencies must be the DataFrame of gsc.pic.pair_frequencies "
               f"(columns {sorted(need)}), got {type(freq).__name__}.")  # fmt: skip
        raise ValueError(msg)
    if freq.empty:
        msg = "pair_heatmap: frequencies has no rows; pass one condition's rows of gsc.pic.pair_frequencies."
        raise ValueError(msg)
    if freq[[OBS_PIC_A, OBS_PIC_B]].duplicated().any():
        extra = [c for c in freq.columns if c not in FREQUENCY_COLUMNS]  # the condition_key column
        example = f", e.g. freq[freq[{extra[0]!r}] == {freq[extra[0]].iloc[0]!r}]" if extra else ""
        msg = ("pair_heatmap: frequencies holds several rows per pair (several conditions); pass one "
               f"condition's rows{example}.")
        raise ValueError(msg)
    a, b = freq[OBS_PIC_A].astype(str), freq[OBS_PIC_B].astype(str)
    rows, cols = _order(pics, "groups_a", a.unique()), _order(pics, "groups_b", b.unique())
    grids = [freq.assign(a=a, b=b).pivot(index="a", columns="b", values=v).loc[rows, cols]
             for v in ("fraction", "ci_low", "ci_high")]  # fmt: skip
    return grids[0], grids[1].to_numpy(), grids[2].to_numpy()


def alpha_hist(pics: AnnData, *, alpha_key: str = OBS_PIC_ALPHA, true_key: str = OBS_TRUE_ALPHA,
               status_key: str | None = OBS_PIC_STATUS, bins: int = 30,
               save: str | Path | None = None):  # fmt: skip
    """Histogram of the A share alpha of PICs with status 'ok'; when pics.obs[`true_key`]
    exists (synthetic PICs), a second panel plots estimated vs true alpha with R² and MAE."""
    check_anndata(pics, step="alpha_hist", name="pics")
    if not isinstance(bins, str) and np.ndim(bins) == 0:  # a count (edges and rules go to numpy)
        check_int(bins, step="alpha_hist", name="bins")
    use = ok_mask(pics, status_key=status_key, step="alpha_hist")
    if not use.any():
        msg = "alpha_hist: no PIC with status 'ok'."
        raise ValueError(msg)
    alpha = _numbers(obs_column(pics, alpha_key, step="alpha_hist", what="the A share"), alpha_key)
    alpha_u = alpha[use & np.isfinite(alpha)]
    has_true = true_key in pics.obs
    t = _numbers(pics.obs[true_key], true_key) if has_true else None
    outside = int(((alpha_u < 0) | (alpha_u > 1)).sum())  # not drawn: the axis is [0, 1]
    fig, axes = _figure(1, 2 if has_true else 1, (9 if has_true else 4.5, 3.8))
    ax = axes[0, 0]
    ax.hist(alpha_u, bins=bins, range=(0, 1), color="tab:blue", edgecolor="white")
    ax.set_xlabel(alpha_key)
    ax.set_ylabel("PICs")
    ax.set_title(f"alpha (n = {alpha_u.size}, median {np.median(alpha_u) if alpha_u.size else np.nan:.2f})"
                 + (f"\n{outside} outside [0, 1], not drawn" if outside else ""))
    if has_true:
        ok = use & np.isfinite(alpha) & np.isfinite(t)
        ax = axes[0, 1]
        ax.scatter(t[ok], alpha[ok], s=6, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(true_key)
        ax.set_ylabel(alpha_key)
        if ok.sum() >= 2:
            r2 = r_squared(t[ok], alpha[ok])
            ax.set_title(f"R² = {r2:.3f}, MAE = {np.abs(alpha[ok] - t[ok]).mean():.3f}")
    return _finish(fig, save)


def _numbers(column: pd.Series, key: str) -> np.ndarray:
    """An obs column as float64 (NaN where missing), or an error naming it."""
    try:
        return column.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        msg = f"alpha_hist: obs[{key!r}] must hold numbers (an A share per PIC), got {column.dtype} values."
        raise ValueError(msg) from None


def interaction_plot(pics: AnnData, genes=None, n: int = 12, *, key: str = UNS_PIC_INTERACTION,
                     save: str | Path | None = None):  # fmt: skip
    """Observed vs expected UMIs per PIC group for the top interaction genes (smallest FDR,
    then largest chi2) or the given `genes`: one panel per gene, one point per group of
    :func:`interaction_genes`, the diagonal O = E for reference."""
    check_anndata(pics, step="interaction_plot", name="pics")
    check_int(n, step="interaction_plot", name="n")
    res = pics.uns.get(key)
    if not isinstance(res, dict) or "table" not in res:
        msg = f"interaction_plot: pics.uns[{key!r}] not found; run gpu_sc.pic.interaction_genes first."
        raise KeyError(msg)
    table: pd.DataFrame = res["table"]
    names = text(res["genes"])  # the table's rows, in order (a symbol may repeat)
    if genes is None:
        tested = np.flatnonzero(table["tested"].astype(bool).to_numpy())
        fdr, chi2 = table["fdr"].to_numpy(float)[tested], table["chi2"].to_numpy(float)[tested]
        cols = tested[np.lexsort((-chi2, fdr))][:n]
    else:
        genes = [str(g) for g in np.atleast_1d(genes)]
        missing = [g for g in genes if g not in set(names)]
        if missing:
            msg = f"interaction_plot: genes not in the interaction result: {missing[:5]}."
            raise KeyError(msg)
        cols = np.concatenate([np.flatnonzero(names == g) for g in genes] or [np.zeros(0, np.int64)])
        # (every row of a repeated symbol)
    if not cols.size:
        msg = "interaction_plot: no tested gene to plot."
        raise ValueError(msg)
    n_cols = min(4, cols.size)
    rows = int(np.ceil(cols.size / n_cols))
    fig, axes = _figure(rows, n_cols, (3 * n_cols, 2.8 * rows))
    obs, exp = np.asarray(res["observed"]), np.asarray(res["expected"])
    for ax, j in zip(axes.ravel(), cols, strict=False):
        o, e = obs[:, j], exp[:, j]
        ax.scatter(e, o, s=14)
        top = max(float(np.max(o)), float(np.max(e)), 1.0) * 1.05
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        row = table.iloc[j]
        ax.set_title(f"{names[j]}  log2 O/E {row['log2_effect']:.2f}\nFDR {row['fdr']:.2g}", fontsize=8)
        ax.set_xlabel("expected", fontsize=7)
        ax.set_ylabel("observed", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[cols.size:]:
        ax.set_visible(False)
    return _finish(fig, save)


#: File names of `write_plots` in its directory.
PLOT_FILES = {"pairs": "pic-pairs.png", "alpha": "pic-alpha.png"}


def write_plots(pics: AnnData, directory: str | Path) -> list[Path]:
    """The pair heatmap and the alpha histogram as PNGs (`PLOT_FILES`) in `directory`; nothing
    when no PIC has status 'ok' (there is nothing to draw). Returns the paths written."""
    check_anndata(pics, step="write_plots", name="pics")
    if not isinstance(directory, str | os.PathLike) or not str(directory):
        msg = f"write_plots: directory must be the path of a folder (made if missing), got {directory!r}."
        raise TypeError(msg)
    if Path(directory).is_file():  # before drawing, not at the folder's making after it
        msg = f"write_plots: directory {str(directory)!r} is a file; give a folder for the plots."
        raise ValueError(msg)
    if not ok_mask(pics).any():
        return []
    for key, what in ((OBS_PIC_A, "the assigned A group"), (OBS_PIC_B, "the assigned B group"),
                      (OBS_PIC_ALPHA, "the A share")):  # named as this step's, not as the plots' inside
        obs_column(pics, key, step="write_plots", what=what)
    figures = {"pairs": pair_heatmap(pics), "alpha": alpha_hist(pics)}  # drawn before the folder is made
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        paths.append(d / PLOT_FILES[name])
        _save(fig, paths[-1])
    return paths
