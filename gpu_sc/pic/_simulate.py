"""Synthetic PICs (doublets / triplets) from real singlets (PICSEQ.md section 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._backend import is_dask
from .._ops._layout import in_layout
from .._validation import check_anndata, check_int, check_integer_counts, check_seed
from .._values import native_order
from ..get import array_to_cpu
from ._args import population_groups
from ._umi_draws import draw_rows


def _counts_csr(x, *, step: str, what: str) -> sp.csr_matrix:
    """Raw integer counts `x` as a float64 host CSR matrix (checked): device counts (to_gpu moves
    singlets too) are brought to the host and a Dask matrix computed, as the UMI draws read any
    cell of it."""
    x = array_to_cpu(x)
    if is_dask(x):
        x = x.compute()
    if not (sp.issparse(x) or isinstance(x, np.ndarray)):
        on_disk = " (on disk: an AnnData read with backed='r'; load it with .to_memory())" if hasattr(
            x, "to_memory") or type(x).__module__.startswith("h5py") else ""
        msg = (f"{step}: needs {what} counts as a numpy array or a scipy.sparse matrix (also on the "
               f"GPU or as Dask blocks), got {type(x).__name__}{on_disk}.")
        raise TypeError(msg)
    if sp.issparse(x) and not x.dtype.isnative:  # '>f4' from some HDF5 files: scipy converts no such matrix
        x = in_layout(x)
        x = sp.csr_matrix((native_order(x.data), x.indices, x.indptr), shape=x.shape)
    # copy=True: a dtype change alone copies the values but shares the index arrays, which
    # sum_duplicates then sorts in place (the user's matrix would lose its gene order)
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    x.sum_duplicates()
    check_integer_counts(x, step=f"{step} ({what})")
    return x


class _Pool:
    """Cells to draw members from. With a use limit, a cell that has used its last leaves by a
    swap with the live end, so a draw stays O(1); without one, a draw is exactly
    ``cells[rng.integers(cells.size)]``, so unlimited results do not change."""

    def __init__(self, cells: np.ndarray, limited: bool):
        self.cells = np.array(cells)  # a copy: the swaps must not reorder the caller's array
        self.size = self.cells.size
        self.where = {int(c): i for i, c in enumerate(self.cells)} if limited else None

    def draw(self, rng: np.random.Generator):
        return self.cells[rng.integers(self.size)]

    def remove(self, cell) -> None:
        i = self.where.pop(int(cell), None)
        if i is None:  # not in this pool (the other role's, or another sample's)
            return
        self.size -= 1
        if i < self.size:
            last = self.cells[self.size]
            self.cells[i] = last
            self.where[int(last)] = i


def simulate_pics(singlets: AnnData, *, groupby: str, a, b, n_pics: int, n_umis: int = 1000,
                  composition: str = "AB", sample_key: str | None = None,
                  max_uses: int | None = None, seed: int = 0) -> AnnData:
    """Synthetic PICs built from singlets of populations A and B.

    Parameters
    ----------
    singlets
        Raw integer counts in ``.X``.
    groupby
        obs column with the reference groups.
    a, b
        Group name(s) forming population A and population B.
    n_pics
        Number of attempts (0 or more); only PICs totalling exactly ``n_umis`` are kept, so the
        result may have fewer (none: an AnnData with no rows and the obs columns below).
    n_umis
        Target total of each PIC (a positive integer).
    composition
        ``"AB"`` (doublet), ``"AAB"`` or ``"ABB"`` (triplets: the two A or B members are two
        cells; a sample with one such cell makes no triplet).
    sample_key
        If given, all members of a PIC come from the same sample; cells whose sample is
        missing are in no PIC.
    max_uses
        If given, each singlet is a member of at most this many PICs (``1``: no two PICs share
        a cell, as in real data). Attempts stop early once population A has no cell left, and
        an attempt whose sample has no B (or second A) cell left makes no PIC. ``None`` (the
        default) draws members with replacement, so a few cells can stand in many PICs.
    seed
        Random seed (a non-negative integer). The same seed and the same singlets in the same
        row order give the same PICs; source cells are drawn by row, so reordered singlets give
        other (equally valid) PICs. Where that matters, sort the singlets first (by
        ``obs_names``), as `pair_frequencies`' own simulations do.

    Returns
    -------
    AnnData of raw counts (CSR float32) with obs ``true_a``, ``true_b``, ``true_alpha``
    (share of UMIs from the A member(s)), ``source_a``, ``source_b`` and for triplets
    ``true_a2``/``source_a2`` or ``true_b2``/``source_b2``.
    """
    step = "simulate_pics"
    check_anndata(singlets, step=step, name="singlets")
    if composition not in ("AB", "AAB", "ABB"):
        msg = f"{step}: composition must be 'AB', 'AAB' or 'ABB', got {composition!r}."
        raise ValueError(msg)
    n_pics = check_int(n_pics, step=step, name="n_pics", minimum=0)
    n_umis = check_int(n_umis, step=step, name="n_umis")
    seed = check_seed(seed, step=step)
    max_uses = check_int(max_uses, step=step, name="max_uses", none_ok=True,
                         hint=" (the most PICs a singlet may be in)")
    labels, ga, gb = population_groups(singlets, groupby, a, b, step=step)
    if sample_key is not None and sample_key not in singlets.obs:
        msg = (
            f"{step}: sample_key {sample_key!r} is not a column of singlets.obs "
                       f"(columns: {list(singlets.obs.columns)[:20]})."
        )
        raise KeyError(msg)
    x = _counts_csr(singlets.X, step=step, what="singlets")
    totals = np.asarray(x.sum(1)).ravel()
    samples = (singlets.obs[sample_key].astype(str).to_numpy() if sample_key is not None
               else np.zeros(singlets.n_obs, dtype=object))
    # cells of unknown sample share none (not one named 'nan')
    known = singlets.obs[sample_key].notna().to_numpy() if sample_key is not None else True
    pool_a = np.flatnonzero(np.isin(labels, ga) & known)
    pool_b = np.flatnonzero(np.isin(labels, gb) & known)
    if sample_key is not None:  # a PIC starts from an A cell whose sample holds B cells
        pool_a = pool_a[np.isin(samples[pool_a], samples[pool_b])]
        if pool_a.size == 0:
            msg = (
                f"{step}: no sample of singlets.obs[{sample_key!r}] holds cells of "
                             "both a and b; PICs pair cells of one sample, so pass sample_key="
                             "None or groups that share a sample."
            )
            raise ValueError(msg)
    rng = np.random.default_rng(seed)
    roles = list(composition)
    # the members chosen first, their UMIs drawn at the end in one compiled pass (`_umi_draws`):
    # each member a part of its PIC's row
    part_cell, part_want, part_pic, meta = [], [], [], []
    limited = max_uses is not None
    left = np.full(singlets.n_obs, max_uses, dtype=np.int64) if limited else None  # uses left
    firsts = _Pool(pool_a, limited)
    # each sample's A and B cells, found once (the draws below are the same as filtering per PIC)
    by_sample = {s: {"A": _Pool(pool_a[samples[pool_a] == s], limited),
                     "B": _Pool(pool_b[samples[pool_b] == s], limited)}
                 for s in pd.unique(samples[pool_a])}  # fmt: skip
    for _ in range(n_pics):
        if firsts.size == 0:  # max_uses: population A used up
            break
        first = firsts.draw(rng)
        s = samples[first]
        members = [first]
        for role in roles[1:]:
            pool = by_sample[s][role]
            taken = [m for m, r in zip(members, roles, strict=False) if r == role]
            if pool.size <= len(taken):  # max_uses, or a sample with one such cell: no partner left
                break
            cell = pool.draw(rng)
            while cell in taken:  # a triplet's two A (or B) members are two cells
                cell = pool.draw(rng)
            members.append(cell)
        if len(members) < len(roles):
            continue
        if limited:  # (a PIC's members are distinct cells: A and B pools share none)
            used = np.asarray(members)
        c = totals[members]
        tot = c.sum()
        if tot < n_umis:  # too few UMIs (all-zero cells too): never exactly n_umis
            continue
        n_i = np.minimum(np.round(c * n_umis / tot), c).astype(np.int64)
        if n_i.sum() != n_umis:
            continue
        if limited:
            left[used] -= 1
            for cell in used[left[used] == 0]:
                firsts.remove(cell)
                for pool in by_sample[samples[cell]].values():
                    pool.remove(cell)
        part_cell += members
        part_want += n_i.tolist()
        part_pic += [len(meta)] * len(members)
        n_a = sum(n for role, n in zip(roles, n_i, strict=True) if role == "A")
        rec = {"true_alpha": n_a / n_i.sum()}
        ia = [m for role, m in zip(roles, members, strict=True) if role == "A"]
        ib = [m for role, m in zip(roles, members, strict=True) if role == "B"]
        rec["true_a"], rec["source_a"] = labels[ia[0]], singlets.obs_names[ia[0]]
        rec["true_b"], rec["source_b"] = labels[ib[0]], singlets.obs_names[ib[0]]
        if composition == "AAB":
            rec["true_a2"], rec["source_a2"] = labels[ia[1]], singlets.obs_names[ia[1]]
        if composition == "ABB":
            rec["true_b2"], rec["source_b2"] = labels[ib[1]], singlets.obs_names[ib[1]]
        meta.append(rec)
    # a PIC's row sums its members' UMIs
    mat = draw_rows(x, part_cell, part_want, part_pic, len(meta), seed=int(rng.integers(2**32)), dtype=np.float32)
    # the columns named, so that an empty result (n_pics=0, or no attempt reached n_umis)
    # still has them
    extra = {"AAB": ["true_a2", "source_a2"], "ABB": ["true_b2", "source_b2"]}.get(composition, [])
    obs = pd.DataFrame(meta, index=[f"pic{i}" for i in range(len(meta))],
                       columns=["true_alpha", "true_a", "source_a", "true_b", "source_b", *extra])
    obs["true_alpha"] = obs["true_alpha"].astype(np.float64)
    return AnnData(X=mat, obs=obs, var=pd.DataFrame(index=singlets.var_names.copy()))
