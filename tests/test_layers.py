"""The package's layering, read from its source (no import runs): the import graph has no cycle,
no feature package reaches into another one's private module, and no `_ops` primitive
dispatches on where its operand lives by hand (that is `_ops._dispatch`'s job).

Layers, bottom up: `_backend`, `_settings`, `_keys`, `_values`, `_stats` -> `_kernels`, `_ops` ->
`_validation`, `get` -> the feature packages (`preprocessing`, `tools`, `pic`) -> `datasets`,
`cli`. A feature package may import the ground floor and another feature's public names
(`gpu_sc.preprocessing.pca`), never another feature's `_private` module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gpu_sc"
FEATURES = {"preprocessing", "tools", "pic", "experimental"}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, lazy imports included)."""
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        here = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_import_graph_has_no_cycle():
    mods = _modules()
    # a package's __init__ importing its own submodules is re-export, not a dependency
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in _imports(mods).items()}
    assert _cycles(edges) == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_feature_imports_another_features_private_module():
    bad = []
    for m, targets in _imports(_modules()).items():
        for t in targets:
            parts = t.split(".")
            feature = parts[1] if len(parts) > 1 else ""
            own = (m.split(".") + [""])[1]
            if feature in FEATURES and feature != own and any(p.startswith("_") for p in parts[2:]):
                bad.append(f"{m} -> {t}")
    assert bad == []


def test_no_primitive_dispatches_by_hand():
    """`_ops` primitives take Parts | Chunked and leave the choice of engine to `_dispatch`; only
    the neighbour family (dense embeddings, not Parts) chooses its library itself."""
    bad = []
    for f in (PKG / "_ops").glob("*.py"):
        if f.name in ("_dispatch.py", "_chunked.py", "_layout.py"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("on_gpu", "is_gpu", "is_dask"):
                bad.append(f"{f.name}:{node.lineno} {node.func.id}")
    assert bad == []


# layer of each top-level name (the order of the module docstring); "" is the package itself, whose
# public aliases (gsc.pp) `datasets` and `cli` use
LAYER = {"_backend": 0, "_settings": 0, "_keys": 0, "_values": 0, "_stats": 0, "_scanpy_own": 0, "_scanpy_signatures": 0,
         "_kernels": 1, "_ops": 1,
         "_validation": 2, "get": 2, "_representation": 2,
         "_aggregate": 2, "_obs_var_df": 2, "_rank_genes_groups_df": 2,  # the bodies of get's readers
         "preprocessing": 3, "tools": 3, "pic": 3, "experimental": 3,
         "datasets": 4, "cli": 4, "": 4}  # fmt: skip


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else ""]


def test_every_module_has_a_layer():
    assert sorted({(m.split(".") + [""])[1] for m in _modules()} - set(LAYER)) == []


def test_no_module_imports_from_a_layer_above():
    """A primitive that imports `_validation` (above it) would make the layers a cycle waiting to
    happen: `_ops/eigh.py` once did, for a warning's stack level, which lives in `_settings` now."""
    bad = [f"{m} -> {t}" for m, ts in _imports(_modules()).items() for t in ts if _layer(t) > _layer(m)]
    assert bad == []
