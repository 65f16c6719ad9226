"""What the exports read (engine/commands/export/): cursors in latent order, so an export streams one latent at a
time at any number of latents; score rows are read as metric columns, never their outcomes (except delphi's, which
reads them one row at a time through `Results.iter_scores`)."""

from __future__ import annotations

import json
import sqlite3

from .audits import AUDITS_BY_LATENT
from .scorer_meta import METRICS

_METRIC_COLUMNS = ", ".join(METRICS)


def score_sides(conn: sqlite3.Connection, explainer: str) -> list[tuple[str, int]]:
    """(scorer, control) of every side this explainer's scores have."""
    return conn.execute("select distinct scorer, control from scores where explainer = ?", [explainer]).fetchall()


def score_metric_rows(conn: sqlite3.Connection, explainer: str, *, provenance: bool = False, ci: bool = False):
    """A cursor of (latent, scorer, control, *METRICS, n, n_failed, explanation_latent), with `ci` the row's intervals
    (JSON text or null) and with `provenance` its model and created_at after them, in (latent, scorer, control)
    order."""
    extra = (", ci" if ci else "") + (", model, created_at" if provenance else "")
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


# ---- delphi: what its reader reads beside the score files -------------------------------------------------------


def firing_counts(conn: sqlite3.Connection):
    """A cursor of (latent, tokens it fired on) per latent that fired, from the statistics."""
    return conn.execute("select latent, count from latents where count > 0")


def latest_run_config(conn: sqlite3.Connection) -> dict:
    """The config the latest batch run recorded (its sample, score and llm sections); {} when none did."""
    found = conn.execute(
        "select config from runs where config is not null and config != '{}' order by id desc limit 1"
    ).fetchone()
    return json.loads(found[0]) if found else {}


def explainer_model(conn: sqlite3.Connection, explainer: str) -> str | None:
    """The model that wrote this explainer's first explanation (None: no explanation names one)."""
    row = conn.execute(
        "select model from explanations where explainer = ? and model is not null order by latent limit 1", [explainer]
    ).fetchone()
    return row[0] if row else None
