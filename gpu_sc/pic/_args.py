"""Argument checks shared by the PIC steps, so that every step words the same mistake alike and
refuses it before anything is computed or written."""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import TypedDict

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import OBS_PIC_A, OBS_PIC_ALPHA, OBS_PIC_B, OBS_PIC_STATUS, OBSM_PAIR_POSTERIOR, UNS_PIC
from .._settings import user_stacklevel


def replicate_codes(pics: AnnData, replicate_key, *, step: str, max_columns: int = 2,
                    use: np.ndarray | None = None) -> np.ndarray | None:  # fmt: skip
    """(n_obs, columns) integer codes of the replicate column(s) of pics.obs (the mouse,
    patient: the units PICs are drawn in; at most `max_columns`, 1 or 2), or None where
    `replicate_key` is None. A missing value is refused only in the PICs of `use` (the ones the
    step counts; None: all); elsewhere its code is -1."""
    if replicate_key is None:
        return None
    # one name, or any list-like of them (a list, tuple, array, Index); a number is neither
    keys = [replicate_key] if isinstance(replicate_key, str) else None
    if keys is None and np.iterable(replicate_key):
        keys = list(replicate_key)
    if keys is None or not 1 <= len(keys) <= max_columns or not all(isinstance(k, str) for k in keys):
        what = "a column name of pics.obs" + (" or a list of two" if max_columns == 2 else " (one column)")
        msg = f"{step}: replicate_key must be {what}, got {replicate_key!r}."
        raise ValueError(msg)
    codes = []
    for key in keys:
        if key not in pics.obs:
            msg = (f"{step}: replicate_key {key!r} is not a column of pics.obs (columns: "
                   f"{list(pics.obs.columns)[:10]}).")  # fmt: skip
            raise KeyError(msg)
        try:  # codes in the values' order, not the rows' (the bootstrap draws units in code order)
            c, _ = pd.factorize(pics.obs[key], sort=True, use_na_sentinel=True)
        except TypeError:  # values that do not compare (mixed types): first appearance
            c, _ = pd.factorize(pics.obs[key], use_na_sentinel=True)
        missing = (c < 0) if use is None else (c < 0) & use
        if missing.any():
            msg = (f"{step}: replicate_key column {key!r} is missing for {int(missing.sum())} PICs; "
                   f"fill it or drop those PICs.")  # fmt: skip
            raise ValueError(msg)
        codes.append(c)
    return np.column_stack(codes)


def check_posterior_shape(shape: tuple, n_obs: int, n_a: int, n_b: int, *, step: str, fix: str) -> None:
    """Refuse a pair posterior (obsm['pic_pair_posterior']) that is not PICs x (A groups x B
    groups) of uns['pic']: it belongs to another deconvolution. `fix`: what the user can do."""
    if tuple(shape) != (n_obs, n_a * n_b):
        msg = (f"{step}: obsm[{OBSM_PAIR_POSTERIOR!r}] is {tuple(shape)}, expected ({n_obs}, {n_a * n_b}) "
               f"for the {n_a} x {n_b} groups of uns[{UNS_PIC!r}]; {fix}")  # fmt: skip
        raise ValueError(msg)


def warn_unused(func, given: dict, *, step: str, needs: str) -> None:
    """Warn of the arguments in `given` (name: value) that differ from their default in `func`'s
    signature in a call where they have no effect (`needs`: what would use them), so that e.g. a
    larger n_null without level does not read as a larger null."""
    defaults = inspect.signature(func).parameters

    def changed(value, default):
        if value is default:
            return False
        plain = value is None or isinstance(value, numbers.Number | str | np.bool_)
        return not plain or bool(value != default)

    names = [name for name, value in given.items() if changed(value, defaults[name].default)]
    if names:
        warnings.warn(f"{step}: {', '.join(names)} {'has' if len(names) == 1 else 'have'} no effect here "
                      f"(used only {needs}); ignored.", UserWarning, stacklevel=user_stacklevel())


def derived_seed(seed: int, offset: int) -> int:
    """The seed of a step's `offset`-th own stream: seed + offset, wrapped into numpy's 32-bit
    range, so that every seed the step accepted (below 2**32) works."""
    return (int(seed) + int(offset)) % 2**32


def names_list(value, *, step: str, name: str) -> list[str]:
    """A name or a list of names as a list of str (a single string is one name, not its
    characters)."""
    if isinstance(value, str):
        return [value]
    if value is None or not np.iterable(value):
        msg = (f"{step}: {name} must be a name or a list of names, got {value!r} "
               f"({type(value).__name__}).")
        raise TypeError(msg)
    return [str(v) for v in value]


def column_name(key, *, step: str, name: str, what: str) -> None:
    """`key` names one column of `name`.obs (a list of names is a mistake, not a bare
    'unhashable type' from pandas)."""
    if not isinstance(key, str):
        msg = f"{step}: {what} must be one column name of {name}.obs, got {key!r} ({type(key).__name__})."
        raise TypeError(msg)


def text(values) -> np.ndarray:
    """Names as a numpy str array, from a list, an Index or an array read back from a file
    (anndata reads zarr's strings as numpy's StringDType, which has no direct cast to str)."""
    return np.asarray(values, dtype=object).astype(str)


def population_groups(singlets: AnnData, groupby: str, a, b, *,
                      step: str) -> tuple[np.ndarray, list[str], list[str]]:  # fmt: skip
    """(label per singlet as str, None where missing; A groups, B groups): `a` and `b` checked to
    be non-empty, without repeats, present in singlets.obs[groupby] and disjoint."""
    column_name(groupby, step=step, name="singlets", what="groupby")
    if groupby not in singlets.obs:
        msg = (
            f"{step}: {groupby!r} is not a column of singlets.obs "
                       f"(columns: {list(singlets.obs.columns)[:20]})."
        )
        raise KeyError(msg)
    col = singlets.obs[groupby]
    labels = col.astype(str).to_numpy(dtype=object)
    labels[col.isna().to_numpy()] = None  # unlabelled: in no group (not one named 'nan')
    ga, gb = names_list(a, step=step, name="a"), names_list(b, step=step, name="b")
    for side, groups in (("a", ga), ("b", gb)):
        if not groups:
            msg = (
                f"{step}: {side} names no group; pass one or more groups of "
                             f"singlets.obs[{groupby!r}]."
            )
            raise ValueError(msg)
        twice = sorted({g for g in groups if groups.count(g) > 1})
        if twice:
            msg = f"{step}: {side} names groups {twice} more than once; name each group once."
            raise ValueError(msg)
    present = {g for g in labels if g is not None}
    missing = [g for g in ga + gb if g not in present]
    if missing:
        msg = (
            f"{step}: groups {missing} are not in singlets.obs[{groupby!r}] "
                       f"(its groups: {sorted(present)[:30]})."
        )
        raise KeyError(msg)
    if set(ga) & set(gb):
        msg = (
            f"{step}: groups {sorted(set(ga) & set(gb))} are in both a and b; "
                         "each group belongs to one population."
        )
        raise ValueError(msg)
    return labels, ga, gb


class PicColumns(TypedDict, total=False):
    """The pics.obs columns of a deconvolution that the downstream steps read, passed as keyword
    arguments (``**columns: Unpack[PicColumns]``): the assigned A group, B group, A share and
    status ('ok' or a drop reason; None: every PIC is used)."""

    a_key: str
    b_key: str
    alpha_key: str
    status_key: str | None


_DEFAULT_COLUMNS: PicColumns = {"a_key": OBS_PIC_A, "b_key": OBS_PIC_B, "alpha_key": OBS_PIC_ALPHA,
                                "status_key": OBS_PIC_STATUS}  # fmt: skip


def pic_columns(given: dict, *, step: str) -> PicColumns:
    """The column keys a step was given, the defaults for the rest; any other keyword is the
    TypeError Python raises for an unknown keyword argument."""
    unknown = [k for k in given if k not in _DEFAULT_COLUMNS]
    if unknown:
        msg = f"{step}() got an unexpected keyword argument {unknown[0]!r}"
        raise TypeError(msg)
    return {**_DEFAULT_COLUMNS, **given}
