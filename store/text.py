"""Text from the database or an LLM, made safe to show in a terminal.

Explanations, audit notes, error messages from servers, corpus tokens and provenance strings are data: an
escape sequence inside one (ESC[31m, a cursor move, a title change) must be shown, never obeyed, and a
right-to-left override must not reorder the line around it. Every place that prints such text (the TUI, the
report, the CLI's tables and error lines) passes it through `printable` first. Markup is a separate matter:
show the result with rich `Text` (never parsed as markup) or `markup=False`.
"""

from __future__ import annotations

import re

# C0 and C1 control characters, DEL, and the Unicode bidirectional controls (which reorder what follows them).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e"}


def _escape(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` as a string with every control character spelled out (ESC as \\e, others as \\xNN / \\uNNNN).
    `newlines=True` keeps line breaks (and tabs) for multi-line views; otherwise the result is one line."""
    s = "" if text is None else str(text)
    if newlines:
        return "\n".join("\t".join(_UNSAFE.sub(_escape, part) for part in line.split("\t")) for line in s.split("\n"))
    return _UNSAFE.sub(_escape, s)
