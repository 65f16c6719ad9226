"""What `autointerp report` reads: metric columns per scorer, failures, LLM accounting and time per stage.

Every read takes only the columns it reports (never a score's outcomes) and, where a selection of latents is
given, only those latents (passed as one JSON list, so any number of them is one parameter).
"""

from __future__ import annotations

import json
import sqlite3

from .scorer_meta import METRICS

ACCOUNTING = ("latents", "calls", "failed_calls", "prompt_tokens", "cached_tokens", "output_tokens", "backend_s")


def _in(latents: list[int] | None, column: str = "latent") -> tuple[str, list]:
    if latents is None:
        return "1", []
    return f"{column} in (select value from json_each(?))", [json.dumps(list(latents))]


def scorer_names(conn: sqlite3.Connection, explainer: str, latents: list[int] | None = None) -> list[str]:
    """The scorers with scores from this explainer (over these latents), in name order."""
    if latents is None:
        rows = conn.execute("select distinct scorer from scores where explainer = ? order by scorer", [explainer])
    else:
        sel, sel_args = _in(latents)
        rows = conn.execute(
            f"select distinct scorer from scores where explainer = ? and {sel} order by scorer", [explainer, *sel_args]
        )
    return [r[0] for r in rows]


def metric_columns(
    conn: sqlite3.Connection, explainer: str, scorer: str, control: int, names, latents: list[int] | None = None
) -> tuple[dict[str, list], int]:
    """({name: its values in latent order}, rows) of one scorer's real (control 0) or control (1) scores: the metric
    columns only, as columns, never a dict per latent."""
    sel, sel_args = _in(latents)
    rows = conn.execute(
        f"select {', '.join(names)} from scores where explainer = ? and scorer = ? and control = ? and {sel}"
        " order by latent",
        [explainer, scorer, control, *sel_args],
    ).fetchall()
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}, len(rows)


def score_details(
    conn: sqlite3.Connection, explainer: str, scorer: str, latents: list[int] | None = None
) -> list[dict]:
    """[{"control", "details"}] of one scorer's rows in latent order, details parsed (intervention's per target)."""
    sel, sel_args = _in(latents)
    rows = conn.execute(
        f"select control, details from scores where explainer = ? and scorer = ? and {sel} order by latent",
        [explainer, scorer, *sel_args],
    )
    return [{"control": c, "details": json.loads(d) if d else None} for c, d in rows]


def llm_accounting(
    conn: sqlite3.Connection,
    explainer: str,
    scorer: str | None = None,
    latents: list[int] | None = None,
    *,
    called_only: bool = False,
) -> dict:
    """{ACCOUNTING name: sum} over the explanations (scorer None) or one scorer's scores: latents, LLM calls, failed
    calls, prompt / cached / output tokens and backend seconds. `called_only`: every row that made a call, whatever
    `latents` says (what the dry run measures tokens per call on)."""
    table = "explanations" if scorer is None else "scores"
    where, args = (
        ("explainer = ?", [explainer]) if scorer is None else ("explainer = ? and scorer = ?", [explainer, scorer])
    )
    if called_only:
        where += " and n_calls > 0"
    else:
        sel, sel_args = _in(latents)
        where, args = f"{where} and {sel}", [*args, *sel_args]
    row = conn.execute(
        f"select count(distinct latent), coalesce(sum(n_calls), 0), coalesce(sum(n_failed_calls), 0),"
        f" coalesce(sum(prompt_tokens), 0), coalesce(sum(max(cached_tokens, 0)), 0),"
        f" coalesce(sum(output_tokens), 0), coalesce(sum(llm_seconds), 0) from {table} where {where}",
        args,
    ).fetchone()
    return dict(zip(ACCOUNTING, row))


def explanation_failures(conn: sqlite3.Connection, explainer: str, latents: list[int] | None = None) -> dict[str, int]:
    """{error: failed explanations}, the most common first."""
    sel, sel_args = _in(latents)
    return dict(
        conn.execute(
            f"select error, count(*) from explanations where explainer = ? and text is null and {sel}"
            " group by error order by count(*) desc",
            [explainer, *sel_args],
        ).fetchall()
    )


def explanation_counts(conn: sqlite3.Connection, explainer: str, latents: list[int] | None = None) -> tuple[int, int]:
    """(explanations, those with text)."""
    sel, sel_args = _in(latents)
    n, ok = conn.execute(
        f"select count(*), count(text) from explanations where explainer = ? and {sel}", [explainer, *sel_args]
    ).fetchone()
    return n, ok


def score_error_counts(
    conn: sqlite3.Connection, explainer: str, scorer: str, latents: list[int] | None = None
) -> dict[str, int]:
    """{reason: failed examples} summed over one scorer's rows (each row's `errors` is {reason: count})."""
    sel, sel_args = _in(latents)
    errs: dict[str, int] = {}
    for (blob,) in conn.execute(
        f"select errors from scores where explainer = ? and scorer = ? and {sel}", [explainer, scorer, *sel_args]
    ):
        for why, n in (json.loads(blob) if blob else {}).items():
            errs[why] = errs.get(why, 0) + n
    return errs


def stage_times(conn: sqlite3.Connection) -> dict[str, dict]:
    """{stage: {"wall_s", "runs"}} summed over batch runs, in the order the stages first ran."""
    return {
        stage: {"wall_s": wall, "runs": runs}
        for stage, wall, runs in conn.execute(
            "select stage, sum(wall_s), count(distinct run) from progress group by stage order by min(started_at)"
        )
    }


# ---- best-of-N candidates -------------------------------------------------------------------------------------


def candidate_latents(conn: sqlite3.Connection, explainer: str) -> int:
    """Latents of this explainer with candidate explanations (best-of-N)."""
    return conn.execute(
        "select count(*) from explanation_candidates where explainer = ? and idx = 0", [explainer]
    ).fetchone()[0]


def chosen_by_draw(conn: sqlite3.Connection, explainer: str) -> dict[int, int]:
    """{draw index: latents whose kept explanation is that draw}."""
    return {
        int(idx): count
        for idx, count in conn.execute(
            "select idx, count(*) from explanation_candidates where explainer = ? and chosen = 1 group by idx",
            [explainer],
        )
    }


def first_draws(conn: sqlite3.Connection, explainer: str, scorer: str, metric: str):
    """A cursor of (the kept explanation's `metric`, whether the first draw was kept, its held-out scores as JSON),
    one row per latent with candidates and a real score of this scorer."""
    if metric not in METRICS:  # a column name, formatted into the SQL
        raise ValueError(f"unknown metric {metric!r}")
    return conn.execute(
        f"select s.{metric}, c.chosen, c.heldout from explanation_candidates c join scores s"
        " on s.latent = c.latent and s.explainer = c.explainer and s.scorer = ? and s.control = 0"
        " where c.explainer = ? and c.idx = 0",
        [scorer, explainer],
    )


# ---- error bars (scores.ci) -----------------------------------------------------------------------------------


def _bounds(table: str, metric: str) -> tuple[str, str]:
    """SQL of one metric's interval low and high in a score row's ci (null where the row has none)."""
    if metric not in METRICS:  # a JSON path formatted into the SQL
        raise ValueError(f"unknown metric {metric!r}")
    return f"json_extract({table}.ci, '$.{metric}[0]')", f"json_extract({table}.ci, '$.{metric}[1]')"


def interval_widths(
    conn: sqlite3.Connection, explainer: str, scorer: str, control: int, metric: str, latents: list[int] | None = None
) -> tuple[float | None, float | None, int]:
    """(mean of `metric`, mean half-width of its 95% interval, rows) over one side's rows that have an interval."""
    low, high = _bounds("s", metric)
    sel, sel_args = _in(latents, "s.latent")
    mean, half, n = conn.execute(
        f"select avg(s.{metric}), avg(({high} - {low}) / 2.0), count(*) from scores s"
        f" where s.explainer = ? and s.scorer = ? and s.control = ? and {sel} and {low} is not null",
        [explainer, scorer, control, *sel_args],
    ).fetchone()
    return mean, half, n


def interval_overlaps(
    conn: sqlite3.Connection, explainer: str, scorer: str, metric: str, latents: list[int] | None = None
) -> tuple[int, int]:
    """(latents whose real and control rows both have an interval of `metric`, those whose two intervals overlap)."""
    rl, rh = _bounds("r", metric)
    cl, ch = _bounds("c", metric)
    sel, sel_args = _in(latents, "r.latent")
    pairs, overlap = conn.execute(
        f"select count(*), coalesce(sum(rl <= ch and cl <= rh), 0) from (select {rl} rl, {rh} rh, {cl} cl, {ch} ch"
        " from scores r join scores c on c.latent = r.latent and c.explainer = r.explainer and c.scorer = r.scorer"
        f" and c.control = 1 where r.explainer = ? and r.scorer = ? and r.control = 0 and {sel})"
        " where rl is not null and cl is not null",
        [explainer, scorer, *sel_args],
    ).fetchone()
    return pairs, overlap
