"""What every command's click wiring shares: one-line errors and an exit status for any fault (`user_errors`), the
logging options, output folders checked before work, and the consoles a command prints on."""

from __future__ import annotations

import errno
import functools
import sqlite3
from pathlib import Path

from autointerp.engine.config import ConfigError
from autointerp.store.db import why_not_creatable, write_failure
from autointerp.store.errors import AutointerpError, CannotContinue, UserError, exit_with

from .logs import log_options

# A full disk or a failing device is no fault of the input: a clean stop (3), not bad input (2).
OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


def as_error(e: Exception, db) -> AutointerpError | None:
    """Any fault as one of ours: ours as they are; SQLite's and the OS's told apart (a locked or read-only database
    or a full disk is a stop, a damaged file bad input); None for a bug, whose traceback is shown."""
    if isinstance(e, AutointerpError):
        return e
    if isinstance(e, sqlite3.DatabaseError):
        return write_failure(db or "the database", e)
    if isinstance(e, OSError):  # a path the checks did not foresee: still one line, never a traceback
        where = f": {e.filename}" if e.filename else ""
        if e.errno in OUT_OF_SPACE:
            return CannotContinue(f"{e.strerror or e}{where}; everything committed is kept, rerun once that is fixed")
        return UserError(f"{e.strerror or e}{where}")
    return None


def user_errors(fn):
    """What every command carries: the logging options (logs.py), and any fault it meets ending in one line and
    an exit status (`exit_with`)."""
    fn = log_options(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            error = as_error(e, kwargs.get("db"))
            if error is None:
                raise
            exit_with(error)

    return wrapper


def check_output_folder(path: str | None, option: str) -> None:
    """A folder a command will write into: refused in one line before any work when it cannot be."""
    if path is None:
        return
    folder = Path(path).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ConfigError(f"{option} {folder} is a file, not a folder")
        return
    why = why_not_creatable(folder)
    if why:
        raise ConfigError(f"cannot create {option} {folder}: {why}")


PIPE_WIDTH = 1000  # piped or redirected: tables at their natural width, never cut to 80 columns with ellipses


def stdout_console():
    """The console a command prints its result on: the terminal's width there; piped (to a file, `head`, `less`)
    as wide as the tables need, so every header and number is whole."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def status(message: str):
    """A spinner on a terminal, nothing otherwise: a command that then fails prints only its error line."""
    from rich.console import Console

    return Console(stderr=True).status(message)
