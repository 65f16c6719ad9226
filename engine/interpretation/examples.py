"""Examples as the LLM sees them: a window's tokens as text, with marks or activation values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Example:
    window: int  # global window index in the store
    tokens: list[str]  # each token's text
    acts: np.ndarray  # this latent's activation per token (float32; zeros for a non-activating window)
    decile: int  # 1..n for activating windows (1 = weakest bin), 0 for non-activating ones

    @property
    def max_act(self) -> float:
        return float(self.acts.max(initial=0.0))


class TokenText:
    """Token id -> text, memoised (the same few thousand ids recur across every example).

    The sequence-start token shows as nothing and the document separator as a line break, so the
    LLM reads text, not special-token names.
    """

    def __init__(self, tokenizer, start_id: int | None = None, sep_id: int | None = None):
        self.tokenizer = tokenizer
        self._memo: dict[int, str] = {}
        if sep_id is not None:
            self._memo[int(sep_id)] = "\n"
        if start_id is not None and start_id != sep_id:
            self._memo[int(start_id)] = ""

    def __call__(self, ids) -> list[str]:
        ids = [int(i) for i in ids]
        missing = sorted({i for i in ids if i not in self._memo})
        if missing:
            texts = self.tokenizer.batch_decode([[i] for i in missing])
            self._memo.update(zip(missing, texts))
        return [self._memo[i] for i in ids]


def _clean(text: str) -> str:
    # One example per line in every prompt: show line breaks as a visible mark instead.
    return text.replace("\r", "").replace("\n", "\\n")


def plain(ex: Example) -> str:
    return _clean("".join(ex.tokens))


def marked_positions(ex: Example, threshold: float) -> np.ndarray:
    """Tokens at or above `threshold` x the window's max activation (none for a silent window)."""
    if ex.max_act <= 0:
        return np.zeros(len(ex.tokens), bool)
    return ex.acts >= threshold * ex.max_act


def with_marks(ex: Example, mask: np.ndarray) -> str:
    """The text with each run of marked tokens wrapped in << >>."""
    parts, inside = [], False
    for tok, m in zip(ex.tokens, mask):
        if m and not inside:
            parts.append("<<")
        elif not m and inside:
            parts.append(">>")
        inside = bool(m)
        parts.append(tok)
    if inside:
        parts.append(">>")
    return _clean("".join(parts))


def activation_list(ex: Example, mask: np.ndarray, scale: float) -> str:
    """The marked tokens with their activations as integers 0-10 (10 = the latent's largest seen)."""
    items = [
        f"{_clean(tok).strip() or repr(tok)} ({int(round(10 * a / scale)) if scale > 0 else 0})"
        for tok, a, m in zip(ex.tokens, ex.acts, mask)
        if m
    ]
    return ", ".join(items)


def numbered(lines: list[str], start: int = 1) -> str:
    return "\n".join(f"Excerpt {i}: {line}" for i, line in enumerate(lines, start))
