"""Human audits of explanations: one researcher's rating, own explanation, note and flag per latent.

The browser reads through a read-only connection; a rating is the one thing a browsing session writes, on
its own short-lived connection, one transaction per change (a batch writing the same file waits at most
that long).
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from pathlib import Path

import numpy as np

from .clock import now
from .connection import connect

RATINGS = ("correct", "partly", "wrong")
RATING_VALUE = {"wrong": 0.0, "partly": 0.5, "correct": 1.0}
FIELDS = ("rating", "explanation", "note", "flagged")


def default_rater() -> str:
    """Who is rating when no name is given: $AUTOINTERP_RATER, else the login name."""
    return os.environ.get("AUTOINTERP_RATER") or getpass.getuser()


def write_audit(
    path: str | Path, latent: int, explainer: str, explanation_seen: str | None, *, rater: str | None = None, **changes
) -> dict:
    """Set some of rating / explanation / note / flagged for one latent, as one rater; returns the stored row.

    created_at is kept from the first write, updated_at stamped on every one.
    """
    rater = rater or default_rater()
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown audit fields {sorted(unknown)}")
    if changes.get("rating") not in (None, *RATINGS):
        raise ValueError(f"rating must be one of {RATINGS}, not {changes['rating']!r}")
    conn = connect(str(path))
    try:
        stamp = now()
        with conn:
            conn.execute(
                "insert into audits (latent, explainer, rater, flagged, explanation_seen, created_at, updated_at)"
                " values (?, ?, ?, 0, ?, ?, ?) on conflict (latent, explainer, rater) do nothing",
                [latent, explainer, rater, explanation_seen, stamp, stamp],
            )
            sets = ", ".join(f"{k} = ?" for k in changes)
            conn.execute(
                f"update audits set {sets + ', ' if sets else ''}explanation_seen = ?, updated_at = ?"
                " where latent = ? and explainer = ? and rater = ?",
                [*changes.values(), explanation_seen, stamp, latent, explainer, rater],
            )
        cur = conn.execute(
            "select * from audits where latent = ? and explainer = ? and rater = ?", [latent, explainer, rater]
        )
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))
    finally:
        conn.close()


def rated_count(conn: sqlite3.Connection, explainer: str) -> int:
    """How many of this explainer's explanations have a rating."""
    return conn.execute(
        "select count(*) from audits where explainer = ? and rating is not null", [explainer]
    ).fetchone()[0]


def explanation_text(conn: sqlite3.Connection, latent: int, explainer: str) -> str | None:
    """The explanation an auditor is shown for a latent (None when it has none or it failed)."""
    row = conn.execute(
        "select text from explanations where latent = ? and explainer = ?", [latent, explainer]
    ).fetchone()
    return row[0] if row else None


def audit_queue(
    conn: sqlite3.Connection,
    mode: str,
    explainer: str,
    *,
    scorer: str | None = None,
    metric: str = "balanced_accuracy",
    filtered=None,
    seed: int = 0,
) -> list[int]:
    """Explained latents to audit, not yet rated first within each mode's order.

    random: a seeded shuffle; lowest: by the scorer's metric, lowest first (unscored last);
    filtered: the given latent order (e.g. the browser's current filter).
    """
    explained = [
        r[0]
        for r in conn.execute(
            "select latent from explanations where explainer = ? and text is not null order by latent", [explainer]
        )
    ]
    rated = {
        r[0] for r in conn.execute("select latent from audits where explainer = ? and rating is not null", [explainer])
    }
    if mode == "random":
        order = [explained[i] for i in np.random.default_rng(seed).permutation(len(explained))]
    elif mode == "lowest":
        if scorer is None:
            raise ValueError("the 'lowest' queue needs a scorer")
        score = dict(
            conn.execute(
                f"select latent, {metric} from scores where explainer = ? and scorer = ? and control = 0"
                f" and {metric} is not null",
                [explainer, scorer],
            ).fetchall()
        )
        order = sorted(explained, key=lambda x: (x not in score, score.get(x, 0.0), x))
    elif mode == "filtered":
        keep = set(explained)
        order = [int(x) for x in (filtered if filtered is not None else []) if int(x) in keep]
    else:
        raise ValueError(f"unknown queue {mode!r}; use random, lowest or filtered")
    return [x for x in order if x not in rated] + [x for x in order if x in rated]


def agreement(conn: sqlite3.Connection, explainer: str, scorers: dict[str, str]) -> list[dict]:
    """How human ratings line up with each scorer's metric (scorers: {scorer: metric}).

    Per scorer: latents rated and scored, the mean metric per rating, and Spearman's rank correlation
    between rating (wrong < partly < correct) and the metric (None with fewer than 3 pairs or no spread).
    """
    out = []
    for scorer, metric in scorers.items():
        pairs = conn.execute(
            f"select a.rating, s.{metric} from audits a join scores s on s.latent = a.latent"
            f" and s.explainer = a.explainer and s.scorer = ? and s.control = 0"
            f" where a.explainer = ? and a.rating is not null and s.{metric} is not null",
            [scorer, explainer],
        ).fetchall()
        by_rating = {r: [v for rr, v in pairs if rr == r] for r in RATINGS}
        rho = None
        if len(pairs) >= 3:
            x = np.array([RATING_VALUE[r] for r, _ in pairs])
            y = np.array([v for _, v in pairs])
            if x.std() > 0 and y.std() > 0:
                from scipy.stats import spearmanr  # lazily: only the audit view needs scipy

                rho = float(spearmanr(x, y).statistic)
        out.append(
            {
                "scorer": scorer,
                "metric": metric,
                "n": len(pairs),
                "spearman": rho,
                "mean_by_rating": {r: (float(np.mean(v)) if v else None) for r, v in by_rating.items()},
                "n_by_rating": {r: len(v) for r, v in by_rating.items()},
            }
        )
    return out
