"""Fault injection for the crash-safety check (``benchmarks/fault_injection.py``).

Code that writes state calls :func:`crash_point` at the moments a kill would hurt most. With
``TEXTDISTILL_CRASH_AT=NAME:N`` the process kills itself with SIGKILL the N-th time it passes
``NAME``; with ``TEXTDISTILL_CRASH_LOG=FILE`` it appends ``NAME:N`` for every point it passes,
so a script can list them all and kill a run at each. Without either variable it does nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "TEXTDISTILL_CRASH_AT"
CRASH_LOG_ENV = "TEXTDISTILL_CRASH_LOG"
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Count a pass through ``name``; log it, or die here if this pass is the chosen one."""
    target, log = os.environ.get(CRASH_AT_ENV), os.environ.get(CRASH_LOG_ENV)
    if not (target or log):
        return
    count = _passed[name] = _passed.get(name, 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{name}:{count}\n")
    if target == f"{name}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
