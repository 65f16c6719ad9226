"""Token heatmaps as rich Text: corpus text is data, never markup.

Every token is appended with `Text.append(str, style)`, which never parses markup, so `[bold red]` or `[/]`
in the corpus shows as those characters. Whitespace is made visible. Strength is shown twice: a background
colour scale and, for terminals without colour (NO_COLOR, monochrome), underline / bold / reverse buckets.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from autointerp.store.text import printable

# Buckets by activation / the latent's max: (0, 25%], (25, 50%], (50, 75%], (75, 100%].
COLOUR_STYLES = (
    Style(bgcolor="#5f3700", underline=True),
    Style(bgcolor="#875f00", underline=True),
    Style(bgcolor="#af5f00", bold=True, underline=True),
    Style(bgcolor="#d70000", color="#ffffff", bold=True, underline=True),
)
MONO_STYLES = (
    Style(underline=True),
    Style(bold=True),
    Style(bold=True, underline=True),
    Style(bold=True, reverse=True),
)
VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def visible(token: str) -> str:
    """The token with newlines / tabs as symbols, every other control character (escape sequences, bidi overrides)
    spelled out, and an all-space token as dots: text from the database is shown, never obeyed."""
    if token and token.strip(" ") == "":
        return "·" * len(token)
    return printable("".join(VISIBLE.get(ch, ch) for ch in token))


def bucket(value: float, scale: float) -> int:
    """0 for a token that did not fire, else 1..4 by strength relative to `scale`."""
    if value <= 0 or scale <= 0:
        return 0
    return min(4, max(1, int(-(-4 * value // scale))))


def heat_text(tokens: list[str], acts, scale: float, mono: bool = False) -> Text:
    styles = MONO_STYLES if mono else COLOUR_STYLES
    text = Text(no_wrap=False)
    for tok, value in zip(tokens, acts):
        b = bucket(float(value), scale)
        text.append(visible(tok), styles[b - 1] if b else None)
    return text


def legend(mono: bool = False, per_window: bool = False) -> Text:
    """The strength key; `per_window`: heat is relative to each window's own max (weak windows readable)."""
    styles = MONO_STYLES if mono else COLOUR_STYLES
    text = Text("strength: ")
    for label, style in zip(("≤25%", "≤50%", "≤75%", "≤100%"), styles):
        text.append(f" {label} ", style)
        text.append(" ")
    text.append(f"of {'each window' if per_window else 'the latent'}'s max   ↵ newline  · space  ⇥ tab")
    return text
