"""Logging for every command, set up in one place: quiet by default (a command prints what it always printed),
`-v` INFO and `-vv` DEBUG on stderr, `--log-file PATH` DEBUG to a file whatever `-v` says.

Modules log through `logging.getLogger(__name__)`, all under the `autointerp` logger configured here; other
libraries' loggers (httpx, openai, transformers) are left as they are. A log file is the only thing written:
nothing stored in a database depends on it.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from autointerp.engine.config import ConfigError
from autointerp.store.db import why_not_creatable

ROOT = "autointerp"
log = logging.getLogger(__name__)
_TERMINAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"


def configure(verbose: int, log_file: str | None) -> list[logging.Handler]:
    """Send the `autointerp` logger's records to stderr (`verbose` 1: INFO, 2+: DEBUG) and to `log_file` (DEBUG);
    returns the handlers made, for `close`. Without either nothing is shown: even warnings stay silent, as the
    commands' own output already says what went wrong."""
    logger = logging.getLogger(ROOT)
    logger.propagate = False  # never Python's last-resort handler: the terminal shows only what was asked for
    handlers: list[logging.Handler] = [logging.NullHandler()]
    if verbose:
        terminal = logging.StreamHandler(sys.stderr)  # the stderr of now (click's test runner swaps it)
        terminal.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        terminal.setFormatter(logging.Formatter(_TERMINAL_FORMAT))
        handlers.append(terminal)
    if log_file:
        path = Path(log_file).expanduser()
        if path.is_dir():
            raise ConfigError(f"--log-file {path} is a directory")
        why = why_not_creatable(path) if not path.exists() else None
        if why:
            raise ConfigError(f"cannot write --log-file {path}: {why}")
        try:
            file = logging.FileHandler(path, encoding="utf-8")  # appends: reruns of a resumed job tell one story
        except OSError as e:
            raise ConfigError(f"cannot write --log-file {path}: {e.strerror or e}") from None
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter(_FILE_FORMAT))
        handlers.append(file)
    levels = [h.level for h in handlers[1:]]
    logger.setLevel(min(levels) if levels else logging.CRITICAL + 1)
    for h in handlers:
        logger.addHandler(h)
    return handlers


def close(handlers: list[logging.Handler]) -> None:
    """Take down what `configure` set up: the logger is back to Python's defaults (for code run after a command
    in the same process: tests, a notebook)."""
    logger = logging.getLogger(ROOT)
    for h in handlers:
        logger.removeHandler(h)
        h.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def log_options(fn):
    """The click decorator every command carries: `--verbose/-v` (repeatable) and `--log-file PATH`. Logging is
    set up before the command runs and taken down after it (a command run in-process, as the tests do, leaves no
    handler behind); a command that fails records its traceback in the log at DEBUG."""

    @click.option("-v", "--verbose", count=True, help="Log progress to stderr: -v INFO, -vv DEBUG.")
    @click.option("--log-file", type=click.Path(dir_okay=False), help="Append a DEBUG log to this file.")
    @functools.wraps(fn)
    def wrapper(*args, verbose: int = 0, log_file: str | None = None, **kwargs):
        handlers = configure(verbose, log_file)
        try:
            ctx = click.get_current_context()
            log.debug("autointerp %s", ctx.command_path[len(ctx.find_root().command_path) :].strip())
            return fn(*args, **kwargs)
        except Exception:
            log.debug("command %s failed", fn.__name__, exc_info=True)
            raise
        finally:
            close(handlers)

    return wrapper
