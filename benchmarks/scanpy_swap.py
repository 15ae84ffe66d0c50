"""A scanpy user's swap, key by key: scanpy's tutorial workflow run twice from the same counts,
once with scanpy (`sc.pp`, `sc.tl`) and once with gpu_sc (`gsc.pp`, `gsc.tl`), the two AnnData
objects diffed after every step: X and the layers (format, dtype, stored values, explicit zeros,
values), obs and var (columns, their order, dtypes, values), uns (keys, nested key order, types,
values), obsm, varm, obsp and raw.

    python3 benchmarks/scanpy_swap.py --out benchmarks/results/scanpy-swap-pbmc4k-$(date +%F).jsonl
    python3 benchmarks/scanpy_swap.py --dataset counts.h5ad   # or a 10x .h5: data of your own

Each step runs on each library's own previous result (the "chain", as a user's script runs) and,
where those two inputs differ, gpu_sc also on scanpy's previous result ("same input"), so that a
difference of the step is told from one carried over (where they are the same, the chain's
differences are the step's, and `same_input_*` repeats them). Floats count as equal within `--rtol` of
the reference's largest magnitude (float32 results round differently in another summation
order); everything else must be identical. One JSON row per step: each comparison's differences
(at most 20, each naming its key, with the largest absolute and relative difference) and both
libraries' seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import jsonl_rows, versions

MAX_LISTED = 20


# --------------------------------------------------------------------------- the diff


def _array_diff(key: str, a, b, rtol: float, implicit: int = 0) -> list[str]:
    """Differences of two arrays (dense or sparse) at `key`: kind, dtype, shape, sparsity, values.
    `implicit`: zeros left out of `a` and `b` that both hold (counted among the values)."""
    if sp.issparse(a) != sp.issparse(b) or type(a).__name__ != type(b).__name__:
        return [f"{key}: type {type(a).__name__} vs {type(b).__name__}"]
    if a.dtype != b.dtype:
        return [f"{key}: dtype {a.dtype} vs {b.dtype}"]
    if a.shape != b.shape:
        return [f"{key}: shape {a.shape} vs {b.shape}"]
    out = []
    if sp.issparse(a):
        if a.format != b.format:
            return [f"{key}: format {a.format} vs {b.format}"]
        if a.nnz != b.nnz:
            out.append(f"{key}: {a.nnz} vs {b.nnz} stored values ({int((a.data == 0).sum())} vs "
                       f"{int((b.data == 0).sum())} explicit zeros)")  # fmt: skip
        if a.nnz == b.nnz and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices):
            # the same stored places: their values alone, not two dense copies of a full-width matrix
            return out + _array_diff(key, a.data, b.data, rtol, implicit=a.shape[0] * a.shape[1] - a.nnz)
        a, b = a.toarray(), b.toarray()
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.names:  # record arrays (rank_genes_groups): field by field
        return out + [d for f in a.dtype.names for d in _array_diff(f"{key}.{f}", a[f], b[f], rtol)]
    if a.dtype.kind not in "fc":
        differ = a != b
        if a.dtype.kind == "O":  # missing entries (a filtered ranking's NaN names) agree
            differ &= ~(pd.isna(a) & pd.isna(b))
        if np.any(differ):
            out.append(f"{key}: {int(np.sum(differ))} of {a.size + implicit} values differ")
        return out
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        out.append(f"{key}: NaN at {int((nan_a != nan_b).sum())} places of one only")
    both = ~(nan_a | nan_b)
    if both.any():
        gap = np.abs(a[both].astype(np.float64) - b[both])
        scale = float(np.abs(a[both]).max()) or 1.0
        worst = float(gap.max())
        if worst > rtol * scale:
            n_off, n_all = int((gap > rtol * scale).sum()), int(both.sum()) + implicit
            out.append(f"{key}: {n_off} of {n_all} values beyond {rtol:g} x max |value| ({scale:.3g}); "
                       f"max abs {worst:.3g}, rel {worst / scale:.3g}")  # fmt: skip
    return out


def _value_diff(key: str, a, b, rtol: float) -> list[str]:
    """Differences of any two values: mappings by key and key order, frames, arrays, scalars."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return [f"{key}: type {type(a).__name__} vs {type(b).__name__}"]
        out = [] if list(a) == list(b) else [f"{key}: keys {list(a)} vs {list(b)}"]
        return out + [d for k in a if k in b for d in _value_diff(f"{key}[{k!r}]", a[k], b[k], rtol)]
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        return _frame_diff(key, a, b, rtol)
    if hasattr(a, "shape") and hasattr(b, "shape"):
        return _array_diff(key, a, b, rtol)
    if type(a) is not type(b):
        return [f"{key}: type {type(a).__name__} vs {type(b).__name__} ({a!r} vs {b!r})"]
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return [f"{key}: length {len(a)} vs {len(b)}"]
        return [d for i, (u, v) in enumerate(zip(a, b, strict=True)) for d in _value_diff(f"{key}[{i}]", u, v, rtol)]
    if isinstance(a, float) and not (a == b or abs(a - b) <= rtol * max(abs(a), abs(b))):
        return [f"{key}: {a!r} vs {b!r}"]
    if not isinstance(a, float) and a != b:
        return [f"{key}: {a!r} vs {b!r}"]
    return []


def _frame_diff(key: str, a, b, rtol: float) -> list[str]:
    if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)):
        return [f"{key}: type {type(a).__name__} vs {type(b).__name__}"]
    if list(a.columns) != list(b.columns):
        return [f"{key}: columns {list(a.columns)} vs {list(b.columns)}"]
    if not a.index.equals(b.index):
        return [f"{key}: index differs"]
    out = []
    for col in a.columns:
        u, v = a[col], b[col]
        if u.dtype != v.dtype:
            out.append(f"{key}[{col!r}]: dtype {u.dtype} vs {v.dtype}")
        elif isinstance(u.dtype, pd.CategoricalDtype):
            if not u.equals(v) or list(u.cat.categories) != list(v.cat.categories):
                out.append(f"{key}[{col!r}]: {int((u.astype(str) != v.astype(str)).sum())} of {len(u)} differ")
        elif u.dtype.kind in "fc":
            out += _array_diff(f"{key}[{col!r}]", u.to_numpy(), v.to_numpy(), rtol)
        elif not u.equals(v):
            out.append(f"{key}[{col!r}]: {int((u != v).sum())} of {len(u)} differ")
    return out


def anndata_diff(a, b, rtol: float) -> list[str]:
    """Every difference between AnnData `a` (the reference) and `b`."""
    out = [] if a.shape == b.shape else [f"shape {a.shape} vs {b.shape}"]
    if out:
        return out
    out += _frame_diff("obs", a.obs, b.obs, rtol) + _frame_diff("var", a.var, b.var, rtol)
    out += _value_diff("X", a.X, b.X, rtol)
    for name in ("layers", "obsm", "varm", "obsp", "uns"):
        out += _value_diff(name, dict(getattr(a, name)), dict(getattr(b, name)), rtol)
    if (a.raw is None) != (b.raw is None):
        out.append(f"raw: {a.raw is None} vs {b.raw is None}")
    elif a.raw is not None:
        out += _frame_diff("raw.var", a.raw.var, b.raw.var, rtol) + _value_diff("raw.X", a.raw.X, b.raw.X, rtol)
    return out


# --------------------------------------------------------------------------- the workflow


def _n_top(a) -> int:
    return min(2000, a.n_vars // 4)


def _genes(a, n: int, seed: int) -> list[str]:
    """`n` genes of the full gene list (raw where kept), fixed by `seed`."""
    names = (a.raw.var_names if a.raw is not None else a.var_names).to_numpy()
    return list(np.random.default_rng(seed).choice(names, size=min(n, names.size), replace=False))


def _subset_hvg(m, a, p):
    a.raw = a
    return a[:, a.var["highly_variable"].to_numpy()].copy()


# (name, step(library, adata, params) -> a new AnnData or None for in place); `library` is
# scanpy or gpu_sc, each with its pp and tl
STEPS: list[tuple[str, Callable]] = [
    ("calculate_qc_metrics", lambda m, a, p: m.pp.calculate_qc_metrics(a, qc_vars=["mt"], inplace=True)),
    ("filter_cells", lambda m, a, p: m.pp.filter_cells(a, min_genes=p["min_genes"])),
    ("filter_genes", lambda m, a, p: m.pp.filter_genes(a, min_cells=3)),
    ("scrublet", lambda m, a, p: m.pp.scrublet(a, random_state=0)),
    ("keep counts", lambda m, a, p: a.layers.__setitem__("counts", a.X.copy())),
    ("normalize_total", lambda m, a, p: m.pp.normalize_total(a, target_sum=1e4)),
    ("log1p", lambda m, a, p: m.pp.log1p(a)),
    ("hvg cell_ranger", lambda m, a, p: m.pp.highly_variable_genes(a, flavor="cell_ranger", n_top_genes=_n_top(a))),
    ("hvg seurat_v3", lambda m, a, p: m.pp.highly_variable_genes(a, flavor="seurat_v3", layer="counts",
                                                                 n_top_genes=_n_top(a))),
    ("hvg seurat batch_key", lambda m, a, p: m.pp.highly_variable_genes(a, n_top_genes=_n_top(a), batch_key="half")),
    ("hvg seurat", lambda m, a, p: m.pp.highly_variable_genes(a, n_top_genes=_n_top(a))),
    ("raw and HVG subset", _subset_hvg),
    ("regress_out", lambda m, a, p: m.pp.regress_out(a, ["total_counts", "pct_counts_mt"])),
    ("scale", lambda m, a, p: m.pp.scale(a, max_value=10)),
    ("pca", lambda m, a, p: m.pp.pca(a, n_comps=min(50, a.n_vars - 1))),
    ("neighbors", lambda m, a, p: m.pp.neighbors(a, n_neighbors=15, n_pcs=min(40, a.obsm["X_pca"].shape[1]))),
    ("umap", lambda m, a, p: m.tl.umap(a)),
    ("leiden", lambda m, a, p: m.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False)),
    ("rank_genes_groups t-test", lambda m, a, p: m.tl.rank_genes_groups(a, "leiden", method="t-test")),
    ("rank_genes_groups wilcoxon", lambda m, a, p: m.tl.rank_genes_groups(a, "leiden", method="wilcoxon")),
    ("filter_rank_genes_groups", lambda m, a, p: m.tl.filter_rank_genes_groups(a)),
    ("dendrogram", lambda m, a, p: m.tl.dendrogram(a, "leiden")),
    ("score_genes", lambda m, a, p: m.tl.score_genes(a, _genes(a, 50, 0))),
    ("score_genes_cell_cycle", lambda m, a, p: m.tl.score_genes_cell_cycle(
        a, s_genes=_genes(a, 12, 1), g2m_genes=_genes(a, 12, 2))),
    ("combat", lambda m, a, p: m.pp.combat(a, "half")),
]  # fmt: skip


_BUNDLED = ("pbmc4k_half", "pbmc68k_reduced")


def _counts(dataset: str):
    """A bundled dataset by name, or counts from a file: .h5ad, or a 10x .h5."""
    if dataset in _BUNDLED:
        a = getattr(gsc.datasets, dataset)()
    else:
        import scanpy as sc

        a = sc.read_10x_h5(dataset) if dataset.endswith(".h5") else sc.read_h5ad(dataset)
        a.var_names_make_unique()
    a.var["mt"] = a.var_names.str.contains(r"(?:^|_)(?:MT|mt)-")  # a barnyard's hg19_MT- / mm10_mt- too
    a.obs["half"] = pd.Categorical(np.where(np.arange(a.n_obs) % 2, "a", "b"))  # a batch column
    return a


def _call(step, lib, a, params):
    """(the AnnData after the step, seconds, error text or None); `a` is the step's own copy."""
    t0 = time.perf_counter()
    try:
        out = step(lib, a, params)
    except Exception as e:  # reported, as a user would meet it
        return None, time.perf_counter() - t0, f"{type(e).__name__}: {e}"[:300]
    return (a if out is None else out), time.perf_counter() - t0, None


def run(dataset: str, steps: list[str] | None, *, min_genes: int, rtol: float, emit=None, log=print) -> list[dict]:
    import scanpy as sc

    params = {"min_genes": min_genes}
    ref = ours = _counts(dataset)
    rows = []
    for name, step in STEPS:
        if steps is not None and name not in steps:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new_ref, t_ref, err_ref = _call(step, sc, ref.copy(), params)
            new_ours, t_ours, err_ours = _call(step, gsc, ours.copy(), params)
            same_input = not anndata_diff(ref, ours, 0.0)
            alone = None if same_input else _call(step, gsc, ref.copy(), params)
        row = {"step": name, "dataset": dataset, "shape": None if new_ref is None else list(new_ref.shape),
               "seconds_scanpy": round(t_ref, 3), "seconds_gpu_sc": round(t_ours, 3),
               "errors": {"scanpy": err_ref, "gpu_sc": err_ours}, "inputs_identical": same_input}  # fmt: skip
        for key, b in (("chain", new_ours), ("same_input", None if alone is None else alone[0])):
            if key == "same_input" and same_input:  # the chain's inputs were scanpy's: its differences are the step's
                row["same_input_n_differences"] = row["chain_n_differences"]
                row["same_input_differences"] = row["chain_differences"]
                continue
            diffs = ["error"] if new_ref is None or b is None else anndata_diff(new_ref, b, rtol)
            row[f"{key}_n_differences"] = len(diffs)
            row[f"{key}_differences"] = diffs[:MAX_LISTED]
        rows.append(row)
        if emit is not None:
            emit(row)
        same = row.get("same_input_n_differences", "=")
        log(f"{name:28s} chain {row['chain_n_differences']:3d}  same input {same!s:>3}  "
            f"scanpy {t_ref:6.2f} s  gpu_sc {t_ours:6.2f} s")
        if new_ref is None or new_ours is None:
            log(f"  stopped: {row['errors']}")
            break
        ref, ours = new_ref, new_ours
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="pbmc4k_half",
                        help=f"one of {', '.join(_BUNDLED)} (bundled), or a path to raw counts: .h5ad, or a 10x .h5")
    parser.add_argument("--steps", default=None, help="comma-separated names of STEPS (default all)")
    parser.add_argument("--min-genes", type=int, default=200, help="filter_cells' min_genes")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    if args.dataset not in _BUNDLED and not Path(args.dataset).is_file():
        parser.error(f"--dataset: {args.dataset!r} is neither a bundled dataset ({', '.join(_BUNDLED)}) nor a file")
    steps = None if args.steps is None else args.steps.split(",")
    unknown = sorted(set(steps or ()) - {name for name, _ in STEPS})
    if unknown:
        parser.error(f"--steps: unknown {unknown}; the steps are {[name for name, _ in STEPS]}")
    known = versions()
    with jsonl_rows(args.out, default=str) as emit:
        run(args.dataset, steps, min_genes=args.min_genes, rtol=args.rtol,
            emit=lambda row: emit({**row, "rtol": args.rtol, "versions": known}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
