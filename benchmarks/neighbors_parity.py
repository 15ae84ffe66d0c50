"""The neighbour graph against scanpy on real matrices outside the repository (issue 4's
done-when figures): kNN recall against a float64 brute force, the largest connectivity
difference from UMAP's fuzzy_simplicial_set on the same kNN (what sc.pp.neighbors computes
from it) and from scanpy's own graph, and the Leiden ARI between gpu_sc's pipeline and scanpy's.

    python3 benchmarks/neighbors_parity.py --data ../shared/data --out benchmarks/results/X.jsonl

tests/test_parity_shared.py::test_neighbors_and_leiden runs `measure` and asserts its figures.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score
from umap.umap_ import fuzzy_simplicial_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

import gpu_sc as gsc
from _common import cpu_name, jsonl_rows, versions

FILES = {
    "soupx_pbmc4k_half": "soupx_pbmc4k_half.h5ad",
    "copykat_tnbc_302": "copykat_tnbc_302.h5ad",
    "hgmm_1k_v3": "hgmm_1k_v3/filtered_feature_bc_matrix.h5",
}
LEIDEN = {"flavor": "igraph", "n_iterations": 2, "directed": False, "random_state": 0}
K = 15


def _prepared(path: Path) -> ad.AnnData:
    a = sc.read_10x_h5(path) if path.suffix == ".h5" else ad.read_h5ad(path)
    a.var_names_make_unique()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000, subset=True)
    sc.pp.pca(a, n_comps=30)
    return a


def _brute_kth(x: np.ndarray, metric: str):
    """float64 distances (self at +inf) and each row's distance to its (K-1)-th neighbour."""
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = np.maximum(1 - x @ x.T, 0)
    else:
        sq = (x * x).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0))
    np.fill_diagonal(d, np.inf)
    return d, np.sort(d, axis=1)[:, K - 2]


def measure(name: str, path: Path, metric: str) -> dict:
    ours = _prepared(path)
    ref = ours.copy()
    sc.pp.neighbors(ref, n_neighbors=K, metric=metric)
    gsc.pp.neighbors(ours, n_neighbors=K, metric=metric)
    sc.tl.leiden(ref, **LEIDEN)
    gsc.tl.leiden(ours, **LEIDEN)
    n = ours.n_obs
    # a canonical copy: scipy's sparse operators below sort their operands' indices in place,
    # which would reorder dist.data under the arrays taken from it
    dist = ours.obsp["distances"].tocsr(copy=True)
    dist.sort_indices()
    d, kth = _brute_kth(ours.obsm["X_pca"], metric)
    rows = np.repeat(np.arange(n), np.diff(dist.indptr))
    exact = d[rows, dist.indices]
    order = np.argsort(dist.data.reshape(n, K - 1), axis=1, kind="stable")
    ind = np.c_[np.arange(n), np.take_along_axis(dist.indices.reshape(n, K - 1), order, 1)]
    dd = np.c_[np.zeros(n), np.take_along_axis(dist.data.reshape(n, K - 1), order, 1)]
    umap_conn, _, _ = fuzzy_simplicial_set(sp.coo_matrix((n, 1)), K, None, None, knn_indices=ind,
                                           knn_dists=dd.astype(np.float32))  # fmt: skip
    conn = ours.obsp["connectivities"]
    same = ((dist != 0).astype(int) != (ref.obsp["distances"] != 0).astype(int)).tocoo()
    # scanpy ranks float32 distances (sklearn): where two candidates for the last place lie within
    # float32 rounding of a 50-term sum (a few ulps x sqrt(50)) it may keep either of them
    tie = 4 * np.finfo(np.float32).eps * np.sqrt(ours.obsm["X_pca"].shape[1])
    not_tied = np.abs(d[same.row, same.col] - kth[same.row]) > tie * kth[same.row]
    return {
        "dataset": name, "metric": metric, "n_cells": n, "n_neighbors": K,
        "neighbours_per_row": sorted(set(np.diff(dist.indptr).tolist())),
        # every listed neighbour within the true K - 1 nearest (ties at the last may go either way)
        "recall_vs_float64_brute": float(np.mean(exact <= kth[rows] * (1 + 1e-9))),
        # stored float32, as scanpy stores them
        "max_abs_dist_err_vs_float64_brute": float(np.abs(dist.data - exact).max()),
        "dist_within_1e-6_of_float64_brute": bool(np.all(np.abs(dist.data - exact) <= 1e-6 + 1e-6 * exact)),
        "same_neighbours_as_scanpy": bool(not_tied.sum() == 0),
        "n_neighbours_differing_at_float32_ties": int(same.nnz - not_tied.sum()),
        "max_abs_conn_diff_vs_umap_same_knn": float(abs(conn - umap_conn.tocsr()).max()),
        "max_abs_conn_diff_vs_scanpy_graph": float(abs(conn - ref.obsp["connectivities"]).max()),
        "max_abs_dist_diff_vs_scanpy": float(abs(dist - ref.obsp["distances"]).max()),
        "leiden_ari_vs_scanpy": float(adjusted_rand_score(ours.obs["leiden"], ref.obs["leiden"])),
        "n_clusters": [int(ours.obs["leiden"].nunique()), int(ref.obs["leiden"].nunique())],
        "device": cpu_name(), "versions": versions(),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with the files in FILES")
    ap.add_argument("--out", type=Path, default=None, help="JSON-lines file to append to")
    args = ap.parse_args()
    with warnings.catch_warnings(), jsonl_rows(args.out) as emit:
        warnings.simplefilter("ignore")
        for name, rel in FILES.items():
            if not (args.data / rel).exists():
                print(f"{name}: {args.data / rel} not found, skipped")
                continue
            for metric in ("euclidean", "cosine"):
                row = measure(name, args.data / rel, metric)
                emit(row)
                print({k: v for k, v in row.items() if k not in ("versions", "device")})


if __name__ == "__main__":
    main()
