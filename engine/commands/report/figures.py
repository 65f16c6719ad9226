"""The report's figures (`autointerp report --html/--png`): matplotlib Figures drawn from one database.

Built for a million latents: every read takes only the columns it draws, as numpy arrays (a packed column from
store/columns.py when it is current, else one ordered scan of the rows) or aggregated in SQL (recall per decile,
failure reasons, tokens), never a Python object per latent held at once. The scatter draws a seeded sample past
MAX_SCATTER_POINTS and says so in its title. Every figure is always drawn: one without data says "none" in its
panel, so the HTML and the PNG folder hold the same figures on every database.

Figures come from `matplotlib.figure.Figure` (no pyplot): no global state, no GUI backend, and PNGs are written
through Agg. matplotlib is imported by this module only, which the CLI imports when a figure is asked for.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from autointerp.store import figure_reads as reads
from autointerp.store.db import ActivationStore
from autointerp.store.report_reads import scorer_names
from autointerp.store.scorer_meta import primary_metrics
from autointerp.store.text import printable

MAX_SCATTER_POINTS = 50_000
SCATTER_SEED = 0
TOP_REASONS = 15  # failure reasons drawn per panel; the rest are summed into one "other reasons" bar
REASON_CHARS = 70  # a failure reason's label is cut to this many characters
WIDTH_IN, PANEL_HEIGHT_IN, DPI = 11.0, 3.4, 100
MAX_COLUMNS = 3
REAL, CONTROL = "explanation", "random control"  # legend labels of the two sides
REAL_COLOUR, CONTROL_COLOUR = "tab:blue", "tab:gray"
# Legends sit at fixed corners: matplotlib's "best" tests every point against each spot (~2 s for 150k points).


def text_label(text: object, limit: int = REASON_CHARS) -> str:
    """Database text as a matplotlib label: control characters spelled out, `$` not read as mathtext, cut short."""
    s = printable(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


class RunData:
    """What the figures read from one database for one explainer, each column read once and kept."""

    def __init__(
        self, store: ActivationStore, explainer: str, usd_per_m_prompt: float = 0.0, usd_per_m_output: float = 0.0
    ) -> None:
        self.store = store
        self.conn = store.db.conn
        self.explainer = explainer
        self.usd_per_m_prompt = float(usd_per_m_prompt or 0.0)
        self.usd_per_m_output = float(usd_per_m_output or 0.0)
        self._scorers: dict[str, str] | None = None
        self._real: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._control: dict[str, np.ndarray] = {}
        self._frequency: tuple[np.ndarray, np.ndarray] | None = None

    def scorers(self) -> dict[str, str]:
        """{scorer: its primary metric} for the explainer's scorers, in name order (as the text report has them)."""
        if self._scorers is None:
            self._scorers = primary_metrics(self.conn, scorer_names(self.conn, self.explainer))
        return self._scorers

    def real(self, scorer: str) -> tuple[np.ndarray, np.ndarray]:
        """(latents, primary metric) of the real explanations' scores, NaN where a latent's metric is undefined."""
        if scorer not in self._real:
            self._real[scorer] = reads.real_metric(self.conn, self.explainer, scorer, self.scorers()[scorer])
        return self._real[scorer]

    def control(self, scorer: str) -> np.ndarray:
        """The primary metric of the random-explanation control's scores (defined values only)."""
        if scorer not in self._control:
            values = reads.control_metric(self.conn, self.explainer, scorer, self.scorers()[scorer])
            self._control[scorer] = values[~np.isnan(values)]
        return self._control[scorer]

    def frequency(self) -> tuple[np.ndarray, np.ndarray]:
        """(latents, firing frequency) of every latent with statistics, ascending by latent."""
        if self._frequency is None:
            self._frequency = reads.frequencies(self.store)
        return self._frequency

    def num_latents(self) -> int:
        """The coder's width (provenance), or the latents with statistics when the file does not say."""
        prov = self.store.provenance
        n = int(prov["num_latents"]) if prov and prov.get("num_latents") else 0
        return max(n, len(self.frequency()[0]))


@dataclass
class Drawn:
    """One figure of the report: its stable name (the PNG's file name), a caption and the Figure."""

    name: str
    caption: str
    figure: Figure


def _grid(n_panels: int, title: str) -> tuple[Figure, list]:
    """A figure of `n_panels` panels (at least one), up to MAX_COLUMNS a row; unused cells hidden."""
    n = max(n_panels, 1)
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(WIDTH_IN, PANEL_HEIGHT_IN * rows + 0.6), dpi=DPI, layout="constrained")
    fig.suptitle(title)
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _none(ax, what: str) -> None:
    """A panel without data says so, instead of being left out silently."""
    ax.text(0.5, 0.5, f"none: {what}", ha="center", va="center", transform=ax.transAxes, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def _metric_range(*arrays: np.ndarray) -> tuple[float, float]:
    """[0, 1] unless a metric leaves it (simulation's correlation reaches -1)."""
    lows = [float(a.min()) for a in arrays if len(a)]
    return (min([0.0, *lows]), 1.0)


# ---- the figures ---------------------------------------------------------------------------------------------


def score_distributions(data: RunData, bins: int = 40) -> Figure:
    """Per scorer, the histogram of its primary metric over latents: real explanations over the control's."""
    scorers = data.scorers()
    fig, axes = _grid(len(scorers), "score distributions: each scorer's primary metric over latents")
    if not scorers:
        _none(axes[0], "no scores")
    for ax, (scorer, metric) in zip(axes, scorers.items()):
        _, real = data.real(scorer)
        real = real[~np.isnan(real)]
        control = data.control(scorer)
        edges = np.linspace(*_metric_range(real, control), bins + 1)
        ax.hist(real, bins=edges, alpha=0.65, color=REAL_COLOUR, label=f"{REAL} (n={len(real):,})")
        ax.hist(control, bins=edges, alpha=0.5, color=CONTROL_COLOUR, label=f"{CONTROL} (n={len(control):,})")
        ax.set_title(f"{text_label(scorer)}: {metric}")
        ax.set_xlabel(metric)
        ax.set_ylabel("latents")
        ax.legend(loc="upper left", fontsize="small")
    return fig


def recall_per_decile_means(data: RunData, scorer: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{control: (mean recall per decile, latents counted per decile)}, deciles 1 (weakest) .. n."""
    return reads.recall_per_decile_means(data.conn, data.explainer, scorer)


def recall_per_decile(data: RunData) -> Figure:
    """Per scorer with recall per decile, the mean recall in each activation decile, real and control."""
    per_scorer = {s: recall_per_decile_means(data, s) for s in data.scorers()}
    with_recall = {s: m for s, m in per_scorer.items() if m}
    without = [s for s, m in per_scorer.items() if not m]
    title = "recall per activation decile (mean over latents; decile 1 = weakest activations)"
    if without and with_recall:
        title += f"\nno recall per decile: {', '.join(text_label(s) for s in without)}"
    fig, axes = _grid(len(with_recall), title)
    if not with_recall:
        _none(axes[0], "no scorer recorded recall per decile")
    for ax, (scorer, sides) in zip(axes, with_recall.items()):
        for side, label, colour in ((0, REAL, REAL_COLOUR), (1, CONTROL, CONTROL_COLOUR)):
            if side in sides:
                means, _ = sides[side]
                ax.plot(np.arange(1, len(means) + 1), means, marker="o", color=colour, label=label)
        ax.set_title(text_label(scorer))
        ax.set_xlabel("activation decile")
        ax.set_ylabel("mean recall")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower left", fontsize="small")
    return fig


def scatter_sample(n: int, limit: int | None = None, seed: int = SCATTER_SEED) -> np.ndarray | None:
    """Indices of a seeded sample of `limit` (default MAX_SCATTER_POINTS) points out of `n`, ascending, or None
    when all `n` are drawn."""
    limit = MAX_SCATTER_POINTS if limit is None else limit
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def score_vs_frequency(data: RunData) -> Figure:
    """Per scorer, its primary metric against log10 firing frequency, with the mean per frequency bin."""
    scorers = data.scorers()
    stat_latents, freq = data.frequency()
    fig, axes = _grid(len(scorers), "score against latent frequency")
    if not scorers:
        _none(axes[0], "no scores")
    for ax, (scorer, metric) in zip(axes, scorers.items()):
        latents, values = data.real(scorer)
        at = np.searchsorted(stat_latents, latents)
        found = (at < len(stat_latents)) & (stat_latents[np.minimum(at, max(len(stat_latents) - 1, 0))] == latents)
        f = np.full(len(latents), np.nan)
        f[found] = freq[at[found]]
        ok = ~np.isnan(values) & (f > 0)
        x, y = np.log10(f[ok]), values[ok]
        ax.set_xlabel("log10 firing frequency")
        ax.set_ylabel(metric)
        if len(x) == 0:
            ax.set_title(f"{text_label(scorer)}: {metric}")
            _none(ax, "no scored latent with a frequency")
            continue
        sample = scatter_sample(len(x))
        shown = f"{len(x):,} latents" if sample is None else f"{len(sample):,} of {len(x):,} latents, seeded sample"
        ax.set_title(f"{text_label(scorer)}: {metric} ({shown})", fontsize="medium")
        sx, sy = (x, y) if sample is None else (x[sample], y[sample])
        ax.scatter(sx, sy, s=4, alpha=0.3, color=REAL_COLOUR, linewidths=0, label="latent")
        # The trend over every latent, not just the sample: mean metric per frequency bin.
        edges = np.linspace(x.min(), x.max() + 1e-9, 21)
        n_bin, _ = np.histogram(x, edges)
        total, _ = np.histogram(x, edges, weights=y)
        has = n_bin > 0
        ax.plot(((edges[:-1] + edges[1:]) / 2)[has], total[has] / n_bin[has], color="tab:red", label="mean per bin")
        control = data.control(scorer)
        if len(control):
            ax.axhline(float(control.mean()), color=CONTROL_COLOUR, linestyle="--", label=f"{CONTROL} mean")
        ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
    return fig


def activation_density(data: RunData, bins: int = 60) -> Figure:
    """How often latents fire: the histogram of log10 firing frequency over every latent; dead ones counted."""
    _, freq = data.frequency()
    alive = freq[freq > 0]
    dead = data.num_latents() - len(alive)
    fig, axes = _grid(1, f"activation density: {len(alive):,} latents that fire, {dead:,} dead (never fired)")
    ax = axes[0]
    if len(alive) == 0:
        _none(ax, "no latent statistics")
        return fig
    ax.hist(np.log10(alive), bins=bins, color=REAL_COLOUR)
    ax.set_xlabel("log10 firing frequency (activations per token)")
    ax.set_ylabel("latents")
    return fig


def explanation_words(data: RunData) -> np.ndarray:
    """Words (whitespace-separated) of each usable explanation."""
    return reads.explanation_words(data.conn, data.explainer)


def explanation_length(data: RunData) -> Figure:
    words = explanation_words(data)
    fig, axes = _grid(1, "explanation length")
    ax = axes[0]
    if len(words) == 0:
        _none(ax, "no usable explanations")
        return fig
    top = int(words.max())
    ax.hist(words, bins=np.arange(0, top + 2) - 0.5 if top <= 80 else 80, color=REAL_COLOUR)
    ax.set_title(f"{len(words):,} explanations: median {np.median(words):.0f} words, mean {words.mean():.1f}")
    ax.set_xlabel("words")
    ax.set_ylabel("explanations")
    return fig


def failure_reasons(data: RunData) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(failed explanations by reason, failed scorer examples by `scorer: reason`), each largest first."""
    return reads.failure_reasons(data.conn, data.explainer)


def _top(reasons: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if len(reasons) <= TOP_REASONS:
        return reasons
    rest = reasons[TOP_REASONS - 1 :]
    return [*reasons[: TOP_REASONS - 1], (f"{len(rest):,} other reasons", sum(n for _, n in rest))]


def failures(data: RunData) -> Figure:
    """Failed explanations and failed scorer examples, by reason (the largest first)."""
    explain, score = failure_reasons(data)
    panels = (
        ("failed explanations (latents)", explain, "no failed explanations"),
        ("failed scorer examples (examples)", score, "no failed scorer examples"),
    )
    bars = max(len(_top(explain)), len(_top(score)), 4)
    fig = Figure(figsize=(WIDTH_IN, 1.4 + 0.32 * bars), dpi=DPI, layout="constrained")
    fig.suptitle("failures by reason")
    for ax, (title, reasons, empty) in zip(fig.subplots(1, 2), panels):
        total = sum(n for _, n in reasons)
        ax.set_title(f"{title}: {total:,}")
        if not reasons:
            _none(ax, empty)
            continue
        shown = _top(reasons)[::-1]  # barh draws bottom-up: the largest on top
        bars = ax.barh(np.arange(len(shown)), [n for _, n in shown], color="tab:red")
        ax.set_yticks(np.arange(len(shown)), [text_label(r, 45) for r, _ in shown], fontsize="small")
        ax.bar_label(bars, [f"{n:,}" for _, n in shown], fontsize="small", padding=2)
        ax.set_xlabel("count")
    return fig


def stage_tokens(data: RunData) -> list[tuple[str, int, int]]:
    """(stage, prompt tokens, output tokens) summed over batch runs, stages that used an LLM only."""
    return reads.stage_tokens(data.conn)


def tokens_and_dollars(data: RunData) -> Figure:
    """Prompt and output tokens per stage, and what they cost at the report's prices."""
    stages = stage_tokens(data)
    fig = Figure(figsize=(WIDTH_IN, PANEL_HEIGHT_IN + 0.6), dpi=DPI, layout="constrained")
    fig.suptitle("LLM tokens and dollars per stage (summed over batch runs)")
    ax_tokens, ax_usd = fig.subplots(1, 2)
    ax_tokens.set_title("tokens")
    p_usd, o_usd = data.usd_per_m_prompt, data.usd_per_m_output
    priced = bool(p_usd or o_usd)
    # `\$`: a plain dollar sign would start matplotlib's mathtext
    ax_usd.set_title(rf"dollars at \${p_usd:g}/M prompt, \${o_usd:g}/M output tokens" if priced else "dollars")
    if not stages:
        _none(ax_tokens, "no batch run recorded LLM tokens")
        _none(ax_usd, "no batch run recorded LLM tokens" if priced else "no price set")
        return fig
    x = np.arange(len(stages))
    names = [text_label(s, 20) for s, _, _ in stages]
    prompt = np.array([p for _, p, _ in stages], dtype=float)
    output = np.array([o for _, _, o in stages], dtype=float)
    for offset, values, label, colour in ((-0.2, prompt, "prompt", REAL_COLOUR), (0.2, output, "output", "tab:orange")):
        bars = ax_tokens.bar(x + offset, values, width=0.4, label=label, color=colour)
        ax_tokens.bar_label(bars, [f"{v:,.0f}" for v in values], fontsize="x-small", padding=2)
    ax_tokens.set_xticks(x, names)
    ax_tokens.set_ylabel("tokens")
    ax_tokens.legend(loc="upper right", fontsize="small")
    if not priced:
        _none(ax_usd, "no price set (--usd-per-mtok-prompt / --usd-per-mtok-output)")
        return fig
    usd_prompt, usd_output = prompt * p_usd / 1e6, output * o_usd / 1e6
    ax_usd.bar(x, usd_prompt, width=0.6, label="prompt", color=REAL_COLOUR)
    bars = ax_usd.bar(x, usd_output, width=0.6, bottom=usd_prompt, label="output", color="tab:orange")
    ax_usd.bar_label(bars, [rf"\${v:,.2f}" for v in usd_prompt + usd_output], fontsize="small")
    ax_usd.set_xticks(x, names)
    ax_usd.set_ylabel("dollars")
    ax_usd.legend(loc="upper right", fontsize="small")
    return fig


# (stable name: the PNG's file name and the HTML's anchor, caption, builder), in the order they are shown.
FIGURES: tuple[tuple[str, str, Callable[[RunData], Figure]], ...] = (
    (
        "score_distributions",
        "Each scorer's primary metric over latents, against the random-explanation control.",
        score_distributions,
    ),
    ("recall_per_decile", "Mean recall per activation decile, per scorer, against the control.", recall_per_decile),
    ("score_vs_frequency", "Each scorer's primary metric against how often the latent fires.", score_vs_frequency),
    (
        "activation_density",
        "Firing frequency over every latent; dead latents counted in the title.",
        activation_density,
    ),
    ("explanation_length", "Length of the usable explanations, in words.", explanation_length),
    ("failures", "Failed explanations and failed scorer examples, by reason.", failures),
    ("tokens_and_dollars", "LLM tokens and their price per stage (the batch runs' progress rows).", tokens_and_dollars),
)


def draw_all(data: RunData, progress: Callable[[str], None] | None = None) -> list[Drawn]:
    """Every figure of FIGURES, in order."""
    out = []
    for i, (name, caption, build) in enumerate(FIGURES, 1):
        if progress is not None:
            progress(f"drawing figure {i}/{len(FIGURES)}: {name.replace('_', ' ')}")
        out.append(Drawn(name, caption, build(data)))
    return out


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, at its own size (figsize x DPI: no tight bounding box, so sizes are known)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
