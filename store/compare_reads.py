"""What the two-run commands read of each run: `autointerp compare` (scores) and `autointerp similarity`
(explanation texts). Values come back as numpy columns, never a dict per latent."""

from __future__ import annotations

import sqlite3

import numpy as np

from .scorer_meta import METRICS


def holds_scores(conn: sqlite3.Connection) -> bool:
    return not conn.execute("select not exists (select 1 from scores)").fetchone()[0]


def scorers_of(conn: sqlite3.Connection, explainer: str) -> list[str]:
    """The scorers with scores from this explainer, in name order."""
    return sorted(s for (s,) in conn.execute("select distinct scorer from scores where explainer = ?", [explainer]))


def explainers_scored(conn: sqlite3.Connection) -> list[str]:
    """Every explainer with scores, in name order."""
    return [e for (e,) in conn.execute("select distinct explainer from scores order by explainer")]


def metric_values(conn: sqlite3.Connection, explainer: str, scorer: str, control: int, metric: str) -> np.ndarray:
    """One metric over latents as a float array, streamed from the cursor; undefined values (null) left out."""
    if metric not in METRICS:  # a column name, formatted into the SQL
        raise ValueError(f"unknown metric {metric!r}")
    cursor = conn.execute(
        f"select {metric} from scores where explainer = ? and scorer = ? and control = ? and {metric} is not null",
        [explainer, scorer, control],
    )
    return np.fromiter((row[0] for row in cursor), dtype=np.float64)


def holds_explanations(conn: sqlite3.Connection) -> bool:
    return not conn.execute("select not exists (select 1 from explanations)").fetchone()[0]


def explanation_texts(conn: sqlite3.Connection, explainer: str) -> list[tuple[int, str]]:
    """(latent, text) of every usable explanation of this explainer, in latent order."""
    return conn.execute(
        "select latent, text from explanations where explainer = ? and text is not null order by latent", [explainer]
    ).fetchall()


def explainers_explained(conn: sqlite3.Connection) -> list[str]:
    """Every explainer with explanations (usable or failed), in name order."""
    return [e for (e,) in conn.execute("select distinct explainer from explanations order by explainer")]
