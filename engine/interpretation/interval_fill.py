"""`autointerp upgrade`'s interval step: score rows written before schema 13 get each metric's 95% interval
(scores.ci), computed from their stored outcomes exactly as the score stage computes a new row's (intervals.py).

Simulation's correlation resamples its excerpts' true activations, which score rows do not store: they are read
back from the cache (the outcomes name their windows). Rows are done in batches, each committed: an interrupted
upgrade leaves the rest null, and running it again finishes them. Nothing but `ci` is written.
"""

from __future__ import annotations

import json

import numpy as np

from autointerp.engine.config import CacheConfig
from autointerp.store import score_intervals as reads
from autointerp.store.queries import WindowQueries

from .intervals import row_intervals

BATCH = 200


def _queries(store) -> WindowQueries | None:
    prov = store.provenance
    if prov is None:
        return None
    return WindowQueries(store, CacheConfig(**json.loads(prov["config"] or "{}")).window_len)


def _truth(queries: WindowQueries | None, row: dict) -> list[np.ndarray | None] | None:
    """Simulation: the true activations of each outcome's window (None where it has no cached window)."""
    details = row.get("details") or {}
    if queries is None or row.get("correlation") is None or details.get("predicted") is None:
        return None
    windows = [int(o.get("window", -1)) for o in row.get("outcomes") or []]
    wanted = sorted({w for w in windows if w >= 0})
    if not wanted:
        return None
    fetched = queries.fetch(queries.activating(int(row["latent"])), wanted)
    by_id = {w: lw.acts for w, lw in zip(wanted, fetched)}
    return [by_id.get(w) for w in windows]


def fill_intervals(store) -> int:
    """Compute and store the intervals of every score row that has none; returns how many rows were filled."""
    conn = store.db.conn
    rowids = reads.rows_without_intervals(conn)
    queries = _queries(store) if rowids else None
    for i in range(0, len(rowids), BATCH):
        done = [
            (row["rowid"], row_intervals(row, _truth(queries, row)))
            for row in reads.score_rows_by_rowid(conn, rowids[i : i + BATCH])
        ]
        reads.write_intervals(conn, done)
    return len(rowids)
