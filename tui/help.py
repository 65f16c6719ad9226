"""`?`: every key of the screen behind, generated from the bindings (the focused widget's, its containers' and
the app's), so a key added later is listed without a line here."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "close", id="close_help")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 90%; border: round $accent;
        padding: 0 1; background: $surface; }
    """

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        text = Text()
        width = max((len(key) for key, _, _ in self.rows), default=4)
        for key, description, where in self.rows:
            text.append(f"{key:>{width}}  ", "bold")
            text.append(description)
            text.append(f"   ({where})\n", "dim")
        with VerticalScroll() as box:
            box.border_title = "keys (escape closes; ctrl+p: the command palette)"
            yield Static(text, id="help-keys")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


def help_rows(app: App) -> list[tuple[str, str, str]]:
    """(keys, description, whose) for every binding active on the current screen, focused widget first."""
    rows: dict[tuple[int, str, str], tuple[list[str], str, str]] = {}
    for active in app.screen.active_bindings.values():
        binding, node = active.binding, active.node
        keys, _, _ = rows.setdefault(
            (id(node), binding.action, binding.description),
            (
                [],
                binding.description or binding.action.replace("_", " "),
                "app" if node is app else type(node).__name__,
            ),
        )
        keys.append(app.get_key_display(binding))
    return [(", ".join(keys), description, where) for keys, description, where in rows.values()]
