"""Every SQLite connection autointerp opens: one place for how long it waits on another process's lock."""

from __future__ import annotations

import sqlite3

# How long a connection waits for another process's write lock before the file is reported as locked.
BUSY_TIMEOUT_MS = 30_000


def connect(target: str, *, uri: bool = False, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(target, uri=uri, check_same_thread=check_same_thread)
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
