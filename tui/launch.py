"""The `autointerp-tui` entry point: start-up work before the app module is imported."""

from __future__ import annotations

import sys


def main() -> None:
    # sqlite-utils imports pandas when it is installed, only to map pandas timestamps to TEXT on insert; the TUI
    # never inserts pandas values, and that import is half a second of a 1.5 s start. Mark pandas absent for
    # this process alone (the engine and the tests, which import it, are untouched).
    if "pandas" not in sys.modules:
        sys.modules["pandas"] = None  # type: ignore[assignment]
    from .command import main as run

    run(prog_name="autointerp-tui")
