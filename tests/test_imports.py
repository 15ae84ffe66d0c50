"""Every gpu_sc module imports as the first gpu_sc module of a process. The suite imports them in
one order only, so an import cycle can pass it and break a script that starts elsewhere (a cycle
_ops -> _validation -> _ops stopped every PIC benchmark while the tests passed, 2026-12-04)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _helpers import SUBPROCESS_TIMEOUT

ROOT = Path(__file__).resolve().parents[1]

# In one child: each module imported after every gpu_sc module is dropped from sys.modules, so
# it comes first (third-party libraries stay loaded: only gpu_sc's own import order matters).
CHILD = r"""
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "gpu_sc" or m.startswith("gpu_sc.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-2))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "gpu_sc").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_each_module_imports_first():
    names = _modules()
    assert len(names) > 50 and "gpu_sc._ops.group_sums" in names
    r = subprocess.run([sys.executable, "-c", CHILD, *names], cwd=ROOT, capture_output=True, text=True,
                       timeout=SUBPROCESS_TIMEOUT, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
