"""What the benchmarks (engine/commands/bench/) measure of their files: a database's bytes, the latents a fetch
benchmark draws from, and the rows that must come out the same when two runs did the same work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .connection import connect


def database_bytes(db: Path) -> int:
    """The database's bytes once its write-ahead log is checkpointed into it (the -shm index is not data)."""
    conn = connect(str(db))
    try:
        conn.execute("pragma wal_checkpoint(truncate)")
    finally:
        conn.close()
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def stored_latents(conn: sqlite3.Connection) -> list[int]:
    """Every latent with activations in the compacted segments."""
    return [r[0] for r in conn.execute("select distinct latent from segments")]


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def cache_rows(db: Path) -> list[tuple]:
    """Every compacted segment (latent, seg, n, data), in order: equal for two caches of the same activations."""
    return _rows(db, "select latent, seg, n, data from segments order by 1, 2")


def score_outcome_rows(db: Path) -> list[tuple]:
    """Every score's identity, explanation and confusion counts, in order: equal for two runs that scored alike."""
    return _rows(db, "select latent, scorer, control, explanation, tp, fp, tn, fn from scores order by 1, 2, 3")
