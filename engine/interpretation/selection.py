"""Latent selections: "0-9,42" | "random:N" | "top:N" | "live" | a list of ids.

`parse_selection` checks the text alone (so a typo is refused before any model loads or any file is written);
`Selection.resolve` turns it into latent ids once the cache's width and live latents are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from autointerp.store.errors import UserError


class SelectionError(UserError):
    """A latent selection that cannot be used, stated in one line."""


MAX_LATENTS = 1 << 28  # wider than any coder; keeps a typo such as 0-99999999999 from filling memory
USAGE = "use ranges like 0-9,42, or random:N, top:N, live"


@dataclass(frozen=True)
class Selection:
    text: str
    kind: str  # ids | random | top | live
    ids: tuple[int, ...] = ()  # kind "ids": sorted, distinct
    n: int = 0  # kind "random" / "top"

    def count(self) -> int | None:
        """How many latents it names before the cache is known (None: every live latent)."""
        if self.kind == "ids":
            return len(self.ids)
        return None if self.kind == "live" else self.n

    def check_width(self, num_latents: int) -> None:
        if self.kind == "ids" and self.ids and self.ids[-1] >= num_latents:
            raise SelectionError(
                f"latent selection {self.text!r}: latent {self.ids[-1]} does not exist "
                f"(this cache's latents run from 0 to {num_latents - 1})"
            )

    def resolve(self, live: list[int], num_latents: int, seed: int) -> list[int]:
        """Latent ids, ascending. `live`: latents with enough windows to sample, most frequent first."""
        if self.kind == "live":
            return sorted(live)
        if self.kind == "top":
            return sorted(live[: self.n])
        if self.kind == "random":
            n = min(self.n, len(live))
            rng = np.random.default_rng([seed, 0x5E1EC7])
            return sorted(int(x) for x in rng.choice(live, size=n, replace=False)) if n else []
        self.check_width(num_latents)
        return list(self.ids)


def parse_selection(spec: str | list) -> Selection:
    """Check a selection's syntax; raises SelectionError naming what is wrong."""
    if isinstance(spec, list):
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in spec):
            raise SelectionError(f"latent selection {spec!r}: a list must hold latent ids (whole numbers >= 0)")
        return Selection(",".join(map(str, spec)), "ids", tuple(sorted(set(spec))))
    text = spec.strip()
    if text == "live":
        return Selection(text, "live")
    kind, colon, arg = text.partition(":")
    if colon:
        if kind not in ("random", "top") or not arg.isdigit():
            raise SelectionError(f"latent selection {text!r}: expected random:N or top:N with N a whole number")
        return Selection(text, kind, n=int(arg))
    ids: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise SelectionError(f"latent selection {text!r}: {part.strip()!r} is not a latent id or range; {USAGE}")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if lo > hi:
            raise SelectionError(f"latent selection {text!r}: the range {lo}-{hi} is reversed (write {hi}-{lo})")
        if hi >= MAX_LATENTS:
            raise SelectionError(f"latent selection {text!r}: latent {hi} is beyond any coder's width")
        ids.update(range(lo, hi + 1))
    return Selection(text, "ids", tuple(sorted(ids)))
