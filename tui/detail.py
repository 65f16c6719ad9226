"""One latent in full: explanations, per-scorer metrics beside the random control, recall per decile, the
activation histogram, logit-lens tokens, decoder neighbours (jumpable) and examples by decile as heatmaps."""

from __future__ import annotations

from pathlib import Path

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

from autointerp.store.browse import METRICS, PRIMARY_METRIC, LatentDetail
from autointerp.store.text import printable

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


def scores_table(detail: LatentDetail) -> Text:
    """Fixed-width columns in one Text (a rich Table costs ~20 ms per latent to measure and render)."""
    if not detail.scores:
        return Text("not scored yet\n", style="italic")
    text = Text()
    text.append(
        f"{'explainer':<10} {'scorer':<12} {'metric':<17} {'score':>6} {'control':>7} {'n':>4} {'failed':>6}"
        "  recall by decile (1→10)\n",
        "bold",
    )
    for entry in detail.scores:
        real, control = entry.get("real") or {}, entry.get("control") or {}
        metric = PRIMARY_METRIC.get(entry["scorer"], "balanced_accuracy")
        if real.get(metric) is None and control.get(metric) is None:
            metric = "auroc"
        first = True
        for m in (metric, *[x for x in METRICS if x != metric]):
            if real.get(m) is None and control.get(m) is None:
                continue
            rec = real.get("recall_per_decile") if first else None
            text.append(
                f"{lit(entry['explainer']) if first else '':<10.10} {lit(entry['scorer']) if first else '':<12.12} {m:<17}"
                f" {_fmt(real.get(m)):>6} {_fmt(control.get(m)):>7}"
                f" {(str(real.get('n_scored') or real.get('n_auroc') or 0) if real else '-') if first else '':>4}"
                f" {str(real.get('n_failed', '-')) if first else '':>6}  {bars(rec, 1.0) if rec else ''}\n"
            )
            first = False
        for line in details_lines(entry["scorer"], real.get("details") or {}):
            text.append(f"{'':<23} {lit(line)}\n", "dim")
    return text


def details_lines(scorer: str, d: dict) -> list[str]:
    """What a scorer stores beside its metrics, one short line each (the real explanation's row)."""
    if scorer == "intervention":
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
    if scorer == "simulation" and d:
        return [
            f"per-example r {_fmt(d.get('mean_example_correlation'))} over {d.get('n_example_correlations', 0)}"
            f" excerpts, pooled over {d.get('n_tokens', 0)} tokens"
        ]
    if scorer == "intruder" and d.get("chance"):
        return [f"chance {d['chance']:.2f} ({d.get('group', '?')} excerpts per group)"]
    if scorer == "generation" and d.get("texts") is not None:
        fired = sum(1 for t in d["texts"] if (t.get("max_act") or 0) > 0)
        return [f"{fired} of {len(d['texts'])} written texts fired the latent"]
    if scorer == "surprisal" and d.get("base_model"):
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


def lens_text(detail: LatentDetail) -> Text:
    text = Text()
    if not detail.promoted and not detail.suppressed:
        text.append("logit lens: not computed (run `autointerp annotate DB`)", "dim")
        return text
    for label, pairs in (("promotes", detail.promoted), ("suppresses", detail.suppressed)):
        text.append(f"{label}: ", "bold")
        for tok, value in pairs:
            text.append(visible(tok), "reverse")
            text.append(f" {value:+.2f}  ", "dim")
        text.append("\n")
    return text


def examples_renderable(detail: LatentDetail, mono: bool):
    if not detail.groups:
        return Text("no activating examples in the cache for this latent", style="italic")
    scale = detail.stats["max_act"] if detail.stats else max(w.max_act for g in detail.groups for w in g.windows)
    parts = [legend(mono)]
    if not detail.has_vocab:
        parts.append(Text("token ids shown: this file has no vocabulary (run `autointerp annotate DB`)", "dim"))
    for g in detail.groups:
        parts.append(Text(f"decile {g.decile}  ({g.low:.2f} – {g.high:.2f})", "bold"))
        for w, role in zip(g.windows, g.roles):
            head = Text(f" {w.max_act:6.2f} ", "dim")
            mark = {"explain": "E", "activating": "S", "non_activating": "N"}.get(role, " ")
            head.append(f"{mark} ", "bold")
            parts.append(head + heat_text(detail.token_text(w.tokens), w.acts, scale, mono))
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


def detail_renderable(detail: LatentDetail, mono: bool) -> Group:
    return Group(
        stats_text(detail),
        Text(),
        explanations_text(detail),
        scores_table(detail),
        Text(),
        lens_text(detail),
        neighbours_text(detail),
        *([similar_text(detail.similar)] if detail.similar else []),  # unmatched files render as before
        examples_renderable(detail, mono),
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
    line API: switching latents then costs one rich render, not a relayout of many auto-height widgets."""

    BINDINGS = [
        Binding("n", "neighbours", "neighbours"),
        Binding("up,k", "scroll_up", show=False),
        Binding("down,j", "scroll_down", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
    ]
    DEFAULT_CSS = "LatentDetailView { height: 1fr; padding: 0 1; }"

    class Jump(Message):
        def __init__(self, latent: int) -> None:
            super().__init__()
            self.latent = latent

    def __init__(self, mono: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.mono = mono
        self.detail: LatentDetail | None = None
        self._renderable = Text("select a latent")
        self._lines: list[Strip] = []
        self._width = 0
        self._base_style = None

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

    def show(self, detail: LatentDetail) -> None:
        self.detail = detail
        self._set(detail_renderable(detail, self.mono))

    def show_message(self, message: str) -> None:
        self.detail = None
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

    def action_neighbours(self) -> None:
        if self.detail and self.detail.neighbours:
            self.app.push_screen(NeighbourPicker(self.detail), self._picked)
        else:
            self.app.notify("no decoder neighbours recorded for this latent")

    def _picked(self, latent: int | None) -> None:
        if latent is not None:
            self.post_message(self.Jump(latent))
