"""The Latents tab (key 2): the virtual list of latents (tui/latent_list.py) in the order of the sort, search
and explainer chosen, read on a worker thread (tui/readers.py); the search box; and beside them the detail of the
latent under the cursor (tui/detail_column.py). It also keeps where the reader has been (tui/history.py)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.widgets import Input, Static, TabbedContent

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.latent_query import CONTROL_SUFFIX
from autointerp.store.views import MonitorSnapshot

from .detail import LatentDetailView
from .detail_column import DetailColumn
from .history import History
from .latent_list import LatentList
from .messages import OrderRead
from .query_box import QueryInput
from .readers import in_worker
from .tab import AppTab

NARROW_BELOW = 120  # terminal columns under which the list stacks above the detail


class LatentsTab(AppTab):
    TITLE = "Latents"
    PALETTE = "browse"

    def __init__(self, name: str, key: int, first: bool) -> None:
        super().__init__(name, key, first)
        self.sort, self.descending, self.query_text = "latent", False, ""
        self.explainer = "default"  # whose explanations the list shows; the audit and plots tabs follow it
        self.order_requests = self.order_applied = 0
        self.history = History()
        self.detail_column = DetailColumn(id="browse-right")  # made here: the app reads its timings from the start

    def compose(self) -> ComposeResult:
        narrow = self.app.size.width < NARROW_BELOW
        with Horizontal(id="browse", classes="narrow" if narrow else ""):
            with Vertical(id="browse-left"):
                yield QueryInput(
                    placeholder="/ search explanations; filters: detection<0.6 frequency>1e-3",
                    id="query",
                    compact=narrow,
                )
                yield Static("", id="list-status")
                yield Static("", id="list-header")
                yield LatentList(self.host.browser, id="list")
            yield self.detail_column

    @property
    def ready(self) -> bool:
        return bool(self.query(LatentList))

    @property
    def latent_list(self) -> LatentList:
        return self.query_one(LatentList)

    @property
    def ids(self):
        """The list's latents, in its current order and filter (the audit pane's "filtered" queue)."""
        return self.latent_list.ids

    def latent_in_view(self) -> int | None:
        """The latent asked for last, else the one shown (what the plots tab draws)."""
        return self.detail_column.latent_in_view()

    def focus_content(self) -> None:
        self.latent_list.focus()

    def terminal_resized(self, size: Size) -> None:
        narrow = size.width < NARROW_BELOW
        for browse in self.query("#browse"):
            browse.set_class(narrow, "narrow")
        for box in self.query("#query").results(Input):
            box.compact = narrow

    def start(self, sort: str | None, descending: bool | None) -> None:
        """The first order, by the sort the last session saved if this database still has that column."""
        browser = self.host.browser
        if sort is not None and sort in browser.columns():
            self.sort = sort
            self.descending = bool(descending)
        explainers = browser.explainers()
        self.explainer = "default" if "default" in explainers or not explainers else explainers[0]
        self.apply_order()

    # ---- the list's order ---------------------------------------------------------------------------

    def sort_keys(self) -> list[str]:
        """What `s` cycles through: statistics, each scorer's primary metric, and that minus its control."""
        scorers = list(self.host.browser.scorers())
        return ["latent", "frequency", "max_act", "n_windows", *scorers, *(f"{s}{CONTROL_SUFFIX}" for s in scorers)]

    def apply_order(self, keep: int | None = None) -> None:
        """Re-read the list's order for the current sort, query and explainer, on a worker thread (sorting 100k
        latents by a score takes ~0.5 s); the list keeps its old order until the new one arrives."""
        self.order_requests += 1
        request = (self.order_requests, self.sort, self.descending, self.query_text, self.explainer, keep)
        self.query_one("#list-status", Static).update(Text("sorting…", "italic"))
        readers = self.host.readers
        in_worker(self, lambda: readers.order(request, lambda: self.order_requests), group="order")

    @property
    def order_settled(self) -> bool:
        """No order is being read (tests and the benchmark wait for this)."""
        return self.order_applied == self.order_requests

    def on_order_read(self, message: OrderRead) -> None:
        number, sort, descending, query, explainer, keep = message.request
        self.order_applied = max(self.order_applied, number)
        lists = self.query(LatentList)
        if not self.app.is_running or not lists or number != self.order_requests:
            return  # shutting down, or a newer order is on its way
        lst = lists.first()
        if message.ids is None:  # a bad query: reported, the list keeps its order
            self.app.notify(message.error or "", severity="error", timeout=8)
            ids, total = lst.ids, self.host.browser.n_latents()
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
            self.detail_column.view.show_message(
                "no latents match" if total else "this database holds no latents yet (the cache has not finished)"
            )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "query":
            self.query_text = event.value.strip()
            self.apply_order()
            self.latent_list.focus()

    def focus_query(self) -> None:
        self.query_one("#query", Input).focus()
        self.app.query_one(TabbedContent).active = self.id or ""

    def cycle_sort(self, keep_latent: bool = False) -> None:
        """`s`: the next sort, cursor to the top (the best latents by it); `S`: the same, keeping the latent."""
        keys = self.sort_keys()
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)] if self.sort in keys else keys[0]
        self.descending = self.sort != "latent"
        self.apply_order(keep=self.latent_list.latent if keep_latent else None)

    def reverse(self) -> None:
        self.descending = not self.descending
        self.apply_order()

    def sort_by(self, key: str) -> None:
        self.sort, self.descending = key, key != "latent"
        self.apply_order()

    def cycle_explainer(self) -> None:
        names = self.host.browser.explainers() or ["default"]
        self.use_explainer(
            names[(names.index(self.explainer) + 1) % len(names)] if self.explainer in names else names[0]
        )

    def use_explainer(self, name: str) -> None:
        self.explainer = name
        self.apply_order(keep=self.latent_list.latent)
        self.app.notify(f"explainer: {name}")

    # ---- the latent under the cursor, going to a latent, and back ----------------------------------

    def on_latent_list_highlighted(self, message: LatentList.Highlighted) -> None:
        if message.latent is not None:
            self.detail_column.follow(message.latent, message.at)

    def jump(self, latent: int) -> None:
        """Go to `latent` (palette, neighbours) and record it in the back/forward history."""
        came_from = self.detail_column.wanted
        if self._go(latent):
            self.history.record(came_from, latent)

    def _go(self, latent: int) -> bool:
        self.bring_to_front()
        lst = self.latent_list
        if not lst.go_to(latent):
            if latent < 0 or self.host.browser.latent_stats(latent) is None:
                self.app.notify(f"latent {latent} is not in this database", severity="warning")
                return False
            self.app.notify(f"latent {latent} is outside the current filter; showing it anyway")
            self.detail_column.load(latent)
        lst.focus()
        return True

    def back(self) -> None:
        latent = self.history.back(self.detail_column.wanted)
        if latent is None:
            self.app.notify("no earlier latent in the history")
            return
        self._go(latent)

    def forward(self) -> None:
        latent = self.history.forward()
        if latent is None:
            self.app.notify("no later latent in the history")
            return
        self._go(latent)

    # ---- a monitor poll -------------------------------------------------------------------------------

    def results_read(self, snapshot: MonitorSnapshot, evidence: ScorerEvidence | None, changed: set[str]) -> None:
        column = self.detail_column
        rescored = evidence is not None and column.evidence_read(evidence)
        if rescored:
            self.latent_list.invalidate()  # its row's metrics too (one page, read when drawn)
        if changed:  # new latents or a new scorer column: a new order; else the rows' cells only
            lst = self.latent_list
            if "latents" in changed or list(self.host.browser.scorers()) != lst.scorers:
                self.apply_order(keep=lst.latent)
            else:
                lst.invalidate()
        column.refresh_shown(snapshot, changed=bool(changed) or rescored)  # its scores table shows the same rows

    def palette_commands(self):
        for key in sorted(self.host.browser.columns()):
            yield f"Sort by {sort_label(key)}", lambda key=key: self.sort_by(key)
        for name in self.host.browser.explainers():
            yield f"Explainer: {name}", lambda name=name: self.use_explainer(name)
        # The detail pane's own keys (neighbours, and whatever it binds later), run on the list's detail view.
        for binding in LatentDetailView.BINDINGS:
            if isinstance(binding, Binding) and binding.description:
                action = binding.action
                yield f"Detail: {binding.description} ({binding.key})", lambda a=action: self._detail_action(a)

    def _detail_action(self, action: str) -> None:
        self.bring_to_front()
        # run_action is a coroutine: run after this callback
        self.app.call_next(self.app.run_action, action, self.detail_column.view)


def sort_label(key: str) -> str:
    return key[: -len(CONTROL_SUFFIX)] + " − control" if key.endswith(CONTROL_SUFFIX) else key
