"""PIC quality control (PICSEQ.md §9): is a PIC really a doublet of its assigned pair (Cohen
2022's doublet-vs-singlet test), and is one of its sides better explained by two groups
(triplet scan)?

Both work on the multinomial mixture log-likelihood over marker genes

    LL_n = sum_g u[n, g] * log(alpha_n * P[g, a] + (1 - alpha_n) * P[g, b] + eps)

with reference profiles P from group geometric means (see :func:`group_profiles`). The sums
run over the nonzeros of the PIC counts only (a zero count adds nothing), as flat nnz-length
arrays with ``bincount`` per PIC, so the same code serves numpy and cupy input.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Unpack

import numpy as np
import pandas as pd
from anndata import AnnData

from .._backend import is_dask, is_gpu, is_sparse, to_host, xp_of
from .._keys import (
    OBS_PIC_DOUBLET_LLR,
    OBS_PIC_DOUBLET_P,
    OBS_PIC_IS_DOUBLET,
    OBS_PIC_IS_TRIPLET,
    OBS_PIC_TRIPLET_GROUPS,
    OBS_PIC_TRIPLET_LLR,
    OBS_PIC_TRIPLET_P,
    OBS_PIC_TRIPLET_SIDE,
    UNS_PIC,
    UNS_PIC_QC,
)
from .. import _ops
from .._ops import Chunked
from .._ops._layout import in_layout
from .._settings import user_stacklevel
from .._validation import check_counts, check_flag, check_index_dtype, check_int, check_number, check_seed, make_actual
from ._args import PicColumns, names_list, pic_columns, warn_unused
from ._doublet_null import best_pairs, doublet_null, footprint_genes, null_pvalues, singlet_null, upper_pvalues
from ._simulate import _counts_csr
from ._umi_draws import canonical_rows
from ._expected import (
    check_groups_counted,
    check_same_genes,
    genes_mask,
    group_sums,
    nonzeros,
    pic_and_singlet_counts,
    read_assignment,
)

EPS = 1e-4  # added to every mixed profile value, as in the published assignment
MIN_UMIS = 10  # default marker genes: more than this many UMIs over all singlets
_BISECT = 50  # bisection steps of the alpha fit (interval 2**-50)


# --------------------------------------------------------------------------- profiles and LL
def marker_genes(pics: AnnData, singlets, s_counts, markers, *, step: str) -> np.ndarray:
    """Boolean mask of the genes the LL uses: `markers` (names or mask) if given, else
    pics.uns['pic']['markers'] if present, else every gene with more than 10 UMIs over all
    singlets."""
    stored = False
    if markers is None:
        info = pics.uns.get(UNS_PIC)
        if isinstance(info, dict) and info.get("markers") is not None and len(info["markers"]):
            markers, stored = info["markers"], True  # (an empty list: deconvolve found no footprint marker)
    if markers is not None:
        try:
            mask = genes_mask(pics, markers, step=step)
        except KeyError as e:
            if not stored:
                raise
            msg = (f"{e.args[0]} These are deconvolve's markers (pics.uns[{UNS_PIC!r}]['markers']), and the PICs "
                   "have lost some of those genes since: pass markers= (gene names, or 'footprint').")
            raise KeyError(msg) from None
    else:
        totals = to_host(_ops.col_sums(_ops.parts(s_counts))[0])
        mask = totals > MIN_UMIS
    if not mask.any():
        which = (f"no gene has more than {MIN_UMIS} UMIs in the singlets" if markers is None
                 else f"the {np.size(markers)} markers select none")  # fmt: skip
        msg = (f"{step}: no marker gene to compute the likelihood on ({which}); pass markers= with gene "
               "names of pics.var_names.")
        raise ValueError(msg)
    return mask


def group_profiles(s_counts, codes: np.ndarray, n_groups: int, gene_mask: np.ndarray):
    """P (genes x groups, float64, columns sum to 1) over `gene_mask`: geometric means
    GM[g, m] = exp(mean over the cells of m of log(1 + count)) - 1, normalised per group."""
    logs, sizes = group_sums(s_counts, codes, n_groups, transform=lambda xp_, v: xp_.log1p(v))
    xp = xp_of(logs)  # where the sums are: a Dask matrix of GPU blocks sums on the device
    gm = xp.expm1(logs[:, xp.asarray(np.flatnonzero(gene_mask))] / xp.asarray(np.maximum(sizes, 1))[:, None])
    tot = gm.sum(axis=1)
    return (gm / xp.where(tot > 0, tot, 1)[:, None]).T.copy()


def pic_loglik(u, profiles, ia, ib, alpha, *, eps: float = EPS):
    """LL of every PIC (row of counts `u`, genes x groups `profiles` over the same genes) for
    groups `ia`, `ib` (int per PIC) and A share `alpha`: sum_g u_g log(alpha P[g,a] +
    (1 - alpha) P[g,b] + eps). float64, on the device of `u`."""
    eps = _check_loglik_args(u, profiles, ia, ib, alpha, eps)
    u = in_layout(u)  # nonzeros reads rows from CSR pointers (CSC's are columns)
    xp = xp_of(u)
    rows, cols, vals = nonzeros(u)
    ia, ib, al = (xp.asarray(v) for v in (ia, ib, alpha))
    profiles = to_host(profiles) if xp is np else xp.asarray(profiles)  # on u's device, as the indices
    pa = profiles[cols, ia[rows]]
    pb = profiles[cols, ib[rows]]
    return _ll(xp, rows, vals.astype(xp.float64), u.shape[0], pa, pb, al.astype(xp.float64), eps)


def _shape(v) -> tuple:
    return tuple(v.shape) if hasattr(v, "shape") else np.shape(v)  # np.shape would dispatch cupy


def _check_loglik_args(u, profiles, ia, ib, alpha, eps) -> float:
    """Shapes, values and group indices of pic_loglik's arguments (a mismatch would otherwise
    surface as an IndexError deep in the fancy indexing, or pass silently where it broadcasts;
    negative counts gave positive log-likelihoods, NaN ones NaN); eps as a float."""
    step = "pic_loglik"
    eps = check_number(eps, "eps", step=step, low=0.0, high=math.inf, high_open=True)
    if not (is_sparse(u) or isinstance(u, np.ndarray) or is_gpu(u)) or len(u.shape) != 2:
        shape = f" of shape {u.shape}" if hasattr(u, "shape") else ""
        msg = (f"{step}: u must be a 2-D matrix of counts (PICs x genes; numpy, scipy.sparse or "
               f"cupy), got {type(u).__name__}{shape}.")
        raise TypeError(msg)
    check_index_dtype(u, step=step)
    n, n_genes = u.shape
    shape = _shape(profiles)
    if len(shape) != 2 or shape[0] != n_genes:
        msg = (f"{step}: profiles must be genes x groups over the {n_genes} genes of u, got shape "
               f"{shape}; pass profiles over the same genes as u's columns.")
        raise ValueError(msg)
    check_counts(u, step=f"{step} (u)")
    prof = np.asarray(to_host(profiles) if is_gpu(profiles) else profiles, dtype=np.float64)
    if prof.size and not (np.isfinite(prof).all() and prof.min() >= 0):
        finite = prof[np.isfinite(prof)]
        got = f"minimum {finite.min():g}" if finite.size else "no finite value"
        msg = (f"{step}: profiles must hold non-negative, finite expression shares per group; got {got} and "
               f"{int((~np.isfinite(prof)).sum())} non-finite values.")  # fmt: skip
        raise ValueError(msg)
    for name, v in (("ia", ia), ("ib", ib), ("alpha", alpha)):
        got = _shape(v)
        if got != (n,):
            msg = f"{step}: {name} must hold one value per PIC (shape ({n},)), got shape {got}."
            raise ValueError(msg)
    al = np.asarray(to_host(alpha) if is_gpu(alpha) else alpha, dtype=np.float64)
    if n and not ((al >= 0) & (al <= 1)).all():  # NaN fails too
        msg = (f"{step}: alpha is the A share of each PIC and must lie in [0, 1], got values from "
               f"{al.min()} to {al.max()}.")
        raise ValueError(msg)
    for name, v in (("ia", ia), ("ib", ib)):
        v = np.asarray(to_host(v) if is_gpu(v) else v)
        if v.dtype.kind not in "iu":
            msg = f"{step}: {name} must hold integer column indices of profiles, got dtype {v.dtype}."
            raise TypeError(msg)
        if n and (v.min() < 0 or v.max() >= shape[1]):
            msg = (f"{step}: {name} must index the {shape[1]} columns (groups) of profiles, 0 to "
                   f"{shape[1] - 1}, got values from {v.min()} to {v.max()}.")
            raise ValueError(msg)
    return eps


def _ll(xp, rows, vals, n, pa, pb, alpha, eps):
    al = alpha[rows]
    return xp.bincount(rows, weights=vals * xp.log(al * pa + (1.0 - al) * pb + eps), minlength=n)


def _fit_alpha(xp, rows, vals, n, pa, pb, eps):
    """Per-PIC alpha in [0, 1] maximising the (concave) LL: bisection on its derivative."""

    def slope(al):
        a = al[rows]
        return xp.bincount(rows, weights=vals * (pa - pb) / (a * pa + (1.0 - a) * pb + eps), minlength=n)

    lo = xp.zeros(n)
    hi = xp.ones(n)
    at0 = slope(lo) <= 0
    at1 = slope(hi) >= 0
    for _ in range(_BISECT):
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        lo = xp.where(up, mid, lo)
        hi = xp.where(up, hi, mid)
    alpha = 0.5 * (lo + hi)
    alpha = xp.where(at0, 0.0, alpha)
    return xp.where(at1 & ~at0, 1.0, alpha)


class _Setup:
    """Validated inputs shared by the QC steps (nothing written)."""

    def __init__(self, pics, singlets, *, groupby, cols: PicColumns, alpha, markers, layer,
                 singlets_layer, eps, min_llr, step, sides: bool = False):  # fmt: skip
        if alpha not in ("obs", "fit"):
            msg = f"{step}: alpha must be 'obs' or 'fit', got {alpha!r}."
            raise ValueError(msg)
        eps = check_number(eps, "eps", step=step, low=0.0, high=math.inf, high_open=True)  # inf: NaN LLRs
        min_llr = check_number(min_llr, "min_llr", step=step, low=-math.inf, high=math.inf,
                               high_open=True)  # NaN: no call  # fmt: skip
        check_same_genes(pics, singlets, step=step)
        self.use, self.names, s_codes, self.ia, self.ib, self.alpha_obs = read_assignment(
            pics, singlets, groupby, cols, step=step, with_alpha=alpha == "obs")
        if not self.use.any():  # (all-NaN columns and no call, as for any PIC not 'ok')
            key = cols["status_key"]
            seen = sorted(map(str, pd.unique(pics.obs[key])))[:5] if key in pics.obs else []
            warnings.warn(f"{step}: no PIC has status 'ok' in pics.obs[{key!r}] (values: {seen}), so none is "
                          "scored; check the status column, or pass status_key=None to score every PIC.",
                          UserWarning, stacklevel=user_stacklevel())
        u, s = pic_and_singlet_counts(pics, singlets, layer=layer, singlets_layer=singlets_layer, step=step)
        self.s, self.s_codes, self.counts = s, s_codes, u  # (the doublet test's null reads them)
        self._host_s = None
        self.footprint = isinstance(markers, str) and markers == "footprint"
        # the populations' groups: uns['pic']'s, else the assigned ones (the footprint's and the null's)
        self.sides = None
        if self.footprint or sides:
            self.sides = tuple(_side_groups(pics, None, key, codes, self.use, self.names, step=step)
                               for key, codes in (("groups_a", self.ia), ("groups_b", self.ib)))  # fmt: skip
        if self.footprint:
            self.markers = footprint_genes(self.host_singlets(step), s_codes, self.sides, singlets.var_names)
        else:
            self.markers = marker_genes(pics, singlets, s, markers, step=step)
        self.profiles = group_profiles(s, s_codes, len(self.names), self.markers)
        # (LLRs of hundreds from eps alone otherwise)
        check_groups_counted(to_host(self.profiles.sum(axis=0)), self.names, self.ia[self.use], self.ib[self.use],
                             step=step, over=" over the marker genes")  # fmt: skip
        rows_ok = np.flatnonzero(self.use)
        # the nonzeros of the used PICs on the marker genes, renumbered (elementwise work only,
        # no sparse slicing): rows index rows_ok, cols index the markers
        row_pos = np.full(pics.n_obs, -1, np.int64)
        row_pos[rows_ok] = np.arange(rows_ok.size)
        col_pos = np.full(pics.n_vars, -1, np.int64)
        col_pos[self.markers] = np.arange(int(self.markers.sum()))
        if is_dask(u):  # only the markers' columns are read, block by block, into memory
            u = in_layout(Chunked(u).take_columns(np.flatnonzero(self.markers)).compute())  # CSC blocks: CSR
            col_pos = np.arange(u.shape[1])
        xp = self.xp = xp_of(u)  # (after a Dask matrix is read: its blocks' device)
        rows, cols, vals = nonzeros(u)
        rows, cols = xp.asarray(row_pos)[rows], xp.asarray(col_pos)[cols]
        keep = (rows >= 0) & (cols >= 0)
        self.rows_ok = rows_ok
        self.n = rows_ok.size
        self.rows, self.cols = rows[keep], cols[keep]
        self.vals = vals[keep].astype(xp.float64)
        self.eps = eps
        self.fit = alpha == "fit"

    def group_sizes(self) -> np.ndarray:
        """Reference cells per group (of `names`)."""
        return np.bincount(self.s_codes[self.s_codes >= 0], minlength=len(self.names))

    def tested_depths(self) -> np.ndarray:
        """The used PICs' UMIs (of the counts the test reads: a layer's where one is given), host
        float64: the depths the nulls draw from."""
        return to_host(_ops.row_sums(_ops.parts(self.counts))[0])[self.rows_ok]

    def host_singlets(self, step: str):
        """The singlets' counts as a checked host float64 CSR matrix (made once)."""
        if self._host_s is None:
            self._host_s = _counts_csr(self.s, step=step, what="singlets")
        return self._host_s

    def profile_at(self, groups):
        """P at every nonzero for per-PIC groups (int per used PIC)."""
        return self.profiles[self.cols, self.xp.asarray(groups)[self.rows]]

    def loglik(self, pa, pb, alpha=None):
        """(LL, alpha) per used PIC; alpha fitted when asked for, else the given/observed one."""
        xp = self.xp
        if alpha is None:
            alpha = (_fit_alpha(xp, self.rows, self.vals, self.n, pa, pb, self.eps) if self.fit
                     else xp.asarray(self.alpha_obs[self.rows_ok]))  # fmt: skip
        return _ll(xp, self.rows, self.vals, self.n, pa, pb, alpha, self.eps), alpha


def _full(values, rows_ok, n, fill=np.nan, dtype=np.float64):
    out = np.full(n, fill, dtype=dtype)
    out[rows_ok] = to_host(values)
    return out


# --------------------------------------------------------------------------- doublet test
def doublet_test(
    pics: AnnData,
    singlets: AnnData,
    *,
    groupby: str,
    alpha: str = "obs",
    markers=None,
    min_llr: float = 0.0,
    level: float | None = None,
    n_null: int = 1000,
    seed: int = 0,
    eps: float = EPS,
    layer: str | None = None,
    singlets_layer: str | None = None,
    inplace: bool = True,
    **columns: Unpack[PicColumns],
):
    """Doublet-vs-singlet test of Cohen et al. 2022 for the assigned pair.

    LLR_n = LL_n(a_n, b_n, alpha_n) - LL_n(a_n, b_n, alpha_single), where alpha_single is 1 when
    alpha_n >= 0.5 and 0 otherwise (the nearer end: the PIC explained by one partner alone).
    A PIC is called a doublet when LLR_n > `min_llr` (the published rule), or, with `level`,
    when its p-value against singlets is at most `level`.

    With `level` (and alpha='fit'), each PIC's LLR is compared with those of singlets sorted as
    PICs, drawn from the reference: `n_null` cells of each population, down-sampled to depths
    drawn from the PICs', scored at their best pair against profiles without them (two
    cross-fitted halves); a PIC's p-value is the share of its nearer end's population's null at
    or above its LLR (``pics.obs['pic_doublet_p']``). A null cell with fewer UMIs than its
    drawn depth is taken whole. Measured on 800-UMI PICs from held-out pbmc4k cells
    (``benchmarks/pic_qc.py``, seeds 0-2, ml and picseq, T and MNP or T subclusters and MNP as
    groups): singlets called at level 0.01 0-3 % (mean 1.1 %), at 0.05 2-8 % (5.2 %); doublets
    found 15-38 % and 80-86 %.

    Profiles: group geometric means (:func:`group_profiles`) of the singlets over the marker
    genes — `markers` if given, else (with `level`) the footprint genes, else
    ``pics.uns['pic']['markers']`` if present, else every gene with more than 10 UMIs over all
    singlets.

    Parameters
    ----------
    pics, singlets
        PICs (raw counts, deconvolution obs columns) and reference singlets, same genes.
    groupby
        singlets.obs column of the reference groups.
    a_key, b_key, alpha_key, status_key
        pics.obs columns of the assignment. PICs that are not 'ok' get NaN / False.
    alpha
        'obs': alpha_n from pics.obs[alpha_key] (the published test; with a regression alpha
        the LLR can be negative). 'fit': alpha_n maximising the LL of the pair here; the
        singlet model is then nested in the doublet model, LLR >= 0, and `min_llr` should be
        positive (2 * LLR is asymptotically a 50:50 mixture of chi2_0 and chi2_1 for
        Poisson-like counts; e.g. min_llr = 3.3 for p ~ 0.005; real counts are overdispersed,
        so calibrate on known singlets: held-out singlets down-sampled to the PICs' depth and
        deconvolved with them). Measured on 800 UMIs of held-out pbmc4k cells, T and MNP
        (``benchmarks/pic_qc.py``, seeds 0-2, ml): at min_llr=3.3 7.5-8.5 % of singlets were
        called doublets (MNP ones mostly), not 0.5 %, with 97 % of doublets; the 99th
        percentile of calibration singlets (9-20) held 2-4.5 % with 75-92 % of doublets. The
        published rule ('obs', 0) called 10-16 % of singlets and 97-98 % of doublets: ml gives
        a singlet an alpha inside (0, 1), not its end.
    markers
        Gene names or a boolean mask of the genes in the LL, or ``"footprint"``: ml's genes
        between populations (up to 100 raised 2-fold or more in each population over the other,
        more than 10 UMIs, none blacklisted), what tells one cell from a pair (deconvolve's
        markers tell groups apart within a population; one of a single group has none). The
        default with `level`: with T subclusters and MNP (pbmc4k, seeds 0-2) it found 80-86 %
        of doublets at p <= 0.05 where deconvolve's markers found 20-31 %.
    min_llr
        Smallest LLR (natural log) of a doublet.
    level
        None (default): calls by `min_llr`. A number in (0, 1): calls where the p-value against
        singlets is at most `level`; needs alpha='fit' (a singlet drawn from the reference has
        no deconvolved alpha) and `min_llr` left at 0.
    n_null, seed
        With `level`: reference cells drawn per population for the null (at most its cells),
        and the seed of the draws (cells, depths and UMIs; independent of the singlets' row
        order). A population of fewer than 5 / `level` - 1 cells warns: a call there needs an LLR
        above (nearly) all of its null's, so one unusual reference cell sets the power.
    eps
        Added to each mixed profile value.
    layer, singlets_layer
        Count layers instead of X.
    inplace
        Write obs/uns; otherwise return the DataFrame of the would-be obs columns.

    Returns
    -------
    ``None`` and writes ``pics.obs['pic_doublet_llr']`` (float64, NaN for PICs not 'ok'),
    ``pics.obs['pic_is_doublet']`` (bool), with `level` ``pics.obs['pic_doublet_p']`` (float64,
    NaN for PICs not 'ok'), and ``pics.uns['pic_qc']['doublet']`` (params and the number of
    marker genes); or the DataFrame when not ``inplace``. Nothing changes when an error is raised.
    """
    step = "doublet_test"
    inplace = check_flag(inplace, "inplace", step=step)
    cols = pic_columns(columns, step=step)
    if level is None:
        warn_unused(doublet_test, {"n_null": n_null, "seed": seed}, step=step, needs="with level, for the null")
    else:
        level = check_number(level, "level", step=step, low=0, high=1, high_open=True)
        n_null = check_int(n_null, step=step, name="n_null", hint=" (reference cells drawn per population)")
        seed = check_seed(seed, step=step)
        if alpha != "fit" or min_llr != 0:
            msg = (f"{step}: level={level} calls by a p-value against singlets drawn from the reference, which "
                   f"have no deconvolved alpha: pass alpha='fit' and leave min_llr at 0 (got alpha={alpha!r}, "
                   f"min_llr={min_llr!r}).")  # fmt: skip
            raise ValueError(msg)
        markers = "footprint" if markers is None else markers
    st = _Setup(pics, singlets, groupby=groupby, cols=cols, alpha=alpha, markers=markers, layer=layer,
                singlets_layer=singlets_layer, eps=eps, min_llr=min_llr, step=step, sides=level is not None)
    xp = st.xp
    pa = st.profile_at(st.ia[st.rows_ok])
    pb = st.profile_at(st.ib[st.rows_ok])
    ll2, al = st.loglik(pa, pb)
    al_single = xp.where(al >= 0.5, 1.0, 0.0)
    ll1, _ = st.loglik(pa, pb, al_single)
    llr = _full(ll2 - ll1, st.rows_ok, pics.n_obs)
    res = pd.DataFrame({OBS_PIC_DOUBLET_LLR: llr}, index=pics.obs_names)
    if level is None:
        res[OBS_PIC_IS_DOUBLET] = np.nan_to_num(llr, nan=-np.inf) > min_llr
    elif st.n == 0:  # no PIC to test: no null to draw
        res[OBS_PIC_IS_DOUBLET], res[OBS_PIC_DOUBLET_P] = False, np.nan
    else:
        pvalue = null_pvalues(llr, _full(al, st.rows_ok, pics.n_obs) >= 0.5,
                              _null(singlets, st, level=level, n_null=n_null, seed=seed, step=step))  # fmt: skip
        res[OBS_PIC_IS_DOUBLET] = np.nan_to_num(pvalue, nan=2.0) <= level
        res[OBS_PIC_DOUBLET_P] = pvalue
    if not inplace:
        return res
    make_actual(pics)
    for k in res:
        pics.obs[k] = res[k].to_numpy()
    if OBS_PIC_DOUBLET_P not in res:  # a p-value of an earlier call with level would outlive its calls
        pics.obs.drop(columns=OBS_PIC_DOUBLET_P, errors="ignore", inplace=True)
    qc = dict(pics.uns.get(UNS_PIC_QC, {}))
    qc["doublet"] = {"alpha": alpha, "min_llr": float(min_llr), "eps": float(eps),
                     "n_markers": int(st.markers.sum()), "groupby": groupby}  # fmt: skip
    if level is not None:
        qc["doublet"].update(level=level, n_null=n_null, seed=seed)
    if st.footprint:
        qc["doublet"]["markers"] = "footprint"
    pics.uns[UNS_PIC_QC] = qc
    return None


_FEW_BEYOND = 4  # null cells above a level's cut under which one cell decides the power
DEFAULT_TRIPLET_LEVEL = 0.01  # triplet_scan's p-value cut where neither min_llr nor level is given


def _null_margin(level: float, size: int) -> float:
    """How many of a null of `size` a PIC's statistic may fall below and still be called at
    `level` (p = share of the null at or above it, counting the PIC: (1 + above) / (1 + size));
    negative where no p-value reaches `level`. Both nulls warn from it (`_FEW_BEYOND`)."""
    return level * (1 + size) - 1


def _null(singlets, st: _Setup, *, level: float, n_null: int, seed: int, step: str):
    """`singlet_null` of the test's reference, markers and tested PICs' depths (their counts,
    the layer where one is given), on the host; a warning where a side's null is too small for
    any p-value to reach `level`, or so small that its few highest LLRs decide the calls."""
    for name, groups in zip("AB", st.sides, strict=True):  # (the null's high side: fewer calls)
        _warn_lone_groups(st, groups, name, step, "a null cell of such a group", "LLR")
    depths = st.tested_depths()
    null = singlet_null(st.host_singlets(step), st.s_codes, len(st.names), canonical_rows(singlets), st.sides,
                        st.markers, depths, n_null=n_null, seed=seed, eps=st.eps, profiles=group_profiles,
                        fit_alpha=_fit_alpha, loglik=_ll)  # fmt: skip
    for name, side in zip("AB", null, strict=True):
        beyond = _null_margin(level, side.size)
        if beyond < 0:
            warnings.warn(f"{step}: the null of population {name} holds {side.size} reference cells, so no p-value "
                          f"there is below 1/{side.size + 1} and no PIC nearer that end can be called at "
                          f"level={level}; give more reference cells (or raise n_null), or a larger level.",
                          UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        elif beyond < _FEW_BEYOND:  # pbmc68k's 157-177 DCs: one outlier's LLR moved power 2-49 %
            but = "all of them" if beyond < 1 else f"all but {int(beyond)} of them"
            warnings.warn(f"{step}: the null of population {name} holds {side.size} reference cells, so a call at "
                          f"level={level} needs an LLR above {but}: one unusual reference cell (a doublet among "
                          "the singlets) sets the power there; give more reference cells (or raise n_null), or a "
                          "larger level.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
    return null


# --------------------------------------------------------------------------- triplet scan
def _side_groups(pics, given, key, codes, use, names, *, step):
    """Group indices of one population: `given`, else uns['pic'][key], else the assigned ones."""
    source = key
    if given is not None:
        given = names_list(given, step=step, name=key)
        if not given:
            msg = f"{step}: {key} is empty; name the population's groups, or leave it None (deconvolve's)."
            raise ValueError(msg)
    else:
        info = pics.uns.get(UNS_PIC)
        if isinstance(info, dict) and info.get(key) is not None:
            given, source = [str(g) for g in np.atleast_1d(np.asarray(info[key]))], f"pics.uns[{UNS_PIC!r}][{key!r}]"
    if given is None:
        return np.unique(codes[use & (codes >= 0)])
    lookup = {n: i for i, n in enumerate(names)}
    missing = [g for g in given if g not in lookup]
    if missing:
        fix = ("" if source == key else " (deconvolve's groups): pass the singlets and groupby deconvolve used"
               + (f", or {key}=" if step == "triplet_scan" else ""))
        msg = f"{step}: {source} names groups that are not reference groups: {missing[:5]}{fix}."
        raise ValueError(msg)
    return np.array(sorted({lookup[g] for g in given}), dtype=np.int64)


def triplet_scan(
    pics: AnnData,
    singlets: AnnData,
    *,
    groupby: str,
    groups_a: Sequence[str] | None = None,
    groups_b: Sequence[str] | None = None,
    weights: Sequence[float] = (0.5,),
    alpha: str = "fit",
    markers=None,
    min_llr: float | None = None,
    level: float | None = None,
    n_null: int = 1000,
    seed: int = 0,
    eps: float = EPS,
    layer: str | None = None,
    singlets_layer: str | None = None,
    inplace: bool = True,
    **columns: Unpack[PicColumns],
):
    """Triplet scan: could one side of a PIC be two cells of its population?

    For side A, every unordered pair {g1, g2} of distinct A groups and every weight w (of
    `weights`, with 1 - w added) replaces P[., a_n] by w P[., g1] + (1 - w) P[., g2]; side B
    likewise. LLR_n = (best such triplet LL) - (doublet LL of the pair), both with the same
    alpha rule (`alpha`).

    By default (no `min_llr`, alpha='fit') a PIC is flagged by a p-value against doublets drawn
    from the reference: `n_null` pairs of an A and a B reference cell, their pooled UMIs drawn
    without replacement to depths drawn from the PICs', scored against profiles built without
    their fold of the reference cells (one of 10, each group dealt round them; the PICs' own cells
    are not in the reference either). PICs and null doublets are scored alike,
    at the pair of highest fitted-alpha likelihood over the scan's genes (mostly deconvolve's:
    at deconvolve's own pair, a PIC whose pair fits less well here than another gains from any
    triplet, which no null doublet does; 35 % of true T + DC doublets then had p <= 0.05). The
    p-value is the share of the null at or above the PIC's LLR (``pics.obs['pic_triplet_p']``);
    flagged where it is at most `level`. Measured on 800-UMI PICs from held-out pbmc4k cells
    (``benchmarks/pic_qc.py``, seeds 0-2, ml; ``benchmarks/results/pic-qc-cpu-2026-12-07-triplet-level.txt``):
    true doublets flagged at level 0.01 in 0.2-2.0 % (mean 0.7 %) and at 0.05 in 2.3-5.7 % (mean
    4.1 %; the LLR > 0 rule: 16-43 %); true triplets of two A lineages (T, B, NK) and an MNP
    found in 1-15 % at 0.01 and 9-29 % at 0.05, of T subclusters or CD4 + CD8 in 0-3 % and
    5-13 %: at 800 UMIs the scan finds few triplets, and of close groups hardly any. On data it
    was not tuned on (TNBC, pbmc68k and KMeans groups of pbmc4k at 400 and 1,000 UMIs, seeds 0-3,
    ``benchmarks/pic_qc_triplet_null.py``; ``...-2026-12-07-triplet-level-other-data.txt``):
    0.75 % of 14,400 true doublets at 0.01, 4.7 % at 0.05, 9.7 % at 0.1 (per data set and depth
    0.6-1.4 % and 4.3-5.0 %); triplets found in 1-6 % at 0.01 and 6-15 % at 0.05, but pbmc68k's
    T + two DC groups in 16-27 % and 46-67 %.

    The null doublets join reference cells in the reference's proportions of groups, not the
    PICs' pairs: a pair whose doublets score higher than the reference's mix is flagged somewhat
    more often (held-out pbmc68k T + DC and T + monocyte doublets at 800 UMIs, two seeds: p <= 0.01
    for 1.7 % and 0 %, p <= 0.05 for 3.0-4.3 % and 1.0-3.3 %).

    The populations: `groups_a` / `groups_b` if given, else pics.uns['pic']['groups_a'] /
    ['groups_b'] if present, else the groups assigned to some PIC on that side. Cost: (K_A
    choose 2 + K_B choose 2) x len(weights) likelihood passes over the PICs' marker nonzeros
    (x 50 with ``alpha='fit'``); by p-value also K_A x K_B such passes for each PIC's best pair,
    and the same passes over the `n_null` null doublets (0.4-6 s in all on 1,500 PICs and a
    null of 1,000 on 2 cores).

    Parameters
    ----------
    pics, singlets, groupby, a_key, b_key, alpha_key, status_key, markers, eps, layer, singlets_layer
        As in :func:`doublet_test` (same profiles and marker genes).
    groups_a, groups_b
        Group names of the two populations.
    weights
        Within-side mixing weights in (0, 1); default a 50/50 mixture. A grid such as
        ``np.linspace(0.2, 0.8, 4)`` approximates an optimised weight.
    alpha
        'fit' (default): alpha optimised separately for the doublet and every triplet model;
        'obs': pics.obs[alpha_key] kept for all models.
    min_llr
        None (default): flags by `level`; with alpha='obs', where there is no null, LLR_n > 0.
        A number: flags LLR_n > `min_llr` at the assigned pair, with no null drawn (the rule
        before `level`). 0 flags every PIC that a triplet fits better at all, and the triplet
        models have more freedom than the doublet: most true doublets pass it (66 % of the 195
        T + DC doublets of ``gsc.datasets.pbmc_t_dc_pics``, median LLR 0.8; on the 800-UMI
        pbmc4k PICs above 16-23 % of true doublets and 18-19 % of true T+T+MNP triplets; at
        the 99th percentile of known doublets' LLRs 0.3-3.3 % and 3-6 %; 20 flagged nothing).
    level
        The p-value at or below which a PIC is flagged (None: 0.01 where `min_llr` is not
        given); needs alpha='fit' (a doublet drawn from the reference has no deconvolved alpha).
    n_null, seed
        The doublets drawn from the reference for the null, and the seed of the draws (cells,
        depths and UMIs; independent of the singlets' row order).
    inplace
        Write obs/uns; otherwise return the DataFrame of the would-be obs columns.

    Returns
    -------
    ``None`` and writes ``pics.obs['pic_triplet_llr']`` (float64, NaN for PICs not 'ok'),
    ``pics.obs['pic_triplet_side']`` (categorical 'a' / 'b': the side of the best triplet),
    ``pics.obs['pic_triplet_groups']`` ('g1|g2': the two groups of the best triplet; where triplets
    tie, as every triplet of a side that gives a PIC no UMIs (alpha at 0 or 1) does, the first: side
    A before B, then pairs in the order of the reference groups (`groupby`'s), then weights
    from the smallest),
    ``pics.obs['pic_is_triplet']`` (bool), with a p-value ``pics.obs['pic_triplet_p']`` (float64,
    NaN for PICs not 'ok'), and
    ``pics.uns['pic_qc']['triplet']`` (with `level`, `n_null` and `seed` where it calls by
    p-value); or the DataFrame when not ``inplace``.
    Nothing changes when an error is raised.
    """
    step = "triplet_scan"
    inplace = check_flag(inplace, "inplace", step=step)
    cols = pic_columns(columns, step=step)
    if min_llr is not None and level is not None:
        msg = (f"{step}: pass min_llr (a call where the LLR exceeds it) or level (a call by a p-value against "
               f"doublets drawn from the reference), not both (got min_llr={min_llr!r}, level={level!r}).")
        raise ValueError(msg)
    if min_llr is None and alpha == "fit":  # the default: calls by the p-value
        level = DEFAULT_TRIPLET_LEVEL if level is None else level
    elif level is not None:
        msg = (f"{step}: level={level} calls by a p-value against doublets drawn from the reference, which "
               f"have no deconvolved alpha: pass alpha='fit' (got alpha={alpha!r}).")  # fmt: skip
        raise ValueError(msg)
    min_llr = 0.0 if min_llr is None else min_llr  # (alpha='obs' without min_llr: the LLR > 0 rule)
    if level is None:
        warn_unused(triplet_scan, {"n_null": n_null, "seed": seed}, step=step, needs="with level, for the null")
    else:
        level = check_number(level, "level", step=step, low=0, high=1, high_open=True)
        n_null = check_int(n_null, step=step, name="n_null", hint=" (doublets drawn from the reference)")
        seed = check_seed(seed, step=step)
    try:
        given = np.atleast_1d(np.asarray(weights, dtype=np.float64))  # a single weight too
    except (TypeError, ValueError):
        given = np.array([np.nan])  # refused below, by name
    w = np.unique(np.concatenate([given, 1 - given]))
    if given.ndim != 1 or w.size == 0 or not np.all((w > 0) & (w < 1)):
        msg = f"{step}: weights must lie strictly between 0 and 1, got {weights!r}."
        raise ValueError(msg)
    st = _Setup(pics, singlets, groupby=groupby, cols=cols, alpha=alpha,
                markers=markers, layer=layer, singlets_layer=singlets_layer, eps=eps, min_llr=min_llr, step=step)
    sides = {
        "a": _side_groups(pics, groups_a, "groups_a", st.ia, st.use, st.names, step=step),
        "b": _side_groups(pics, groups_b, "groups_b", st.ib, st.use, st.names, step=step),
    }
    for side, other in (("a", st.ib), ("b", st.ia)):  # a population's groups on the wrong side
        wrong = np.intersect1d(sides[side], other[st.use & (other >= 0)])
        if wrong.size:
            names = [str(st.names[i]) for i in wrong[:5]]
            msg = (f"{step}: groups_{side} holds groups the PICs have on their other side ({names}); pass each "
                   f"population's groups on its own side (as deconvolve's a= and b=).")  # fmt: skip
            raise ValueError(msg)
    if all(v.size < 2 for v in sides.values()):
        msg = f"{step}: both populations have fewer than 2 groups; there is no triplet to test."
        raise ValueError(msg)
    outside = sum(int((~np.isin(c[st.use], sides[k])).sum()) for k, c in (("a", st.ia), ("b", st.ib)))
    if outside:
        warnings.warn(f"{step}: {outside} of the PICs' assigned groups lie outside groups_a / groups_b, the "
                      "populations scanned; pass lists that hold every group the PICs are assigned to (the default: "
                      "deconvolve's).", UserWarning, stacklevel=user_stacklevel())
    ia, ib = st.ia[st.rows_ok], st.ib[st.rows_ok]
    if level is not None:  # scored as the null is: at the pair of highest likelihood here
        pairs = [(a, b) for a in sides["a"].tolist() for b in sides["b"].tolist()]
        ia, ib, _ = best_pairs(st.xp, st.rows, st.cols, st.vals, st.n, st.profiles, pairs, st.eps, _fit_alpha, _ll)
    pa, pb = st.profile_at(ia), st.profile_at(ib)
    gain, best_side, best_pair = _scan(st.xp, lambda x, y: st.loglik(x, y)[0], st.profiles, st.cols, pa, pb,
                                       (sides["a"], sides["b"]), w, st.n)  # fmt: skip
    llr = _full(gain, st.rows_ok, pics.n_obs)
    if level is None:
        called = np.nan_to_num(llr, nan=-np.inf) > min_llr
    elif st.n == 0:  # no PIC to test: no null to draw
        called, pvalue = np.zeros(pics.n_obs, bool), np.full(pics.n_obs, np.nan)
    else:
        null = _triplet_null(singlets, st, (sides["a"], sides["b"]), w, level=level, n_null=n_null, seed=seed,
                             step=step)  # fmt: skip
        pvalue = upper_pvalues(llr, null)
        called = np.nan_to_num(pvalue, nan=2.0) <= level
    side_full = np.full(pics.n_obs, None, dtype=object)
    side_full[st.rows_ok] = np.where(best_side == 0, "a", "b")
    pair_full = np.full(pics.n_obs, None, dtype=object)
    pair_full[st.rows_ok] = [f"{st.names[i]}|{st.names[j]}" for i, j in best_pair]
    res = pd.DataFrame(
        {
            OBS_PIC_TRIPLET_LLR: llr,
            OBS_PIC_TRIPLET_SIDE: pd.Categorical(side_full, categories=["a", "b"]),
            OBS_PIC_TRIPLET_GROUPS: pd.Categorical(pair_full),
            OBS_PIC_IS_TRIPLET: called,
        },
        index=pics.obs_names,
    )
    if level is not None:
        res[OBS_PIC_TRIPLET_P] = pvalue
    if not inplace:
        return res
    make_actual(pics)
    for k in res:
        pics.obs[k] = res[k].values if isinstance(res[k].dtype, pd.CategoricalDtype) else res[k].to_numpy()
    if OBS_PIC_TRIPLET_P not in res:  # a p-value of an earlier call with level would outlive its calls
        pics.obs.drop(columns=OBS_PIC_TRIPLET_P, errors="ignore", inplace=True)
    qc = dict(pics.uns.get(UNS_PIC_QC, {}))
    qc["triplet"] = {"alpha": alpha, "eps": float(eps), "weights": w,
                     "n_markers": int(st.markers.sum()), "groupby": groupby,
                     "groups_a": np.asarray([st.names[i] for i in sides["a"]], dtype=str),
                     "groups_b": np.asarray([st.names[i] for i in sides["b"]], dtype=str)}  # fmt: skip
    if level is not None:
        qc["triplet"].update(level=level, n_null=n_null, seed=seed)
    else:
        qc["triplet"]["min_llr"] = float(min_llr)
    pics.uns[UNS_PIC_QC] = qc
    return None


def _scan(xp, loglik, profiles, cols, pa, pb, sides, w, n):
    """(best within-side mixture LL - the doublet LL, the side of the best (0: A, 1: B), its two
    groups) per PIC. `loglik(pa, pb)`: LL per PIC of profile values at its nonzeros (`cols`:
    each nonzero's marker column); `pa`, `pb`: the pair's; `sides`: each population's
    group codes; every unordered pair of one side's groups at every weight of `w` replaces that
    side's profile."""
    best = xp.full(n, -xp.inf)
    best_side = np.zeros(n, dtype=np.int8)
    best_pair = np.zeros((n, 2), dtype=np.int64)
    for s_i, groups in enumerate(sides):
        for g1, g2 in itertools.combinations(groups.tolist(), 2):
            for wt in w:
                pm = (wt * profiles[:, g1] + (1.0 - wt) * profiles[:, g2])[cols]
                ll = loglik(pm, pb) if s_i == 0 else loglik(pa, pm)
                better = ll > best
                best = xp.where(better, ll, best)
                bh = to_host(better)
                best_side[bh] = s_i
                best_pair[bh] = (g1, g2)
    return best - loglik(pa, pb), best_side, best_pair


def _warn_lone_groups(st: _Setup, groups, name: str, step: str, drawn: str, score: str) -> None:
    """Warn of the groups of population `name` with one reference cell: the nulls leave their
    drawn cells out of the profiles, so such a cell meets an empty profile of its own group."""
    sizes = st.group_sizes()
    lone = [str(st.names[g]) for g in groups if sizes[g] < 2]
    if lone:
        warnings.warn(f"{step}: groups {lone[:5]} of population {name} have one reference cell: {drawn} is scored "
                      f"against an empty profile of its group, so its {score} is off; merge such groups or give "
                      "them more cells.", UserWarning, stacklevel=user_stacklevel())  # fmt: skip


def _triplet_null(singlets, st: _Setup, sides, w, *, level: float, n_null: int, seed: int, step: str) -> np.ndarray:
    """`doublet_null` of the scan's reference, markers, weights and tested PICs' depths (their
    counts, the layer where one is given), scored with a fitted alpha, on the host; an error
    where a population has one reference cell (no profile is left without it), a warning where a
    group has one (that group's profile is empty beside its cell) or where the null is too small
    for `level` (as doublet_test's)."""
    sizes = st.group_sizes()
    for name, groups in zip("AB", sides, strict=True):
        if sizes[groups].sum() < 2:
            msg = (f"{step}: population {name} has {int(sizes[groups].sum())} reference cell(s); the null leaves its "
                   "doublets' cells out of the profiles, which needs 2 or more. Give more reference cells, or pass "
                   "min_llr= (no null).")  # fmt: skip
            raise ValueError(msg)
        _warn_lone_groups(st, groups, name, step, "a null doublet of that cell", "triplet LLR")
    beyond = _null_margin(level, n_null)
    if beyond < 0:
        warnings.warn(f"{step}: a null of {n_null} doublets gives no p-value below 1/{n_null + 1}, so no PIC can be "
                      f"called at level={level}; raise n_null (or the level).", UserWarning,
                      stacklevel=user_stacklevel())
    elif beyond < _FEW_BEYOND:
        warnings.warn(f"{step}: with a null of {n_null} doublets a call at level={level} needs an LLR above all but "
                      f"{int(beyond)} of them, so a few null doublets set the power; raise n_null.", UserWarning,
                      stacklevel=user_stacklevel())  # fmt: skip
    depths = st.tested_depths()

    def triplet_llr(u, prof, ia, ib):
        rows, cols, vals = nonzeros(u)
        vals, n = vals.astype(np.float64), u.shape[0]

        def loglik(pa, pb):
            alpha = _fit_alpha(np, rows, vals, n, pa, pb, st.eps)
            return _ll(np, rows, vals, n, pa, pb, alpha, st.eps)

        pa, pb = prof[cols, ia[rows]], prof[cols, ib[rows]]
        return _scan(np, loglik, prof, cols, pa, pb, sides, w, n)[0]

    return doublet_null(st.host_singlets(step), st.s_codes, len(st.names), canonical_rows(singlets), sides,
                        st.markers, depths, n_null=n_null, seed=seed, eps=st.eps, profiles=group_profiles,
                        fit_alpha=_fit_alpha, loglik=_ll, triplet_llr=triplet_llr)  # fmt: skip
