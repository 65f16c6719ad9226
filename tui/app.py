"""`autointerp-tui [DB]`: the Textual app. Monitor a running batch, browse latents, audit explanations.

It reads the database through read-only connections (the only write is an audit rating, one short
transaction) and starts nothing it cannot stop: its workers are threads doing SQLite reads.
Workers post results; only message handlers change what is on screen (as Harlequin does).
"""

from __future__ import annotations

import gc
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
from textual.containers import Horizontal, Vertical
from textual.lazy import Lazy
from textual.message import Message
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from autointerp.store.audits import default_rater
from autointerp.store.browse import BrowseError, Browser, LatentDetail, MonitorSnapshot
from autointerp.store.db import StoreError, preflight
from autointerp.store.text import printable

from .audit import AuditPane
from .detail import LatentDetailView
from .latent_list import LatentList
from .monitor import MonitorPane
from .plots import PlotsPane

CSS = """
Screen { layout: vertical; }
#error { padding: 1 2; color: $error; text-style: bold; }
#browse-left { width: 45%; min-width: 50; }
#browse-right { width: 1fr; border-left: vkey $secondary; }
#query { margin: 0 0; }
#list-status, #list-header { height: 1; padding: 0 1; }
#list-header { text-style: bold; }
"""


INTEGRITY_CHECK_MAX_BYTES = 1 << 30
COUNTS_EVERY_S = 10.0  # while a run writes, result counts are re-read at most this often
DEFAULT_DB = "autointerp.db"  # the config's default `db` (the TUI reads no config: it imports only store/)


class JumpProvider(Provider):
    """Command palette: `123` jumps to latent 123; the words `sort`, `monitor`, `audit` reach those."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, AutointerpApp)
        q = query.strip()
        if q.isdigit():
            latent = int(q)
            yield Hit(100, Text(f"Go to latent {latent}"), lambda: app.jump(latent), help="show this latent")
        matcher = self.matcher(query)
        for name, action in app.palette_commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action)


class AutointerpApp(App):
    TITLE = "autointerp"
    CSS = CSS
    COMMANDS = App.COMMANDS | {JumpProvider}
    BINDINGS = [
        Binding("1", "tab('monitor')", "monitor"),
        Binding("2", "tab('latents')", "latents"),
        Binding("3", "tab('audit')", "audit"),
        Binding("4", "tab('plots')", "plots"),
        Binding("slash", "focus_query", "filter/search"),
        Binding("s", "cycle_sort", "sort"),
        Binding("r", "reverse", "reverse"),
        Binding("x", "cycle_explainer", "explainer"),
        Binding("tab", "focus_next", "focus", show=False),
        Binding("q", "quit", "quit"),
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
        def __init__(self, snapshot: MonitorSnapshot | None, error: str | None = None) -> None:
            super().__init__()
            self.snapshot, self.error = snapshot, error

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

    # ---- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.error is not None:
            yield Static(Text(f"autointerp-tui: {self.error}\n\npress q to quit"), id="error")
            yield Footer()
            return
        assert self.browser is not None  # opened whenever there is no error
        initial = "monitor" if self._batch_running() else "latents"
        with TabbedContent(initial=initial):
            # Panes not shown first are mounted after the first frame (Lazy): the list paints sooner.
            with TabPane("Monitor [1]", id="monitor"):
                yield MonitorPane() if initial == "monitor" else Lazy(MonitorPane())
            with TabPane("Latents [2]", id="latents"):
                with Horizontal():
                    with Vertical(id="browse-left"):
                        yield Input(
                            placeholder="/ search explanations; filters: detection<0.6 frequency>1e-3", id="query"
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
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # On the error screen only quitting makes sense: the other keys' widgets do not exist there.
        if self.error is not None and action not in ("quit", "command_palette"):
            return False
        return True

    def _batch_running(self) -> bool:
        return self.browser.latest_run_status() == "running"

    def on_mount(self) -> None:
        if self.error is not None:
            return
        explainers = self.browser.explainers()
        self.explainer = "default" if "default" in explainers or not explainers else explainers[0]
        self.apply_order()
        self.set_interval(self.poll_s, self.poll)
        self._monitor_first = self.query_one(TabbedContent).active == "monitor"
        self.poll()
        self.action_tab(self.query_one(TabbedContent).active)

    # ---- the latent list ----------------------------------------------------------------------------

    def sort_keys(self) -> list[str]:
        return ["latent", "frequency", "max_act", "n_windows", *self.browser.scorers()]

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
            f"{len(ids):,} of {total:,} latents   sort: {sort} {'↓' if descending else '↑'}   explainer: {explainer}"
        )
        if query:
            status.append(f"   query: {query}")
        self.query_one("#list-status", Static).update(status)
        if not len(ids):
            self.query_one("#detail", LatentDetailView).show_message(
                "no latents match" if total else "this database holds no latents yet (the cache has not finished)"
            )

    def on_latent_list_highlighted(self, message: LatentList.Highlighted) -> None:
        if message.latent is not None:
            self._switch_from = message.at
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
        self.action_tab("latents")
        lst = self.query_one(LatentList)
        if not lst.go_to(latent):
            if latent < 0 or self.browser.latent_stats(latent) is None:
                self.notify(f"latent {latent} is not in this database", severity="warning")
                return
            self.notify(f"latent {latent} is outside the current filter; showing it anyway")
            self.load_detail(latent)
        lst.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "query":
            self.query_text = event.value.strip()
            self.apply_order()
            self.query_one(LatentList).focus()

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()
        self.query_one(TabbedContent).active = "latents"

    def action_cycle_sort(self) -> None:
        keys = self.sort_keys()
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)] if self.sort in keys else keys[0]
        self.descending = self.sort != "latent"
        self.apply_order(keep=self.query_one(LatentList).latent)

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.apply_order(keep=self.query_one(LatentList).latent)

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
        yield "Monitor: live progress of batch runs", lambda: self.action_tab("monitor")
        yield "Latents: browse", lambda: self.action_tab("latents")
        yield "Audit: rate explanations", lambda: self.action_tab("audit")
        yield "Plots: activation histogram and score distributions", lambda: self.action_tab("plots")
        for key in self.sort_keys():
            yield f"Sort by {key}", lambda key=key: self._sort_by(key)

    def _sort_by(self, key: str) -> None:
        self.sort, self.descending = key, key != "latent"
        self.apply_order(keep=self.query_one(LatentList).latent)

    # ---- the plots -----------------------------------------------------------------------------------

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
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
            except Exception as e:
                self.post_message(self.MonitorRead(None, f"{type(e).__name__}: {e}"))
                return
        self.post_message(self.MonitorRead(snap))

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
        self._seen_results = seen


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
