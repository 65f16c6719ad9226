"""The one error hierarchy of autointerp: a fault raised where it is known, stated in one line.

The CLI (engine/commands/cli.py) is the one place that turns these into the `error:` / `stopped:` line and an
exit status; nothing else prints them. It lives in store/ because every layer (store, engine, TUI) raises or
reports them, and store/ is the one package all of them import.
"""


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
