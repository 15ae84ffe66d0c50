"""Run a scanpy tool on the host (or rapids-singlecell's on the GPU) and bring its results back."""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable

from anndata import AnnData, ImplicitModificationWarning

from .. import _keys as K
from .._backend import is_gpu
from .._scanpy_own import scanpy_own
from .._settings import default_n_pcs, settings, user_stacklevel
from ..get import array_to_cpu as _host  # host copy, same container type
from ..get import array_to_gpu
from .._validation import check_anndata, make_actual


def _gpu_graph(adata: AnnData, neighbors_key: str | None) -> bool:
    found = neighbors_graph(adata, neighbors_key)
    return found is not None and is_gpu(found[1])


def neighbors_graph(adata: AnnData, neighbors_key: str | None):
    """(``uns`` entry, connectivities) as scanpy's NeighborsView finds them for `neighbors_key`
    (``'connectivities'`` under the default key, ``uns[key]['connectivities_key']`` otherwise),
    or None where scanpy would not find them (its call then raises its own error)."""
    if neighbors_key is None or neighbors_key == "neighbors":
        meta, key = adata.uns.get("neighbors"), "connectivities"
    else:
        meta = adata.uns.get(neighbors_key)
        key = meta.get("connectivities_key") if isinstance(meta, dict) and "distances_key" in meta else None
    if not isinstance(meta, dict) or key not in adata.obsp:
        return None
    return meta, adata.obsp[key]


def _rsc():
    try:
        return importlib.import_module("rapids_singlecell")
    except Exception:  # not installed, or installed without a working CUDA stack
        return None


def _untaken(fn, kwargs: dict) -> list:
    """The keywords `fn` does not take: rapids-singlecell's tools take fewer than scanpy's (its
    leiden no flavor or directed, its umap no method), and a call with one would raise there."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    return sorted(set(kwargs) - set(params))


def _needs_x(adata: AnnData, kwargs: dict) -> bool:
    """Whether the graph's representation is X (`reads_x` of the graph's use_rep and n_pcs)."""
    meta = adata.uns.get(kwargs.get("neighbors_key") or "neighbors", {})
    params = meta.get("params", {}) if isinstance(meta, dict) else {}
    return reads_x(adata, kwargs.get("use_rep", params.get("use_rep")), params.get("n_pcs"))


def reads_x(adata: AnnData, use_rep: str | None, n_pcs: int | None) -> bool:
    """Whether scanpy's representation rule (`_choose_representation`) reads X: use_rep 'X', or
    none with n_pcs=0, with settings.N_PCS genes or fewer, or without X_pca (scanpy then makes it)."""
    if use_rep is not None:
        return use_rep == "X"
    return n_pcs == 0 or adata.n_vars <= default_n_pcs() or K.OBSM_PCA not in adata.obsm


def _check_keywords(name: str, tool, adata: AnnData, kwargs: dict) -> None:
    """scanpy's TypeError for a keyword its tool does not take, before any work: umap computed
    its spectral start (a pass over the graph) and only then heard of a misspelt keyword."""
    try:
        sig = inspect.signature(tool)
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return
    try:
        sig.bind(adata, **kwargs)
    except TypeError as e:
        msg = f"{name}: {e} (the keywords are scanpy's tl.{name}'s: {', '.join(list(sig.parameters)[1:])})."
        raise TypeError(msg) from None


def _check_named_inputs(name: str, adata: AnnData, kwargs: dict) -> None:
    """The obs column and obsm key a keyword names, before any work, with a message saying what
    is missing: scanpy's were a bare KeyError (restrict_to), an UnboundLocalError (umap's
    init_pos) and igraph's 'Invalid vertex ID' (paga of a grouping with unassigned cells)."""
    restrict = kwargs.get("restrict_to")
    if restrict is not None and not (isinstance(restrict, tuple | list) and len(restrict) == 2):
        msg = f"{name}: restrict_to must be (an obs column, a list of its categories), got {restrict!r}."
        raise ValueError(msg)
    if restrict is not None and restrict[0] not in adata.obs.columns:
        msg = (f"{name}: restrict_to names obs column {restrict[0]!r}, which adata.obs lacks "
               f"(columns: {list(adata.obs.columns)[:10]}).")
        raise KeyError(msg)
    init = kwargs.get("init_pos")
    if name == "umap" and isinstance(init, str) and init not in ("spectral", "random", "paga") \
            and init not in adata.obsm:
        msg = (f"umap: init_pos={init!r} is neither 'spectral', 'random' nor 'paga' nor a key of adata.obsm "
               f"({list(adata.obsm)}); compute that embedding first or pass one of those.")
        raise KeyError(msg)
    groups = kwargs.get("groups")
    if name == "paga" and isinstance(groups, str) and groups in adata.obs.columns:
        n_missing = int(adata.obs[groups].isna().sum())
        if n_missing:
            msg = (f"paga: adata.obs[{groups!r}] has {n_missing} cells in no group (NaN), and PAGA needs each cell in "
                   "one; give them a group (e.g. 'unassigned') or subset the cells first.")
            raise ValueError(msg)


def actual_for_results(adata: AnnData, name: str) -> None:
    """A view made actual before tool `name` writes its results into it, with anndata's warning
    class, once and at the caller's line (writing into the view warned once per attribute,
    naming gpu_sc's line)."""
    if adata.is_view:
        warnings.warn(f"{name}: writing results into a view of an AnnData, initializing view as actual.",
                      ImplicitModificationWarning, stacklevel=user_stacklevel())  # fmt: skip
        make_actual(adata)


def _scanpy_tool(name: str):
    """scanpy's own `tl.<name>` (not ours, where ours has been put in its place)."""
    return scanpy_own("tl", name, f"scanpy.tools._{name}")


def _dict_tree(d) -> dict:
    """A copy of the nested dicts of `d`, sharing their other values: a tool writes into its
    copy's dicts without touching the user's, and arrays are not copied for nothing (nor
    objects that cannot be, such as a lock)."""
    return {k: _dict_tree(v) if type(v) is dict else v for k, v in d.items()}


def _changed(before, after) -> bool:
    """Whether `after` (the host copy's entry) differs from the snapshot `before` (`_dict_tree`):
    a value replaced, or a dict with keys or values added, removed or replaced."""
    if type(before) is dict and type(after) is dict:
        return before.keys() != after.keys() or any(_changed(before[k], after[k]) for k in before)
    return before is not after


def _same_column(a, b) -> bool:
    """Equal values and dtype (a text column made categorical has equal values, another dtype)."""
    return a.dtype == b.dtype and a.equals(b)


def host_copy(adata: AnnData, *, with_x: bool, varm: bool = False) -> AnnData:
    """A host AnnData of what scanpy's tools read and write, the user's object untouched: X where
    `with_x`, copies of obs and var (var's columns too: scanpy's PCA, umap's where X_pca is gone,
    reads highly_variable, dpt its root's expression var['xroot'], and sanitize_anndata makes text
    columns categorical), obsm and obsp (and varm where `varm`) on the host, uns's dict tree."""
    return AnnData(
        X=_host(adata.X) if with_x else None, obs=adata.obs.copy(), var=adata.var.copy(),
        obsm={k: _host(v) for k, v in adata.obsm.items()},
        obsp={k: _host(v) for k, v in adata.obsp.items()},
        varm={k: _host(v) for k, v in adata.varm.items()} if varm else None,
        uns=_dict_tree(adata.uns),
    )  # fmt: skip


Prepare = Callable[[AnnData, dict], tuple[dict, Callable[[AnnData], None] | None]]


def run(name: str, adata: AnnData, kwargs: dict, prepare: Prepare | None = None, *, x: str = "rule",
        on_gpu: bool | None = None, host_tool: Callable | None = None):  # fmt: skip
    """Call `tl.<name>(adata, **kwargs)`: rapids-singlecell when the graph is on the GPU and it
    imports and takes every keyword given, else scanpy on a host shallow copy whose new
    obs/obsm/varm/uns entries are copied back (obsm and varm results go back to the GPU when the
    graph lives there).

    ``prepare(host, kwargs)``, when given, runs before scanpy's call on the host copy and returns
    the keywords to call it with and a function applied to ``adata`` after the copy-back (or None).
    `x`: whether the host copy gets X (and var's columns): ``"rule"`` where scanpy's representation
    rule would read it (`_needs_x`), ``"never"`` (a tool that does not read X), ``"always"``.
    `on_gpu`: whether the tool's input lives on the GPU (default: where the neighbour graph is).
    `host_tool`: what runs on the host copy instead of scanpy's `tl.<name>` (never rapids-singlecell).
    """
    check_anndata(adata, step=name)
    on_gpu = _gpu_graph(adata, kwargs.get("neighbors_key")) if on_gpu is None else on_gpu
    if kwargs.get("copy"):
        adata = adata.copy()
        kwargs = {**kwargs, "copy": False}
        run(name, adata, kwargs, prepare, x=x, on_gpu=on_gpu, host_tool=host_tool)
        return adata
    rsc = _rsc() if on_gpu and host_tool is None else None
    gpu_tool = getattr(rsc.tl, name, None) if rsc is not None else None
    untaken = _untaken(gpu_tool, kwargs) if gpu_tool is not None else []
    if gpu_tool is not None and not untaken:
        return gpu_tool(adata, **kwargs)
    if on_gpu and host_tool is None:
        why = (f"takes no {untaken}" if untaken else f"has no {name}" if rsc is not None
               else "is not importable")  # fmt: skip
        settings.info(f"{name}: rapids_singlecell {why}; running scanpy's {name} on the CPU.")
    tool = host_tool or _scanpy_tool(name)
    _check_keywords(name, tool, adata, kwargs)
    _check_named_inputs(name, adata, kwargs)
    host = host_copy(adata, with_x=x == "always" or (x == "rule" and _needs_x(adata, kwargs)))
    obs0, var0 = set(host.obs.columns), set(host.var.columns)
    obsm0, uns0 = dict(host.obsm.items()), _dict_tree(host.uns)
    finish = None
    if prepare is not None:
        kwargs, finish = prepare(host, kwargs)
    kwargs = {k: _host(v) if is_gpu(v) else v for k, v in kwargs.items()}  # e.g. louvain's adjacency
    out = tool(host, **kwargs)
    actual_for_results(adata, name)
    for frame, out_frame, before in ((host.obs, adata.obs, obs0), (host.var, adata.var, var0)):
        for col in frame.columns:  # new columns, and columns scanpy changed (sanitize's categoricals)
            if col not in before or not _same_column(frame[col], out_frame[col]):
                out_frame[col] = frame[col]
    # obsm results, and varm ones (scanpy's umap runs a PCA, loadings and all, where the graph
    # names no representation and X_pca is gone; the host copy starts with no varm)
    for where, before, out_to in ((host.obsm, obsm0, adata.obsm), (host.varm, {}, adata.varm)):
        for key, val in where.items():
            if key not in before or val is not before[key]:
                if on_gpu:  # dense to cupy, sparse (ingest's obsm['rep'] of a sparse X) to cupyx
                    val = array_to_gpu(val)
                out_to[key] = val
    for key, val in host.uns.items():  # new entries, and entries the tool changed (paga updates
        if key not in uns0 or _changed(uns0[key], val):  # an existing uns['paga'] in place)
            adata.uns[key] = val
    if finish is not None:
        finish(adata)
    return out
