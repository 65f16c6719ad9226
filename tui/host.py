"""What the app shares with its tabs and its palette, as they see it. Protocols, so that no tab imports the app
module (the app imports the tabs, through tui/tabs.py): tui/app.py's AutointerpApp is the one implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from autointerp.store.browse import Browser

from .readers import Readers


class Browsing(Protocol):
    """What the reader is looking at, kept by the latents tab; the audit and plots tabs follow it."""

    explainer: str

    @property
    def ids(self) -> np.ndarray:
        """The list's latents, in its current order and filter."""
        ...

    def latent_in_view(self) -> int | None: ...


class Host(Protocol):
    error: str | None
    readers: Readers | None
    db_path: str
    mono: bool
    rater: str
    started_at: float

    @property
    def browser(self) -> Browser: ...

    @property
    def latents(self) -> Browsing: ...

    def jump(self, latent: int) -> None: ...

    def palette_commands(self) -> Iterator[tuple[str, Callable[[], object]]]: ...
