"""The backend boundary: primitives over a matrix, each taking one operand, `Parts | Chunked`.

`parts(x)` gives the operand: the `Parts` of an in-memory CSR or C-contiguous dense matrix (CPU
or GPU), or the `Chunked` of a row-chunked Dask array. Each primitive is registered per storage
kind through `_dispatch.primitive` (CPU, GPU, Dask) and runs the implementation for where its
operand lives: the CPU one (numba / numpy), a GPU kernel wrapper from `gpu_sc._kernels`, or
itself on every Dask block, the results combined. A file holds one primitive, or a few sharing
their kernels (`col_sums`, `gram`, `pic_loglik`: PIC x pair log-likelihoods of CSR row ranges).

Two families build on other operands or on the primitives: `neighbors` (dense embeddings and
kNN lists) and `eigh` (PCA's eigen-solvers over the products of `gram`).

Public functions validate and reshape their input, then call these.
"""

from ._chunked import Chunked
from ._chunked import operand as parts
from ._layout import Parts, summed_duplicates
from .clipped_sums import clipped_sums
from .col_sums import checked_col_moments, col_mean_var, col_moments, col_sums, mean_var
from .divide_rows import divide_rows
from .flag_cols_above import flag_cols_above
from .group_sums import group_sums
from .residual_sums import residual_sums
from .row_sums import row_sums
from .scaled_dense import scaled_dense
from .times_rows import times_rows
from .top_sums import top_sums

__all__ = [
    "Parts", "Chunked", "parts", "row_sums", "col_sums", "col_moments", "col_mean_var", "mean_var", "top_sums",
    "flag_cols_above", "divide_rows", "times_rows", "clipped_sums", "scaled_dense", "group_sums", "summed_duplicates",
    "residual_sums", "checked_col_moments",
]  # fmt: skip
