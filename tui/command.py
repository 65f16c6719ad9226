"""`autointerp-tui [DB]`: the command line of the TUI (tui/launch.py starts it). A file that cannot be browsed is
refused before the screen is taken over, in one line (store/errors.py `exit_with`, as every command's)."""

from __future__ import annotations

import os
import shlex
import sys

import click

from autointerp.store.audits import default_rater
from autointerp.store.db import StoreError, preflight
from autointerp.store.errors import UserError, exit_with

INTEGRITY_CHECK_MAX_BYTES = 1 << 30
DEFAULT_DB = "autointerp.db"  # the config's default `db` (the TUI reads no config)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("db", required=False)  # checked by `preflight`, which says what is wrong in one line
@click.option("--serve", is_flag=True, help="Serve the TUI to a browser (textual-serve), on 127.0.0.1 only.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve.")
@click.option(
    "--rater", help="Your name on the ratings audit mode writes (default: $AUTOINTERP_RATER, else your login)."
)
def main(db: str | None, serve: bool, port: int, rater: str | None) -> None:
    """Monitor, browse and audit an autointerp database.

    DB is the SQLite file a batch writes (default: autointerp.db); it may be in use by a running batch, whose
    progress the monitor tab then follows. Over SSH run it on the GPU box itself, or serve it with --serve and
    forward the port: ssh -L 8000:127.0.0.1:8000 HOST, then open http://127.0.0.1:8000."""
    if db is None:
        db = DEFAULT_DB
    if rater is not None and not rater.strip():  # a blank name would file ratings under nobody
        exit_with(UserError("--rater needs a name"))
    try:
        # SQLite's page check reads the whole file (~0.5 s per GiB here): done for files up to 1 GiB, so a larger
        # database still opens in under a second (a damaged page there shows as a read error in the pane).
        size = os.path.getsize(db) if os.path.isfile(db) else 0
        preflight(db, must_exist=True, writing=False, integrity=size <= INTEGRITY_CHECK_MAX_BYTES)
    except StoreError as e:
        exit_with(e)
    if serve:
        from textual_serve.server import Server

        # Bound to the loopback interface only: reach it over SSH with `ssh -L PORT:127.0.0.1:PORT host`.
        command = (
            f"{sys.executable} -m autointerp.tui {shlex.quote(db)} --rater {shlex.quote(rater or default_rater())}"
        )
        Server(command, host="127.0.0.1", port=port, title="autointerp").serve()
        return
    from .app import AutointerpApp

    app = AutointerpApp(db, rater=rater)
    app.run()
    if app.error is not None:
        sys.exit(2)  # the error was on screen until the user quit
