"""The Audit tab (key 3): rate explanations (tui/audit.py), on the queue of the explainer the list shows."""

from __future__ import annotations

from textual.app import ComposeResult

from .audit import AuditPane
from .tab import AppTab, later


class AuditTab(AppTab):
    TITLE = "Audit"
    PALETTE = "rate explanations"

    def compose(self) -> ComposeResult:
        host = self.host
        # The pane reads on the UI thread, so it gets the UI thread's Browser: the detail worker's one would be
        # read by two threads at once while a latent loads (a share under its lock would make the UI wait for it).
        pane = AuditPane(host.browser, host.db_path, host.mono, lambda: host.latents.ids, host.rater)
        yield later(pane, now=False)  # never needed for the first frame

    def focus_content(self) -> None:
        for pane in self.query(AuditPane):  # absent for the first frame (mounted lazily)
            pane.focus()
            pane.reload(self.host.latents.explainer)
