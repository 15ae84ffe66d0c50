"""Run our CUDA kernels on the CPU: the real `.cu` sources compiled with g++ against `emu.h`.

`emulated_cupy()` puts stand-in `cupy` and `cupyx.scipy.sparse` (sparse.py) modules in place
for the duration of a `with` block: NumPy's namespace whose functions return `ndarray`, a NumPy
subclass that gpu_sc takes for a device array (its type lives in a module named "cupy"), scipy's
sparse matrices holding such arrays, and a `RawModule` that compiles a kernel file for the CPU,
its functions launching like CuPy's: `fn(grid, block, args)`. The GPU branches of gpu_sc (the
primitives in `_ops`, the launch wrappers in `_kernels`, and whole steps on an AnnData moved by
`to_gpu`) then run unchanged, so CI checks what no type checker sees and a GPU would not report:

- each argument against the kernel's parameter: arrays must be C-contiguous with the element
  type of the pointer, scalars NumPy scalars of the parameter's size and kind, null pointers
  only where the wrapper passes one (CuPy would pass the wrong bytes silently);
- launch geometry within CUDA's limits;
- memory: every array is copied into its own mapping between inaccessible guard pages, and
  const inputs are read-only, so a read or write past an array's end (or a write to an input)
  stops the launch with the argument named;
- warp shuffles reached by only part of a warp, and barriers some threads never reach.

The stand-in namespace offers only names CuPy has (cupy_names.txt, from CuPy 14.2) and refuses
arithmetic between host and device arrays, and `np.asarray` & co. of a device array called from
gpu_sc, as CuPy does; sparse.py does the same for cupyx.

What it cannot show: races (the threads of a launch run one after another, atomics included),
the device compiler's arithmetic and speed. The tests' runs on a real GPU ('cuda') keep those.

The compiled library is cached per source text under the system temporary folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import uuid
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("emu.h")
CXX = shutil.which("g++")
PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_PROT_NONE, _PROT_READ, _PROT_RW = 0, 1, 3
_MAX_GRID = (2**31 - 1, 65_535, 65_535)
_LAUNCH_LOCK = threading.Lock()  # emu.h keeps the launch in globals: one launch at a time
_SYNC_CALLS = re.compile(r"__shfl_\w+|__ballot_sync|__syncthreads|gsc_warp_(sum|max)")


class KernelError(RuntimeError):
    """A launch the emulator refused or stopped (bad argument, geometry, memory, divergence)."""


# --------------------------------------------------------------------------- guarded memory
class Guarded:
    """A copy of `a` ending exactly at an inaccessible page, with another before its first page."""

    def __init__(self, a: np.ndarray, *, read_only: bool):
        self.source = a
        nbytes = a.nbytes
        body = -(-max(nbytes, 1) // PAGE) * PAGE
        self.map = mmap.mmap(-1, body + 2 * PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.start = base + PAGE + body - nbytes
        self.end = self.start + nbytes
        off = self.start - base
        self.array = np.frombuffer(self.map, dtype=a.dtype, count=a.size, offset=off).reshape(a.shape)
        self.array[...] = a
        self.base, self.body = base, body
        self._protect(base, PAGE, _PROT_NONE)
        self._protect(base + PAGE + body, PAGE, _PROT_NONE)
        if read_only:
            self._protect(base + PAGE, body, _PROT_READ)

    @staticmethod
    def _protect(addr, size, prot):
        if _LIBC.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(size), prot) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def near(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.body + 2 * PAGE

    def release(self, *, write_back: bool):
        self._protect(self.base, self.body + 2 * PAGE, _PROT_RW)
        if write_back:
            self.source[...] = self.array
        del self.array
        self.map.close()


# --------------------------------------------------------------------------- compilation
def _compile(code: str, names: list[str]) -> ctypes.CDLL:
    if CXX is None:
        raise RuntimeError("the kernel emulator needs g++")
    exports = "\n".join(f"GSC_EMU_EXPORT({i}, {e})" for i, e in enumerate(names))
    text = f'#include "{HEADER}"\n{code}\n{exports}\n'
    key = hashlib.sha256((text + HEADER.read_text()).encode()).hexdigest()[:20]
    cache = Path(tempfile.gettempdir()) / "gsc_cuda_emu"
    cache.mkdir(exist_ok=True)
    lib = cache / f"{key}.so"
    if not lib.exists():
        # names of this process alone: pytest-xdist workers (and gpu_run's tests part beside a
        # test run) compile the same kernels at once, and id() repeats across forked workers
        # (one worker's half-written .so once went into the cache: "undefined symbol")
        unique = f"{key}.{os.getpid()}.{uuid.uuid4().hex}"
        src = cache / f"{unique}.cpp"
        src.write_text(text)
        tmp = cache / f"{unique}.so"
        cmd = [CXX, "-std=c++17", "-O1", "-g", "-U_FORTIFY_SOURCE", "-ffp-contract=off", "-fno-fast-math", "-fPIC",
               "-shared", "-w", "-o", str(tmp), str(src)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        src.unlink(missing_ok=True)
        if res.returncode:
            raise RuntimeError(f"emulator build failed:\n{res.stderr[-4000:]}")
        tmp.replace(lib)
    return ctypes.CDLL(str(lib))


def _sync_kernels(code: str) -> set[str]:
    """Names of the `__global__` functions whose body (or a helper it names) shuffles or waits."""
    needs = set()
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(", code):
        depth, i = 0, code.index("{", m.end())
        start = i
        while True:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
            if depth == 0:
                break
        if _SYNC_CALLS.search(code[start:i]):
            needs.add(m.group(1))
    return needs


# --------------------------------------------------------------------------- launching
_CODES = {"f4": np.float32, "f8": np.float64, "i4": np.int32, "i8": np.int64, "u4": np.uint32,
          "u8": np.uint64, "u1": np.uint8, "i1": np.int8, "b1": np.bool_}  # fmt: skip


class Function:
    def __init__(self, lib, index: int, name: str, fibers: bool):
        self.name = name
        self.fibers = fibers
        self._launch = getattr(lib, f"gsc_emu_launch_{index}")
        sig = getattr(lib, f"gsc_emu_signature_{index}")
        sig.restype = ctypes.c_char_p
        self.params = sig().decode().split(",")

    def __call__(self, grid, block, args, **_):
        with _LAUNCH_LOCK:  # Dask's threads may launch at once
            self._call(grid, block, args)

    def _call(self, grid, block, args):
        grid, block = _dim3(grid), _dim3(block)
        if any(g < 1 or g > m for g, m in zip(grid, _MAX_GRID, strict=True)):
            raise KernelError(f"{self.name}: grid {grid} outside CUDA's limits {_MAX_GRID}")
        if min(block) < 1 or int(np.prod(block)) > 1024 or block[2] > 64:
            raise KernelError(f"{self.name}: block {block} outside CUDA's limits")
        if len(args) != len(self.params):
            raise KernelError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        keep, guards = [], []
        argv = (ctypes.c_void_p * len(args))()
        try:
            for i, (a, p) in enumerate(zip(args, self.params, strict=True)):
                cell = self._argument(i, a, p, guards)
                keep.append(cell)
                argv[i] = ctypes.cast(ctypes.pointer(cell), ctypes.c_void_p)
            err = ctypes.create_string_buffer(400)
            fault = ctypes.c_ulonglong(0)
            g3 = (ctypes.c_uint * 3)(*grid)
            b3 = (ctypes.c_uint * 3)(*block)
            rc = self._launch(g3, b3, argv, int(self.fibers), err, 400, ctypes.byref(fault))
            if rc == 2:
                raise KernelError(f"{self.name}: {self._where(fault.value, guards)}")
            if rc:
                raise KernelError(f"{self.name}: {err.value.decode()}")
        finally:
            for _, g, writable in guards:
                g.release(write_back=writable)

    def _argument(self, i, a, p, guards):
        what = f"{self.name} argument {i} ({p})"
        if p[0] == "P":
            if isinstance(a, np.uint64) and a == 0:
                return ctypes.c_void_p(0)
            if not isinstance(a, np.ndarray):
                raise KernelError(f"{what}: expected an array, got {type(a).__name__}")
            want = np.dtype(_CODES[p[2:]])
            if a.dtype != want:
                raise KernelError(f"{what}: array of {a.dtype}, the kernel reads {want}")
            if not a.flags.c_contiguous:
                raise KernelError(f"{what}: array is not C-contiguous")
            g = Guarded(a, read_only=p[1] == "c")
            guards.append((i, g, p[1] == "m"))
            return ctypes.c_void_p(g.start)
        if not isinstance(a, np.generic):
            raise KernelError(f"{what}: pass a NumPy scalar of the parameter's type, got {type(a).__name__}")
        want = np.dtype(_CODES[p[1:]])
        if a.dtype.kind != want.kind or a.dtype.itemsize != want.itemsize:
            raise KernelError(f"{what}: scalar of {a.dtype}, the kernel takes {want}")
        return np.ctypeslib.as_ctypes_type(want)(a.item())

    @staticmethod
    def _where(addr: int, guards) -> str:
        for i, g, _ in guards:
            if g.near(addr):
                if addr >= g.end:
                    return f"access {addr - g.end} bytes past the end of argument {i} ({g.end - g.start} bytes)"
                if addr < g.start:
                    return f"access {g.start - addr} bytes before argument {i}"
                return f"write to argument {i}, a const input"
        return f"invalid memory access at {addr:#x}, outside every array argument"


def _dim3(d) -> tuple[int, int, int]:
    d = tuple(int(v) for v in (d if isinstance(d, tuple | list) else (d,)))
    return d + (1,) * (3 - len(d))


class RawModule:
    """CPU stand-in for `cupy.RawModule(code=..., options=..., name_expressions=...)`."""

    def __init__(self, *, code: str, options=(), name_expressions=(), **_):
        self.names = list(name_expressions)
        self.lib = _compile(code, self.names)
        self.sync = _sync_kernels(code)

    def get_function(self, name: str) -> Function:
        i = self.names.index(name)
        return Function(self.lib, i, name, name.split("<", 1)[0] in self.sync)


# --------------------------------------------------------------------------- stand-in cupy
class HostReads:
    """How often the device was made to report to the host: a device scalar read by bool, int,
    float or .item(), a copy by .get(), and indexing by a boolean device mask (CuPy counts the
    mask's True values on the host to size the result). Each waits for every queued launch, so
    a loop that reads every step runs at the speed of its launches' latency, not its work."""

    count = 0

    @classmethod
    def add(cls) -> None:
        cls.count += 1


def _bool_mask(key) -> bool:
    return any(isinstance(k, ndarray) and k.dtype == bool for k in (key if isinstance(key, tuple) else (key,)))


class ndarray(np.ndarray):  # noqa: N801  (cupy's name)
    """A NumPy array that gpu_sc takes for a device array (its type lives in module 'cupy'),
    so the GPU branches of `gpu_sc._ops` run; `.get()` gives the plain host array."""

    def get(self):
        HostReads.add()
        return np.array(self)

    def __bool__(self):
        HostReads.add()
        return super().__bool__()

    def __int__(self):
        HostReads.add()
        return super().__int__()

    def __float__(self):
        HostReads.add()
        return super().__float__()

    def item(self, *args):
        HostReads.add()
        return super().item(*args)

    def __getitem__(self, key):
        if _bool_mask(key):
            HostReads.add()
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if _bool_mask(key):
            HostReads.add()
        super().__setitem__(key, value)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # CuPy refuses arithmetic between host and device arrays; NumPy's own functions
        # (the stand-in's namespace) build host temporaries internally, so only callers
        # outside NumPy are held to it
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith("numpy") and any(
                map(host_array, inputs + tuple(kwargs.get("out", ())))):
            raise TypeError(f"{ufunc.__name__}: a host numpy.ndarray meets a device array "
                            "(CuPy does not mix them)")
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, ndarray) else o for o in out)
        result = getattr(ufunc, method)(
            *(a.view(np.ndarray) if isinstance(a, ndarray) else a for a in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return tuple(map(_device, result)) if isinstance(result, tuple) else _device(result)


ndarray.__module__ = "cupy"


def host_array(a) -> bool:
    """A plain NumPy array, which CuPy will not mix with device arrays: a 0-d one too (CuPy 14
    wraps only Python and NumPy scalars, `_scalar.pyx`); NumPy scalars mix freely."""
    return isinstance(a, np.ndarray) and not isinstance(a, ndarray)


def _device(value):
    return value.view(ndarray) if isinstance(value, np.ndarray) and not isinstance(value, ndarray) else value


def _on_device(fn):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        return tuple(_device(o) for o in out) if isinstance(out, tuple) else _device(out)

    wrapped.__name__ = getattr(fn, "__name__", "function")
    return wrapped


def _copying_host_input(convert):
    """cupy.asarray & co. of a host array copy it to the device, so the result never shares
    the host array's memory (NumPy's would return the array itself)."""

    def wrapped(a, *args, **kwargs):
        out = convert(a, *args, **kwargs)
        host = isinstance(a, np.ndarray) and not isinstance(a, ndarray)
        return out.copy() if host and np.shares_memory(out, a) else out

    wrapped.__name__ = convert.__name__
    return wrapped


_CUPY_NAMES = frozenset(
    line for line in Path(__file__).with_name("cupy_names.txt").read_text().split("\n")
    if line and not line.startswith("#"))


def _namespace(source, prefix: str):
    """Module __getattr__: `source`'s attribute, refused when CuPy lacks the name (so code that
    works here only because NumPy has it fails here too), callables returning device arrays."""

    def attribute(name):
        if prefix + name not in _CUPY_NAMES:
            raise AttributeError(f"module 'cupy{'.' + prefix.rstrip('.') if prefix else ''}' "
                                 f"has no attribute '{name}' (CuPy lacks it)")
        value = getattr(source, name)
        if name in _CONVERTERS and not prefix:
            return _on_device(_copying_host_input(value))
        if callable(value) and not isinstance(value, type | np.ufunc):
            return _on_device(value if name.endswith("_like") else _refusing_host_arrays(value))
        return value

    return attribute


def _refusing_host_arrays(fn):
    """A CuPy function refuses NumPy arrays among its arguments (cupy.concatenate, where,
    bincount, searchsorted ... raise TypeError; only the converters copy them over), also
    inside a sequence argument such as concatenate's."""

    def wrapped(*args, **kwargs):
        for a in (*args, *kwargs.values()):
            items = a if isinstance(a, list | tuple) else (a,)
            if any(map(host_array, items)):
                raise TypeError(f"cupy.{fn.__name__}: a host numpy.ndarray argument (CuPy takes "
                                "device arrays; cupy.asarray copies one over)")
        return fn(*args, **kwargs)

    wrapped.__name__ = getattr(fn, "__name__", "function")
    return wrapped


def _module() -> types.ModuleType:
    """NumPy's namespace (CuPy's names only), its functions returning stand-in device arrays;
    ufuncs and types as they are (ufuncs keep the subclass of their inputs); the few CUDA
    runtime calls gpu_sc makes (device count and name, synchronise, memory pool)."""
    mod = types.ModuleType("cupy")
    mod.__getattr__ = _namespace(np, "")
    mod.linalg = types.ModuleType("cupy.linalg")
    mod.linalg.__getattr__ = _namespace(np.linalg, "linalg.")
    mod.ndarray = ndarray
    mod.asnumpy = lambda a, *_, **__: np.array(a)
    pool = types.SimpleNamespace(free_all_blocks=lambda: None, used_bytes=lambda: 0,
                                 total_bytes=lambda: 0)
    mod.get_default_memory_pool = lambda: pool

    class Device:
        id = 0

        def __init__(self, *_):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def synchronize(self):  # launches finish before they return
            pass

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda _: {"name": b"CPU kernel emulator"})
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    mod.__version__ = "emulated"
    mod.RawModule = RawModule
    return mod


_CONVERTERS = ("array", "asarray", "asanyarray", "ascontiguousarray")


# callers whose np.asarray & co. of a device array CuPy refuses: gpu_sc, and the host libraries
# gpu_sc hands arrays to (a device array given to scipy.stats raised on an H200, 2026-12-04); not
# scipy.sparse, whose methods the stand-in sparse classes inherit. Only calls through the numpy
# module are seen: a library that bound `asarray` at import (scipy.stats' norm.sf does) is not,
# so such hand-overs need a test of their own (test_wilcoxon_z_on_the_host)
_REFUSED_CALLERS = ("gpu_sc", "scipy.stats", "scipy.special", "scipy.linalg", "pandas", "sklearn")


def _refused_caller(frame) -> bool:
    """A refused caller, unless it runs under the stand-ins themselves (the stand-in sparse
    classes are scipy's, which convert their own arrays)."""
    if not frame.f_globals.get("__name__", "").startswith(_REFUSED_CALLERS):
        return False
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(__name__):
            return False
        frame = frame.f_back
    return True


def _refusing_implicit_copies(convert):
    """NumPy's converter that, called from gpu_sc or a host library, refuses a device array as
    CuPy does (`np.asarray(cupy_array)` raises: a host copy takes `.get()`)."""

    def wrapped(a, *args, **kwargs):
        if isinstance(a, ndarray) and _refused_caller(sys._getframe(1)):
            raise TypeError(f"np.{convert.__name__} of a device array: implicit conversion to a "
                            "NumPy array is not allowed (CuPy); use .get()")
        return convert(a, *args, **kwargs)

    wrapped.__name__ = convert.__name__
    return wrapped


_REFUSING: dict = {}


def _refusing_converters() -> dict:
    """The refusing converters, made once and made known to Numba as the originals: Numba
    resolves np.asarray & co. by identity when it compiles (np.partition's implementation calls
    them), and would otherwise fail to compile a function first met inside the block."""
    if not _REFUSING:  # NumPy's own converters: outside the block, as made on first entry
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()  # loads Numba's implementations of NumPy's functions
        typing = cpu_target.typing_context
        typing.refresh()
        for name in _CONVERTERS:
            convert = getattr(np, name)
            _REFUSING[name] = _refusing_implicit_copies(convert)
            with contextlib.suppress(ValueError):  # one Numba lacks (np.asanyarray)
                typing.insert_global(_REFUSING[name], typing.resolve_value_type(convert))
    return _REFUSING


@contextlib.contextmanager
def emulated_cupy():
    """`import cupy` / `import cupyx.scipy.sparse` give the stand-ins inside the block, and
    NumPy's converters refuse device arrays from gpu_sc; gpu_sc's compiled-module cache is
    cleared on entry and exit so no emulated module outlives it (nor a real one leaks in), and
    so is gpu_available's answer (the stand-in has a device)."""
    from gpu_sc import _backend, _kernels

    from .sparse import modules

    stand_ins = {"cupy": _module(), **modules()}
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    converters = {name: getattr(np, name) for name in _CONVERTERS}
    for name, refusing in _refusing_converters().items():
        setattr(np, name, refusing)
    _kernels._module.cache_clear()
    _backend.gpu_available.cache_clear()
    try:
        yield stand_ins["cupy"]
    finally:
        for name, convert in converters.items():
            setattr(np, name, convert)
        _kernels._module.cache_clear()
        _backend.gpu_available.cache_clear()
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
