"""The Textual app: monitor a running batch, browse latents, audit explanations.

It reads the database through read-only connections (tui/readers.py; the only write is an audit rating, one short
transaction) and starts nothing it cannot stop: its workers are threads doing SQLite reads. Workers post results;
only message handlers change what is on screen (as Harlequin does). The app composes the tabs of tui/tabs.py and
holds what they share: the connections, the settings, the keys, the palette and the monitor's polls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static, TabbedContent

from autointerp.store.audits import default_rater
from autointerp.store.browse import Browser
from autointerp.store.latent_query import BrowseError

from .detail import LatentDetailView
from .footer import QuitFirstFooter
from .help import HelpScreen, help_rows
from .messages import FirstPaint, MonitorRead
from .monitor import MonitorPane
from .palette import JumpProvider
from .readers import Readers, in_worker
from .settings import load, save, settings_path
from .styles import APP_CSS
from .tab import AppTab
from .tabs import TABS, tab_bindings, tab_class

if TYPE_CHECKING:
    from .latents_tab import LatentsTab

RESULTS = ("latents", "explained", "scored")  # what a poll compares to the last one's to tell results landed


class AutointerpApp(App):
    TITLE = "autointerp"
    CSS = APP_CSS
    COMMANDS = App.COMMANDS | {JumpProvider}
    # Each binding has an id: `[keys]` in the settings file rebinds it (App.set_keymap), e.g. back = "[".
    BINDINGS = [
        Binding("q", "quit", "quit", id="quit"),
        Binding("question_mark", "help", "keys", id="help"),
        *tab_bindings(),
        Binding("slash", "focus_query", "filter/search", id="search"),
        Binding("s", "cycle_sort", "sort (cursor to top)", id="sort"),
        Binding("S", "cycle_sort(True)", "sort, keep latent", show=False, id="sort_keep"),
        Binding("r", "reverse", "reverse", id="reverse"),
        Binding("x", "cycle_explainer", "explainer", id="explainer"),
        Binding("left_square_bracket,alt+left", "history_back", "back", id="back"),
        Binding("right_square_bracket,alt+right", "history_forward", "forward", show=False, id="forward"),
        Binding("tab", "focus_next", "focus", show=False, id="focus_next"),
    ]

    def __init__(
        self, db_path: str | Path, *, poll_s: float = 1.0, mono: bool | None = None, rater: str | None = None
    ) -> None:
        self.started_at = time.perf_counter()
        super().__init__()
        self.db_path = str(db_path)
        self.poll_s = poll_s
        self.mono = bool(os.environ.get("NO_COLOR")) if mono is None else mono
        self.rater = (rater or "").strip() or default_rater()  # whose ratings audit mode writes (--rater)
        self.error: str | None = None
        self.readers: Readers | None = None
        try:
            self.readers = Readers(self.db_path)
        except BrowseError as e:
            self.error = str(e)
        self.tabs: dict[str, AppTab] = {}  # by name, in the order shown (made by compose)
        self._seen_results: dict | None = None  # the last poll's result counts
        self._monitor_first = False  # the monitor is the first tab shown (a run is live): it polls from the start
        # Settings from the last session; a file that does not parse is reported once and never overwritten.
        self.settings_file = settings_path()
        self.settings, self._settings_warning = load(self.settings_file)
        self._settings_unreadable = self._settings_warning is not None
        if self.settings.keys:
            self.set_keymap(self.settings.keys)

    # ---- what the tabs share, and what tests and the benchmark read ---------------------------------

    @property
    def browser(self) -> Browser:
        """The UI thread's connection."""
        assert self.readers is not None  # opened whenever there is no error
        return self.readers.ui

    @property
    def latents(self) -> LatentsTab:
        """The latents tab: the app's keys (sort, search, back, ...) act on it from every tab."""
        return cast("LatentsTab", self.tabs["latents"])

    @property
    def shown_latent(self) -> int | None:
        return self.latents.detail_column.shown_latent if "latents" in self.tabs else None

    @property
    def detail_count(self) -> int:
        return self.latents.detail_column.detail_count if "latents" in self.tabs else 0

    @property
    def first_paint_ms(self) -> float | None:
        return self.latents.detail_column.first_paint_ms if "latents" in self.tabs else None

    @property
    def switch_ms(self) -> list[float]:
        return self.latents.detail_column.switch_ms

    @property
    def order_settled(self) -> bool:
        return self.latents.order_settled

    # ---- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.error is not None:
            yield Static(Text(f"autointerp-tui: {self.error}\n\npress q to quit"), id="error")
            yield QuitFirstFooter(compact=True)
            return
        running = self.browser.latest_run_status() == "running"
        initial = "monitor" if running else (self.settings.tab or "latents")
        with TabbedContent(initial=initial):
            for key, name in enumerate(TABS, 1):
                self.tabs[name] = tab_class(name)(name, key, first=name == initial)
                yield self.tabs[name]
        yield QuitFirstFooter(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # On the error screen only quitting, help and the palette make sense: the other keys' widgets do not exist.
        if self.error is not None and action not in ("quit", "command_palette", "help"):
            return False
        return True

    def on_resize(self, event) -> None:
        for tab in self.tabs.values():
            tab.terminal_resized(event.size)

    def on_mount(self) -> None:
        if self.settings.theme and self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        elif self.settings.theme:  # one the user misspelt, or a theme this Textual lacks: its default stays
            self._settings_warning = self._settings_warning or f"settings: unknown theme {self.settings.theme!r}"
        if self._settings_warning:
            self.notify(self._settings_warning, severity="warning", timeout=10)
        if self.error is not None:
            return
        self.latents.start(self.settings.sort, self.settings.descending)
        self.set_interval(self.poll_s, self.poll)
        self._monitor_first = self.query_one(TabbedContent).active == "monitor"
        self.poll()
        self.action_tab(self.query_one(TabbedContent).active)

    def action_tab(self, tab: str) -> None:
        self.tabs[tab].bring_to_front()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.settings.tab = event.pane.id  # saved on exit: the next session opens here
        self.tabs[event.pane.id or ""].shown()

    # ---- the app's keys and the palette ---------------------------------------------------------------

    def action_focus_query(self) -> None:
        self.latents.focus_query()

    def action_cycle_sort(self, keep_latent: bool = False) -> None:
        self.latents.cycle_sort(keep_latent)

    def action_reverse(self) -> None:
        self.latents.reverse()

    def action_cycle_explainer(self) -> None:
        self.latents.cycle_explainer()

    def action_history_back(self) -> None:
        self.latents.back()

    def action_history_forward(self) -> None:
        self.latents.forward()

    def jump(self, latent: int) -> None:
        """Go to `latent` on the latents tab, recorded in the back/forward history."""
        self.latents.jump(latent)

    def on_latent_detail_view_jump(self, message: LatentDetailView.Jump) -> None:
        self.jump(message.latent)  # from either tab's detail view (the list's or the audit pane's)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_rows(self)))

    def palette_commands(self):
        """(name, callable) for the command palette (ctrl+p); none on the error screen (nothing to act on)."""
        if self.error is not None:
            return
        for name, tab in self.tabs.items():
            yield f"{tab.TITLE}: {tab.PALETTE}", lambda name=name: self.action_tab(name)
        yield "Filter or search: the query box (/)", self.action_focus_query
        yield "Back: the latent before ([)", self.action_history_back
        yield "Forward: the latent after (])", self.action_history_forward
        yield "Reverse the sort (r)", self.action_reverse
        yield "Keys: every key of this screen (?)", self.action_help
        yield "Export this latent as JSON (to the current directory)", self.latents.detail_column.export
        for tab in self.tabs.values():
            yield from tab.palette_commands()

    # ---- the monitor's polls ---------------------------------------------------------------------------

    def poll(self) -> None:
        """Read the newest run and the result counts on a worker thread; each tab takes what it needs of them."""
        detail, readers = self.latents.detail_column, self.readers
        assert readers is not None

        def hold_back() -> bool:  # the list paints first: the monitor's counts read whole tables (~2 s at 1M latents)
            starting = time.perf_counter() - self.started_at < 3
            return detail.first_paint_ms is None and not self._monitor_first and starting

        read = lambda: readers.monitor(hold_back, lambda: detail.evidence_watch)  # noqa: E731
        in_worker(self, read, group="monitor", exclusive=True)

    def on_first_paint(self, message: FirstPaint) -> None:
        if not self._monitor_first:
            self.poll()  # held back until now (see poll)

    def on_monitor_pane_mounted(self, message: MonitorPane.Mounted) -> None:
        self.poll()  # held back until the list's first paint when the list is shown first (see poll)

    def on_monitor_read(self, message: MonitorRead) -> None:
        if message.snapshot is None:
            self.notify(f"monitor: {message.error}", severity="error")
            return
        # Shutting down (the panes are being taken apart), or a tab not mounted yet: nothing to show it in.
        if not self.is_running or not all(tab.ready for tab in self.tabs.values()):
            return
        snap = message.snapshot
        seen = {"latents": snap.cache["latents"], **{k: snap.counts[k] for k in RESULTS[1:]}}
        before, self._seen_results = self._seen_results, seen
        changed = {k for k in RESULTS if before is not None and seen[k] != before[k]}
        if changed:
            assert self.readers is not None
            self.readers.refresh()
        for tab in self.tabs.values():
            tab.results_read(snap, message.evidence, changed)

    # ---- settings --------------------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self.save_settings()

    def save_settings(self) -> None:
        """Theme, last tab, sort and the key overrides read at start, for the next session. Not when the file
        did not parse (the user's text is left for them to fix) nor from the error screen (nothing was chosen)."""
        if self._settings_unreadable or self.error is not None:
            return
        self.settings.theme = self.theme
        self.settings.sort, self.settings.descending = self.latents.sort, self.latents.descending
        try:
            save(self.settings_file, self.settings)
        except OSError:
            pass  # the app is closing: nowhere to say it; the next session starts on defaults
