"""UMIs drawn from cells, compiled: each part takes `want` UMIs of a cell without replacement
(with replacement where the cell holds fewer), as a PIC is built from its cells. All of
`gsc.pic`'s draws go through here: the synthetic PICs (`simulate_pics`, also the alpha
regression's training PICs), deconvolve's down-sampling and the matched doublets of
`interaction_genes`. In Python, one numpy call or more a draw, these took 6 of the 21 s of
`interaction_genes` on 1,500 TNBC PICs (60,000 draws) and 15 of ml's 21 s there (its 20,000
training PICs, whose pieces kept every gene the cell holds, drawn or not).

A draw picks distinct UMI slots of the cell (or the slots it leaves, when it keeps most of them),
sorts them and walks them along the cell's cumulative counts: the multivariate hypergeometric
counts, for the cost of the slots drawn and one pass over the cell's genes. Where the cell
holds fewer UMIs than asked, slots are drawn with replacement instead (multinomial counts).
Parts are drawn in parallel on numba's threads; each part's random numbers come from a
generator of its own (splitmix64 keyed by the seed and the part's key: its index, or a key the
caller gives, such as a hash of the PIC's name), so a seed gives the same draws on every run and
on any number of threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@numba.njit(cache=True, inline="always")
def _mix(z):
    """splitmix64's output function: a well-mixed 64-bit value of a 64-bit state."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _below(state, n):
    """(next state, a uniform integer in [0, n)) of splitmix64 state `state`."""
    state = state + _GOLDEN
    u = np.float64(_mix(state) >> np.uint64(11)) * _TO_UNIT
    return state, min(np.int64(u * n), n - 1)


@numba.njit(cache=True)
def _keyed(seed, stream, keys, n, out):
    s = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
    for i in range(keys.size):
        k = _mix(s ^ (keys[i] * np.uint64(0x94D049BB133111EB)))
        for j in range(n):
            out[i, j] = _mix(k + np.uint64(j + 1) * _GOLDEN)


def keyed_bits(seed: int, stream: int, keys, n: int) -> np.ndarray:
    """(len(keys), n) random uint64 values, a function of (seed, stream, key, j) alone: row i is
    the same for keys[i] wherever it stands among the others (a PIC's draws do not change when
    the PICs are reordered, subset or chunked). stream: which of a caller's draws."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    out = np.empty((keys.size, n), np.uint64)
    _keyed(np.uint64(seed), np.uint64(stream), keys, n, out)
    return out


def keyed_uniforms(seed: int, stream: int, keys, n: int) -> np.ndarray:
    """`keyed_bits` as uniforms in [0, 1) (their top 53 bits)."""
    return (keyed_bits(seed, stream, keys, n) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def name_keys(names) -> np.ndarray:
    """Each name's key for the keyed draws: pandas' stable 64-bit hash of it (a PIC's obs name).
    A name's later occurrences (PICs of two samples concatenated without unique names) are keyed
    by the name and their occurrence number, so they draw apart, not the same stream; which one
    is first follows the row order, as in obs_names_make_unique."""
    values = np.asarray(names, dtype=object)
    keys = pd.util.hash_array(values)
    codes, _ = pd.factorize(values, use_na_sentinel=False)  # missing names counted too
    occurrence = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    later = occurrence > 0
    if later.any():  # a row hash of (name, occurrence): another function than a name's own hash
        pair = pd.DataFrame({"name": values[later], "occurrence": occurrence[later]})
        keys[later] = pd.util.hash_pandas_object(pair, index=False).to_numpy()
    return keys


def canonical_rows(adata, rows=None) -> np.ndarray:
    """Row indices of `adata` (of `rows`, a boolean mask or indices; None: all) in the order of
    their obs names' keys: cells drawn from them in this order (simulated PICs, halves of a
    reference) do not depend on the order the rows came in."""
    rows = np.arange(adata.n_obs) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    return rows[np.argsort(name_keys(adata.obs_names[rows]), kind="stable")]


def in_canonical_order(adata, rows=None):
    """`adata`'s `rows` (None: all) in `canonical_rows` order: the AnnData itself where that is
    its own order, else a view."""
    order = canonical_rows(adata, rows)
    return adata if order.size == adata.n_obs and np.array_equal(order, np.arange(adata.n_obs)) else adata[order]


@numba.njit(cache=True)
def _slots(state, total, k, replace, seen, out):
    """`k` slots of [0, total) into out[:k], sorted: distinct, or with replacement; `seen`
    (>= total, all False) is left all False. Returns the generator's next state."""
    m = 0
    while m < k:
        state, s = _below(state, total)
        if replace:
            out[m] = s
            m += 1
        elif not seen[s]:
            seen[s] = True
            out[m] = s
            m += 1
    if not replace:
        for i in range(k):
            seen[out[i]] = False
    out[:k].sort()
    return state


@numba.njit(cache=True, parallel=True)
def _fill(indptr, indices, data, totals, cells, wants, keys, seed, runs, out_ptr, out_cols, out_vals):
    """Part p (a cell `cells[p]` of `totals[cells[p]]` UMIs, `wants[p]` of them) writes its
    nonzero counts from out_ptr[p]; returns how many each part wrote. `data` holds integer
    counts of any numeric type, read as integers one at a time (never copied whole). The parts
    are split into `runs` contiguous runs (one a thread); each part seeds its own generator from
    (seed, keys[p]), so the split does not change the draws."""
    n_parts = cells.size
    most = max(totals.max(), wants.max()) if n_parts else 0
    written = np.zeros(n_parts, np.int64)
    key = np.uint64(seed) * _GOLDEN
    for r in numba.prange(runs):
        seen = np.zeros(most + 1, np.bool_)
        slots = np.empty(most + 1, np.int64)
        for p in range(r * n_parts // runs, (r + 1) * n_parts // runs):
            c, want = cells[p], wants[p]
            total = totals[c]
            if want <= 0 or total == 0:
                continue
            state = _mix(key + keys[p] * np.uint64(0xD1B54A32D192ED03))
            replace = want > total  # too few UMIs: slots with replacement
            keep = replace or want <= total - want  # draw the kept slots, or the dropped ones
            k = want if keep else total - want
            _slots(state, total, k, replace, seen, slots)
            o = out_ptr[p]
            s, start = 0, 0
            for j in range(indptr[c], indptr[c + 1]):
                d = np.int64(data[j])
                end = start + d
                hit = 0
                while s < k and slots[s] < end:
                    hit += 1
                    s += 1
                got = hit if keep else d - hit
                if got > 0:
                    out_cols[o] = indices[j]
                    out_vals[o] = got
                    o += 1
                start = end
            written[p] = o - out_ptr[p]
    return written


def draw_parts(ref_indptr, ref_indices, ref_counts, totals, cells, wants, seed: int, runs: int | None = None,
               keys=None):  # fmt: skip
    """(cols, counts, per-part lengths) of `wants[p]` UMIs drawn from reference row `cells[p]`
    for every part p, in part order. ref_counts: the rows' integer counts, in any numeric type,
    and ref_indices are read in place (a reference of many cells is not copied); totals: each
    row's UMIs; runs: runs of parts drawn in parallel (numba's threads when None; the draws are
    the same for any number); keys: each part's generator key (uint64; None: its index p), so
    that a part keyed by what it is draws the same UMIs wherever it stands in the list."""
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    wants = np.ascontiguousarray(wants, dtype=np.int64)
    keys = np.arange(cells.size, dtype=np.uint64) if keys is None else np.ascontiguousarray(keys, dtype=np.uint64)
    nnz = np.diff(ref_indptr)[cells]
    bound = np.minimum(nnz, np.maximum(wants, 0))  # a part writes at most one entry a gene, a UMI
    out_ptr = np.concatenate([[0], np.cumsum(bound)]).astype(np.int64)
    cols = np.empty(int(out_ptr[-1]), np.int64)
    vals = np.empty(int(out_ptr[-1]), np.float64)
    indptr = np.asarray(ref_indptr, np.int64)
    written = _fill(indptr, ref_indices, ref_counts, np.asarray(totals, np.int64), cells, wants, keys, int(seed),
                    runs or numba.get_num_threads(), out_ptr, cols, vals)  # fmt: skip
    keep = np.arange(cols.size) - np.repeat(out_ptr[:-1], bound) < np.repeat(written, bound)
    return cols[keep], vals[keep], written


def draw_rows(x: sp.csr_matrix, cells, wants, rows, n_rows: int, seed: int, dtype=np.float64,
              keys=None) -> sp.csr_matrix:  # fmt: skip
    """CSR (n_rows, x's columns) whose row r sums the parts p with rows[p] == r, part p being
    wants[p] UMIs drawn from row cells[p] of `x` (canonical CSR of integer counts; `draw_parts`,
    with its `keys`)."""
    totals = np.rint(np.asarray(x.sum(axis=1, dtype=np.float64)).ravel())  # once for all the draws
    cols, vals, lens = draw_parts(x.indptr, x.indices, x.data, totals, cells, wants, seed, keys=keys)
    rows = np.repeat(np.asarray(rows, np.int64), lens)
    return sp.coo_matrix((vals.astype(dtype), (rows, cols)), shape=(n_rows, x.shape[1])).tocsr()
