"""One SQLite connection per reader: a Browser is read by one thread at a time, and either by the main (UI) thread
or by workers, never both. With AUTOINTERP_CHECK_THREADS=1 each read checks it (store/browse.py); the TUI keeps
to it while the detail worker loads and the audit pane reads (the pane once shared the worker's Browser)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers.tui import until

from autointerp.store.browse import CHECK_THREADS_ENV, Browser, ThreadMisuse
from autointerp.store.synthetic import make_synthetic_db
from autointerp.tui.app import AutointerpApp
from autointerp.tui.audit import AuditPane
from autointerp.tui.detail import LatentDetailView


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("threads") / "s.db", 40)


def run_in_thread(fn):
    """fn() on a new (worker) thread; its result, or the exception it raised."""
    out = {}

    def go():
        try:
            out["value"] = fn()
        except Exception as e:  # handed back to the test
            out["value"] = e

    t = threading.Thread(target=go)
    t.start()
    t.join(30)
    assert not t.is_alive()
    return out["value"]


def test_two_threads_at_once_are_refused_one_after_another_is_not(db):
    browser = Browser.open(db)
    inside, release = threading.Event(), threading.Event()

    def held_ids():  # rows() consumes its latents inside the read: the worker holds the connection until released
        inside.set()
        assert release.wait(30)
        yield 0

    holder = threading.Thread(target=lambda: browser.rows(held_ids()))
    holder.start()
    assert inside.wait(30)
    clash = run_in_thread(browser.n_latents)
    release.set()
    holder.join(30)
    assert isinstance(clash, ThreadMisuse) and "two threads at once" in str(clash)
    # Workers taking turns (as the TUI's workers do, under a lock) is fine.
    assert run_in_thread(browser.n_latents) == 40
    assert run_in_thread(lambda: browser.detail(1).latent) == 1
    browser.close()


def test_main_thread_and_workers_never_share_a_browser(db):
    worker_side = Browser.open(db)
    assert run_in_thread(lambda: worker_side.detail(0).latent) == 0
    with pytest.raises(ThreadMisuse, match="read by workers is now read by the main thread"):
        worker_side.detail(0)
    main_side = Browser.open(db)
    assert main_side.n_latents() == 40
    clash = run_in_thread(main_side.scorers)
    assert isinstance(clash, ThreadMisuse) and "read by the main thread is now read by a worker" in str(clash)
    # Without the variable nothing is checked (the installed TUI pays for no checks).
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(CHECK_THREADS_ENV)
        unchecked = Browser.open(db)
    assert run_in_thread(unchecked.n_latents) == 40 and unchecked.n_latents() == 40
    for b in (worker_side, main_side, unchecked):
        b.close()


def test_refresh_from_another_thread_is_applied_by_the_reader(db, tmp_path):
    path = tmp_path / "r.db"
    path.write_bytes(db.read_bytes())
    browser = Browser.open(path)
    before = run_in_thread(browser.scorers)
    with sqlite3.connect(path) as c:
        c.execute("update scores set scorer = 'renamed' where scorer = ?", [next(iter(before))])
    assert run_in_thread(browser.scorers) == before  # read once, until refreshed
    browser.refresh()  # from the main thread, on a worker's browser: only marks it
    after = run_in_thread(browser.scorers)
    assert "renamed" in after and next(iter(before)) not in after
    browser.close()


def test_audit_mode_while_the_detail_worker_loads(db, tmp_path):
    """Browse (details load on a worker), rate in audit mode (reads on the UI thread), browse again: with the
    checks on, a Browser shared between the two would raise ThreadMisuse on the UI thread and end the app."""
    path = tmp_path / "a.db"
    path.write_bytes(db.read_bytes())
    app = AutointerpApp(path, poll_s=0.05)  # monitor polls on their own worker all along

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        for wanted in (2, 4, 6):
            await pilot.press("2", "down", "down", "3")  # a detail load is under way as audit mode reads
            await until(pilot, lambda: app.query_one(AuditPane).latent is not None)
            await pilot.press("c", "right", "f")
            await until(pilot, lambda w=wanted: app.shown_latent == w)
        assert "latent" in app.query_one(AuditPane).query_one(LatentDetailView).plain_text()
        await pilot.press("q")

    async def go():
        async with app.run_test(size=(150, 45)) as pilot:
            await steps(pilot)

    asyncio.run(go())
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        assert c.execute("select count(*) from audits where rating = 'correct'").fetchone()[0] == 3
