"""Every SQLite connection autointerp opens: one place for how long it waits on another process's lock, and how a
write transaction begins."""

from __future__ import annotations

import sqlite3

# How long a connection waits for another process's write lock before the file is reported as locked.
BUSY_TIMEOUT_MS = 30_000


class WritingConnection(sqlite3.Connection):
    """`with conn:` begins with BEGIN IMMEDIATE: the write lock is taken first, waiting on the busy timeout.

    A deferred transaction (Python's implicit BEGIN, or sqlite-utils' own "BEGIN") that reads before it writes holds
    a read snapshot; if another connection (the run log's, another process) writes meanwhile, SQLite cannot wait
    for the lock without risking a deadlock, so the write fails at once with "database is locked" however long
    the busy timeout. Taking the lock up front makes every writer wait its turn instead."""

    def __enter__(self):
        if not self.in_transaction:
            self.execute("BEGIN IMMEDIATE")
        return super().__enter__()


def connect(target: str, *, uri: bool = False, check_same_thread: bool = True) -> sqlite3.Connection:
    read_only = uri and "mode=ro" in target
    factory = sqlite3.Connection if read_only else WritingConnection
    conn = sqlite3.connect(target, uri=uri, check_same_thread=check_same_thread, factory=factory)
    conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
