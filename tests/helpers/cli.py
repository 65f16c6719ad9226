"""The `autointerp` command line, in a fresh process or in this one."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    """The real `autointerp` command line in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "autointerp.engine.commands.cli", *args], capture_output=True, text=True, **kw
    )


def invoke_cli(*args) -> subprocess.CompletedProcess:
    """The `autointerp` command line run in this process through click's CliRunner: the same command, arguments,
    stdout, stderr and exit status as `run_cli`, without a fresh interpreter's seconds of imports (torch...). For
    tests about what a command does (report, info, export); kills, crashes and start-up need `run_cli`."""
    from click.testing import CliRunner

    from autointerp.engine.commands.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a command that raised: its traceback, not a bare exit status 1
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


def batch_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "autointerp.engine.commands.cli", "batch", *map(str, args)]
