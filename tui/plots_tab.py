"""The Plots tab (key 4): the latent in view's activation histogram and the score distributions (tui/plots.py),
read on a worker thread each time the tab is shown (the latent may have changed). The score histograms are kept
per explainer until new results land."""

from __future__ import annotations

from textual.app import ComposeResult

from autointerp.store.evidence import ScorerEvidence
from autointerp.store.views import MonitorSnapshot

from .messages import PlotsRead
from .plots import PlotsPane
from .readers import in_worker
from .tab import AppTab, later


class PlotsTab(AppTab):
    TITLE = "Plots"
    PALETTE = "activation histogram and score distributions"

    def __init__(self, name: str, key: int, first: bool) -> None:
        super().__init__(name, key, first)
        self.score_hists: dict[str, list] = {}
        self.generation = 0  # bumped when results land: a read begun before that is not kept

    def compose(self) -> ComposeResult:
        yield later(PlotsPane(self.host.mono), now=False)  # plotext is imported when it mounts

    def focus_content(self) -> None:
        for plots in self.query(PlotsPane):  # absent for the first frame (mounted lazily)
            plots.focus()

    def shown(self) -> None:
        self.load()

    def on_plots_pane_mounted(self, message: PlotsPane.Mounted) -> None:
        if self.active:  # shown before its lazy mount ended
            self.load()

    def load(self) -> None:
        latents = self.host.latents
        latent, explainer, generation = latents.latent_in_view(), latents.explainer, self.generation
        cached, readers = self.score_hists.get(explainer), self.host.readers
        in_worker(self, lambda: readers.plots(latent, explainer, cached, generation), group="plots")

    async def on_plots_read(self, message: PlotsRead) -> None:
        if message.scores is not None and message.generation == self.generation:
            self.score_hists[message.explainer] = message.scores
        panes = self.query(PlotsPane)
        if not self.app.is_running or not panes:  # shutting down, or not mounted yet (it asks again once it is)
            return
        if message.error is not None or message.scores is None:
            self.app.notify(f"plots: {message.error}", severity="error")
            return
        pane = panes.first()
        pane.show_latent(message.latent, message.hist)
        await pane.show_scores(message.scores)
        pane.drawn += 1

    def results_read(self, snapshot: MonitorSnapshot, evidence: ScorerEvidence | None, changed: set[str]) -> None:
        if changed:
            self.generation += 1
            self.score_hists.clear()
            if self.active:
                self.load()
