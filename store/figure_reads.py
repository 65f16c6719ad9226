"""What the report's figures read (engine/commands/report/figures.py): each a column or an aggregate, as numpy
arrays or summed in SQL, never a Python object per latent held at once.

A per-latent column comes from its packed blob (store/columns.py) when that is current, else from one ordered scan
of the rows.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .columns import read_rows, read_score_column, read_stat_column, score_rows_sql
from .scorer_meta import METRICS
from .stages import CACHE_STATS


def _metric(metric: str) -> str:
    if metric not in METRICS:  # a column name, checked before it goes into SQL
        raise ValueError(f"unknown metric {metric!r}")
    return metric


def real_metric(conn: sqlite3.Connection, explainer: str, scorer: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(latents, `metric`) of the real explanations' scores, ascending by latent, NaN where a latent's metric is
    undefined."""
    packed = read_score_column(conn, explainer, scorer, metric)
    return packed if packed is not None else read_rows(conn, score_rows_sql(metric), [explainer, scorer])


def control_metric(conn: sqlite3.Connection, explainer: str, scorer: str, metric: str) -> np.ndarray:
    """`metric` of the random-explanation control's scores (NaN where undefined)."""
    _, values = read_rows(
        conn,
        f"select latent, {_metric(metric)} from scores where explainer = ? and scorer = ? and control = 1",
        [explainer, scorer],
    )
    return values


def frequencies(store) -> tuple[np.ndarray, np.ndarray]:
    """(latents, firing frequency) of every latent with statistics, ascending by latent (an ActivationStore)."""
    conn = store.db.conn
    stats = store.stage(CACHE_STATS)
    packed = read_stat_column(conn, "frequency", stats["fingerprint"]) if stats and stats["done_at"] else None
    return (
        packed if packed is not None else read_rows(conn, "select latent, frequency from latents order by latent", [])
    )


def recall_per_decile_means(
    conn: sqlite3.Connection, explainer: str, scorer: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{control: (mean recall per decile, latents counted per decile)}, deciles 1 (weakest) .. n, aggregated in
    SQL: a million JSON lists are never parsed in Python. A decile no latent has an example in is NaN."""
    # Only JSON arrays start with "[" (the column is written by json.dumps; "null" where a scorer has none). One
    # json_extract per decile and row is ~2x faster than json_each's row per element.
    where = "explainer = ? and scorer = ? and recall_per_decile like '[%'"
    args = [explainer, scorer]
    (n_deciles,) = conn.execute(
        f"select coalesce(max(json_array_length(recall_per_decile)), 0) from scores where {where}", args
    ).fetchone()
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if not n_deciles:
        return out
    columns = ", ".join(
        f"avg(json_extract(recall_per_decile, '$[{i}]')), count(json_extract(recall_per_decile, '$[{i}]'))"
        for i in range(int(n_deciles))
    )
    for control, *cells in conn.execute(f"select control, {columns} from scores where {where} group by control", args):
        means = np.array([np.nan if m is None else m for m in cells[0::2]], dtype=np.float64)
        counts = np.array(cells[1::2], dtype=np.int64)
        if counts.any():
            out[int(control)] = (means, counts)
    return out


def explanation_words(conn: sqlite3.Connection, explainer: str) -> np.ndarray:
    """Words (whitespace-separated) of each usable explanation, streamed: one int per explanation is kept."""
    cursor = conn.execute("select text from explanations where explainer = ? and text is not null", [explainer])
    return np.fromiter((len(t.split()) for (t,) in cursor), dtype=np.int64)


def failure_reasons(conn: sqlite3.Connection, explainer: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(failed explanations by reason, failed scorer examples by `scorer: reason`), each largest first, summed
    in SQL (scores.errors is a JSON object {message: count} per row)."""
    explain = conn.execute(
        "select coalesce(error, '(no reason recorded)'), count(*) from explanations"
        " where explainer = ? and text is null group by 1 order by 2 desc, 1",
        [explainer],
    ).fetchall()
    score = conn.execute(
        "select s.scorer || ': ' || j.key, sum(j.value) from scores s, json_each(s.errors) j"
        " where s.explainer = ? and json_valid(s.errors) and json_type(s.errors) = 'object'"
        " group by 1 having sum(j.value) > 0 order by 2 desc, 1",
        [explainer],
    ).fetchall()
    return [(str(r), int(n)) for r, n in explain], [(str(r), int(n)) for r, n in score]


def stage_tokens(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(stage, prompt tokens, output tokens) summed over batch runs (the `progress` table), stages that used an
    LLM only, in the order they first ran."""
    rows = conn.execute(
        "select stage, coalesce(sum(prompt_tokens), 0), coalesce(sum(output_tokens), 0) from progress"
        " group by stage order by min(started_at), stage"
    ).fetchall()
    return [(str(s), int(p), int(o)) for s, p, o in rows if p or o]
