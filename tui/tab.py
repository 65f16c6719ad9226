"""What every tab of the app is: a TabPane with a title, a palette entry and hooks the app calls.

A tab talks to the app by messages (tui/messages.py) and reads what the app shares (its connections, the
explainer, the latent in view) through `host` (tui/host.py); the app calls a tab's hooks below, never its insides.
"""

from __future__ import annotations

from typing import ClassVar, cast

from textual.geometry import Size
from textual.lazy import Lazy
from textual.widget import Widget
from textual.widgets import TabbedContent, TabPane

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.views import MonitorSnapshot

from .host import Host


class AppTab(TabPane):
    # Not named `Tab`: Textual's CSS matches widgets by class name, and textual.widgets.Tab's rules (a one-line
    # label) would apply to every pane.
    TITLE: ClassVar[str] = ""  # the label, before its key: "Monitor [1]"
    PALETTE: ClassVar[str] = ""  # what the command palette says of it: "Monitor: live progress of batch runs"

    def __init__(self, name: str, key: int, first: bool) -> None:
        super().__init__(f"{self.TITLE} [{key}]", id=name)
        self.first = first  # the tab shown when the app opens

    @property
    def host(self) -> Host:
        """The app, as what it shares with every tab."""
        return cast(Host, self.app)

    @property
    def ready(self) -> bool:
        """Mounted far enough to take a monitor poll's results (False again while the app shuts down)."""
        return True

    @property
    def active(self) -> bool:
        return self.app.query_one(TabbedContent).active == self.id

    def bring_to_front(self) -> None:
        # Focus moves first: TabbedContent shows the pane holding the focused widget, so focusing after the
        # switch would let the old pane's next focusable widget pull its tab back.
        self.focus_content()
        self.app.query_one(TabbedContent).active = self.id or ""

    # ---- hooks the app calls; each does nothing unless the tab needs it ---------------------------------

    def focus_content(self) -> None:
        """Give focus to this tab's main widget (absent while a lazily mounted pane is not yet mounted)."""

    def shown(self) -> None:
        """The tab became the visible one, by key, palette or click."""

    def terminal_resized(self, size: Size) -> None:
        """The terminal's size changed (a hidden tab gets no Resize of its own)."""

    def results_read(self, snapshot: MonitorSnapshot, evidence: ScorerEvidence | None, changed: set[str]) -> None:
        """A monitor poll. `changed`: what landed since the last poll, of "latents", "explained" and "scored"
        (empty on the first); `evidence`: the open evidence, read again because its score rows were written."""

    def palette_commands(self):
        """(name, callable) for the command palette beyond the tab's own entry."""
        return ()


def later(widget: Widget, now: bool) -> Widget:
    """`widget`, or mounted just after the first frame (Lazy) unless `now`: the tab shown first paints sooner."""
    return widget if now else Lazy(widget)
