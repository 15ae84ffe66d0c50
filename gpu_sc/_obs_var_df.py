"""`gsc.get.obs_df` / `gsc.get.var_df`: scanpy's DataFrames of chosen genes (cells) beside obs
(var) columns and obsm (varm) columns, for an X (or layer, raw) on the host, the GPU or in a
Dask array (scanpy's own take host matrices only). Only the chosen columns (rows) of the matrix
are read, made dense and brought to the host."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np
import pandas as pd
from anndata import AnnData

from ._backend import is_dask, is_gpu, is_sparse, xp_of
from ._ops._chunked import Chunked
from ._validation import check_anndata, get_matrix, whole_rows


def _dense_host(x) -> np.ndarray:
    x = x.get() if is_gpu(x) else x
    return np.asarray(x.toarray() if is_sparse(x) else x)


def _taken(x, idx: np.ndarray, axis: int) -> np.ndarray:
    """``x[:, idx]`` (axis 1) or ``x[idx, :]`` (axis 0) as a dense host array, in `idx`'s order.
    Taken in increasing order (which a backed AnnData's h5py datasets require), then reordered."""
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    if is_dask(x):  # each block's own columns or rows, on the block's device; whole rows per block
        chunked = Chunked(whole_rows(x))
        taken = chunked.take_columns(ordered) if axis == 1 else chunked.take_rows(ordered)
        taken = taken.map_blocks(_dense_host, dtype=x.dtype, meta=np.empty((0, 0), x.dtype)).compute()
    else:
        at = xp_of(x).asarray(ordered)  # a device index for device data
        taken = _dense_host(x[:, at] if axis == 1 else x[at])
    back = np.argsort(order)
    return taken[:, back] if axis == 1 else taken[back]


class RawAndLayerError(ValueError, AssertionError):
    """use_raw with a layer: a ValueError, and the AssertionError scanpy's obs_df raises (and its
    tests expect)."""


def _resolve(frame: pd.DataFrame, names: pd.Index, keys, *, dim: str, where: str, aliases: pd.Index | None):
    """(frame columns, positions in `names`, the keys naming them): scanpy's rules, each key
    looked up once; a key in both places, or a duplicated alias, is ambiguous."""
    other = "var" if dim == "obs" else "obs"
    if not frame.columns.is_unique:
        dup = frame.columns[frame.columns.duplicated()].tolist()
        msg = f"adata.{dim} contains duplicated columns {dup}; rename or remove them first."
        raise ValueError(msg)
    if not names.is_unique:
        msg = f"{where}.{other}_names contains duplicated items; make them unique (adata.{other}_names_make_unique())."
        raise ValueError(msg)
    lookup = aliases if aliases is not None else names
    searched = f"{other}[{aliases.name!r}]" if aliases is not None else f"{other}_names"
    where_in: dict = {}  # each name's positions, in one pass (a lookup per key would scan them all)
    for i, name in enumerate(lookup):
        where_in.setdefault(name, []).append(i)
    cols, positions, named, missing = [], [], [], []
    for key in dict.fromkeys(keys):
        hits = where_in.get(key, ())
        if key in frame.columns:
            if len(hits):
                msg = f"The key {key!r} is found in both adata.{dim} and {where}.{searched}."
                raise KeyError(msg)
            cols.append(key)
        elif len(hits) > 1:
            msg = f"Found duplicate entries for {key!r} in {where}.{searched}."
            raise KeyError(msg)
        elif len(hits) == 1:
            positions.append(hits[0])
            named.append(key)
        else:
            missing.append(key)
    if missing:
        msg = f"Could not find keys {missing!r} in columns of `adata.{dim}` or in {where}.{searched}."
        raise KeyError(msg)
    return cols, np.asarray(positions, dtype=np.int64), named


def _mapped_columns(frame: pd.DataFrame, mapping, keys: Iterable[tuple[str, int]], *, step: str, where: str) -> None:
    """`frame['{k}-{i}']`: column i of the obsm / varm entry k, on the host (`where`: the
    mapping's name for the errors)."""
    for k, i in keys:
        if k not in mapping:
            msg = f"{step}: {k!r} is not in adata.{where} (keys: {list(mapping.keys())})."
            raise KeyError(msg)
        value = mapping[k]
        width = len(value.columns) if isinstance(value, pd.DataFrame) else value.shape[1]
        if not isinstance(value, pd.DataFrame) and not -width <= i < width:
            msg = f"{step}: column {i} of adata.{where}[{k!r}] does not exist; it has {width} columns."
            raise IndexError(msg)
        if isinstance(value, pd.DataFrame):
            frame[f"{k}-{i}"] = value.loc[:, i]
        else:
            column = value[:, i : i + 1] if is_sparse(value) else value[:, i]
            column = column.compute() if is_dask(column) else column
            frame[f"{k}-{i}"] = np.ravel(_dense_host(column))


def _frame(index: pd.Index, values, named: list, meta: pd.DataFrame, cols: list, keys) -> pd.DataFrame:
    parts = [pd.DataFrame(index=index)]
    if named:
        parts.append(pd.DataFrame(values, columns=named, index=index))
    if cols:
        parts.append(meta[cols])
    out = pd.concat(parts, axis=1)
    return out[list(keys)] if keys else out  # the order asked for, repeated keys repeated


def obs_df(adata: AnnData, keys: Collection[str] = (), obsm_keys: Iterable[tuple[str, int]] = (), *,
           layer: str | None = None, gene_symbols: str | None = None,
           use_raw: bool = False) -> pd.DataFrame:  # fmt: skip
    """Values per cell: scanpy's ``sc.get.obs_df``. `keys` name genes (``var_names``, or the
    ``var[gene_symbols]`` column's values) or ``obs`` columns; `obsm_keys` are (key, column)
    pairs, added as columns ``'{key}-{column}'``. Gene values come from X, `layer` or raw, on
    any backend (a Dask array reads only the chosen genes, block by block)."""
    check_anndata(adata, step="obs_df")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if use_raw and layer is not None:
        msg = f"obs_df: pass a layer or use_raw=True, not both (got layer={layer!r}); raw has no layers."
        raise RawAndLayerError(msg)
    if use_raw and adata.raw is None:
        msg = "obs_df: use_raw=True but adata.raw is None; pass use_raw=False (X) or set adata.raw."
        raise ValueError(msg)
    var = adata.raw.var if use_raw else adata.var
    if gene_symbols is not None and gene_symbols not in var:
        msg = f"obs_df: gene_symbols {gene_symbols!r} is not a column of {'adata.raw' if use_raw else 'adata'}.var."
        raise KeyError(msg)
    aliases = pd.Index(var[gene_symbols]) if gene_symbols is not None else None
    cols, positions, named = _resolve(adata.obs, var.index, keys, dim="obs", where="adata.raw" if use_raw else "adata",
                                      aliases=aliases)  # fmt: skip
    # the matrix only where genes are asked for (scanpy reads no layer for obs columns alone)
    values = _taken(get_matrix(adata, layer=layer, use_raw=use_raw, step="obs_df"), positions, axis=1) \
        if named else None  # fmt: skip
    out = _frame(adata.obs_names, values, named, adata.obs, cols, keys)
    _mapped_columns(out, adata.obsm, obsm_keys, step="obs_df", where="obsm")
    return out


def var_df(adata: AnnData, keys: Collection[str] = (), varm_keys: Iterable[tuple[str, int]] = (), *,
           layer: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Values per gene: scanpy's ``sc.get.var_df``. `keys` name cells (``obs_names``) or ``var``
    columns; `varm_keys` are (key, column) pairs, added as columns ``'{key}-{column}'``. Cell
    values come from X or `layer`, on any backend."""
    check_anndata(adata, step="var_df")
    keys = [keys] if isinstance(keys, str) else list(keys)
    cols, positions, named = _resolve(adata.var, adata.obs_names, keys, dim="var", where="adata", aliases=None)
    values = _taken(get_matrix(adata, layer=layer, step="var_df"), positions, axis=0).T if named else None
    out = _frame(adata.var_names, values, named, adata.var, cols, keys)
    _mapped_columns(out, adata.varm, varm_keys, step="var_df", where="varm")
    return out
