"""What the dry run's plan reads (`autointerp batch --dry-run`, engine/commands/estimate.py): per block of latents,
what decides each latent's LLM calls (its windows, its stored example sets, what is explained and scored already).

Blocks are spans of latent ids (`latent between ? and ?`), so memory follows the block, not the coder's width.
"""

from __future__ import annotations

import sqlite3

_SPAN = "latent between ? and ?"


def window_counts(conn: sqlite3.Connection, span: list[int]) -> dict[int, int]:
    """{latent: activating windows} of the latents with statistics in the span."""
    return dict(conn.execute(f"select latent, n_windows from latents where {_SPAN}", span))


def stored_sample_sizes(conn: sqlite3.Connection, span: list[int]) -> dict[int, dict[str, int]]:
    """{latent: {role: examples}} of the stored example sets in the span."""
    stored: dict[int, dict] = {}
    for latent, role, n in conn.execute(
        f"select latent, role, count(*) from samples where {_SPAN} group by latent, role", span
    ):
        stored.setdefault(latent, {})[role] = n
    return stored


def skipped_latents(conn: sqlite3.Connection, span: list[int]) -> set[int]:
    """Latents in the span whose example set was skipped (too few windows to sample)."""
    return {r[0] for r in conn.execute(f"select latent from sample_sets where {_SPAN} and skipped is not null", span)}


def explained_latents(conn: sqlite3.Connection, explainer: str, span: list[int]) -> set[int]:
    """Latents in the span with a usable explanation of this explainer."""
    return {
        r[0]
        for r in conn.execute(
            f"select latent from explanations where explainer = ? and text is not null and {_SPAN}",
            [explainer, *span],
        )
    }


def explained_count(conn: sqlite3.Connection, explainer: str) -> int:
    """Usable explanations of this explainer in the whole file."""
    return conn.execute(
        "select count(*) from explanations where explainer = ? and text is not null", [explainer]
    ).fetchone()[0]


def finished_scores(conn: sqlite3.Connection, explainer: str, span: list[int]) -> set[tuple[int, str, int]]:
    """(latent, scorer, control) of the scores in the span a rerun would not redo (no failed example to retry)."""
    return {
        (r[0], r[1], r[2])
        for r in conn.execute(
            "select latent, scorer, control from scores where explainer = ? and latent between ? and ?"
            " and coalesce(n_retry, n_failed) = 0",
            [explainer, *span],
        )
    }
