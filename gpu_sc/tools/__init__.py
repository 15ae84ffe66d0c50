"""Tools on the neighbour graph (scanpy's `tl`): rapids-singlecell on the GPU where available,
scanpy on the CPU otherwise."""

from ._leiden import leiden
from ._umap import umap

__all__ = ["umap", "leiden"]
