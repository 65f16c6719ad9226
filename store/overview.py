"""What `autointerp info` counts in a database beyond its cache's size: its most frequent latents, those that never
fired, and per explainer how many latents are explained, failed and scored."""

from __future__ import annotations

import sqlite3

from .compare_reads import explainers_explained
from .report_reads import explanation_counts


def top_latents(conn: sqlite3.Connection, n: int) -> list[dict]:
    """The `n` latents that fired most, with how often and how strongly."""
    rows = conn.execute("select latent, count, frequency, max_act from latents order by count desc limit ?", [n])
    return [{"latent": latent, "count": count, "frequency": freq, "max_act": mx} for latent, count, freq, mx in rows]


def dead_latents(conn: sqlite3.Connection) -> int:
    """Latents that never fired on the cached tokens."""
    return conn.execute("select count(*) from latents where count = 0").fetchone()[0]


def scored_latents(conn: sqlite3.Connection, explainer: str) -> int:
    """Latents with real scores (not the control's) of this explainer's explanations."""
    return conn.execute(
        "select count(distinct latent) from scores where explainer = ? and control = 0", [explainer]
    ).fetchone()[0]


def explainer_counts(conn: sqlite3.Connection) -> list[dict]:
    """Per explainer, in name order: explanations written, those that failed (stored without text), latents
    scored."""
    out = []
    for explainer in explainers_explained(conn):
        n, ok = explanation_counts(conn, explainer)
        out.append(
            {"explainer": explainer, "explanations": ok, "failed": n - ok, "scored": scored_latents(conn, explainer)}
        )
    return out
