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

# gpu_sc.pic downstream (_expected, _interaction, _qc): obs columns read from deconvolve
OBS_PIC_A = "pic_a"
OBS_PIC_B = "pic_b"
OBS_PIC_ALPHA = "pic_alpha"
OBS_PIC_STATUS = "pic_status"
PIC_STATUS_OK = "ok"
UNS_PIC = "pic"
OBSM_PAIR_POSTERIOR = "pic_pair_posterior"  # CSR PICs x pairs, column ia + K_A * ib
OBS_TRUE_ALPHA = "true_alpha"
OBS_TRUE_A = "true_a"  # simulate_pics: the true groups of synthetic PICs
OBS_TRUE_B = "true_b"
# ... and written by them
PIC_EXPECTED = "pic_expected"  # layers pic_expected, pic_expected_a, pic_expected_b; uns
UNS_PIC_INTERACTION = "pic_interaction"
OBS_PIC_DOUBLET_LLR = "pic_doublet_llr"
OBS_PIC_DOUBLET_P = "pic_doublet_p"
OBS_PIC_IS_DOUBLET = "pic_is_doublet"
OBS_PIC_TRIPLET_LLR = "pic_triplet_llr"
OBS_PIC_TRIPLET_P = "pic_triplet_p"
OBS_PIC_TRIPLET_SIDE = "pic_triplet_side"
OBS_PIC_TRIPLET_GROUPS = "pic_triplet_groups"
OBS_PIC_IS_TRIPLET = "pic_is_triplet"
UNS_PIC_QC = "pic_qc"
UNS_PIC_PAIR_TEST = "pic_pair_abundance"
#: the uns records of the steps after deconvolve (a new deconvolution drops them; none may take
#: another's key)
UNS_PIC_STEPS = (PIC_EXPECTED, UNS_PIC_INTERACTION, UNS_PIC_QC, UNS_PIC_PAIR_TEST)

# highly_variable_genes (gpu_sc/preprocessing/_hvg.py)
UNS_HVG = "hvg"
VAR_HIGHLY_VARIABLE = "highly_variable"
VAR_MEANS = "means"
VAR_DISPERSIONS = "dispersions"
VAR_DISPERSIONS_NORM = "dispersions_norm"
VAR_VARIANCES = "variances"
VAR_VARIANCES_NORM = "variances_norm"
VAR_HVG_RANK = "highly_variable_rank"
VAR_HVG_NBATCHES = "highly_variable_nbatches"
VAR_HVG_INTERSECTION = "highly_variable_intersection"

# scale (gpu_sc/preprocessing/_scale.py): var columns, named after the mask as scanpy does
VAR_SCALE_MEAN = "mean"
VAR_SCALE_STD = "std"


def scale_mask_keys(mask_name: str | None) -> tuple[str, str]:
    """(mean, std) var columns for scale with mask_obs: an obs column name or None (an array)."""
    if mask_name is None:
        return "mean with mask", "std with mask"
    return f"mean of {mask_name}", f"std of {mask_name}"


# pca (gpu_sc/preprocessing/_pca.py): defaults; key_added replaces all three
OBSM_PCA = "X_pca"
VARM_PCS = "PCs"
UNS_PCA = "pca"


def pca_keys(key_added: str | None) -> tuple[str, str, str]:
    """(obsm, varm, uns) keys pca writes: scanpy's defaults, or key_added for all three."""
    return (OBSM_PCA, VARM_PCS, UNS_PCA) if key_added is None else (key_added,) * 3


# harmony_integrate (gpu_sc/preprocessing/_harmony.py): scanpy's default output key
OBSM_PCA_HARMONY = "X_pca_harmony"


# neighbors (gpu_sc/preprocessing/_neighbors.py): defaults; key_added gives
# '{key}_distances', '{key}_connectivities' and uns[key]
OBSP_DISTANCES = "distances"
OBSP_CONNECTIVITIES = "connectivities"
UNS_NEIGHBORS = "neighbors"


def neighbors_keys(key_added: str | None) -> tuple[str, str, str]:
    """(distances obsp, connectivities obsp, uns) keys neighbors writes, as scanpy names them."""
    if key_added is None:
        return OBSP_DISTANCES, OBSP_CONNECTIVITIES, UNS_NEIGHBORS
    return f"{key_added}_{OBSP_DISTANCES}", f"{key_added}_{OBSP_CONNECTIVITIES}", key_added
