"""One latent in full: explanations, per-scorer metrics beside the random control, recall per decile, the
activation histogram, logit-lens tokens, decoder neighbours (jumpable) and examples by decile as heatmaps."""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

from rich.cells import set_cell_size
from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.scorer_meta import METRICS, shown_metric
from autointerp.store.text import printable
from autointerp.store.views import LatentDetail

from .evidence import ValuesScreen, ValuesWindow, evidence_text
from .heatmap import heat_text, legend, visible

# Everything the database holds is shown literally: control characters spelled out (store/text.py), and put into
# rich Text by `append`, which never parses markup.
lit = printable

BLOCKS = " ▁▂▃▄▅▆▇█"


def bars(values: list[float | None], top: float | None = None) -> str:
    """A one-line bar chart; '·' where a value is missing."""
    known = [v for v in values if v is not None]
    top = top if top is not None else (max(known) if known else 0)
    out = []
    for v in values:
        if v is None:
            out.append("·")
        else:
            out.append(BLOCKS[min(8, int(round(8 * v / top)))] if top > 0 else BLOCKS[0])
    return "".join(out)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


# Metric names short enough that the table's header stays on one line in an 80-column pane; the legend under the
# table spells out the ones that are not plain.
METRIC_ABBREV = {
    "balanced_accuracy": "bal.acc",
    "accuracy": "acc",
    "precision": "prec",
    "recall": "recall",
    "f1": "f1",
    "auroc": "auroc",
    "correlation": "corr",
}
# Two short lines: each fits an 80-column pane, so the legend never wraps mid-entry.
SCORES_LEGEND = (
    "bal.acc balanced accuracy · acc accuracy · prec precision\ncorr correlation · ctrl a random latent's explanation"
)


def scores_table(detail: LatentDetail) -> Text:
    """Fixed-width columns in one Text (a rich Table costs ~20 ms per latent to measure and render): 67 columns,
    so the header is one line in an 80-column pane (less its padding and scrollbar)."""
    if not detail.scores:
        return Text("not scored yet\n", style="italic")
    text = Text()
    text.append(
        f"{'explainer':<9} {'scorer':<12} {'metric':<7} {'score':>6} {'ctrl':>6} {'n':>4} {'fail':>4}  recall 1→10\n",
        "bold",
    )
    for entry in detail.scores:
        real, control = entry.get("real") or {}, entry.get("control") or {}
        metric = shown_metric(entry["meta"], real, control)
        first = True
        for m in (metric, *[x for x in METRICS if x != metric]):
            if real.get(m) is None and control.get(m) is None:
                continue
            rec = real.get("recall_per_decile") if first else None
            text.append(
                f"{lit(entry['explainer']) if first else '':<9.9} {lit(entry['scorer']) if first else '':<12.12}"
                f" {METRIC_ABBREV.get(m, m):<7.7} {_fmt(real.get(m)):>6} {_fmt(control.get(m)):>6}"
                f" {(str(real.get('n_scored') or real.get('n_auroc') or 0) if real else '-') if first else '':>4}"
                f" {str(real.get('n_failed', '-')) if first else '':>4}  {bars(rec, 1.0) if rec else ''}\n"
            )
            first = False
            if _ci(real, m) or _ci(control, m):  # the 95% intervals under the values (none: scored before schema 13)
                text.append(f"{'':<22} {'95% ci':<7.7} {_ci(real, m):<13} {_ci(control, m)}\n", "dim")
        for line in details_lines(entry["meta"].evidence, real.get("details") or {}):
            text.append(f"{'':<10} {lit(line)}\n", "dim")
    text.append(SCORES_LEGEND + "\n", "dim")
    return text


def _ci(row: dict, metric: str) -> str:
    """A row's 95% interval of one metric, "[0.71, 0.90]" ("" where it has none)."""
    iv = (row.get("ci") or {}).get(metric)
    return f"[{iv[0]:.2f}, {iv[1]:.2f}]" if iv else ""


def details_lines(evidence: str, d: dict) -> list[str]:
    """What a scorer stores beside its metrics, one short line each (the real explanation's row), by the kind of
    evidence the scorer recorded (store/scorer_meta.py EVIDENCE)."""
    if evidence == "steering":
        lines = []
        for t in d.get("per_target", []):
            if t.get("strength") is None:
                lines.append(f"KL {t['target']:g}: not reached ({t.get('error') or 'no strength found'})")
            else:
                lines.append(
                    f"KL {t['target']:g}: strength {t['strength']:.3g}, accuracy {_fmt(t.get('accuracy'))},"
                    f" AUROC {_fmt(t.get('auroc'))}, n {t.get('n', 0) - t.get('n_failed', 0)},"
                    f" identical pairs {t.get('identical', 0)}"
                )
        return lines
    if evidence == "predictions" and d:
        return [
            f"per-example r {_fmt(d.get('mean_example_correlation'))} over {d.get('n_example_correlations', 0)}"
            f" excerpts, pooled over {d.get('n_tokens', 0)} tokens"
        ]
    if evidence == "groups" and d.get("chance"):
        return [f"chance {d['chance']:.2f} ({d.get('group', '?')} excerpts per group)"]
    if evidence == "texts" and d.get("texts") is not None:
        fired = sum(1 for t in d["texts"] if (t.get("max_act") or 0) > 0)
        return [f"{fired} of {len(d['texts'])} written texts fired the latent"]
    if d.get("base_model"):  # a scorer that ran a base model (surprisal) names it
        return [f"base model {d['base_model']}"]
    return []


def explanations_text(detail: LatentDetail) -> Text:
    text = Text()
    if not detail.explanations:
        text.append("no explanation yet", "italic")
    for e in detail.explanations:
        text.append(f"{lit(e['explainer'])}: ", "bold")
        if e["text"] is not None:
            text.append(visible(e["text"]).replace("↵", "\n"))
        else:
            text.append(f"failed: {lit(e['error'])}", "italic")
        text.append(f"   ({lit(e['model'])}, {e['n_examples']} examples)\n", "dim")
    text.append_text(candidates_text(detail.candidates))
    text.append_text(audits_text(detail.audits))
    return text


def candidates_text(candidates: list[dict]) -> Text:
    """Best-of-N: each draw with its pick score (on the explainer's own examples), the kept one marked."""
    text = Text()
    for explainer in dict.fromkeys(c["explainer"] for c in candidates):
        rows = [c for c in candidates if c["explainer"] == explainer]
        text.append(f"{len(rows)} candidates ({lit(explainer)}), picked by {lit(rows[0]['scorer'])} on the", "dim")
        text.append(" explainer's examples:\n", "dim")
        for c in rows:
            score = "   -  " if c["score"] is None else f"{c['score']:.3f}"
            text.append(f" {'*' if c['chosen'] else ' '} #{c['idx']} {score}  ", "bold" if c["chosen"] else "dim")
            text.append(visible(c["text"]) if c["text"] is not None else f"failed: {lit(c['error'])}")
            text.append("\n")
    return text


def filters_text(f: dict | None) -> Text:
    """What the cache's heuristics say of the latent: positional, and unigram (candidate, verified or not)."""
    text = Text()
    if f is None:
        return text
    text.append("filters: ", "bold")
    mi = f["positional_mi"]
    text.append(("POSITIONAL" if f["positional"] else "not positional") + ("" if mi is None else f" (MI {mi:.3f})"))
    text.append(" · ")
    if not f["unigram_candidate"]:
        text.append(f"not unigram ({f['top_tokens']} distinct top tokens)")
    else:
        verdict = {None: "unigram candidate, not verified", 1: "UNIGRAM", 0: "unigram candidate, rejected"}
        text.append(verdict.get(f["unigram"], "unigram candidate"))
        if f["unigram_fire"] is not None:
            text.append(f" (fires in {f['unigram_fire']:.0%} of scrambled contexts)")
        shown = ", ".join(f"{visible(t)}×{n}" for t, n in f["unigram_tokens"][:6])
        text.append(f": {shown}", "dim")
    text.append("\n")
    return text


def audits_text(audits: list[dict]) -> Text:
    """Every rater's rating on one line per explainer ("ana: correct · bo: wrong"), then their own explanations and
    notes, each under the rater's name."""
    text = Text()
    explainers = list(dict.fromkeys(a["explainer"] for a in audits))
    for explainer in explainers:
        rows = [a for a in audits if a["explainer"] == explainer]
        text.append("audit: " if len(explainers) == 1 else f"audit ({lit(explainer)}): ", "bold")
        for i, a in enumerate(rows):
            text.append(" · " if i else "")
            text.append(f"{lit(a['rater'])}: {lit(a['rating'] or 'not rated')}{' FLAGGED' if a['flagged'] else ''}")
        for a in rows:
            for field in ("explanation", "note"):
                if a[field]:
                    text.append(f"\n  {lit(a['rater'])}'s {field}: ")
                    text.append(lit(a[field]))
        text.append("\n")
    return text


def stats_text(detail: LatentDetail) -> Text:
    s = detail.stats
    text = Text()
    text.append(f"latent {detail.latent}", "bold")
    if s is None:
        text.append("   no statistics (not in the cache)")
        return text
    text.append(
        f"   fires on {s['count']} tokens (frequency {s['frequency']:.2e}), {s['n_windows']} windows,"
        f" max {s['max_act']:.2f}, mean {s['mean_act']:.2f}"
    )
    counts = s.get("hist_counts") or []
    edges = s.get("hist_edges") or []
    if counts:
        text.append(f"\nhistogram {edges[0]:.2f} {bars(counts)} {edges[-1]:.2f}  (max bin {max(counts)})")
    if detail.filters is not None:
        text.append("\n")
        text.append_text(filters_text(detail.filters))
        text.rstrip()
    return text


LENS_TOKEN = 16  # cells per token in the logit-lens table: two columns of token + value fit in 51 cells


def lens_table(detail: LatentDetail) -> Text:
    """Logit-lens tokens as two columns, promoted | suppressed, each token with its value, one pair per row."""
    text = Text()
    if not detail.promoted and not detail.suppressed:
        text.append("logit lens: not computed (run `autointerp annotate DB`)\n", "dim")
        return text
    text.append(f"{'promotes':<{LENS_TOKEN + 7}} │ suppresses\n", "bold")
    for p, s in zip_longest(detail.promoted, detail.suppressed):
        for i, pair in enumerate((p, s)):
            if i:
                text.append(" │ ")
            if pair is None:
                text.append(" " * (LENS_TOKEN + 7))
                continue
            tok, value = pair
            text.append(set_cell_size(visible(tok), LENS_TOKEN), "reverse")
            text.append(f" {value:+6.2f}", "dim")
        text.append("\n")
    return text


def latent_scale(detail: LatentDetail) -> float:
    """The latent's max activation: what heat is relative to unless each window is its own scale."""
    if detail.stats:
        return float(detail.stats["max_act"])
    return max((w.max_act for g in detail.groups for w in g.windows), default=0.0)


def examples_renderable(detail: LatentDetail, mono: bool, per_window: bool = False):
    if not detail.groups:
        return Text("no activating examples in the cache for this latent", style="italic")
    scale = latent_scale(detail)
    parts = [legend(mono, per_window)]
    if not detail.has_vocab:
        parts.append(Text("token ids shown: this file has no vocabulary (run `autointerp annotate DB`)", "dim"))
    for g in detail.groups:
        parts.append(Text(f"decile {g.decile}  ({g.low:.2f} – {g.high:.2f})", "bold"))
        for w, role in zip(g.windows, g.roles):
            head = Text(f" {w.max_act:6.2f} ", "dim")
            mark = {"explain": "E", "activating": "S", "non_activating": "N"}.get(role, " ")
            head.append(f"{mark} ", "bold")
            parts.append(
                head + heat_text(detail.token_text(w.tokens), w.acts, w.max_act if per_window else scale, mono)
            )
    parts.append(Text("E: shown to the explainer   S: held out for the scorers", "dim"))
    return Group(*parts)


def neighbours_text(detail: LatentDetail) -> Text:
    text = Text()
    if not detail.neighbours:
        return text
    text.append("decoder neighbours", "bold")
    text.append("  (press n to jump)\n", "dim")
    for latent, cos, expl in detail.neighbours:
        text.append(f"{latent:>7}  cos {cos:+.3f}  ")
        text.append(visible((expl or "not explained").split("\n")[0])[:100] + "\n", "dim")
    return text


def similar_text(s: dict) -> Text:
    """The latent's partners in another database (the newest `autointerp similarity` run)."""
    text = Text()
    text.append("similar latents in ", "bold")
    text.append(lit(Path(s["other_path"]).name), "bold")
    text.append(f"  (similarity run {s['run']}, explanations by {lit(s['other_explainer'])})\n", "dim")
    text.append(f"  best     {s['best']:>7}  similarity {s['best_similarity']:.3f}\n")
    if s["match"] is None:
        text.append("  matched        -  (left unmatched by the one-to-one matching)\n", "dim")
    else:
        text.append(f"  matched  {s['match']:>7}  similarity {s['match_similarity']:.3f}")
        if s["decoder_cosine"] is not None:
            text.append(f"  decoder cos {s['decoder_cosine']:+.3f}")
        text.append("\n")
    return text


def detail_renderable(
    detail: LatentDetail, mono: bool, per_window: bool = False, evidence: Text | None = None
) -> Group:
    return Group(
        stats_text(detail),
        Text(),
        explanations_text(detail),
        scores_table(detail),
        *([Text(), evidence] if evidence is not None else []),  # read only when asked (key e)
        Text(),
        lens_table(detail),
        neighbours_text(detail),
        *([similar_text(detail.similar)] if detail.similar else []),  # unmatched files render as before
        examples_renderable(detail, mono, per_window),
    )


class NeighbourPicker(ModalScreen[int | None]):
    """The shown latent's decoder neighbours; enter jumps to one, escape closes."""

    BINDINGS = [Binding("escape,n,q", "dismiss_none", "close")]
    DEFAULT_CSS = """
    NeighbourPicker { align: center middle; }
    NeighbourPicker > OptionList { width: 90; height: auto; max-height: 16; border: round $accent; }
    """

    def __init__(self, detail: LatentDetail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        options = []
        for latent, cos, expl in self.detail.neighbours:
            label = Text(f"{latent:>7}  cos {cos:+.3f}  ")
            label.append(visible((expl or "not explained").split("\n")[0])[:70], "dim")
            options.append(Option(label, id=str(latent)))
        picker = OptionList(*options)
        picker.border_title = f"neighbours of latent {self.detail.latent} (enter jumps, escape closes)"
        yield picker

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))  # every option is made with its latent as id

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class LatentDetailView(ScrollView, can_focus=True):
    """Shows one LatentDetail. The whole detail is rendered to lines once per latent and served through the
    line API: switching latents then costs one rich render, not a relayout of many auto-height widgets.

    e steps through the scorers' evidence (read only when asked: ~1-2 ms per scorer, on the UI thread's Browser),
    h toggles the heat scale (the latent's max or each window's own), v shows exact activation values."""

    BINDINGS = [
        Binding("n", "neighbours", "neighbours"),
        Binding("e", "evidence", "evidence"),
        Binding("h", "window_scale", "heat scale"),
        Binding("v", "values", "values"),
        Binding("up,k", "scroll_up", show=False),
        Binding("down,j", "scroll_down", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
    ]
    # The scrollbar's gutter is always kept: lines are wrapped to the width left beside it, so none is clipped
    # when a long detail brings the scrollbar in after the lines were laid out.
    DEFAULT_CSS = "LatentDetailView { height: 1fr; padding: 0 1; scrollbar-gutter: stable; }"

    class Jump(Message):
        def __init__(self, latent: int) -> None:
            super().__init__()
            self.latent = latent

    class EvidenceShown(Message):
        """The evidence on screen was opened, stepped, re-read or closed (None): the app watches its score rows."""

        def __init__(self, view: "LatentDetailView", evidence: ScorerEvidence | None) -> None:
            super().__init__()
            self.view, self.evidence = view, evidence

        @property
        def control(self) -> "LatentDetailView":
            return self.view

    def __init__(self, mono: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.mono = mono
        self.detail: LatentDetail | None = None
        self._renderable = Text("select a latent")
        self._lines: list[Strip] = []
        self._width = 0
        self._base_style = None
        self.per_window = False  # heat relative to each window's own max, not the latent's
        self.evidence_at: int | None = None  # which scorer's evidence is shown (index into `evidence_keys`)
        self.evidence: ScorerEvidence | None = None
        self._section: Text | None = None  # the evidence section as last drawn (a re-read is compared with it)

    def _layout_lines(self) -> None:
        width = max(20, self.scrollable_content_region.width)
        console = self.app.console
        options = console.options.update_width(width)
        lines = console.render_lines(self._renderable, options, pad=False)
        self._lines = [Strip(line).simplify() for line in lines]
        self._width = width
        self.virtual_size = Size(width, len(self._lines))

    def _set(self, renderable) -> None:
        self._renderable = renderable
        self._layout_lines()
        self.scroll_to(y=0, animate=False)
        self.refresh()

    def show(self, detail: LatentDetail, keep_scroll: bool = False) -> None:
        """Show `detail`; `keep_scroll` for the same latent re-read (new results landed): the reader stays put."""
        if self.detail is None or detail.latent != self.detail.latent:
            self._set_evidence(None, None)  # a new latent paints without evidence (read on e)
        self.detail = detail
        self._render_detail(keep_scroll=keep_scroll)

    def _set_evidence(self, at: int | None, evidence: ScorerEvidence | None) -> None:
        had = self.evidence
        self.evidence_at, self.evidence = at, evidence
        if had is not None or evidence is not None:
            self.post_message(self.EvidenceShown(self, evidence))

    def update_evidence(self, evidence: ScorerEvidence) -> bool:
        """The open evidence, read again because its score rows were written: redrawn (scroll kept) only if what
        it shows changed; a re-read of other evidence than the one open (the reader moved on) is dropped."""
        shown = self.evidence
        if shown is None or self.detail is None:
            return False
        if (shown.latent, shown.explainer, shown.scorer) != (evidence.latent, evidence.explainer, evidence.scorer):
            return False
        self._set_evidence(self.evidence_at, evidence)  # its new signature is the one watched from now on
        before, after = self._section, self._evidence_section()
        if before is not None and after is not None and (before.plain, before.spans) == (after.plain, after.spans):
            return False
        self._render_detail(keep_scroll=True)
        return True

    def _evidence_section(self) -> Text | None:
        if self.evidence is None or self.detail is None:
            return None
        position = f" {(self.evidence_at or 0) + 1}/{len(self.evidence_keys())}"
        return evidence_text(
            self.evidence,
            self.detail.vocab,
            latent_scale(self.detail),
            per_window=self.per_window,
            mono=self.mono,
            position=position,
        )

    def _render_detail(self, keep_scroll: bool = False) -> None:
        detail = self.detail
        if detail is None:
            return
        section = self._section = self._evidence_section()
        y = self.scroll_offset.y
        self._set(detail_renderable(detail, self.mono, self.per_window, section))
        if keep_scroll:
            self.scroll_to(y=y, animate=False)
        elif section is not None:  # bring the evidence into view
            at = next((i for i, line in enumerate(self._lines) if line.text.startswith("evidence ")), 0)
            self.scroll_to(y=at, animate=False)

    def evidence_keys(self) -> list[tuple[str, str]]:
        """(explainer, scorer) of every real score row of the shown latent, in the scores table's order."""
        return [(e["explainer"], e["scorer"]) for e in (self.detail.scores if self.detail else []) if e.get("real")]

    def show_message(self, message: str) -> None:
        self.detail = None
        self._set_evidence(None, None)
        self._set(Text(message))

    def on_resize(self) -> None:
        if self.scrollable_content_region.width != self._width:
            self._layout_lines()

    def render_lines(self, crop):
        self._base_style = self.rich_style  # once per frame, not per line (it walks the DOM)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if index >= len(self._lines):
            return Strip.blank(width, self._base_style)
        return self._lines[index].extend_cell_length(width, self._base_style).crop(0, width)

    def plain_text(self) -> str:
        """What the view shows, as plain text (tests read it)."""
        return "\n".join(strip.text for strip in self._lines)

    def action_evidence(self) -> None:
        """The next scorer's evidence; after the last one, none."""
        keys = self.evidence_keys()
        if not keys:
            self.app.notify("no scores for this latent: nothing to show evidence of")
            return
        at = 0 if self.evidence_at is None else self.evidence_at + 1
        if at >= len(keys):
            self._set_evidence(None, None)
            self._render_detail()
            return
        browser = getattr(self.app, "browser", None)  # the UI thread's Browser: a read of ~1-2 ms, no worker
        if browser is None or self.detail is None:
            return
        explainer, scorer = keys[at]
        self._set_evidence(at, browser.evidence(self.detail.latent, explainer, scorer))
        self._render_detail()

    def action_window_scale(self) -> None:
        self.per_window = not self.per_window
        self._render_detail(keep_scroll=True)
        self.app.notify("heat: each window's own max" if self.per_window else "heat: the latent's max", timeout=2)

    def values_windows(self) -> list[ValuesWindow]:
        """The windows the pane shows, evidence first when it is shown, for the values modal."""
        detail = self.detail
        out: list[ValuesWindow] = []
        if detail is None:
            return out
        if self.evidence is not None and self.evidence.real is not None:
            for ex in self.evidence.real.examples:
                if ex.tokens is not None and ex.acts is not None:
                    title = f"{self.evidence.scorer}: window {ex.window}, {ex.verdict}"
                    out.append(ValuesWindow(title, detail.token_text(ex.tokens), ex.acts))
        for g in detail.groups:
            for w in g.windows:
                title = f"decile {g.decile}: seq {w.seq} from {w.start}, max {w.max_act:.3f}"
                out.append(ValuesWindow(title, detail.token_text(w.tokens), w.acts))
        return out

    def action_values(self) -> None:
        windows = self.values_windows()
        if windows:
            self.app.push_screen(ValuesScreen(windows))
        else:
            self.app.notify("no windows shown for this latent")

    def action_neighbours(self) -> None:
        if self.detail and self.detail.neighbours:
            self.app.push_screen(NeighbourPicker(self.detail), self._picked)
        else:
            self.app.notify("no decoder neighbours recorded for this latent")

    def _picked(self, latent: int | None) -> None:
        if latent is not None:
            self.post_message(self.Jump(latent))
