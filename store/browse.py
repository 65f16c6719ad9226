"""Read-only queries for browsing a database: the latent list, one latent's detail, the run monitor.

Everything here reads through one read-only connection, so a browser can never write to (or lock) the
file a batch is writing. The latent list is virtual: `order()` returns only the sorted latent ids (4 bytes
per latent) and `rows()` fetches the handful of rows on screen.

A Browser is this read API in full: the TUI runs no SQL of its own. One connection must not be used by two
threads at once; the TUI keeps one Browser on its UI thread and one per kind of worker, each worker kind
serialised by its own lock. With AUTOINTERP_CHECK_THREADS=1 (the TUI tests set it) every read checks that
rule and raises ThreadMisuse when it is broken, rather than letting a race show up now and then.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import audits
from .columns import read_rows, read_score_column, read_stat_column, score_rows_sql
from .db import ActivationStore, StoreError
from .evidence import ScorerEvidence, read_evidence, score_signature
from .latent_query import (
    CONTROL_SUFFIX,
    FILTER_OPS,
    STAT_COLUMNS,
    BrowseError,
    column_array,
    parse_query,
    search_latents,
    stable_argsort,
)
from .queries import WindowQueries
from .runs import latest_heartbeat, run_rows, worker_rows
from .scorer_meta import METRICS, ScorerMeta, read_scorers, scorer_meta
from .similarity import similar_of
from .stages import CACHE_STATS
from .views import ExampleGroup, LatentDetail, LatentRow, MonitorSnapshot, ScoreHistogram, tokens_as_text

CHECK_THREADS_ENV = "AUTOINTERP_CHECK_THREADS"


class ThreadMisuse(RuntimeError):
    """A Browser was used by two threads at once, or by both the main thread and worker threads (a bug)."""


def _read(method):
    """Wraps every public read of a Browser: applies a pending `refresh` on the thread that reads, and with
    AUTOINTERP_CHECK_THREADS=1 checks the one-thread-at-a-time and main-or-workers rules (see the module doc)."""

    @functools.wraps(method)
    def call(self: "Browser", *args, **kw):
        outer = self._enter() if self._check_threads else True
        try:
            if outer and self._stale:
                self._stale = False
                self._vocab = self._scorers = self._all_ids = None
                self._columns.clear()
                self._store.forget_cached()
            return method(self, *args, **kw)
        finally:
            if outer and self._check_threads:
                self._user = None

    return call


class Browser:
    """One database opened read-only for browsing. Open with `Browser.open(path)`."""

    def __init__(self, store: ActivationStore):
        self._store = store
        self._conn: sqlite3.Connection = store.db.conn
        self._vocab: list[str] | None = None
        self._window_len: int | None = None
        self._scorers: dict[str, ScorerMeta] | None = None
        self._all_ids: np.ndarray | None = None  # every latent, ascending (`_ids`)
        self._columns: dict[tuple[str, str], np.ndarray] = {}  # (column, explainer) -> values aligned to _ids
        self._stale = False  # set by `refresh` from any thread, applied by the next read
        self._check_threads = os.environ.get(CHECK_THREADS_ENV) == "1"
        self._guard = threading.Lock()
        self._user: int | None = None  # the thread inside a read now
        self._on_main: bool | None = None  # which side reads: the main thread (True) or workers (False)

    def _enter(self) -> bool:
        """Claim the connection for this thread; True for the outermost read (reads call each other)."""
        me = threading.get_ident()
        on_main = threading.current_thread() is threading.main_thread()
        with self._guard:
            if self._user not in (None, me):
                raise ThreadMisuse(f"a Browser of {self._store.path} is read by two threads at once")
            if self._on_main is None:
                self._on_main = on_main
            elif self._on_main != on_main:
                first, now = ("the main thread", "a worker") if self._on_main else ("workers", "the main thread")
                raise ThreadMisuse(f"a Browser of {self._store.path} read by {first} is now read by {now}")
            outer = self._user is None
            self._user = me
        return outer

    def refresh(self) -> None:
        """Forget what was read about the file as a whole (new scorers, vocabulary, cache chunks). Safe from any
        thread: it only marks the browser, and the next read (on the thread that owns it) forgets."""
        self._stale = True

    @classmethod
    def open(cls, path: str | Path) -> "Browser":
        path = Path(path)
        try:
            # The one path check (store/db.py check_database_path) and the one schema check (store/schema.py).
            store = ActivationStore.open(path, readonly=True)
        except StoreError as e:
            raise BrowseError(str(e)) from None
        return cls(store)

    def close(self) -> None:
        self._store.close()

    # ---- what the file holds --------------------------------------------------------------------

    @property
    @_read
    def provenance(self) -> dict | None:
        self._store.forget_cached()  # a cache may have started since the last look
        return self._store.provenance

    @_read
    def explainers(self) -> list[str]:
        return [r[0] for r in self._conn.execute("select distinct explainer from explanations order by explainer")]

    @_read
    def scorer_metas(self) -> dict[str, ScorerMeta]:
        """{scorer: what it is, as recorded when it scored (store/scorer_meta.py)} for every scorer with real
        (non-control) scores, by name (read once; `refresh`)."""
        if self._scorers is None:
            recorded = read_scorers(self._conn)
            names = sorted({scorer for _, scorer in self._scorer_pairs()})
            self._scorers = {s: scorer_meta(self._conn, s, recorded) for s in names}
        return self._scorers

    @_read
    def scorers(self) -> dict[str, str]:
        """{scorer: its primary metric} for every scorer with real (non-control) scores."""
        return {name: meta.primary_metric for name, meta in self.scorer_metas().items()}

    def _scorer_pairs(self) -> list[tuple[str, str]]:
        """Distinct (explainer, scorer) in `scores`, by a loose index scan: one index probe per pair found,
        where SELECT DISTINCT would read every score row (600k at 100k latents)."""
        pairs: list[tuple[str, str]] = []
        explainer = self._conn.execute("select min(explainer) from scores").fetchone()[0]
        while explainer is not None:
            scorer = self._conn.execute("select min(scorer) from scores where explainer = ?", [explainer]).fetchone()[0]
            while scorer is not None:
                pairs.append((explainer, scorer))
                scorer = self._conn.execute(
                    "select min(scorer) from scores where explainer = ? and scorer > ?", [explainer, scorer]
                ).fetchone()[0]
            explainer = self._conn.execute(
                "select min(explainer) from scores where explainer > ?", [explainer]
            ).fetchone()[0]
        return sorted(pairs, key=lambda p: p[1])

    @_read
    def columns(self) -> set[str]:
        """Names a sort or filter may use: statistics, each scorer (its primary metric) and scorer.metric, and
        each of those minus its control (`CONTROL_SUFFIX`)."""
        cols = set(STAT_COLUMNS)
        for scorer in self.scorers():
            for name in (scorer, *(f"{scorer}.{m}" for m in METRICS)):
                cols.update((name, name + CONTROL_SUFFIX))
        return cols

    @_read
    def n_latents(self) -> int:
        return len(self._ids())

    @_read
    def latent_stats(self, latent: int) -> dict | None:
        """The latent's statistics row; None when the file has no such latent."""
        return self._store.latent_stats(int(latent))

    # ---- the latent list ------------------------------------------------------------------------

    @_read
    def order(
        self, sort: str = "latent", descending: bool = False, query: str = "", explainer: str = "default"
    ) -> np.ndarray:
        """Latent ids in display order after filters and full-text search (int64 array).

        Sorts and filters run in numpy over columns read once per column (`_values`, kept until `refresh`): at 1M
        latents SQL's per-latent subquery and sort took seconds a time, a lexsort of held columns ~0.1 s. Latents
        without the sort key (never scored) go last in either direction; ties go by latent id."""
        columns = self.columns()
        if sort not in columns:
            raise BrowseError(f"cannot sort by {sort!r}; known: {', '.join(sorted(columns))}")
        filters, words = parse_query(query, columns)
        ids = self._ids()
        keep: np.ndarray | None = None
        for f in filters:  # a latent without the value fails every comparison (NaN), as NULL does in SQL
            hit = FILTER_OPS[f.op](self._values(f.column, explainer), f.value)
            keep = hit if keep is None else keep & hit
        if words:
            hit = self._search(words, explainer)
            keep = hit if keep is None else keep & hit
        chosen = ids if keep is None else ids[keep]
        if sort == "latent":
            return chosen[::-1].copy() if descending else chosen
        values = self._values(sort, explainer)
        values = values if keep is None else values[keep]
        # `chosen` ascends, so a stable sort breaks ties by latent id; NaN (no value) sorts last either way.
        return chosen[stable_argsort(-values if descending else values)]

    def _ids(self) -> np.ndarray:
        """Every latent with a statistics row, ascending (an arange, unread, when they are 0..n-1)."""
        if self._all_ids is None:
            n, hi = self._conn.execute("select count(*), max(latent) from latents").fetchone()
            if n and hi == n - 1:
                self._all_ids = np.arange(n, dtype=np.int64)
            else:
                self._all_ids = column_array(self._conn.execute("select latent from latents order by latent"), np.int64)
        return self._all_ids

    def _values(self, name: str, explainer: str) -> np.ndarray:
        """Column `name` (a statistic, a scorer's primary metric or scorer.metric) for every latent of `_ids`, NaN
        where a latent has none: from its packed copy when that is current (store/columns.py), else one ordered
        scan of the rows; read once either way, until `refresh`."""
        key = (name, explainer)
        if key not in self._columns:
            ids = self._ids()
            if name == "latent":
                self._columns[key] = ids.astype(np.float64)
                return self._columns[key]
            if name.endswith(CONTROL_SUFFIX):  # real minus control, both aligned to _ids: NaN where either is missing
                real = name[: -len(CONTROL_SUFFIX)]
                self._columns[key] = self._values(real, explainer) - self._control_values(real, explainer)
                return self._columns[key]
            if name in STAT_COLUMNS:
                stats = self._store.stage(CACHE_STATS)
                packed = (
                    read_stat_column(self._conn, name, stats["fingerprint"]) if stats and stats["done_at"] else None
                )
                sql, args = f"select latent, {name} from latents", []
            else:
                scorer, _, metric = name.partition(".")
                metric = metric or self.scorers().get(scorer, "balanced_accuracy")
                if metric not in METRICS:
                    raise BrowseError(f"unknown metric {metric!r}")
                packed = read_score_column(self._conn, explainer, scorer, metric)
                sql, args = score_rows_sql(metric), [explainer, scorer]
            latents, values = packed if packed is not None else read_rows(self._conn, sql, args)
            if len(latents) == len(ids) and np.array_equal(latents, ids):  # every latent has a value, in order
                self._columns[key] = values  # as read (a packed column's view of its blob: read-only)
                return values
            out = np.full(len(ids), np.nan)
            if len(ids) and ids[-1] == len(ids) - 1:  # ids are 0..n-1: a latent is its own index
                known = latents < len(ids)
                out[latents[known]] = values[known]
            else:
                at = np.searchsorted(ids, latents)
                known = (at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == latents)
                out[at[known]] = values[known]
            self._columns[key] = out
        return self._columns[key]

    def _control_values(self, name: str, explainer: str) -> np.ndarray:
        """The control rows' metric for `name` (scorer or scorer.metric), aligned to `_ids` like `_values`, NaN
        where a latent has no control score; one ordered scan (controls are not packed), kept until `refresh`."""
        key = (name + "#control", explainer)
        if key not in self._columns:
            scorer, _, metric = name.partition(".")
            metric = metric or self.scorers().get(scorer, "balanced_accuracy")
            if metric not in METRICS:  # checked before the name is put in SQL
                raise BrowseError(f"unknown metric {metric!r}")
            latents, values = read_rows(
                self._conn,
                f"select latent, {metric} from scores where explainer = ? and scorer = ? and control = 1"
                " order by latent",
                [explainer, scorer],
            )
            ids = self._ids()
            out = np.full(len(ids), np.nan)
            if len(ids):
                at = np.searchsorted(ids, latents)
                known = (at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == latents)
                out[at[known]] = values[known]
            self._columns[key] = out
        return self._columns[key]

    def _search(self, words: str, explainer: str) -> np.ndarray:
        """Which of `_ids` have an explanation (by `explainer`) that matches the full-text query: a mask."""
        try:
            latents = search_latents(self._conn, words, explainer)
        except sqlite3.OperationalError as e:
            raise BrowseError(f"query failed: {e}") from None
        ids = self._ids()
        if len(ids) and ids[-1] == len(ids) - 1:  # ids are 0..n-1: a latent is its own index
            hit = np.zeros(len(ids), bool)
            hit[latents[(latents >= 0) & (latents < len(ids))]] = True
            return hit
        return np.isin(ids, latents)

    @_read
    def rows(self, latents, explainer: str = "default") -> dict[int, LatentRow]:
        """The list rows of the given latents (a screenful), keyed by latent."""
        ids = [int(x) for x in latents]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        out = {
            r[0]: LatentRow(r[0], r[1], r[2], r[3], None, {})
            for r in self._conn.execute(
                f"select latent, frequency, max_act, n_windows from latents where latent in ({marks})", ids
            )
        }
        for latent, text, error in self._conn.execute(
            f"select latent, text, error from explanations where explainer = ? and latent in ({marks})",
            [explainer, *ids],
        ):
            if latent in out:
                out[latent].explanation = text if text is not None else f"(failed: {error})"
        scorers = self.scorers()
        for latent, scorer, *values in self._conn.execute(
            f"select latent, scorer, {', '.join(METRICS)} from scores where explainer = ? and control = 0"
            f" and latent in ({marks})",
            [explainer, *ids],
        ):
            if latent in out and scorer in scorers:
                out[latent].metrics[scorer] = dict(zip(METRICS, values))[scorers[scorer]]
        return out

    # ---- one latent -------------------------------------------------------------------------------

    @_read
    def vocab(self) -> list[str]:
        if self._vocab is None:
            self._vocab = [r[0] for r in self._conn.execute("select token from vocab order by id")]
        return self._vocab

    @_read
    def token_text(self, ids) -> list[str]:
        return tokens_as_text(self.vocab(), ids)

    @property
    @_read
    def window_len(self) -> int:
        if self._window_len is None:
            cfg = json.loads(self.provenance["config"] or "{}")
            self._window_len = int(cfg.get("window_len", 32))
        return self._window_len

    @_read
    def detail(self, latent: int, per_decile: int = 3) -> LatentDetail:
        t0 = time.perf_counter()
        latent = int(latent)
        stats = self._store.latent_stats(latent)
        explanations = [
            dict(r)
            for r in self._dict_rows(
                "select explainer, text, error, model, n_examples, extras, created_at from explanations"
                " where latent = ? order by explainer",
                [latent],
            )
        ]
        scores: dict[tuple[str, str], dict] = {}
        for r in self._dict_rows(
            f"select explainer, scorer, control, n, n_scored, n_auroc, n_failed, recall_per_decile, explanation_latent,"
            f" details, ci, {', '.join(METRICS)} from scores where latent = ? order by explainer, scorer, control",
            [latent],
        ):
            entry = scores.setdefault(
                (r["explainer"], r["scorer"]), {"explainer": r["explainer"], "scorer": r["scorer"]}
            )
            r["recall_per_decile"] = json.loads(r["recall_per_decile"]) if r["recall_per_decile"] else None
            r["details"] = json.loads(r["details"]) if r["details"] else {}
            r["ci"] = json.loads(r["ci"]) if r["ci"] else None  # {metric: [low, high]}; None: scored before schema 13
            entry["control" if r["control"] else "real"] = r
        metas = self.scorer_metas()
        for entry in scores.values():  # what the scorer is: which metric the line shows, how its details read
            entry["meta"] = metas.get(entry["scorer"]) or scorer_meta(self._conn, entry["scorer"])
        vocab = self.vocab()
        has_vocab = len(vocab) > 0
        promoted: list = []
        suppressed: list = []
        neighbours: list = []
        row = self._conn.execute(
            "select promoted, suppressed, neighbours from directions where latent = ?", [latent]
        ).fetchone()
        if row is not None:
            for src, dst in ((row[0], promoted), (row[1], suppressed)):
                pairs = json.loads(src or "[]")
                dst.extend(zip(self.token_text([p[0] for p in pairs]), [p[1] for p in pairs]))
            pairs = json.loads(row[2] or "[]")
            texts = (
                dict(
                    self._conn.execute(
                        f"select latent, text from explanations where latent in ({','.join('?' * len(pairs))})"
                        " order by explainer desc",
                        [p[0] for p in pairs],
                    ).fetchall()
                )
                if pairs
                else {}
            )
            neighbours = [(int(p[0]), float(p[1]), texts.get(p[0])) for p in pairs]
        rated = audits.latent_audits(self._conn, latent)
        detail = LatentDetail(
            latent,
            stats,
            explanations,
            list(scores.values()),
            promoted,
            suppressed,
            neighbours,
            self._groups(latent, per_decile) if self.provenance else [],
            rated,
            has_vocab,
            vocab=vocab,
        )
        detail.similar = similar_of(self._conn, latent)
        filters = self._dict_rows("select * from latent_filters where latent = ?", [latent])
        if filters:
            detail.filters = dict(filters[0])
            tokens = json.loads(detail.filters["unigram_tokens"] or "[]")
            texts = self.token_text([t for t, _ in tokens])
            detail.filters["unigram_tokens"] = [(text, n) for text, (_, n) in zip(texts, tokens)]
        detail.candidates = [
            dict(r)
            for r in self._dict_rows(
                "select explainer, idx, text, error, scorer, score, chosen from explanation_candidates"
                " where latent = ? order by explainer, idx",
                [latent],
            )
        ]
        detail.load_ms = (time.perf_counter() - t0) * 1000
        return detail

    @_read
    def evidence(self, latent: int, explainer: str, scorer: str) -> ScorerEvidence:
        """Why one score is what it is: its examples with the scorer's answer beside the truth (store/evidence.py).
        Read only when asked, never by `detail`, so showing a latent costs nothing more."""
        if self.provenance:
            self._store.forget_cached()  # the cache may have grown
            queries: WindowQueries | None = WindowQueries(self._store, self.window_len)
        else:
            queries = None
        return read_evidence(self._conn, queries, int(latent), explainer, scorer)

    @_read
    def evidence_signature(self, latent: int, explainer: str, scorer: str) -> tuple:
        """What changes when the evidence's score rows are written (two reads by primary key): a poll compares it
        to the open evidence's and reads the evidence again only when it moved."""
        return score_signature(self._conn, int(latent), explainer, scorer)

    def _groups(self, latent: int, per_decile: int) -> list[ExampleGroup]:
        """The latent's activating windows in ten equal-count strength bins, strongest bin first; the
        strongest `per_decile` windows of each bin."""
        self._store.forget_cached()  # the cache may have grown
        q = WindowQueries(self._store, self.window_len)
        aw = q.activating(latent)
        if len(aw.window_ids) == 0:
            return []
        roles = dict(self._conn.execute("select window, role from samples where latent = ?", [latent]).fetchall())
        strength = dict(zip(aw.window_ids.tolist(), aw.max_acts.tolist()))
        groups = []
        bins = q.decile_bins(aw, 10)
        for d in range(len(bins), 0, -1):
            ids = bins[d - 1]
            if len(ids) == 0:
                continue
            vals = np.array([strength[int(w)] for w in ids])
            pick = ids[np.argsort(-vals, kind="stable")[:per_decile]]
            windows = q.fetch(aw, pick)
            groups.append(
                ExampleGroup(d, float(vals.min()), float(vals.max()), windows, [roles.get(int(w), "") for w in pick])
            )
        return groups

    def _dict_rows(self, sql: str, args: list) -> list[dict]:
        cur = self._conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    # ---- plots ------------------------------------------------------------------------------------------

    @_read
    def activation_histogram(self, latent: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(bin edges, counts) of the latent's nonzero activations, from its statistics row; None without one."""
        stats = self._store.latent_stats(int(latent))
        if not stats or not stats.get("hist_counts"):
            return None
        return np.asarray(stats["hist_edges"], dtype=np.float64), np.asarray(stats["hist_counts"], dtype=np.int64)

    @_read
    def score_histograms(self, explainer: str = "default", bins: int = 20) -> list[ScoreHistogram]:
        """Per scorer (by name), its primary metric's histogram over latents beside the control's, in numpy: the
        real side is the list's column (`_values`, packed or read once), the control one scan of its rows."""
        out = []
        for scorer, metric in sorted(self.scorers().items()):
            if metric not in METRICS:
                continue
            real = self._values(scorer, explainer)
            real = real[~np.isnan(real)]
            _, control = read_rows(
                self._conn,
                f"select latent, {metric} from scores where explainer = ? and scorer = ? and control = 1",
                [explainer, scorer],
            )
            control = control[~np.isnan(control)]
            if not len(real) and not len(control):
                continue
            low = min(0.0, *(float(a.min()) for a in (real, control) if len(a)))  # correlation reaches -1
            edges = np.linspace(low, 1.0, bins + 1)
            out.append(
                ScoreHistogram(scorer, metric, edges, np.histogram(real, edges)[0], np.histogram(control, edges)[0])
            )
        return out

    # ---- the run monitor ---------------------------------------------------------------------------

    @_read
    def latest_run_status(self) -> str | None:
        """The newest run's status, with `running` read as `killed` when its heartbeat stopped."""
        runs = run_rows(self._conn, limit=1)
        if not runs:
            return None
        return "killed" if runs[0]["probably_killed"] else runs[0]["status"]

    @_read
    def heartbeat(self) -> str | None:
        """The newest run heartbeat: a monitor re-counts results only when it moved (or now and then)."""
        return latest_heartbeat(self._conn)

    @_read
    def monitor(self, n_events: int = 30, counts: dict | None = None) -> MonitorSnapshot:
        """Runs, progress, events, cache size and the newest run's workers; result counts are re-read only when
        `counts` is None (they scan the results tables, so a monitor polling every second passes the last ones most
        times)."""
        runs = run_rows(self._conn, limit=10)
        now = datetime.now(timezone.utc)
        events = self._dict_rows(
            "select id, at, run, stage, kind, message from events order by id desc limit ?", [n_events]
        )
        cache = dict(
            zip(
                ("chunks", "tokens"),
                self._conn.execute("select count(*), coalesce(sum(n_tokens), 0) from chunks").fetchone(),
            )
        )
        cache["latents"] = self.n_latents()
        prov = self.provenance
        cache["target_tokens"] = prov["n_tokens_target"] if prov else None
        cache["site_problem"] = prov.get("forward_stale") if prov else None
        if counts is None:
            counts = dict(
                zip(
                    ("explained", "failed"),
                    self._conn.execute("select count(text), count(*) - count(text) from explanations").fetchone(),
                )
            )
            counts["scored"] = self._conn.execute("select count(distinct latent) from scores").fetchone()[0]
        workers = worker_rows(self._conn, runs[0]["id"]) if runs else []  # the run the monitor shows
        return MonitorSnapshot(runs, events, cache, counts, now, workers)

    # ---- audits ---------------------------------------------------------------------------------------

    @_read
    def audit_queue(
        self,
        mode: str,
        explainer: str,
        *,
        scorer: str | None = None,
        metric: str = "balanced_accuracy",
        filtered=None,
        rater: str | None = None,
    ) -> list[int]:
        """Explained latents to audit in `mode`'s order, those `rater` has not rated first (store/audits.py)."""
        return audits.audit_queue(
            self._conn, mode, explainer, scorer=scorer, metric=metric, filtered=filtered, rater=rater
        )

    @_read
    def rated_count(self, explainer: str, rater: str | None = None) -> int:
        """Latents `rater` rated (None: rated by anyone)."""
        return audits.rated_count(self._conn, explainer, rater)

    @_read
    def agreement(self, explainer: str, rater: str | None = None) -> list[dict]:
        """Ratings against each scorer's primary metric, one rater's or pooled over raters (store/audits.py)."""
        return audits.agreement(self._conn, explainer, self.scorers(), rater)

    @_read
    def rater_agreement(self, explainer: str) -> dict:
        """Raters, their counts, Cohen's kappa per pair and Krippendorff's alpha (store/audits.py)."""
        return audits.rater_agreement(self._conn, explainer)

    @_read
    def explanation_text(self, latent: int, explainer: str) -> str | None:
        return audits.explanation_text(self._conn, int(latent), explainer)

    @_read
    def similar(self, latent: int) -> dict | None:
        """The latent's best and matched latent in the newest `autointerp similarity` run, with their similarities
        and the other database's path (store/similarity.py `similar_of`); None without one."""
        return similar_of(self._conn, int(latent))
