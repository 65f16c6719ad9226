"""The app's footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class QuitFirstFooter(Footer):
    """The footer with `q quit` first: Textual lists the focused widget's keys before the app's, so at 80
    columns the app's quit would be the first key cut off."""

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        keys.sort(key=lambda w: not (isinstance(w, FooterKey) and w.action == "quit"))  # stable: order kept
        yield from keys
