"""Back/forward through the latents gone to (jumps, neighbours, the palette), as a web browser's history."""

from __future__ import annotations

HISTORY_MAX = 200  # latents kept (a browser's history, bounded)


class History:
    def __init__(self) -> None:
        self.entries: list[int] = []
        self.at = -1  # the entry back and forward move from

    def record(self, came_from: int | None, latent: int) -> None:
        """A go-to drops the forward entries, as a browser does; where the reader was (they may have moved the
        cursor since the last go-to) is kept, so back returns there."""
        del self.entries[self.at + 1 :]
        for entry in (came_from, latent):
            if entry is not None and (not self.entries or self.entries[-1] != entry):
                self.entries.append(entry)
        del self.entries[:-HISTORY_MAX]
        self.at = len(self.entries) - 1

    def back(self, current: int | None) -> int | None:
        """The latent before, None at the start. `current`: where the reader is now, kept if they moved since."""
        if current is not None and self.entries and current != self.entries[self.at]:
            self.record(None, current)  # moved since: back comes to here again with forward
        if self.at <= 0:
            return None
        self.at -= 1
        return self.entries[self.at]

    def forward(self) -> int | None:
        if self.at >= len(self.entries) - 1:
            return None
        self.at += 1
        return self.entries[self.at]
