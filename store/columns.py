"""Per-latent columns packed one blob each, so a reader sorts a million latents without reading a million rows.

Reading one metric of 1M latents through sqlite3 costs 2-3 s on 2 cores (a Python object per row, and each score
row's page), even from a covering index; the same column packed as one blob reads in tens of ms. A column is
packed from what the file holds when a stage ends (the score stage: each scorer's primary metric; the statistics:
the columns the list shows) and carries what it was packed from: `scores_written`, a counter every scores write
bumps in its own transaction, or the statistics' fingerprint. A reader uses a column only while that still holds,
and otherwise reads the rows (a live run, an older file): a column is a shortcut, never a second truth.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .scorer_meta import METRICS

SCORES_WRITTEN = "scores_written"  # meta key: bumped with every write of score rows
STAT_COLUMNS = ("frequency", "max_act", "mean_act", "n_windows", "count")


def scores_written(conn: sqlite3.Connection) -> str:
    row = conn.execute("select value from meta where key = ?", [SCORES_WRITTEN]).fetchone()
    return row[0] if row else "0"


def bump_scores_written(conn: sqlite3.Connection) -> None:
    """Call inside the transaction that writes score rows: every packed score column is stale from then on."""
    conn.execute(
        "insert into meta (key, value) values (?, '1')"
        " on conflict (key) do update set value = cast(value as integer) + 1",
        [SCORES_WRITTEN],
    )


def score_column_name(explainer: str, scorer: str, metric: str) -> str:
    return f"scores/{explainer}/{scorer}/{metric}"


def stat_column_name(name: str) -> str:
    return f"latents/{name}"


def _pack(latents: np.ndarray, values: np.ndarray) -> bytes:
    return latents.astype("<i8").tobytes() + values.astype("<f8").tobytes()


def _unpack(n: int, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(data, "<i8", n), np.frombuffer(data, "<f8", n, offset=8 * n)


def _write(conn: sqlite3.Connection, name: str, version: str, latents: np.ndarray, values: np.ndarray) -> None:
    conn.execute(
        "insert or replace into columns (name, version, n, data) values (?, ?, ?, ?)",
        [name, version, len(latents), _pack(latents, values)],
    )


def _read(conn: sqlite3.Connection, name: str, version: str) -> tuple[np.ndarray, np.ndarray] | None:
    row = conn.execute("select version, n, data from columns where name = ?", [name]).fetchone()
    if row is None or row[0] != version:
        return None
    return _unpack(row[1], row[2])


def read_rows(conn: sqlite3.Connection, sql: str, args) -> tuple[np.ndarray, np.ndarray]:
    """(latent, value) rows as two arrays, NaN where the value is null: the slow path a packed column avoids."""
    pairs = np.fromiter(
        ((lat, np.nan if v is None else v) for lat, v in conn.execute(sql, args)),
        dtype=[("latent", np.int64), ("value", np.float64)],
    )
    return pairs["latent"], pairs["value"]


def score_rows_sql(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    return f"select latent, {metric} from scores where explainer = ? and scorer = ? and control = 0 order by latent"


def pack_score_columns(conn: sqlite3.Connection, explainer: str, metrics: dict[str, str]) -> int:
    """Pack `metrics` ({scorer: metric}) of the real (non-control) scores of `explainer`; returns columns packed.
    One transaction, so the columns and the counter they carry are read together."""
    with conn:
        version = scores_written(conn)
        for scorer, metric in metrics.items():
            latents, values = read_rows(conn, score_rows_sql(metric), [explainer, scorer])
            _write(conn, score_column_name(explainer, scorer, metric), version, latents, values)
    return len(metrics)


def read_score_column(
    conn: sqlite3.Connection, explainer: str, scorer: str, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The packed column, when it was packed from the scores the file holds now; else None."""
    if not _has_table(conn):
        return None
    return _read(conn, score_column_name(explainer, scorer, metric), scores_written(conn))


def pack_stat_columns(conn: sqlite3.Connection, fingerprint: str) -> None:
    """Pack the statistics the list sorts by; call in the transaction that marks the statistics done."""
    for name in STAT_COLUMNS:
        latents, values = read_rows(conn, f"select latent, {name} from latents order by latent", [])
        _write(conn, stat_column_name(name), fingerprint, latents, values)


def read_stat_column(conn: sqlite3.Connection, name: str, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not _has_table(conn):
        return None
    return _read(conn, stat_column_name(name), fingerprint)


def _has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("select 1 from sqlite_master where type = 'table' and name = 'columns'").fetchone() is not None
