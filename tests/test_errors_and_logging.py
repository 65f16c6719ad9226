"""One error hierarchy reported in one place, database faults told apart, `batch --config`, and logging.

Every fault ends a command in one stderr line, `error:` (bad input, exit 2) or `stopped:` (cannot go on now, exit 3);
a locked or read-only database is a stop that names its cause, never "the disk is full". Logging (-v, -vv,
--log-file) adds lines only where asked and changes nothing stored. Real parts: real SQLite files held by a real
second connection, the real embedded model for the cache runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers.databases import assert_same_database, copy_db

from autointerp.engine.commands.cli import main
from autointerp.engine.commands.wiring import user_errors
from autointerp.store.errors import CannotContinue, UserError

TINY = ["--seq-len", "32", "--n-tokens", "64", "--batch-size", "2"]
# The real_cache_db fixture's settings: a batch with these finds its cache complete and runs nothing.
CACHED = '[cache]\nn_tokens = 8192\nchunk_tokens = 4096\nbatch_size = 8\n[batch]\nstages = ["cache"]\n'


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(res, kind: str, code: int) -> str:
    """The command ended with exactly one stderr line of this kind and this exit status, and no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code == code, (res.exit_code, res.stderr, res.stdout)
    lines = [line for line in res.stderr.splitlines() if line.startswith(("error:", "stopped:"))]
    assert len(lines) == 1 and lines[0].startswith(f"{kind}: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


def config(tmp_path: Path, db: Path, text: str = CACHED, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'db = "{db}"\nprofile = "cpu"\n{text}')
    return path


# ---- the one handler -------------------------------------------------------------------------------------------


@click.command()
@click.argument("kind")
@user_errors
def failing(kind: str) -> None:
    """A command that fails the way commands fail: by raising one of the hierarchy's errors."""
    if kind == "user":
        raise UserError("latent 99999 does not exist")
    raise CannotContinue("the LLM backend was unavailable for 600s")


def test_a_user_error_and_a_stop_raised_inside_a_command_are_one_line_each():
    res = CliRunner().invoke(failing, ["user"])
    assert one_line(res, "error", 2) == "error: latent 99999 does not exist"
    res = CliRunner().invoke(failing, ["stop"])
    line = one_line(res, "stopped", 3)
    assert line == "stopped: the LLM backend was unavailable for 600s; rerun the same command to resume"
    assert res.stdout == ""


# ---- database faults told apart ---------------------------------------------------------------------------------


def test_a_locked_database_is_reported_as_locked_not_as_a_full_disk(real_cache_db, tmp_path, monkeypatch):
    monkeypatch.setattr("autointerp.store.connection.BUSY_TIMEOUT_MS", 1000)  # give up after 1 s of the lock, not 30
    db = copy_db(real_cache_db, tmp_path / "locked.db")  # a WAL file, as every autointerp database
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin exclusive")  # another process in a long write
    try:
        res = run("batch", config(tmp_path, db))  # the cache is complete: the first write is the run's own row
        line = one_line(res, "stopped", 3)
    finally:
        holder.execute("rollback")
        holder.close()
    assert "locked by another process" in line and str(db) in line, line
    assert "full" not in line and "rerun" in line, line
    assert [r for r in sqlite3.connect(db).execute("select * from runs")] == []  # nothing was written


def test_a_database_locked_against_readers_stops_a_reader_too(real_cache_db, tmp_path, monkeypatch):
    monkeypatch.setattr("autointerp.store.connection.BUSY_TIMEOUT_MS", 1000)
    db = copy_db(real_cache_db, tmp_path / "journal.db")
    with sqlite3.connect(db) as c:
        c.execute("pragma journal_mode = delete")  # a rollback journal: a writer's exclusive lock shuts readers out
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin exclusive")
    try:
        line = one_line(run("info", db), "stopped", 3)
    finally:
        holder.execute("rollback")
        holder.close()
    assert "locked by another process" in line and "full" not in line, line
    assert "Traceback" not in line


@pytest.fixture
def read_only_db(real_cache_db, tmp_path):
    """A copy of a real cache that nobody may write, root included (an immutable file where permissions are not
    enough)."""
    db = copy_db(real_cache_db, tmp_path / "ro.db")
    with sqlite3.connect(db) as c:
        c.execute("pragma wal_checkpoint(truncate)")
    os.chmod(db, 0o444)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(db)], check=True)
    assert not os.access(db, os.W_OK)
    yield db
    if immutable:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    os.chmod(db, 0o644)


def test_a_read_only_database_file_is_reported_as_read_only(read_only_db, tmp_path):
    before = digest(read_only_db)
    for args in (
        ["cache", "--db", read_only_db, *TINY],
        ["batch", config(tmp_path, read_only_db)],
        ["batch", "--config", config(tmp_path, read_only_db, name="d.toml"), "--latents", "top:1"],
    ):
        line = one_line(run(*args), "stopped", 3)
        assert "read-only" in line and str(read_only_db) in line, (args, line)
        assert "full" not in line and "locked" not in line, (args, line)
    assert digest(read_only_db) == before
    res = run("info", read_only_db)  # reading it is fine
    assert res.exit_code == 0 and "hook" in res.stdout, res.output


def test_a_damaged_database_is_bad_input(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    line = one_line(run("info", junk), "error", 2)
    assert "not an SQLite database" in line, line


# ---- batch: the config positionally or with --config ---------------------------------------------------------------


def test_batch_takes_its_config_positionally_or_with_config_but_not_both(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "db.sqlite")
    cfg = config(tmp_path, db, '[batch]\nlatents = "top:3"\n')
    positional = run("batch", cfg, "--dry-run", "--json")
    option = run("batch", "--config", cfg, "--dry-run", "--json")
    assert positional.exit_code == 0 and option.exit_code == 0, (positional.output, option.output)
    assert json.loads(positional.stdout) == json.loads(option.stdout)
    assert "top:3" in positional.stdout  # the file was read, not the defaults
    line = one_line(run("batch", cfg, "--config", cfg, "--dry-run"), "error", 2)
    assert "two configs" in line and str(cfg) in line, line


# ---- logging -------------------------------------------------------------------------------------------------------


def numbers_masked(text: str) -> str:
    return re.sub(r"\d[\d.,:]*", "#", text)  # timings and rates differ from run to run


def test_a_log_file_records_a_real_cache_run_and_changes_nothing_else(tmp_path):
    quiet = run("cache", "--db", tmp_path / "quiet.db", *TINY)
    log = tmp_path / "run.log"
    logged = run("cache", "--db", tmp_path / "logged.db", *TINY, "--log-file", log)
    assert quiet.exit_code == 0 and logged.exit_code == 0, (quiet.output, logged.output)
    assert logged.stderr == quiet.stderr == ""  # the terminal shows what it always showed
    assert numbers_masked(logged.stdout) == numbers_masked(quiet.stdout).replace("quiet.db", "logged.db")
    text = log.read_text()
    assert "DEBUG autointerp.engine.commands.logs" in text and "autointerp cache" in text  # the command itself
    assert re.search(r"DEBUG autointerp\.engine\.activations\.cache .*chunk 1 of 1: 2 sequences", text), text
    assert re.search(r"INFO autointerp\.engine\.activations\.cache .*latent statistics in", text), text
    assert_same_database(tmp_path / "logged.db", tmp_path / "quiet.db")  # nothing stored depends on the log


def test_verbose_shows_info_lines_on_stderr_and_only_then(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "db.sqlite")
    cfg = config(tmp_path, db)
    quiet, verbose, debug = run("batch", cfg), run("batch", cfg, "-v"), run("batch", cfg, "-vv")
    assert quiet.exit_code == verbose.exit_code == debug.exit_code == 0, (quiet.output, verbose.output)

    def log_lines(res, level):
        return [line for line in res.stderr.splitlines() if line.startswith(f"{level} autointerp.")]

    assert log_lines(quiet, "INFO") == [] and log_lines(quiet, "DEBUG") == []
    infos = log_lines(verbose, "INFO")
    assert any("batch: stages cache over" in line for line in infos), verbose.stderr
    assert any("batch done after" in line for line in infos), verbose.stderr
    assert log_lines(verbose, "DEBUG") == []
    assert log_lines(debug, "DEBUG") and log_lines(debug, "INFO"), debug.stderr
    # Besides its log lines, -v shows what the quiet run showed.
    others = [line for line in verbose.stderr.splitlines() if line not in infos]
    assert "cache: cache already complete" in others and "cache: cache already complete" in quiet.stderr


def test_an_unusable_log_file_is_one_error_line(tmp_path, real_cache_db):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_line(run("info", real_cache_db, "--log-file", afile / "run.log"), "error", 2)
    assert "--log-file" in line and "not a folder" in line, line
    line = one_line(run("info", real_cache_db, "--log-file", tmp_path), "error", 2)
    assert "--log-file" in line, line
    assert afile.read_text() == "x"
