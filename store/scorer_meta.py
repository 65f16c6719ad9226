"""What each scorer is, as recorded by the run that scored with it: the one place readers learn a scorer's
primary metric, the metric shown when that is undefined, what one of its outcomes is, and how its evidence renders.

The scorer class declares these (engine/interpretation/scorers/protocol.py `Scorer.meta`); the score stage writes
them here when it scores, so the browser, the TUI, reports, comparisons and figures read them from the file instead
of keeping copies of the engine's registry (a file scored by another autointerp shows as its scorers said).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

# The metric columns of `scores`, in the order reports and exports list them (engine/interpretation/metrics.py
# computes them; a scorer's primary metric is one of these).
METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc", "correlation")

# What one outcome (one scored item) of a scorer is.
OUTCOMES = (
    "window",  # a cached window, labelled activating or not (detection, fuzzing, embedding, ...)
    "text",  # a text the LLM wrote, run through the subject model (generation)
    "prompt",  # a steered prompt pair (intervention)
)
# How a score's evidence (its outcomes beside the truth) is shown.
EVIDENCE = (
    "labels",  # each excerpt with the scorer's label or probability
    "marks",  # excerpts with marked tokens (fuzzing)
    "predictions",  # per-token predicted activations under the true ones (simulation)
    "groups",  # groups of excerpts, one of them the intruder (intruder)
    "texts",  # the written texts with their peak activation (generation)
    "steering",  # per-target steering results, no excerpts (intervention)
)


@dataclass(frozen=True)
class ScorerMeta:
    name: str
    primary_metric: str = "balanced_accuracy"  # what it is sorted and summarised by
    fallback_metric: str = "auroc"  # shown for a latent whose primary metric is undefined
    outcome: str = "window"
    evidence: str = "labels"

    @property
    def outcomes_are_windows(self) -> bool:
        """Outcome windows are cached windows (an export shows their tokens; the evidence joins `samples`)."""
        return self.outcome == "window"


# Files scored before schema 12 recorded no metadata; these are what the scorers of that time declared. Frozen:
# such a file can only hold these scorers, so the migration writes them for it (and nothing else reads this).
BEFORE_SCHEMA_12 = (
    ScorerMeta("detection"),
    ScorerMeta("fuzzing", evidence="marks"),
    ScorerMeta("embedding", primary_metric="auroc"),
    ScorerMeta("surprisal", primary_metric="auroc"),
    ScorerMeta("simulation", primary_metric="correlation", evidence="predictions"),
    ScorerMeta("intruder", primary_metric="accuracy", evidence="groups"),
    ScorerMeta("generation", primary_metric="recall", outcome="text", evidence="texts"),
    ScorerMeta("intervention", outcome="prompt", evidence="steering"),
)

_COLUMNS = ("name", "primary_metric", "fallback_metric", "outcome", "evidence")


def backfill_before_schema_12(conn: sqlite3.Connection) -> None:
    """The schema-12 step for a file that already holds scores: what its scorers declared then."""
    if conn.execute("select 1 from scores limit 1").fetchone() is not None:
        record_scorers(conn, BEFORE_SCHEMA_12)


def record_scorers(conn: sqlite3.Connection, metas) -> None:
    """Write (or replace) the metadata of these scorers; the caller commits."""
    conn.executemany(
        f"insert or replace into scorers ({', '.join(_COLUMNS)}) values ({', '.join('?' * len(_COLUMNS))})",
        [tuple(asdict(m)[c] for c in _COLUMNS) for m in metas],
    )


def read_scorers(conn: sqlite3.Connection) -> dict[str, ScorerMeta]:
    """Every recorded scorer's metadata, by name."""
    rows = conn.execute(f"select {', '.join(_COLUMNS)} from scorers").fetchall()
    return {r[0]: ScorerMeta(*r) for r in rows}


def scorer_meta(conn: sqlite3.Connection, scorer: str, recorded: dict[str, ScorerMeta] | None = None) -> ScorerMeta:
    """One scorer's metadata: as recorded, else (scores written without it: a hand-made or synthetic file) the
    rule the readers always used: balanced accuracy when the scorer has any, else AUROC."""
    recorded = read_scorers(conn) if recorded is None else recorded
    if scorer in recorded:
        return recorded[scorer]
    has_bal = conn.execute(
        "select 1 from scores where scorer = ? and balanced_accuracy is not null limit 1", [scorer]
    ).fetchone()
    return ScorerMeta(scorer, "balanced_accuracy" if has_bal else "auroc")


def primary_metrics(conn: sqlite3.Connection, scorers) -> dict[str, str]:
    """{scorer: its primary metric} for these scorer names."""
    recorded = read_scorers(conn)
    return {s: scorer_meta(conn, s, recorded).primary_metric for s in scorers}


def shown_metric(meta: ScorerMeta, real: dict, control: dict) -> str:
    """The metric a latent's score line shows: the primary one, else the fallback when neither the real nor the
    control row has the primary (e.g. a latent too rare for a balanced accuracy)."""
    metric = meta.primary_metric
    if real.get(metric) is None and control.get(metric) is None and meta.fallback_metric:
        return meta.fallback_metric
    return metric
