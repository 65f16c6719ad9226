"""Which latents a selection or a benchmark draws from, by their statistics (the `latents` table)."""

from __future__ import annotations

import sqlite3


def live_latents(conn: sqlite3.Connection, min_windows: int) -> list[int]:
    """Latents with at least `min_windows` activating windows, most frequent first (ties by latent)."""
    rows = conn.execute("select latent from latents where n_windows >= ? order by count desc, latent", [min_windows])
    return [r[0] for r in rows]


def latents_with_windows(conn: sqlite3.Connection, min_windows: int) -> list[int]:
    """Latents with at least `min_windows` activating windows, in table (latent) order."""
    return [r[0] for r in conn.execute("select latent from latents where n_windows >= ?", [min_windows])]
