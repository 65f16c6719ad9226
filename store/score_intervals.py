"""What `scores.ci` (each metric's 95% interval, JSON {metric: [low, high]}) needs beyond the score writes: the rows
scored before schema 13 that still have none, and writing theirs (`autointerp upgrade`,
engine/interpretation/interval_fill.py computes them from the stored outcomes).

A row without intervals holds SQL null (or the JSON text 'null'); readers show nothing for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

from .scorer_meta import METRICS

MISSING = "(ci is null or ci = 'null')"


def rows_without_intervals(conn: sqlite3.Connection) -> list[int]:
    """The rowids of score rows with no intervals, in (latent, scorer, control) order."""
    return [
        r[0]
        for r in conn.execute(f"select rowid from scores where {MISSING} order by latent, explainer, scorer, control")
    ]


def score_rows_by_rowid(conn: sqlite3.Connection, rowids: list[int]) -> Iterator[dict]:
    """Those rows' latent, scorer, metrics, outcomes and details (JSON parsed), in the order given."""
    cur = conn.execute(
        f"select rowid, latent, scorer, outcomes, details, {', '.join(METRICS)} from scores"
        " where rowid in (select value from json_each(?))",
        [json.dumps(list(rowids))],
    )
    names = [d[0] for d in cur.description]
    by_id = {}
    for r in cur:
        row = dict(zip(names, r))
        for key in ("outcomes", "details"):
            row[key] = json.loads(row[key]) if row[key] else None
        by_id[row["rowid"]] = row
    for rowid in rowids:
        if rowid in by_id:
            yield by_id[rowid]


def write_intervals(conn: sqlite3.Connection, values: list[tuple[int, dict]]) -> None:
    """Set (rowid, {metric: [low, high]}) rows' ci, touching no other column, in one transaction."""
    with conn:
        conn.executemany("update scores set ci = ? where rowid = ?", [(json.dumps(ci), rowid) for rowid, ci in values])
