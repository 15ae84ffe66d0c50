"""What every benchmark row records about the machine and the software (shared by run.py and
pic_validate.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import gpu_sc as gsc

PACKAGES = ("scanpy", "anndata", "numpy", "scipy", "scikit-learn", "numba", "dask",
            "cupy-cuda13x", "cupy-cuda12x", "rapids-singlecell-cu13", "rapids-singlecell-cu12")


def commit(root: Path | None = None) -> str | None:
    """The commit measured: GPU_RUN_COMMIT where gpu_run.sh set it (the GPU machine gets the tree
    without .git), else git's HEAD of `root` (default this checkout) with '+dirty' for uncommitted
    changes; None where neither is known."""
    if os.environ.get("GPU_RUN_COMMIT"):
        return os.environ["GPU_RUN_COMMIT"]
    root = Path(__file__).resolve().parents[1] if root is None else root
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def gpu_name() -> str:
    """The GPU's name as CuPy reports it ('gpu' where CuPy cannot say)."""
    try:
        import cupy as cp

        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no CuPy, no device, or the kernel emulator's stand-in
        return "gpu"


def versions(names=PACKAGES) -> dict:
    """Python, gpu_sc, the commit and the installed versions of `names` (missing ones left out)."""
    out = {"python": platform.python_version(), "gpu_sc": gsc.__version__, "commit": commit()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # not installed here
            continue
    return out


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


@contextmanager
def jsonl_rows(path: Path | None, default: Callable | None = None) -> Iterator[Callable[[dict], None]]:
    """An emit(row) that appends each row to the JSON-lines file `path` as soon as it is
    measured (flushed, so an interrupted run keeps its rows); with `path` None rows go nowhere.
    `default` is json.dumps's fallback for values it cannot encode."""
    if path is None:
        yield lambda row: None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:

        def emit(row: dict) -> None:
            f.write(json.dumps(row, default=default) + "\n")
            f.flush()

        yield emit


def add_timing_arguments(p, cases: tuple[str, ...]) -> None:
    """The arguments every per-step benchmark shares: --cases (from `cases`), --repeats, --seed,
    --touch-memory and --out."""
    p.add_argument("--cases", default=",".join(cases), help=f"comma-separated, from: {', '.join(cases)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--touch-memory", type=float, default=2.0, metavar="GIB",
                   help="write and free this much memory first (see run.py)")  # fmt: skip
    p.add_argument("--out", type=Path, help="append JSON lines here")


def check_cases(p, chosen: str, cases: tuple[str, ...]) -> None:
    unknown = set(chosen.split(",")) - set(cases) - {""}
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(cases)}")


def pbmc4k_held_out(seed: int, share: float = 0.3):
    """The bundled pbmc4k cells with an annotation (float32 CSR counts, obs['Annotation'] as text)
    and a mask of the `share` of each Annotation group held out (seeded): the PIC QC benchmarks'
    split, their PICs made from the held-out cells only."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    adata = ad.read_h5ad(Path(__file__).resolve().parents[1] / "gpu_sc" / "_data" / "soupx_pbmc4k_half.h5ad")
    adata = adata[adata.obs["Annotation"].astype(str) != "?"].copy()
    adata.obs["Annotation"] = adata.obs["Annotation"].astype(str)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    held = np.zeros(adata.n_obs, bool)
    for idx in adata.obs.groupby("Annotation").indices.values():
        idx = rng.permutation(idx)
        held[idx[: int(round(share * idx.size))]] = True
    return adata, held
