"""What the Neuronpedia export (engine/commands/export/neuronpedia.py) reads: the latents it writes as features
(every one that fired and every explained one), streamed in latent order, and what it checks before writing."""

from __future__ import annotations

import sqlite3

import numpy as np

# The latents exported: every one that fired, and every explained one (union: each once, in latent order).
_IDS_SQL = "select latent from latents where count > 0 union select latent from explanations where explainer = ?"
_FEATURES_SQL = f"""
select ids.latent, l.frequency, l.max_act, l.count, l.hist_edges, l.hist_counts,
       d.promoted, d.suppressed, d.neighbours, e.text, e.model, e.created_at
from ({_IDS_SQL}) ids
left join latents l on l.latent = ids.latent
left join directions d on d.latent = ids.latent
left join explanations e on e.latent = ids.latent and e.explainer = ?
order by ids.latent
"""


def feature_count(conn: sqlite3.Connection, explainer: str) -> int:
    """Latents that fired or have an explanation of this explainer."""
    return conn.execute(f"select count(*) from ({_IDS_SQL})", [explainer]).fetchone()[0]


def feature_latents(conn: sqlite3.Connection, explainer: str) -> np.ndarray:
    """The latents `feature_rows` yields, ascending, as one int64 array (8 bytes a latent at any width): what a
    feature's neighbour links may point at."""
    cur = conn.execute(f"{_IDS_SQL} order by 1", [explainer])
    return np.fromiter((r[0] for r in cur), dtype=np.int64)


def feature_rows(conn: sqlite3.Connection, explainer: str):
    """A cursor of (latent, frequency, max_act, count, hist_edges, hist_counts, promoted, suppressed, neighbours,
    text, model, created_at) per latent that fired or was explained, in latent order."""
    return conn.execute(_FEATURES_SQL, [explainer, explainer])


def vocab_size(conn: sqlite3.Connection) -> int:
    """Tokens in the stored vocabulary (0: never annotated)."""
    return conn.execute("select count(*) from vocab").fetchone()[0]
