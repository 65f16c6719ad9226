"""The latents tab's right-hand column: the detail of the latent under the cursor (tui/detail.py).

Read on a worker thread each time the cursor moves (a latent moved past is skipped), timed from the key to the
paint, read again when new results land, and its open evidence followed: each monitor poll reads that evidence
again if its score rows were written (tui/readers.py).
"""

from __future__ import annotations

import gc
import time
from typing import cast

from textual.app import ComposeResult
from textual.containers import Vertical

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.views import LatentDetail, MonitorSnapshot

from .detail import LatentDetailView
from .export import export_detail
from .host import Host
from .messages import DetailLoaded, FirstPaint
from .readers import in_worker


class DetailColumn(Vertical):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.wanted: int | None = None  # the latent asked for last; a detail read for another is dropped
        self.shown_latent: int | None = None
        self.detail_count = 0  # details painted, for tests and the benchmark
        self.first_paint_ms: float | None = None  # app constructed -> first latent's detail on screen
        self.switch_ms: list[float] = []  # cursor moved -> that latent's detail on screen
        self._switch_from: float | None = None
        self._refreshing: int | None = None  # a latent being re-read because new results landed
        # (latent, explainer, scorer, signature) of the evidence open in the view: each monitor poll compares the
        # signature with its score rows' (store/evidence.py score_signature) and reads the evidence again if moved.
        self.evidence_watch: tuple | None = None

    @property
    def host(self) -> Host:
        return cast(Host, self.app)

    def compose(self) -> ComposeResult:
        yield LatentDetailView(self.host.mono, id="detail")

    @property
    def view(self) -> LatentDetailView:
        return self.query_one("#detail", LatentDetailView)

    def latent_in_view(self) -> int | None:
        """The latent asked for last, else the one shown."""
        return self.wanted if self.wanted is not None else self.shown_latent

    def follow(self, latent: int, moved_at: float) -> None:
        """The cursor moved to `latent` (at `moved_at`: the start of the switch's timing)."""
        self._switch_from = moved_at
        self._refreshing = None
        self.load(latent)

    def load(self, latent: int) -> None:
        self.wanted = latent
        readers = self.host.readers
        in_worker(self, lambda: readers.detail(latent, lambda: self.wanted), group="detail")

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        views = self.query("#detail")
        if not self.app.is_running or not views:  # shutting down
            return
        view = views.first(LatentDetailView)
        if message.detail is None:
            view.show_message(message.error or "")
            return
        if message.detail.latent != self.wanted:
            return
        if self._refreshing is not None and self._refreshing == message.detail.latent == self.shown_latent:
            # A re-read of the latent on screen (new results landed): shown again only when it changed, so the
            # reader's scroll position is kept otherwise; not a latent switch (no timing).
            self._refreshing = None
            if view.detail is not None and detail_signature(view.detail) == detail_signature(message.detail):
                return
            view.show(message.detail, keep_scroll=True)  # the reader stays where they were reading
            return
        view.show(message.detail)
        self.call_after_refresh(self._painted, message.detail.latent, self._switch_from)

    def _painted(self, latent: int, switch_from: float | None) -> None:
        now = time.perf_counter()
        if self.first_paint_ms is None:
            self.first_paint_ms = (now - self.host.started_at) * 1000
            self.post_message(FirstPaint())
        elif switch_from is not None:
            self.switch_ms.append((now - switch_from) * 1000)
        self.shown_latent = latent
        self.detail_count += 1
        if self.detail_count == 1:
            # Everything loaded at start-up is long-lived: keep it out of the collector's generations, so
            # collections while browsing are short (fewer pauses in latent switches).
            gc.freeze()

    def on_latent_detail_view_evidence_shown(self, message: LatentDetailView.EvidenceShown) -> None:
        ev = message.evidence
        self.evidence_watch = None if ev is None else (ev.latent, ev.explainer, ev.scorer, ev.signature)

    def evidence_read(self, evidence: ScorerEvidence) -> bool:
        """The open evidence, read again by a poll because its rows were written: redrawn if it changed (True)."""
        view = self.view
        old = view.evidence  # still the one open, and not already replaced by an earlier poll's re-read
        if old is None or old.signature == evidence.signature:
            return False
        if (old.latent, old.explainer, old.scorer) != (evidence.latent, evidence.explainer, evidence.scorer):
            return False
        view.update_evidence(evidence)
        return True

    def refresh_shown(self, snap: MonitorSnapshot, changed: bool) -> None:
        """Re-read the latent on screen when results landed, and, while a batch runs, while it still lacks what
        `autointerp annotate` writes (the logit lens, the vocabulary): the pane then fills in without a key."""
        views = self.query("#detail")
        shown = views.first(LatentDetailView).detail if views else None
        if shown is None or self.wanted != shown.latent:
            return
        live = bool(snap.runs) and snap.runs[0]["status"] == "running" and not snap.runs[0]["probably_killed"]
        unannotated = not shown.has_vocab or not (shown.promoted or shown.suppressed)
        if changed or (live and unannotated):
            if not changed:
                self.host.readers.detail_db.refresh()  # the vocabulary is read once per browser: again
            self._refreshing = shown.latent
            self.load(shown.latent)

    def export(self) -> None:
        """*Export this latent* (the palette): the shown detail as JSON in the current directory."""
        detail = self.view.detail if self.query("#detail") else None
        if detail is None:
            self.app.notify("no latent shown to export", severity="warning")
            return
        try:
            path = export_detail(detail)
        except OSError as e:
            self.app.notify(f"export failed: {e}", severity="error")
            return
        self.app.notify(f"latent {detail.latent} written to {path}", timeout=8)


def detail_signature(detail: LatentDetail) -> str:
    """What a re-read may change about a latent (results, annotation), compared to skip an unchanged re-show."""
    return repr(
        (
            detail.explanations,
            detail.scores,
            detail.promoted,
            detail.suppressed,
            detail.neighbours,
            detail.has_vocab,
            detail.audits,
            detail.filters,
            detail.candidates,
            detail.similar,
            len(detail.groups),
        )
    )
