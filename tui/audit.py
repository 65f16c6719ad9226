"""Audit mode: walk a queue of explained latents, rate each explanation, write your own and a note, flag it.

Ratings go to the `audits` table (store/audits.py) with time stamps; the agreement between ratings and
each scorer's metric is shown as you go.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from autointerp.store.audits import write_audit
from autointerp.store.browse import Browser
from autointerp.store.text import printable

from .detail import LatentDetailView

MODES = ("random", "lowest", "filtered")


def agreement_table(rows: list[dict]) -> Table | Text:
    if not rows:
        return Text("no scores to compare ratings with yet", "dim")
    table = Table(box=None, header_style="bold", pad_edge=False, title="ratings vs scorers", title_justify="left")
    for col in ("scorer", "metric", "rated", "mean if correct", "partly", "wrong", "Spearman ρ"):
        table.add_column(col)
    for r in rows:
        m = r["mean_by_rating"]
        cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(
            Text(printable(r["scorer"])),
            r["metric"],
            str(r["n"]),
            cell(m["correct"]),
            cell(m["partly"]),
            cell(m["wrong"]),
            cell(r["spearman"]),
        )
    return table


class AuditPane(Vertical, can_focus=True):
    BINDINGS = [
        Binding("c", "rate('correct')", "correct"),
        Binding("p", "rate('partly')", "partly"),
        Binding("w", "rate('wrong')", "wrong"),
        Binding("f", "flag", "flag"),
        Binding("o", "edit('explanation')", "own explanation"),
        Binding("n", "edit('note')", "note"),
        Binding("right,bracketright", "step(1)", "next"),
        Binding("left,bracketleft", "step(-1)", "previous"),
        Binding("m", "mode", "queue"),
    ]
    DEFAULT_CSS = """
    AuditPane { padding: 0 1; }
    AuditPane .a-head { height: auto; }
    AuditPane .a-agree { height: auto; margin-bottom: 1; }
    AuditPane Input { display: none; }
    AuditPane Input.editing { display: block; }
    AuditPane LatentDetailView { height: 1fr; }
    """

    def __init__(self, browser: Browser, db_path: str, mono: bool, filtered, **kw) -> None:
        super().__init__(**kw)
        self.browser = browser  # read on the UI thread only (the app gives the pane its UI-thread Browser)
        self.db_path = db_path
        self.mono = mono
        self.filtered = filtered  # () -> the browser's current order, for the "filtered" queue
        self.mode = "random"
        self.queue: list[int] = []
        self.pos = 0
        self.explainer = "default"
        self.editing: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="a-head")
        yield Static("", classes="a-agree")
        yield Input(placeholder="", classes="a-input")
        yield LatentDetailView(self.mono, classes="a-detail")

    def reload(self, explainer: str) -> None:
        self.explainer = explainer
        scorers = self.browser.scorers()
        scorer = next(iter(scorers), None)
        mode = self.mode if (self.mode != "lowest" or scorer) else "random"
        self.queue = self.browser.audit_queue(
            mode,
            explainer,
            scorer=scorer,
            metric=scorers.get(scorer, "balanced_accuracy"),
            filtered=self.filtered() if mode == "filtered" else None,
        )
        self.pos = 0
        self.show_current()

    @property
    def latent(self) -> int | None:
        return self.queue[self.pos] if 0 <= self.pos < len(self.queue) else None

    def show_current(self) -> None:
        view = self.query_one(LatentDetailView)
        n_rated = self.browser.rated_count(self.explainer)
        head = Text()
        head.append("audit ", "bold")
        head.append(
            f"queue: {self.mode}   {self.pos + 1 if self.queue else 0}/{len(self.queue)}   rated: {n_rated}"
            f"   explainer: {self.explainer}\n"
        )
        head.append("c correct · p partly · w wrong · f flag · o your explanation · n note · ←/→ move · m queue", "dim")
        self.query_one(".a-head", Static).update(head)
        self.query_one(".a-agree", Static).update(agreement_table(self.browser.agreement(self.explainer)))
        if self.latent is None:
            view.show_message(
                "nothing to audit: no latent has an explanation yet"
                if self.mode != "filtered"
                else "nothing to audit: the latent browser's filter holds no explained latent"
            )
            return
        view.show(self.browser.detail(self.latent))

    def _write(self, **changes) -> None:
        if self.latent is None:
            return
        seen = self.browser.explanation_text(self.latent, self.explainer)
        write_audit(self.db_path, self.latent, self.explainer, seen, **changes)

    def action_rate(self, rating: str) -> None:
        self._write(rating=rating)
        self.app.notify(f"latent {self.latent}: {rating}")
        self.action_step(1)

    def action_flag(self) -> None:
        detail = self.query_one(LatentDetailView).detail
        flagged = bool(detail and detail.audit and detail.audit["flagged"])
        self._write(flagged=0 if flagged else 1)
        self.show_current()

    def action_edit(self, field: str) -> None:
        if self.latent is None:
            return
        self.editing = field
        box = self.query_one(Input)
        detail = self.query_one(LatentDetailView).detail
        box.value = (detail.audit or {}).get(field) or "" if detail else ""
        box.placeholder = (
            f"{'your explanation' if field == 'explanation' else 'note'} for latent {self.latent}"
            " (enter saves, escape cancels)"
        )
        box.add_class("editing")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.editing:
            self._write(**{self.editing: event.value.strip() or None})
        self._close_editor()
        self.show_current()

    def key_escape(self) -> None:
        if self.editing:
            self._close_editor()

    def _close_editor(self) -> None:
        self.editing = None
        self.query_one(Input).remove_class("editing")
        self.focus()

    def action_step(self, step: int) -> None:
        if self.queue:
            self.pos = max(0, min(len(self.queue) - 1, self.pos + step))
        self.show_current()

    def action_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self.reload(self.explainer)
