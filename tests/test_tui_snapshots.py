"""Snapshot tests (pytest-textual-snapshot): the screens as SVG, compared with the accepted ones in
tests/__snapshots__/. After an intended change to the UI: `pytest tests/test_tui_snapshots.py --snapshot-update`,
then look at the new SVGs before committing them."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.synthetic import home_token, make_synthetic_db
from autointerp.tui.app import AutointerpApp

SIZE = (150, 45)


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch):
    # Snapshots are taken in colour unless a test asks otherwise, whatever the CI machine's environment says.
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test (store/browse.py)


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("snap") / "s.db", 120)


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    return Path(shutil.copy(base_db, tmp_path / "s.db"))


def showing(latent: int, *keys: str):
    """run_before: press `keys`, then wait until the detail of `latent` is painted (it loads on a worker thread)."""

    async def wait(pilot):
        app = pilot.app
        for _ in range(500):  # the first latent's detail first, so the keys move from it
            if app.detail_count:
                break
            await pilot.pause(0.02)
        await pilot.press(*keys)
        for _ in range(500):
            if app.shown_latent == latent:
                break
            await pilot.pause(0.02)
        assert app.shown_latent == latent
        await pilot.pause()

    return wait


def test_latent_browser(snap_compare, db):
    assert snap_compare(AutointerpApp(db, poll_s=3600), terminal_size=SIZE, run_before=showing(2, "down", "down"))


def test_markup_in_corpus_is_literal(snap_compare, db):
    with sqlite3.connect(db) as c:
        c.execute("update vocab set token = '[bold red]x[/]' where id = ?", [home_token(3, 4096)])
        c.execute("update explanations set text = ? where latent = 3", ['"[/]" and [b]tags[/b]'])
    assert snap_compare(
        AutointerpApp(db, poll_s=3600), terminal_size=SIZE, run_before=showing(3, "down", "down", "down")
    )


def test_no_color_keeps_strength(snap_compare, db):
    assert snap_compare(
        AutointerpApp(db, poll_s=3600, mono=True), terminal_size=SIZE, run_before=showing(2, "down", "down")
    )


def test_monitor_of_a_finished_run(snap_compare, db):
    async def wait(pilot):
        for _ in range(500):
            panes = pilot.app.query("MonitorPane")  # mounted after the first frame
            if panes and panes.first().snapshot is not None:
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(AutointerpApp(db, poll_s=3600), press=["1"], terminal_size=SIZE, run_before=wait)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_latents_tab_at_small_and_large_terminals(snap_compare, db, size):
    # 80 columns: the footer keeps `q quit`, the query in force shows on the list's border, nothing is clipped.
    async def filtered(pilot):
        await showing(2, "down", "down")(pilot)
        pilot.app.latents.query_text = "detection>0.3"
        pilot.app.latents.apply_order(keep=2)
        for _ in range(500):
            if pilot.app.order_settled:
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(AutointerpApp(db, poll_s=3600), terminal_size=size, run_before=filtered)


def visible_list_rows(app: AutointerpApp) -> list[int]:
    """The latents whose rows are on screen, read from the composited frame (what the terminal gets), not from
    the list's own sizes: a row hidden under another widget or cut by the screen's edge is not counted."""
    from autointerp.tui.latent_list import LatentList

    lst = app.query_one(LatentList)
    lines = ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]
    shown = []
    for index in range(len(lst.ids)):
        text = lst.row_text(index)[: lst.scrollable_content_region.width]
        if any(text in line for line in lines):
            shown.append(int(lst.ids[index]))
    return shown


def test_the_list_shows_six_rows_at_80x24_and_the_search_box_is_one_line(db):
    """At 80x24 the stacked layout leaves the list at least 6 rows; the search box is one line there, bordered again
    once the terminal is wide (a resize toggles it), and the footer keeps `q quit`."""
    import asyncio

    from textual.widgets import Input

    async def go():
        app = AutointerpApp(db, poll_s=3600)
        async with app.run_test(size=(80, 24)) as pilot:
            await showing(0)(pilot)
            box = app.query_one("#query", Input)
            rows = visible_list_rows(app)
            assert len(rows) >= 6 and rows == list(range(len(rows))), rows  # the first rows, in order
            assert box.outer_size.height == 1
            footer = "".join(seg.text for seg in app.screen._compositor.render_strips()[-1])
            assert footer.startswith("q quit")
            await pilot.resize_terminal(150, 45)
            await pilot.pause()
            assert box.outer_size.height == 3 and not app.query_one("#browse").has_class("narrow")
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            assert box.outer_size.height == 1 and len(visible_list_rows(app)) >= 6
            await pilot.press("slash")  # typing into the one-line box works as in the bordered one
            await pilot.press(*"w38", "enter")
            for _ in range(500):
                if app.order_settled and app.latents.query_text == "w38":
                    break
                await pilot.pause(0.02)
            assert app.latents.query_text == "w38" and 0 < len(app.query_one("LatentList").ids) < 120

    asyncio.run(go())
