"""Analytic Pearson residuals of a negative binomial offset model (Lause et al. 2021): the
arithmetic behind `normalize_pearson_residuals` and the residual variances of
`highly_variable_genes(flavor="pearson_residuals")`, on the CPU (NumPy; the variances through
the Numba kernel of `_ops.residual_sums`) and the GPU (CuPy).

With s_i the cell's total, g_j the gene's and T the matrix's, mu_ij = s_i g_j / T and the
residual (x_ij - mu_ij) / sqrt(mu_ij + mu_ij^2 / theta), clipped to [-clip, clip]. The totals
are float64 sums here (exact for counts below 2**53); scanpy sums in the input's dtype, so on
float32 counts its totals, and with them the residuals, carry float32 rounding that ours do not.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ... import _ops
from ..._ops.gram import row_blocks
from ..._ops.residual_sums import dense_residuals
from ..._backend import is_dask, is_sparse, to_host, xp_of
from ..._settings import user_stacklevel
from ..._validation import canonical, check_finite, check_not_empty, check_real, warn_not_counts
from ..._values import float_values, not_counts

#: bytes of float64 a band of dense residuals may take (rows x genes at once) on its way out
BLOCK_BYTES = 256 * 2**20


def check_theta_clip(theta, clip, *, step: str) -> None:
    """scanpy's two refusals, in its words (its tests match them), and a number each."""
    theta = check_real(theta, "theta", step=step, none_ok=False)
    if clip is not None:
        check_real(clip, "clip", step=step, none_ok=False)
    if not theta > 0:
        msg = "Pearson residuals require theta > 0"
        raise ValueError(msg)
    if clip is not None and clip < 0:
        msg = "Pearson residuals require `clip>=0` or `clip=None`."
        raise ValueError(msg)


def refuse_dask(x, *, step: str) -> None:
    """The residuals are dense cells x genes, made in memory (scanpy's normalization computes a
    Dask array first): the steps that return them take the counts in memory."""
    if is_dask(x):
        msg = (f"{step}: got a Dask array; the Pearson residuals are dense cells x genes and made in memory: "
               "load the counts first, e.g. adata.X = adata.X.compute() (or the layer's). The gene selection, "
               "gsc.experimental.pp.highly_variable_genes, takes the Dask array as it is.")
        raise TypeError(msg)


def counts_matrix(x, *, step: str, check_values: bool, what: str):
    """`x` in layout (CSR or C-contiguous dense, duplicates summed) with float values; a warning
    in scanpy's words where `check_values` finds non-integers (`what`: the step's subject)."""
    refuse_dask(x, step=step)
    x = canonical(x, step=step, sum_duplicates=True)
    check_not_empty(x, step=step)
    check_finite(x, step=step)  # NaN / inf counts give NaN residual variances and an arbitrary selection
    if check_values and not_counts(x.data if is_sparse(x) else x):
        warn_not_counts(what)
    return float_values(x)


def totals(x) -> tuple:
    """(cell totals, gene totals, matrix total): float64, on x's device."""
    xp = xp_of(x)
    p = _ops.parts(x)
    cells = xp.asarray(_ops.row_sums(p)[0], dtype=xp.float64)
    genes = xp.asarray(_ops.col_sums(p)[0], dtype=xp.float64)
    return cells, genes, float(genes.sum())


def residual_dtype(counts_dtype, theta, clip) -> np.dtype:
    """The dtype of scanpy's residuals: its arithmetic runs in the counts' float dtype (float64
    for integers) and NumPy promotes that by theta and clip (a Python number does not promote,
    a float64 NumPy scalar does, as does the default clip, np.sqrt(n_obs)): float32 counts give
    float32 residuals only with a clip given as a number."""
    base = counts_dtype if np.issubdtype(counts_dtype, np.floating) else np.float64
    return np.result_type(base, theta, np.float64(1) if clip is None else clip)


def pearson_residuals(x, theta: float, clip: float | None, *, dtype=np.float64, step: str):
    """Dense residuals of all of `x` (a `counts_matrix`), computed in float64 a block of rows at
    a time and stored as `dtype` (`residual_dtype`). Cells or genes without counts get NaN
    residuals (0 / 0), as in scanpy, with a warning that says how many."""
    xp = xp_of(x)
    n, g = x.shape
    clip = math.sqrt(n) if clip is None else float(clip)
    cells, genes, total = totals(x)
    empty_cells, empty_genes = int((cells == 0).sum()), int((genes == 0).sum())
    if empty_cells or empty_genes:
        warnings.warn(f"{step}: cells without counts: {empty_cells}, genes without counts: {empty_genes}; their "
                      "residuals are NaN (0 / 0). Filter them first (gsc.pp.filter_cells(adata, min_counts=1), "
                      "gsc.pp.filter_genes(adata, min_counts=1)).", RuntimeWarning, stacklevel=user_stacklevel())
    out = xp.empty((n, g), dtype=dtype)
    for start, stop, block in row_blocks(_ops.parts(x), max(1, BLOCK_BYTES // (8 * max(g, 1)))):
        out[start:stop] = dense_residuals(block, cells[start:stop], genes, total, theta, clip)
    return out


def residual_variances(x, theta: float, clip: float) -> np.ndarray:
    """Host float64 variance (ddof 0) over cells of each gene's clipped residuals, 0 for genes
    without counts (scanpy leaves those out of its kernel and sets 0): two passes of
    `_ops.residual_sums` (the mean, then the squared deviations from it, as scanpy's kernel),
    over rows in memory on the CPU or the GPU (a Dask array: the selection's own passes)."""
    n = x.shape[0]
    cells, genes, total = totals(x)
    p = _ops.parts(x)
    mean = _ops.residual_sums(p, cells, genes, total, theta, clip) / n
    return without_counts_zero(genes, _ops.residual_sums(p, cells, genes, total, theta, clip, centre=mean) / n)


def without_counts_zero(genes, variances) -> np.ndarray:
    """Host `variances` with 0 for the genes whose total `genes` is 0, as scanpy sets them."""
    return np.where(to_host(genes) > 0, to_host(variances), 0.0)
