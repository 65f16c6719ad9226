"""Latent selections: "0-9,42" | "random:N" | "top:N" | "live" | a list of ids, each optionally followed by
exclusions: "live,-positional,-unigram", "random:50,-unigram", "0-99,-positional".

`parse_selection` checks the text alone (so a typo is refused before any model loads or any file is written);
`Selection.resolve` turns it into latent ids once the cache's width and live latents are known. Exclusions name
the cache's filters (store/filters.py) and are applied first, to the latents the selection draws from (the live
latents, or the ids listed): "random:50,-unigram" is 50 latents none of which is a unigram latent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from autointerp.store.errors import UserError
from autointerp.store.filters import EXCLUSIONS


class SelectionError(UserError):
    """A latent selection that cannot be used, stated in one line."""


MAX_LATENTS = 1 << 28  # wider than any coder; keeps a typo such as 0-99999999999 from filling memory
USAGE = "use ranges like 0-9,42, or random:N, top:N, live, each optionally followed by ,-positional ,-unigram"


@dataclass(frozen=True)
class Selection:
    text: str
    kind: str  # ids | random | top | live
    ids: tuple[int, ...] = ()  # kind "ids": sorted, distinct
    n: int = 0  # kind "random" / "top"
    exclude: tuple[str, ...] = ()  # filters whose latents are left out (names in EXCLUSIONS)

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

    def resolve(
        self, live: list[int], num_latents: int, seed: int, flagged: dict[str, set[int]] | None = None
    ) -> list[int]:
        """Latent ids, ascending. `live`: latents with enough windows to sample, most frequent first; `flagged`: the
        latents each excluded filter flags (required for every name in `exclude`)."""
        return self.resolve_counted(live, num_latents, seed, flagged)[0]

    def resolve_counted(
        self, live: list[int], num_latents: int, seed: int, flagged: dict[str, set[int]] | None = None
    ) -> tuple[list[int], dict[str, int]]:
        """`resolve`, and per exclusion how many of the latents the selection draws from it left out."""
        skipped: dict[str, int] = {}
        if self.exclude:
            flagged = flagged or {}
            pool = self.ids if self.kind == "ids" else live
            out: set[int] = set()
            for name in self.exclude:
                mine = flagged[name]
                skipped[name] = sum(1 for x in pool if x in mine)
                out |= mine
            live = [x for x in live if x not in out]
            if self.kind == "ids":
                self.check_width(num_latents)
                return [x for x in self.ids if x not in out], skipped
        return self._resolve(live, num_latents, seed), skipped

    def _resolve(self, live: list[int], num_latents: int, seed: int) -> list[int]:
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
    base, exclude = _exclusions(text)
    if base == "live":
        return Selection(text, "live", exclude=exclude)
    kind, colon, arg = base.partition(":")
    if colon:
        if kind not in ("random", "top") or not arg.isdigit():
            raise SelectionError(f"latent selection {text!r}: expected random:N or top:N with N a whole number")
        return Selection(text, kind, n=int(arg), exclude=exclude)
    ids: set[int] = set()
    for part in base.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise SelectionError(f"latent selection {text!r}: {part.strip()!r} is not a latent id or range; {USAGE}")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if lo > hi:
            raise SelectionError(f"latent selection {text!r}: the range {lo}-{hi} is reversed (write {hi}-{lo})")
        if hi >= MAX_LATENTS:
            raise SelectionError(f"latent selection {text!r}: latent {hi} is beyond any coder's width")
        ids.update(range(lo, hi + 1))
    return Selection(text, "ids", tuple(sorted(ids)), exclude=exclude)


def _exclusions(text: str) -> tuple[str, tuple[str, ...]]:
    """The selection before its exclusions, and the exclusions (",-name" parts, at the end, each known)."""
    parts = text.split(",")
    names: list[str] = []
    while parts and parts[-1].strip().startswith("-"):
        name = parts.pop().strip()[1:].strip()
        if name not in EXCLUSIONS:
            raise SelectionError(
                f"latent selection {text!r}: unknown exclusion -{name} (known: {', '.join('-' + e for e in EXCLUSIONS)})"
            )
        names.append(name)
    base = ",".join(parts).strip()
    if names and not base:
        raise SelectionError(f"latent selection {text!r}: exclusions need a selection first, e.g. live,-positional")
    if any(p.strip().startswith("-") for p in parts):
        raise SelectionError(f"latent selection {text!r}: exclusions (,-name) come last; {USAGE}")
    return base, tuple(sorted(set(names), key=EXCLUSIONS.index))
