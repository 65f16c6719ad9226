"""The tab registry (tui/tabs.py) is the one place a tab is declared: a toy tab registered with one line is
composed by the real app, labelled with its key, reached from the palette, focused, and fed the monitor's polls;
the tabs' modules are imported only when the app composes them."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from helpers.tui import until
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static, TabbedContent

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.evidence import ScorerEvidence
from autointerp.store.synthetic import make_synthetic_db
from autointerp.store.views import MonitorSnapshot
from autointerp.tui.app import AutointerpApp
from autointerp.tui.tab import AppTab
from autointerp.tui.tabs import TABS, tab_bindings, tab_class


class ToyPane(Static, can_focus=True):
    pass


class ToyTab(AppTab):
    """Shows how many latents are explained, as the monitor's polls report it."""

    TITLE = "Toy"
    PALETTE = "a tab from the tests"

    def compose(self) -> ComposeResult:
        yield ToyPane("no poll yet")

    def focus_content(self) -> None:
        self.query_one(ToyPane).focus()

    def results_read(self, snapshot: MonitorSnapshot, evidence: ScorerEvidence | None, changed: set[str]) -> None:
        self.query_one(ToyPane).update(f"{snapshot.counts['explained']} explained")


class NotATab(Static):
    pass


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test (store/browse.py)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(TABS, "toy", (__name__, "ToyTab"))  # the one line a new tab adds
    return "toy"


def test_a_registered_tab_is_composed_labelled_reached_and_polled(toy, tmp_path):
    db = make_synthetic_db(tmp_path / "s.db", 40)
    app = AutointerpApp(db, poll_s=0.05)
    explained = {}

    async def go():
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: app.detail_count >= 1)
            tabs = app.query_one(TabbedContent)
            assert [app.tabs[name].id for name in app.tabs] == ["monitor", "latents", "audit", "plots", "probe", "toy"]
            assert tabs.get_tab("toy").label_text == "Toy [6]"  # its key: its place in the table
            dict(app.palette_commands())["Toy: a tab from the tests"]()
            pane = app.query_one(ToyPane)
            await until(pilot, lambda: tabs.active == "toy" and app.focused is pane)
            await until(pilot, lambda: "explained" in str(pane.render()))
            explained["shown"] = str(pane.render())
            explained["counted"] = app.browser.monitor().counts["explained"]

    asyncio.run(go())
    assert explained["shown"] == f"{explained['counted']} explained"


def test_the_tab_keys_come_from_the_table(toy):
    keys = [(b.key, b.action, b.description, b.id) for b in tab_bindings() if isinstance(b, Binding)]
    assert keys == [
        ("1", "tab('monitor')", "monitor", "monitor"),
        ("2", "tab('latents')", "latents", "latents"),
        ("3", "tab('audit')", "audit", "audit"),
        ("4", "tab('plots')", "plots", "plots"),
        ("5", "tab('probe')", "probe", "probe"),
        ("6", "tab('toy')", "toy", "toy"),
    ]


def test_an_entry_that_is_not_a_tab_is_refused(monkeypatch):
    monkeypatch.setitem(TABS, "bad", (__name__, "NotATab"))
    with pytest.raises(TypeError, match="bad"):
        tab_class("bad")


def test_the_tabs_modules_are_imported_only_when_the_app_composes_them():
    code = "import sys, autointerp.tui.app; print(sorted(m for m in sys.modules if m.endswith('_tab')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert tab_class("plots").__module__ == "autointerp.tui.plots_tab"
