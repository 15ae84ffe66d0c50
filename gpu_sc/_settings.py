"""Package-wide settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Settings:
    """`verbosity`: 0 silent, 1 (default) one line per step where a step has news, 2 progress."""

    verbosity: int = 1

    def info(self, msg: str) -> None:
        if self.verbosity >= 1:
            print(msg, file=sys.stderr)

    def progress(self, msg: str) -> None:
        if self.verbosity >= 2:
            print(msg, file=sys.stderr)


settings = Settings()
