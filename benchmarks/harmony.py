"""gsc.pp.harmony_integrate against harmonypy (the function scanpy's external wrapper calls), in
the same run, on two real batches.

    python benchmarks/harmony.py --cells 100000 \
        --out benchmarks/results/cpu-harmony-100k-$(date +%F).jsonl

The batches are the two bundled PBMC runs of different 10x chemistries (pbmc4k_half, v2; and
pbmc68k_reduced, v1) on their 765 shared genes, each resampled (`gsc.datasets.resample`) to half
of `--cells`; normalize_total, log1p and a `--comps`-component PCA with gsc, then both
Harmonies on the same float64 embedding and seed. Rows: each library's time, the largest
difference between the two corrected embeddings, the smallest per-component correlation, and
batch mixing (iLISI over batches, harmonypy's compute_lisi, perplexity 30; 1 = unmixed, 2 =
fully mixed) and cell-type LISI (cLISI over the source's cell types; near 1 = types kept apart)
before and after, on at most `--lisi-cells` cells.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import PACKAGES, cpu_name, jsonl_rows, versions


def two_batches(n_cells: int, seed: int) -> ad.AnnData:
    """Two real PBMC runs on their shared genes, resampled, with obs 'batch' and 'cell_type'."""
    a, b = gsc.datasets.pbmc4k_half(), gsc.datasets.pbmc68k_reduced()
    genes = a.var_names.intersection(b.var_names)
    parts = []
    for name, src, labels in (("pbmc4k", a, "Annotation"), ("pbmc68k", b, "bulk_labels")):
        n = n_cells // 2 if name == "pbmc4k" else n_cells - n_cells // 2
        part = gsc.datasets.resample(src[:, genes].copy(), n, seed=seed)
        part.obs = pd.DataFrame({"batch": name, "cell_type": part.obs[labels].astype(str).to_numpy()},
                                index=[f"{name}-{i}" for i in range(part.n_obs)])
        parts.append(part)
    out = ad.concat(parts)
    out.obs["batch"] = out.obs["batch"].astype("category")
    return out


def lisi(z: np.ndarray, obs: pd.DataFrame, n_max: int, seed: int) -> dict:
    from harmonypy.lisi import compute_lisi

    rows = np.random.default_rng(seed).permutation(len(z))[:n_max]
    got = compute_lisi(z[rows], obs.iloc[rows].reset_index(drop=True), ["batch", "cell_type"])
    return {"ilisi": float(np.median(got[:, 0])), "clisi": float(np.median(got[:, 1]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--comps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lisi-cells", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import harmonypy

    x = two_batches(args.cells, args.seed)
    gsc.pp.normalize_total(x)
    gsc.pp.log1p(x)
    gsc.pp.pca(x, n_comps=args.comps)
    z = np.asarray(x.obsm["X_pca"], dtype=np.float64)

    t0 = time.perf_counter()
    gsc.pp.harmony_integrate(x, "batch", random_state=args.seed)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = harmonypy.run_harmony(z, x.obs, "batch", random_state=args.seed, verbose=False)
    theirs = time.perf_counter() - t0
    ref_z = np.asarray(ref.Z_corr).T if ref.Z_corr.shape[0] != z.shape[0] else np.asarray(ref.Z_corr)
    got = x.obsm["X_pca_harmony"]
    corr = min(np.corrcoef(got[:, j], ref_z[:, j])[0, 1] for j in range(z.shape[1]))
    row = {
        "step": "harmony_integrate", "cells": x.n_obs, "genes": x.n_vars, "comps": args.comps,
        "seconds": ours, "reference_seconds": theirs, "speedup": theirs / ours,
        "max_abs_diff": float(np.abs(got - ref_z).max()), "min_component_corr": float(corr),
        "harmony_iterations": len(ref.objective_harmony) - 1,
        "lisi_before": lisi(z, x.obs, args.lisi_cells, args.seed),
        "lisi_ours": lisi(got, x.obs, args.lisi_cells, args.seed),
        "lisi_harmonypy": lisi(ref_z, x.obs, args.lisi_cells, args.seed),
        "backend": "cpu", "cpu": cpu_name(), "versions": versions((*PACKAGES, "harmonypy")),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    print(row)
    with jsonl_rows(args.out) as emit:
        emit(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
