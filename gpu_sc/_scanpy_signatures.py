"""The signatures of scanpy's functions that ours hand to scanpy's own code.

Those functions take ``**kwargs`` and pass on only the keywords given, so that scanpy's (or
rapids-singlecell's) defaults apply; without more, ``help()``, an editor's call tips and
``inspect.signature`` would show ``**kwargs`` instead of scanpy's keywords. `scanpy_signature`
gives such a function the signature of the stub of its name below, written out from scanpy 1.11
rather than read from scanpy, which is imported only when a tool runs. tests/test_package.py
checks what every function shows against the installed scanpy; the defaults that apply are
scanpy's, whatever version runs.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType


def scanpy_signature(name: str):
    """Decorator: the function's signature, as ``inspect`` and ``help()`` read it, is that of
    the stub `name` here (scanpy's)."""

    def wrap(fn):
        fn.__signature__ = inspect.signature(globals()[name])
        return fn

    return wrap


# scanpy.tl
def umap(adata, *, min_dist=0.5, spread=1.0, n_components=2, maxiter=None, alpha=1.0, gamma=1.0,
         negative_sample_rate=5, init_pos="spectral", random_state=0, a=None, b=None, method="umap", key_added=None,
         neighbors_key="neighbors", copy=False): ...  # fmt: skip


def leiden(adata, resolution=1, *, restrict_to=None, random_state=0, key_added="leiden", adjacency=None,
           directed=None, use_weights=True, n_iterations=-1, partition_type=None, neighbors_key=None, obsp=None,
           copy=False, flavor="leidenalg", **clustering_args): ...  # fmt: skip


def louvain(adata, resolution=None, *, random_state=0, restrict_to=None, key_added="louvain", adjacency=None,
            flavor="vtraag", directed=True, use_weights=False, partition_type=None,
            partition_kwargs=MappingProxyType({}), neighbors_key=None, obsp=None, copy=False): ...  # fmt: skip


def tsne(adata, n_pcs=None, *, use_rep=None, perplexity=30, metric="euclidean", early_exaggeration=12,
         learning_rate=1000, random_state=0, use_fast_tsne=False, n_jobs=None, key_added=None, copy=False): ...


def embedding_density(adata, basis="umap", *, groupby=None, key_added=None, components=None): ...


def diffmap(adata, n_comps=15, *, neighbors_key=None, random_state=0, copy=False): ...


def dpt(adata, n_dcs=10, *, n_branchings=0, min_group_size=0.01, allow_kendall_tau_shift=True, neighbors_key=None,
        copy=False): ...  # fmt: skip


def paga(adata, groups=None, *, use_rna_velocity=False, model="v1.2", neighbors_key=None, copy=False): ...


def draw_graph(adata, layout="fa", *, init_pos=None, root=None, random_state=0, n_jobs=None, adjacency=None,
               key_added_ext=None, neighbors_key=None, obsp=None, copy=False, **kwds): ...  # fmt: skip


def marker_gene_overlap(adata, reference_markers, *, key="rank_genes_groups", method="overlap_count", normalize=None,
                        top_n_markers=None, adj_pval_threshold=None, key_added="marker_gene_overlap",
                        inplace=False): ...  # fmt: skip


def sim(model, *, params_file=True, tmax=None, branching=None, nrRealizations=None, noiseObs=None, noiseDyn=None,
        step=None, seed=None, writedir=None): ...  # fmt: skip


# scanpy.pp
def recipe_weinreb17(adata, *, log=True, mean_threshold=0.01, cv_threshold=2, n_pcs=50, svd_solver="randomized",
                     random_state=0, copy=False): ...  # fmt: skip
