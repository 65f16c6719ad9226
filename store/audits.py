"""Human audits of explanations: each researcher's (rater's) rating, own explanation, note and flag per latent.

The browser reads through a read-only connection; a rating is the one thing a browsing session writes, on
its own short-lived connection, one transaction per change (a batch writing the same file waits at most
that long).
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

from . import agreement as agreement_stats
from .clock import now
from .connection import connect

RATINGS = ("correct", "partly", "wrong")
RATING_VALUE = {"wrong": 0.0, "partly": 0.5, "correct": 1.0}
RATING_RANK = {"wrong": 0, "partly": 1, "correct": 2}  # the ordinal codes Krippendorff's alpha is computed on
FIELDS = ("rating", "explanation", "note", "flagged")
MIN_SHARED = 2  # fewer latents rated by both (or by two or more raters) and no agreement figure is given


def default_rater() -> str:
    """Who is rating when no name is given: $AUTOINTERP_RATER, else the login name."""
    name = os.environ.get("AUTOINTERP_RATER")
    if name and name.strip():
        return name.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name to be had (a container user without a passwd entry)
        return "anonymous"


def write_audit(
    path: str | Path, latent: int, explainer: str, explanation_seen: str | None, *, rater: str | None = None, **changes
) -> dict:
    """Set some of rating / explanation / note / flagged for one latent, as one rater; returns the stored row.

    created_at is kept from the first write, updated_at stamped on every one.
    """
    rater = (rater or "").strip() or default_rater()
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


def rated_count(conn: sqlite3.Connection, explainer: str, rater: str | None = None) -> int:
    """How many of this explainer's explanations `rater` rated (None: rated by anyone, each latent once)."""
    if rater is None:
        sql, args = "select count(distinct latent) from audits where explainer = ? and rating is not null", [explainer]
    else:
        sql = "select count(*) from audits where explainer = ? and rater = ? and rating is not null"
        args = [explainer, rater]
    return conn.execute(sql, args).fetchone()[0]


def raters(conn: sqlite3.Connection, explainer: str) -> list[tuple[str, int]]:
    """(rater, latents they rated) for everyone who rated this explainer's explanations, by name."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "select rater, count(*) from audits where explainer = ? and rating is not null group by rater"
            " order by rater",
            [explainer],
        )
    ]


def latent_audits(conn: sqlite3.Connection, latent: int) -> list[dict]:
    """Every rater's audit row of one latent (all explainers), by explainer then rater."""
    cur = conn.execute("select * from audits where latent = ? order by explainer, rater", [latent])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


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
    rater: str | None = None,
) -> list[int]:
    """Explained latents to audit, those `rater` has not rated yet first within each mode's order (rater None:
    those nobody rated). Another rater's rating does not move a latent back: each rater rates every latent.

    random: a seeded shuffle; lowest: by the scorer's metric, lowest first (unscored last);
    filtered: the given latent order (e.g. the browser's current filter).
    """
    explained = [
        r[0]
        for r in conn.execute(
            "select latent from explanations where explainer = ? and text is not null order by latent", [explainer]
        )
    ]
    by = "" if rater is None else " and rater = ?"
    rated = {
        r[0]
        for r in conn.execute(
            f"select latent from audits where explainer = ? and rating is not null{by}",
            [explainer] if rater is None else [explainer, rater],
        )
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


def _rated_metric(
    conn: sqlite3.Connection, explainer: str, scorer: str, metric: str
) -> list[tuple[int, str, str, float]]:
    """(latent, rater, rating, the scorer's metric) for every rating of a scored latent."""
    return conn.execute(
        f"select a.latent, a.rater, a.rating, s.{metric} from audits a join scores s on s.latent = a.latent"
        f" and s.explainer = a.explainer and s.scorer = ? and s.control = 0"
        f" where a.explainer = ? and a.rating is not null and s.{metric} is not null",
        [scorer, explainer],
    ).fetchall()


def _agreement_row(scorer: str, metric: str, rows: list[tuple[int, str, str, float]]) -> dict:
    """One scorer's agreement over `rows` (one rater's, or every rater's for the pooled view).

    Spearman's rho pairs each latent's mean rating over the raters in `rows` (wrong 0, partly 0.5, correct 1; one
    rater: their rating) with its metric, so a latent counts once however many rated it; the mean metric per
    rating is over every rating (a latent rated correct by one and wrong by another counts in both)."""
    by_latent: dict[int, list[float]] = {}
    metric_of: dict[int, float] = {}
    for latent, _, rating, value in rows:
        by_latent.setdefault(latent, []).append(RATING_VALUE[rating])
        metric_of[latent] = value
    latents = sorted(by_latent)
    rho = agreement_stats.spearman([float(np.mean(by_latent[x])) for x in latents], [metric_of[x] for x in latents])
    by_rating = {r: [v for _, _, rr, v in rows if rr == r] for r in RATINGS}
    return {
        "scorer": scorer,
        "metric": metric,
        "n": len(latents),
        "spearman": rho,
        "mean_by_rating": {r: (float(np.mean(v)) if v else None) for r, v in by_rating.items()},
        "n_by_rating": {r: len(v) for r, v in by_rating.items()},
    }


def agreement(
    conn: sqlite3.Connection, explainer: str, scorers: dict[str, str], rater: str | None = None
) -> list[dict]:
    """How human ratings line up with each scorer's metric (scorers: {scorer: metric}).

    Per scorer: latents rated and scored, the mean metric per rating, and Spearman's rank correlation between
    rating (wrong < partly < correct) and the metric (None with fewer than 3 latents or no spread). `rater`: that
    rater's ratings only; None: pooled over raters, each latent's mean rating over those who rated it.
    """
    out = []
    for scorer, metric in scorers.items():
        rows = _rated_metric(conn, explainer, scorer, metric)
        if rater is not None:
            rows = [r for r in rows if r[1] == rater]
        out.append(_agreement_row(scorer, metric, rows))
    return out


def agreement_by_rater(conn: sqlite3.Connection, explainer: str, scorers: dict[str, str]) -> dict[str, dict]:
    """{scorer: {"metric", "pooled": agreement row, "by_rater": {rater: agreement row}}}, one read per scorer."""
    out = {}
    for scorer, metric in scorers.items():
        rows = _rated_metric(conn, explainer, scorer, metric)
        names = sorted({r[1] for r in rows})
        out[scorer] = {
            "metric": metric,
            "pooled": _agreement_row(scorer, metric, rows),
            "by_rater": {n: _agreement_row(scorer, metric, [r for r in rows if r[1] == n]) for n in names},
        }
    return out


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Unweighted Cohen's kappa of two raters' ratings of the same latents (None: under MIN_SHARED latents, or
    chance agreement is 1, i.e. both gave one and the same rating throughout). Unweighted: partly-vs-wrong
    counts as much a disagreement as correct-vs-wrong; the ordinal alpha beside it weighs by distance."""
    return agreement_stats.cohen_kappa(a, b, list(RATINGS), MIN_SHARED)


def krippendorff_alpha(matrix: np.ndarray) -> float | None:
    """Krippendorff's alpha at the ordinal level over a raters x latents matrix of rating ranks (NaN: not rated by
    that rater). Only latents with two or more ratings are pairable; None with fewer than MIN_SHARED of them or no
    spread among their ratings."""
    return agreement_stats.ordinal_alpha(matrix, sorted(RATING_RANK.values()), MIN_SHARED)


def rater_agreement(conn: sqlite3.Connection, explainer: str) -> dict:
    """Agreement between the raters of one explainer's explanations.

    raters: [{"rater", "rated"}]; pairs: per pair of raters, the latents both rated (n), the share rated alike
    (agree) and unweighted Cohen's kappa; alpha: Krippendorff's alpha at the ordinal level (wrong < partly <
    correct) over every rater, with alpha_n the latents rated by two or more. A figure is None with under
    MIN_SHARED latents to compare or no spread in the ratings. Reads every rating once (they are few: hundreds to
    thousands), so its cost is the number of ratings, whatever the number of latents.
    """
    ratings: dict[str, dict[int, str]] = {}
    for latent, rater, rating in conn.execute(
        "select latent, rater, rating from audits where explainer = ? and rating is not null", [explainer]
    ):
        ratings.setdefault(rater, {})[latent] = rating
    names = sorted(ratings)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(set(ratings[a]) & set(ratings[b]))
            ra, rb = [ratings[a][x] for x in shared], [ratings[b][x] for x in shared]
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "n": len(shared),
                    "agree": (sum(x == y for x, y in zip(ra, rb)) / len(shared)) if shared else None,
                    "kappa": cohen_kappa(ra, rb),
                }
            )
    alpha, alpha_n = None, 0
    if len(names) >= 2:
        latents = sorted({x for r in ratings.values() for x in r})
        column = {x: j for j, x in enumerate(latents)}
        matrix = np.full((len(names), len(latents)), np.nan)
        for i, name in enumerate(names):
            for latent, rating in ratings[name].items():
                matrix[i, column[latent]] = RATING_RANK[rating]
        alpha_n = int(((~np.isnan(matrix)).sum(axis=0) >= 2).sum())
        alpha = krippendorff_alpha(matrix)
    return {
        "raters": [{"rater": n, "rated": len(ratings[n])} for n in names],
        "latents_rated": len({x for r in ratings.values() for x in r}),
        "pairs": pairs,
        "kappa": "Cohen's kappa, unweighted",
        "alpha": alpha,
        "alpha_n": alpha_n,
        "alpha_level": "ordinal",
    }


def rater_report(conn: sqlite3.Connection, explainer: str, scorers: dict[str, str]) -> dict | None:
    """The report's raters section: `rater_agreement` plus, per scorer ({scorer: metric}), Spearman's rho between
    ratings and the metric for each rater and pooled (each latent's mean rating). None when nobody rated."""
    result = rater_agreement(conn, explainer)
    if not result["raters"]:
        return None
    result["scorers"] = {
        scorer: {
            "metric": v["metric"],
            "pooled": _strip(v["pooled"]),
            "by_rater": {name: _strip(row) for name, row in v["by_rater"].items()},
        }
        for scorer, v in agreement_by_rater(conn, explainer, scorers).items()
    }
    return result


def _strip(row: dict) -> dict:
    """An agreement row without the scorer and metric it is filed under."""
    return {k: v for k, v in row.items() if k not in ("scorer", "metric")}


# One row per latent for an export: every rater's audit of it as a JSON object {rater: {...}}, so a join on it
# keeps one row per latent however many rated (a join on `audits` itself repeats the latent once per rater).
AUDITS_BY_LATENT = (
    "select latent, json_group_object(rater, json_object('rating', rating, 'explanation', explanation,"
    " 'note', note, 'flagged', flagged, 'at', updated_at)) as audits from audits where explainer = ? group by latent"
)


def export_columns(by_rater: dict[str, dict]) -> dict:
    """The export's audit columns of one latent from {rater: its audit row} (empty: never audited, all None).

    audit_ratings {rater: rating}; audit_mean the mean over raters (wrong 0, partly 0.5, correct 1);
    audit_rating the rating when every rater who rated agrees (one rater: theirs), else None; audit_explanation
    and audit_note the text when one rater wrote one, else "rater: text" lines; audit_flagged 1 when anyone
    flagged it; audit_at the latest change."""
    if not by_rater:
        keys = ("audit_rating", "audit_mean", "audit_ratings", "audit_explanation", "audit_note", "audit_flagged")
        return dict.fromkeys((*keys, "audit_at"))
    names = sorted(by_rater)
    ratings = {n: by_rater[n]["rating"] for n in names if by_rater[n]["rating"] is not None}

    def texts(field: str) -> str | None:
        written = [(n, by_rater[n][field]) for n in names if by_rater[n][field]]
        if len(written) <= 1:
            return written[0][1] if written else None
        return "\n".join(f"{n}: {t}" for n, t in written)

    return {
        "audit_rating": next(iter(ratings.values())) if len(set(ratings.values())) == 1 else None,
        "audit_mean": float(np.mean([RATING_VALUE[r] for r in ratings.values()])) if ratings else None,
        "audit_ratings": ratings,
        "audit_explanation": texts("explanation"),
        "audit_note": texts("note"),
        "audit_flagged": int(any(by_rater[n]["flagged"] for n in names)),
        "audit_at": max((by_rater[n]["at"] or "") for n in names) or None,
    }


# ---- probes kept as evidence (`autointerp probe`, the TUI's probe tab) --------------------------------------------


def write_probe(
    path: str | Path,
    latent: int,
    explainer: str,
    text: str,
    tokens: list[str],
    activations: list[float],
    *,
    rater: str | None = None,
) -> dict:
    """Keep a sentence a rater probed as evidence on the latent's audit: its tokens and the latent's activation at
    each (max_activation their max). The same rater keeping the same text again replaces it; returns the row."""
    rater = (rater or "").strip() or default_rater()
    if not text.strip():
        raise ValueError("a kept probe needs its text")
    if len(tokens) != len(activations):
        raise ValueError(f"{len(tokens)} tokens but {len(activations)} activations")
    values = [float(v) for v in activations]
    row = {
        "latent": int(latent),
        "explainer": explainer,
        "rater": rater,
        "text": text,
        "tokens": json.dumps(list(tokens)),
        "activations": json.dumps(values),
        "max_activation": max(values, default=0.0),
        "created_at": now(),
    }
    conn = connect(str(path))
    try:
        with conn:
            conn.execute(
                "insert into audit_probes (latent, explainer, rater, text, tokens, activations, max_activation,"
                " created_at) values (:latent, :explainer, :rater, :text, :tokens, :activations, :max_activation,"
                " :created_at) on conflict (latent, explainer, rater, text) do update set tokens = excluded.tokens,"
                " activations = excluded.activations, max_activation = excluded.max_activation,"
                " created_at = excluded.created_at",
                row,
            )
    finally:
        conn.close()
    return {**row, "tokens": list(tokens), "activations": values}


def kept_probes(conn: sqlite3.Connection, latent: int) -> list[dict]:
    """Every probe kept on one latent (all explainers and raters), newest first; tokens and activations as lists."""
    cur = conn.execute(
        "select latent, explainer, rater, text, tokens, activations, max_activation, created_at from audit_probes"
        " where latent = ? order by created_at desc, rater, text",
        [int(latent)],
    )
    names = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        row = dict(zip(names, r))
        row["tokens"] = json.loads(row["tokens"] or "[]")
        row["activations"] = json.loads(row["activations"] or "[]")
        out.append(row)
    return out


def read_kept_probes(path: str | Path, latent: int) -> list[dict]:
    """`kept_probes` of a database file, through a short-lived read-only connection (a file from before schema 13,
    without the table, has none)."""
    conn = connect(f"file:{path}?mode=ro", uri=True)
    try:
        return kept_probes(conn, latent)
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        conn.close()
