"""UMAP's spectral initialisation as umap-learn computes it, without its per-component cost.

For a graph of many connected components, umap-learn lays out one component at a time and, for
each, converts and masks the whole graph: O(components x (cells + edges)), quadratic in the
cells. Here each component's subgraph is cut from one CSR in O(its edges). The eigen-solves, the
random draws and their order are umap-learn's own calls on the same matrices, so the layout is
the same array bit for bit and scanpy's ``tl.umap`` continues from it as it would from its own.
On 100,000 resampled PBMCs (2,111 components) this saves ~50 of scanpy's 1,117 s; most of the
rest is scikit-learn's shift-invert eigen-solve for the placement of the component centroids
and the epochs, which the same layout needs as they are.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def pruned_graph(connectivities, maxiter: int | None) -> sp.coo_matrix:
    """The graph umap-learn's ``simplicial_set_embedding`` embeds for scanpy's ``maxiter``: edges
    lighter than max / epochs dropped (those would never be sampled), on a copy. The epochs are
    `maxiter` above 10, else 500 up to 10,000 cells and 200 above (scanpy's and umap-learn's
    default, the same rule)."""
    graph = sp.coo_matrix(connectivities, copy=True)
    graph.sum_duplicates()
    default_epochs = 500 if graph.shape[0] <= 10000 else 200
    epochs = maxiter if maxiter is not None and maxiter > 10 else default_epochs
    graph.data[graph.data < graph.data.max() / float(epochs)] = 0.0
    graph.eliminate_zeros()
    return graph


def spectral_init(graph: sp.coo_matrix, data, dim: int, random_state, metric="euclidean",
                  metric_kwds=None) -> np.ndarray:
    """umap-learn's ``init="spectral"`` start (layout, scaled to 10, plus its 1e-4 noise), drawing
    from ``random_state`` exactly as umap-learn does, so the state afterwards is the same too."""
    from umap.spectral import spectral_layout
    from umap.umap_ import noisy_scale_coords

    metric_kwds = metric_kwds or {}
    n_comp, labels = connected_components(graph)
    if n_comp == 1:
        layout = spectral_layout(data, graph, dim, random_state, metric=metric, metric_kwds=metric_kwds)
    else:
        layout = _component_layouts(graph, data, n_comp, labels, dim, random_state, metric, metric_kwds)
    return noisy_scale_coords(layout, random_state, max_coord=10, noise=0.0001)


def _component_layouts(graph, data, n_comp, labels, dim, random_state, metric, metric_kwds):
    """umap-learn's multi-component layout: components placed by a spectral layout of their
    centroids, each laid out spectrally (or uniformly, when tiny) inside half the distance to its
    nearest neighbour component."""
    from sklearn.metrics import pairwise_distances
    from umap.spectral import component_layout, spectral_layout

    if n_comp > 2 * dim:
        centres = component_layout(data, n_comp, labels, dim, random_state, metric=metric,
                                   metric_kwds=metric_kwds)
    else:  # few components: the corners of a cross, as umap-learn places them
        k = int(np.ceil(n_comp / 2.0))
        base = np.hstack([np.eye(k), np.zeros((k, dim - k))])
        centres = np.vstack([base, -base])[:n_comp]
    members_of, local = _members(labels, n_comp)
    csr = graph.tocsr()
    out = np.empty((graph.shape[0], dim), dtype=np.float32)
    for label in range(n_comp):
        members = members_of[label]
        gaps = pairwise_distances([centres[label]], centres)
        half_gap = gaps[gaps > 0.0].min() / 2.0
        m = members.size
        if m < 2 * dim or m <= dim + 1:
            out[members] = random_state.uniform(low=-half_gap, high=half_gap, size=(m, dim)) + centres[label]
            continue
        # umap-learn's subgraph is rows then columns masked through CSC, read out as COO: the
        # same entries in the same (column-major) order as this CSR -> CSC -> COO.
        rows = csr[members]
        sub = sp.csr_matrix((rows.data, local[rows.indices], rows.indptr), shape=(m, m)).tocsc().tocoo()
        layout = spectral_layout(None, sub, dim, random_state, metric=metric, metric_kwds=metric_kwds)
        layout *= half_gap / np.max(np.abs(layout))
        out[members] = layout + centres[label]
    return out


def _members(labels: np.ndarray, n_comp: int):
    """Each component's cells in ascending order, and every cell's index within its component."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_comp + 1))
    local = np.empty(labels.size, dtype=np.int64)
    local[order] = np.arange(labels.size) - bounds[labels[order]]
    if labels.size <= np.iinfo(np.int32).max:
        local = local.astype(np.int32)  # the index type scipy gives the subgraph
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_comp)], local
