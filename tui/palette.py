"""The command palette's provider (ctrl+p): a number goes to that latent; the app's commands by name."""

from __future__ import annotations

from typing import cast

from rich.text import Text
from textual.command import Hit, Hits, Provider

from .host import Host


class JumpProvider(Provider):
    """`123` jumps to latent 123; words find the commands of `palette_commands` (sort, monitor, audit, ...)."""

    async def search(self, query: str) -> Hits:
        app = cast(Host, self.app)
        q = query.strip()
        if q.isdigit() and app.error is None:
            latent = int(q)
            yield Hit(100, Text(f"Go to latent {latent}"), lambda: app.jump(latent), help="show this latent")
        matcher = self.matcher(query)
        for name, action in app.palette_commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action)
