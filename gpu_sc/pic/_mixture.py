"""Soft K-way mixture deconvolution of PICs (PICSEQ.md, "Soft K-way mixture").

The model of Bayesian PIC-seq, solved as a batched MAP by EM instead of per-PIC HMC. Every PIC n
is a mixture of ALL reference groups (A groups and B groups together):

    u_n ~ Multinomial(N_n, q_n),   q_n[g] = sum_k w_nk P[g, k] + eps,   w_n ~ Dirichlet(c, ..., c)

eps is added AFTER mixing, exactly as in the pair model (`_loglik`: alpha P[g,a] + (1-alpha)
P[g,b] + eps is the special case with two nonzero weights), so the log-likelihood returned here is
directly comparable with ``pic_ll`` of ``method="ml"``: with ``concentration=1`` the mixture nests
every pair, so its maximised LL is at least the best pair's. Because sum_k w_nk = 1 this equals
mixing the columns P[:, k] + eps; when the profile columns sum to 1 (as `_profiles.profiles` and
`_profiles.mean_profiles` give), renormalising them to (P[:, k] + eps) / (1 + G eps) would give the
same weights and shift every LL by -N_n log(1 + G eps).

EM (a minorise-maximise step; one iteration updates every PIC of a chunk at once):
    r_gk = w_k (P[g,k] + eps) / q[g]                      (responsibilities, on nonzeros only)
    A_k  = sum_g u_g r_gk = w_k * sum_g (u_g / q[g]) (P[g,k] + eps)   (one sparse @ dense product)
    w_k  <- max(A_k + c - 1, 0) / sum_j max(A_j + c - 1, 0)
c = 1 is maximum likelihood; c < 1 (sparse prior) switches groups off once their expected UMIs fall
below 1 - c; c > 1 smooths. The start is uniform (deterministic). Each PIC stops on its own when its
largest weight change is below `tol`, so the result of a PIC does not depend on the other PICs of
its chunk nor on the chunking.

EM is slow (linear, rate near 1) where weights head to 0, so by default it is accelerated by a
safeguarded SQUAREM extrapolation (`_squarem`) that keeps the objective non-decreasing. For c >= 1
the objective is concave and the MAP unique; for c < 1 it is not (the Dirichlet density is
unbounded at the faces), and EM finds the MAP on the face of the simplex it settles on.
"""

from __future__ import annotations

import numpy as np

from .._backend import is_gpu, is_sparse, sparse_module, to_host, xp_of
from .._ops._layout import value_rows
from .._settings import Progress

# float64 elements of the (nnz x K) gathered profiles per chunk; peak memory is about three such
# arrays (the profiles and the weights gathered on the stored entries, their product)
_BUDGET_CPU = 1 << 24  # 128 MiB
_BUDGET_GPU = 1 << 26  # 512 MiB: fewer, larger chunks keep the GPU busy


def _as_csr(x):
    """CSR (scipy or cupyx) from sparse or dense input, on the input's device."""
    if is_sparse(x):
        return x if x.format == "csr" else x.tocsr()
    if hasattr(x, "ndim") and x.ndim == 2:
        if x.dtype.kind in "biu":  # cupyx sparse holds float data only; counts are exact in float64
            x = x.astype(np.float64)
        return sparse_module(x).csr_matrix(x)
    msg = f"x must be a 2-D CSR matrix of PIC counts, got {type(x).__name__}."
    raise TypeError(msg)


def _check(x, profiles, eps, concentration, n_iter, tol, chunk):
    x = _as_csr(x)
    if not x.has_canonical_format:  # duplicates or unsorted genes: a canonical copy (the EM's
        x = x.copy()  # products take the pattern as canonical); the user's matrix stays as it is
        x.sum_duplicates()
    p = np.asarray(to_host(profiles), dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != x.shape[1] or p.shape[1] < 1:
        msg = (f"profiles must be (genes, K) with genes = x.shape[1] = {x.shape[1]}, "
               f"got {p.shape}.")
        raise ValueError(msg)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        msg_0 = "profiles must be finite and non-negative."
        raise ValueError(msg_0)
    if not (np.isfinite(eps) and eps >= 0):
        msg_0 = f"eps must be >= 0, got {eps}."
        raise ValueError(msg_0)
    if not (np.isfinite(concentration) and concentration > 0):
        msg_0 = f"concentration must be > 0, got {concentration}."
        raise ValueError(msg_0)
    if int(n_iter) < 0 or not (tol >= 0):
        msg_0 = "n_iter and tol must be >= 0."
        raise ValueError(msg_0)
    if chunk is not None and int(chunk) < 1:
        msg_0 = f"chunk must be >= 1 PICs, got {chunk}."
        raise ValueError(msg_0)
    xp = xp_of(x)
    if x.nnz:
        bad = xp.logical_or(~xp.isfinite(x.data), x.data < 0).any()
        if bool(bad):
            msg_0 = "x must hold finite non-negative counts."
            raise ValueError(msg_0)
    return x, p


def _chunks(indptr: np.ndarray, k: int, chunk: int | None, budget: int):
    """Row ranges: `chunk` PICs each, or (default) as many as keep nnz * K under the budget."""
    n = indptr.size - 1
    if chunk is not None:
        return [(s, min(s + int(chunk), n)) for s in range(0, n, int(chunk))]
    out, s = [], 0
    per = max(budget // max(k, 1), 1)
    while s < n:
        e = int(np.searchsorted(indptr, indptr[s] + per, side="right")) - 1
        e = min(max(e, s + 1), n)  # at least one row, even if it alone exceeds the budget
        out.append((s, e))
        s = e
    return out


class _Block:
    """The stored entries of the rows still iterating (the working set of one chunk)."""

    def __init__(self, xp, spm, data, indices, indptr, q_prof, conc):
        self.xp, self.spm, self.q_prof, self.conc = xp, spm, q_prof, conc
        # int32 index arrays where they fit (the type scipy / cupyx choose themselves): no
        # cast each time the ratio matrix is built
        idt = np.int32 if data.size < np.iinfo(np.int32).max else np.int64
        self.d, self.ix, self.ip = data, indices.astype(idt, copy=False), indptr.astype(idt)
        # the (genes, K) right-hand side of the sparse product; column-major for cuSPARSE
        self.q_mm = xp.asfortranarray(q_prof) if xp is not np else q_prof
        self.sel = xp.arange(indptr.size - 1)  # rows of the chunk in the working set
        self.rows = value_rows(indptr, slice(0, data.size))
        self.qz = q_prof[indices]  # (nnz, K) profiles + eps on the stored entries
        self.m = self._matrix()

    def _matrix(self):
        """The working set's pattern as a CSR matrix, built once per working set: each EM map
        only swaps in its values. Its entries are canonical (mixture_weights makes them so), and
        saying so spares cupyx a check kernel and a device sync at every product."""
        m = self.spm.csr_matrix((self.d, self.ix, self.ip), shape=(self.sel.size, self.q_prof.shape[0]))
        m.has_canonical_format = True
        return m

    def keep(self, keep_row):
        """Compact the working set to the rows where `keep_row` (over the working set)."""
        xp = self.xp
        keep_nz = keep_row[self.rows]
        cnt = xp.diff(self.ip)[keep_row]
        self.ip = xp.concatenate([xp.zeros(1, dtype=self.ip.dtype),
                                  xp.cumsum(cnt).astype(self.ip.dtype)])
        self.d, self.ix, self.qz = self.d[keep_nz], self.ix[keep_nz], self.qz[keep_nz]
        self.sel = self.sel[keep_row]
        self.rows = value_rows(self.ip, slice(0, self.d.size))
        self.m = self._matrix()

    def em(self, w, objective: bool = False):
        """One EM map of the working-set weights `w`; optionally the MAP objective at `w`."""
        xp, conc = self.xp, self.conc
        q = xp.einsum("mk,mk->m", self.qz, w[self.rows])
        # a value no weighted profile can explain (q = 0: at eps=0, a gene no profile with
        # weight expresses) says nothing about the weights: ratio 0, as the EM's fixed point on
        # the boundary has it (d / TINY overflowed to inf from 4 UMIs, and inf x 0 gave NaN)
        self.m.data = self.d / xp.where(q > 0, q, 1.0) * (q > 0)
        q = xp.maximum(q, _TINY)
        s = self.m @ self.q_mm
        a = w * s  # expected UMIs per group; rows sum to N
        num = xp.maximum(a + (conc - 1.0), 0.0)
        tot = num.sum(1)
        if conc < 1.0:
            # every group below 1 - c (tiny PICs): the MAP sits on a vertex; take the group
            # with the most expected UMIs (for every row, without asking the device which)
            dead = tot <= 0
            top = xp.argmax(a, axis=1)
            onehot = (xp.arange(w.shape[1])[None, :] == top[:, None]).astype(np.float64)
            num = xp.where(dead[:, None], onehot, num)
            tot = xp.where(dead, 1.0, tot)
        new = num / tot[:, None]
        if not objective:
            return new, None
        ll = xp.bincount(self.rows, weights=self.d * xp.log(q), minlength=self.sel.size)
        return new, ll[: self.sel.size] + (conc - 1.0) * _sum_log(xp, w)


_TINY = np.finfo(np.float64).tiny
_HALVINGS = 8  # of a SQUAREM step towards the plain double EM map (step -1)


def _sum_log(xp, w):
    """sum over k with w_k > 0 of log w_k, per row."""
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, 1.0)), 0.0).sum(1)


def _squarem(xp, blk, w0):
    """One safeguarded SQUAREM cycle (Varadhan & Roland 2008, scheme S3) on the working set.

    Two EM maps give r = F(w0) - w0 and v = F(F(w0)) - 2 F(w0) + w0; the extrapolation
    w' = w0 - 2 s r + s^2 v (s = -|r| / |v| <= -1) is pulled back towards F(F(w0)) (s = -1)
    until it keeps every weight of F(F(w0)) positive that is positive there (and 0 where it is
    0), then one more EM map. If the objective at w' is below the objective at F(w0), the cycle
    returns F(F(w0)) instead, so the objective never decreases (EM maps never decrease it).
    """
    w1, obj0 = blk.em(w0, True)
    w2, obj1 = blk.em(w1, True)
    r = w1 - w0
    v = w2 - w1 - r
    sr, sv = (r * r).sum(1), (v * v).sum(1)
    step = -xp.sqrt(sr / xp.where(sv > 0, sv, 1.0))
    step = xp.where(sv > 0, xp.minimum(step, -1.0), -1.0)
    # each row's step: the first of s, (s - 1) / 2, ... (8 halvings towards -1) whose point
    # is admissible, else the last; all candidates at once, so the device is never asked
    steps = [step]
    for _ in range(_HALVINGS):
        steps.append(0.5 * (steps[-1] - 1.0))
    first_ok = xp.full(step.shape, _HALVINGS)
    for j in range(_HALVINGS - 1, -1, -1):
        wj = w0 - 2.0 * steps[j][:, None] * r + (steps[j] * steps[j])[:, None] * v
        ok_j = ~((wj < 0) | ((wj <= 0) & (w2 > 0))).any(1)
        first_ok = xp.where(ok_j, j, first_ok)
    step = xp.take_along_axis(xp.stack(steps, axis=1), first_ok[:, None], axis=1)[:, 0]
    wp = w0 - 2.0 * step[:, None] * r + (step * step)[:, None] * v
    bad = ((wp < 0) | ((wp <= 0) & (w2 > 0))).any(1)
    # groups EM switched off (c < 1) stay off: the extrapolation must not revive them
    wp = xp.where(bad[:, None], w2, xp.where(w2 > 0, wp, 0.0))
    wp = wp / wp.sum(1, keepdims=True)
    w3, objp = blk.em(wp, True)
    ok = xp.isfinite(objp) & (objp >= obj1)
    return xp.where(ok[:, None], w3, w2)


def _em_block(xp, spm, data, indices, indptr, q_prof, eps, conc, n_iter, tol,
              accelerate=False):
    """EM for one block of rows (all with counts). Returns (weights, ll, iterations done)."""
    n, k = indptr.size - 1, q_prof.shape[1]
    w = xp.full((n, k), 1.0 / k)
    if n == 0:
        return w, xp.zeros(0), 0
    live_all = xp.ones(n, dtype=bool)
    blk = _Block(xp, spm, data, indices, indptr, q_prof, conc)
    done_it = 0
    for it in range(int(n_iter)):
        ws = w[blk.sel]
        new = _squarem(xp, blk, ws) if accelerate else blk.em(ws)[0]
        live = live_all[blk.sel]
        delta = xp.abs(new - ws).max(1)
        # masks by where, not by boolean indexing, which makes the device report a count
        w[blk.sel] = xp.where(live[:, None], new, ws)
        done_it = it + 1
        going = live & ~(delta < tol)
        live_all[blk.sel] = going
        n_live = int(going.sum())  # the one device sync of an iteration
        if n_live == 0:
            break
        if n_live * 2 < blk.sel.size:  # compact the working set to the live rows
            blk.keep(live_all[blk.sel])
    ll = _loglik_block(xp, data, indices, indptr, q_prof, w, eps)
    return w, ll, done_it


def _loglik_block(xp, data, indices, indptr, q_prof, w, eps):
    """sum_g u_g log(sum_k w_k P[g,k] + eps) per row (q_prof = P + eps, rows of w sum to 1)."""
    n = indptr.size - 1
    rows = value_rows(indptr, slice(0, data.size))
    q = xp.einsum("mk,mk->m", q_prof[indices], w[rows])
    term = data * xp.log(xp.maximum(q, _TINY))
    return xp.bincount(rows, weights=term, minlength=n)[:n] if data.size else xp.zeros(n)


def mixture_weights(x, profiles, *, eps: float = 1e-4, concentration: float = 1.0,
                    n_iter: int = 500, tol: float = 1e-8, chunk: int | None = None,
                    progress=None, accelerate: bool = True):
    """MAP mixture weights of every PIC over all reference groups, by batched EM.

    Parameters
    ----------
    x
        PIC counts, PICs x genes: a CSR matrix (scipy.sparse on the CPU or cupyx.scipy.sparse on
        the GPU; other sparse formats and dense arrays are converted). Non-negative, finite.
    profiles
        (genes, K) float64 reference profiles (columns summing to 1), e.g. A groups then B
        groups. Host numpy; moved to the device when `x` is on the GPU.
    eps
        Pseudo-probability added to the mixed profile (the pair model's eps).
    concentration
        Dirichlet concentration c of the prior on the weights: 1 = maximum likelihood,
        < 1 = sparse weights (groups with fewer than 1 - c expected UMIs are switched off),
        > 1 = smoother weights.
    n_iter
        Maximum iterations (0 returns the uniform start): EM maps, or with `accelerate`
        SQUAREM cycles of three EM maps each.
    tol
        A PIC has converged (and stops) when its largest weight change is below `tol`.
    chunk
        PICs per chunk; default: as many as keep each (nonzeros x K) working array near 128 MiB
        (CPU) or 512 MiB (GPU).
    progress
        None, True (PICs done on stderr, stdout in Jupyter, about every tenth, at ``gsc.settings.verbosity`` 2) or
        a callable ``progress(done, total)`` called with the number of PICs finished after each
        chunk.
    accelerate
        Safeguarded SQUAREM: each iteration is one cycle of three EM maps with an extrapolation
        that is kept only where it does not lower the MAP objective, so the objective still
        never decreases. Plain EM (False) converges slowly where groups go to weight 0.

    Returns
    -------
    weights
        (n, K) float64 on the device of `x`; rows sum to 1. NaN for PICs without counts.
    ll
        (n,) float64 on the device of `x`: sum_g u_g log(sum_k w_k P[g, k] + eps) at the
        returned weights (no multinomial coefficient, no prior; as ``pic_ll``). NaN for PICs
        without counts.
    n_iter_done
        Largest number of iterations any PIC used (int; = `n_iter` where some PIC did not
        reach `tol`).
    """
    x, p = _check(x, profiles, eps, concentration, n_iter, tol, chunk)
    xp = xp_of(x)
    spm = sparse_module(x)
    n, k = x.shape[0], p.shape[1]
    q_prof = xp.asarray(p + float(eps))  # mix-then-add-eps == mixing (P + eps) when sum w = 1
    weights = xp.full((n, k), np.nan)
    ll = xp.full(n, np.nan)
    indptr_h = np.asarray(to_host(x.indptr), dtype=np.int64)
    data_all = x.data.astype(np.float64, copy=False)
    most = 0
    if progress is True:
        track = Progress("mixture_weights", n, unit="PICs")
        progress = lambda done, _total: track(done)  # noqa: E731
    budget = _BUDGET_GPU if is_gpu(x) else _BUDGET_CPU
    for s, e in _chunks(indptr_h, k, chunk, budget):
        lo, hi = int(indptr_h[s]), int(indptr_h[e])
        data = data_all[lo:hi]
        indices = x.indices[lo:hi]
        ip = xp.asarray(indptr_h[s : e + 1] - lo)
        cnt = np.diff(indptr_h[s : e + 1])
        # row totals without a Python loop: entries carry their row, bincount sums them
        rows = value_rows(ip, slice(0, data.size))
        tot = xp.bincount(rows, weights=data, minlength=e - s)[: e - s] if data.size \
            else xp.zeros(e - s)
        has = to_host(tot > 0)
        keep_rows = np.flatnonzero(has)
        if keep_rows.size:
            # drop the rows without counts (and their stored zeros) from the block
            keep_nz = xp.asarray(has)[rows]
            ip_k = np.concatenate([[0], np.cumsum(cnt[has])]).astype(np.int64)
            w, block_ll, it = _em_block(xp, spm, data[keep_nz], indices[keep_nz], xp.asarray(ip_k),
                                 q_prof, eps, float(concentration), n_iter, tol,
                                 accelerate=accelerate)
            idx = xp.asarray(s + keep_rows)
            weights[idx] = w
            ll[idx] = block_ll
            most = max(most, it)
        if callable(progress):
            progress(e, n)
    return weights, ll, most


def log_posterior(x, profiles, weights, *, eps: float = 1e-4, concentration: float = 1.0):
    """The MAP objective EM increases: ll + (c - 1) sum_{k: w_k > 0} log w_k, per PIC.

    The Dirichlet log-density (up to its constant) on the face of the simplex holding the
    weights; with c = 1 it is the log-likelihood. Returns (n,) float64 on the device of `x`.
    """
    x, p = _check(x, profiles, eps, concentration, 0, 0.0, None)
    xp = xp_of(x)
    w = xp.asarray(weights, dtype=np.float64)
    ll = _loglik_block(xp, x.data.astype(np.float64), x.indices, x.indptr, xp.asarray(p + eps),
                       xp.nan_to_num(w), eps)
    with np.errstate(divide="ignore"):
        lw = xp.where(w > 0, xp.log(xp.where(w > 0, w, 1.0)), 0.0)
    out = ll + (float(concentration) - 1.0) * lw.sum(1)
    return xp.where(xp.isnan(w).any(1), np.nan, out)


def summarise(weights, n_a: int, *, major: float = 0.1) -> dict[str, np.ndarray]:
    """Per-PIC summary of mixture weights whose first `n_a` columns are the A groups.

    Parameters
    ----------
    weights
        (n, K) weights from :func:`mixture_weights` (numpy or cupy); NaN rows = no counts.
    n_a
        Number of A groups (0 < n_a < K); columns n_a.. are the B groups.
    major
        Weight at or above which a group counts as a major component.

    Returns
    -------
    Dict of host numpy arrays of length n:
    ``alpha`` (float64) sum of the A weights (NaN without counts);
    ``a``, ``b`` (int64) index of the top A group (within the A groups) and of the top B group
    (within the B groups), first index on ties; -1 without counts or where that side's weights
    are all 0;
    ``p_a``, ``p_b`` (float64) the top group's share of its side's weight (NaN where the index
    is -1);
    ``n_major`` (int64) number of groups with weight >= `major` (0 without counts; > 2 flags
    triplets or contamination).
    """
    w = np.asarray(to_host(weights), dtype=np.float64)
    if w.ndim != 2:
        msg = f"weights must be (n, K), got shape {w.shape}."
        raise ValueError(msg)
    n, k = w.shape
    if not 0 < int(n_a) < k:
        msg = f"n_a must be in 1..K-1 = 1..{k - 1}, got {n_a}."
        raise ValueError(msg)
    n_a = int(n_a)
    nan = np.isnan(w).any(1)
    wz = np.where(nan[:, None], 0.0, w)
    out: dict[str, np.ndarray] = {}
    rows = np.arange(n)
    for side, part in (("a", wz[:, :n_a]), ("b", wz[:, n_a:])):
        tot = part.sum(1)
        top = np.argmax(part, axis=1) if n else np.zeros(0, np.int64)
        undefined = nan | (tot <= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = part[rows, top] / tot
        out[side] = np.where(undefined, -1, top).astype(np.int64)
        out["p_" + side] = np.where(undefined, np.nan, share)
    out["alpha"] = np.where(nan, np.nan, wz[:, :n_a].sum(1))
    out["n_major"] = np.where(nan, 0, (wz >= major).sum(1)).astype(np.int64)
    return {key: out[key] for key in ("alpha", "a", "b", "p_a", "p_b", "n_major")}
