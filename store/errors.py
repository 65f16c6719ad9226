"""The one error hierarchy of autointerp: a fault raised where it is known, stated in one line.

`exit_with` is the one place that turns these into a command's last line (`error:` / `stopped:`) and its exit
status: the CLI (engine/commands/cli.py) and the TUI's command line (tui/command.py) call it; nothing else prints
them. It lives in store/ because every layer (store, engine, TUI) raises or reports them, and store/ is the one
package all of them import.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from .text import printable

# How a stopped run goes on, said once: everything committed is kept, so the same command resumes. Every line that
# reports a stop (the `stopped:` line, the batch's run log, a cluster's lost workers) ends with it, or with its own
# word on how to go on (a message that already says "rerun").
RESUME = "rerun the same command to resume"


class AutointerpError(Exception):
    """A fault the user can act on, stated in one line (the exception's message)."""

    kind = "error"  # the word the CLI's line starts with
    exit_code = 2


class UserError(AutointerpError):
    """Bad input (config, files, checkpoints, corpus, selection, a database from another version): nothing was
    written. Exit 2."""


class CannotContinue(AutointerpError):
    """The input is fine but the run cannot go on (the backend is gone, the disk is full, the database is locked):
    everything committed is kept and a rerun resumes. Exit 3."""

    kind = "stopped"
    exit_code = 3


def says_how_to_resume(message: str) -> bool:
    """The message already tells how to go on (`RESUME`, or e.g. "rerun once that is fixed")."""
    return "rerun" in message


def resumable(message: str) -> str:
    """A stop's line, saying how to go on."""
    return message if says_how_to_resume(message) else f"{message}; {RESUME}"


def say(kind: str, message: object) -> None:
    """One line to stderr (`error:` bad input, `stopped:` cannot go on, `warning:`), shown literally."""
    click.echo(f"{kind}: {printable(message)}", err=True)


def exit_with(error: AutointerpError) -> NoReturn:
    """The one place a fault becomes a command's last line (`{kind}: {message}`) and its exit status."""
    message = str(error)
    if isinstance(error, CannotContinue):
        message = resumable(message)  # a stop keeps what is committed: the same command resumes
    say(error.kind, message)
    sys.exit(error.exit_code)
