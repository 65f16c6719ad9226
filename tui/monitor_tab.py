"""The Monitor tab (key 1): the live view of batch runs (tui/monitor.py), fed by the app's polls."""

from __future__ import annotations

from textual.app import ComposeResult

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.views import MonitorSnapshot

from .monitor import MonitorPane
from .tab import AppTab, later


class MonitorTab(AppTab):
    TITLE = "Monitor"
    PALETTE = "live progress of batch runs"

    def compose(self) -> ComposeResult:
        yield later(MonitorPane(), now=self.first)

    @property
    def ready(self) -> bool:
        return bool(self.query(MonitorPane))

    def focus_content(self) -> None:
        for monitor in self.query(MonitorPane):  # absent for the first frame (mounted lazily)
            monitor.focus()

    def results_read(self, snapshot: MonitorSnapshot, evidence: ScorerEvidence | None, changed: set[str]) -> None:
        pane = self.query_one(MonitorPane)
        if pane.ready:  # not before its lazy mount ends; it asks for a poll then
            pane.show(snapshot)
