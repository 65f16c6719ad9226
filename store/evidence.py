"""Why a score is what it is: one scorer's held-out examples for one latent, each with the scorer's answer beside the
truth, read from what the score row already stores (scores.outcomes / details), the sample set (each window's role
and source) and the cache (each window's tokens and activations).

What is not stored is said, never guessed (`EvidenceSide.notes`). Fuzzing keeps the token positions each excerpt
showed marked, simulation its per-token predictions and intruder its groups and picks, in `details`, by rows scored
since they were kept; older rows say so (an older fuzzing row's correct marks are recomputed from the explanation's
threshold; its moved marks were random and cannot be).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

import numpy as np

from .queries import WindowQueries
from .scorer_meta import METRICS, ScorerMeta, scorer_meta

VERDICTS = {(1, 1): "true positive", (0, 1): "false positive", (0, 0): "true negative", (1, 0): "false negative"}
VERDICT_ORDER = ("false positive", "false negative", "true positive", "true negative", "failed", "unlabelled")


@dataclass
class EvidenceExample:
    """One scored example: the stored outcome, its verdict, where its window came from, and its cached text."""

    window: int  # global window id; a sequence / prompt id or -1 where the scorer's outcomes are not windows
    label: int  # 1: the explanation should say yes (activating, correctly marked, the intruder named, ...)
    decile: int  # 1..n for activating windows, 0 otherwise
    prediction: int | None
    probability: float | None
    failed: bool
    verdict: str  # a VERDICTS value, "failed", or "unlabelled" (no 0/1 answer, only a probability)
    role: str | None = None  # samples.role of the window for this latent (None: not in the sample set)
    source: str | None = None  # samples.source: top / random / stratified / neighbours / coactivation / embedding
    tokens: np.ndarray | None = None  # token ids of the cached window (None where not a cached window)
    acts: np.ndarray | None = None  # the latent's activation per token (float32)
    marks: np.ndarray | None = None  # fuzzing: which tokens were shown marked, where that can be known
    marked: list[int] | None = None  # fuzzing: the marked token positions as stored with the score (None: older row)
    text: str | None = None  # generation: the written text
    text_peak: float | None = None  # generation: the text's peak activation
    predicted: np.ndarray | None = None  # simulation: the per-token prediction (0-10), where stored
    group: list[int] | None = None  # intruder: the group's windows in the order shown (the intruder among them)
    named: int | None = None  # intruder: the window the scorer named (None: failed, or not stored)

    @property
    def max_act(self) -> float:
        return float(self.acts.max(initial=0.0)) if self.acts is not None and len(self.acts) else 0.0

    @property
    def wrong_marks(self) -> list[int]:
        """Fuzzing: the marked positions on tokens that did not fire (the excerpt's wrong marks); [] where unknown."""
        if self.marks is None or self.acts is None:
            return []
        return [int(i) for i in np.flatnonzero(self.marks & (self.acts <= 0))]


@dataclass
class EvidenceSide:
    """The real explanation's score row, or the random control's."""

    control: bool
    explanation: str | None
    explanation_latent: int | None
    counts: dict  # tp / fp / tn / fn / n / n_scored / n_failed as the row stores them
    metrics: dict  # the row's metrics (None where not computed)
    examples: list[EvidenceExample]
    details: dict
    errors: dict
    notes: list[str] = field(default_factory=list)  # what the row does not store ("not stored: <note>")

    def verdict_counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for ex in self.examples:
            out[ex.verdict] += 1
        return out


@dataclass
class ScorerEvidence:
    latent: int
    explainer: str
    scorer: str
    real: EvidenceSide | None
    control: EvidenceSide | None
    meta: ScorerMeta  # what the scorer is, as recorded: its `evidence` says how these outcomes render
    threshold: float | None = None  # fuzzing's marking threshold (from the explanation's settings), if known
    load_ms: float = 0.0
    signature: tuple = ()  # score_signature of the rows read: a poll compares it to see whether to read again


def score_signature(conn: sqlite3.Connection, latent: int, explainer: str, scorer: str) -> tuple:
    """What changes whenever one of the latent's (real, control) score rows for this scorer is written: each row's
    rowid (a new row) and created_at (a rewrite: the store upserts, keeping the rowid, and stamps every write to the
    microsecond). Two rows through the primary key's index, without their JSON: cheap enough for every poll."""
    return tuple(
        conn.execute(
            "select control, rowid, created_at from scores where latent = ? and explainer = ? and scorer = ?"
            " order by control",
            [latent, explainer, scorer],
        ).fetchall()
    )


def verdict(o: dict) -> str:
    if o.get("failed"):
        return "failed"
    if o.get("prediction") is None:
        return "unlabelled"
    return VERDICTS[(int(o["label"]), int(o["prediction"]))]


def _side(row: dict, evidence: str) -> EvidenceSide:
    outcomes = json.loads(row["outcomes"] or "[]")
    details = json.loads(row["details"] or "null") or {}
    examples = [
        EvidenceExample(
            int(o.get("window", -1)),
            int(o["label"]),
            int(o.get("decile") or 0),
            o.get("prediction"),
            o.get("probability"),
            bool(o.get("failed")),
            verdict(o),
        )
        for o in outcomes
    ]
    notes = []
    if evidence == "predictions":
        predicted = details.get("predicted")
        if predicted is None:  # rows scored before the predictions were kept
            notes.append("per-token predictions (each excerpt shows its predicted peak, 0-10, only)")
        for ex, p in zip(examples, predicted or []):
            ex.predicted = None if p is None else np.asarray(p, np.float32)
    elif evidence == "marks":
        marked = details.get("marks")
        if marked is None:  # rows scored before the marks were kept
            notes.append("which silent tokens a wrongly marked excerpt had marked (only correct marks are shown)")
        for ex, m in zip(examples, marked or []):
            ex.marked = [int(i) for i in m]
    elif evidence == "groups":
        groups = details.get("groups")
        if groups is None:  # rows scored before the groups were kept
            notes.append("the excerpt picked instead of a missed intruder, and the rest of each group")
        for ex, g in zip(examples, groups or []):
            ex.group = [int(w) for w in g["windows"]]
            ex.named = None if g["named"] is None else ex.group[int(g["named"])]
    elif evidence == "texts":
        texts = details.get("texts") or []
        # details.texts holds every written text in outcome order (a text that tokenised to nothing is a failed
        # outcome with its text kept); texts asked for but not written are the trailing failed outcomes.
        for ex, t in zip(examples, texts):
            ex.text, ex.text_peak = t.get("text"), t.get("max_act")
    return EvidenceSide(
        bool(row["control"]),
        row["explanation"],
        row["explanation_latent"],
        {k: row[k] for k in ("tp", "fp", "tn", "fn", "n", "n_scored", "n_failed")},
        {k: row[k] for k in METRICS},
        examples,
        details,
        json.loads(row["errors"] or "null") or {},
        notes,
    )


def read_evidence(
    conn: sqlite3.Connection, queries: WindowQueries | None, latent: int, explainer: str, scorer: str
) -> ScorerEvidence:
    """One latent's evidence for one (explainer, scorer): both score rows, each outcome with its window's role,
    source, tokens and activations (one activation read and one sequence read for all windows of both rows)."""
    t0 = time.perf_counter()
    # Read before the rows: a write landing in between makes the next poll read again, never miss the write.
    signature = score_signature(conn, latent, explainer, scorer)
    cur = conn.execute(
        "select control, explanation, explanation_latent, outcomes, details, errors, tp, fp, tn, fn, n, n_scored,"
        f" n_failed, {', '.join(METRICS)} from scores"
        " where latent = ? and explainer = ? and scorer = ? order by control",
        [latent, explainer, scorer],
    )
    names = [d[0] for d in cur.description]
    meta = scorer_meta(conn, scorer)
    sides = {bool(r[0]): _side(dict(zip(names, r)), meta.evidence) for r in cur.fetchall()}
    ev = ScorerEvidence(latent, explainer, scorer, sides.get(False), sides.get(True), meta, signature=signature)
    all_examples = [ex for s in sides.values() for ex in s.examples]
    if meta.outcomes_are_windows and all_examples:
        samples = {
            w: (role, source)
            for w, role, source in conn.execute("select window, role, source from samples where latent = ?", [latent])
        }
        for ex in all_examples:
            ex.role, ex.source = samples.get(ex.window, (None, None))
        wanted = sorted({ex.window for ex in all_examples if ex.window >= 0})
        if queries is not None and wanted:
            aw = queries.activating(latent)
            by_id = dict(zip(wanted, queries.fetch(aw, wanted)))
            for ex in all_examples:
                w = by_id.get(ex.window)
                if w is not None:
                    ex.tokens, ex.acts = w.tokens, w.acts
    if meta.evidence == "marks":
        row = conn.execute(
            "select settings from explanations where latent = ? and explainer = ?", [latent, explainer]
        ).fetchone()
        threshold = (json.loads(row[0] or "{}") if row else {}).get("threshold")
        ev.threshold = float(threshold) if threshold is not None else None
        for ex in all_examples:
            if ex.marked is not None and ex.acts is not None:  # as stored: the positions the prompt marked
                ex.marks = np.zeros(len(ex.acts), bool)
                ex.marks[[i for i in ex.marked if 0 <= i < len(ex.acts)]] = True
            # An older row: a correctly marked excerpt (label 1) marks the tokens at or above threshold x its max, as
            # fuzzing drew them (engine/interpretation/examples.py marked_positions); label 0 marks were random.
            elif ex.label == 1 and ev.threshold is not None and ex.acts is not None and ex.max_act > 0:
                ex.marks = ex.acts >= ev.threshold * ex.max_act
    ev.load_ms = (time.perf_counter() - t0) * 1000
    return ev
