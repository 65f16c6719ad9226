"""What the app's worker threads post back, and what a tab tells the app. Workers only read and post one of these;
the handler that receives it (on the UI thread) is the one place that changes state or the screen (as Harlequin
does). A read's message goes to the widget that asked for it, so it does not bubble."""

from __future__ import annotations

from textual.message import Message

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.views import LatentDetail, MonitorSnapshot


class OrderRead(Message, bubble=False):
    """The list's order for `request` (number, sort, descending, query, explainer, keep); ids None: refused."""

    def __init__(self, request: tuple, ids, scorers: list[str], total: int, error: str | None) -> None:
        super().__init__()
        self.request, self.ids, self.scorers, self.total, self.error = request, ids, scorers, total, error


class DetailLoaded(Message, bubble=False):
    def __init__(self, detail: LatentDetail | None, error: str | None = None) -> None:
        super().__init__()
        self.detail, self.error = detail, error


class MonitorRead(Message, bubble=False):
    def __init__(
        self, snapshot: MonitorSnapshot | None, error: str | None = None, evidence: ScorerEvidence | None = None
    ) -> None:
        super().__init__()
        # evidence: the open evidence read again because its score rows changed since it was read
        self.snapshot, self.error, self.evidence = snapshot, error, evidence


class PlotsRead(Message, bubble=False):
    """A latent's activation histogram and the score histograms of `explainer` (read while results were at
    `generation`: kept for later showings only if no results landed since)."""

    def __init__(
        self, latent: int | None, hist, scores: list | None, error: str | None = None, *, explainer="", generation=0
    ) -> None:
        super().__init__()
        self.latent, self.hist, self.scores, self.error = latent, hist, scores, error
        self.explainer, self.generation = explainer, generation


class FirstPaint(Message):
    """The first latent's detail is on screen: the monitor's polls, held back until now, may start."""
