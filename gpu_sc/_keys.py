"""Every AnnData key gpu_sc writes, defined once (names follow scanpy)."""

from __future__ import annotations

# normalize_total / log1p
UNS_LOG1P = "log1p"

# filter_cells / filter_genes
OBS_N_COUNTS = "n_counts"
OBS_N_GENES = "n_genes"
VAR_N_COUNTS = "n_counts"
VAR_N_CELLS = "n_cells"


# calculate_qc_metrics: scanpy names its columns after expr_type and var_type
def qc_obs_n_vars(expr: str, var: str) -> str:
    return f"n_{var}_by_{expr}"


def qc_total(expr: str) -> str:
    return f"total_{expr}"


def qc_obs_pct_top(expr: str, var: str, n: int) -> str:
    return f"pct_{expr}_in_top_{n}_{var}"


def qc_obs_total_qc(expr: str, qc_var: str) -> str:
    return f"total_{expr}_{qc_var}"


def qc_obs_pct_qc(expr: str, qc_var: str) -> str:
    return f"pct_{expr}_{qc_var}"


def qc_var_n_cells(expr: str) -> str:
    return f"n_cells_by_{expr}"


def qc_var_mean(expr: str) -> str:
    return f"mean_{expr}"


def qc_var_pct_dropout(expr: str) -> str:
    return f"pct_dropout_by_{expr}"


def log1p_of(key: str) -> str:
    return f"log1p_{key}"
