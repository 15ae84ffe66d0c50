"""Input checks and AnnData access shared by every feature package (preprocessing, pic, tools,
get): fetch the matrix, bring it into a layout the primitives take, check that counts look like
counts. Nothing here modifies the AnnData, except `make_actual`, which turns a view into an
actual AnnData before in-place work."""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from numbers import Real

import numpy as np
import pandas as pd
from anndata import AnnData

from ._backend import describe, is_dask, is_gpu, is_sparse, xp_of
from ._keys import VAR_HIGHLY_VARIABLE
from ._settings import user_stacklevel
from ._ops._chunked import Chunked, check_chunked, whole_rows
from ._ops._layout import in_layout, summed_duplicates
from ._values import native_order, value_issues


def old_positionals(*names: str):
    """Take scanpy's deprecated positional arguments: scanpy still runs `filter_cells(adata, 3)`
    (with a FutureWarning) for the parameters that were positional before they became
    keyword-only, so a call swapped to gpu_sc must run too. Positionals beyond the function's
    own are given to `names` in order, with the same kind of warning."""

    def wrap(fn):
        n_own = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    for p in inspect.signature(fn).parameters.values())  # fmt: skip

        @functools.wraps(fn)
        def call(*args, **kwargs):
            extra = args[n_own:]
            if not extra:
                return fn(*args, **kwargs)
            if len(extra) > len(names):
                msg = (f"{fn.__name__}() takes at most {n_own + len(names)} positional arguments "
                       f"({n_own} and the {len(names)} scanpy once took by position: {', '.join(names)}), got "
                       f"{len(args)}; pass the others by keyword.")  # fmt: skip
                raise TypeError(msg)
            given = dict(zip(names, extra, strict=False))
            twice = sorted(set(given) & set(kwargs))
            if twice:
                msg = f"{fn.__name__}() got {', '.join(twice)} both by position and by keyword; pass each once."
                raise TypeError(msg)
            first = next(iter(given))
            warnings.warn(f"{fn.__name__}: the parameters {tuple(given)} are no longer positional in scanpy; "
                          f"pass them by keyword, e.g. `{first}={given[first]!r}`.", FutureWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
            return fn(*args[:n_own], **given, **kwargs)

        return call

    return wrap


def check_anndata(adata, *, step: str, name: str = "adata") -> None:
    if not isinstance(adata, AnnData):
        msg = (f"{step}: expected an AnnData, got {type(adata).__name__} for {name}; wrap a "
               "matrix or DataFrame with anndata.AnnData(...) first.")  # fmt: skip
        raise TypeError(msg)


def get_matrix(adata: AnnData, *, layer: str | None = None, obsm: str | None = None,
               use_raw: bool = False, step: str):  # fmt: skip
    """The matrix a step works on: X, a layer, an obsm entry or raw.X (never a copy)."""
    check_anndata(adata, step=step)
    x = _chosen_matrix(adata, layer=layer, obsm=obsm, use_raw=use_raw, step=step)
    check_index_dtype(x, step=step)
    return x


def check_index_dtype(x, *, step: str) -> None:
    """Refuse a sparse matrix with unsigned index arrays (some writers store indptr as uint64),
    which scipy's and our kernels take as signed only, saying how to cast them."""
    for name in ("indptr", "indices"):
        arr = getattr(x, name, None) if is_sparse(x) else None
        if arr is not None and arr.dtype.kind == "u":
            msg = (f"{step}: the sparse matrix's {name} is {arr.dtype}; scipy and gpu_sc take signed index "
                   f"arrays. Cast them first: x.{name} = x.{name}.astype(np.int64) (or int32).")  # fmt: skip
            raise TypeError(msg)


def _chosen_matrix(adata: AnnData, *, layer, obsm, use_raw, step: str):
    chosen = [n for n, v in (("layer", layer), ("obsm", obsm), ("use_raw", use_raw)) if v]
    if len(chosen) > 1:
        msg = f"{step}: pass at most one of layer, obsm and use_raw; got {', '.join(chosen)}."
        raise ValueError(msg)
    if layer is not None:
        if layer not in adata.layers:
            msg = f"{step}: layer {layer!r} not found; adata has layers {list(adata.layers)}."
            raise KeyError(msg)
        return adata.layers[layer]
    if obsm is not None:
        if obsm not in adata.obsm:
            msg = f"{step}: obsm {obsm!r} not found; adata has obsm {list(adata.obsm)}."
            raise KeyError(msg)
        return adata.obsm[obsm]
    if use_raw:
        if adata.raw is None:
            msg = f"{step}: Received `use_raw=True`, but `adata.raw` is empty (use_raw=True but adata.raw is None)."
            raise ValueError(msg)
        return adata.raw.X
    if adata.X is None:
        msg = f"{step}: adata.X is None; pass `layer=` to choose a matrix."
        raise ValueError(msg)
    return adata.X


def set_matrix(adata: AnnData, x, *, layer: str | None = None, obsm: str | None = None) -> None:
    """Write a step's result where `get_matrix` read it from (X, a layer or an obsm entry)."""
    if layer is not None:
        adata.layers[layer] = x
    elif obsm is not None:
        adata.obsm[obsm] = x
    else:
        adata.X = x


def canonical(x, *, step: str, sum_duplicates: bool = False):
    """`x` as CSR or C-contiguous dense on its own device; a copy only where the layout differs.

    CSC and COO become CSR (as scanpy does); np.matrix becomes ndarray. With `sum_duplicates`, a
    CSR's duplicate entries are summed (`summed_duplicates`, a copy where it has any): steps that
    count stored values or take a function of each (a square, expm1) then read the matrix's value,
    their sum (scanpy does so in its filters and seurat HVG, not in its QC, scale, PCA or
    cell_ranger HVG). A Dask array is checked (2-D, known row chunks) and returned lazily with whole rows
    in each block (rechunked along genes where it was split, `whole_rows`): each block is brought
    into layout, its duplicates summed, when it is computed (`_ops._chunked`).
    """
    if is_dask(x):
        x = whole_rows(x)
        check_chunked(x, step=step)
        return x
    if is_sparse(x):
        check_index_dtype(x, step=step)
        x = _native(in_layout(x))
        return summed_duplicates(x) if sum_duplicates else x
    if not hasattr(x, "flags"):
        raise unsupported_matrix(x, step=step, expected="a 2-D numpy/cupy array")
    if x.ndim != 2:  # in memory already: the advice to load it would mislead
        msg = (f"{step}: expected a 2-D matrix (cells x genes), got a {x.ndim}-D array of shape "
               f"{x.shape}; pass the whole matrix (e.g. x.reshape(1, -1) for one cell).")
        raise ValueError(msg)
    return _native(in_layout(x))


def writable(x):
    """`x`, or a copy where its host values are read-only (a read-only memmap, an array with
    writeable=False, as some readers hand out): steps that work in place then write into their
    own copy, which replaces the matrix, where numba's in-place loops have no type for them."""
    values = x.data if is_sparse(x) else x
    if is_dask(x) or is_gpu(values) or getattr(values, "flags", None) is None or values.flags.writeable:
        return x
    return x.copy()


def _native(x):
    """A host matrix in the forms the compiled code takes: values in the machine's byte order
    (some HDF5 files hold big-endian ones, '>f4': numba has no type for them) and a CSR's two
    index arrays of one dtype (int32 pointers beside int64 indices: scipy's eliminate_zeros
    refuses them). A copy where either differs; device arrays are always native."""
    values = x.data if is_sparse(x) else x
    if is_gpu(values) or values.dtype.isnative and not (
            is_sparse(x) and x.indices.dtype != x.indptr.dtype):  # fmt: skip
        return x
    if not is_sparse(x):
        return native_order(x)
    index = np.promote_types(x.indices.dtype, x.indptr.dtype)
    # the values copied too: a new matrix sharing them would be changed by steps that copy only
    # where they got the caller's object back (normalize_total(inplace=False))
    return type(x)((values.astype(values.dtype.newbyteorder("=")), x.indices.astype(index),
                    x.indptr.astype(index)), shape=x.shape)  # fmt: skip


def renamed_arg(old: str, new: str):
    """Decorator: accept the keyword `old` for the first positional argument `new`, with scanpy's
    FutureWarning (scanpy still takes e.g. ``log1p(X=...)``)."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if old in kwargs:
                if args or new in kwargs:
                    msg = f"{fn.__name__}() got both `{old}` and `{new}`; pass `{new}` only."
                    raise TypeError(msg)
                warnings.warn(f"In function `{fn.__name__}`, argument `{old}` was renamed to `{new}` at first "
                              f"position. Call it as `{fn.__name__}(val, ...)` instead of "
                              f"`{fn.__name__}({old}=val, ...)`.", FutureWarning, stacklevel=2)  # fmt: skip
                args = (kwargs.pop(old),)
            return fn(*args, **kwargs)

        return call

    return wrap


class UnsupportedMatrixError(TypeError, NotImplementedError):
    """A matrix type no step takes. Both a TypeError and, as scanpy raises for backed data and
    other types its steps do not implement, a NotImplementedError, so code written for either
    catches it."""


#: scanpy's names of the steps in its "... is not implemented for matrices of type ..." errors
_SCANPY_NAMES = {"pca": "PCA"}


def unsupported_matrix(x, *, step: str, expected: str, suffix: str = "") -> UnsupportedMatrixError:
    """The error for a matrix no step takes (a backed h5py dataset, a list, ...), opening with
    scanpy's words for it (`suffix`: scanpy's ending, e.g. PCA's ' from layers')."""
    msg = (f"{_SCANPY_NAMES.get(step, step)} is not implemented for matrices of type {type(x)}{suffix}: "
           f"{step}: expected {expected} or a scipy/cupyx sparse matrix, got {type(x).__module__}."
           f"{type(x).__name__}. Load the data into memory first (e.g. adata.to_memory()).")  # fmt: skip
    return UnsupportedMatrixError(msg)


def check_in_memory(x, *, step: str, suffix: str = "") -> None:
    """Refuse, in scanpy's words, a matrix that is neither in memory nor a Dask array (a backed
    dataset on disk)."""
    if not (is_dask(x) or is_sparse(x) or hasattr(x, "flags")):
        raise unsupported_matrix(x, step=step, expected="a numpy/cupy array", suffix=suffix)


def check_not_empty(x, *, step: str) -> None:
    """Refuse a matrix without cells or genes (steps that give scanpy's empty results there,
    QC and normalize_total, do not call this)."""
    n_rows, n_cols = x.shape
    if n_rows == 0 or n_cols == 0:
        msg = f"{step}: got an empty matrix ({n_rows} cells x {n_cols} genes); nothing to do."
        raise ValueError(msg)


def check_count_dtype(x, *, step: str) -> None:
    """Counts must be numbers (bools count as 0 and 1, as scanpy's filters and QC take them):
    checked from the dtype alone, before a lazy array is read (its values are then counted in
    the caller's own pass, `check_counts(issues=...)`)."""
    kind = np.dtype(x.dtype).kind
    if kind not in "iufb":
        msg = f"{step}: expects numeric counts, got {describe(x)}."
        raise TypeError(msg)


def check_counts(x, *, step: str, negative_ok: bool = False, issues: tuple[int, int] | None = None) -> int:
    """Counts must be numbers, finite, and non-negative unless `negative_ok` (scanpy's QC, filters
    and normalize_total take scaled data too); the error says what was found and what to do.
    `issues`: the (non-finite, negative) counts where the caller found them in its own pass over
    a Dask array (`block_value_issues` per block). Returns the number of negative values."""
    check_count_dtype(x, step=step)
    values = x.data if is_sparse(x) else x
    if values.size == 0 or values.dtype.kind == "u":
        return 0
    n_bad, n_neg = _issue_counts(x, values) if issues is None else issues
    if n_bad:
        msg = (
            f"{step}: expects counts but found {n_bad} non-finite values (NaN or inf) in "
            f"{describe(x)}; fix or drop those entries first."
        )
        raise ValueError(msg)
    if n_neg and not negative_ok:
        minimum = "" if is_dask(x) else f" (minimum {float(values.min()):g})"
        msg = (
            f"{step}: expects non-negative counts but found {n_neg} negative values{minimum} "
            f"in {describe(x)}; pass raw counts (e.g. a 'counts' layer) rather than scaled or "
            "centred data."
        )
        raise ValueError(msg)
    return int(n_neg)


def check_finite(x, *, step: str, n_bad: int | None = None) -> None:
    """No NaN or inf in a float matrix (scanpy's PCA raises on them through scikit-learn).
    `n_bad`: the non-finite count where the caller found it in its own pass over a Dask array
    (`block_value_issues` per block)."""
    values = x.data if is_sparse(x) else x
    if values.dtype.kind != "f" or values.size == 0:
        return
    if n_bad is None:
        n_bad, _ = _issue_counts(x, values)
    if n_bad:
        msg = (f"{step}: found {n_bad} non-finite values (NaN or inf) in {describe(x)}; fix or drop "
               "those entries first.")
        raise ValueError(msg)


def _issue_counts(x, values) -> tuple[int, int]:
    """(non-finite, negative) value counts of `x` (its `values`); Dask: one pass over the blocks."""
    return Chunked(x).reduce(block_value_issues) if is_dask(x) else _value_issues(values)


def check_integer_counts(x, *, step: str, issues: tuple[int, int, int] | None = None) -> None:
    """Raw UMI counts: :func:`check_counts` plus whole-number values (methods that draw UMIs,
    such as down-sampling and resampling, need integers). A Dask array is read once for both,
    or not at all where `issues` holds its `block_integer_issues` from a pass already made."""
    check_count_dtype(x, step=step)
    if is_dask(x):
        n_bad, n_neg, n_frac = Chunked(x).reduce(block_integer_issues) if issues is None else issues
        check_counts(x, step=step, issues=(n_bad, n_neg))
    else:
        check_counts(x, step=step)
        n_frac = _fractions(x.data if is_sparse(x) else x)
    if n_frac:
        msg = (
            f"{step}: expects raw integer counts but found {n_frac} non-integer values in "
            f"{describe(x)}; pass the raw counts (e.g. a 'counts' layer), not normalised data."
        )
        raise ValueError(msg)


def _value_issues(values) -> tuple[int, int]:
    """(non-finite, negative) value counts of an in-memory value array."""
    if values.dtype.kind == "i":
        return 0, int(xp_of(values).count_nonzero(values < 0))
    return value_issues(values.reshape(-1))


def _fractions(values) -> int:
    """How many values are not whole numbers (none in integer arrays)."""
    if values.dtype.kind != "f" or values.size == 0:
        return 0
    xp = xp_of(values)
    return int(xp.count_nonzero(values != xp.round(values)))


def block_value_issues(p) -> tuple[int, int]:
    """(non-finite, negative) value counts of one block's parts."""
    return _value_issues(p.data)


def block_integer_issues(p) -> tuple[int, int, int]:
    """(non-finite, negative, non-whole) value counts of one block's parts: one read for all."""
    return (*_value_issues(p.data), _fractions(p.data))


SEED_LIMIT = 2**32  # numpy's RandomState and scikit-learn's random_state take seeds below it


def check_seed(seed, *, step: str) -> int:
    # numpy's generators refuse negative seeds, scikit-learn's models (ml's alpha regression)
    # seeds of 2**32 and more, with messages that name neither step nor seed, and late
    seed = check_int(seed, step=step, name="seed", minimum=0,
                     hint=" (numpy's random generators take no negative seeds)")
    if seed >= SEED_LIMIT:
        msg = f"{step}: seed must be below 2**32 (as numpy's RandomState and scikit-learn take it), got {seed}."
        raise ValueError(msg)
    return seed


def check_flag(value, name: str, *, step: str) -> bool:
    """`value` as a bool: True, False or a numpy bool. A string such as "no" would read as on."""
    if not isinstance(value, bool | np.bool_):
        msg = f"{step}: {name} must be True or False, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    return bool(value)


def check_int(value, *, step: str, name: str, minimum: int = 1, none_ok: bool = False,
              hint: str = "") -> int | None:  # fmt: skip
    """`value` as an int >= `minimum` (None passes when `none_ok`). Python and numpy integers
    only: a bool, a float such as 10.5 or a string such as "10" is a mistake, not a count."""
    want = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}") + (" or None" if none_ok else "")
    if value is None and none_ok:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        msg = f"{step}: {name} must be {want}{hint}, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    if value < minimum:
        msg = f"{step}: {name} must be {want}{hint}, got {value}."
        raise ValueError(msg)
    return int(value)


def _is_real(value) -> bool:
    """A real number, bool excepted, or a 0-d numeric array (what a NumPy reduction gives)."""
    if isinstance(value, Real):
        return not isinstance(value, bool)
    return getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", None) in ("i", "u", "f")


def _scalar(value):
    """A 0-d array as a scalar: NumPy's as a NumPy scalar of its dtype (CuPy's arithmetic refuses
    NumPy arrays, 0-d ones too, and takes NumPy scalars), a device one as a Python number."""
    if isinstance(value, np.ndarray):
        return value[()]
    if getattr(value, "ndim", None) == 0 and not isinstance(value, np.generic):
        return value.item()
    return value


def check_real(value, name: str, *, step: str, none_ok: bool = True):
    """`value` if a real number (NaN and inf allowed, bool not; a 0-d numeric array too, as a
    reduction gives, returned as a scalar), or None where `none_ok`: else a TypeError naming the
    parameter (comparisons with a string failed with Python's or NumPy's own)."""
    if value is None and none_ok:
        return None
    if _is_real(value):
        return _scalar(value)
    msg = f"{step}: {name} must be a number{' or None' if none_ok else ''}, got {value!r} ({type(value).__name__})."
    raise TypeError(msg)


def check_number(value, name: str, *, step: str, low: float, high: float, low_open: bool = True,
                 high_open: bool = False) -> float:
    """A real number (not a bool; a 0-d numeric array too) in the interval from `low` to `high`
    (open or closed ends)."""
    ok = _is_real(value) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        msg = f"{step}: {name} must be a number in {lo}{low}, {high}{hi}, got {value!r}."
        raise ValueError(msg)
    return float(value)


def sum_dtype(dtype) -> np.dtype:
    """The dtype scanpy's (NumPy's) sums have for values of `dtype`: floats keep theirs, unsigned
    integers give uint64, signed ones and bools int64."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.uint64 if dtype.kind == "u" else np.int64)


def make_actual(adata: AnnData, *, warn: bool = False) -> None:
    """A view becomes an actual AnnData before in-place work, so the parent is never touched.
    `warn`: with scanpy's warning, where scanpy's step gives it (its view_to_actual: log1p,
    normalize_total, regress_out, scale)."""
    if adata.is_view:
        if warn:
            warnings.warn("Received a view of an AnnData. Making a copy.", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
        adata._init_as_actual(adata.copy())


def sanitize_anndata(adata: AnnData, *, warn: bool = False) -> None:
    """scanpy's sanitize_anndata: the string columns of obs and var that repeat values become
    categoricals (categories in natural order: '2' before '10'). A view becomes actual first
    (`make_actual`) where `warn` (with scanpy's warning: its step makes the view actual anyway) or
    where a column changes; otherwise it stays a view, as scanpy leaves it (no copy of X)."""
    if adata.is_view and not warn and not _strings_to_convert(adata):
        return
    make_actual(adata, warn=warn)
    adata.strings_to_categoricals()


def _strings_to_convert(adata: AnnData) -> bool:
    """Whether anndata's strings_to_categoricals would change a column: a text column with fewer
    distinct values (missing ones not counted) than cells."""
    for df in (adata.obs, adata.var):
        for col in df.columns:
            values = df[col]
            if pd.api.types.infer_dtype(values) == "string" and values.nunique() < len(values):
                return True
    return False


def obs_categories(col, name: str, *, step: str, what: str = "category"):
    """`col` (an obs column) as a pandas Categorical (its categories as pandas makes them), or a
    clear error where some cell has none (NaN): give it `what` or drop it."""
    cat = pd.Categorical(col)
    n_missing = int(np.count_nonzero(cat.codes < 0))
    if n_missing:
        msg = (f"{step}: obs[{name!r}] has {n_missing} missing values (NaN) among {len(cat)} cells; give "
               f"those cells a {what} or drop them first.")  # fmt: skip
        raise ValueError(msg)
    return cat


def finite_obs_values(col, name: str, *, step: str) -> np.ndarray:
    """A numeric obs column as float64, or a clear error where a value is missing or infinite."""
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        msg = (f"{step}: obs[{name!r}] has {n_bad} missing or infinite values among {values.size} cells; "
               "fill or drop those cells first.")  # fmt: skip
        raise ValueError(msg)
    return values


def host_bool_mask(mask, n: int, *, what: str, step: str) -> np.ndarray:
    """A host boolean array of length n (cupy/pandas/list input accepted)."""
    if is_gpu(mask):
        mask = mask.get()
    m = np.asarray(mask)
    if m.dtype != bool or m.shape != (n,):
        msg = f"{step}: {what} must be a boolean array of length {n}, got dtype {m.dtype} shape {m.shape}."
        raise ValueError(msg)
    return m


def warn_not_counts(subject: str) -> None:
    """scanpy's warning, in its words, where a step that expects counts finds a value that is not
    one (`subject`: the step as scanpy names it, e.g. "`flavor='seurat_v3'`")."""
    warnings.warn(f"{subject} expects raw count data, but non-integers were found.", UserWarning,
                  stacklevel=user_stacklevel())


def check_n_top_genes(n_top_genes, *, step: str) -> None:
    """None, or a whole number >= 1 (scanpy takes 100.0 as 100; a bool is a mistake). Not a
    number at all ('100'): a TypeError, as scanpy's."""
    if n_top_genes is None:
        return
    msg = f"{step}: n_top_genes must be a positive integer or None, got {n_top_genes!r}."
    number = isinstance(n_top_genes, Real) or (isinstance(n_top_genes, np.ndarray) and n_top_genes.ndim == 0
                                               and n_top_genes.dtype.kind in "iuf")  # np.array(10), as scanpy
    if isinstance(n_top_genes, bool | np.bool_) or not number:
        raise TypeError(msg)
    if not math.isfinite(n_top_genes) or int(n_top_genes) != n_top_genes or n_top_genes < 1:
        raise ValueError(msg)


class _Empty:
    """A mask argument left at its default; shown as scanpy shows its own (`_empty`)."""

    def __repr__(self) -> str:
        return "_empty"


EMPTY = _Empty()


def handle_mask_var(var, mask_var, use_highly_variable, *, n_vars: int, step: str):
    """pca's `mask_var` / `use_highly_variable` (and the steps that take them as pca does): (the
    mask parameter as scanpy stores it, host bool mask or None), scanpy's rules, warning and
    words (its tests match them). `EMPTY`: not given (scanpy's default: the highly variable
    genes where var has them)."""
    hvg = VAR_HIGHLY_VARIABLE
    if use_highly_variable is not None:
        hint = ('Use_highly_variable=True can be called through mask_var="highly_variable". '
                "Use_highly_variable=False can be called through mask_var=None")  # fmt: skip
        msg = f"Argument `use_highly_variable` is deprecated, consider using the mask argument. {hint}"
        warnings.warn(msg, FutureWarning, stacklevel=user_stacklevel())
        if mask_var is not EMPTY:
            msg = f"{step}: These arguments are incompatible (use_highly_variable and mask_var). {hint}"
            raise ValueError(msg)
    has_hvg = var is not None and hvg in var.columns
    if use_highly_variable or (use_highly_variable is None and mask_var is EMPTY and has_hvg):
        mask_var = hvg
    if mask_var is EMPTY or mask_var is None:
        return None, None
    if isinstance(mask_var, str):
        if var is None or mask_var not in var.columns:
            msg = (f"{step}: Did not find `adata.var[{mask_var!r}]`. Either add the mask first to `adata.var` "
                   f"or consider using the mask argument with an array (mask_var {mask_var!r} is not a "
                   "column of adata.var).")  # fmt: skip
            raise ValueError(msg)  # as scanpy
        return mask_var, scanpy_mask(var[mask_var].to_numpy(), n_vars, what="mask_var", step=step)
    return mask_var, scanpy_mask(mask_var, n_vars, what="mask_var", step=step)


def scanpy_mask(mask, n: int, *, what: str, step: str) -> np.ndarray:
    """`host_bool_mask` with scanpy's words (its ``_check_mask``, which scanpy's tests match) for
    a mask of the wrong length ("The shape of the mask do not match the data.") or dtype ("Mask
    array must be boolean."); pca's `mask_var` and scale's `mask_obs`."""
    if is_gpu(mask):
        mask = mask.get()
    m = np.asarray(mask)
    if m.shape != (n,):
        msg = (f"{step}: The shape of the mask do not match the data. {what} must be a boolean array of "
               f"length {n}, got shape {m.shape}.")  # fmt: skip
        raise ValueError(msg)
    if m.dtype != bool:
        msg = f"{step}: Mask array must be boolean. {what} must be a boolean array, got dtype {m.dtype}."
        raise ValueError(msg)
    return m
