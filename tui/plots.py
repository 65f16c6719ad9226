"""The Plots tab: the current latent's activation histogram and the run's score distributions (each scorer's
primary metric over latents, real explanations against the random control), drawn in the terminal by
textual-plotext. The numbers come from the Browser (store/browse.py) on a worker thread; this pane only draws.
The tab is mounted lazily and read only when shown, so the latent list's first paint and switches never wait for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Static

from autointerp.store.text import printable
from autointerp.store.views import ScoreHistogram

if TYPE_CHECKING:
    from textual_plotext import PlotextPlot

REAL, CONTROL = "explanation", "random control"


def _centres(edges: np.ndarray) -> list[float]:
    return ((edges[:-1] + edges[1:]) / 2).tolist()


class PlotsPane(Vertical, can_focus=True):
    DEFAULT_CSS = """
    PlotsPane { padding: 0 1; }
    PlotsPane .p-head { height: 1; text-style: bold; }
    PlotsPane #latent-hist { height: 1fr; min-height: 10; }
    PlotsPane #score-plots { height: 1fr; min-height: 12; }
    """

    def __init__(self, mono: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.mono = mono
        self.latent: int | None = None  # the latent whose histogram is drawn
        self.scorers: list[str] = []  # the scorers whose distributions are drawn, in order
        self.drawn = 0  # times the app has drawn into the pane (tests wait for it)

    class Mounted(Message):
        """The pane is on screen (it is mounted lazily): the app reads what it draws now, if its tab is shown."""

    def on_mount(self) -> None:
        self.post_message(self.Mounted())

    def compose(self) -> ComposeResult:
        # Imported here: the pane is mounted after the first frame (Lazy), so plotext never delays start-up.
        from textual_plotext import PlotextPlot

        yield Static(Text("loading…", "italic"), id="latent-head", classes="p-head")
        yield PlotextPlot(id="latent-hist")
        yield Static(Text("score distributions over latents (primary metric per scorer)"), classes="p-head")
        yield Horizontal(id="score-plots")

    def _plot(self, widget: "PlotextPlot"):
        plt = widget.plt
        plt.clear_figure()
        if self.mono:
            widget.theme = "clear"
        return plt

    def show_latent(self, latent: int | None, hist: tuple[np.ndarray, np.ndarray] | None) -> None:
        from textual_plotext import PlotextPlot

        self.latent = latent
        widget = self.query_one("#latent-hist", PlotextPlot)
        plt = self._plot(widget)
        head = self.query_one("#latent-head", Static)
        if latent is None:
            head.update(Text("no latent selected (choose one in Latents [2])", "italic"))
        elif hist is None:
            head.update(Text(f"latent {latent}: no activation statistics", "italic"))
        else:
            edges, counts = hist
            head.update(Text(f"latent {latent}: activation histogram ({int(counts.sum()):,} nonzero activations)"))
            plt.bar(_centres(edges), counts.tolist(), width=0.9)
            ticks = np.linspace(float(edges[0]), float(edges[-1]), 6).tolist()
            plt.xticks(ticks, [f"{t:.3g}" for t in ticks])  # plotext's own labels print every float digit
            plt.title(f"latent {latent}")
            plt.xlabel("activation")
            plt.ylabel("count")
        widget.refresh()

    async def show_scores(self, hists: list[ScoreHistogram]) -> None:
        from textual_plotext import PlotextPlot

        box = self.query_one("#score-plots", Horizontal)
        names = [h.scorer for h in hists]
        if names != self.scorers:  # new scorers: one plot each (kept while they stay the same)
            await box.remove_children()
            if hists:
                await box.mount_all(PlotextPlot(classes="score-plot") for _ in hists)
            else:
                await box.mount(Static(Text("none: no scores in this database yet", "italic")))
            self.scorers = names
        for widget, h in zip(box.query(PlotextPlot), hists):
            plt = self._plot(widget)
            x = _centres(h.edges)
            plt.plot(x, h.real.tolist(), label=f"{REAL} ({int(h.real.sum()):,})", marker="braille")
            plt.plot(x, h.control.tolist(), label=f"{CONTROL} ({int(h.control.sum()):,})", marker="dot")
            plt.title(f"{printable(h.scorer)}: {h.metric}")
            plt.xlabel(h.metric)
            widget.refresh()

    def rendered_text(self) -> str:
        """What the plots draw, as plain text (tests read the titles and legends from it)."""
        from textual_plotext import PlotextPlot

        out = []
        for widget in self.query(PlotextPlot):
            rendered = widget.render()
            out.append(rendered.plain if isinstance(rendered, Text) else str(rendered))
        return "\n".join(out)
