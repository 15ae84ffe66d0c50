"""Stand-in `cupyx.scipy.sparse`: scipy's CSR / CSC / COO matrices whose arrays are the
emulator's device arrays, so the GPU branches of whole steps (to_gpu, QC, normalisation, HVG,
scale, PCA, the PIC pair engine) run in CI through the emulated kernels.

It keeps the rules of cupyx that a CPU-only run would otherwise never meet:
- sparse data are bool / float32 / float64 / complex only (no integer counts);
- a matrix is built from a scipy matrix, a device dense array or device (data, indices,
  indptr), not from host NumPy arrays;
- reductions, products and dense conversions give device arrays (2-D for `sum(axis=...)`,
  as cupyx's matrices do), never np.matrix;
- a product with a host NumPy array is refused, as CuPy refuses mixing host and device.
Everything else is scipy's arithmetic: the results are scipy's, which cupyx matches.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import scipy.sparse as sp

from . import _device as to_device
from . import host_array

_ALLOWED_KINDS = "bfc"  # bool, float, complex: what cupyx sparse holds


def _device(a):
    """A dense result as a device array (scipy's np.matrix as a plain 2-D array, as cupyx)."""
    if isinstance(a, np.matrix):
        a = np.asarray(a)
    return to_device(a)


def _refuse_host(what: str, other) -> None:
    if host_array(other):
        raise TypeError(f"{what}: a host numpy.ndarray meets a device sparse matrix "
                        "(CuPy does not mix host and device arrays)")


def _called_by_scipy() -> bool:
    """True when the constructor runs inside scipy's own methods (they build results from
    their arrays); the cupyx rules apply to callers outside scipy only."""
    return sys._getframe(3).f_globals.get("__name__", "").startswith("scipy.")  # past __init__


class spmatrix:  # noqa: N801  (cupyx's name)
    """Behaviour shared by the stand-in classes (and their isinstance base, as in cupyx)."""

    _host_class: type

    def _check_init(self, arg1) -> None:
        if _called_by_scipy():
            return
        if isinstance(arg1, tuple) and len(arg1) == 3 and not all(
                isinstance(a, np.ndarray) and not host_array(a) for a in arg1):
            raise ValueError("data, indices, and indptr must be 1-D cupy arrays")
        if host_array(arg1):
            raise ValueError("Unsupported initializer format (a host numpy.ndarray)")

    def _to_device(self) -> None:
        if self.dtype.kind not in _ALLOWED_KINDS and not _called_by_scipy():
            raise ValueError("Only bool, float32, float64, complex64 and complex128 are supported")
        for name in ("data", "indices", "indptr", "row", "col"):
            a = self.__dict__.get(name)
            if a is not None:
                self.__dict__[name] = _device(a)

    # results in the stand-in classes
    @property
    def _csr_container(self):
        return csr_matrix

    @property
    def _csc_container(self):
        return csc_matrix

    @property
    def _coo_container(self):
        return coo_matrix

    def get(self, stream=None):
        """The scipy matrix of host copies, as cupyx's `.get()`."""
        out = self._host_class(self.shape, dtype=self.dtype)
        for name in ("data", "indices", "indptr", "row", "col"):
            if name in self.__dict__:
                setattr(out, name, np.array(self.__dict__[name]))
        return out

    # reductions and dense results: device arrays, 2-D for a matrix's axis reductions (computed
    # on a host copy: scipy's own reduction multiplies by a host vector of ones, which the
    # device-operand check would refuse)
    def sum(self, axis=None, dtype=None, out=None):
        return _device(np.asarray(self.get().sum(axis=axis, dtype=dtype)))

    def mean(self, axis=None, dtype=None, out=None):
        return _device(np.asarray(self.get().mean(axis=axis, dtype=dtype)))

    def astype(self, t, *args, **kwargs):
        """cupyx casts through its constructor, which takes no integer data."""
        if np.dtype(t).kind not in _ALLOWED_KINDS:
            raise ValueError("Only bool, float32, float64, complex64 and complex128 are supported")
        return super().astype(t, *args, **kwargs)

    def eliminate_zeros(self):
        """cupyx compresses by cuSPARSE's csr2csr_compress, which takes float and complex data
        only (a bool matrix's raised 'unsupported dtype' on an H200, 2026-12-04)."""
        if self.dtype.kind not in "fc":
            raise ValueError("unsupported dtype")
        super().eliminate_zeros()

    def max(self, axis=None, out=None):
        r = super().max(axis=axis)
        return _device(np.asarray(r)) if axis is None else r

    def min(self, axis=None, out=None):
        r = super().min(axis=axis)
        return _device(np.asarray(r)) if axis is None else r

    def diagonal(self, k=0):
        return _device(super().diagonal(k))

    def toarray(self, order=None, out=None):
        return _device(super().toarray(order=order))

    def todense(self, order=None, out=None):
        return self.toarray(order=order)

    def __getitem__(self, key):
        return _device(super().__getitem__(key))


def _binary(name: str):
    """A product or sum that refuses a host operand and gives device results."""

    def op(self, other):
        _refuse_host(name, other)
        return _device(getattr(super(spmatrix, self), name)(other))

    op.__name__ = name
    return op


for _name in ("__matmul__", "__rmatmul__", "__mul__", "__rmul__", "dot", "multiply",
              "__add__", "__radd__", "__sub__", "__rsub__"):
    setattr(spmatrix, _name, _binary(_name))


def _stand_in(host: type, fmt: str) -> type:
    def __init__(self, arg1, shape=None, dtype=None, copy=False, **kw):  # noqa: N807
        self._check_init(arg1)
        if sp.issparse(arg1) and not isinstance(arg1, spmatrix):
            copy = True  # a host matrix is copied to the device, as cupyx does
        host.__init__(self, arg1, shape=shape, dtype=dtype, copy=copy, **kw)
        self._to_device()

    cls = type(f"{fmt}_matrix", (spmatrix, host), {"__init__": __init__, "_host_class": host})
    cls.__module__ = f"cupyx.scipy.sparse._{fmt}"
    return cls


csr_matrix = _stand_in(sp.csr_matrix, "csr")
csc_matrix = _stand_in(sp.csc_matrix, "csc")
coo_matrix = _stand_in(sp.coo_matrix, "coo")
spmatrix.__module__ = "cupyx.scipy.sparse._base"
_CLASSES = {"csr": csr_matrix, "csc": csc_matrix, "coo": coo_matrix}


def _stacking(stack):
    """cupyx's hstack / vstack (scale's masked rows, Dask's concatenation of sparse blocks):
    scipy's on host copies, the result back on the device."""

    def stacked(blocks, format=None, dtype=None):
        out = stack([b.get() if isinstance(b, spmatrix) else b for b in blocks], format=format,
                    dtype=dtype)
        return _CLASSES[out.format](out)

    return stacked


def issparse(x) -> bool:
    return isinstance(x, spmatrix)


def _module() -> types.ModuleType:
    """The names gpu_sc, Dask and the tests use: three formats, spmatrix, issparse, stacking."""
    mod = types.ModuleType("cupyx.scipy.sparse")
    mod.spmatrix, mod.issparse = spmatrix, issparse
    mod.hstack, mod.vstack = _stacking(sp.hstack), _stacking(sp.vstack)
    mod.csr_matrix, mod.csc_matrix, mod.coo_matrix = csr_matrix, csc_matrix, coo_matrix
    return mod


def modules() -> dict[str, types.ModuleType]:
    """`cupyx`, `cupyx.scipy` and `cupyx.scipy.sparse` for sys.modules."""
    sparse = _module()
    scipy_mod = types.ModuleType("cupyx.scipy")
    scipy_mod.sparse = sparse
    root = types.ModuleType("cupyx")
    root.scipy = scipy_mod
    root.errstate = lambda **_: contextlib.nullcontext()  # linalg="raise": NumPy raises anyway
    return {"cupyx": root, "cupyx.scipy": scipy_mod, "cupyx.scipy.sparse": sparse}
