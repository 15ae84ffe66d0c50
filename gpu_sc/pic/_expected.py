"""Expected expression of every PIC from its assigned pair (PICSEQ.md §7), and the helpers the
downstream PIC steps share: reading the deconvolution's obs columns, mapping group labels to
reference groups, per-group sums over singlets (CPU or GPU, float64 accumulation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _ops
from .._ops._layout import in_layout, segment_ids
from .._backend import blocks_like, describe, is_dask, is_gpu, is_sparse, sparse_module, to_host, xp_of
from .._keys import OBS_PIC_STATUS, PIC_EXPECTED, PIC_STATUS_OK, UNS_PIC, UNS_PIC_STEPS
from .._validation import (
    canonical,
    check_anndata,
    check_flag,
    check_integer_counts,
    check_not_empty,
    get_matrix,
    make_actual,
)
from .._values import float_values
from ._args import PicColumns, column_name, pic_columns, text

_STEP = "expected_expression"
_CHUNK = 4096  # PICs per block of the dense expected matrix (bounds float64 temporaries)


# --------------------------------------------------------------------------- shared helpers
def obs_column(adata: AnnData, key: str, *, step: str, what: str, name: str = "pics") -> pd.Series:
    """`adata.obs[key]`, or a KeyError that says what the column should hold (`name`: the
    argument's name in the message)."""
    check_anndata(adata, step=step, name=name)
    column_name(key, step=step, name=name, what=f"the column of {what}")
    if key not in adata.obs:
        msg = (
            f"{step}: {name}.obs has no column {key!r} ({what}); "
            + ("run gpu_sc.pic.deconvolve first or pass the column's name" if str(key).startswith("pic_")
               else "pass the name of a column it has")
            + f". obs columns: {list(adata.obs.columns)}."
        )
        raise KeyError(msg)
    return adata.obs[key]


def ok_mask(pics: AnnData, *, status_key: str | None = OBS_PIC_STATUS, step: str = "") -> np.ndarray:
    """True for PICs whose status is 'ok'; every PIC when `status_key` is None or the default
    column is absent (PICs never deconvolved). Another column that is absent is a KeyError (a
    misspelt key once counted every PIC, dropped ones too)."""
    if status_key is not None and status_key != OBS_PIC_STATUS and status_key not in pics.obs:
        msg = (f"{step}: status_key {status_key!r} is not a column of pics.obs; name the column of "
               "'ok' / drop reasons, or pass status_key=None to use every PIC.")  # fmt: skip
        raise KeyError(msg)
    if status_key is None or status_key not in pics.obs:
        return np.ones(pics.n_obs, dtype=bool)
    return (pics.obs[status_key].astype(object) == PIC_STATUS_OK).to_numpy(dtype=bool)


def reference_groups(singlets: AnnData, groupby: str, *, step: str) -> tuple[list[str], np.ndarray]:
    """(group names, int64 code per singlet with -1 for a missing label). A category without a
    labelled cell is no group: a PIC assigned to it is refused (`label_codes`), rather than given
    a profile or doublets from cells of no such group."""
    labels = obs_column(singlets, groupby, step=step, what="the reference group of each singlet", name="singlets")
    cat = labels.astype("category") if not isinstance(labels.dtype, pd.CategoricalDtype) else labels
    cat = cat.cat.remove_unused_categories()
    names = [str(c) for c in cat.cat.categories]
    if len(set(names)) != len(names):
        msg = f"{step}: group names of singlets.obs[{groupby!r}] collide once turned into strings."
        raise ValueError(msg)
    codes = cat.cat.codes.to_numpy().astype(np.int64)
    if not (codes >= 0).any():
        msg = f"{step}: singlets.obs[{groupby!r}] has no labelled cell."
        raise ValueError(msg)
    return names, codes


def label_codes(pics: AnnData, key: str, names: Sequence[str], use: np.ndarray, *, step: str,
                what: str) -> np.ndarray:  # fmt: skip
    """Index into `names` of pics.obs[key] for the PICs in `use` (-1 elsewhere). A used PIC
    with a missing label or one that is not a reference group is an error."""
    col = obs_column(pics, key, step=step, what=what).astype(object)
    codes = pd.Index(list(names)).get_indexer(col.astype(str).to_numpy()).astype(np.int64)
    codes[col.isna().to_numpy()] = -1
    bad = use & (codes < 0)
    codes[~use] = -1
    if bad.any():
        examples = sorted({str(v) for v in col.to_numpy()[bad]})[:5]
        msg = (
            f"{step}: {int(bad.sum())} of the PICs used (status 'ok', or all without a status column) have "
            f"pics.obs[{key!r}] values that are "
            f"not reference groups (e.g. {examples}); reference groups: {list(names)[:20]}."
        )
        raise ValueError(msg)
    return codes


def alpha_values(pics: AnnData, key: str, use: np.ndarray, *, step: str) -> np.ndarray:
    """pics.obs[key] as float64; values of used PICs must lie in [0, 1]."""
    col = obs_column(pics, key, step=step, what="the share of each PIC's UMIs from its A cell")
    try:
        alpha = col.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        msg = f"{step}: pics.obs[{key!r}] must be numeric, got dtype {col.dtype}."
        raise TypeError(msg) from e
    a = alpha[use]
    bad = ~(np.isfinite(a) & (a >= 0) & (a <= 1))
    if bad.any():
        msg = (f"{step}: pics.obs[{key!r}] must lie in [0, 1] for every PIC used (status 'ok', or all without a "
               f"status column); {int(bad.sum())} do not, e.g. {float(a[bad][0])} at PIC "
               f"{pics.obs_names[np.flatnonzero(use)[np.argmax(bad)]]!r}.")  # fmt: skip
        raise ValueError(msg)
    return alpha


def check_groups_counted(totals, names, ia, ib, *, step: str, over: str = "") -> None:
    """Refuse assigned groups (`ia`, `ib`: the used PICs' codes) whose reference `totals` (host,
    one per group) are 0: their profile is all zeros, so their PICs' likelihoods would be eps's
    alone. `over`: what the totals run over, for the message."""
    empty = [names[j] for j in np.unique(np.concatenate([ia, ib])) if float(totals[j]) == 0]
    if empty:
        msg = (f"{step}: reference groups without any counts{over}: {empty[:10]}; their profiles would be all "
               "zeros: give their cells' raw counts, or leave those groups out.")
        raise ValueError(msg)


def check_reference_counted(s, labels: np.ndarray, groups: Sequence[str], *, step: str) -> None:
    """`check_groups_counted` for `groups` of the reference `s` (host counts, a label per row)."""
    totals = np.array([float(s[labels == g].sum()) for g in groups])
    check_groups_counted(totals, list(groups), np.arange(len(groups)), np.arange(0), step=step)


def read_assignment(pics: AnnData, singlets: AnnData, groupby: str, cols: PicColumns, *, step: str,
                    with_alpha: bool = True):
    """The deconvolution's calls in pics.obs (columns `cols`): (PICs used, reference group names,
    group code per singlet, A and B group index per PIC (-1 where unused), alpha or None)."""
    use = ok_mask(pics, status_key=cols["status_key"], step=step)
    names, s_codes = reference_groups(singlets, groupby, step=step)
    ia = label_codes(pics, cols["a_key"], names, use, step=step, what="the assigned A group")
    ib = label_codes(pics, cols["b_key"], names, use, step=step, what="the assigned B group")
    alpha = alpha_values(pics, cols["alpha_key"], use, step=step) if with_alpha else None
    return use, names, s_codes, ia, ib, alpha


def pic_and_singlet_counts(pics: AnnData, singlets: AnnData, *, layer: str | None,
                           singlets_layer: str | None, step: str):
    """Raw counts of the PICs and the singlets (see `counts_matrix`), on one device."""
    u = counts_matrix(pics, layer=layer, step=step, what="PIC counts")
    s = counts_matrix(singlets, layer=singlets_layer, step=step, what="singlet counts")
    if is_gpu(blocks_like(u)) != is_gpu(blocks_like(s)):  # Dask: where its blocks are
        msg = (f"{step}: PICs and singlets must live on the same device; the PICs are {describe(u)}, the "
               f"singlets {describe(s)}: move one with gpu_sc.get.to_gpu or to_cpu.")  # fmt: skip
        raise ValueError(msg)
    return u, s


def check_same_genes(pics: AnnData, singlets: AnnData, *, step: str) -> None:
    check_anndata(pics, step=step, name="pics")
    check_anndata(singlets, step=step, name="singlets")
    if not pics.var_names.equals(singlets.var_names):
        same_set = pics.var_names.sort_values().equals(singlets.var_names.sort_values())  # (repeats counted)
        what = "the same genes in another order" if same_set else _first_difference(pics.var_names,
                                                                                    singlets.var_names)
        msg = (f"{step}: PICs and singlets must have the same var_names in the same order ({what}); "
               "subset both to the shared genes, e.g. pics[:, genes] and singlets[:, genes].")  # fmt: skip
        raise ValueError(msg)


def _first_difference(p: pd.Index, s: pd.Index) -> str:
    """What tells two gene lists apart, for the message: a gene only one side has, else a repeat."""
    # in each side's own order (Index.difference sorts), so the gene named is the first one a user
    # would find going down that file's var_names
    only_p, only_s = p[~p.isin(s)].unique(), s[~s.isin(p)].unique()
    if only_p.size or only_s.size:
        side, gene = ("PICs", only_p[0]) if only_p.size else ("singlets", only_s[0])
        return f"{p.size} vs {s.size} genes; {only_p.size + only_s.size} not in both, e.g. {gene!r} in the {side} only"
    side, repeated = ("PICs", p[p.duplicated()]) if p.has_duplicates else ("singlets", s[s.duplicated()])
    return (f"{p.size} vs {s.size} genes, {repeated[0]!r} repeated in the {side}: make the names unique "
            "(var_names_make_unique) in both alike")


def counts_matrix(adata: AnnData, *, layer: str | None, step: str, what: str):
    """Raw counts of `adata` as CSR or C-contiguous dense (checked whole, non-negative and finite:
    profiles, expected UMIs and the tests on them are of UMIs, as deconvolve's). Duplicate CSR
    entries are summed: the geometric-mean profiles take log1p of each gene's count."""
    x = canonical(get_matrix(adata, layer=layer, step=f"{step} ({what})"), step=step, sum_duplicates=True)
    check_not_empty(x, step=f"{step} ({what})")
    check_integer_counts(x, step=f"{step} ({what})")
    return float_values(x)  # integer counts -> float64 (the kernels take float32/float64)


def nonzeros(x):
    """(rows int64, cols int64, values) of the nonzeros of CSR or dense `x`, on its device."""
    xp = xp_of(x)
    if is_sparse(x):
        return segment_ids(x.indptr), x.indices.astype(xp.int64), x.data
    rows, cols = xp.nonzero(x)
    return rows.astype(xp.int64), cols.astype(xp.int64), x[rows, cols]


def group_sums(x, codes, n_groups: int, *, transform=None):
    """(n_groups x n_genes) float64 sums of `x` (or of transform(xp, values in float64) for a
    zero-preserving elementwise transform) over the rows of each group (codes -1 are left out),
    on x's device (a Dask array block by block), and the group sizes."""
    codes = np.asarray(codes)
    sizes = np.bincount(codes[codes >= 0], minlength=n_groups)
    if transform is not None:
        x = x.map_blocks(_transformed, transform, dtype=np.float64) if is_dask(x) else _transformed(x, transform)
    return _ops.group_sums(_ops.parts(x), codes, n_groups)[0], sizes


def _transformed(x, transform):
    """transform(xp, values in float64) of CSR, CSC or dense `x`, in a new CSR or dense matrix."""
    x = in_layout(x)  # a Dask block may be CSC: its index arrays are not a CSR's
    xp = xp_of(x)
    if is_sparse(x):
        return sparse_module(x).csr_matrix((transform(xp, x.data.astype(xp.float64)), x.indices, x.indptr),
                                           shape=x.shape)  # fmt: skip
    return transform(xp, x.astype(xp.float64))


def genes_mask(adata: AnnData, genes, *, step: str) -> np.ndarray:
    """A boolean mask over adata.var_names from gene names or a boolean mask."""
    g = np.asarray(to_host(genes) if is_gpu(genes) else genes)
    if g.dtype == bool:
        if g.shape != (adata.n_vars,):
            msg = f"{step}: a boolean `genes` mask must have length {adata.n_vars}, got {g.shape}."
            raise ValueError(msg)
        return g
    names = pd.Index(text(np.atleast_1d(g)))
    missing = names.difference(adata.var_names)
    if len(missing):
        msg = f"{step}: {len(missing)} genes not in var_names, e.g. {list(missing[:5])}."
        raise KeyError(msg)
    return adata.var_names.isin(names)


def _check_layer_prefix(prefix, layer) -> None:
    """The names expected_expression writes must neither be another PIC step's uns key (deconvolve's
    'pic' read by every later step, the tests' tables) nor the counts layer it reads."""
    reserved = (UNS_PIC, *(k for k in UNS_PIC_STEPS if k != PIC_EXPECTED))
    if not isinstance(prefix, str) or not prefix or prefix in reserved:
        msg = (f"{_STEP}: layer_prefix must be a non-empty string other than {', '.join(map(repr, reserved))} "
               f"(keys of deconvolve and the later steps), got {prefix!r}.")
        raise ValueError(msg)
    if layer is not None and layer in (prefix, f"{prefix}_a", f"{prefix}_b"):
        msg = (f"{_STEP}: layer_prefix {prefix!r} would overwrite the counts layer {layer!r} that it reads; "
               "pass another layer_prefix.")
        raise ValueError(msg)


# --------------------------------------------------------------------------- the public step
def expected_expression(
    pics: AnnData,
    singlets: AnnData,
    *,
    groupby: str,
    layer_prefix: str = PIC_EXPECTED,
    genes=None,
    layer: str | None = None,
    singlets_layer: str | None = None,
    inplace: bool = True,
    **columns: Unpack[PicColumns],
):
    """Expected UMIs of every PIC if it were exactly its two assigned partners (as the published
    PIC-seq analysis computes them).

    For PIC n with assigned groups a_n (population A) and b_n (population B), A share
    alpha_n and total UMIs N_n (over all genes of ``pics``)::

        E[n, g] = N_n * (alpha_n * Q[a_n, g] + (1 - alpha_n) * Q[b_n, g])

    where Q[m, g] = (counts of gene g summed over the singlets of group m) / (all counts of
    group m), over all genes. The A part (first term) and B part (second) are kept too.

    Parameters
    ----------
    pics
        PICs (raw counts in X or `layer`) with the deconvolution's obs columns.
    singlets
        Reference singlets over the same genes (raw counts), grouped by `groupby`.
    groupby
        singlets.obs column with the reference groups that pics.obs[a_key] / [b_key] name.
    a_key, b_key, alpha_key
        pics.obs columns with the assigned A group, B group and A share in [0, 1].
    status_key
        pics.obs column with 'ok' or a drop reason; PICs that are not 'ok' get NaN rows (their
        labels and alpha are not read). ``None``, or the default column absent: every PIC is used;
        another name that is not a column is a KeyError.
    layer_prefix
        Names of the layers written: ``layer_prefix``, ``layer_prefix + '_a'``, ``+ '_b'``, and of
        the uns entry; neither another PIC step's uns key ('pic', 'pic_interaction', ...) nor
        the counts `layer` read.
    genes
        Gene names or a boolean mask: compute only these genes. The layers then are CSR
        matrices whose stored columns are exactly these genes (all others read as 0 but are
        *not computed*); ``pics.uns[layer_prefix]['genes']`` lists them and
        :func:`interaction_genes` tests only them. ``None``: all genes, dense layers.
    layer, singlets_layer
        Count layers of ``pics`` and ``singlets`` instead of X.
    inplace
        Write layers and uns; otherwise return ``(total, a_part, b_part)``.

    Memory
    ------
    The result is dense per PIC: three float32 matrices of n_pics x n_genes (x 4 bytes each,
    e.g. 16k PICs x 20k genes = 1.3 GB per layer), computed in blocks of 4096 PICs (the float64
    temporaries stay below 4096 x n_genes x 8 bytes x 3). Pass `genes` to bound it. PIC
    counts held as a Dask array (row blocks) give lazy Dask layers with the same row blocks,
    each block's rows made when it is computed (the same values), so nothing dense is held.

    Returns
    -------
    With ``inplace`` (default) ``None`` and writes
    ``pics.layers[layer_prefix]`` (total expected UMIs, float32),
    ``pics.layers[layer_prefix + '_a']`` (A part), ``pics.layers[layer_prefix + '_b']`` (B part)
    — on the device of the PIC counts, NaN rows for PICs that are not 'ok' — and
    ``pics.uns[layer_prefix]`` (dict: groupby, keys used, 'genes' or None, 'groups').
    Otherwise the three matrices. Nothing changes when an error is raised.
    """
    step = _STEP
    inplace = check_flag(inplace, "inplace", step=step)
    if inplace:
        _check_layer_prefix(layer_prefix, layer)
    cols = pic_columns(columns, step=step)
    check_same_genes(pics, singlets, step=step)
    use, names, s_codes, ia, ib, alpha = read_assignment(pics, singlets, groupby, cols, step=step)
    sel = None if genes is None else genes_mask(pics, genes, step=step)
    if sel is not None and not sel.any():
        msg = f"{step}: `genes` selects no gene."
        raise ValueError(msg)

    u, s = pic_and_singlet_counts(pics, singlets, layer=layer, singlets_layer=singlets_layer, step=step)
    sums, _ = group_sums(s, s_codes, len(names))
    xp = xp_of(sums)  # the device of the singlets, and of the PICs (or their blocks)
    totals = sums.sum(axis=1)
    check_groups_counted(to_host(totals), names, ia[use], ib[use], step=step)
    q = sums / xp.where(totals > 0, totals, 1)[:, None]  # K x G float64
    if sel is not None:
        q = q[:, xp.asarray(np.flatnonzero(sel))]
    if is_dask(u):  # lazy layers with u's row blocks: a block's rows are made when computed
        e, e_a, e_b = _lazy_parts(u, q, alpha, ia, ib, use, sel)
    else:
        e_a, e_b = _parts(u, q, alpha, ia, ib, use)
        e = e_a + e_b  # float32 sum of the float32 parts: exactly the parts' sum as stored
        if sel is not None:
            e, e_a, e_b = (_as_column_csr(v, sel, pics.n_vars) for v in (e, e_a, e_b))
    if not inplace:
        return e, e_a, e_b
    make_actual(pics)  # a view becomes an actual AnnData; its parent is never touched
    pics.layers[layer_prefix] = e
    pics.layers[f"{layer_prefix}_a"] = e_a
    pics.layers[f"{layer_prefix}_b"] = e_b
    pics.uns[layer_prefix] = {
        "groupby": groupby,
        "a_key": cols["a_key"],
        "b_key": cols["b_key"],
        "alpha_key": cols["alpha_key"],
        "genes": None if sel is None else pics.var_names[sel].to_numpy(dtype=str),
        "groups": np.asarray(names, dtype=str),
    }
    return None


def _parts(u, q, alpha, ia, ib, use):
    """The A and B parts (float32, PICs x q's genes, NaN rows where not `use`) of the PICs `u`
    (CSR or dense) with A share `alpha`, groups `ia` / `ib` and profiles q (groups x genes),
    _CHUNK PICs at a time."""
    xp = xp_of(u)
    n_total = _ops.row_sums(_ops.parts(u))[0]  # float64 per PIC, on the device
    n, m = u.shape[0], q.shape[1]
    e_a = xp.full((n, m), xp.nan, dtype=xp.float32)
    e_b = xp.full((n, m), xp.nan, dtype=xp.float32)
    rows = np.flatnonzero(use)
    for start in range(0, rows.size, _CHUNK):
        r = rows[start : start + _CHUNK]
        r_x = xp.asarray(r)
        share = xp.asarray(alpha[r])[:, None] * n_total[r_x][:, None]
        rest = xp.asarray(1.0 - alpha[r])[:, None] * n_total[r_x][:, None]
        e_a[r_x] = (share * q[xp.asarray(ia[r])]).astype(xp.float32)
        e_b[r_x] = (rest * q[xp.asarray(ib[r])]).astype(xp.float32)
    return e_a, e_b


def _lazy_parts(u, q, alpha, ia, ib, use, sel):
    """(total, A part, B part) of a Dask `u` as lazy Dask arrays with its row blocks, each
    block's parts made from its own rows (`_parts`); CSR blocks over all genes with `sel`."""
    import dask.array as da

    from .._ops._chunked import row_columns

    alpha = np.where(use, alpha, 0.0)  # unused rows' NaN stays out of the graph's columns
    columns = row_columns(u, (alpha, ia, ib, use))
    width = q.shape[1] if sel is None else sel.size
    meta = xp_of(q).empty((0, 0), dtype=np.float32) if sel is None else \
        sparse_module(q).csr_matrix((0, 0), dtype=np.float32)  # fmt: skip

    def part(which):
        return da.map_blocks(_block_part, u, *columns, q=q, which=which, sel=sel, dtype=np.float32, meta=meta,
                             chunks=(u.chunks[0], (width,)))  # fmt: skip

    return part(2), part(0), part(1)


def _block_part(block, alpha, ia, ib, use, *, q, which: int, sel):
    """One row block's A part (which 0), B part (1) or total (2)."""
    parts = _parts(in_layout(block), q, alpha[:, 0], ia[:, 0], ib[:, 0], use[:, 0].astype(bool))
    out = parts[which] if which < 2 else parts[0] + parts[1]
    return out if sel is None else _as_column_csr(out, sel, sel.size)


def _as_column_csr(dense, sel: np.ndarray, n_cols: int):
    """CSR (n_rows x n_cols) storing every value of `dense` (n_rows x sel.sum()) in the columns
    of `sel`, NaN and zero included, so the selected columns stay recognisable."""
    xp = xp_of(dense)
    n_rows, m = dense.shape
    index = np.int32 if n_rows * m < 2**31 else np.int64  # int32 where it fits, as scipy / cupyx
    cols = xp.asarray(np.flatnonzero(sel).astype(index))
    indices = xp.tile(cols, n_rows)
    indptr = xp.arange(n_rows + 1, dtype=index) * index(m)
    return sparse_module(dense).csr_matrix((dense.reshape(-1), indices, indptr), shape=(n_rows, n_cols))
