"""A virtual list of latents: only the rows on screen exist, fetched a page at a time from SQLite.

Textual's DataTable keeps every row in memory; with a million latents that is seconds of work before the first
paint, so this list is a ScrollView using the line API: `render_line` asks for row `y` and the row comes from
a small page cache filled by one indexed query per 100 rows.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from autointerp.store.browse import Browser
from autointerp.store.views import LatentRow

from .heatmap import visible

PAGE = 100
MAX_PAGES = 64


def _width(scorer: str) -> int:
    """A scorer's column: its whole name (up to "intervention"), never narrower than a metric like 0.875."""
    return min(max(6, len(scorer)), 12)


def _num(v, fmt: str, width: int) -> str:
    return f"{v:{fmt}}".rjust(width) if v is not None else "-".rjust(width)


class LatentList(ScrollView, can_focus=True):
    """Rows: latent id, frequency, max activation, each scorer's metric, the explanation's first line."""

    # Ids: the settings file's [keys] rebinds them (tui/settings.py).
    BINDINGS = [
        Binding("up,k", "move(-1)", "up", show=False, id="up"),
        Binding("down,j", "move(1)", "down", show=False, id="down"),
        Binding("pageup", "move(-20)", "page up", show=False, id="page_up"),
        Binding("pagedown", "move(20)", "page down", show=False, id="page_down"),
        Binding("home,g", "first", "first", show=False, id="first"),
        Binding("end,G", "last", "last", show=False, id="last"),
    ]
    DEFAULT_CSS = "LatentList { height: 1fr; overflow-x: hidden; }"

    cursor = reactive(0, always_update=True)

    class Highlighted(Message):
        def __init__(self, latent: int | None) -> None:
            super().__init__()
            self.latent = latent
            self.at = time.perf_counter()  # when the key moved the cursor: the start of a latent switch

    def __init__(self, browser: Browser, **kw) -> None:
        super().__init__(**kw)
        self.browser = browser
        self.ids = np.zeros(0, np.int64)
        self.explainer = "default"
        self.scorers: list[str] = []
        self.pages: OrderedDict[int, dict[int, LatentRow]] = OrderedDict()
        self._base_style: Style | None = None

    # ---- contents ----------------------------------------------------------------------------

    def set_order(self, ids: np.ndarray, explainer: str, scorers: list[str], keep: int | None = None) -> None:
        self.ids, self.explainer, self.scorers = ids, explainer, scorers
        self.pages.clear()
        self.virtual_size = Size(self.scrollable_content_region.width, len(ids))
        where = np.flatnonzero(ids == keep) if keep is not None else np.empty(0, np.int64)
        self.cursor = int(where[0]) if len(where) else 0
        self.refresh()

    def invalidate(self) -> None:
        """Drop cached rows (new explanations or scores arrived); the order stays."""
        self.pages.clear()
        self.refresh()

    @property
    def latent(self) -> int | None:
        return int(self.ids[self.cursor]) if 0 <= self.cursor < len(self.ids) else None

    def header(self) -> str:
        cols = ["latent".rjust(7), "freq".rjust(8), "max".rjust(5)]
        cols += [s[: _width(s)].rjust(_width(s)) for s in self.scorers]
        return " ".join(cols) + "  explanation"

    def _row(self, index: int) -> LatentRow | None:
        page = index // PAGE
        if page not in self.pages:
            self.pages[page] = self.browser.rows(self.ids[page * PAGE : (page + 1) * PAGE], self.explainer)
            if len(self.pages) > MAX_PAGES:
                self.pages.popitem(last=False)
        else:
            self.pages.move_to_end(page)
        return self.pages[page].get(int(self.ids[index]))

    def row_text(self, index: int) -> str:
        latent = int(self.ids[index])
        row = self._row(index)
        if row is None:
            return f"{latent:>7}"
        cells = [f"{latent:>7}", _num(row.frequency, ".2e", 8), _num(row.max_act, ".1f", 5)]
        cells += [_num(row.metrics.get(s), ".3f", _width(s)) for s in self.scorers]
        expl = visible((row.explanation or "").split("\n")[0])
        return " ".join(cells) + "  " + expl

    # ---- the line API -----------------------------------------------------------------------

    def render_lines(self, crop):
        self._base_style = self.rich_style  # once per frame, not per line (it walks the DOM)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self._base_style or self.rich_style
        if index >= len(self.ids):
            return Strip.blank(width, style)
        if index == self.cursor:
            style = style + Style(reverse=True, bold=self.has_focus)
        # One plain Segment: explanation text is never parsed as markup (and `visible` removed newlines).
        return (
            Strip([Segment(self.row_text(index), style)])
            .crop(scroll_x, scroll_x + width)
            .extend_cell_length(width, style)
        )

    # ---- cursor -------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        height = max(1, self.scrollable_content_region.height)
        if new < self.scroll_offset.y:
            self.scroll_to(y=new, animate=False)
        elif new >= self.scroll_offset.y + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self.latent))

    def action_move(self, step: int) -> None:
        if len(self.ids):
            self.cursor = max(0, min(len(self.ids) - 1, self.cursor + step))

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = max(0, len(self.ids) - 1)

    def go_to(self, latent: int) -> bool:
        where = np.flatnonzero(self.ids == latent)
        if len(where):
            self.cursor = int(where[0])
            return True
        return False

    def on_click(self, event) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self.ids):
            self.cursor = index

    def on_resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.ids))
