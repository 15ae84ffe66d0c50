"""scanpy's own function where ours hands work to scanpy."""

from __future__ import annotations

import importlib
import inspect


def scanpy_own(namespace: str, name: str, module: str):
    """scanpy's own `<namespace>.<name>` (``"tl", "umap"``), taken from `module`, the scanpy module
    that defines it: the public ``sc.tl.umap`` may be ours, set there by a user or by scanpy's test
    suite run with ours (directly or wrapped), and calling it would call ourselves forever. Where
    `module` has no such name (another scanpy version), the public one, unless it is ours."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pass
    fn = getattr(getattr(importlib.import_module("scanpy"), namespace), name)
    if getattr(inspect.unwrap(fn), "__module__", "").startswith(__name__.split(".")[0]):
        msg = f"scanpy's own {namespace}.{name} is not in {module} here, and scanpy.{namespace}.{name} is ours."
        raise ImportError(msg)
    return fn
