"""What every benchmark row records about the machine and the software (shared by run.py and
pic_validate.py)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import gpu_sc as gsc

PACKAGES = ("scanpy", "anndata", "numpy", "scipy", "scikit-learn", "numba", "dask",
            "cupy-cuda13x", "cupy-cuda12x", "rapids-singlecell-cu13", "rapids-singlecell-cu12")


def versions(names=PACKAGES) -> dict:
    """Python, gpu_sc and the installed versions of `names` (missing ones left out)."""
    out = {"python": platform.python_version(), "gpu_sc": gsc.__version__}
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
