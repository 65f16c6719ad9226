"""The vocabulary as text and what each latent's decoder direction says (tables `vocab`, `directions`).

The engine computes both (it has the tokenizer and the weights); readers such as the TUI then show
cached token ids and a latent's logit-lens tokens and neighbours without loading a model.
"""

from __future__ import annotations

import json

import sqlite_utils

from .clock import now


def write_vocab(db: sqlite_utils.Database, tokens: list[str]) -> None:
    """Replace the vocabulary: `tokens[i]` is the text of token id i. One transaction."""
    with db.conn:
        db.execute("delete from vocab")
        db.conn.executemany("insert into vocab (id, token) values (?, ?)", enumerate(tokens))


def vocab_size_stored(db: sqlite_utils.Database) -> int:
    return db.execute("select count(*) from vocab").fetchone()[0]


def read_vocab(db: sqlite_utils.Database) -> list[str]:
    """Token text by id (an id with no row reads as "")."""
    rows = db.execute("select id, token from vocab order by id").fetchall()
    out = [""] * (rows[-1][0] + 1 if rows else 0)
    for i, token in rows:
        out[i] = token or ""
    return out


def write_directions(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Upsert per-latent rows {latent, promoted, suppressed, neighbours} (lists, stored as JSON).
    One transaction: a batch of latents is either wholly written or not at all."""
    stamp = now()
    records = [
        {
            "latent": int(r["latent"]),
            "created_at": stamp,
            **{key: json.dumps(r[key]) for key in ("promoted", "suppressed", "neighbours")},
        }
        for r in rows
    ]
    with db.conn:
        db["directions"].upsert_all(records, pk="latent")


def missing_directions(db: sqlite_utils.Database, num_latents: int) -> list[int]:
    """Latents 0..num_latents-1 without a directions row, ascending."""
    have = {r[0] for r in db.execute("select latent from directions")}
    return [i for i in range(num_latents) if i not in have]
