"""A retest's rows (`autointerp retest`): its draws (retest_draws), and each draw's metric per latent beside the
original's (draw 0: the scores table; draw k: retest_scores), for the test-retest report. The repeats' samples,
explanations and scores themselves are written through results.Results(db, draw)."""

from __future__ import annotations

import json
import sqlite3

from .clock import now
from .scorer_meta import METRICS


def draw_rows(conn: sqlite3.Connection) -> dict[int, dict]:
    """Every recorded draw, by number (JSON fields parsed); none in a file made before schema 13 (not yet
    migrated: the retest's own read-write open migrates it)."""
    if conn.execute("select 1 from sqlite_master where type = 'table' and name = 'retest_draws'").fetchone() is None:
        return {}
    cur = conn.execute("select draw, seed, explainer, scorers, config, created_at, done_at from retest_draws")
    out = {}
    for draw, seed, explainer, scorers, config, created, done in cur:
        out[draw] = {
            "draw": draw,
            "seed": seed,
            "explainer": explainer,
            "scorers": json.loads(scorers or "[]"),
            "config": json.loads(config or "{}"),
            "created_at": created,
            "done_at": done,
        }
    return out


def start_draw(
    conn: sqlite3.Connection, draw: int, seed: int, explainer: str, scorers: list[str], config: dict
) -> None:
    """Record draw `draw` (kept as it is when already there: a resumed retest goes on with its seed); commits."""
    with conn:
        conn.execute(
            "insert into retest_draws (draw, seed, explainer, scorers, config, created_at) values (?, ?, ?, ?, ?, ?)"
            " on conflict (draw) do nothing",
            [draw, seed, explainer, json.dumps(scorers), json.dumps(config, sort_keys=True), now()],
        )


def finish_draw(conn: sqlite3.Connection, draw: int) -> None:
    """Mark the draw done (every chosen latent explained and scored); commits."""
    with conn:
        conn.execute("update retest_draws set done_at = ? where draw = ?", [now(), draw])


def latest_interpret_config(conn: sqlite3.Connection) -> dict:
    """The config recorded by the latest run that explained or scored ({} when none did)."""
    for (text,) in conn.execute("select config from runs where config is not null order by id desc"):
        config = json.loads(text or "{}")
        stages = (config.get("batch") or {}).get("stages") or []
        if "explain" in stages or "score" in stages:
            return config
    return {}


def scored_with(conn: sqlite3.Connection, explainer: str) -> list[str]:
    """The scorers that scored this explainer's explanations (draw 0, real rows), by name."""
    cur = conn.execute(
        "select distinct scorer from scores where explainer = ? and control = 0 order by scorer", [explainer]
    )
    return [r[0] for r in cur]


def draw_metric(conn: sqlite3.Connection, draw: int, explainer: str, scorer: str, metric: str) -> dict[int, tuple]:
    """latent -> (the metric or None, examples that failed) of the real score rows of one draw."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    table, where = ("retest_scores", "draw = ? and ") if draw else ("scores", "")
    args = ([draw] if draw else []) + [explainer, scorer]
    cur = conn.execute(
        f"select latent, {metric}, n_failed from {table} where {where}explainer = ? and scorer = ? and control = 0",
        args,
    )
    return {latent: (value, n_failed or 0) for latent, value, n_failed in cur}


def draw_explained(conn: sqlite3.Connection, draw: int, explainer: str) -> dict[int, str | None]:
    """latent -> None where the draw's explanation has text, else why not (its error), for every stored row."""
    table, where = ("retest_explanations", "draw = ? and ") if draw else ("explanations", "")
    args = ([draw] if draw else []) + [explainer]
    cur = conn.execute(f"select latent, text, error from {table} where {where}explainer = ?", args)
    return {latent: None if text is not None else (error or "no explanation text") for latent, text, error in cur}


def undone_latents(
    conn: sqlite3.Connection, draw: int, explainer: str, scorers: list[str], latents: list[int]
) -> list[int]:
    """The latents whose unit of draw `draw` is not finished: no explanation row yet, or an explanation with text
    that lacks a real score row of some scorer. A failed explanation is a finished unit (counted, not retried)."""
    explained = dict(
        conn.execute(
            "select latent, text is not null from retest_explanations where draw = ? and explainer = ?",
            [draw, explainer],
        ).fetchall()
    )
    scored: dict[int, set[str]] = {}
    for latent, scorer in conn.execute(
        "select latent, scorer from retest_scores where draw = ? and explainer = ? and control = 0", [draw, explainer]
    ):
        scored.setdefault(latent, set()).add(scorer)
    want = set(scorers)
    return [x for x in latents if x not in explained or (explained[x] and not want <= scored.get(x, set()))]
