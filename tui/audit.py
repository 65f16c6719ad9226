"""Audit mode: walk a queue of explained latents, rate each explanation, write your own and a note, flag it.

Ratings go to the `audits` table (store/audits.py) under the rater's name (`--rater`), with time stamps; the
agreement between ratings and each scorer's metric, and between raters, is shown as you go.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from autointerp.store.audits import default_rater, read_kept_probes, write_audit
from autointerp.store.browse import Browser
from autointerp.store.text import printable

from .detail import LatentDetailView
from .heatmap import heat_text

MODES = ("random", "lowest", "filtered")


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def agreement_table(rows: list[dict], mine: list[dict] | None = None) -> Table | Text:
    """Per scorer: the mean metric per rating and Spearman's rho, pooled over raters (each latent's mean rating),
    and the current rater's own rho beside it when `mine` is given."""
    if not rows:
        return Text("no scores to compare ratings with yet", "dim")
    own = {r["scorer"]: r for r in mine or []}
    table = Table(box=None, header_style="bold", pad_edge=False, title="ratings vs scorers", title_justify="left")
    cols = ["scorer", "metric", "rated", "mean if correct", "partly", "wrong", "Spearman ρ"]
    for col in cols + (["ρ yours"] if mine is not None else []):
        table.add_column(col)
    for r in rows:
        m = r["mean_by_rating"]
        cells = [Text(printable(r["scorer"])), r["metric"], str(r["n"])]
        cells += [_cell(m["correct"]), _cell(m["partly"]), _cell(m["wrong"]), _cell(r["spearman"])]
        if mine is not None:
            cells.append(_cell((own.get(r["scorer"]) or {}).get("spearman")))
        table.add_row(*cells)
    return table


def rater_table(result: dict) -> Table | Text:
    """Agreement between raters: per pair the latents both rated, the share rated alike and unweighted Cohen's
    kappa; Krippendorff's alpha (ordinal) over all of them below."""
    raters = result["raters"]
    if not raters:
        return Text("no ratings yet", "dim")
    counts = ", ".join(f"{printable(r['rater'])} {r['rated']}" for r in raters)
    if len(raters) == 1:
        return Text(f"one rater so far ({counts}): no agreement between raters yet", "dim")
    table = Table(
        box=None, header_style="bold", pad_edge=False, title="between raters", title_justify="left", min_width=44
    )  # wide enough for its caption (a caption wraps at the table's width)
    for col in ("raters", "both rated", "agree", "κ"):
        table.add_column(col)
    for p in result["pairs"]:
        table.add_row(
            Text(f"{printable(p['a'])} – {printable(p['b'])}"), str(p["n"]), _cell(p["agree"]), _cell(p["kappa"])
        )
    table.caption = (
        f"rated: {counts}\nKrippendorff α (ordinal) {_cell(result['alpha'])}, {result['alpha_n']} latents\n"
        "κ: Cohen's, unweighted"
    )
    table.caption_justify = "left"
    return table


def probes_text(probes: list[dict], mono: bool) -> Text:
    """The sentences raters kept on this latent from the probe tab, each heat-mapped by the latent's activation."""
    if not probes:
        return Text("")
    text = Text(f"kept probes ({len(probes)}):\n", "bold")
    for p in probes:
        text.append(f"{printable(p['rater'])} · max {p['max_activation'] or 0:.3f} · ", "dim")
        text.append_text(heat_text(p["tokens"], p["activations"], p["max_activation"] or 0.0, mono))
        text.append("\n")
    return text


class AuditPane(Vertical, can_focus=True):
    BINDINGS = [
        Binding("c", "rate('correct')", "correct"),
        Binding("p", "rate('partly')", "partly"),
        Binding("w", "rate('wrong')", "wrong"),
        Binding("f", "flag", "flag"),
        Binding("o", "edit('explanation')", "own explanation"),
        Binding("n", "edit('note')", "note"),
        Binding("right,right_square_bracket", "step(1)", "next"),
        Binding("left,left_square_bracket", "step(-1)", "previous"),
        Binding("m", "mode", "queue"),
    ]
    DEFAULT_CSS = """
    AuditPane { padding: 0 1; }
    AuditPane .a-head { height: auto; }
    AuditPane .a-agree { height: auto; margin-bottom: 1; }
    AuditPane .a-probes { height: auto; max-height: 8; }
    AuditPane Input { display: none; }
    AuditPane Input.editing { display: block; }
    AuditPane LatentDetailView { height: 1fr; }
    """

    def __init__(self, browser: Browser, db_path: str, mono: bool, filtered, rater: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.rater = rater or default_rater()  # every rating this pane writes is under this name
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
        yield Static("", classes="a-probes")
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
            rater=self.rater,
        )
        self.pos = 0
        self.show_current()

    @property
    def latent(self) -> int | None:
        return self.queue[self.pos] if 0 <= self.pos < len(self.queue) else None

    def show_current(self) -> None:
        view = self.query_one(LatentDetailView)
        n_mine = self.browser.rated_count(self.explainer, self.rater)
        n_rated = self.browser.rated_count(self.explainer)
        head = Text()
        head.append("audit ", "bold")
        head.append("rater: ")
        head.append(printable(self.rater), "bold")
        head.append(
            f"   queue: {self.mode}   {self.pos + 1 if self.queue else 0}/{len(self.queue)}"
            f"   rated by you: {n_mine} (by anyone: {n_rated})   explainer: {printable(self.explainer)}\n"
        )
        head.append("c correct · p partly · w wrong · f flag · o your explanation · n note · ←/→ move · m queue", "dim")
        self.query_one(".a-head", Static).update(head)
        grid = Table.grid(padding=(0, 4))
        grid.add_row(
            agreement_table(self.browser.agreement(self.explainer), self.browser.agreement(self.explainer, self.rater)),
            rater_table(self.browser.rater_agreement(self.explainer)),
        )
        self.query_one(".a-agree", Static).update(grid)
        kept = read_kept_probes(self.db_path, self.latent) if self.latent is not None else []
        self.query_one(".a-probes", Static).update(probes_text(kept, self.mono))
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
        write_audit(self.db_path, self.latent, self.explainer, seen, rater=self.rater, **changes)

    def action_rate(self, rating: str) -> None:
        self._write(rating=rating)
        self.app.notify(f"latent {self.latent}: {rating}")
        self.action_step(1)

    def action_flag(self) -> None:
        detail = self.query_one(LatentDetailView).detail
        mine = detail.audit_of(self.rater, self.explainer) if detail else None
        flagged = bool(mine and mine["flagged"])
        self._write(flagged=0 if flagged else 1)
        self.show_current()

    def action_edit(self, field: str) -> None:
        if self.latent is None:
            return
        self.editing = field
        box = self.query_one(Input)
        detail = self.query_one(LatentDetailView).detail
        mine = detail.audit_of(self.rater, self.explainer) if detail else None
        box.value = (mine or {}).get(field) or ""
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
