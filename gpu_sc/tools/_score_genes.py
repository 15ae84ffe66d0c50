"""`gsc.tl.score_genes` and `score_genes_cell_cycle`: scanpy's gene-signature scores (Seurat's
method), with scanpy's control-gene sampling so that the same `random_state` picks the same
control genes and gives the same scores.

A gene set's score per cell is its mean expression minus the mean of control genes drawn, per
expression bin of the set's genes, from the pool. The control draw seeds numpy's global
generator with `random_state` and draws from it, as scanpy does, so that the draws, and any
unseeded draw after them (`random_state=None` in a later call), are scanpy's. Means are
NaN-aware and run where the data live (numpy / scipy or cupy / cupyx, or a Dask array of row
blocks of those).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._backend import is_dask, is_gpu, is_sparse, to_host, xp_of
from .._ops._chunked import check_block_device
from .._settings import HINT, settings
from .._validation import check_anndata, check_in_memory, check_int, check_not_empty, get_matrix, old_positionals

STEP = "score_genes"


def _nan_sums(x, axis: int):
    """Sums over `axis` with NaN as 0 (float64, as scanpy's sparse means) and the non-NaN counts."""
    xp = xp_of(x.data if is_sparse(x) else x)
    if is_sparse(x):
        nan = x.copy()
        nan.data = xp.isnan(nan.data).astype(np.float64)  # cupyx eliminate_zeros takes float data only
        nan.eliminate_zeros()
        y = x.copy()
        y.data[xp.isnan(y.data)] = 0
        y.eliminate_zeros()
        return y.sum(axis, dtype=np.float64), x.shape[axis] - nan.sum(axis)
    return xp.nansum(x, axis=axis, dtype=np.float64), (~xp.isnan(x)).sum(axis)


def _nan_means(x, axis: int, dtype=None) -> np.ndarray:
    """Means over `axis` ignoring NaN, on the host: the sums of sparse matrices in float64 as
    scanpy's; dense through (cu)numpy's nanmean with `dtype`. Column means of a Dask array of row
    blocks, one pass: host dense blocks as NumPy's nanmean of the whole matrix makes them (`_fold`);
    others from the blocks' float64 sums and non-NaN counts."""
    if is_dask(x) and axis == 0:
        import dask

        blocks = _whole_rows(x).to_delayed().ravel()
        if not (is_sparse(x._meta) or is_gpu(x._meta)):
            acc = None
            for b in blocks:  # a chain: each block's rows added after the rows before, in order
                acc = dask.delayed(_fold)(acc, b)
            tot, n = dask.compute(acc)[0]
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.divide(tot, n, out=tot, casting="unsafe") if tot.dtype.kind == "f" else tot / n
        sums, n = np.sum(dask.compute(*(dask.delayed(_host_nan_sums)(b) for b in blocks)), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / n
    if is_sparse(x):
        sums, n = _nan_sums(x, axis)
        out = sums / n
    else:
        out = xp_of(x).nanmean(x, axis=axis, dtype=dtype)
    return np.asarray(to_host(out)).ravel()


def _fold(acc, block) -> tuple[np.ndarray, np.ndarray]:
    """(column sums in the block's dtype, float64 once a sparse block came, non-NaN counts) of the
    rows so far (`acc`, None at the first block) and `block`'s, summed as NumPy's nanmean sums a
    C-ordered matrix: the running sum plus each row in turn (float64 for integers, as np.mean).
    So the means, and the ranks that bin the genes, are the in-memory ones: float16 sums of
    float64 ones differed (32 of 401 control genes on pbmc68k), and a float32 tie could fall
    either way."""
    check_block_device(block, on_gpu=False)  # this path is the host's (a dense NumPy meta)
    if is_sparse(block):  # under a dense meta (map_blocks that could not infer the kind): its float64 sums
        sums, count = (np.asarray(v).ravel() for v in _nan_sums(block, 0))  # as one row, as in-memory CSR's
        rows, count = sums[None, :], count.astype(np.intp)
    else:
        rows, count = _dense_rows(np.asarray(block))
    if acc is not None:
        rows = np.vstack([acc[0][None, :], rows])
        count = count + acc[1]
    return rows.sum(axis=0), count


def _dense_rows(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dense block's rows with NaN as 0 (float64 for integers) and its non-NaN counts per column."""
    if b.dtype.kind == "f":
        nan = np.isnan(b)
        rows = np.where(nan, b.dtype.type(0), b)
        count = (~nan).sum(axis=0)
    else:
        rows = b.astype(np.float64)
        count = np.full(b.shape[1], b.shape[0], dtype=np.intp)
    return rows, count


def _host_nan_sums(block) -> np.ndarray:
    """(2, genes) on the host: a block's column sums and non-NaN counts."""
    return np.stack([np.asarray(to_host(v), dtype=np.float64).ravel() for v in _nan_sums(block, 0)])


def _whole_rows(x):
    """A Dask array with one block per row range (a row's mean needs all its genes)."""
    return x.rechunk({1: -1}) if x.numblocks[1] > 1 else x


def _row_means(x, names: pd.Index, gene_sets) -> list[np.ndarray]:
    """Per gene set, each cell's NaN-aware mean over the set's genes; a Dask array is read once
    for all the sets."""
    cols = [None if len(g) == len(names) else names.get_indexer(g) for g in gene_sets]
    if not is_dask(x):
        return _block_row_means(x, cols)
    import dask

    blocks = _whole_rows(x).to_delayed().ravel()
    parts = dask.compute(*(dask.delayed(_block_row_means)(b, cols) for b in blocks))
    return [np.concatenate([part[i] for part in parts]) for i in range(len(cols))]


def _block_row_means(x, cols) -> list[np.ndarray]:
    return [_nan_means(x if c is None else x[:, c], axis=1, dtype=np.float64) for c in cols]


def _matrix(adata: AnnData, use_raw, layer):
    if use_raw is None:  # scanpy's default: raw where there is one, unless a layer is named
        use_raw = layer is None and adata.raw is not None
    x = get_matrix(adata, layer=layer, use_raw=bool(use_raw), step=STEP)
    names = adata.raw.var_names if use_raw else adata.var_names
    check_in_memory(x, step=STEP)
    if is_sparse(x) and not is_gpu(x) and x.format not in ("csr", "csc"):  # CSC stays: scanpy sums it
        x = x.tocsr()  # as CSC, and float32 CSC and CSR sums round differently
    return x, names


def _rng(random_state):
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if random_state is not None:
        np.random.seed(random_state)  # scanpy's side effect, which its later unseeded draws follow
    return np.random.mtrand._rand  # numpy's global generator, which scanpy draws from


def _pool_means(x, names, gene_pool) -> pd.Series:
    """The pool's genes' NaN-aware mean expression (a pass over a Dask X), which bins them."""
    cols = names.get_indexer(gene_pool)
    return pd.Series(_nan_means(x if len(gene_pool) == len(names) else x[:, cols], axis=0), index=gene_pool)


def _control_genes(avg: pd.Series, gene_list, gene_pool, *, ctrl_as_ref, ctrl_size, n_bins, rng, notes: list):
    """Per expression bin of the gene list, `ctrl_size` genes drawn from the pool's same bin
    (`avg`: `_pool_means`); scanpy's warnings are added to `notes`, for the caller to write."""
    avg = avg[np.isfinite(avg)]
    per_bin = int(np.round(len(avg) / (n_bins - 1)))
    cut = avg.rank(method="min") // per_bin
    outside = gene_list.difference(cut.index)
    if len(outside):
        unbinned = gene_list.difference(avg.index).intersection(gene_pool)  # in the pool, mean not finite
        if len(unbinned):
            msg = (f"{STEP}: genes {list(unbinned[:5])} of gene_list have no finite mean expression (NaN or "
                   "inf values in the matrix), so they have no expression bin; fix or drop those values first.")
            raise ValueError(msg)
        msg = (f"{STEP}: genes {list(outside[:5])} of gene_list are not in gene_pool; every scored gene "
               "needs its expression bin in the pool: add them to gene_pool.")  # fmt: skip
        raise KeyError(msg)
    in_list = cut.index.isin(gene_list) if not ctrl_as_ref else np.zeros(len(cut), bool)
    control = pd.Index([], dtype="string")
    for c in np.unique(cut.loc[gene_list]):
        genes = cut[(cut == c) & ~in_list].index
        if len(genes) == 0:  # scanpy's warning
            notes.append(f"No control genes for cut={c!r}. You might want to increase gene_pool size "
                         f"(current size: {len(gene_pool)})")  # fmt: skip
        if ctrl_size < len(genes):
            genes = genes.to_series().sample(ctrl_size, random_state=rng).index
        if ctrl_as_ref:
            genes = genes.difference(gene_list)
        control = control.union(genes)
    return control


@old_positionals("ctrl_size", "gene_pool", "n_bins", "score_name", "random_state", "copy", "use_raw")
def score_genes(adata: AnnData, gene_list: Sequence[str], *, ctrl_as_ref: bool = True, ctrl_size: int = 50,
                gene_pool: Sequence[str] | None = None, n_bins: int = 25, score_name: str = "score",
                random_state=0, copy: bool = False, use_raw: bool | None = None,
                layer: str | None = None) -> AnnData | None:  # fmt: skip
    """Score a gene set per cell: scanpy's ``sc.tl.score_genes`` (the same arguments; the same
    control genes and scores for the same `random_state`). Writes ``obs[score_name]``
    (float64). X (or the layer / raw) may be numpy, scipy sparse, cupy or cupyx."""
    check_anndata(adata, step=STEP)
    start = settings.log(f"computing score {score_name!r}")
    ctrl_size = check_int(ctrl_size, step=STEP, name="ctrl_size")
    n_bins = check_int(n_bins, step=STEP, name="n_bins", minimum=2)
    adata = adata.copy() if copy else adata
    x, names = _matrix(adata, use_raw, layer)
    sig = _signature(x, names, gene_list, ctrl_as_ref=ctrl_as_ref, ctrl_size=ctrl_size, gene_pool=gene_pool,
                     n_bins=n_bins, random_state=random_state)  # fmt: skip
    sig.write_notes()
    _write_score(adata, score_name, sig, *_row_means(x, names, (sig.genes, sig.control)), start=start)
    return adata if copy else None


@dataclass
class _Signature:
    """A gene set's genes found in the data, its control genes, and scanpy's warnings met on the
    way (written by `write_notes`, where scanpy writes them)."""

    genes: pd.Index
    control: pd.Index
    notes: list[str]
    pool_means: pd.Series

    def write_notes(self) -> None:
        _warn(self.notes)


def _warn(notes: list[str]) -> None:
    for note in notes:
        settings.warning(note)


def _signature(x, names, gene_list, *, ctrl_as_ref, ctrl_size, gene_pool, n_bins, random_state,
               pool_means: pd.Series | None = None) -> _Signature:  # fmt: skip
    """The genes of `gene_list` in `names` and their control genes, drawn as scanpy draws them
    (`pool_means`: the pool's means where an earlier set of the same pool read them, which
    spares a Dask X a pass)."""
    check_not_empty(x, step=STEP)
    names = pd.Index(names)
    if not names.is_unique:  # pandas' 'Reindexing only valid with uniquely valued Index objects' otherwise
        msg = (f"{STEP}: the gene names read (var_names, or raw.var_names where raw is read) repeat "
               f"(e.g. {list(names[names.duplicated()][:3])}), so a gene cannot be found by its name; call "
               "var_names_make_unique() first.")
        raise ValueError(msg)
    wanted = pd.Index([gene_list] if isinstance(gene_list, str) else list(gene_list))
    genes = wanted.intersection(names)
    ignored = wanted.difference(names, sort=False)
    notes = [f"genes are not in var_names and ignored: {ignored}"] if len(ignored) else []  # scanpy's warning
    try:
        if len(genes) == 0:
            msg = (f"{STEP}: No valid genes were passed for scoring: none of the {len(wanted)} genes of "
                   f"gene_list is in var_names (e.g. {list(wanted[:3])}); check the gene names (symbols vs ids) "
                   "or use_raw.")  # fmt: skip
            raise ValueError(msg)
        pool = names.astype("string") if gene_pool is None else pd.Index(gene_pool, dtype="string").intersection(names)
        if len(pool) == 0:
            msg = (f"{STEP}: No valid genes were passed for reference set: no gene of gene_pool is in var_names; "
                   "pass genes of the data (or None for all).")  # fmt: skip
            raise ValueError(msg)
        if pool_means is None or not pool_means.index.equals(pool):
            pool_means = _pool_means(x, names, pool)
        control = _control_genes(pool_means, genes, pool, ctrl_as_ref=ctrl_as_ref, ctrl_size=ctrl_size,
                                 n_bins=n_bins, rng=_rng(random_state), notes=notes)  # fmt: skip
        if len(control) == 0:
            msg = f"{STEP}: No control genes found in any cut (expression bin)" + (
                "; try ctrl_as_ref=False." if ctrl_as_ref else "; pass a larger gene_pool.")
            raise RuntimeError(msg)
    except Exception:  # scanpy has written its warnings by the time it raises
        _warn(notes)
        raise
    return _Signature(genes, control, notes, pool_means)


def _write_score(adata: AnnData, score_name: str, sig: _Signature, mean_list, mean_ctrl, *, start: float) -> None:
    adata.obs[score_name] = pd.Series(mean_list - mean_ctrl, index=adata.obs_names, dtype="float64")
    settings.log("    finished", start=start, deep=f"added\n    {score_name!r}, score of gene set (adata.obs).\n"
                 f"    {len(sig.control)} total control genes are used.")  # fmt: skip


@old_positionals("s_genes", "g2m_genes", "copy")
def score_genes_cell_cycle(adata: AnnData, *, s_genes: Sequence[str], g2m_genes: Sequence[str],
                           copy: bool = False, **kwargs) -> AnnData | None:  # fmt: skip
    """S and G2M scores and the phase per cell: scanpy's ``sc.tl.score_genes_cell_cycle``
    (``obs['S_score']``, ``obs['G2M_score']``, ``obs['phase']``: S, G2M, or G1 where both
    scores are negative). `kwargs` are :func:`score_genes`'s (not `ctrl_size`, which is the
    shorter list's length, nor `score_name`)."""
    if "ctrl_size" in kwargs:
        msg = "score_genes_cell_cycle: ctrl_size is set to the shorter gene list's length; leave it out."
        raise TypeError(msg)
    for genes, name in ((s_genes, "s_genes"), (g2m_genes, "g2m_genes")):
        if len(genes) == 0:  # else the shorter list's length, 0, is refused as ctrl_size
            msg = f"score_genes_cell_cycle: {name} is empty; pass the genes of that phase."
            raise ValueError(msg)
    settings.log("calculating cell cycle phase")
    # what the call of score_genes with kwargs beside its own would refuse, in Python's words
    if "score_name" in kwargs:
        msg = "score_genes() got multiple values for keyword argument 'score_name'"
        raise TypeError(msg)
    if "gene_list" in kwargs:
        msg = "score_genes() got multiple values for argument 'gene_list'"
        raise TypeError(msg)
    # score_genes's own keywords with its defaults, read from its signature (the cell cycle sets
    # ctrl_size and the score names; copy is its own)
    params = inspect.signature(score_genes).parameters
    defaults = {k: p.default for k, p in params.items()
                if p.kind is p.KEYWORD_ONLY and k not in ("ctrl_size", "score_name", "copy")}  # fmt: skip
    unknown = set(kwargs) - defaults.keys()
    if unknown:
        msg = f"score_genes() got an unexpected keyword argument {sorted(unknown)[0]!r}"
        raise TypeError(msg)
    options = defaults | kwargs
    check_anndata(adata, step=STEP)
    start = settings.log("computing score 'S_score'")
    size = check_int(min(len(s_genes), len(g2m_genes)), step=STEP, name="ctrl_size")
    n_bins = check_int(options["n_bins"], step=STEP, name="n_bins", minimum=2)
    adata = adata.copy() if copy else adata
    x, names = _matrix(adata, options.pop("use_raw"), options.pop("layer"))
    options.update(ctrl_size=size, n_bins=n_bins)
    # both sets drawn (S first, as scanpy scores it first) before one pass reads the cells' means
    # of both and their controls; the pool's means, read once, bin both (scanpy: four passes)
    s_sig = _signature(x, names, s_genes, **options)
    s_sig.write_notes()
    g2m_sig = _signature(x, names, g2m_genes, pool_means=s_sig.pool_means, **options)
    means = _row_means(x, names, (s_sig.genes, s_sig.control, g2m_sig.genes, g2m_sig.control))
    _write_score(adata, "S_score", s_sig, *means[:2], start=start)
    start = settings.log("computing score 'G2M_score'")
    g2m_sig.write_notes()
    _write_score(adata, "G2M_score", g2m_sig, *means[2:], start=start)
    s, g2m = adata.obs["S_score"], adata.obs["G2M_score"]
    phase = pd.Series("S", index=adata.obs_names)
    phase[g2m > s] = "G2M"
    phase[(s < 0) & (g2m < 0)] = "G1"
    adata.obs["phase"] = phase
    settings.log("    'phase', cell cycle phase (adata.obs)", level=HINT)
    return adata if copy else None
