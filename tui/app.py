"""`autointerp-tui [DB]`: the Textual app. Monitor a running batch, browse latents, audit explanations.

It reads the database through read-only connections (the only write is an audit rating, one short
transaction) and starts nothing it cannot stop: its workers are threads doing SQLite reads.
Workers post results; only message handlers change what is on screen (as Harlequin does).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import click
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.lazy import Lazy
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.widgets._footer import FooterKey
from textual.worker import get_current_worker

from autointerp.store.audits import default_rater
from autointerp.store.browse import CONTROL_SUFFIX, BrowseError, Browser, LatentDetail, MonitorSnapshot
from autointerp.store.db import StoreError, preflight
from autointerp.store.evidence import ScorerEvidence
from autointerp.store.text import printable

from .audit import AuditPane
from .detail import LatentDetailView
from .latent_list import LatentList
from .monitor import MonitorPane
from .plots import PlotsPane
from .settings import load, save, settings_path

CSS = """
Screen { layout: vertical; }
#error { padding: 1 2; color: $error; text-style: bold; }
#browse-left { width: 45%; min-width: 50; }
#browse-right { width: 1fr; border-left: vkey $secondary; }
/* A narrow terminal (80 columns): the list above the detail, each full width, instead of a 27-column detail. */
#browse.narrow { layout: vertical; }
#browse.narrow #browse-left { width: 100%; min-width: 0; height: 45%; min-height: 11; }
#browse.narrow #browse-right { width: 100%; height: 1fr; border-left: none; }
#query { margin: 0 0; }
/* Narrow: a one-line search box (compact, no border) so 24 rows leave the list 6 rows (min-height above: the box,
   status, header and the list's border take 5); focus shows as a tint, there being no border to colour. */
#query.-textual-compact { padding: 0 1; }
#query.-textual-compact:focus { background-tint: $accent 25%; }
#list-status, #list-header { height: 1; padding: 0 1; }
#list-status { height: auto; }  /* wraps in a narrow pane rather than cutting off the explainer */
#list-header { text-style: bold; }
/* A visible focus ring: the focusable panes keep a dim border that turns to the accent colour with focus. */
#list, #detail, AuditPane, MonitorPane, PlotsPane { border: round $panel-lighten-2; }
#list:focus, #detail:focus, AuditPane:focus, MonitorPane:focus, PlotsPane:focus, #query:focus {
    border: round $accent;
}
#list { border-title-align: left; }
"""

NARROW_BELOW = 120  # terminal columns under which the latents tab stacks the list above the detail
HISTORY_MAX = 200  # latents kept for back/forward (a browser's history, bounded)


INTEGRITY_CHECK_MAX_BYTES = 1 << 30
COUNTS_EVERY_S = 10.0  # while a run writes, result counts are re-read at most this often
DEFAULT_DB = "autointerp.db"  # the config's default `db` (the TUI reads no config: it imports only store/)


class JumpProvider(Provider):
    """Command palette: `123` jumps to latent 123; the words `sort`, `monitor`, `audit` reach those."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, AutointerpApp)
        q = query.strip()
        if q.isdigit() and app.error is None:
            latent = int(q)
            yield Hit(100, Text(f"Go to latent {latent}"), lambda: app.jump(latent), help="show this latent")
        matcher = self.matcher(query)
        for name, action in app.palette_commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action)


class QueryInput(Input):
    """The search/filter box: escape hands focus back to the list and keeps what was typed."""

    BINDINGS = [Binding("escape", "leave", "back to the list", id="leave_query")]

    def action_leave(self) -> None:
        for lst in self.app.query(LatentList):
            lst.focus()


class QuitFirstFooter(Footer):
    """The footer with `q quit` first: Textual lists the focused widget's keys before the app's, so at 80
    columns the app's quit would be the first key cut off."""

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        keys.sort(key=lambda w: not (isinstance(w, FooterKey) and w.action == "quit"))  # stable: order kept
        yield from keys


class HelpScreen(ModalScreen[None]):
    """Every key of the screen behind it (the focused widget's, its containers' and the app's), from BINDINGS."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "close", id="close_help")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 90%; border: round $accent;
        padding: 0 1; background: $surface; }
    """

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        text = Text()
        width = max((len(key) for key, _, _ in self.rows), default=4)
        for key, description, where in self.rows:
            text.append(f"{key:>{width}}  ", "bold")
            text.append(description)
            text.append(f"   ({where})\n", "dim")
        with VerticalScroll() as box:
            box.border_title = "keys (escape closes; ctrl+p: the command palette)"
            yield Static(text, id="help-keys")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class AutointerpApp(App):
    TITLE = "autointerp"
    CSS = CSS
    COMMANDS = App.COMMANDS | {JumpProvider}
    # Each binding has an id: `[keys]` in the settings file rebinds it (App.set_keymap), e.g. back = "[".
    BINDINGS = [
        Binding("q", "quit", "quit", id="quit"),
        Binding("question_mark", "help", "keys", id="help"),
        Binding("1", "tab('monitor')", "monitor", id="monitor"),
        Binding("2", "tab('latents')", "latents", id="latents"),
        Binding("3", "tab('audit')", "audit", id="audit"),
        Binding("4", "tab('plots')", "plots", id="plots"),
        Binding("slash", "focus_query", "filter/search", id="search"),
        Binding("s", "cycle_sort", "sort (cursor to top)", id="sort"),
        Binding("S", "cycle_sort(True)", "sort, keep latent", show=False, id="sort_keep"),
        Binding("r", "reverse", "reverse", id="reverse"),
        Binding("x", "cycle_explainer", "explainer", id="explainer"),
        Binding("left_square_bracket,alt+left", "history_back", "back", id="back"),
        Binding("right_square_bracket,alt+right", "history_forward", "forward", show=False, id="forward"),
        Binding("tab", "focus_next", "focus", show=False, id="focus_next"),
    ]

    class DetailLoaded(Message):
        def __init__(self, detail: LatentDetail | None, error: str | None = None) -> None:
            super().__init__()
            self.detail, self.error = detail, error

    class OrderRead(Message):
        def __init__(self, request: tuple, ids, scorers: list[str], total: int, error: str | None) -> None:
            super().__init__()
            self.request, self.ids, self.scorers, self.total, self.error = request, ids, scorers, total, error

    class MonitorRead(Message):
        def __init__(
            self, snapshot: MonitorSnapshot | None, error: str | None = None, evidence: ScorerEvidence | None = None
        ) -> None:
            super().__init__()
            # evidence: the open evidence read again because its score rows changed since it was read
            self.snapshot, self.error, self.evidence = snapshot, error, evidence

    class PlotsRead(Message):
        def __init__(self, latent: int | None, hist, scores: list | None, error: str | None = None) -> None:
            super().__init__()
            self.latent, self.hist, self.scores, self.error = latent, hist, scores, error

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
        self.browser: Browser | None = None
        try:
            # Read-only connections, one per thread that reads: the list's rows and the audit pane (UI thread);
            # orders, detail loads, monitor polls (workers, each kind serialised by its lock below). A connection
            # is never shared between the UI thread and a worker (Browser checks it with AUTOINTERP_CHECK_THREADS=1).
            self.browser = Browser.open(self.db_path)
            self._order_db = Browser.open(self.db_path)
            self._detail_db = Browser.open(self.db_path)
            self._monitor_db = Browser.open(self.db_path)
        except BrowseError as e:
            self.error = str(e)
        self._detail_lock = threading.Lock()
        self._order_lock = threading.Lock()
        self._monitor_lock = threading.Lock()  # an `exclusive` thread worker is marked cancelled, not stopped
        # The Plots tab reads on its own connection, opened by its worker the first time the tab is shown (never
        # at start-up), and keeps the score histograms per explainer until new results arrive.
        self._plots_db: Browser | None = None
        self._plots_lock = threading.Lock()
        self._score_hists: dict[str, list] = {}
        self._plots_generation = 0  # bumped when results change: a read begun before that is not kept
        self._order_requests = self._order_applied = 0
        self._wanted: int | None = None
        self.sort, self.descending, self.query_text = "latent", False, ""
        self.explainer = "default"
        self.shown_latent: int | None = None
        self.detail_count = 0  # details painted, for tests and the benchmark
        self.first_paint_ms: float | None = None  # app constructed -> first latent's detail on screen
        self.switch_ms: list[float] = []  # cursor moved -> that latent's detail on screen
        self._switch_from: float | None = None
        self._seen_results: tuple | None = None
        self._polls, self._heartbeat, self._counts, self._counted_at = 0, None, None, 0.0
        self._monitor_first = False  # the monitor is the first tab shown (a run is live): it polls from the start
        # Back/forward through latents gone to (jumps, neighbours, the palette), as a web browser does.
        self.history: list[int] = []
        self.history_at = -1
        self._refreshing: int | None = None  # a latent being re-read because new results landed
        # (latent, explainer, scorer, signature) of the evidence open in the detail pane: each poll compares the
        # signature with its score rows' (store/evidence.py score_signature) and reads the evidence again if moved.
        self._evidence_watch: tuple | None = None
        # Settings from the last session; a file that does not parse is reported once and never overwritten.
        self.settings_file = settings_path()
        self.settings, self._settings_warning = load(self.settings_file)
        self._settings_unreadable = self._settings_warning is not None
        if self.settings.keys:
            self.set_keymap(self.settings.keys)

    # ---- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.error is not None:
            yield Static(Text(f"autointerp-tui: {self.error}\n\npress q to quit"), id="error")
            yield QuitFirstFooter(compact=True)
            return
        assert self.browser is not None  # opened whenever there is no error
        initial = "monitor" if self._batch_running() else (self.settings.tab or "latents")
        with TabbedContent(initial=initial):
            # Panes not shown first are mounted after the first frame (Lazy): the list paints sooner.
            with TabPane("Monitor [1]", id="monitor"):
                yield MonitorPane() if initial == "monitor" else Lazy(MonitorPane())
            with TabPane("Latents [2]", id="latents"):
                with Horizontal(id="browse", classes="narrow" if self.size.width < NARROW_BELOW else ""):
                    with Vertical(id="browse-left"):
                        yield QueryInput(
                            placeholder="/ search explanations; filters: detection<0.6 frequency>1e-3",
                            id="query",
                            compact=self.size.width < NARROW_BELOW,
                        )
                        yield Static("", id="list-status")
                        yield Static("", id="list-header")
                        yield LatentList(self.browser, id="list")
                    with Vertical(id="browse-right"):
                        yield LatentDetailView(self.mono, id="detail")
            with TabPane("Audit [3]", id="audit"):
                # The pane reads on the UI thread, so it gets the UI thread's Browser: the detail worker's one
                # would be read by two threads at once while a latent loads (a share under `_detail_lock` would
                # make the UI wait for that load).
                yield Lazy(
                    AuditPane(self.browser, self.db_path, self.mono, lambda: self.query_one(LatentList).ids, self.rater)
                )
            with TabPane("Plots [4]", id="plots"):
                yield Lazy(PlotsPane(self.mono))
        yield QuitFirstFooter(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # On the error screen only quitting, help and the palette make sense: the other keys' widgets do not exist.
        if self.error is not None and action not in ("quit", "command_palette", "help"):
            return False
        return True

    def _batch_running(self) -> bool:
        return self.browser.latest_run_status() == "running"

    def on_resize(self, event) -> None:
        narrow = event.size.width < NARROW_BELOW
        for browse in self.query("#browse"):
            browse.set_class(narrow, "narrow")
        for box in self.query("#query").results(Input):
            box.compact = narrow

    def on_mount(self) -> None:
        if self.settings.theme and self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        elif self.settings.theme:  # one the user misspelt, or a theme this Textual lacks: its default stays
            self._settings_warning = self._settings_warning or f"settings: unknown theme {self.settings.theme!r}"
        if self._settings_warning:
            self.notify(self._settings_warning, severity="warning", timeout=10)
        if self.error is not None:
            return
        if self.settings.sort is not None and self.settings.sort in self.browser.columns():
            self.sort = self.settings.sort
            self.descending = bool(self.settings.descending)
        explainers = self.browser.explainers()
        self.explainer = "default" if "default" in explainers or not explainers else explainers[0]
        self.apply_order()
        self.set_interval(self.poll_s, self.poll)
        self._monitor_first = self.query_one(TabbedContent).active == "monitor"
        self.poll()
        self.action_tab(self.query_one(TabbedContent).active)

    # ---- the latent list ----------------------------------------------------------------------------

    def sort_keys(self) -> list[str]:
        """What `s` cycles through: statistics, each scorer's primary metric, and that minus its control."""
        scorers = list(self.browser.scorers())
        return ["latent", "frequency", "max_act", "n_windows", *scorers, *(f"{s}{CONTROL_SUFFIX}" for s in scorers)]

    def apply_order(self, keep: int | None = None) -> None:
        """Re-read the list's order for the current sort, query and explainer, on a worker thread (sorting 100k
        latents by a score takes ~0.5 s); the list keeps its old order until the new one arrives."""
        self._order_requests += 1
        request = (self._order_requests, self.sort, self.descending, self.query_text, self.explainer, keep)
        self.query_one("#list-status", Static).update(Text("sorting…", "italic"))
        self._read_order(request)

    @property
    def order_settled(self) -> bool:
        """No order is being read (tests and the benchmark wait for this)."""
        return self._order_applied == self._order_requests

    @work(thread=True, group="order")
    def _read_order(self, request: tuple) -> None:
        number, sort, descending, query, explainer, _ = request
        with self._order_lock:  # one read at a time on the order connection; a stale request is skipped
            if number != self._order_requests:
                self.post_message(self.OrderRead(request, None, [], 0, None))
                return
            try:
                ids = self._order_db.order(sort, descending, query, explainer)
                scorers, total = list(self._order_db.scorers()), self._order_db.n_latents()
            except BrowseError as e:
                self.post_message(self.OrderRead(request, None, [], 0, str(e)))
                return
        self.post_message(self.OrderRead(request, ids, scorers, total, None))

    def on_autointerp_app_order_read(self, message: OrderRead) -> None:
        number, sort, descending, query, explainer, keep = message.request
        self._order_applied = max(self._order_applied, number)
        lists = self.query(LatentList)
        if not lists or number != self._order_requests:  # shutting down, or a newer order is on its way
            return
        lst = lists.first()
        if message.ids is None:  # a bad query: reported, the list keeps its order
            self.notify(message.error or "", severity="error", timeout=8)
            ids, total = lst.ids, self.browser.n_latents()
        else:
            lst.set_order(message.ids, explainer, message.scorers, keep=keep)
            self.query_one("#list-header", Static).update(Text(lst.header()))
            ids, total = message.ids, message.total
        status = Text(
            f"{len(ids):,} of {total:,} latents · sort: {sort_label(sort)} {'↓' if descending else '↑'}"
            f" · explainer: {explainer}"
        )
        self.query_one("#list-status", Static).update(status)
        # The query in force, on the list's border: the box may hold an edit not yet applied (escape keeps it).
        lst.border_title = Text(f"query: {query}") if query else Text("no query (/ to search or filter)", "dim")
        if not len(ids):
            self.query_one("#detail", LatentDetailView).show_message(
                "no latents match" if total else "this database holds no latents yet (the cache has not finished)"
            )

    def on_latent_list_highlighted(self, message: LatentList.Highlighted) -> None:
        if message.latent is not None:
            self._switch_from = message.at
            self._refreshing = None
            self.load_detail(message.latent)

    def load_detail(self, latent: int) -> None:
        self._wanted = latent
        self._load_detail(latent)

    @work(thread=True, group="detail")
    def _load_detail(self, latent: int) -> None:
        # Serialised on one connection; a latent the user has already moved past is skipped.
        with self._detail_lock:
            if latent != self._wanted:
                return
            try:
                detail = self._detail_db.detail(latent)
            except Exception as e:  # a reading problem is shown, never a traceback over the UI
                self.post_message(self.DetailLoaded(None, f"latent {latent}: {type(e).__name__}: {e}"))
                return
        self.post_message(self.DetailLoaded(detail))

    def on_autointerp_app_detail_loaded(self, message: DetailLoaded) -> None:
        views = self.query("#detail")
        if not views:  # shutting down
            return
        view = views.first(LatentDetailView)
        if message.detail is None:
            view.show_message(message.error or "")
            return
        if message.detail.latent != self._wanted:
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
            self.first_paint_ms = (now - self.started_at) * 1000
            if not self._monitor_first:
                self.poll()  # held back until now (see poll)
        elif switch_from is not None:
            self.switch_ms.append((now - switch_from) * 1000)
        self.shown_latent = latent
        self.detail_count += 1
        if self.detail_count == 1:
            # Everything loaded at start-up is long-lived: keep it out of the collector's generations, so
            # collections while browsing are short (fewer pauses in latent switches).
            gc.freeze()

    def on_latent_detail_view_jump(self, message: LatentDetailView.Jump) -> None:
        self.jump(message.latent)

    def jump(self, latent: int) -> None:
        """Go to `latent` (palette, neighbours) and record it in the back/forward history."""
        came_from = self._wanted
        if self._go(latent):
            self._record(came_from, latent)

    def _go(self, latent: int) -> bool:
        self.action_tab("latents")
        lst = self.query_one(LatentList)
        if not lst.go_to(latent):
            if latent < 0 or self.browser.latent_stats(latent) is None:
                self.notify(f"latent {latent} is not in this database", severity="warning")
                return False
            self.notify(f"latent {latent} is outside the current filter; showing it anyway")
            self.load_detail(latent)
        lst.focus()
        return True

    def _record(self, came_from: int | None, latent: int) -> None:
        """A go-to drops the forward entries, as a browser does; where the reader was (they may have moved the
        cursor since the last go-to) is kept, so back returns there."""
        del self.history[self.history_at + 1 :]
        for entry in (came_from, latent):
            if entry is not None and (not self.history or self.history[-1] != entry):
                self.history.append(entry)
        del self.history[:-HISTORY_MAX]
        self.history_at = len(self.history) - 1

    def action_history_back(self) -> None:
        current = self._wanted
        if current is not None and self.history and current != self.history[self.history_at]:
            self._record(None, current)  # moved since: back comes to here again with forward
        if self.history_at <= 0:
            self.notify("no earlier latent in the history")
            return
        self.history_at -= 1
        self._go(self.history[self.history_at])

    def action_history_forward(self) -> None:
        if self.history_at >= len(self.history) - 1:
            self.notify("no later latent in the history")
            return
        self.history_at += 1
        self._go(self.history[self.history_at])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "query":
            self.query_text = event.value.strip()
            self.apply_order()
            self.query_one(LatentList).focus()

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()
        self.query_one(TabbedContent).active = "latents"

    def action_cycle_sort(self, keep_latent: bool = False) -> None:
        """`s`: the next sort, cursor to the top (the best latents by it); `S`: the same, keeping the latent."""
        keys = self.sort_keys()
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)] if self.sort in keys else keys[0]
        self.descending = self.sort != "latent"
        self.apply_order(keep=self.query_one(LatentList).latent if keep_latent else None)

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.apply_order()

    def action_cycle_explainer(self) -> None:
        names = self.browser.explainers() or ["default"]
        self.explainer = names[(names.index(self.explainer) + 1) % len(names)] if self.explainer in names else names[0]
        self.apply_order(keep=self.query_one(LatentList).latent)
        self.notify(f"explainer: {self.explainer}")

    def action_tab(self, tab: str) -> None:
        # Focus moves first: TabbedContent shows the pane holding the focused widget, so focusing after the
        # switch would let the old pane's next focusable widget pull its tab back.
        if tab == "audit":
            for pane in self.query(AuditPane):  # absent for the first frame (mounted lazily)
                pane.focus()
                pane.reload(self.explainer)
        elif tab == "latents":
            self.query_one(LatentList).focus()
        elif tab == "plots":
            for plots in self.query(PlotsPane):  # absent for the first frame (mounted lazily)
                plots.focus()
        else:
            for monitor in self.query(MonitorPane):  # absent for the first frame (mounted lazily)
                monitor.focus()
        self.query_one(TabbedContent).active = tab

    def palette_commands(self):
        """(name, callable) for the command palette (ctrl+p); none on the error screen (nothing to act on)."""
        if self.error is not None:
            return
        yield "Monitor: live progress of batch runs", lambda: self.action_tab("monitor")
        yield "Latents: browse", lambda: self.action_tab("latents")
        yield "Audit: rate explanations", lambda: self.action_tab("audit")
        yield "Plots: activation histogram and score distributions", lambda: self.action_tab("plots")
        yield "Filter or search: the query box (/)", self.action_focus_query
        yield "Back: the latent before ([)", self.action_history_back
        yield "Forward: the latent after (])", self.action_history_forward
        yield "Reverse the sort (r)", self.action_reverse
        yield "Keys: every key of this screen (?)", self.action_help
        yield "Export this latent as JSON (to the current directory)", self.action_export
        for key in sorted(self.browser.columns()):
            yield f"Sort by {sort_label(key)}", lambda key=key: self._sort_by(key)
        for name in self.browser.explainers():
            yield f"Explainer: {name}", lambda name=name: self._use_explainer(name)
        # The detail pane's own keys (neighbours, and whatever it binds later), run on the latents' detail view.
        for binding in LatentDetailView.BINDINGS:
            if isinstance(binding, Binding) and binding.description:
                action = binding.action
                yield f"Detail: {binding.description} ({binding.key})", lambda a=action: self._detail_action(a)

    def _sort_by(self, key: str) -> None:
        self.sort, self.descending = key, key != "latent"
        self.apply_order()

    def _use_explainer(self, name: str) -> None:
        self.explainer = name
        self.apply_order(keep=self.query_one(LatentList).latent)
        self.notify(f"explainer: {name}")

    def _detail_action(self, action: str) -> None:
        self.action_tab("latents")
        view = self.query_one("#detail", LatentDetailView)
        self.call_next(self.run_action, action, view)  # run_action is a coroutine: run after this callback

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_rows(self)))

    def action_export(self) -> None:
        """The shown latent's detail as JSON in the current directory (no engine code: the TUI imports store only)."""
        views = self.query("#detail")
        detail = views.first(LatentDetailView).detail if views else None
        if detail is None:
            self.notify("no latent shown to export", severity="warning")
            return
        path = Path.cwd() / f"autointerp-latent-{detail.latent}.json"
        try:
            path.write_text(json.dumps(detail_json(detail), indent=1, default=_jsonable), encoding="utf-8")
        except OSError as e:
            self.notify(f"export failed: {e}", severity="error")
            return
        self.notify(f"latent {detail.latent} written to {path}", timeout=8)

    # ---- the plots -----------------------------------------------------------------------------------

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.settings.tab = event.pane.id  # saved on exit: the next session opens here
        # Key, click or palette: the plots are read each time their tab is shown (the latent may have changed).
        if event.pane.id == "plots":
            self.load_plots()

    def on_plots_pane_mounted(self, message: PlotsPane.Mounted) -> None:
        if self.query_one(TabbedContent).active == "plots":  # shown before its lazy mount ended
            self.load_plots()

    def load_plots(self) -> None:
        latent = self._wanted if self._wanted is not None else self.shown_latent
        self._read_plots(latent, self.explainer, self._plots_generation)

    @work(thread=True, group="plots")
    def _read_plots(self, latent: int | None, explainer: str, generation: int) -> None:
        with self._plots_lock:  # one read at a time on the plots connection
            try:
                if self._plots_db is None:
                    self._plots_db = Browser.open(self.db_path)
                hist = self._plots_db.activation_histogram(latent) if latent is not None else None
                scores = self._score_hists.get(explainer)
                if scores is None:
                    scores = self._plots_db.score_histograms(explainer)
                    if generation == self._plots_generation:
                        self._score_hists[explainer] = scores
            except Exception as e:  # a reading problem is shown, never a traceback over the UI
                self.post_message(self.PlotsRead(latent, None, None, f"{type(e).__name__}: {e}"))
                return
        self.post_message(self.PlotsRead(latent, hist, scores))

    async def on_autointerp_app_plots_read(self, message: PlotsRead) -> None:
        panes = self.query(PlotsPane)
        if not panes:  # not mounted yet (it asks again once it is) or shutting down
            return
        if message.error is not None or message.scores is None:
            self.notify(f"plots: {message.error}", severity="error")
            return
        pane = panes.first()
        pane.show_latent(message.latent, message.hist)
        await pane.show_scores(message.scores)
        pane.drawn += 1

    # ---- the monitor ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="monitor")
    def poll(self) -> None:
        # One poll at a time on the monitor connection; a poll superseded while it waited is skipped.
        with self._monitor_lock:
            if get_current_worker().is_cancelled:
                return
            if self.first_paint_ms is None and not self._monitor_first and time.perf_counter() - self.started_at < 3:
                return  # the list paints first: the monitor's counts read whole tables (~2 s at 1M latents)
            self._polls += 1
            try:
                # Result counts scan the results tables (a second at a million latents): every 10th poll, or when
                # the newest run has moved on, and then at most every COUNTS_EVERY_S while it writes.
                heartbeat = self._monitor_db.heartbeat()
                now = time.monotonic()
                moved = heartbeat != self._heartbeat and now - self._counted_at >= COUNTS_EVERY_S
                fresh = self._polls % 10 == 1 or moved
                if fresh:
                    self._counted_at = now
                self._heartbeat = heartbeat
                snap = self._monitor_db.monitor(counts=None if fresh else self._counts)
                self._counts = snap.counts
                evidence = self._reread_evidence()
            except Exception as e:
                self.post_message(self.MonitorRead(None, f"{type(e).__name__}: {e}"))
                return
        self.post_message(self.MonitorRead(snap, evidence=evidence))

    def _reread_evidence(self) -> ScorerEvidence | None:
        """On the monitor worker: the open evidence again if its score rows were written since it was read (a
        rescore, a control row landing), else None. The check is two rows by primary key; the result counts the
        monitor reads would see a rescore late (every 10th poll) or never (`--redo` keeps the count)."""
        watch = self._evidence_watch  # one tuple, swapped whole by the UI thread
        if watch is None:
            return None
        latent, explainer, scorer, seen = watch
        # On the monitor Browser, under `_monitor_lock` like its other reads.
        if self._monitor_db.evidence_signature(latent, explainer, scorer) == seen:
            return None
        return self._monitor_db.evidence(latent, explainer, scorer)

    def on_latent_detail_view_evidence_shown(self, message: LatentDetailView.EvidenceShown) -> None:
        if message.view.id != "detail":  # the audit pane's own detail view: its evidence is not followed
            return
        ev = message.evidence
        self._evidence_watch = None if ev is None else (ev.latent, ev.explainer, ev.scorer, ev.signature)

    def on_monitor_pane_mounted(self, message: MonitorPane.Mounted) -> None:
        self.poll()  # held back until the list's first paint when the list is shown first (see poll)

    def on_autointerp_app_monitor_read(self, message: MonitorRead) -> None:
        if message.snapshot is None:
            self.notify(f"monitor: {message.error}", severity="error")
            return
        panes = self.query(MonitorPane)
        if not panes or not self.query(LatentList):  # shutting down
            return
        if panes.first().ready:  # not before its lazy mount ends; it asks for a poll then
            panes.first().show(message.snapshot)
        # New latents, explanations or scores since the last look: refresh the list's rows (keep the order).
        seen = (
            message.snapshot.cache["latents"],
            message.snapshot.counts["explained"],
            message.snapshot.counts["scored"],
        )
        # The open evidence, read again by the poll because its rows were written: redrawn if it changed, and the
        # latent re-read below (its scores table shows the same rows).
        rescored, new = False, message.evidence
        if new is not None:
            view = self.query_one("#detail", LatentDetailView)
            old = view.evidence  # still the one open, and not already replaced by an earlier poll's re-read
            rescored = old is not None and old.signature != new.signature
            rescored = rescored and (old.latent, old.explainer, old.scorer) == (new.latent, new.explainer, new.scorer)
            if rescored:
                view.update_evidence(new)
                self.query_one(LatentList).invalidate()  # its row's metrics too (one page, read when drawn)
        if self._seen_results is not None and seen != self._seen_results:
            for browser in (self.browser, self._order_db, self._detail_db):
                browser.refresh()  # new scorers, a vocabulary written at the end of the cache stage, ...
            if self._plots_db is not None:
                self._plots_db.refresh()
            self._plots_generation += 1
            self._score_hists.clear()
            if self.query_one(TabbedContent).active == "plots":
                self.load_plots()
            lst = self.query_one(LatentList)
            if seen[0] != self._seen_results[0] or list(self.browser.scorers()) != lst.scorers:
                self.apply_order(keep=lst.latent)  # new latents or a new scorer column
            else:
                lst.invalidate()
        changed = self._seen_results is not None and seen != self._seen_results
        self._refresh_shown(message.snapshot, changed=changed or rescored)
        self._seen_results = seen

    def _refresh_shown(self, snap: MonitorSnapshot, changed: bool) -> None:
        """Re-read the latent on screen when results landed, and, while a batch runs, while it still lacks what
        `autointerp annotate` writes (the logit lens, the vocabulary): the pane then fills in without a key."""
        views = self.query("#detail")
        shown = views.first(LatentDetailView).detail if views else None
        if shown is None or self._wanted != shown.latent:
            return
        live = bool(snap.runs) and snap.runs[0]["status"] == "running" and not snap.runs[0]["probably_killed"]
        unannotated = not shown.has_vocab or not (shown.promoted or shown.suppressed)
        if changed or (live and unannotated):
            if not changed:
                self._detail_db.refresh()  # the vocabulary is read once per browser: read it again
            self._refreshing = shown.latent
            self.load_detail(shown.latent)

    # ---- settings --------------------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self.save_settings()

    def save_settings(self) -> None:
        """Theme, last tab, sort and the key overrides read at start, for the next session. Not when the file
        did not parse (the user's text is left for them to fix) nor from the error screen (nothing was chosen)."""
        if self._settings_unreadable or self.error is not None:
            return
        self.settings.theme = self.theme
        self.settings.sort, self.settings.descending = self.sort, self.descending
        try:
            save(self.settings_file, self.settings)
        except OSError:
            pass  # the app is closing: nowhere to say it; the next session starts on defaults


def sort_label(key: str) -> str:
    return key[: -len(CONTROL_SUFFIX)] + " − control" if key.endswith(CONTROL_SUFFIX) else key


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


def help_rows(app: App) -> list[tuple[str, str, str]]:
    """(keys, description, whose) for every binding active on the current screen, focused widget first."""
    rows: dict[tuple[int, str, str], tuple[list[str], str, str]] = {}
    for active in app.screen.active_bindings.values():
        binding, node = active.binding, active.node
        keys, _, _ = rows.setdefault(
            (id(node), binding.action, binding.description),
            (
                [],
                binding.description or binding.action.replace("_", " "),
                "app" if node is app else type(node).__name__,
            ),
        )
        keys.append(app.get_key_display(binding))
    return [(", ".join(keys), description, where) for keys, description, where in rows.values()]


def detail_json(detail: LatentDetail) -> dict:
    # The vocabulary is the whole file's (shared, 50k+ tokens), not this latent's: left out.
    return {f.name: getattr(detail, f.name) for f in dataclasses.fields(detail) if f.name != "vocab"}


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("db", required=False)  # checked by `preflight`, which says what is wrong in one line
@click.option("--serve", is_flag=True, help="Serve the TUI to a browser (textual-serve), on 127.0.0.1 only.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve.")
@click.option(
    "--rater", help="Your name on the ratings audit mode writes (default: $AUTOINTERP_RATER, else your login)."
)
def main(db: str | None, serve: bool, port: int, rater: str | None) -> None:
    """Monitor, browse and audit an autointerp database.

    DB is the SQLite file a batch writes (default: autointerp.db); it may be in use by a running batch, whose
    progress the monitor tab then follows. Over SSH run it on the GPU box itself, or serve it with --serve and
    forward the port: ssh -L 8000:127.0.0.1:8000 HOST, then open http://127.0.0.1:8000."""
    if db is None:
        db = DEFAULT_DB
    if rater is not None and not rater.strip():  # a blank name would file ratings under nobody
        click.echo("error: --rater needs a name", err=True)
        sys.exit(2)
    try:  # a file that cannot be browsed is refused before the screen is taken over: one line, exit 2
        # SQLite's page check reads the whole file (~0.5 s per GiB here): done for files up to 1 GiB, so a larger
        # database still opens in under a second (a damaged page there shows as a read error in the pane).
        size = os.path.getsize(db) if os.path.isfile(db) else 0
        preflight(db, must_exist=True, writing=False, integrity=size <= INTEGRITY_CHECK_MAX_BYTES)
    except StoreError as e:
        click.echo(f"error: {printable(e)}", err=True)
        sys.exit(2)
    if serve:
        from textual_serve.server import Server

        # Bound to the loopback interface only: reach it over SSH with `ssh -L PORT:127.0.0.1:PORT host`.
        command = f"{sys.executable} -m autointerp.tui {_quote(db)} --rater {_quote(rater or default_rater())}"
        Server(command, host="127.0.0.1", port=port, title="autointerp").serve()
        return
    app = AutointerpApp(db, rater=rater)
    app.run()
    if app.error is not None:
        sys.exit(2)


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)
