"""Kill points for crash tests: with AUTOINTERP_KILL_AT="NAME:N" in the environment, the process sends itself
SIGKILL the N-th time it passes `kill_point("NAME")`.

Each stage calls `kill_point` right after it commits a unit of work (a chunk, a batch of statistics, an
explanation, ...), so a test can kill -9 a real process at an exact place in any stage and check that the rerun
ends with the same database as an uninterrupted run. Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "AUTOINTERP_KILL_AT"

# Passes per name in this process: a process-wide count is the point (the N-th commit of a stage).
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, count = spec.rpartition(":")
    if wanted != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
