"""Latents matched across two databases by their explanations (tables `similarity_runs`, `similarity`).

`autointerp similarity A.db B.db` (engine/commands/similarity.py) computes the pairs; this module writes them into
A in one transaction and reads one latent's row of the latest run back for the browser.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import sqlite_utils

from .clock import now

PAIR_COLUMNS = ("latent", "best", "best_similarity", "match", "match_similarity", "decoder_cosine")


def write_similarity(
    db: sqlite_utils.Database,
    *,
    other_path: str,
    other_fingerprint: str,
    explainer: str,
    other_explainer: str,
    settings: dict,
    summary: dict,
    pairs: Iterable[tuple],
) -> int:
    """Insert one run row and its pairs (tuples in PAIR_COLUMNS order) in one transaction; returns the run's id.
    A failure or a kill midway leaves the file as it was."""
    columns = ", ".join(f'"{c}"' for c in ("run", *PAIR_COLUMNS))  # "match" is an SQL keyword
    conn = db.conn
    conn.execute("begin immediate")  # the write lock up front: a batch writing A makes this wait, never fail midway
    try:
        cur = conn.execute(
            "insert into similarity_runs (other_path, other_fingerprint, explainer, other_explainer, settings,"
            " summary, created_at) values (?, ?, ?, ?, ?, ?, ?)",
            [
                other_path,
                other_fingerprint,
                explainer,
                other_explainer,
                json.dumps(settings, sort_keys=True),
                json.dumps(summary, sort_keys=True),
                now(),
            ],
        )
        run = int(cur.lastrowid or 0)
        conn.executemany(
            f"insert into similarity ({columns}) values ({', '.join('?' * (len(PAIR_COLUMNS) + 1))})",
            ((run, *p) for p in pairs),
        )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return run


def similar_of(conn: sqlite3.Connection, latent: int) -> dict | None:
    """One latent's pairs in the newest similarity run: {run, other_path, explainer, other_explainer, created_at,
    best, best_similarity, match, match_similarity, decoder_cosine}; None when there is no run or the latent took
    no part in it (it had no explanation). Two primary-key lookups, whatever the width."""
    cur = conn.execute(
        "select r.id as run, r.other_path, r.explainer, r.other_explainer, r.created_at, s.best, s.best_similarity,"
        ' s."match", s.match_similarity, s.decoder_cosine from similarity_runs r join similarity s on s.run = r.id'
        " where r.id = (select max(id) from similarity_runs) and s.latent = ?",
        [int(latent)],
    )
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row)) if row is not None else None
