"""Why a score is what it is: one scorer's held-out examples with its answer beside the truth (the Browser's
`evidence`, store/evidence.py), and the exact activation values of a window (a modal).

Everything is one rich Text per section, appended literally (corpus text is data, never markup)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from autointerp.store.evidence import VERDICT_ORDER, EvidenceExample, EvidenceSide, ScorerEvidence
from autointerp.store.text import printable
from autointerp.store.views import tokens_as_text

from .heatmap import heat_text, visible

VERDICT_STYLE = {
    "false positive": "bold red",
    "false negative": "bold yellow",
    "true positive": "green",
    "true negative": "dim green",
    "failed": "italic",
    "unlabelled": "",
}
# What a verdict means where "label 1" is not "this excerpt fires", by the scorer's kind of evidence.
EVIDENCE_WORDS = {
    "groups": {"true positive": "intruder named", "false negative": "intruder missed"},
    "texts": {"true positive": "fired", "false negative": "did not fire"},
}
SHORT = {"true positive": "TP", "false positive": "FP", "true negative": "TN", "false negative": "FN"}


@dataclass
class ValuesWindow:
    """One window for the values modal: a title and its tokens with their activations."""

    title: str
    tokens: list[str]
    acts: np.ndarray


def word(evidence: str, verdict: str) -> str:
    return EVIDENCE_WORDS.get(evidence, {}).get(verdict, verdict)


def _where(ex: EvidenceExample) -> str:
    """Where the excerpt came from: activating (its decile) or not, and the sampler's source."""
    kind = f"activating, decile {ex.decile}" if ex.decile > 0 else "non-activating"
    if ex.source:
        kind += f" ({ex.source})"
    elif ex.role is None and ex.window >= 0:
        kind += " (not in the sample set)"
    return kind


def _counts_line(evidence: str, side: EvidenceSide) -> Text:
    counts = side.verdict_counts()
    text = Text()
    parts = [f"{n} {word(evidence, v)}" for v, n in counts.items() if n]
    text.append(" · ".join(parts) or "no examples")
    c = side.counts
    text.append(f"   (row: tp {c['tp']} fp {c['fp']} tn {c['tn']} fn {c['fn']}, failed {c['n_failed']})", "dim")
    return text


def excerpt_text(
    ex: EvidenceExample, vocab: list[str], scale: float, per_window: bool, mono: bool, marks: bool = False
) -> Text:
    """The excerpt heat-mapped; with `marks`, << >> around the tokens fuzzing showed marked (where known), in red
    around a run holding a wrong mark (a token that did not fire)."""
    if ex.tokens is None or ex.acts is None:
        return Text("(window not in the cache)", "dim")
    tokens = tokens_as_text(vocab, ex.tokens)
    s = ex.max_act if per_window else scale
    if not marks or ex.marks is None:
        return heat_text(tokens, ex.acts, s, mono)
    wrong = set(ex.wrong_marks)
    out = Text(no_wrap=False)
    inside, style = False, "bold"
    for i, (tok, value, m) in enumerate(zip(tokens, ex.acts, ex.marks)):
        if m and not inside:
            run = range(i, next((j for j in range(i, len(ex.marks)) if not ex.marks[j]), len(ex.marks)))
            style = "bold red" if wrong.intersection(run) else "bold"
            out.append("<<", style)
        elif not m and inside:
            out.append(">>", style)
        inside = bool(m)
        out.append_text(heat_text([tok], [value], s, mono))
    if inside:
        out.append(">>", style)
    return out


def wrong_marks_text(ex: EvidenceExample, vocab: list[str]) -> Text:
    """Fuzzing: the marks an excerpt had on tokens that did not fire, by position and token (colour-blind and
    NO_COLOR terminals read them here, not only from the red brackets)."""
    text = Text()
    wrong = ex.wrong_marks
    if not wrong or ex.tokens is None:
        return text
    tokens = tokens_as_text(vocab, [ex.tokens[i] for i in wrong])
    text.append(f"  wrong marks ({len(wrong)}, on tokens that did not fire): ", "bold red")
    text.append(", ".join(f"{i} {visible(t)!r}" for i, t in zip(wrong, tokens)))
    text.append("\n")
    return text


def evidence_text(
    ev: ScorerEvidence,
    vocab: list[str],
    scale: float,
    *,
    per_window: bool = False,
    mono: bool = False,
    position: str = "",
) -> Text:
    """The section: header, the explanation, verdict counts (real and control), what is not stored, then every
    example, errors first, each with its verdict, where it came from, the control's verdict on it and its text."""
    kind = ev.meta.evidence  # how this scorer's outcomes render, as recorded when it scored
    text = Text()
    text.append(f"evidence{position}: {printable(ev.scorer)}", "bold reverse")
    text.append(f"  ({printable(ev.explainer)})  e next · h heat scale · v values\n", "dim")
    real, control = ev.real, ev.control
    if real is None:
        text.append("no score row for the real explanation\n", "italic")
        return text
    text.append("explanation: ", "bold")
    text.append(visible(real.explanation or "-") + "\n")
    text.append("scored: ", "bold")
    text.append_text(_counts_line(kind, real))
    text.append("\n")
    if control is not None:
        text.append("control: ", "bold")
        text.append_text(_counts_line(kind, control))
        text.append(f"\n  (latent {control.explanation_latent}'s explanation: ", "dim")
        text.append(visible(control.explanation or "-"), "dim")
        text.append(")\n", "dim")
    for note in real.notes:
        text.append(f"not stored: {note}\n", "italic dim")
    stored_marks = kind == "marks" and any(ex.marked is not None for ex in real.examples)
    if kind == "marks":
        text.append("positive: the scorer said the marks are on the tokens that fire\n", "dim")
        if stored_marks:
            text.append(
                "marks: << >> around the tokens the prompt marked, as stored with the score; red << >> and a"
                " `wrong marks` line where they were on tokens that did not fire\n",
                "dim",
            )
        elif ev.threshold is None:
            text.append("marks: the explanation's threshold is not stored, so no marks are shown\n", "italic dim")
        else:
            text.append(
                f"marks: << >> around the tokens shown marked, recomputed (at or above {ev.threshold:g} x the"
                " window's max) for the correctly marked excerpts\n",
                "dim",
            )
    if kind == "texts":
        return text.append_text(_generation(real))
    if kind == "steering":
        return text  # its prompts and per-target results are in the scores table; outcomes are not windows
    on_control = {(ex.window, ex.label): ex for ex in control.examples} if control is not None else {}
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    for ex in sorted(real.examples, key=lambda e: (order[e.verdict], -e.decile, -e.max_act)):
        text.append(f"{word(kind, ex.verdict):<15}", VERDICT_STYLE.get(ex.verdict, ""))
        text.append(f" {_where(ex)}", "dim")
        if ex.probability is not None and kind != "predictions":
            text.append(f"  p {ex.probability:.2f}", "dim")
        if kind == "predictions" and not ex.failed:
            peak = "-" if ex.probability is None else f"{10 * ex.probability:.1f}"
            text.append(f"  predicted peak {peak}/10, true peak {ex.max_act:.2f}", "dim")
        twin = on_control.get((ex.window, ex.label))
        if twin is not None:
            text.append(f"  control: {SHORT.get(twin.verdict, twin.verdict)}", "dim")
        text.append("\n  ")
        text.append_text(excerpt_text(ex, vocab, scale, per_window, mono, marks=kind == "marks"))
        if kind == "marks" and ex.label == 0 and ex.marked is None:
            text.append("  (marks moved to silent tokens: not stored)", "italic dim")
        text.append("\n")
        if kind == "marks":
            text.append_text(wrong_marks_text(ex, vocab))
        if kind == "predictions" and ex.predicted is not None and ex.tokens is not None:
            # the same tokens heated by the prediction (0-10) under the true activations, token for token
            text.append("  predicted: ", "dim")
            text.append_text(heat_text(tokens_as_text(vocab, ex.tokens), ex.predicted, 10.0, mono))
            text.append("\n")
        if kind == "groups" and ex.group is not None:
            place = ex.group.index(ex.window) + 1 if ex.window in ex.group else "?"
            if ex.named is None:
                named = "no answer"
            elif ex.named == ex.window:
                named = "the intruder"
            else:
                named = f"excerpt {ex.group.index(ex.named) + 1} (window {ex.named}) instead"
            text.append(f"  intruder shown as excerpt {place} of {len(ex.group)}; named: {named}\n", "dim")
    return text


def _generation(side: EvidenceSide) -> Text:
    text = Text()
    for ex in side.examples:
        if ex.failed and ex.text is None:
            text.append("failed          (no text written)\n", "italic")
            continue
        fired = "failed" if ex.failed else ("fired" if ex.prediction else "did not fire")
        peak = "-" if ex.text_peak is None else f"{ex.text_peak:.2f}"
        text.append(f"{fired:<15}", VERDICT_STYLE["true positive" if ex.prediction else "false negative"])
        text.append(f" peak {peak}\n  ", "dim")
        text.append(visible(ex.text or "") + "\n")
    return text


def values_text(w: ValuesWindow) -> Text:
    """token:value, one row per token; fired tokens bold."""
    text = Text()
    text.append(f"{'pos':>4}  {'token':<24} {'value':>9}\n", "bold")
    for i, (tok, value) in enumerate(zip(w.tokens, w.acts)):
        shown = visible(tok)
        shown = shown if len(shown) <= 24 else shown[:23] + "…"
        text.append(f"{i:>4}  {shown:<24} {float(value):>9.4f}\n", "bold" if value > 0 else "dim")
    return text


class ValuesScreen(ModalScreen[None]):
    """Exact activation values of the shown windows, one window at a time: left / right step, escape closes."""

    BINDINGS = [
        Binding("escape,v,q", "dismiss_none", "close"),
        Binding("right,right_square_bracket", "step(1)", "next window"),
        Binding("left,left_square_bracket", "step(-1)", "previous window"),
    ]
    DEFAULT_CSS = """
    ValuesScreen { align: center middle; }
    ValuesScreen > VerticalScroll { width: 50; height: 80%; border: round $accent; }
    """

    def __init__(self, windows: list[ValuesWindow], at: int = 0) -> None:
        super().__init__()
        self.windows = windows
        self.at = at

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="values")

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        found = self.query("#values")
        if not found:  # closed before it finished mounting (a quick v then escape): nothing to fill
            return
        w = self.windows[self.at]
        found.first(Static).update(values_text(w))
        box = self.query_one(VerticalScroll)
        box.border_title = f"{w.title}  ({self.at + 1}/{len(self.windows)}, ←/→)"
        box.scroll_home(animate=False)

    def action_step(self, delta: int) -> None:
        self.at = (self.at + delta) % len(self.windows)
        self._show()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
