"""What the pair posterior looks like for PICs of a known pair, and the composition that explains
an observed mean posterior through it.

The mean pair posterior of real PICs is m = M^T pi, where pi is their true pair composition and
M[p, q] the mean posterior on pair q of PICs whose true pair is p: similar groups share
posterior mass, so m alone is pulled towards the pairs a group is confused with. M is estimated
from PICs simulated from the reference singlets, `n_sim` per pair at the real PICs' depth and
deconvolved exactly as the real ones were (``uns['pic']['arguments']``); pi is then the
non-negative solution of M^T pi = m that sums to 1. Measured (total-variation distance to the
true composition, mean posterior -> corrected): 300 pbmc68k T + DC PICs, 4 x 3 groups, ml 0.166
-> 0.074, picseq 0.153 -> 0.146; benchmarks/pic_frequencies.py (1,500 PICs, groups of 150): ml
pbmc4k 0.196 -> 0.104 and TNBC 0.355 -> 0.267, but pbmc68k 0.038 -> 0.078 and picseq on pbmc4k
0.240 -> 0.413: it helps where groups are confused and calls are calibrated, and can hurt where
they are already good. (Simulating from one half of the reference and deconvolving with the other
half over-corrects, TV 0.39-0.49: a half reference confuses more than the whole.) Cross-fitting
was measured and dropped too (each of 5 folds of the singlets simulated and deconvolved against
the other 4, as real PICs' cells are absent from the reference): on pbmc4k (5 x 3 groups of ~150
cells, seed 1) it reproduced the confusion of PICs from the held-out cells (0.54 on the true pair,
in-sample 0.60) and moved TV from 0.157 to 0.129 (oracle confusion 0.124), but on TNBC (177
reference cells) it changed nothing (0.110 -> 0.115; oracle 0.026) and on pbmc68k T + DC (groups of
10-60 cells) it over-corrected (0.074 -> 0.260), at 4-5 times the cost. What the reference
cannot give is the PICs' own cells' confusion: against half the reference, PICs of the other
half's cells matched the real PICs' source cells on the true pair (pbmc68k 0.73 vs 0.75, pbmc4k
0.34 vs 0.34; in-sample 0.82, 0.39) and still unmixed to TV 0.087 / 0.186 against 0.021 / 0.115
through the source cells' own; choosing the search genes on half the reference changed nothing.
Benchmark PICs reuse few source cells, so their idiosyncrasy does not average out; the interval
resamples the reference cells behind M (`simulated_posteriors` returns them) and, given
`replicate_key`, the PICs' own units.
"""

from __future__ import annotations

from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import nnls

from .. import _keys as K, _ops
from .._backend import gpu_available, is_dask, to_host
from .._validation import block_integer_issues, canonical, check_anndata, check_integer_counts
from ..get import array_to_cpu
from ._args import check_posterior_shape, derived_seed
from ._deconvolve import deconvolve
from ._expected import check_reference_counted, ok_mask
from ._loglik import pair_columns
from ._ml_fit import median_depth
from ._simulate import _counts_csr, simulate_pics
from ._umi_draws import in_canonical_order

#: weight of the sum-to-one row in the constrained least squares
_SUM_WEIGHT = 1e3


def kept_posterior(pics: ad.AnnData, step: str):
    """The 'ok' PICs' pair posterior rows (CSR, rows summing to 1), their mask, and the pair
    names (a, b) per column."""
    check_anndata(pics, step=step, name="pics")
    info = pics.uns.get(K.UNS_PIC)
    post = pics.obsm.get(K.OBSM_PAIR_POSTERIOR) if K.OBSM_PAIR_POSTERIOR in pics.obsm else None
    if post is not None and not isinstance(info, dict):
        msg = (f"{step}: pics has a pair posterior (obsm[{K.OBSM_PAIR_POSTERIOR!r}]) but not uns[{K.UNS_PIC!r}], "
               "which names its pairs' groups (anndata.concat drops uns unless told: pass uns_merge='same' "
               "to concat PICs deconvolved together, or rerun deconvolve on the concatenated PICs).")  # fmt: skip
        raise ValueError(msg)
    if info is None or post is None:
        method = None if info is None else info.get("method")
        msg = (f"{step}: pics has no pair posterior (obsm[{K.OBSM_PAIR_POSTERIOR!r}]"
               + (f"; it was deconvolved with method={method!r}, which gives group weights, not pairs"
                  if method == "mixture" else "")
               + "); run gsc.pic.deconvolve(pics, singlets, method='ml' or 'picseq') first.")  # fmt: skip
        raise ValueError(msg)
    if any(info.get(k) is None for k in ("groups_a", "groups_b")):
        msg = (f"{step}: pics.uns[{K.UNS_PIC!r}] lacks deconvolve's 'groups_a' / 'groups_b' (keys: "
               f"{sorted(map(str, info))[:8]}): another step stored its result there; rerun deconvolve.")
        raise ValueError(msg)
    ga, gb = list(info["groups_a"]), list(info["groups_b"])
    check_posterior_shape(post.shape, pics.n_obs, len(ga), len(gb), step=step, fix="rerun deconvolve.")
    post = sp.csr_matrix(array_to_cpu(post), dtype=np.float64)  # to_gpu moves obsm too
    tot = np.asarray(post.sum(axis=1)).ravel()
    ok = ok_mask(pics) & (tot > 0)  # no status column: every PIC, as interaction_genes takes them
    post = sp.diags(1 / np.where(ok, tot, 1.0)) @ post  # the kept pairs, renormalised
    names_a, names_b = pair_columns(np.asarray(ga, dtype=object), np.asarray(gb, dtype=object))
    return post.tocsr(), ok, names_a, names_b


def pic_depths(pics: ad.AnnData, step: str, *, counts: bool = False) -> np.ndarray:
    """Each PIC's total UMIs (host float64), wherever pics.X lives (GPU, Dask blocks). With
    `counts`, pics.X is checked to hold raw counts (in the same pass over a Dask X): where the
    depths are simulated at, normalised or logged values would give another confusion, silently."""
    x = canonical(pics.X, step=step)
    p = _ops.parts(x)
    if counts and is_dask(x):
        totals, issues = p.rows_and_sums(_row_totals, block_integer_issues)
    else:
        totals, issues = _row_totals(p), None
    if counts:
        check_integer_counts(x, step=f"{step} (pics.X)", issues=issues)
    return to_host(totals)


def _row_totals(p):
    return _ops.row_sums(p)[0]


class Simulated(NamedTuple):
    """PICs simulated per pair and deconvolved: pair posteriors (CSR, rows summing to 1), each
    one's true pair (column index), and its two source cells (column 0 the A cell, column 1 the
    B cell; one integer code per cell)."""

    post: sp.csr_matrix
    truth: np.ndarray
    cells: np.ndarray


def simulated_posteriors(pics: ad.AnnData, singlets: ad.AnnData, n_sim: int, seed: int,
                         sources: ad.AnnData | None = None, depth: int | None = None) -> Simulated:
    """`n_sim` PICs of `depth` UMIs (None: the ok PICs' median) simulated per pair from
    `sources` (None: `singlets`) and deconvolved against `singlets` as `pics` were. Benchmarks
    pass the cells their PICs came from as `sources`: the confusion the real PICs have, which
    the correction can at best reach."""
    info = pics.uns[K.UNS_PIC]
    ga, gb, groupby = list(info["groups_a"]), list(info["groups_b"]), info["groupby"]
    if "arguments" not in info:
        msg = ("pair_frequencies: uns['pic'] has no 'arguments' (deconvolved by an older gpu_sc); "
               "rerun gsc.pic.deconvolve to correct for confusions, or pass singlets=None.")
        raise ValueError(msg)
    if depth is None:
        depth = int(np.median(pic_depths(pics, "pair_frequencies")[ok_mask(pics)]))
    origin = singlets if sources is None else sources
    labels = origin.obs[groupby].astype(str).to_numpy()
    present = set(labels)
    # the singlets' counts in this step's name (simulate_pics below would name itself), every group counted
    check_reference_counted(_counts_csr(origin.X, step="pair_frequencies", what="singlets"), labels,
                            [str(g) for g in ga + gb if str(g) in present], step="pair_frequencies")
    parts, truth = [], []
    for ib, b in enumerate(gb):
        for ia, a in enumerate(ga):
            j = ia + len(ga) * ib
            if str(a) not in present or str(b) not in present:  # (sources only) no such cells
                continue
            # the pair's cells alone, in the order of their names: the draw follows neither the
            # singlets' row order nor their other groups, and no pair copies the whole reference
            cells = in_canonical_order(origin, np.isin(labels, [str(a), str(b)]))
            sim = simulate_pics(cells, groupby=groupby, a=[a], b=[b], n_pics=n_sim, n_umis=depth,
                                seed=derived_seed(seed, j))  # fmt: skip
            parts.append(sim)
            truth.append(np.full(sim.n_obs, j))
    genes = parts[0].var_names
    for part in parts:  # joined by position: anndata's join by name fails on duplicate var_names
        part.var_names = pd.RangeIndex(genes.size).astype(str)
    sim = ad.concat(parts, index_unique="-")
    sim.var_names = genes
    # where the PICs were deconvolved, unless that is a GPU this machine lacks (PICs saved there)
    device = info.get("device") if info.get("device") != "gpu" or gpu_available() else "cpu"
    arguments = dict(info["arguments"])
    if info["method"] == "ml":  # the pair posterior is the search's: alpha's regression is not needed
        arguments["alpha_model"] = "posterior"
    if info["method"] == "ml" and info.get("calibrated", True):  # the real PICs' temperatures, at any depth
        arguments["calibration_depth"] = calibration_depth(pics)
    else:  # nothing calibrated: a depth stored before deconvolve refused it here would now fail
        arguments.pop("calibration_depth", None)
    deconvolve(sim, singlets, groupby=groupby, a=ga, b=gb, method=info["method"], device=device,
               **arguments)  # fmt: skip
    post, ok_sim, _, _ = kept_posterior(sim, "pair_frequencies")
    # one code per source cell name (the A and B populations hold different cells)
    names = np.concatenate([sim.obs["source_a"].astype(str).to_numpy(), sim.obs["source_b"].astype(str).to_numpy()])
    cells = pd.factorize(names)[0].reshape(2, -1).T
    keep = np.flatnonzero(ok_sim)
    return Simulated(post[keep], np.concatenate(truth)[keep], cells[keep])


def calibration_depth(pics: ad.AnnData) -> int:
    """The depth at which deconvolve fitted ml's temperatures: uns['pic']['calibration_depth'],
    or for PICs deconvolved before it was recorded, what deconvolve took then."""
    info = pics.uns[K.UNS_PIC]
    if info.get("calibration_depth") is not None:
        return int(info["calibration_depth"])
    return deconvolved_depth(pics, pic_depths(pics, "pair_frequencies"))


def deconvolved_depth(pics: ad.AnnData, depths: np.ndarray) -> int:
    """The depth deconvolve read PICs of these UMI `depths` at: its n_umis where it down-sampled
    every PIC to it, else their median."""
    n_umis = pics.uns[K.UNS_PIC].get("n_umis")
    return int(n_umis) if n_umis is not None else median_depth(depths)


def label_means(post: sp.csr_matrix, labels: np.ndarray, n_labels: int,
                weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_labels, columns): the (`weights`-weighted) mean row of `post` per label (0 where a
    label has no weight), and each label's total weight."""
    w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.bincount(labels, weights=w, minlength=n_labels)
    member = sp.csr_matrix((w, (labels, np.arange(labels.size))), shape=(n_labels, labels.size))
    return np.asarray((member @ post).todense()) / np.where(counts > 0, counts, 1)[:, None], counts


def confusion(post: sp.csr_matrix, truth: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """M (k, k): row p is the (`weights`-weighted) mean posterior of the simulated PICs of true
    pair p; the identity row where none survived deconvolution or all weigh 0."""
    m, counts = label_means(post, truth, k, weights)
    empty = counts <= 0
    m[empty] = np.eye(k)[empty]
    return m


def unmix(m_conf: np.ndarray, mean_post: np.ndarray) -> np.ndarray:
    """pi >= 0 with sum 1 that best solves M^T pi = mean_post (least squares)."""
    k = m_conf.shape[0]
    a = np.vstack([m_conf.T, np.full((1, k), _SUM_WEIGHT)])
    y = np.concatenate([mean_post, [_SUM_WEIGHT]])
    pi, _ = nnls(a, y, maxiter=50 * k)
    total = pi.sum()
    return pi / total if total > 0 else np.full(k, 1.0 / k)
