"""Batch runs and their progress in the database, for monitors in other processes (the TUI).

A `RunLog` writes on its own connection from its own thread: progress writes never wait inside the
batch's event loop, and they never share a transaction with the result writes of the store's connection.
Writes are throttled by the caller; each one also refreshes the run's heartbeat (`runs.updated_at`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from .clock import now
from .connection import connect

STALE_HEARTBEAT_S = 60  # a `running` run whose heartbeat is older than this was most likely killed

PROGRESS_FIELDS = (
    "total",
    "done",
    "skipped",
    "failed",
    "prompts",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "backend_s",
    "wall_s",
)


# The columns of a `workers` row a RunLog.worker call may set, with the type each is stored as.
WORKER_FIELDS = {
    "node": str,
    "pid": int,
    "state": str,
    "unit": str,
    "done": int,
    "rate": float,
    "rate_unit": str,
    "rerun": int,
    "error": str,
}
WORKER_STATES = ("starting", "busy", "idle", "restarting", "dead", "done")
_UNSET = object()


class RunLog:
    """One batch run's row in `runs`, its per-stage `progress` rows and its events."""

    def __init__(self, path: str | Path, *, argv: list[str], selection: str, config: dict):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="autointerp-runlog")
        self._conn: sqlite3.Connection | None = None
        self.path = str(path)
        self.id: int = self._pool.submit(self._start, argv, selection, config).result()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, check_same_thread=False)
        return self._conn

    def _start(self, argv, selection, config) -> int:
        conn = self._connect()
        with conn:
            cur = conn.execute(
                "insert into runs (started_at, updated_at, status, host, pid, argv, selection, config)"
                " values (?, ?, 'running', ?, ?, ?, ?, ?)",
                [
                    now(),
                    now(),
                    socket.gethostname(),
                    os.getpid(),
                    json.dumps(argv),
                    selection,
                    json.dumps(config, sort_keys=True),
                ],
            )
        assert cur.lastrowid is not None  # an insert always sets it
        return cur.lastrowid

    def _write(self, sql_args: list[tuple[str, list]]) -> None:
        conn = self._connect()
        try:
            with conn:
                for sql, args in sql_args:
                    conn.execute(sql, args)
                conn.execute("update runs set updated_at = ? where id = ?", [now(), self.id])
        except sqlite3.Error:
            # Monitoring must never stop the work it monitors; the results' own writes report real trouble.
            pass

    def submit(self, *sql_args: tuple[str, list]) -> None:
        self._pool.submit(self._write, list(sql_args))

    # ---- what the batch reports ------------------------------------------------------------------

    def set_latents(self, n: int) -> None:
        self.submit(("update runs set n_latents = ? where id = ?", [n, self.id]))

    def progress(self, stage: str, unit: str, values: dict, *, started_at: str, ended: bool = False) -> None:
        row = {k: values.get(k, 0) for k in PROGRESS_FIELDS}
        cols = ", ".join(["run", "stage", "unit", *PROGRESS_FIELDS, "started_at", "updated_at", "ended_at"])
        args = [self.id, stage, unit, *row.values(), started_at, now(), now() if ended else None]
        self.submit((f"insert or replace into progress ({cols}) values ({', '.join('?' * len(args))})", args))

    def event(self, stage: str, kind: str, message: str, data: dict | None = None) -> None:
        self.submit(
            (
                "insert into events (at, stage, kind, message, data, run) values (?, ?, ?, ?, ?, ?)",
                [now(), stage, kind, message, json.dumps(data or {}, sort_keys=True), self.id],
            )
        )

    def worker(
        self,
        worker: str,
        role: str,
        *,
        node=_UNSET,
        pid=_UNSET,
        state=_UNSET,
        unit=_UNSET,
        done=_UNSET,
        rate=_UNSET,
        rate_unit=_UNSET,
        rerun=_UNSET,
        error=_UNSET,
    ) -> None:
        """Upsert one worker's row of this run (`workers`, schema 10): the fields given are written, None included
        (`unit=None`: on nothing now), the others keep what they held; `updated_at` is refreshed every time. A new
        row starts as `starting` unless a state is given. Queued on the log's thread like `progress`: it never waits
        on the file and never raises (a value that is not of its column's type is left out, a call after `finish`
        is dropped), since monitoring must not stop the work. An unknown field name is a TypeError, as for any
        call."""
        given = {
            "node": node,
            "pid": pid,
            "state": state,
            "unit": unit,
            "done": done,
            "rate": rate,
            "rate_unit": rate_unit,
            "rerun": rerun,
            "error": error,
        }
        values = {}
        for name, value in given.items():
            if value is _UNSET:
                continue
            try:
                values[name] = None if value is None else WORKER_FIELDS[name](value)  # numpy numbers, paths, ...
            except (TypeError, ValueError, OverflowError):
                continue
        stamp = now()
        first = {"state": "starting", "done": 0, "rerun": 0, **{k: v for k, v in values.items() if v is not None}}
        cols = ["run", "worker", "role", *first, "updated_at"]
        insert_args = [self.id, str(worker), str(role), *first.values(), stamp]
        # Explicit None on a NOT NULL column (state, done, rerun) would fail the update: those keep their value.
        update = {k: v for k, v in values.items() if v is not None or k not in ("state", "done", "rerun")}
        sets = ", ".join([f"{c} = ?" for c in ("role", *update, "updated_at")])
        sql = (
            f"insert into workers ({', '.join(cols)}) values ({', '.join('?' * len(cols))})"
            f" on conflict (run, worker) do update set {sets}"
        )
        try:
            self.submit((sql, [*insert_args, str(role), *update.values(), stamp]))
        except RuntimeError:  # the log is finished (its thread is gone): a late report has nowhere to go
            pass

    def finish(self, status: str, message: str) -> None:
        """Record how the run ended and wait until every queued write is in the file."""
        self.submit(
            ("update runs set status = ?, message = ?, ended_at = ? where id = ?", [status, message, now(), self.id])
        )
        self._pool.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()


def run_rows(conn: sqlite3.Connection, limit: int = 20) -> list[dict]:
    """The latest runs, newest first, with their progress rows under `stages`, the seconds since their last
    heartbeat (`silent_s`) and `probably_killed` (still `running`, silent for over STALE_HEARTBEAT_S)."""
    conn_rows = conn.execute(
        "select id, started_at, updated_at, ended_at, status, message, host, pid, selection, n_latents"
        " from runs order by id desc limit ?",
        [limit],
    ).fetchall()
    keys = ("id", "started_at", "updated_at", "ended_at", "status", "message", "host", "pid", "selection", "n_latents")
    out = []
    now_utc = datetime.now(timezone.utc)
    for r in conn_rows:
        run = dict(zip(keys, r))
        cur = conn.execute(
            f"select stage, unit, {', '.join(PROGRESS_FIELDS)}, started_at, updated_at, ended_at"
            " from progress where run = ? order by started_at",
            [run["id"]],
        )
        names = [d[0] for d in cur.description]
        run["stages"] = [dict(zip(names, row)) for row in cur.fetchall()]
        run["silent_s"] = _age_s(run["updated_at"], now_utc)
        run["probably_killed"] = run["status"] == "running" and (run["silent_s"] or 0) > STALE_HEARTBEAT_S
        out.append(run)
    return out


def worker_rows(conn: sqlite3.Connection, run_id: int) -> list[dict]:
    """One run's workers (`workers`, written by RunLog.worker), by role, then by name with numbers in number order
    ("cache-2" before "cache-10"). One read through the table's primary key."""
    cur = conn.execute(
        "select worker, role, node, pid, state, unit, done, rate, rate_unit, rerun, error, updated_at"
        " from workers where run = ?",
        [run_id],
    )
    names = [d[0] for d in cur.description]
    out = [dict(zip(names, row)) for row in cur.fetchall()]
    out.sort(key=lambda w: (w["role"], _natural(w["worker"])))
    return out


def _natural(name: str) -> list[tuple[int, int | str]]:
    """A sort key reading the runs of digits in a name as numbers: llm-2 < llm-10, 10.0.0.2 < 10.0.0.10."""
    return [(0, int(part)) if part.isdecimal() else (1, part) for part in re.split(r"(\d+)", name) if part]


def latest_heartbeat(conn: sqlite3.Connection) -> str | None:
    """The newest heartbeat of any run (None before the first run): it changes whenever a batch writes progress."""
    return conn.execute("select max(updated_at) from runs").fetchone()[0]


def _age_s(stamp: str | None, now_utc: datetime) -> float | None:
    if not stamp:
        return None
    try:
        return (now_utc - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return None
