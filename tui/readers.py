"""The app's database connections and the reads its worker threads make on them.

Read-only connections, one per thread that reads: `ui` for the UI thread (the list's rows, the audit pane, sort
keys), and one for each kind of worker (orders, latent details, monitor polls, plots), each kind serialised by its
own lock. A connection is never shared between the UI thread and a worker (Browser checks it with
AUTOINTERP_CHECK_THREADS=1). Each read returns the message to post, or None; `in_worker` runs it on a thread and
posts it: a read never changes what is on screen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import get_current_worker

from autointerp.store.browse import Browser
from autointerp.store.evidence import ScorerEvidence
from autointerp.store.latent_query import BrowseError

from .messages import DetailLoaded, MonitorRead, OrderRead, PlotsRead

COUNTS_EVERY_S = 10.0  # while a run writes, result counts are re-read at most this often


def in_worker(node: DOMNode, read: Callable[[], Message | None], group: str, exclusive: bool = False) -> None:
    """Run `read` on a worker thread and post the message it returns to `node`, whose handler applies it."""

    def run() -> None:
        message = read()
        if message is not None:
            node.post_message(message)

    node.run_worker(run, thread=True, group=group, exclusive=exclusive)


class Readers:
    def __init__(self, db_path: str) -> None:
        """Raises BrowseError when the file cannot be browsed (the app then shows its error screen)."""
        self.db_path = db_path
        self.ui = Browser.open(db_path)
        self.order_db = Browser.open(db_path)
        self.detail_db = Browser.open(db_path)
        self.monitor_db = Browser.open(db_path)
        # The Plots tab's connection is opened by its first read (never at start-up: the tab may never be shown).
        self.plots_db: Browser | None = None
        self.order_lock = threading.Lock()
        self.detail_lock = threading.Lock()
        self.monitor_lock = threading.Lock()  # an `exclusive` thread worker is marked cancelled, not stopped
        self.plots_lock = threading.Lock()
        # The monitor worker's own state (only it reads or writes these, under monitor_lock).
        self.polls, self._heartbeat, self._counts, self._counted_at = 0, None, None, 0.0

    def refresh(self) -> None:
        """New results landed: forget what each connection read once (new scorers, a vocabulary written at the end
        of the cache stage, ...)."""
        for browser in (self.ui, self.order_db, self.detail_db):
            browser.refresh()
        if self.plots_db is not None:
            self.plots_db.refresh()

    # ---- on worker threads ------------------------------------------------------------------------

    def order(self, request: tuple, latest: Callable[[], int]) -> OrderRead:
        number, sort, descending, query, explainer, _ = request
        with self.order_lock:  # one read at a time on the order connection; a stale request is skipped
            if number != latest():
                return OrderRead(request, None, [], 0, None)
            try:
                ids = self.order_db.order(sort, descending, query, explainer)
                scorers, total = list(self.order_db.scorers()), self.order_db.n_latents()
            except BrowseError as e:
                return OrderRead(request, None, [], 0, str(e))
        return OrderRead(request, ids, scorers, total, None)

    def detail(self, latent: int, wanted: Callable[[], int | None]) -> DetailLoaded | None:
        # Serialised on one connection; a latent the user has already moved past is skipped.
        with self.detail_lock:
            if latent != wanted():
                return None
            try:
                detail = self.detail_db.detail(latent)
            except Exception as e:  # a reading problem is shown, never a traceback over the UI
                return DetailLoaded(None, f"latent {latent}: {type(e).__name__}: {e}")
        return DetailLoaded(detail)

    def monitor(self, hold_back: Callable[[], bool], watch: Callable[[], tuple | None]) -> MonitorRead | None:
        # One poll at a time on the monitor connection; a poll superseded while it waited is skipped.
        with self.monitor_lock:
            if get_current_worker().is_cancelled or hold_back():
                return None
            self.polls += 1
            try:
                # Result counts scan the results tables (a second at a million latents): every 10th poll, or when
                # the newest run has moved on, and then at most every COUNTS_EVERY_S while it writes.
                heartbeat = self.monitor_db.heartbeat()
                now = time.monotonic()
                moved = heartbeat != self._heartbeat and now - self._counted_at >= COUNTS_EVERY_S
                fresh = self.polls % 10 == 1 or moved
                if fresh:
                    self._counted_at = now
                self._heartbeat = heartbeat
                snap = self.monitor_db.monitor(counts=None if fresh else self._counts)
                self._counts = snap.counts
                evidence = self._reread_evidence(watch())
            except Exception as e:
                return MonitorRead(None, f"{type(e).__name__}: {e}")
        return MonitorRead(snap, evidence=evidence)

    def _reread_evidence(self, watch: tuple | None) -> ScorerEvidence | None:
        """The open evidence again if its score rows were written since it was read (a rescore, a control row
        landing), else None. The check is two rows by primary key; the result counts the monitor reads would see a
        rescore late (every 10th poll) or never (`--redo` keeps the count). On the monitor connection."""
        if watch is None:
            return None
        latent, explainer, scorer, seen = watch
        if self.monitor_db.evidence_signature(latent, explainer, scorer) == seen:
            return None
        return self.monitor_db.evidence(latent, explainer, scorer)

    def plots(self, latent: int | None, explainer: str, cached: list | None, generation: int) -> PlotsRead:
        with self.plots_lock:  # one read at a time on the plots connection
            try:
                if self.plots_db is None:
                    self.plots_db = Browser.open(self.db_path)
                hist = self.plots_db.activation_histogram(latent) if latent is not None else None
                scores = cached if cached is not None else self.plots_db.score_histograms(explainer)
            except Exception as e:  # a reading problem is shown, never a traceback over the UI
                return PlotsRead(latent, None, None, f"{type(e).__name__}: {e}")
        return PlotsRead(latent, hist, scores, explainer=explainer, generation=generation)
