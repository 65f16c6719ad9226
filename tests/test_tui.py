"""The Textual app driven headless (Textual's pilot) on databases written by the real store code."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers.tui import Notifications, until

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.db import ActivationStore
from autointerp.store.runs import RunLog
from autointerp.store.schema import SCHEMA_VERSION
from autointerp.store.synthetic import home_token, make_synthetic_db
from autointerp.tui.app import AutointerpApp
from autointerp.tui.audit import AuditPane
from autointerp.tui.detail import LatentDetailView
from autointerp.tui.heatmap import MONO_STYLES, heat_text, visible
from autointerp.tui.latent_list import LatentList
from autointerp.tui.monitor import MonitorPane

SIZE = (150, 45)


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    # Every Browser read checks that no connection is read by two threads at once, nor by both the UI thread and a
    # worker (store/browse.py): a sharing mistake fails these tests every time instead of racing now and then.
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("tui") / "s.db", 300)


@pytest.fixture
def db(synthetic_db, tmp_path) -> Path:
    return Path(shutil.copy(synthetic_db, tmp_path / "s.db"))


def sql(path: Path, query: str, args=()) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return c.execute(query, args).fetchall()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def drive(app: AutointerpApp, steps, notes: Notifications | None = None) -> None:
    """Run the app headless and hand its pilot to `steps` (an async function); `notes` records notifications."""

    async def go():
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await steps(pilot)

    asyncio.run(go())


def detail_text(app) -> str:
    return app.query_one("#detail", LatentDetailView).plain_text()


# ---- browsing -----------------------------------------------------------------------------------------


def test_list_and_detail_follow_the_cursor(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        lst = app.query_one(LatentList)
        assert lst.ids.tolist() == [r[0] for r in sql(db, "select latent from latents order by latent")]
        assert app.shown_latent == 0 and "latent 0 " in detail_text(app)
        await pilot.press("down", "down")
        await until(pilot, lambda: app.shown_latent == 2)
        text = detail_text(app)
        expl = sql(db, "select text from explanations where latent = 2")[0][0]
        bal, ctrl = (
            r[0]
            for r in sql(
                db, "select balanced_accuracy from scores where latent = 2 and scorer = 'detection' order by control"
            )
        )
        assert expl in text
        assert re.search(rf"detection\s+bal\.acc\s+{bal:.3f}\s+{ctrl:.3f}", text), text
        # Examples by decile, strongest first, and the logit lens through the vocab table.
        assert text.index("decile 10") < text.index("decile 9")
        home = sql(db, "select token from vocab where id = ?", [home_token(2, 4096)])[0][0]
        assert re.search(rf"^{re.escape(visible(home))} +\+3\.00 │", text, re.M)  # first promoted, left column
        # The list row shows the same metric the detail does.
        assert f"{bal:.3f}" in lst.row_text(2)

    drive(app, steps)


def test_sort_filter_and_search_match_sql(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        lst = app.query_one(LatentList)
        while app.latents.sort != "detection":
            await pilot.press("s")
        await until(pilot, lambda: app.order_settled)  # orders are read on a worker thread
        want = [
            r[0]
            for r in sql(
                db,
                "select l.latent from latents l left join scores s on s.latent = l.latent and"
                " s.scorer = 'detection' and s.control = 0 order by s.balanced_accuracy is null,"
                " s.balanced_accuracy desc, l.latent",
            )
        ]
        assert lst.ids.tolist() == want
        await pilot.press("r")
        await until(pilot, lambda: app.order_settled)
        assert (
            lst.ids.tolist()[: len(want) // 2]
            == sorted(
                want[: sum(1 for r in sql(db, "select 1 from scores where scorer='detection' and control=0"))],
                key=lambda x: dict(
                    sql(db, "select latent, balanced_accuracy from scores where scorer='detection' and control=0")
                )[x],
            )[: len(want) // 2]
        )
        # Score-range filter plus full-text search (prefix match on the last word).
        await pilot.press("slash")
        await pilot.press(*"detection<0.7 w12", "enter")
        await until(pilot, lambda: app.order_settled)
        got = set(lst.ids.tolist())
        low = {
            r[0]
            for r in sql(
                db, "select latent from scores where scorer='detection' and control=0 and balanced_accuracy < 0.7"
            )
        }
        named = {r[0] for r in sql(db, "select latent, text from explanations") if re.search(r'"w12\d*"', r[1])}
        assert got == low & named and len(got) > 0
        # An unknown column is reported and changes nothing.
        before = lst.ids.tolist()
        await pilot.press("slash", *"nosuch>1", "enter")
        await until(pilot, lambda: app.order_settled)
        assert lst.ids.tolist() == before
        assert any("unknown column 'nosuch'" in m for m in notes.messages())

    notes = Notifications()
    drive(app, steps, notes)


def test_palette_jumps_to_a_latent_and_neighbours_jump(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"123")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.shown_latent == 123)
        assert app.query_one(LatentList).latent == 123
        first = int(
            np.asarray(__import__("json").loads(sql(db, "select neighbours from directions where latent = 123")[0][0]))[
                0
            ][0]
        )
        app.query_one("#detail", LatentDetailView).focus()
        await pilot.press("n")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await until(pilot, lambda: app.shown_latent == first)

    drive(app, steps)


def test_markup_and_whitespace_in_corpus_render_literally(db):
    latent = 7
    with sqlite3.connect(db) as c:
        c.execute("update vocab set token = '[bold red]x[/]' where id = ?", [home_token(latent, 4096)])
        c.execute("update vocab set token = ? where id = ?", ["\n", 1])
        c.execute("update explanations set text = ? where latent = ?", ['fires on "[/]" and [b]tags[/b]', latent])
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        app.query_one(LatentList).go_to(latent)
        await until(pilot, lambda: app.shown_latent == latent)
        text = detail_text(app)
        assert "[bold red]x[/]" in text
        assert 'fires on "[/]" and [b]tags[/b]' in text
        assert 'fires on "[/]" and [b]tags[/b]' in app.query_one(LatentList).row_text(latent)

    drive(app, steps)
    assert visible("\n") == "↵" and visible("  ") == "··" and visible("\t") == "⇥" and visible("a\x01") == "a\\x01"


def test_terminal_escapes_in_the_database_are_shown_not_obeyed(db):
    """An audit note, an explanation, a failure reason and an event message holding escape sequences (colour, window
    title, bidi override) reach the screen spelled out; no raw ESC / BEL / U+202E ever does."""
    latent = 7
    red, title, bidi = "\x1b[31mRED", "\x1b]0;pwned\x07", "abc\u202edef"
    with sqlite3.connect(db) as c:
        c.execute("update explanations set text = ? where latent = ?", [f"fires on {red} {bidi}", latent])
        c.execute(
            "insert or replace into audits (latent, explainer, rater, rating, explanation, note, flagged,"
            " explanation_seen, created_at, updated_at) values (?, 'default', ?, 'wrong', ?, ?, 0, '', 't', 't')",
            [latent, f"ana {bidi}", f"mine {title}", f"note {red}"],
        )
        c.execute(
            "insert into events (at, stage, kind, message, data) values ('2026-01-01T00:00:00', 'score', "
            "'warning', ?, '{}')",
            [f"server said {red}"],
        )
    app = AutointerpApp(db, poll_s=3600)
    seen = {}

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        app.query_one(LatentList).go_to(latent)
        await until(pilot, lambda: app.shown_latent == latent)
        seen["detail"] = detail_text(app)
        seen["row"] = app.query_one(LatentList).row_text(latent)
        seen["screen"] = app.export_screenshot()
        await pilot.press("1")
        await pilot.pause(0.3)
        seen["monitor"] = app.export_screenshot()

    drive(app, steps)
    detail = seen["detail"]
    assert "fires on \\e[31mRED abc\\u202edef" in detail and "\\e[31mRED abc" in seen["row"]
    assert "ana abc\\u202edef's explanation: mine \\e]0;pwned\\x07" in detail
    assert "ana abc\\u202edef's note: note \\e[31mRED" in detail
    for shown in seen.values():
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown


def test_strength_survives_no_color():
    text = heat_text(["a", "b", "c"], [0.0, 1.0, 5.0], 5.0, mono=True)
    styles = {text.plain[s.start : s.end]: s.style for s in text.spans}
    assert "a" not in styles
    assert styles["b"] == MONO_STYLES[0] and styles["c"] == MONO_STYLES[3]
    assert styles["c"].bold and styles["c"].reverse and styles["b"].underline


# ---- the monitor --------------------------------------------------------------------------------------


def test_monitor_follows_a_run_written_by_another_process(db):
    log = RunLog(db, argv=["autointerp", "batch"], selection="top:20", config={})
    log.set_latents(20)
    log.progress("explain", "latents", {"total": 20, "done": 5, "failed": 1, "prompts": 5}, started_at="2026-01-01")
    log.event("explain", "outage", "backend unreachable; retrying")
    log._pool.submit(lambda: None).result()  # the writes are in the file
    app = AutointerpApp(db, poll_s=0.1)

    async def steps(pilot):
        pane = app.query_one(MonitorPane)
        await until(pilot, lambda: pane.snapshot is not None)
        assert app.query_one("TabbedContent").active == "monitor"  # a running batch opens on the monitor
        assert pane.snapshot.runs[0]["id"] == log.id and pane.snapshot.runs[0]["status"] == "running"
        assert "5/20 latents" in str(pane.query_one(".m-explain").render())
        assert any(e["kind"] == "outage" for e in pane.snapshot.events)
        log.progress("explain", "latents", {"total": 20, "done": 12, "failed": 1}, started_at="2026-01-01")
        log._pool.submit(lambda: None).result()
        await until(pilot, lambda: "12/20 latents" in str(pane.query_one(".m-explain").render()))
        log.finish("done", "all stages done")
        await until(pilot, lambda: pane.snapshot.runs[0]["status"] == "done")
        # A run that stopped writing its heartbeat long ago reads as probably killed.
        with sqlite3.connect(db) as c:
            c.execute(
                "update runs set status = 'running', updated_at = '2026-01-01T00:00:00+00:00' where id = ?", [log.id]
            )
        await until(pilot, lambda: "probably killed" in str(pane.query_one(".m-head").render()))

    drive(app, steps)


# ---- audit mode -----------------------------------------------------------------------------------------


def test_audit_ratings_are_stored_with_time_stamps(db):
    app = AutointerpApp(db, poll_s=3600)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        await pilot.press("3")
        pane = app.query_one(AuditPane)
        first = pane.latent
        assert first is not None
        await pilot.press("c")
        second = pane.latent
        await pilot.press("o", *"my own words", "enter")
        await pilot.press("n", *"odd one", "enter", "f", "w")
        await pilot.pause()
        rows = {
            r[0]: r[1:]
            for r in sql(
                db,
                "select latent, rating, explanation, note, flagged, created_at,"
                " updated_at, explanation_seen from audits",
            )
        }
        assert rows[first][0] == "correct"
        assert rows[second][:4] == ("wrong", "my own words", "odd one", 1)
        assert rows[second][4] <= rows[second][5] and rows[second][6]
        # Queue "lowest": the lowest detection score first (rated latents go last).
        await pilot.press("m")
        assert pane.mode == "lowest"
        scores = dict(sql(db, "select latent, balanced_accuracy from scores where scorer='detection' and control=0"))
        unrated = [x for x in pane.queue if x not in rows]
        assert unrated[:5] == sorted(unrated, key=lambda x: scores.get(x, 9))[:5]

    drive(app, steps)
    from autointerp.engine.commands.export.flat import flat_rows

    with ActivationStore.open(db, readonly=True) as store:
        exported = {r["latent"]: r for r in flat_rows(store, "default")}
    assert any(r["audit_rating"] == "wrong" and r["audit_explanation"] == "my own words" for r in exported.values())


def test_agreement_between_ratings_and_scores(db):
    from autointerp.store.audits import agreement, write_audit

    scores = sql(
        db,
        "select latent, balanced_accuracy from scores where scorer='detection' and control=0"
        " order by balanced_accuracy",
    )
    # Rate the 10 lowest wrong and the 10 highest correct: a perfect rank agreement.
    for latent, _ in scores[:10]:
        write_audit(db, latent, "default", None, rating="wrong")
    for latent, _ in scores[-10:]:
        write_audit(db, latent, "default", None, rating="correct")
    with sqlite3.connect(db) as c:
        rows = {r["scorer"]: r for r in agreement(c, "default", {"detection": "balanced_accuracy"})}
    d = rows["detection"]
    assert d["n"] == 20 and d["n_by_rating"]["correct"] == 10
    # Spearman's rho is Pearson's r of the ranks, ties given their mean rank: the ratings are two tied groups of 10
    # (ranks 5.5 / 15.5); the metrics (balanced accuracies of 20 examples: some equal) rank 1..20 with their ties.
    metric = np.array([v for _, v in scores[:10] + scores[-10:]])
    metric_ranks = np.array([np.mean(np.flatnonzero(np.sort(metric) == v)) + 1 for v in metric])
    rating_ranks = np.repeat([5.5, 15.5], 10)
    assert d["spearman"] == pytest.approx(np.corrcoef(rating_ranks, metric_ranks)[0, 1], abs=1e-9)
    assert d["spearman"] > 0.8  # the 10 lowest rated wrong, the 10 highest correct: near-perfect agreement
    assert d["mean_by_rating"]["correct"] > d["mean_by_rating"]["wrong"]


# ---- bad input -------------------------------------------------------------------------------------------


def _error_shown(path: Path) -> str:
    app = AutointerpApp(path, poll_s=3600)
    seen = {}

    async def steps(pilot):
        await pilot.pause()
        seen["text"] = str(app.query_one("#error").render())
        await pilot.press("q")

    drive(app, steps)
    assert app.error is not None
    return seen["text"]


def test_bad_databases_get_one_message_and_stay_untouched(tmp_path, db):
    missing = tmp_path / "missing.db"
    assert "does not exist" in _error_shown(missing) and not missing.exists()

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("create table x (a)")
    before = sha(foreign)
    assert "not an autointerp database" in _error_shown(foreign)
    assert sha(foreign) == before

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    assert "not an SQLite database" in _error_shown(junk)

    with sqlite3.connect(db) as c:
        c.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    before = sha(db)
    assert "newer than this autointerp" in _error_shown(db)
    assert sha(db) == before

    with sqlite3.connect(db) as c:
        c.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION - 1)])
    assert "autointerp upgrade" in _error_shown(db)


def test_empty_database_and_latent_without_examples(tmp_path, db):
    empty = tmp_path / "empty.db"
    ActivationStore.open(empty, create=True).close()
    before = sha(empty)
    app = AutointerpApp(empty, poll_s=0.1)

    async def steps(pilot):
        await until(pilot, lambda: app.query(MonitorPane) and app.query_one(MonitorPane).snapshot is not None)
        assert "no batch has run" in str(app.query_one(MonitorPane).query_one(".m-head").render())
        await pilot.press("2")
        assert "holds no latents yet" in detail_text(app)

    drive(app, steps)
    assert sha(empty) == before

    with sqlite3.connect(db) as c:
        c.execute("delete from segments where latent = 9")
    app = AutointerpApp(db, poll_s=3600)

    async def steps2(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        app.query_one(LatentList).go_to(9)
        await until(pilot, lambda: app.shown_latent == 9)
        assert "no activating examples" in detail_text(app)

    drive(app, steps2)


def test_strength_buckets_stay_distinct_in_256_colours():
    from rich.color import ColorSystem
    from rich.style import Style

    from autointerp.tui.heatmap import COLOUR_STYLES

    backgrounds = set()
    for style in COLOUR_STYLES:
        # A fresh Style, rendered for a 256-colour terminal: rich caches a style's escape codes (and combined
        # styles) on first render, whatever the colour system was (an earlier test's truecolor screenshot).
        fresh = Style(color=style.color, bgcolor=style.bgcolor, bold=style.bold, underline=style.underline)
        shown = fresh.render("x", color_system=ColorSystem.EIGHT_BIT)
        codes = re.findall(r"48;5;(\d+)", shown)
        assert codes, shown
        backgrounds.add(codes[0])
    assert len(backgrounds) == len(COLOUR_STYLES)


def test_cursor_stays_on_screen_and_new_scorers_get_a_column(db, tmp_path):
    with sqlite3.connect(db) as c:
        saved = c.execute("select * from scores").fetchall()
        c.execute("delete from scores")
    app = AutointerpApp(db, poll_s=0.1)

    async def steps(pilot):
        await until(pilot, lambda: app.detail_count >= 1)
        lst = app.query_one(LatentList)
        assert lst.scorers == [] and "detect" not in lst.header()
        for _ in range(60):
            await pilot.press("down")
        await until(pilot, lambda: app.shown_latent == int(lst.ids[60]))
        visible_rows = lst.scrollable_content_region.height
        assert lst.scroll_offset.y <= lst.cursor < lst.scroll_offset.y + visible_rows
        # Scores written by a batch while the TUI is open: their columns appear without a key press.
        with sqlite3.connect(db) as c:
            c.executemany(f"insert into scores values ({','.join('?' * len(saved[0]))})", saved)
        await until(pilot, lambda: lst.scorers == ["detection", "embedding", "fuzzing"])
        assert lst.latent == int(lst.ids[lst.cursor])
        header = lst.header().split()
        assert {"detection", "embedding", "fuzzing"} <= set(header)  # whole names, not cut to six letters
        row = lst.row_text(lst.cursor)
        assert len(row) >= len(lst.header()) - len("  explanation")  # each metric under its whole-width column

    drive(app, steps)
