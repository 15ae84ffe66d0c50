"""Package-wide settings, and where gpu_sc's messages to the user point."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

#: scanpy's settings.N_PCS: components computed by default, and the gene count above which
#: neighbors runs PCA first when there is no X_pca
N_PCS = 50
#: memory of one working block of the primitives (a dense float64 row block, a distance tile)
BLOCK_BYTES = 64 * 2**20


@dataclass
class Settings:
    """`verbosity`: 0 silent, 1 (default) one line per step where a step has news, 2 progress.
    A script that silences scanpy (``sc.settings.verbosity = 0``, errors only) silences gpu_sc
    too, and one that sends scanpy's log to a file (``sc.settings.logfile = "run.log"``, a path)
    finds gpu_sc's lines there too: a swapped script keeps its quiet and its log. (A stream
    given instead of a path is not followed: scanpy's default stream is the stderr or stdout of
    its import, which cannot be told from one set by hand; ours is the current stderr.)"""

    verbosity: int = 1

    def info(self, msg: str) -> None:
        if self._level() >= 1:
            print(msg, file=_log_stream(), flush=True)

    def progress(self, msg: str) -> None:
        if self._level() >= 2:
            print(msg, file=_log_stream(), flush=True)

    def _level(self) -> int:
        """Ours, or 0 where scanpy is imported and set to errors only."""
        scanpy = sys.modules.get("scanpy")
        try:
            silenced = scanpy is not None and int(scanpy.settings.verbosity) < 1
        except (AttributeError, TypeError, ValueError):  # a partly imported or unusual scanpy
            silenced = False
        return 0 if silenced else self.verbosity


settings = Settings()


def _log_stream():
    """The file scanpy logs to where a script has given it one (``sc.settings.logfile = path``);
    else the current stderr (scanpy's default stream is the stderr or stdout of its import,
    which a notebook or a test's capture may since have replaced)."""
    scanpy = sys.modules.get("scanpy")
    try:
        stream = scanpy.settings.logfile if getattr(scanpy.settings, "logpath", None) is not None else None
    except AttributeError:  # no scanpy, or a partly imported or unusual one
        stream = None
    return stream if hasattr(stream, "write") and not getattr(stream, "closed", False) else sys.stderr


class Progress:
    """`what: done/total unit` on stderr (or scanpy's log file) at verbosity 2, about every
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
