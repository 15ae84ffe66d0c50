"""Doublet simulation: random pairs of observed cells, their counts added (and optionally
thinned), drawn from the same NumPy RandomState calls as scanpy / scikit-learn make, so the
same seed gives the same doublets."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import scipy.sparse as sp

from ..._backend import is_gpu, is_sparse, sparse_module, to_host, xp_of


def check_random_state(seed, *, step: str) -> np.random.RandomState:
    """scikit-learn's rule: None -> NumPy's global RandomState, an int -> a new RandomState of
    that seed, a RandomState -> itself (shared: its draws continue)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, Integral):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    msg = f"{step}: random_state must be None, an int or a numpy.random.RandomState, got {seed!r}."
    raise ValueError(msg)


def sample_without_replacement(n_population: int, n_samples: int, rs: np.random.RandomState) -> np.ndarray:
    """`n_samples` distinct integers below `n_population`, the draws of scikit-learn's
    ``sample_without_replacement(method='auto')`` for the same RandomState: a permutation when
    0.01 < n_samples / n_population < 0.99, else tracking selection (ratio < 0.2: draws of
    randint(n_population), a repeat drawn again) or reservoir sampling."""
    if n_samples > n_population:
        msg = f"cannot draw {n_samples} distinct pairs from {n_population}"
        raise ValueError(msg)
    ratio = n_samples / n_population if n_population else 1.0
    if 0.01 < ratio < 0.99:
        return rs.permutation(n_population)[:n_samples]
    if ratio < 0.2:
        # one randint(n_population, size=m) draws (and consumes) what m calls of
        # randint(n_population) do; a repeat is skipped as the one-by-one loop redraws it. The
        # state is then rewound and exactly the draws used are taken again, so that `rs`
        # continues where scikit-learn's loop leaves it.
        state = rs.get_state()
        stream, first = np.empty(0, np.int64), np.empty(0, np.int64)
        while first.size < n_samples:
            stream = np.concatenate([stream, rs.randint(n_population, size=n_samples - first.size + 16)])
            _, first = np.unique(stream, return_index=True)
        used = np.sort(first)[:n_samples]
        rs.set_state(state)
        rs.randint(n_population, size=int(used[-1]) + 1)
        return stream[used]
    out = np.arange(n_samples, dtype=np.int64)
    for i in range(n_samples, n_population):
        j = rs.randint(0, i + 1)
        if j < n_samples:
            out[j] = i
    return out


def sample_pairs(n_obs: int, n_sim: int, rs: np.random.RandomState) -> np.ndarray:
    """(n_sim, 2) int64 parent pairs: distinct ordered pairs (i, j), a cell paired with itself
    allowed, as scanpy's ``sample_comb((n_obs, n_obs), n_sim)``."""
    flat = sample_without_replacement(n_obs * n_obs, n_sim, rs)
    return np.stack(np.unravel_index(flat, (n_obs, n_obs)), axis=1).astype(np.int64)


def _row_totals(x):
    xp = xp_of(x)
    totals = xp.asarray(x.sum(axis=1)).ravel()
    return totals.astype(np.int64 if x.dtype.kind in "iub" else x.dtype)


def simulate(x, pairs: np.ndarray, *, rate: float, rs: np.random.RandomState):
    """(doublet counts, their totals): the rows of `x` (CSR or dense counts, host or GPU) added
    for each pair, on the device of `x` (CSR, or dense for dense `x`), in its dtype. Totals
    are the parents' row sums added.

    With ``rate < 1`` each summed count is thinned to Binomial(round(count), rate), drawn over
    the stored values of the sum in the order scanpy stores them (SciPy's CSC rows taken and
    added, which is not sorted order, so that sum is formed the same way, on the host), and the
    totals become thinned + Binomial(round(original total - thinned), rate), drawn as scanpy
    draws it: from NumPy's global generator, not from `rs` (so under np.random.seed the totals
    are scanpy's; without it they change from call to call, as scanpy's do)."""
    xp = xp_of(x)
    first, second = xp.asarray(pairs[:, 0]), xp.asarray(pairs[:, 1])
    totals = _row_totals(x)
    sim_totals = totals[first] + totals[second]
    if rate >= 1:
        sim = x[first] + x[second]
        if is_sparse(sim):
            sim = sim.tocsr()
            sim.eliminate_zeros()
        return sim, sim_totals
    host = x.get() if is_gpu(x) else x
    csc = sp.csc_matrix(host)
    summed = csc[pairs[:, 0]] + csc[pairs[:, 1]]
    drawn = rs.binomial(np.round(summed.data).astype(np.int64), rate)
    summed = sp.csc_matrix((drawn.astype(x.dtype), summed.indices, summed.indptr), shape=summed.shape)
    current = np.asarray(summed.sum(axis=1)).ravel()
    left = to_host(sim_totals).astype(np.float64) - current
    extra = np.random.binomial(np.round(left).astype(np.int64), rate)  # scanpy's global generator
    new_totals = (current + extra).astype(to_host(sim_totals).dtype)
    sim = summed.tocsr()
    sim.eliminate_zeros()
    if not is_sparse(x):
        sim = sim.toarray()
    if is_gpu(x):
        sim = xp.asarray(sim) if not is_sparse(x) else sparse_module(x).csr_matrix(sim)
        new_totals = xp.asarray(new_totals)
    return sim, new_totals
