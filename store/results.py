"""Explain-and-score results in the store: drawn examples, explanations, scores.

Each write is one transaction, so a latent's examples, explanation or score is either wholly in the
file or not at all (a killed run never leaves half a latent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlite_utils

from .clock import now
from .columns import bump_scores_written

# Score columns that hold JSON (written as text, read back as Python values).
SCORE_JSON = ("recall_per_decile", "outcomes", "errors", "settings", "details", "ci")  # ci: {metric: [low, high]}


@dataclass
class SampleSet:
    latent: int
    seed: int
    n_windows: int
    config: dict
    skipped: str | None = None
    # role -> [(window, decile, source)] in draw order
    windows: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)

    def role(self, role: str) -> list[tuple[int, int, str]]:
        return self.windows.get(role, [])


class Results:
    """Reads and writes the result tables of one database: the originals (draw 0: samples, sample_sets,
    explanations, scores), or with `draw` k > 0 a retest's repeat k (retest_samples, retest_explanations,
    retest_scores, each row carrying the draw; its seed and settings are the retest_draws row's). A repeat never
    touches the originals; it keeps no best-of-N candidates (the kept explanation's extras describe them)."""

    def __init__(self, db: sqlite_utils.Database, draw: int = 0):
        self.db, self.draw = db, draw
        self._p = "retest_" if draw else ""  # the tables' prefix
        self._d = {"draw": draw} if draw else {}  # the leading column of a repeat's rows

    def _where(self, sql: str) -> str:
        """A where clause on one draw's rows (the originals' tables have no draw column)."""
        return f"draw = {int(self.draw)} and {sql}" if self.draw else sql

    # ---- examples ----------------------------------------------------------------------------

    def write_sample_set(self, s: SampleSet) -> None:
        rows = [
            {**self._d, "latent": s.latent, "window": w, "role": role, "decile": d, "source": src, "idx": i}
            for role, items in s.windows.items()
            for i, (w, d, src) in enumerate(items)
        ]
        with self.db.conn:
            self.db.execute(f"delete from {self._p}samples where {self._where('latent = ?')}", [s.latent])
            self.db[f"{self._p}samples"].insert_all(rows)  # a window in two roles violates the primary key
            if self.draw:  # a repeat's seed and settings are its retest_draws row's
                return
            self.db["sample_sets"].upsert(
                {
                    "latent": s.latent,
                    "seed": s.seed,
                    "n_windows": s.n_windows,
                    "config": json.dumps(s.config, sort_keys=True),
                    "skipped": s.skipped,
                    "created_at": now(),
                },
                pk="latent",
            )

    def sample_set(self, latent: int) -> SampleSet | None:
        if self.draw:
            row = self.db.execute(
                "select d.seed, l.n_windows, d.config, null from retest_draws d left join latents l on l.latent = ?"
                " where d.draw = ? and exists (select 1 from retest_samples where draw = d.draw and latent = ?)",
                [latent, self.draw, latent],
            ).fetchone()
        else:
            row = self.db.execute(
                "select seed, n_windows, config, skipped from sample_sets where latent = ?", [latent]
            ).fetchone()
        if row is None:
            return None
        s = SampleSet(latent, row[0], row[1], json.loads(row[2] or "{}"), row[3])
        for w, role, d, src in self.db.execute(
            f"select window, role, decile, source from {self._p}samples where {self._where('latent = ?')}"
            " order by role, idx",
            [latent],
        ):
            s.windows.setdefault(role, []).append((w, d, src))
        return s

    # ---- explanations ------------------------------------------------------------------------

    def write_explanation(self, row: dict, candidates: list[dict] | None = None) -> None:
        """The latent's explanation, and with best-of-N every candidate drawn for it, in one transaction."""
        stamp = now()
        row = {**self._d, **row, "created_at": stamp}
        for key in ("extras", "settings"):
            row[key] = json.dumps(row.get(key) or {}, sort_keys=True)
        if self.draw:  # a repeat: its explanation alone
            with self.db.conn:
                self.db["retest_explanations"].upsert(row, pk=("draw", "latent", "explainer"))
            return
        with self.db.conn:
            self.db["explanations"].upsert(row, pk=("latent", "explainer"))
            # A redone explanation replaces its candidates (and the first one's held-out scores) wholesale.
            self.db.execute(
                "delete from explanation_candidates where latent = ? and explainer = ?",
                [row["latent"], row["explainer"]],
            )
            if candidates:
                self.db["explanation_candidates"].insert_all(dict(c, created_at=stamp) for c in candidates)

    def candidates(self, latent: int, explainer: str) -> list[dict]:
        """Best-of-N: every explanation drawn for the latent, in draw order (empty for a single draw, and for a
        retest's repeat, which keeps none)."""
        if self.draw:
            return []
        rows = list(
            self.db["explanation_candidates"].rows_where(
                "latent = ? and explainer = ?", [latent, explainer], order_by="idx"
            )
        )
        for r in rows:
            r["heldout"] = json.loads(r["heldout"]) if r["heldout"] else {}
        return rows

    def explanation(self, latent: int, explainer: str) -> dict | None:
        rows = list(
            self.db[f"{self._p}explanations"].rows_where(
                self._where("latent = ? and explainer = ?"), [latent, explainer]
            )
        )
        return rows[0] if rows else None

    def explained_latents(self, explainer: str) -> list[int]:
        """Latents with a usable explanation from this explainer, ascending."""
        return [
            r[0]
            for r in self.db.execute(
                f"select latent from {self._p}explanations where {self._where('explainer = ?')}"
                " and text is not null order by latent",
                [explainer],
            )
        ]

    # ---- scores ------------------------------------------------------------------------------

    def write_scores(self, rows: list[dict], first_candidate: dict | None = None) -> None:
        """Score rows in one transaction; `first_candidate` ({"latent", "explainer", "heldout": {scorer: metric}})
        adds the held-out scores of a best-of-N latent's first draw in the same one."""
        stamped = []
        for r in rows:
            r = {**self._d, **r, "created_at": now()}
            for key in SCORE_JSON:
                r[key] = json.dumps(r.get(key))
            stamped.append(r)
        if self.draw:  # a repeat: its rows alone (the originals' packed columns stay current)
            with self.db.conn:
                self.db["retest_scores"].upsert_all(stamped, pk=("draw", "latent", "explainer", "scorer", "control"))
            return
        with self.db.conn:
            self.db["scores"].upsert_all(stamped, pk=("latent", "explainer", "scorer", "control"))
            if first_candidate is not None:
                which = [first_candidate["latent"], first_candidate["explainer"]]
                old = self.db.execute(
                    "select heldout from explanation_candidates where latent = ? and explainer = ? and idx = 0", which
                ).fetchone()
                if old is not None:
                    merged = {**json.loads(old[0] or "{}"), **first_candidate["heldout"]}
                    self.db.execute(
                        "update explanation_candidates set heldout = ? where latent = ? and explainer = ? and idx = 0",
                        [json.dumps(merged, sort_keys=True), *which],
                    )
            bump_scores_written(self.db.conn)  # packed score columns (store/columns.py) are stale from here

    def scores(self, latent: int | None = None, explainer: str | None = None) -> list[dict]:
        return list(self.iter_scores(latent, explainer))

    def iter_scores(self, latent: int | None = None, explainer: str | None = None) -> Iterator[dict]:
        """Score rows (JSON fields parsed) in (latent, scorer, control) order, read as they are used: one row held
        at a time however many latents were scored (a row's outcomes can be tens of kB)."""
        filters = {"draw": self.draw or None, "latent": latent, "explainer": explainer}
        where = " and ".join(f"{k} = :{k}" for k, v in filters.items() if v is not None) or None
        args = {k: v for k, v in filters.items() if v is not None}
        for r in self.db[f"{self._p}scores"].rows_where(where, args, order_by="latent, scorer, control"):
            for key in SCORE_JSON:
                r[key] = json.loads(r[key]) if r[key] else None
            yield r

    def score_done(self, latent: int, explainer: str, scorer: str, control: int) -> bool:
        """The score is stored and holds no failed example a rerun may fix (see scores.n_retry)."""
        return (
            self.db.execute(
                f"select 1 from {self._p}scores where {self._where('latent = ? and explainer = ?')}"
                " and scorer = ? and control = ? and coalesce(n_retry, n_failed) = 0",
                [latent, explainer, scorer, control],
            ).fetchone()
            is not None
        )
