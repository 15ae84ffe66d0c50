"""The ``gpu-sc`` command line.

``gpu-sc run IN.h5ad -o OUT.h5ad --steps qc,filter,normalize,log1p`` runs preprocessing steps
on a file; ``gpu-sc demo`` runs them on a bundled real dataset, then deconvolves synthetic
PIC-seq doublets built from it, and prints a summary. ``gpu-sc pic --singlets S.h5ad --pics
P.h5ad --groupby KEY --a A1,A2 --b B1,B2 -o OUT.h5ad`` deconvolves PICs (``gsc.pic.deconvolve``).

Every step is an entry of :data:`STEPS` (name -> function(adata, args)) that calls the public
``gsc.pp`` API; adding a step means adding one function and one entry.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

import gpu_sc as gsc
from gpu_sc import _keys as K
from gpu_sc._validation import check_counts

PERCENT_TOP = (50, 100, 200, 500)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _int_from(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `low`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            msg = f"must be an integer of {low} or more, got {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = "integer"  # argparse names the type so in its 'invalid integer value' message
    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        msg = f"must be a finite number above 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


# --- steps -------------------------------------------------------------------------------------


def _qc_vars(args: argparse.Namespace) -> list[str] | None:
    """--qc-vars as a list; None: the default ('mt', where the data has MT-/mt- genes)."""
    return None if args.qc_vars is None else [v for v in args.qc_vars.split(",") if v]


def _mt_genes(adata: AnnData) -> np.ndarray:
    """The genes qc marks as 'mt': names starting MT- or mt-."""
    return adata.var_names.str.startswith(("MT-", "mt-"))


def _qc(adata: AnnData, args: argparse.Namespace) -> None:
    qc_vars = _qc_vars(args)
    # 'mt': MT-/mt- genes, made afresh by the default, where absent when --qc-vars names it
    if qc_vars is None or ("mt" in qc_vars and "mt" not in adata.var):
        adata.var["mt"] = _mt_genes(adata)
    if qc_vars is None:  # the default, when the data has any
        qc_vars = ["mt"] if adata.var["mt"].any() else []
    percent_top = [n for n in PERCENT_TOP if n <= adata.n_vars]  # ranks must not exceed #genes
    gsc.pp.calculate_qc_metrics(adata, qc_vars=qc_vars, percent_top=percent_top, inplace=True)


# columns a step makes that a later step's option may name
_STEP_VAR = {"hvg": ("highly_variable",)}
_STEP_OBS = {"leiden": ("leiden",), "scrublet": ("doublet_score", "predicted_doublet"), "filter": ("n_genes",)}


def _made_before(steps: list[str], step: str, made: dict) -> set:
    """The columns the steps before the first `step` (one of `steps`) make (`made`: _STEP_VAR or
    _STEP_OBS)."""
    return {col for s in steps[: steps.index(step)] for col in made.get(s, ())}


def _refuse_unknown(option: str, missing: list, frame, axis: str, note: str = "") -> None:
    """An option's column names that the input's obs / var lack: refused, naming its columns."""
    if missing:
        msg = (f"{option}: {', '.join(map(repr, missing))} not a column of the input's {axis} "
               f"(its columns: {', '.join(map(str, frame.columns)) or 'none'}){note}")
        raise CliError(msg)


def check_run_options(adata: AnnData, steps: list[str], args: argparse.Namespace) -> None:
    """Options that name the input's columns, or that a step cannot take with --chunk-rows,
    refused before the first step runs (not when their step comes, hours in)."""
    if "qc" in steps:  # boolean var columns ('mt' is made where absent)
        known = set(adata.var.columns) | _made_before(steps, "qc", _STEP_VAR) | {"mt"}
        missing = [v for v in _qc_vars(args) or [] if v not in known]
        _refuse_unknown("--qc-vars", missing, adata.var, "var", "; 'mt' marks MT-/mt- genes")
    users = [s for s in ("scrublet", "harmony") if s in steps]
    keys = _batch_keys(args)
    if "scrublet" in steps and len(keys) > 1:
        msg = f"step 'scrublet' takes one batch column; --batch-key gave {len(keys)} ({args.batch_key})."
        raise CliError(msg)
    if keys and users:
        first = min(users, key=steps.index)
        known = set(adata.obs.columns) | _made_before(steps, first, _STEP_OBS)
        missing = [k for k in keys if k not in known]
        _refuse_unknown("--batch-key", missing, adata.obs, "obs")
    if "scrublet" in steps and keys and keys[0] in adata.obs:
        before = steps[: steps.index("scrublet")]
        # the input's batches are scrublet's unless a step before remakes the column or drops cells
        if "filter" not in before and keys[0] not in _made_before(steps, "scrublet", _STEP_OBS):
            _check_scrublet_batches(adata.obs[keys[0]], keys[0])
    if "regress_out" in steps:  # with the columns the steps before it make
        before = steps[: steps.index("regress_out")]
        qc_made = _qc_columns(adata, steps, args) if "qc" in before else set()
        if qc_made is not None:  # (None: qc's columns unknown here; regress_out checks them when it runs)
            columns = set(adata.obs.columns) | _made_before(steps, "regress_out", _STEP_OBS) | qc_made
            _check_regress_keys(adata, args, columns, qc_ran="qc" in before)
    _check_counts_input(adata, steps)
    if "harmony" in steps and not keys:
        msg = "step 'harmony' corrects the PCA for batches: pass --batch-key with the obs column of batches."
        raise CliError(msg)
    # (the steps check none of this themselves: run_pipeline's other caller, demo, runs a fixed list)
    for step, needs in (("umap", "neighbors"), ("leiden", "neighbors"), ("markers", "leiden")):
        have = needs in (adata.uns if needs == "neighbors" else adata.obs)
        if step in steps and not have and needs not in steps[: steps.index(step)]:
            msg = (f"step {step!r} needs {'a neighbour graph' if needs == 'neighbors' else 'Leiden clusters'}, "
                   f"which the input lacks: put {needs} before it in --steps")  # fmt: skip
            raise CliError(msg)
    if args.chunk_rows is not None:
        if "scrublet" in steps:
            msg = ("step 'scrublet' needs the cells in memory (it simulates doublets and searches their "
                   "neighbours among all cells): drop --chunk-rows, or run scrublet apart")  # fmt: skip
            raise CliError(msg)
        if "markers" in steps and args.markers_method in ("wilcoxon", "logreg"):
            msg = (f"step 'markers' with --markers-method {args.markers_method} needs the cells in memory: "
                   "use --markers-method t-test with --chunk-rows, or drop --chunk-rows")  # fmt: skip
            raise CliError(msg)


def _check_counts_input(adata: AnnData, steps: list[str]) -> None:
    """normalize and log1p take the input as counts unless a step before them makes it other
    (scale, regress_out): negative values refused before the first step (log1p refused them only
    below -1 after normalising, and took the rest). With --chunk-rows this reads X once more."""
    counted = [s for s in steps if s in ("normalize", "log1p")]
    if not counted or any(s in ("scale", "regress_out") for s in steps[: steps.index(counted[0])]):
        return
    n_neg = check_counts(adata.X, step=f"the input's X (step {counted[0]!r} takes it as counts)",
                         negative_ok=True)  # (NaN, inf: refused)  # fmt: skip
    if n_neg:
        msg = (f"step {counted[0]!r} expects counts, and the input's X holds {n_neg:,} negative "
               f"value{'s' if n_neg != 1 else ''} "
               f"(scaled or centred data?): pass a file whose X is raw counts, or leave "
               f"{' and '.join(counted)} out of --steps")  # fmt: skip
        raise CliError(msg)


def _check_scrublet_batches(column, key: str) -> None:
    """scrublet's PCA per batch needs more cells than components (its default n_prin_comps, which
    the command line keeps), and every cell a batch: refused before the steps ahead of it run
    (when none of them drops cells or remakes the column)."""
    n_comps = inspect.signature(gsc.pp.scrublet).parameters["n_prin_comps"].default
    if column.isna().any():
        msg = (f"step 'scrublet' runs per --batch-key batch, and {key!r} has {int(column.isna().sum())} cells "
               "without a batch (NaN): give them one, or run without --batch-key")  # fmt: skip
        raise CliError(msg)
    counts = column.value_counts()
    small = counts[(counts > 0) & (counts <= n_comps)]  # (a categorical's unused categories hold no batch)
    if len(small):
        listed = ", ".join(f"{b!r}: {n}" for b, n in small.head(10).items())
        msg = (f"step 'scrublet' runs per --batch-key batch, and {key!r} has batches of {n_comps} cells or "
               f"fewer ({listed}); scrublet needs at least {n_comps + 1} cells a batch (its {n_comps} principal "
               "components): merge or drop those cells first, or run without --batch-key")  # fmt: skip
        raise CliError(msg)


def _batch_keys(args: argparse.Namespace) -> list[str]:
    """--batch-key as a list of column names (empty entries dropped)."""
    return [k for k in (args.batch_key or "").split(",") if k]


def _scrublet(adata: AnnData, args: argparse.Namespace) -> None:
    # on raw counts, before 'normalize'; per batch when --batch-key names one column (checked at start)
    keys = _batch_keys(args)
    gsc.pp.scrublet(adata, batch_key=keys[0] if keys else None)


def _filter(adata: AnnData, args: argparse.Namespace) -> None:
    before = shape_text(adata)
    gsc.pp.filter_cells(adata, min_genes=args.min_genes)
    gsc.pp.filter_genes(adata, min_cells=args.min_cells)
    if not (adata.n_obs and adata.n_vars):  # later steps would fail on it with their own words
        msg = (f"step 'filter' left {shape_text(adata)} of {before} (--min-genes {args.min_genes}, --min-cells "
               f"{args.min_cells}); lower them")  # fmt: skip
        raise CliError(msg)


def _normalize(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.normalize_total(adata, target_sum=args.target_sum)


def _log1p(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.log1p(adata)


def _hvg(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.highly_variable_genes(adata, n_top_genes=min(args.n_top_genes, adata.n_vars))


def _regress_keys(args: argparse.Namespace) -> list[str]:
    return [k for k in args.regress_keys.split(",") if k]


def _check_regress_keys(adata: AnnData, args: argparse.Namespace, columns, qc_ran: bool) -> None:
    """--regress-keys against the obs `columns` regress_out will find (`qc_ran`: the qc step
    made some of them, from `adata`'s genes)."""
    missing = [k for k in _regress_keys(args) if k not in columns]
    if not missing:
        return
    asked = _qc_vars(args)
    no_mt = (qc_ran and (asked is None or "mt" in asked)  # qc runs for MT genes and marks none
             and not _mt_genes(adata).any() and "pct_counts_mt" not in columns)
    if missing == ["pct_counts_mt"] and no_mt:
        msg = ("step 'regress_out': qc found no MT-/mt- genes, so obs has no 'pct_counts_mt'; "
               "pass --regress-keys total_counts (or other obs columns).")  # fmt: skip
        raise CliError(msg)
    where = ("neither in the input's obs nor made by the 'qc' step" if qc_ran else
             "not in the input's obs (the 'qc' step, put before regress_out, makes total_counts and pct_counts_mt)")
    msg = (f"--regress-keys: {', '.join(map(repr, missing))} {where}; obs columns by then: "
           f"{', '.join(map(str, sorted(columns))) or 'none'}")  # fmt: skip
    raise CliError(msg)


def _qc_columns(adata: AnnData, steps: list[str], args: argparse.Namespace) -> set | None:
    """The obs columns the qc step makes on `adata` (run on two of its cells: they follow the
    genes and --qc-vars, not the cells; var columns an earlier step makes stand in as False).
    None where the probe fails: the step itself will say why when it runs."""
    probe = adata[: min(2, adata.n_obs)].copy()
    for col in _made_before(steps, "qc", _STEP_VAR) - set(probe.var.columns):
        probe.var[col] = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _qc(probe, args)
    except Exception:  # any failure is the qc step's to report, in its turn
        return None
    return set(probe.obs.columns)


def _regress_out(adata: AnnData, args: argparse.Namespace) -> None:
    _check_regress_keys(adata, args, set(adata.obs.columns), qc_ran="total_counts" in adata.obs)
    gsc.pp.regress_out(adata, _regress_keys(args))


def _scale(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.scale(adata, max_value=10)


def _pca(adata: AnnData, args: argparse.Namespace) -> None:
    # at most one fewer than the cells and the genes PCA reads (the highly variable ones, as scanpy)
    n_genes = int(adata.var["highly_variable"].sum()) if "highly_variable" in adata.var else adata.n_vars
    n_comps = min(args.n_comps, min(adata.n_obs, n_genes) - 1)
    if n_comps < args.n_comps:
        print(f"pca: --n-comps {args.n_comps} is more than {adata.n_obs:,} cells and {n_genes:,} genes allow; "
              f"computing {n_comps}")  # fmt: skip
    gsc.pp.pca(adata, n_comps=n_comps)
    adata.obsm.pop(K.OBSM_PCA_HARMONY, None)  # a correction of the old PCA: 'neighbors' must not use it


def _neighbors(adata: AnnData, args: argparse.Namespace) -> None:
    rep = K.OBSM_PCA_HARMONY if K.OBSM_PCA_HARMONY in adata.obsm else None  # after the 'harmony' step
    gsc.pp.neighbors(adata, n_neighbors=args.n_neighbors, use_rep=rep)


def _harmony(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.pp.harmony_integrate(adata, _batch_keys(args))  # --batch-key given: check_run_options


def _umap(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.tl.umap(adata, random_state=0)


def _leiden(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.tl.leiden(adata, resolution=args.resolution, flavor="igraph", n_iterations=2,
                  directed=False, random_state=0)  # fmt: skip


def _markers(adata: AnnData, args: argparse.Namespace) -> None:
    gsc.tl.rank_genes_groups(adata, "leiden", use_raw=False, method=args.markers_method)


STEPS: dict[str, Callable[[AnnData, argparse.Namespace], None]] = {
    "qc": _qc,
    "filter": _filter,
    "normalize": _normalize,
    "log1p": _log1p,
    "hvg": _hvg,
    "scrublet": _scrublet,
    "regress_out": _regress_out,
    "scale": _scale,
    "pca": _pca,
    "harmony": _harmony,
    "neighbors": _neighbors,
    "umap": _umap,
    "leiden": _leiden,
    "markers": _markers,
}
DEFAULT_STEPS = "qc,filter,normalize,log1p"
DEMO_STEPS = ["qc", "filter", "normalize", "log1p", "hvg", "pca", "neighbors"]
DEMO_GRAPH_TOOLS = ["leiden", "umap", "markers"]  # need scanpy + igraph (the `tools` extra)


def _graph_tools_available() -> bool:
    try:  # scikit-learn too: scanpy needs it, and umap-learn imports it when umap first runs (an
        # already imported scanpy imports without it)
        import igraph  # noqa: F401
        import scanpy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def parse_steps(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not names:
        what = f"unknown step {unknown[0]!r}" if unknown else "no steps given"
        msg = f"{what}; valid steps: {', '.join(STEPS)}"
        raise CliError(msg)
    return names


# --- pipeline ----------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    from gpu_sc._backend import gpu_available

    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        msg = (
            "--device gpu: no usable GPU (needs an NVIDIA GPU and CuPy: "
            "pip install \"gpu_sc[cuda13]\" or \"gpu_sc[cuda12]\"); use --device cpu"
        )
        raise CliError(
            msg
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
        key = name if name not in times else f"{name} ({i})"  # a step run twice: both times kept
        times[key] = time.perf_counter() - t0
        print(f"[{i}/{len(steps)}] {name:<10}{times[key]:6.2f} s  {shape_text(adata)}")
    if device == "gpu":
        gsc.get.to_cpu(adata)
    return times


FORMATS = ("an .h5ad file, a 10x Cell Ranger .h5 (v2 or v3), a 10x matrix folder (v3: matrix.mtx.gz, "
           "features.tsv.gz, barcodes.tsv.gz; v2: matrix.mtx, genes.tsv, barcodes.tsv), a .zarr store or a .loom file")


def read_input(path: str) -> AnnData:
    """Read what a reanalysis starts from, chosen by content: h5ad, 10x h5 (v2/v3), a 10x
    matrix folder, zarr, loom (10x through scanpy's readers)."""
    import anndata as ad

    p = Path(path)
    if not path or not p.exists():
        msg = f"input file not found: {path!r}"
        raise CliError(msg)
    kind = _input_kind(p)
    try:
        if kind == "h5ad":
            return ad.read_h5ad(p)
        if kind == "zarr":
            return ad.read_zarr(p)
        if kind == "loom":
            try:
                import loompy  # noqa: F401  (anndata's loom reader needs it; no gpu_sc extra has it)
            except ImportError as e:
                msg = f"reading {path} (loom) needs loompy: pip install loompy"
                raise CliError(msg) from e
            return ad.io.read_loom(p) if hasattr(ad, "io") and hasattr(ad.io, "read_loom") else ad.read_loom(p)
        sc = _scanpy(path, kind)
        a = sc.read_10x_h5(p) if kind == "10x-h5" else sc.read_10x_mtx(p)
        a.var_names_make_unique()
        return a
    except CliError:
        raise
    except Exception as e:  # not HDF5, not an AnnData, a broken 10x file ...
        msg = f"cannot read {path} as {kind}: {e}; gpu-sc reads {FORMATS}"
        raise CliError(msg) from e


def _input_kind(p: Path) -> str:
    """'h5ad', '10x-h5', '10x-mtx', 'zarr' or 'loom', from what `p` holds; CliError otherwise."""
    if p.is_dir():
        names = {f.name for f in p.iterdir()}
        if names & {"matrix.mtx", "matrix.mtx.gz"}:
            return "10x-mtx"
        if names & {".zgroup", "zarr.json", ".zattrs"}:
            return "zarr"
    else:
        import h5py

        if h5py.is_hdf5(p):
            try:
                f = h5py.File(p, "r")
            except OSError as e:  # a truncated or damaged file
                msg = f"cannot read {p}: {e}; is the file complete (a copy or download cut short)?"
                raise CliError(msg) from e
            with f:
                if "X" in f or "obs" in f:
                    return "h5ad"
                if "row_attrs" in f and "col_attrs" in f:
                    return "loom"
                groups = [f[k] for k in f if isinstance(f[k], h5py.Group)]  # v3: 'matrix'; v2: a genome
                if any({"barcodes", "data", "indptr"} <= set(g) for g in groups):
                    return "10x-h5"
    msg = f"cannot read {p}: not a format gpu-sc knows; it reads {FORMATS}"
    raise CliError(msg)


def _scanpy(path: str, kind: str):
    try:
        import scanpy as sc
    except ImportError as e:
        msg = f"reading {path} ({kind}) needs scanpy's 10x reader: pip install 'gpu_sc[tools]'"
        raise CliError(msg) from e
    return sc


def read_h5ad_lazy(path: str, chunk_rows: int) -> tuple[AnnData, object]:
    """`path` with X, the layers and raw's X as Dask arrays of `chunk_rows`-row blocks read on
    demand (obs, var, uns, obsm, varm, obsp, varp in memory); returns (adata, the open HDF5 file
    to close)."""
    import anndata as ad
    import h5py

    if chunk_rows < 1:
        msg = f"--chunk-rows must be a positive number of cells, got {chunk_rows}"
        raise CliError(msg)
    if not Path(path).exists():
        msg = f"input file not found: {path}"
        raise CliError(msg)
    kind = _input_kind(Path(path))
    if kind != "h5ad":
        msg = f"--chunk-rows reads h5ad files only, and {path} is {kind}; convert it to h5ad or drop --chunk-rows"
        raise CliError(msg)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        msg = f"cannot read {path} as h5ad: {e}"
        raise CliError(msg) from e
    try:
        def lazy(elem):
            return ad.experimental.read_elem_lazy(elem, chunks=(chunk_rows, -1))

        eager = {k: ad.io.read_elem(f[k]) for k in ("obs", "var", "uns", "obsm", "varm", "obsp", "varp") if k in f}
        layers = {k: lazy(v) for k, v in f["layers"].items()} if "layers" in f else None
        raw = None
        if "raw" in f:  # written back with the rest (it was dropped)
            raw = {k: ad.io.read_elem(f["raw"][k]) for k in ("var", "varm") if k in f["raw"]}
            raw["X"] = lazy(f["raw"]["X"])
        adata = AnnData(X=lazy(f["X"]), layers=layers, raw=raw, **eager)
    except Exception as e:
        f.close()
        msg = f"cannot read {path} lazily as h5ad: {e}"
        raise CliError(msg) from e
    return adata, f


def check_output(path: str, flag: str = "-o", *, inputs=(), data: bool = True) -> None:
    """Refuse, before any work, an output path that cannot be written (`data`: an AnnData, so
    .h5ad, .zarr or no suffix): an existing folder (but a
    .zarr store, which is one and is replaced), a file where a .zarr store goes, a parent that is
    a file or that this user cannot write in, or one of the `inputs` ((what, path): a file read
    while the output is written)."""
    p = Path(path)
    if not path:
        msg = f"{flag} is empty; give a file name"
        raise CliError(msg)
    if path.endswith(("/", os.sep)) and not (data and p.suffix.lower() == ".zarr"):  # 'out/' -> a file 'out'
        msg = f"{flag} {path} names a folder; give a file name (e.g. {path}out{'' if not data else '.h5ad'})"
        raise CliError(msg)
    if data and p.suffix.lower() not in ("", ".h5ad", ".zarr"):
        msg = f"{flag} {path}: gpu-sc writes an .h5ad file (or a .zarr store); name the output OUT.h5ad"
        raise CliError(msg)
    zarr = p.suffix.lower() == ".zarr"
    if p.is_dir() and not zarr:
        msg = f"{flag} {path} is a folder; give a file name"
        raise CliError(msg)
    if zarr and p.exists():
        if not p.is_dir():
            msg = f"{flag} {path} is a file; a .zarr output is a folder: give another name or remove it"
            raise CliError(msg)
        if not any((p / marker).exists() for marker in (".zgroup", ".zattrs", "zarr.json")):
            msg = (f"{flag} {path} is a folder but not a zarr store, and writing the output would "
                   "replace it; give another name or remove it")  # fmt: skip
            raise CliError(msg)
    _check_parents(p, flag, path)
    for what, given in inputs:
        if p.exists() and Path(given).exists() and p.resolve() == Path(given).resolve():
            msg = f"{flag} {path} is the {what}; choose another output path"
            raise CliError(msg)


def _check_parents(p: Path, flag: str, path: str) -> None:
    """The nearest existing folder above `p` is a folder this user can write in."""
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                msg = f"{flag} {path}: {parent} is a file, not a folder"
                raise CliError(msg)
            if not os.access(parent, os.W_OK | os.X_OK):  # read-only file system or no permission
                msg = f"{flag} {path}: cannot write in {parent}; choose a folder you can write in"
                raise CliError(msg)
            break


def write_output(adata: AnnData, path: str) -> None:
    """Write h5ad, or a zarr store where `path` ends in .zarr: into a temporary name in the same
    folder, then moved into place, so that a failed write (a full disk) leaves no broken file and
    keeps an earlier output."""
    target = Path(path)
    made = [p for p in reversed(target.parents) if not p.exists()]  # removed again if the write fails
    target.parent.mkdir(parents=True, exist_ok=True)
    zarr = target.suffix.lower() == ".zarr"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        if zarr:
            import anndata as ad

            # format 2, readable with zarr 2 and 3 alike (anndata < 0.11 writes only that), unless the
            # user chose one; anndata's notice that its default becomes 3 is not the user's to act on
            v2 = hasattr(ad.settings, "zarr_write_format") and "ANNDATA_ZARR_WRITE_FORMAT" not in os.environ
            with warnings.catch_warnings(), (ad.settings.override(zarr_write_format=2) if v2 else nullcontext()):
                warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
                adata.write_zarr(tmp)
        else:
            adata.write_h5ad(tmp)
        if zarr and target.is_dir():  # a store is a folder: os.replace does not replace a full one
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if made:  # the temporary file goes with them
            shutil.rmtree(made[0], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


# --- commands ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> None:
    steps = parse_steps(args.steps)
    device = resolve_device(args.device)
    check_output(args.output, inputs=[("input", args.input)])
    source = None
    if args.chunk_rows is None:
        adata = read_input(args.input)
        how = ""
    else:
        adata, source = read_h5ad_lazy(args.input, args.chunk_rows)
        how = f" as Dask blocks of {args.chunk_rows:,} cells"
    try:
        check_run_options(adata, steps, args)
        print(f"read {args.input}{how}: {shape_text(adata)}; backend {backend_description(device)}")
        times = run_pipeline(adata, steps, args, device)
        t0 = time.perf_counter()
        write_output(adata, args.output)  # a lazy matrix is computed block by block here
    finally:
        if source is not None:
            source.close()
    print(f"wrote {args.output}: {shape_text(adata)} ({sum(times.values()):.2f} s in steps, "
          f"{time.perf_counter() - t0:.2f} s writing)")  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> None:
    from gpu_sc.datasets import pbmc68k_reduced

    device = resolve_device(args.device)
    if args.output:
        check_output(args.output)
    if args.plot:
        args.plot = _check_plot(args.plot)
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)  # as -o makes its folder
    adata = pbmc68k_reduced()
    before = shape_text(adata)
    print(f"dataset: pbmc68k_reduced (bundled, raw counts): {before}")
    backend = backend_description(device)
    print(f"backend: {backend}")
    steps = DEMO_STEPS + (DEMO_GRAPH_TOOLS if _graph_tools_available() else [])
    if len(steps) == len(DEMO_STEPS):
        print(f"{', '.join(DEMO_GRAPH_TOOLS)} skipped: they need scanpy and igraph (pip install 'gpu_sc[tools]')")
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
        "variance ratio, PC1-5": ", ".join(
            f"{v:.3f}" for v in np.asarray(adata.uns["pca"]["variance_ratio"])[:5]
        ),
        "wall time per step": ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
        + f" (total {sum(times.values()):.2f} s)",
        "backend": backend,
    }
    if "leiden" in adata.obs:
        sizes = adata.obs["leiden"].value_counts()
        summary["leiden clusters"] = f"{len(sizes)} (largest {sizes.iloc[0]}, smallest {sizes.iloc[-1]} cells)"
    if "rank_genes_groups" in adata.uns:
        names = adata.uns["rank_genes_groups"]["names"]
        summary["top markers (t-test)"] = "; ".join(
            f"{c}: {', '.join(names[c][:3])}" for c in names.dtype.names)
    if args.plot:  # only a UMAP this run made (the bundled data carries an old one)
        summary["UMAP image"] = _demo_umap_image(adata, args.plot, "umap" in times)
    summary.update(demo_pic(Path(args.plot).with_name(PIC_DEMO_PNG) if args.plot else None,
                            device=device))
    _print_summary(summary)
    if args.output:
        write_output(adata, args.output)
        print(f"wrote {args.output}")


def _check_plot(path: str) -> str:
    """--plot as the file that will be written (.png added where it has no suffix), refused
    before any work where matplotlib cannot write its format or where it is the heatmap's name."""
    if path.endswith(("/", os.sep)) or Path(path).is_dir():  # else 'DIR/' + '.png' names a dot-file
        msg = f"--plot {path} is a folder; give a file name (e.g. {Path(path) / 'umap.png'})"
        raise CliError(msg)
    p = Path(path) if Path(path).suffix else Path(path + ".png")  # matplotlib's default format
    check_output(str(p), "--plot", data=False)
    if p.name == PIC_DEMO_PNG:
        msg = f"--plot {path}: the PIC pair heatmap is written as {PIC_DEMO_PNG} beside it; give the UMAP another name"
        raise CliError(msg)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return str(p)  # no image is made (the summary says so)
    formats = FigureCanvasBase.get_supported_filetypes()
    if p.suffix[1:].lower() not in formats:
        msg = (f"--plot {path}: matplotlib cannot write {p.suffix!r} files; end the name in one of: "
               f"{', '.join(sorted(formats))}")
        raise CliError(msg)
    return str(p)


def _demo_umap_image(adata: AnnData, path: str, ran: bool) -> str:
    """The demo's UMAP image, or why there is none (the summary's line)."""
    if not ran:
        return "skipped: umap did not run (it needs scanpy and igraph: pip install 'gpu_sc[tools]')"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "skipped: needs matplotlib (pip install 'gpu_sc[pic]')"
    _plot_umap(adata, path)
    return str(path)


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


# --- PIC-seq -------------------------------------------------------------------------------------

PIC_DEMO_PNG = "gpu-sc-demo-pic-pairs.png"


def parse_groups(text: str, flag: str) -> list[str]:
    """A comma-separated list of group names (surrounding spaces dropped)."""
    names = [g.strip() for g in text.split(",") if g.strip()]
    if not names:
        msg = (
            f"{flag} {text!r}: no group names given; pass comma-separated groups "
                       f"of the --groupby column, e.g. {flag} 'T cell,NK'"
        )
        raise CliError(msg)  # fmt: skip
    return names


def _read_flag(path: str, flag: str) -> AnnData:
    """read_input with the option's name in the message."""
    if not Path(path).exists():
        msg = f"{flag} {path}: file not found; pass an existing file ({FORMATS})"
        raise CliError(msg)
    try:
        return read_input(path)
    except CliError as e:
        msg = f"{flag}: {e}"
        raise CliError(msg) from e


def _check_pic_inputs(singlets: AnnData, pics: AnnData, args: argparse.Namespace,
                      groups_a: list[str], groups_b: list[str]) -> None:  # fmt: skip
    """One-line CliErrors for what the user can fix, before any computation."""
    obs = singlets.obs
    if args.groupby not in obs:
        msg = (
            f"--groupby {args.groupby!r} is not a column of the singlets' obs "
                       f"({args.singlets}); pick one of: {', '.join(map(str, obs.columns)) or '(none)'}"
        )
        raise CliError(msg)  # fmt: skip
    present = set(obs[args.groupby].astype(str))
    for flag, groups in (("--a", groups_a), ("--b", groups_b)):
        missing = [g for g in groups if g not in present]
        if missing:
            shown = sorted(present)
            more = f", ... ({len(shown)} in all)" if len(shown) > 30 else ""
            msg = (
                f"{flag}: groups {missing} are not in singlets.obs[{args.groupby!r}] "
                           f"({args.singlets}); available groups: {', '.join(shown[:30])}{more}"
            )
            raise CliError(msg)  # fmt: skip
    both = [g for g in groups_a if g in groups_b]
    if both:
        msg = f"groups {both} are given in both --a and --b; each group belongs to one side"
        raise CliError(msg)


def _check_pic_options(args: argparse.Namespace) -> None:
    """One-line CliErrors for the options deconvolve would refuse, before any file is read."""
    choices = gsc.pic.DECONVOLVE_CHOICES
    for flag, value, allowed in (("--method", args.method, choices["method"]),
                                 ("--alpha-model", args.alpha_model, choices["alpha_model"])):  # fmt: skip
        if value is not None and value not in allowed:  # (--alpha-model None: ml's default)
            msg = f"{flag} {value!r}: must be one of {', '.join(map(repr, allowed))}"
            raise CliError(msg)
    if args.n_umis is not None and not 0 < args.n_umis <= gsc.pic.DECONVOLVE_MAX_UMIS:
        msg = f"--n-umis {args.n_umis}: must be a positive number of UMIs, at most {gsc.pic.DECONVOLVE_MAX_UMIS:,}"
        raise CliError(msg)
    if args.alpha_model is not None and args.method != "ml":
        msg = (f"--alpha-model {args.alpha_model} chooses ml's alpha; --method {args.method} has its own: "
               "drop --alpha-model (or use --method ml)")  # fmt: skip
        raise CliError(msg)
    if args.seed < 0:
        msg = f"--seed {args.seed}: must be 0 or more (numpy's random generators take no negative seeds)"
        raise CliError(msg)


def _need_matplotlib(what: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        msg = f"{what} needs matplotlib: pip install 'gpu_sc[pic]' (or leave it out)"
        raise CliError(msg) from e


def _print_summary(summary: dict[str, str]) -> None:
    print("summary")
    for label, value in summary.items():
        print(f"  {label + ':':<26}{value}")


#: deconvolve's words for its arguments -> this command's options (its messages are the API's)
_OPTION_WORDS = (
    (re.compile(r"Pass markers= \(genes that tell them apart\), give "), "Give "),
    (re.compile(r"pass markers=, split"), "split"),
    (re.compile(r"\bn_umis= ?"), "--n-umis "),
    (re.compile(r"\bmethod='(\w+)'"), r"--method \1"),
    (re.compile(r"\b(groups of|[Gg]ive) ([ab])= "), r"\1 --\2 "),
    (re.compile(r"^(deconvolve \([^)]*\): )([ab]) names groups"), r"\1--\2 names groups"),
)


def cli_words(message: str, method: str) -> str:
    """A message of deconvolve in this command's terms: its step named once, with --method, and
    the arguments it names as the options that set them."""
    head = f"deconvolve (--method {method}"
    if message.startswith("deconvolve ("):  # 'deconvolve (pics): ...'
        message = f"{head}, {message[len('deconvolve ('):]}"
    elif message.startswith("deconvolve:"):
        message = f"{head}){message[len('deconvolve'):]}"
    else:
        message = f"{head}): {message}"
    for pattern, words in _OPTION_WORDS:
        message = pattern.sub(words, message)
    return message


def _deconvolve(pics: AnnData, singlets: AnnData, **kw) -> None:
    """gsc.pic.deconvolve, its ValueError/KeyError/ImportError as one-line CliErrors and its
    warnings in the command's terms (`cli_words`)."""
    show = warnings.showwarning

    def translated(message, category, filename, lineno, file=None, line=None):
        show(cli_words(str(message), kw.get("method")), category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():  # restores showwarning on leaving
            warnings.showwarning = translated
            gsc.pic.deconvolve(pics, singlets, **kw)
    except (ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise CliError(cli_words(msg, kw.get("method"))) from e
    except ImportError as e:
        raise CliError(cli_words(f"{e}; pip install 'gpu_sc[pic]'", kw.get("method"))) from e


def cmd_pic(args: argparse.Namespace) -> None:
    groups_a = parse_groups(args.a, "--a")
    groups_b = parse_groups(args.b, "--b")
    _check_pic_options(args)
    check_output(args.output, inputs=[("--singlets input", args.singlets), ("--pics input", args.pics)])
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        msg = f"--plots {args.plots} is a file; give a folder for the plots"
        raise CliError(msg)
    if args.plots:
        _check_parents(Path(args.plots), "--plots", args.plots)
        if Path(args.plots).resolve() == Path(args.output).resolve():
            msg = f"--plots {args.plots} is the -o output's path; give the plots a folder of their own"
            raise CliError(msg)
    if Path(args.singlets).exists() and Path(args.singlets).resolve() == Path(args.pics).resolve():
        msg = (f"--singlets and --pics are the same file ({args.pics}); the reference singlets and the PICs "
               "are two data sets")  # fmt: skip
        raise CliError(msg)
    if args.plots:
        _need_matplotlib("--plots")
    device = resolve_device(args.device)  # before reading: --device gpu without a GPU fails at once
    n_steps = 4 + bool(args.plots)
    t_all = time.perf_counter()

    def step(i: int, name: str, t0: float, what: str) -> None:
        print(f"[{i}/{n_steps}] {name:<14}{time.perf_counter() - t0:6.2f} s  {what}")

    t0 = time.perf_counter()
    singlets = _read_flag(args.singlets, "--singlets")
    step(1, "read singlets", t0, f"{args.singlets}: {shape_text(singlets)}")
    t0 = time.perf_counter()
    pics = _read_flag(args.pics, "--pics")
    step(2, "read pics", t0, f"{args.pics}: {pics.n_obs:,} PICs x {pics.n_vars:,} genes")
    if pics.n_obs == 0:  # before the minutes of training that would deconvolve nothing
        msg = f"--pics {args.pics} holds no PICs (0 cells); pass the file of the PICs to deconvolve"
        raise CliError(msg)
    _check_pic_inputs(singlets, pics, args, groups_a, groups_b)

    t0 = time.perf_counter()
    _deconvolve(pics, singlets, groupby=args.groupby, a=groups_a, b=groups_b,
                method=args.method, alpha_model=args.alpha_model or "regression", n_umis=args.n_umis,
                seed=args.seed, device=device,
                progress=pics.n_obs > 20000)  # per-chunk lines for long runs
    step(3, "deconvolve", t0, f"method {args.method} on the {device.upper()}, {len(groups_a)} A x "
                              f"{len(groups_b)} B groups ({len(groups_a) * len(groups_b)} pairs)")
    t0 = time.perf_counter()
    write_output(pics, args.output)
    step(4, "write", t0, str(args.output))
    summary = gsc.pic.summary(pics)
    if args.plots:
        t0 = time.perf_counter()
        written = gsc.pic.write_plots(pics, args.plots)
        step(5, "plots", t0, ", ".join(map(str, written)) or "none (no PIC with status 'ok')")
        summary["plots"] = ", ".join(map(str, written)) or "none (no PIC with status 'ok')"
    summary["output"] = str(args.output)
    summary["wall time"] = f"{time.perf_counter() - t_all:.2f} s"
    _print_summary(summary)


def demo_pic(png: str | Path | None, n_pics: int = 200, seed: int = 0,
             device: str = "cpu") -> dict[str, str]:
    """The demo's PIC-seq part: synthetic T cell + dendritic cell PICs from the bundled PBMCs
    (`gsc.datasets.pbmc_t_dc_pics`), deconvolved with the default method and scored against the
    truth (the pair search runs on `device`); writes the pair heatmap to `png` when given.
    Returns summary lines."""
    from gpu_sc.datasets import PBMC_DC_GROUPS, PBMC_T_GROUPS, pbmc_t_dc_pics

    t0 = time.perf_counter()
    pics, ref = pbmc_t_dc_pics(n_pics, seed)
    try:  # ml's alpha regression needs scikit-learn (the pic extra); without it, its posterior
        import sklearn  # noqa: F401

        alpha_model = "regression"
    except ImportError:
        alpha_model = "posterior"
    gsc.pic.deconvolve(pics, ref, groupby="pic_group", a=PBMC_T_GROUPS, b=PBMC_DC_GROUPS, device=device,
                       alpha_model=alpha_model)  # fmt: skip
    truth = gsc.pic.accuracy(pics)
    ok = int((pics.obs["pic_status"].astype(str) == "ok").sum())
    out = {
        "PIC-seq (synthetic)": f"{ok} of {pics.n_obs} T + DC PICs deconvolved "
                               f"({len(PBMC_T_GROUPS)} x {len(PBMC_DC_GROUPS)} pairs, method "
                               f"{pics.uns['pic']['method']}, {ref.n_obs} reference cells)",
        "PIC pair accuracy": f"{truth['pair']:.3f}" if truth else "n/a",
        "PIC A / B accuracy": f"{truth['a']:.3f} / {truth['b']:.3f}" if truth else "n/a",
        "PIC alpha MAE": f"{truth['alpha_mae']:.3f}" if truth and "alpha_mae" in truth else "n/a",
    }
    if alpha_model == "posterior":
        out["PIC alpha MAE"] += " (posterior mean: the alpha regression needs scikit-learn, pip install 'gpu_sc[pic]')"
    if png and ok:
        try:
            gsc.pic.pair_heatmap(pics, save=png)
            out["PIC pair heatmap"] = str(png)
        except ImportError:
            out["PIC pair heatmap"] = "skipped: needs matplotlib (pip install 'gpu_sc[pic]')"
    secs = time.perf_counter() - t0
    out["PIC wall time"] = f"{secs:.2f} s ({device.upper()})"
    print(f"[pic] deconvolve{secs:6.2f} s  {ok} of {pics.n_obs} synthetic T + DC PICs")
    return out


# --- argument parsing ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-sc", description="scanpy's preprocessing on NVIDIA GPUs, with a CPU fallback."
    )
    parser.add_argument("--version", action="version", version=f"gpu-sc {gsc.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,demo,pic}")

    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")  # fmt: skip (SUPPRESS: keeps the main flag's)
    device.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                        help="where to compute (default: auto = gpu when one is usable)")  # fmt: skip
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--min-genes", type=_int_from(0), default=200, help="filter: min genes per cell (200)")
    opts.add_argument("--min-cells", type=_int_from(0), default=3, help="filter: min cells per gene (3)")
    opts.add_argument("--target-sum", type=_positive_float, default=None,
                      help="normalize: counts per cell after normalization (default: median)")  # fmt: skip
    opts.add_argument("--n-top-genes", type=_int_from(1), default=2000,
                      help="hvg: number of highly variable genes (2000)")  # fmt: skip
    opts.add_argument("--regress-keys", default="total_counts,pct_counts_mt", metavar="KEY[,KEY]",
                      help="regress_out: obs columns to regress out (total_counts,pct_counts_mt)")  # fmt: skip
    opts.add_argument("--n-comps", type=_int_from(1), default=50, help="pca: number of components (50)")
    opts.add_argument("--batch-key", default=None, metavar="KEY[,KEY]",
                      help="harmony, scrublet: obs column(s) of batches (neighbors then use X_pca_harmony)")
    opts.add_argument("--n-neighbors", type=_int_from(2), default=15, help="neighbors: k (15)")
    opts.add_argument("--resolution", type=_positive_float, default=1.0, help="leiden: resolution (1.0)")
    opts.add_argument("--markers-method", default="t-test",
                      choices=("t-test", "t-test_overestim_var", "wilcoxon", "logreg"),
                      help="markers: rank_genes_groups' method (t-test)")  # fmt: skip
    opts.add_argument("--qc-vars", default=None,
                      help="qc: comma-separated boolean var columns (default: 'mt' = MT-/mt- genes)")  # fmt: skip

    run = sub.add_parser("run", parents=[device, opts],
                         help="run preprocessing steps on a count matrix (h5ad, 10x h5 or mtx folder, zarr, loom)")
    run.add_argument("input", metavar="IN", help=f"the input: {FORMATS}")
    run.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    run.add_argument("--steps", default=DEFAULT_STEPS,
                     help=f"comma-separated, run in order; one of: {', '.join(STEPS)} "
                          f"(default: {DEFAULT_STEPS})")  # fmt: skip
    run.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                     help="read X (and layers) lazily as a Dask array of N-cell blocks: for data "
                          "larger than memory; the steps run block by block under the active Dask "
                          "scheduler")  # fmt: skip
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", parents=[device], help="run the pipeline on bundled PBMC data")
    demo.add_argument("-o", "--output", metavar="OUT.h5ad", default=None)
    demo.add_argument("--plot", metavar="UMAP.png", default="gpu-sc-demo-umap.png",
                      help=f"where to write the UMAP image; the PIC pair heatmap goes next to it "
                           f"as {PIC_DEMO_PNG} ('' for none)")  # fmt: skip
    # the bundled data has only 765 genes, so the cell filter is far looser than scanpy's default
    demo.set_defaults(func=cmd_demo, min_genes=10, min_cells=3, target_sum=None, qc_vars=None,
                      n_top_genes=300, n_comps=30, n_neighbors=15, resolution=1.0,
                      markers_method="t-test")  # fmt: skip

    pic = sub.add_parser("pic", parents=[device], help="deconvolve PIC-seq doublets (PICs) into A and B groups",
                         description="Deconvolve physically interacting cells: for each PIC, the "
                         "A group and B group of its two cells and the share alpha of its UMIs "
                         "from the A cell (gpu_sc.pic.deconvolve). Both files hold raw integer "
                         "counts over the same genes.")  # fmt: skip
    pic.add_argument("--singlets", metavar="S.h5ad", required=True,
                     help="reference singlets (raw counts) with the group labels in obs")  # fmt: skip
    pic.add_argument("--pics", metavar="P.h5ad", required=True, help="the PICs (raw counts)")
    pic.add_argument("--groupby", metavar="KEY", required=True,
                     help="singlets.obs column with the reference groups")  # fmt: skip
    pic.add_argument("--a", metavar="A1,A2,...", required=True,
                     help="comma-separated groups of population A")  # fmt: skip
    pic.add_argument("--b", metavar="B1,B2,...", required=True,
                     help="comma-separated groups of population B")  # fmt: skip
    pic.add_argument("-o", "--output", metavar="OUT.h5ad", required=True,
                     help="the PICs with obs pic_a, pic_b, pic_alpha, pic_status, ... and uns['pic']")  # fmt: skip
    pic.add_argument("--method", default="ml",
                     help="ml (joint maximum likelihood, default), picseq (the published "
                          "algorithm) or mixture (soft weights over all groups)")  # fmt: skip
    pic.add_argument("--alpha-model", default=None,
                     help="ml's alpha: regression (learned on simulated PICs, default) or "
                          "posterior (posterior mean under the cell-size prior)")  # fmt: skip
    pic.add_argument("--n-umis", type=int, default=None,
                     help="down-sample PICs to this many UMIs, dropping smaller ones "
                          "(default: none for ml, 1000 for picseq)")  # fmt: skip
    pic.add_argument("--seed", type=int, default=0, help="random seed (0)")
    pic.add_argument("--plots", metavar="DIR", default=None,
                     help=f"write {gsc.pic.PLOT_FILES['pairs']} (pair heatmap) and {gsc.pic.PLOT_FILES['alpha']} "
                          "(alpha histogram) to DIR")  # fmt: skip
    pic.set_defaults(func=cmd_pic)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line of the tool's output, not Python's source path and line."""
    print(f"gpu-sc: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores Python's display on return
            if not args.traceback:
                warnings.showwarning = _one_line_warning
            args.func(args)
    except Exception as e:
        if args.traceback:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if not isinstance(e, CliError):
            msg = f"{type(e).__name__}: {msg}"
        print(f"gpu-sc: error: {' '.join(str(msg).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for it, not a traceback
        if args.traceback:
            raise
        print("gpu-sc: interrupted (an output is written whole or not at all)", file=sys.stderr)
        raise SystemExit(130) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
