"""Every key on every screen, history, help, the command palette, the search box and saved settings: the real
Textual app driven headless (Textual's pilot) on databases written by the real store code."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers.tui import Notifications
from helpers.tui import until as wait_until
from textual import events
from textual.containers import VerticalScroll
from textual.keys import key_to_character
from textual.widgets import Input

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.db import ActivationStore
from autointerp.store.synthetic import make_synthetic_db
from autointerp.tui.app import AutointerpApp
from autointerp.tui.detail import LatentDetailView
from autointerp.tui.help import HelpScreen, help_rows
from autointerp.tui.latent_list import LatentList

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("keys") / "s.db", 150)


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    return Path(shutil.copy(base_db, tmp_path / "s.db"))


def until(pilot, condition, timeout: float = 60.0):  # generous: a loaded CI machine
    return wait_until(pilot, condition, timeout)


def drive(app: AutointerpApp, steps, size=SIZE, notes: Notifications | None = None) -> None:
    async def go():
        async with app.run_test(size=size, message_hook=notes) as pilot:
            await steps(pilot)

    asyncio.run(go())


def bound_keys(app: AutointerpApp, own=None) -> dict[str, str]:
    """{key: action} of every binding that a key press reaches now: the focused widget's and its containers', the
    screen's and the app's, from their BINDINGS (so a key added later is pressed too), disabled ones included (a
    disabled key must still do nothing); with `own`, only that widget's. Quitting is left to the end of each run."""
    keys: dict[str, str] = {}
    for node, bindings in app.screen._binding_chain:
        if own is not None and node is not own:
            continue
        for key, binding_list in bindings.key_to_bindings.items():
            for binding in binding_list:
                if binding.action not in ("quit", "app.quit"):
                    keys.setdefault(key, binding.action)
    return keys


async def press(pilot, key: str) -> None:
    """A key event as the terminal driver sends it, then wait until the screen has handled it. Pilot.press also
    waits for the process to idle (a CPU measure): seconds per hundred keys that this test does not need."""
    event = events.Key(key, key_to_character(key))
    event.set_sender(pilot.app)
    pilot.app.post_message(event)  # what the driver does with a key read from the terminal
    await pilot.pause(0)


async def settle(pilot, app: AutointerpApp, tab: str | None, focus, keep=None) -> None:
    """Back to a known state between keys, doing only what the last key changed (a tab switch re-reads the
    audit queue or the plots): no modal, no editor, the tab shown, its widget focused. `keep()`: the modal on top
    is the prepared one, as it was prepared (left open: closing and opening it again per key costs seconds)."""
    await pilot.pause(0)
    if isinstance(app.focused, Input):
        await press(pilot, "escape")  # the audit editor or the query box
    # closed as a user does, once it has mounted; popped if escape does not
    while len(app.screen_stack) > 1 and not (keep is not None and keep()):
        screen = app.screen
        await pilot.pause(0)
        await press(pilot, "escape")
        await pilot.pause(0)
        if app.screen is screen:
            app.pop_screen()
            await pilot.pause(0)
    if tab is not None and app.query_one("TabbedContent").active != tab:
        app.action_tab(tab)
        await pilot.pause(0)
    if focus is not None and app.focused is not focus():
        focus().focus()
        await pilot.pause(0)


async def press_every_key(pilot, app: AutointerpApp, tab: str | None, focus=None, prepare=None, prepared=None) -> int:
    """Press each bound key once, from the same state each time (`prepare` sets up a modal screen first, and again
    whenever `prepared()` says a key changed it). With `focus`, only the focused widget's own keys: the app's were
    pressed on the same tab already."""
    await settle(pilot, app, tab, focus)
    if prepare is not None:
        await prepare(pilot)
    keys = sorted(bound_keys(app, own=focus() if focus is not None else None))  # the modal's too, when prepared
    for key in keys:
        await settle(pilot, app, tab, focus, keep=prepared)
        if prepare is not None:
            await prepare(pilot)
        await press(pilot, key)
        assert app.is_running and app.return_code is None, f"key {key!r} on {tab or app.screen}"  # no exception
    await settle(pilot, app, tab, focus)
    # What the last keys started ends before the next check: the workers (reads), then their messages. Waited for
    # as such, not as Pilot.pause's CPU-idle guess (up to a second per call on a loaded machine).
    await app.workers.wait_for_complete()
    await pilot.pause(0)
    assert app.return_code is None  # set (to 1) by an unhandled exception
    return len(keys)


def run_every_key_everywhere(app: AutointerpApp, ready, tabs, help_screen: bool = True) -> int:
    count = {"n": 0}
    opened: dict = {}  # the help screen as last opened: its focus and scroll position, which keys may change

    def help_as_opened() -> bool:
        screen = app.screen
        return (
            screen is opened.get("screen")
            and len(app.screen_stack) == 2
            and app.focused is opened["focus"]
            and screen.query_one(VerticalScroll).scroll_offset == opened["scroll"]
        )

    async def open_help(pilot):
        if help_as_opened():
            return
        assert not isinstance(app.screen, HelpScreen)  # settle closed what a key changed
        app.action_help()
        await pilot.pause(0)
        await pilot.pause(0)  # the help screen has mounted
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one(VerticalScroll)
        opened.update(screen=app.screen, focus=app.focused, scroll=box.scroll_offset)

    async def steps(pilot):
        await until(pilot, ready)
        for tab in tabs:
            count["n"] += await press_every_key(pilot, app, tab)
        if "latents" in tabs:  # the detail pane's own keys, with it focused
            count["n"] += await press_every_key(pilot, app, "latents", lambda: app.query_one("#detail"))
        if help_screen:
            # the help screen's own keys and the app's, over the tab the keys above left
            count["n"] += await press_every_key(pilot, app, None, prepare=open_help, prepared=help_as_opened)
        await pilot.press("q")  # the end: quitting works from wherever the keys left the app
        await pilot.pause()

    drive(app, steps)  # run_test raises the first unhandled exception
    assert app.return_code == 0
    return count["n"]


def test_every_key_on_every_tab_of_a_database(db):
    app = AutointerpApp(db, poll_s=3600)
    pressed = run_every_key_everywhere(app, lambda: app.detail_count >= 1, ["monitor", "latents", "audit", "plots"])
    assert pressed > 60


def test_every_key_on_an_empty_database(tmp_path):
    empty = tmp_path / "empty.db"
    ActivationStore.open(empty, create=True).close()
    app = AutointerpApp(empty, poll_s=3600)
    tabs = ["monitor", "latents", "audit", "plots"]
    # The help screen's keys do not depend on the database: pressed in the test above.
    assert run_every_key_everywhere(app, lambda: app.order_settled, tabs, help_screen=False) > 30


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_every_key_on_the_error_screen(tmp_path, kind):
    path = tmp_path / "x.db"
    if kind == "corrupt":
        path.write_bytes(b"not sqlite at all" * 100)
    app = AutointerpApp(path, poll_s=0.2)
    assert app.error is not None
    assert run_every_key_everywhere(app, lambda: True, [None]) > 5
    assert kind == "corrupt" or not path.exists()  # nothing was created


def test_error_screen_palette_offers_no_latent_commands(tmp_path):
    app = AutointerpApp(tmp_path / "missing.db", poll_s=0.2)

    async def steps(pilot):
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"12", "enter")  # "go to latent 12" would need a database
        await pilot.pause(0.2)
        assert app.is_running and app.return_code is None
        assert list(app.palette_commands()) == []

    drive(app, steps)


# ---- history ------------------------------------------------------------------------------------------


def test_back_and_forward_after_jumps(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        lst = app.query_one(LatentList)
        await pilot.press("down", "down")  # latent 2: where the reader is when they jump
        await until(pilot, lambda: app.shown_latent == 2)
        app.jump(40)
        await until(pilot, lambda: app.shown_latent == 40)
        neighbour = app.query_one("#detail", LatentDetailView).detail.neighbours[0][0]
        app.query_one("#detail", LatentDetailView).focus()
        await pilot.press("n")  # the decoder neighbour picker, then enter jumps to the first
        await pilot.pause(0.1)
        await pilot.press("enter")
        await until(pilot, lambda: app.shown_latent == neighbour)
        assert app.latents.history.entries == [2, 40, neighbour]
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: app.shown_latent == 40)
        await pilot.press("alt+left")
        await until(pilot, lambda: app.shown_latent == 2 and lst.latent == 2)
        await pilot.press("left_square_bracket")  # nothing earlier: stays, says so
        await pilot.pause(0.1)
        assert app.shown_latent == 2
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: app.shown_latent == 40)
        await pilot.press("alt+right")
        await until(pilot, lambda: app.shown_latent == neighbour)
        # A go-to after going back drops the forward entries, as a web browser does.
        await pilot.press("left_square_bracket", "left_square_bracket")
        await until(pilot, lambda: app.shown_latent == 2)
        app.jump(7)
        await until(pilot, lambda: app.shown_latent == 7)
        assert app.latents.history.entries == [2, 7] and app.latents.history.at == 1

    drive(app, steps)


def test_history_is_bounded(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        for latent in range(150):
            app.jump(latent)
        from autointerp.tui.history import HISTORY_MAX

        assert len(app.latents.history.entries) <= HISTORY_MAX and app.latents.history.entries[-1] == 149

    drive(app, steps)


# ---- help, palette, search box, sorting -----------------------------------------------------------------


def test_help_lists_every_key_of_the_focused_screen(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        rows = help_rows(app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        shown = str(app.screen.query_one("#help-keys").render())
        # Every active binding of the list's screen (the list's own keys and the app's), with its description.
        # The list's own keys and the app's, each with its description.
        described = {description for _, description, _ in rows}
        assert {"up", "down", "first", "last", "back", "forward", "sort (cursor to top)", "quit", "keys"} <= described
        for keys, description, _ in rows:
            assert description in shown and keys.split(", ")[0] in shown
        assert "sort, keep latent" in shown and "back" in shown and "up" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    drive(app, steps)


def test_palette_commands_exist_and_run(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the export writes to the current directory
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        commands = dict(app.palette_commands())
        for name in (
            "Sort by detection − control",
            "Sort by fuzzing.recall − control",
            "Sort by frequency",
            "Explainer: default",
            "Audit: rate explanations",
            "Monitor: live progress of batch runs",
            "Plots: activation histogram and score distributions",
            "Filter or search: the query box (/)",
            "Export this latent as JSON (to the current directory)",
            "Detail: neighbours (n)",
        ):
            assert name in commands, name
        commands["Sort by detection − control"]()
        await until(pilot, lambda: app.order_settled and app.latents.sort == "detection-control")
        assert app.latents.descending and "detection − control" in str(app.query_one("#list-status").render())
        commands["Audit: rate explanations"]()
        await pilot.pause()
        assert app.query_one("TabbedContent").active == "audit"
        app.action_tab("latents")
        await until(pilot, lambda: app.shown_latent is not None)
        shown = app.shown_latent
        commands["Export this latent as JSON (to the current directory)"]()
        written = json.loads((tmp_path / f"autointerp-latent-{shown}.json").read_text())
        assert written["latent"] == shown and written["explanations"] and "vocab" not in written
        # Through the palette's own screen: typing a command's words finds it and enter runs it.
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"sort by frequency")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.order_settled and app.latents.sort == "frequency")

    drive(app, steps)


def test_escape_leaves_the_search_box_and_keeps_the_query(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        await pilot.press("slash", *"detection>0.6", "enter")
        await until(pilot, lambda: app.order_settled and app.latents.query_text == "detection>0.6")
        lst = app.query_one(LatentList)
        assert app.focused is lst and "query: detection>0.6" in str(lst.border_title)
        # The focus ring: the focused pane's border is drawn in another colour than an unfocused one's.
        assert lst.styles.border_top != app.query_one("#detail").styles.border_top
        await pilot.press("slash", "end", *" w1", "escape")
        assert app.focused is lst
        assert app.query_one("#query", Input).value == "detection>0.6 w1"  # what was typed stays in the box
        assert "query: detection>0.6" in str(lst.border_title)  # the query in force is shown

    drive(app, steps)


def test_sort_puts_the_cursor_on_top_and_shift_s_keeps_the_latent(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        lst = app.query_one(LatentList)
        await pilot.press(*["down"] * 5)
        await until(pilot, lambda: app.shown_latent == 5)
        await pilot.press("s")  # frequency, highest first: the cursor on the top row
        await until(pilot, lambda: app.order_settled and app.latents.sort == "frequency")
        assert lst.cursor == 0 and lst.latent == int(lst.ids[0]) != 5
        await until(pilot, lambda: app.shown_latent == lst.latent)
        await pilot.press("down", "down")
        kept = lst.ids[2]
        await pilot.press("S")  # the next sort, the same latent under the cursor
        await until(pilot, lambda: app.order_settled and app.latents.sort == "max_act")
        assert lst.latent == kept and lst.cursor == int((lst.ids == kept).nonzero()[0][0])

    drive(app, steps)


# ---- settings ----------------------------------------------------------------------------------------------


def test_settings_round_trip(db, tui_settings_file):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        app.theme = "textual-light"
        app.latents.sort_by("detection-control")
        await until(pilot, lambda: app.order_settled)
        await pilot.press("3")
        await pilot.pause()
        await pilot.press("q")

    drive(app, steps)
    text = tui_settings_file.read_text()
    assert 'theme = "textual-light"' in text and 'tab = "audit"' in text and 'sort = "detection-control"' in text
    # A key override, added by hand as a user would, rebinds `back` next time; the rest comes back as saved.
    tui_settings_file.write_text(text.replace("\n[keys]\n", '\n[keys]\nback = "b"\n'))
    again = AutointerpApp(db, poll_s=3600)

    async def steps2(pilot):
        await until(pilot, lambda: again.shown_latent is not None)  # after on_mount, which applies the settings
        assert again.theme == "textual-light" and again.latents.sort == "detection-control" and again.latents.descending
        assert again.query_one("TabbedContent").active == "audit"
        await pilot.press("2")
        await until(pilot, lambda: again.shown_latent is not None)
        first = again.shown_latent
        again.jump(33)
        await until(pilot, lambda: again.shown_latent == 33)
        await pilot.press("b")
        await until(pilot, lambda: again.shown_latent == first)

    drive(again, steps2)
    assert 'back = "b"' in tui_settings_file.read_text()  # the user's override is kept


def test_bad_settings_file_warns_once_uses_defaults_and_is_left_alone(db, tui_settings_file):
    tui_settings_file.write_text('[ui\ntheme = "nope"\n')
    before = tui_settings_file.read_bytes()
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        warnings = notes.messages()
        assert len(warnings) == 1 and "not read" in warnings[0] and "using defaults" in warnings[0]
        assert app.latents.sort == "latent" and app.query_one("TabbedContent").active == "latents"
        await pilot.press("q")

    notes = Notifications()
    drive(app, steps, notes=notes)
    assert tui_settings_file.read_bytes() == before


def test_the_detail_fills_in_when_annotation_lands_during_a_batch(db):
    """While a run is live, a latent shown before `autointerp annotate` wrote its lens is re-read until it has it."""
    with sqlite3.connect(db) as c:
        saved = c.execute("select * from directions").fetchall()
        c.execute("delete from directions")  # as when caching has ended and annotation has not yet run
    from autointerp.store.runs import RunLog

    log = RunLog(db, argv=["autointerp", "batch"], selection="all", config={})
    log._pool.submit(lambda: None).result()  # the run row is in the file
    app = AutointerpApp(db, poll_s=0.1)

    async def steps(pilot):
        await pilot.press("2")  # a running batch opens on the monitor
        await until(pilot, lambda: app.shown_latent is not None, timeout=15)
        view = app.query_one("#detail", LatentDetailView)
        assert "run `autointerp annotate DB`" in view.plain_text()
        with sqlite3.connect(db) as c:
            c.executemany(f"insert into directions values ({','.join('?' * len(saved[0]))})", saved)
        await until(pilot, lambda: view.detail is not None and bool(view.detail.promoted))
        assert "annotate" not in view.plain_text()
        assert app.query_one(LatentList).latent == app.shown_latent  # no key was pressed: the same latent

    drive(app, steps)
    log.finish("done", "")
