"""One dispatch for every primitive: by where its operand lives (a registry like singledispatch).

An operand is in-memory `Parts` on the CPU or on the GPU, or a row-chunked Dask matrix
(`Chunked`). A primitive is written as its CPU implementation and decorated; a GPU version
registers beside it, and a Dask operand is run block by block, each block dispatched again::

    @primitive(chunked=REDUCE, per_row=("limits",))
    def flag_cols_above(p: Parts, limits): ...     # the CPU implementation

    @flag_cols_above.register(GPU)
    def _(p: Parts, limits): ...                   # imports its cupy kernel when it runs

- ``any_device=True``: the function is array-namespace code (`xp_of`), one version for both.
- ``chunked``: how the per-block results combine, a `Chunked` method: REDUCE (summed),
  ROWS (concatenated in row order) or UPDATE (in place on Parts; a lazy transformed copy of a
  Dask matrix, which the primitive then returns). `per_row` names the leading arguments with
  one entry per row, sliced to each block's rows. Anything else registers for CHUNKED itself.

A kind nothing was registered for is a TypeError. Nothing here imports cupy or Dask: GPU
implementations import their kernels when called, and `Chunked` imports Dask when used.
"""

from __future__ import annotations

import functools
import inspect

from ._chunked import Chunked
from ._layout import Parts, on_gpu

CPU, GPU, CHUNKED = "CPU", "GPU", "Dask"
REDUCE, ROWS, UPDATE = "reduce", "rows", "update"  # the `Chunked` methods that combine blocks


def storage(p) -> str:
    """CPU, GPU or CHUNKED: where the operand `p` lives."""
    if isinstance(p, Chunked):
        return CHUNKED
    if isinstance(p, Parts):
        return GPU if on_gpu(p) else CPU
    msg = f"primitives take Parts or Chunked (gpu_sc._ops.parts(x)), got {type(p).__name__}"
    raise TypeError(msg)


class Primitive:
    """A primitive's implementations by storage kind; calling it runs the one for its operand."""

    def __init__(self, cpu, *, any_device: bool, chunked: str | None, per_row: tuple[str, ...]):
        functools.update_wrapper(self, cpu)
        self._impls = {CPU: cpu, **({GPU: cpu} if any_device else {})}
        if chunked is not None:
            self._impls[CHUNKED] = self._blockwise(cpu, chunked, tuple(per_row))

    def register(self, kind: str):
        """Decorator: `fn` implements this primitive for operands of `kind`."""

        def add(fn):
            self._impls[kind] = fn
            return fn

        return add

    def __call__(self, p, *args, **kwargs):
        kind = storage(p)
        impl = self._impls.get(kind)
        if impl is None:
            msg = f"{self.__name__} takes no {kind} operand (it has {', '.join(self._impls)})"
            raise TypeError(msg)
        return impl(p, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<primitive {self.__module__}.{self.__qualname__} for {', '.join(self._impls)}>"

    def __reduce__(self):
        return self.__qualname__  # pickled by name, like the function it wraps (Dask workers)

    def _blockwise(self, cpu, how: str, per_row: tuple[str, ...]):
        """The CHUNKED implementation: this primitive on every block, combined by `how`."""
        signature = inspect.signature(cpu)
        first, *rest = signature.parameters
        if rest[: len(per_row)] != list(per_row):  # Chunked passes the slices right after the parts
            msg = f"{cpu.__name__}: per-row arguments {per_row} must follow the operand, in order"
            raise TypeError(msg)

        def over_blocks(c: Chunked, *args, **kwargs):
            bound = signature.bind(c, *args, **kwargs).arguments
            del bound[first]
            rows = tuple(bound.pop(name) for name in per_row)
            return getattr(c, how)(self, per_row=rows, **bound)

        return over_blocks


def primitive(*, any_device: bool = False, chunked: str | None = None, per_row: tuple[str, ...] = ()):
    """Decorator making a CPU implementation a `Primitive` (see the module docstring)."""
    return functools.partial(Primitive, any_device=any_device, chunked=chunked, per_row=per_row)
