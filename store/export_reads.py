"""What the exports read (engine/commands/export/): cursors in latent order, so an export streams one latent at a
time at any number of latents; score rows are read as metric columns, never their outcomes (except delphi's, which
reads them one row at a time through `Results.iter_scores`)."""

from __future__ import annotations

import sqlite3

from .audits import AUDITS_BY_LATENT
from .scorer_meta import METRICS

_METRIC_COLUMNS = ", ".join(METRICS)


def score_sides(conn: sqlite3.Connection, explainer: str) -> list[tuple[str, int]]:
    """(scorer, control) of every side this explainer's scores have."""
    return conn.execute("select distinct scorer, control from scores where explainer = ?", [explainer]).fetchall()


def score_metric_rows(conn: sqlite3.Connection, explainer: str, *, provenance: bool = False):
    """A cursor of (latent, scorer, control, *METRICS, n, n_failed, explanation_latent), and with `provenance` the
    row's model and created_at after them, in (latent, scorer, control) order."""
    extra = ", model, created_at" if provenance else ""
    return conn.execute(
        f"select latent, scorer, control, {_METRIC_COLUMNS}, n, n_failed, explanation_latent{extra} from scores"
        " where explainer = ? order by latent, scorer, control",
        [explainer],
    )


def explanation_rows(conn: sqlite3.Connection, explainer: str):
    """A cursor of (latent, text, error, model, n_examples, prompt_tokens, output_tokens, frequency, max_act,
    n_windows, audits as JSON {rater: audit}) per explanation of this explainer, in latent order."""
    return conn.execute(
        "select e.latent, e.text, e.error, e.model, e.n_examples, e.prompt_tokens, e.output_tokens,"
        " l.frequency, l.max_act, l.n_windows, a.audits"
        " from explanations e left join latents l on l.latent = e.latent"
        f" left join ({AUDITS_BY_LATENT}) a on a.latent = e.latent"
        " where e.explainer = ? order by e.latent",
        [explainer, explainer],
    )


def explanation_texts(conn: sqlite3.Connection, explainer: str):
    """A cursor of (latent, text or None where the explanation failed), in latent order."""
    return conn.execute("select latent, text from explanations where explainer = ? order by latent", [explainer])


# ---- Neuronpedia: every latent that fired and every explained one ---------------------------------------------

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


def feature_rows(conn: sqlite3.Connection, explainer: str):
    """A cursor of (latent, frequency, max_act, count, hist_edges, hist_counts, promoted, suppressed, neighbours,
    text, model, created_at) per latent that fired or was explained, in latent order."""
    return conn.execute(_FEATURES_SQL, [explainer, explainer])


def vocab_size(conn: sqlite3.Connection) -> int:
    """Tokens in the stored vocabulary (0: never annotated)."""
    return conn.execute("select count(*) from vocab").fetchone()[0]
