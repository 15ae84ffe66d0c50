"""The backend boundary: one primitive per file, each taking `Parts` (CSR or dense, CPU or GPU).

Public functions validate and reshape their input, then call these; a primitive picks the GPU
kernel wrapper (`gpu_sc._kernels`) or the CPU implementation from where the data lives.
"""

from ._layout import Parts, parts
from .clipped_sums import clipped_sums
from .col_sums import col_mean_var, col_sums
from .divide_rows import divide_rows
from .flag_cols_above import flag_cols_above
from .log1p import log1p_
from .row_sums import row_sums
from .scaled_dense import scaled_dense
from .top_sums import top_sums

__all__ = [
    "Parts", "parts", "row_sums", "col_sums", "col_mean_var", "top_sums", "flag_cols_above",
    "divide_rows", "log1p_", "clipped_sums", "scaled_dense",
]  # fmt: skip
