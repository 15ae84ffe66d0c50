"""Package-wide settings, and where gpu_sc's messages to the user point."""

from __future__ import annotations

import builtins
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

#: scanpy's default settings.N_PCS (`default_n_pcs()`: the one in force)
N_PCS = 50
#: memory of one working block of the primitives (a dense float64 row block, a distance tile)
BLOCK_BYTES = 64 * 2**20
#: scanpy's verbosity from which its logg.info / hint / debug lines show, and their prefixes
INFO, HINT, DEBUG = 2, 3, 4
_PREFIX = {INFO: "", HINT: "--> ", DEBUG: "    "}
#: set inside `Settings.muted`
_MUTED: ContextVar[bool] = ContextVar("gpu_sc_log_muted", default=False)


@dataclass
class Settings:
    """`verbosity`: 0 silent, 1 (default) one line per step where a step has news, 2 progress and
    scanpy's info lines ("computing PCA" ... "    finished (0:00:00)"), 3 also its hints (the
    keys added), 4 its debug lines. Where scanpy is imported its verbosity counts too (`log`: the
    higher of the two), so a swapped script logs what scanpy's did; a script that silences scanpy
    (``sc.settings.verbosity = 0``, errors only) silences gpu_sc too, and one that sends scanpy's
    log to a file (``sc.settings.logfile = "run.log"``, a path) finds gpu_sc's lines there too.
    (A stream given instead of a path is not followed: scanpy's default stream is the stderr or
    stdout of its import, which cannot be told from one set by hand; ours is the current one:
    stdout in IPython / Jupyter, as scanpy's default there, else stderr.)"""

    verbosity: int = 1

    def info(self, msg: str) -> None:
        if self._level() >= 1:
            print(msg, file=_log_stream(), flush=True)

    def warning(self, msg: str) -> None:
        """scanpy's `logg.warning`: "WARNING: msg" from verbosity 1."""
        self.info(f"WARNING: {msg}")

    def progress(self, msg: str) -> None:
        if self._level() >= 2:
            print(msg, file=_log_stream(), flush=True)

    def log(self, msg: str, *, level: int = INFO, start: float | None = None, deep: str | None = None) -> float:
        """A line as scanpy's `logg.info` / `hint` / `debug` writes it, shown from verbosity `level`
        (INFO, HINT, DEBUG): `deep` joins it (": deep") one level further up; `start` (the value an
        earlier call returned) adds the time since, in place of "{time_passed}" or at the end.
        Returns the time now, for a later `start`."""
        now = time.monotonic()
        shown = self._shown_level()
        if shown >= level:
            passed = "" if start is None else str(timedelta(seconds=int(now - start)))
            suffix = f" ({passed})" if passed and "{time_passed}" not in msg else ""
            msg = msg.replace("{time_passed}", passed)
            if deep is not None and shown > level:
                msg = f"{msg}: {deep}"
            print(_PREFIX[level] + msg + suffix, file=_log_stream(), flush=True)
        return now

    def log_added_var(self, columns) -> None:
        """scanpy's hint on the var columns a gene selection wrote: (name, kind) pairs."""
        self.log("added\n" + "\n".join(f"    {name!r}, {kind} vector (adata.var)" for name, kind in columns),
                 level=HINT)

    def shows(self, level: int = INFO) -> bool:
        """Whether `log` writes a line of `level`: for a line whose value costs work (a Dask count)."""
        return self._shown_level() >= level

    @contextmanager
    def muted(self):
        """No `log` lines within: a step's inner call whose counterpart in scanpy writes none
        (scrublet's PCA, umap's choice of representation). Warnings and `info` still show."""
        token = _MUTED.set(True)
        try:
            yield
        finally:
            _MUTED.reset(token)

    def _shown_level(self) -> int:
        """The verbosity scanpy's lines show at: ours or scanpy's, whichever is higher, unless either
        silences (0) or `muted` is on."""
        if _MUTED.get() or self._level() == 0:
            return 0
        theirs = _scanpy_int("verbosity")
        return max(self.verbosity, 0 if theirs is None else theirs)

    def _level(self) -> int:
        """Ours, or 0 where scanpy is imported and set to errors only."""
        theirs = _scanpy_int("verbosity")
        return 0 if theirs is not None and theirs < 1 else self.verbosity


settings = Settings()


def _log_stream():
    """The file scanpy logs to where a script has given it one (``sc.settings.logfile = path``);
    else scanpy's default: the current stdout in IPython / Jupyter (where stderr shows in red,
    apart from scanpy's lines), the current stderr elsewhere. (scanpy keeps the stream of its
    import, which a test's capture may since have replaced: the current one is what a user sees.)"""
    stream = _scanpy_setting("logfile") if _scanpy_setting("logpath") is not None else None
    if hasattr(stream, "write") and not getattr(stream, "closed", False):
        return stream
    return sys.stdout if getattr(builtins, "__IPYTHON__", False) else sys.stderr


def default_n_pcs() -> int:
    """scanpy's `settings.N_PCS` where scanpy is imported (a script may change it), else 50: the
    components computed by default, and the gene count above which a graph's representation is
    X_pca (made first where missing)."""
    theirs = _scanpy_int("N_PCS")
    return N_PCS if theirs is None else theirs


def _scanpy_setting(name: str):
    """scanpy's `settings.<name>` where scanpy is imported (a script's, as it set it); None without
    scanpy, or for a partly imported or unusual one."""
    scanpy = sys.modules.get("scanpy")
    try:
        return None if scanpy is None else getattr(scanpy.settings, name, None)
    except AttributeError:  # no settings yet (scanpy partly imported)
        return None


def _scanpy_int(name: str) -> int | None:
    """`_scanpy_setting` as an int (verbosity, N_PCS); None where there is none or it is not one."""
    value = _scanpy_setting(name)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class Progress:
    """`what: done/total unit` where our lines go (`_log_stream`) at verbosity 2, about every
    tenth of the work and at the end, for loops long enough to want it (exact kNN over many
    cells). `sync` (e.g. a device synchronisation) runs before a line is written, so that
    queued GPU work is done."""

    def __init__(self, what: str, total: int, unit: str = "cells", sync=None):
        self.what, self.total, self.unit, self.sync = what, int(total), unit, sync
        self._next = 0

    def __call__(self, done: int) -> None:
        if settings._level() < 2 or (done < self._next and done < self.total):
            return
        self._next = done + max(1, self.total // 10)
        if self.sync is not None:
            self.sync()
        settings.progress(f"{self.what}: {done:,}/{self.total:,} {self.unit}")


def user_stacklevel() -> int:
    """The stacklevel for a warnings.warn in the function that calls this: the first frame outside
    gpu_sc, so that the warning names the user's line whichever gpu_sc step or helper led to it."""
    package = str(Path(__file__).parent)
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
