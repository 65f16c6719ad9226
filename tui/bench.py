"""`autointerp bench tui`: how fast the TUI paints and switches latents on a large database.

Runs the real app headless (Textual's test driver) on a synthetic database written by the real store code
(store/synthetic.py) and prints figures: first paint (app constructed -> list and first latent's detail on
screen), per-key latent switch times (key press -> the new latent's detail painted), sort and search times,
and the import time of a fresh process (paid once before the first paint).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np


async def measure(db: Path, n_switches: int = 100, size=(160, 50)) -> dict:
    """Figures from inside the app (key handled -> frame with the new detail painted) and, beside them, the
    round trip through Textual's test driver (which adds its own fixed waits: `harness_floor_ms`)."""
    from textual.app import App
    from textual.widgets import Static

    from .app import AutointerpApp
    from .latent_list import LatentList

    app = AutointerpApp(db, poll_s=3600)  # no monitor polls inside the timings
    if app.error is not None:
        raise click.ClickException(app.error)
    out: dict = {}
    async with app.run_test(size=size) as pilot:
        while app.detail_count < 1:
            await asyncio.sleep(0.001)
        out["first_paint_ms"] = app.first_paint_ms
        lst = app.query_one(LatentList)
        roundtrip = []
        for _ in range(n_switches):
            want = int(lst.ids[lst.cursor + 1])
            t = time.perf_counter()
            await pilot.press("down")
            while app.shown_latent != want:
                await asyncio.sleep(0.0005)
            roundtrip.append((time.perf_counter() - t) * 1000)
        switch = app.switch_ms[-n_switches:]
        out["p50_detail_ms"] = float(np.percentile(switch, 50))
        out["p95_detail_ms"] = float(np.percentile(switch, 95))
        out["max_detail_ms"] = float(max(switch))
        out["p95_key_roundtrip_ms"] = float(np.percentile(roundtrip, 95))
        browser = app.browser
        first_scorer = next(iter(browser.scorers()), None)
        if first_scorer:
            t = time.perf_counter()
            out["sorted_latents"] = len(browser.order(first_scorer, True))
            out["sort_by_scorer_ms"] = (time.perf_counter() - t) * 1000  # the column read from the file, then sorted
            t = time.perf_counter()
            browser.order(first_scorer, False)
            out["sort_again_ms"] = (time.perf_counter() - t) * 1000  # the other direction: the column is held
        t = time.perf_counter()
        out["search_hits"] = len(browser.order("latent", False, "token"))  # a word in every explanation: worst case
        out["search_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()  # one synthetic token's name: what a search usually finds
        out["search_rare_hits"] = len(browser.order("latent", False, "w4000"))
        out["search_rare_ms"] = (time.perf_counter() - t) * 1000
        out["latents"] = browser.n_latents()
        out["switches"] = n_switches

    class Floor(App):  # the test driver's own cost of one key press, on an app that does nothing
        def compose(self):
            yield Static("")

    async with Floor().run_test(size=size) as pilot:
        floor = []
        for _ in range(20):
            t = time.perf_counter()
            await pilot.press("down")
            floor.append((time.perf_counter() - t) * 1000)
        out["harness_floor_ms"] = float(np.percentile(floor, 50))
    return out


@click.command()
@click.option("--latents", "n_latents", type=int, default=100_000, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), help="Benchmark this database instead of a synthetic one.")
@click.option("--switches", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(n_latents: int, db: str | Path | None, switches: int, as_json: bool) -> None:
    from autointerp.store.synthetic import make_synthetic_db

    from .settings import CONFIG_ENV

    with tempfile.TemporaryDirectory() as tmp:
        # Default settings, and none saved: the user's last sort or tab would change what is measured.
        os.environ[CONFIG_ENV] = str(Path(tmp) / "tui.toml")
        build_s = None
        if db is None:
            t = time.perf_counter()
            db = make_synthetic_db(Path(tmp) / "bench.db", n_latents, n_chunks=4, chunk_seqs=512, acts_per_latent=24)
            build_s = time.perf_counter() - t
        figures = asyncio.run(measure(Path(db), switches))
        # What a user waits for before the app starts: a fresh interpreter importing the TUI.
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import sys; sys.modules['pandas'] = None; import autointerp.tui.app"], check=True
        )  # as autointerp.tui.launch starts it
        figures["process_import_ms"] = (time.perf_counter() - t) * 1000
        figures["db_mb"] = Path(db).stat().st_size / 1e6
        figures["build_s"] = build_s
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        click.echo(f"{key:>18}: {value:.1f}" if isinstance(value, float) else f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
