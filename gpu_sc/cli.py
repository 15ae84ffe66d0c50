"""The ``gpu-sc`` command line.

``gpu-sc run IN.h5ad -o OUT.h5ad --steps qc,filter,normalize,log1p`` runs preprocessing steps
on a file; ``gpu-sc demo`` runs them on a bundled real dataset and prints a summary.

Every step is an entry of :data:`STEPS` (name -> function(adata, args)) that calls the public
``gsc.pp`` API; adding a step means adding one function and one entry.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

import gpu_sc as gsc

PERCENT_TOP = (50, 100, 200, 500)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --- steps -------------------------------------------------------------------------------------


def _qc(adata: AnnData, args: argparse.Namespace) -> None:
    if args.qc_vars is None:  # default: mitochondrial genes, when the data has any
        adata.var["mt"] = adata.var_names.str.startswith(("MT-", "mt-"))
        qc_vars = ["mt"] if adata.var["mt"].any() else []
    else:
        qc_vars = [v for v in args.qc_vars.split(",") if v]
    percent_top = [n for n in PERCENT_TOP if n <= adata.n_vars]  # ranks must not exceed #genes
    gsc.pp.calculate_qc_metrics(adata, qc_vars=qc_vars, percent_top=percent_top, inplace=True)


def _filter(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.filter_cells(adata, min_genes=args.min_genes)
    gsc.pp.filter_genes(adata, min_cells=args.min_cells)


def _normalize(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.normalize_total(adata, target_sum=args.target_sum)


def _log1p(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.log1p(adata)


def _hvg(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.highly_variable_genes(adata, n_top_genes=min(args.n_top_genes, adata.n_vars))


def _scale(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.scale(adata, max_value=10)


def _pca(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.pca(adata, n_comps=min(args.n_comps, min(adata.shape) - 1))


def _neighbors(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.neighbors(adata, n_neighbors=args.n_neighbors)


def _umap(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.tl.umap(adata, random_state=0)


def _leiden(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.tl.leiden(adata, resolution=args.resolution, flavor="igraph", n_iterations=2,
                  directed=False, random_state=0)  # fmt: skip


STEPS: dict[str, Callable[[AnnData, argparse.Namespace], None]] = {
    "qc": _qc,
    "filter": _filter,
    "normalize": _normalize,
    "log1p": _log1p,
    "hvg": _hvg,
    "scale": _scale,
    "pca": _pca,
    "neighbors": _neighbors,
    "umap": _umap,
    "leiden": _leiden,
}
DEFAULT_STEPS = "qc,filter,normalize,log1p"
DEMO_STEPS = ["qc", "filter", "normalize", "log1p", "hvg", "pca", "neighbors"]
DEMO_GRAPH_TOOLS = ["leiden", "umap"]  # need scanpy + igraph (the `tools` extra)


def _graph_tools_available() -> bool:
    try:
        import igraph  # noqa: F401
        import scanpy  # noqa: F401
    except ImportError:
        return False
    return True


def parse_steps(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        what = f"unknown step {unknown[0]!r}" if unknown else "no steps given"
        raise CliError(f"{what}; valid steps: {', '.join(STEPS)}")
    return names


# --- pipeline ----------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    from gpu_sc._backend import gpu_available

    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise CliError(
            "--device gpu: no usable GPU (needs an NVIDIA GPU and CuPy: "
            "pip install \"gpu_sc[cuda13]\" or \"gpu_sc[cuda12]\"); use --device cpu"
        )
    return device


def backend_description(device: str) -> str:
    if device == "cpu":
        return "cpu (NumPy/SciPy/Numba)"
    import cupy as cp

    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return f"gpu (CuPy {cp.__version__}, {name})"


def _sync(device: str) -> None:
    """Wait for queued GPU work, so wall times are honest."""
    if device == "gpu":
        import cupy as cp

        cp.cuda.Device().synchronize()


def shape_text(adata: AnnData) -> str:
    return f"{adata.n_obs:,} cells x {adata.n_vars:,} genes"


def run_pipeline(adata: AnnData, steps: list[str], args: argparse.Namespace, device: str) -> dict[str, float]:
    """Run `steps` in order on `adata` (in place, on `device`); returns seconds per step."""
    if device == "gpu":
        gsc.get.to_gpu(adata)
    times = {}
    for i, name in enumerate(steps, 1):
        t0 = time.perf_counter()
        STEPS[name](adata, args)
        _sync(device)
        times[name] = time.perf_counter() - t0
        print(f"[{i}/{len(steps)}] {name:<10}{times[name]:6.2f} s  {shape_text(adata)}")
    if device == "gpu":
        gsc.get.to_cpu(adata)
    return times


def read_h5ad(path: str) -> AnnData:
    import anndata as ad

    if not Path(path).is_file():
        raise CliError(f"input file not found: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as e:  # not HDF5, not an AnnData, ...
        raise CliError(f"cannot read {path} as h5ad: {e}") from e


def write_h5ad(adata: AnnData, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)


# --- commands ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> None:
    steps = parse_steps(args.steps)
    device = resolve_device(args.device)
    adata = read_h5ad(args.input)
    print(f"read {args.input}: {shape_text(adata)}; backend {backend_description(device)}")
    times = run_pipeline(adata, steps, args, device)
    write_h5ad(adata, args.output)
    print(f"wrote {args.output}: {shape_text(adata)} ({sum(times.values()):.2f} s in steps)")


def cmd_demo(args: argparse.Namespace) -> None:
    from gpu_sc.datasets import pbmc68k_reduced

    device = resolve_device(args.device)
    adata = pbmc68k_reduced()
    before = shape_text(adata)
    print(f"dataset: pbmc68k_reduced (bundled, raw counts): {before}")
    backend = backend_description(device)
    print(f"backend: {backend}")
    steps = DEMO_STEPS + (DEMO_GRAPH_TOOLS if _graph_tools_available() else [])
    if len(steps) == len(DEMO_STEPS):
        print("leiden and umap skipped: they need scanpy and igraph (pip install 'gpu_sc[tools]')")
    times = run_pipeline(adata, steps, args, device)

    x = adata.X
    mean = np.asarray(x.mean(axis=0)).ravel() if sp.issparse(x) else np.asarray(x).mean(axis=0)
    top = np.argsort(-mean, kind="stable")[:5]
    summary = {
        "cells x genes before": before,
        "cells x genes after": shape_text(adata),
        "median total counts": f"{np.median(adata.obs['total_counts']):,.1f}",
        "median genes per cell": f"{np.median(adata.obs['n_genes_by_counts']):,.1f}",
        "top 5 genes (mean log1p)": ", ".join(f"{adata.var_names[j]} {mean[j]:.3f}" for j in top),
        "highly variable genes": f"{int(adata.var['highly_variable'].sum()):,}",
        "PCA variance ratio, PC1-5": ", ".join(
            f"{v:.3f}" for v in np.asarray(adata.uns["pca"]["variance_ratio"])[:5]
        ),
        "wall time per step": ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
        + f" (total {sum(times.values()):.2f} s)",
        "backend": backend,
    }
    if "leiden" in adata.obs:
        sizes = adata.obs["leiden"].value_counts()
        summary["leiden clusters"] = f"{len(sizes)} (largest {sizes.iloc[0]}, smallest {sizes.iloc[-1]} cells)"
    if "X_umap" in adata.obsm and args.plot:
        _plot_umap(adata, args.plot)
        summary["UMAP image"] = str(args.plot)
    print("summary")
    for label, value in summary.items():
        print(f"  {label + ':':<26}{value}")
    if args.output:
        write_h5ad(adata, args.output)
        print(f"wrote {args.output}")


def _plot_umap(adata: AnnData, path: str) -> None:
    """The demo's UMAP, coloured by Leiden cluster, as a PNG (matplotlib, no display needed)."""
    from matplotlib.figure import Figure

    xy = np.asarray(adata.obsm["X_umap"])
    codes = adata.obs["leiden"].cat.codes.to_numpy() if "leiden" in adata.obs else 0
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="tab20", s=6, linewidths=0)
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2", xticks=[], yticks=[],
           title=f"gpu_sc demo: {adata.n_obs} PBMCs, Leiden clusters")  # fmt: skip
    fig.savefig(path, dpi=120)


# --- argument parsing ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-sc", description="scanpy's preprocessing on NVIDIA GPUs, with a CPU fallback."
    )
    parser.add_argument("--version", action="version", version=f"gpu-sc {gsc.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,demo}")

    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                        help="where to compute (default: auto = gpu when one is usable)")  # fmt: skip
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--min-genes", type=int, default=200, help="filter: min genes per cell (200)")
    opts.add_argument("--min-cells", type=int, default=3, help="filter: min cells per gene (3)")
    opts.add_argument("--target-sum", type=float, default=None,
                      help="normalize: counts per cell after normalization (default: median)")  # fmt: skip
    opts.add_argument("--n-top-genes", type=int, default=2000,
                      help="hvg: number of highly variable genes (2000)")  # fmt: skip
    opts.add_argument("--n-comps", type=int, default=50, help="pca: number of components (50)")
    opts.add_argument("--n-neighbors", type=int, default=15, help="neighbors: k (15)")
    opts.add_argument("--resolution", type=float, default=1.0, help="leiden: resolution (1.0)")
    opts.add_argument("--qc-vars", default=None,
                      help="qc: comma-separated boolean var columns (default: 'mt' = MT-/mt- genes)")  # fmt: skip

    run = sub.add_parser("run", parents=[device, opts], help="run preprocessing steps on an h5ad file")
    run.add_argument("input", metavar="IN.h5ad")
    run.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    run.add_argument("--steps", default=DEFAULT_STEPS,
                     help=f"comma-separated, run in order; one of: {', '.join(STEPS)} (default: {DEFAULT_STEPS})")  # fmt: skip
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", parents=[device], help="run the pipeline on bundled PBMC data")
    demo.add_argument("-o", "--output", metavar="OUT.h5ad", default=None)
    demo.add_argument("--plot", metavar="UMAP.png", default="gpu-sc-demo-umap.png",
                      help="where to write the UMAP image ('' for none)")  # fmt: skip
    # the bundled data has only 765 genes, so the cell filter is far looser than scanpy's default
    demo.set_defaults(func=cmd_demo, min_genes=10, min_cells=3, target_sum=None, qc_vars=None,
                      n_top_genes=300, n_comps=30, n_neighbors=15, resolution=1.0)  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as e:
        if args.traceback:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if not isinstance(e, CliError):
            msg = f"{type(e).__name__}: {msg}"
        print(f"gpu-sc: error: {' '.join(str(msg).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
