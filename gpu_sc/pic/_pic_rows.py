"""The tested PICs' counts, a run of rows at a time: what the matched interaction test reads.

The test walks its PICs in chunks (`_matched.Doublets`): each chunk's counts on the host (for the
integer check and the exact tails) and where its sums run (the GPU for PICs there). A matrix in
memory is checked and sliced; a Dask array's row blocks are computed only when a chunk needs
them, so memory holds a block and a chunk, not every PIC. The last block is kept (chunks advance
through it) and so is the last chunk: where all PICs make one chunk, the test's four passes over
them read the blocks once; with more chunks, each pass reads them again.
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp

from .._backend import blocks_like, is_dask, is_gpu
from .._ops import Chunked
from .._validation import canonical
from ._loglik import on_device
from ._simulate import _counts_csr


class PicRows:
    """Rows `rows` (sorted ints) of the PIC counts `x` (scipy, cupyx or numpy / cupy, or a Dask
    array of such row blocks), numbered 0 .. len(rows) - 1."""

    def __init__(self, x, rows: np.ndarray, *, step: str, what: str = "observed counts"):
        self.rows = np.asarray(rows, dtype=np.int64)
        self._step, self._what = step, what
        self.n_genes = int(x.shape[1])
        if is_dask(x):
            x = canonical(x, step=step)
            self._blocks = x.to_delayed().ravel()
            self._ranges = Chunked(x).row_ranges
            self._block_of = np.searchsorted(np.array([hi for _, hi in self._ranges]), self.rows, side="right")
            self._last_block: tuple[int, sp.csr_matrix] | None = None
            self.gpu = is_gpu(blocks_like(x))
            self._host = self._device = self._last_chunk = None
        else:
            self.gpu = is_gpu(x)
            self._host = _counts_csr(x, step=step, what=what)[self.rows]
            self._device = self._on_device(self._host)

    @classmethod
    def of(cls, matrix) -> PicRows:
        """Every row of a CSR matrix already checked (scipy, or cupyx: its sums run there)."""
        out = cls.__new__(cls)
        out.rows, out.n_genes, out.gpu = np.arange(matrix.shape[0]), int(matrix.shape[1]), is_gpu(matrix)
        out._host = matrix.get() if out.gpu else matrix
        out._device = matrix
        return out

    @property
    def xp(self):
        """numpy or cupy: where the sums run."""
        return importlib.import_module("cupy") if self.gpu else np

    @property
    def sparse(self):
        """scipy.sparse or cupyx.scipy.sparse: where the sums run."""
        return importlib.import_module("cupyx.scipy.sparse") if self.gpu else sp

    def host(self, start: int, stop: int) -> sp.csr_matrix:
        """PICs start .. stop - 1 as a checked float64 host CSR."""
        if self._host is not None:
            return self._host[start:stop]
        if self._last_chunk is not None and self._last_chunk[0] == (start, stop):
            return self._last_chunk[1]
        want = self.rows[start:stop]
        if want.size == 0:
            return sp.csr_matrix((0, self.n_genes))
        pieces = []
        for b in np.unique(self._block_of[start:stop]):
            lo = self._ranges[b][0]
            local = want[self._block_of[start:stop] == b] - lo
            pieces.append(self._block(int(b))[local])
        self._last_chunk = ((start, stop), sp.vstack(pieces, format="csr"))
        return self._last_chunk[1]

    def on_device(self, start: int, stop: int):
        """PICs start .. stop - 1 where the sums run (cupyx for PICs on the GPU)."""
        if self._device is not None:
            return self._device[start:stop]
        return self._on_device(self.host(start, stop))

    def _on_device(self, host: sp.csr_matrix):
        return on_device(host, "gpu" if self.gpu else "cpu")

    def _block(self, b: int) -> sp.csr_matrix:
        """Row block b computed (by the active Dask scheduler) and checked; the last one kept."""
        if self._last_block is None or self._last_block[0] != b:
            block = self._blocks[b].compute()
            self._last_block = (b, _counts_csr(block, step=self._step,
                                           what=f"{self._what}, row block {b}"))  # fmt: skip
        return self._last_block[1]
