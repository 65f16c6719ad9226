"""The latents tab's search/filter box."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input

from .latent_list import LatentList


class QueryInput(Input):
    """Escape hands focus back to the list and keeps what was typed (the query in force is applied on enter)."""

    BINDINGS = [Binding("escape", "leave", "back to the list", id="leave_query")]

    def action_leave(self) -> None:
        for lst in self.app.query(LatentList):
            lst.focus()
