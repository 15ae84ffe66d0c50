"""Dask arrays chunked by rows: the primitives run on them block by block.

A matrix too large for one GPU (or for host memory) arrives as a Dask array whose blocks are
row ranges with every column: scipy / cupyx sparse matrices or numpy / cupy arrays. `Chunked`
is its counterpart of `Parts`: a primitive given a `Chunked` runs itself on the `Parts` of each
block (on whatever worker, CPU or GPU, holds it — dask-cuda puts one GPU behind each worker)
and combines the per-block results:

- `reduce`: results that add up over rows (column sums, Gram matrices) are summed pairwise in
  the task graph, so only the final sum reaches the caller;
- `reduce_groups`: the same per group of rows (batches), every group in one pass;
- `rows`: per-row results (totals, top-n sums, projections) are concatenated in row order;
- `update`: an in-place transformation becomes a lazy one on a copy of each block (Dask blocks
  may be shared, so they are never modified).

Arguments with one entry per row (`per_row`) are sliced to each block's rows. Nothing here
imports Dask unless a Dask array is passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import is_dask, is_gpu, is_sparse, sparse_format, to_host, xp_of
from ._layout import Parts, in_layout, parts, summed_duplicates


def operand(x) -> Parts | Chunked:
    """What the primitives take (exported as `gpu_sc._ops.parts`): the `Chunked` of a
    row-chunked Dask array, the `Parts` of an in-memory CSR or C-contiguous dense matrix."""
    return Chunked(x) if is_dask(x) else parts(x)


def whole_rows(x: Any) -> Any:
    """A Dask matrix with every block holding whole rows: one chunked along genes too (as
    anndata's and scanpy's helpers make them) is rechunked lazily, so its row bands are joined
    when computed; the user's array itself is not changed. Other arrays come back as they are."""
    return x.rechunk({1: -1}) if getattr(x, "ndim", 0) == 2 and len(x.chunks[1]) != 1 else x


def check_chunked(x: Any, *, step: str) -> None:
    """A 2-D Dask array of known row chunks with all columns in one chunk, or a clear error."""
    if x.ndim != 2:
        msg = f"{step}: expected a 2-D Dask array (cells x genes), got {x.ndim} dimensions."
        raise ValueError(msg)
    if len(x.chunks[1]) != 1:
        msg = (
            f"{step}: the Dask array is chunked along genes ({len(x.chunks[1])} column chunks); "
            "gpu_sc needs whole rows in each block: x = x.rechunk({1: -1})."
        )
        raise ValueError(msg)
    if any(np.isnan(c) for c in x.chunks[0]):
        msg = f"{step}: the Dask array's row chunk sizes are unknown; call x.compute_chunk_sizes() first."
        raise ValueError(msg)


def block_parts(block) -> Parts:
    """`Parts` of one block: CSC / COO become CSR (duplicate entries summed, as in memory where
    it matters: a count of stored values, a square), dense blocks C-contiguous."""
    return parts(summed_duplicates(in_layout(block)))


class Chunked:
    """A row-chunked Dask matrix as the primitives see it (the Dask counterpart of `Parts`)."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        bounds = np.cumsum((0, *array.chunks[0]))
        self.row_ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    @property
    def xp(self):
        """numpy or cupy: where the blocks live."""
        return xp_of(self.array._meta)

    @property
    def on_gpu(self) -> bool:
        """Whether the meta says the blocks live on the GPU (each block is checked against it)."""
        return is_gpu(self.array._meta)

    def _tasks(self, fn, args, kwargs, per_row):
        import dask

        call = dask.delayed(_on_block, pure=False)  # no hashing of (device) arguments: computed at once
        blocks = self.array.to_delayed().ravel()
        return [
            call(fn, blk, tuple(a[lo:hi] for a in per_row), args, kwargs, self.on_gpu)
            for blk, (lo, hi) in zip(blocks, self.row_ranges, strict=True)
        ]

    def reduce(self, fn, *args, per_row=(), **kwargs):
        """Sum over blocks of fn(block parts, *per_row slices, *args, **kwargs) (a tuple of
        arrays / numbers, None entries allowed; booleans combine by `or`), computed."""
        return _summed(self._tasks(fn, args, kwargs, per_row)).compute()

    def reduce_groups(self, fn, codes, *args, merge=None):
        """{group: sum over blocks of fn(parts of the block's rows in the group, group, *args)}
        for the groups of rows `codes` (host ints per row; negative: in none), computed in one
        pass: each block is read once for every group, where a `reduce` per group reads the
        whole matrix once each. fn gets a copy of the rows, which it may change. `merge(a, b)`:
        how two row ranges' results of a group combine, where not by summing."""
        import functools

        import dask

        call = dask.delayed(_groups_on_block, pure=False)
        blocks = self.array.to_delayed().ravel()
        tasks = [call(fn, blk, codes[lo:hi], args, self.on_gpu)
                 for blk, (lo, hi) in zip(blocks, self.row_ranges, strict=True)]  # fmt: skip
        return _summed(tasks, add=functools.partial(_add_groups, add=merge)).compute()

    def rows(self, fn, *args, per_row=(), **kwargs):
        """fn's per-row results (an array or a tuple of arrays) over all blocks, in row order."""
        import dask

        return _stacked(dask.compute(*self._tasks(fn, args, kwargs, per_row)))

    def rows_and_sums(self, row_fn, sum_fn, *args, sums_of_rows: bool = False):
        """(`rows` of row_fn(parts, *args), `reduce` of sum_fn(parts)) in one pass: each block
        is read once for both (a lazily read file is read once, not twice). `sums_of_rows`:
        sum_fn(parts, the block's row_fn result) in the same task, for sums that need them."""
        import dask

        if sums_of_rows:
            both = self._tasks(_rows_then_sums, (row_fn, sum_fn, args), {}, ())
            rows, sums = [t[0] for t in both], [t[1] for t in both]
        else:
            rows, sums = self._tasks(row_fn, args, {}, ()), self._tasks(sum_fn, (), {}, ())
        per_row, summed = dask.compute(rows, _summed(sums))
        return _stacked(per_row), summed

    def update(self, fn, *args, per_row=(), dtype=None, keep_format=False, **kwargs):
        """A lazy Dask array: each block copied (cast to `dtype` if given) and transformed in
        place by fn(block parts, *per_row slices, *args, **kwargs). Sparse blocks come back as
        CSR, CSC ones as CSC with `keep_format` (for steps whose in-memory result keeps a CSC's
        format, so that the lazy one computes to it)."""
        import dask.array as da

        dtype = np.dtype(dtype or self.array.dtype)
        columns = row_columns(self.array, per_row)
        meta = self.array._meta
        if is_sparse(meta) and sparse_format(meta) not in ("csr", "csc" if keep_format else "csr"):
            meta = meta.tocsr()
        return da.map_blocks(_updated, self.array, *columns, fn=fn, dtype_=dtype, args=args, kwargs=kwargs,
                             on_gpu=self.on_gpu, keep_format=keep_format, dtype=dtype,
                             meta=meta.astype(dtype))  # fmt: skip

    def take_rows(self, rows):
        """Rows `rows` (sorted host ints) as a lazy Dask array: each block keeps its own
        selected rows and blocks left empty are dropped, so no data moves between blocks
        (Dask's x[rows] regroups rows into new blocks, concatenating pieces of several)."""
        import dask.array as da

        keep = np.zeros(self.shape[0], dtype=bool)
        keep[rows] = True
        counts = [int(np.count_nonzero(keep[lo:hi])) for lo, hi in self.row_ranges]
        used = [i for i, c in enumerate(counts) if c] or [0]  # no rows: one empty block
        (column,) = row_columns(self.array, (keep,))
        return da.map_blocks(
            _block_rows, self.array.blocks[used], column.blocks[used],
            chunks=(tuple(counts[i] for i in used), self.array.chunks[1]),
            dtype=self.array.dtype, meta=self.array._meta,
        )  # fmt: skip


    def take_columns(self, cols):
        """Columns `cols` (host ints) as a lazy Dask array; each block indexes with them on its
        own device (cupyx sparse takes integer, not boolean, indices)."""
        import dask.array as da

        return da.map_blocks(_block_columns, self.array, cols=cols, chunks=(self.array.chunks[0], (cols.size,)),
                             dtype=self.array.dtype, meta=self.array._meta)  # fmt: skip


def row_columns(array, per_row) -> list:
    """Per-row host/device vectors as (n, 1) Dask arrays chunked like `array`'s rows, to pass
    beside it to map_blocks: each task then carries its own slice only."""
    import dask.array as da

    return [da.from_array(a.reshape(-1, 1), chunks=(array.chunks[0], 1), asarray=False, name=False) for a in per_row]


def _block_rows(block, column):
    return block[xp_of(block).asarray(np.flatnonzero(to_host(column[:, 0])))]


def _block_columns(block, *, cols):
    return block[:, xp_of(block).asarray(cols)]


def check_block_device(block, on_gpu: bool) -> None:
    """A clear error where a block lives on another device than the Dask array's meta says:
    the steps pick numpy or cupy from the meta, and a GPU block under a numpy meta (or the
    reverse) otherwise fails deep inside, after a whole pass, with CuPy's 'implicit conversion'."""
    if is_gpu(block) == on_gpu or block.shape[0] == 0:  # an empty block holds nothing to mix
        return
    where, meta = ("GPU (CuPy)", "host (NumPy/SciPy)") if not on_gpu else ("host (NumPy/SciPy)", "GPU (CuPy)")
    msg = (f"a block of the Dask array is a {where} array where the array's meta is a {meta} array; "
           "give the blocks' kind when building it (da.map_blocks / from_array(..., meta=cupy.empty((0, 0), "
           "dtype)) for GPU blocks, numpy.empty for host ones), or move every block with "
           "x.map_blocks(cupy.asarray) / x.map_blocks(cupy.asnumpy).")  # fmt: skip
    raise TypeError(msg)


def _on_block(fn, block, per_row, args, kwargs, on_gpu):
    check_block_device(block, on_gpu)
    return fn(block_parts(block), *per_row, *args, **kwargs)


def _rows_then_sums(p, row_fn, sum_fn, args) -> tuple:
    rows = row_fn(p, *args)
    return rows, sum_fn(p, rows)


def _groups_on_block(fn, block, codes, args, on_gpu) -> dict:
    """{group: fn(parts of a copy of the block's rows in the group, group, *args)}."""
    check_block_device(block, on_gpu)
    block = in_layout(block)
    xp = xp_of(block)
    out = {}
    for g in np.unique(codes[codes >= 0]):
        rows = block[xp.asarray(np.flatnonzero(codes == g))]  # a copy (integer indexing)
        out[int(g)] = fn(block_parts(rows), int(g), *args)
    return out


def _updated(block, *columns, fn, dtype_, args, kwargs, on_gpu, keep_format):
    """A transformed copy of `block` (CSR or C-contiguous dense; a CSC block stays CSC with
    `keep_format`)."""
    check_block_device(block, on_gpu)
    fmt = sparse_format(block)
    # astype copies (numpy, scipy and cupyx alike); duplicates summed here, so that the parts
    # changed in place are those of the block returned (block_parts would check them again)
    block = summed_duplicates(in_layout(block).astype(dtype_))
    p = parts(block)
    fn(p, *(c[:, 0] for c in columns), *args, **kwargs)
    if not is_sparse(block):
        return p.data.reshape(p.shape)
    return block.tocsc() if keep_format and fmt == "csc" else block


def _summed(tasks, add=None):
    """The pairwise sum of delayed partials (by `add`, default `_add`): the caller receives one
    sum, not every partial."""
    import dask

    add = dask.delayed(add or _add, pure=False)
    while len(tasks) > 1:
        tasks = [add(*tasks[i : i + 2]) if i + 1 < len(tasks) else tasks[i] for i in range(0, len(tasks), 2)]
    return tasks[0]


def _add_groups(a: dict, b: dict, add=None) -> dict:
    """Per-group partials of two row ranges: combined by `add` (default: summed) where both hold
    the group."""
    add = add or _add
    return {g: add(a[g], b[g]) if g in a and g in b else a.get(g, b.get(g)) for g in sorted(a.keys() | b.keys())}


def _stacked(results):
    """Per-block results (arrays, or tuples of arrays) concatenated in row order."""
    if not isinstance(results[0], tuple):
        return _concat(list(results))
    return tuple(_concat([r[i] for r in results]) for i in range(len(results[0])))


def _add(a, b):
    if not isinstance(a, tuple):
        return _add((a,), (b,))[0]
    return tuple(
        None if u is None else (u | v if getattr(u, "dtype", None) == np.bool_ else u + v)
        for u, v in zip(a, b, strict=True)
    )


def _concat(arrays):
    if is_gpu(arrays[0]):
        import cupy as cp

        return cp.concatenate(arrays)
    return np.concatenate(arrays)
