"""gpu_sc: scanpy's preprocessing on NVIDIA GPUs, with an identical CPU fallback.

Submodules load on first use (`gsc.pp`, `gsc.get`, `gsc.datasets`, ...), and nothing here
imports cupy: the package works on machines without a GPU.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._settings import settings

try:
    __version__ = version("gpu_sc")
except PackageNotFoundError:  # a source checkout that is not installed
    __version__ = "0.1.0"

_SUBMODULES = {
    "pp": ".preprocessing", "tl": ".tools", "get": ".get", "datasets": ".datasets", "pic": ".pic",
    "experimental": ".experimental",
}  # fmt: skip

__all__ = ["settings", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(_SUBMODULES[name], __name__)
        globals()[name] = module
        return module
    msg = f"module 'gpu_sc' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
