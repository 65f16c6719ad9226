"""The cluster of a scaled-out batch (`autointerp batch --ray`) in the store and on the monitor: RunLog.worker's upserts
(schema 10's `workers`), their readback, the migration that adds the table, and the monitor's cluster view driven
headless on files written by the real RunLog."""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers.schema import to_schema_9
from helpers.tui import until
from textual.geometry import Region

from autointerp.store import browse, runs
from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.db import ActivationStore
from autointerp.store.runs import RunLog, worker_rows
from autointerp.store.schema import SCHEMA_VERSION
from autointerp.store.synthetic import make_synthetic_db
from autointerp.tui.app import AutointerpApp
from autointerp.tui.monitor import MonitorPane

SIZE = (150, 45)


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test (store/browse.py)


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)  # the snapshot is taken in colour, whatever the environment says


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("cluster") / "s.db", 120)


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    return Path(shutil.copy(base_db, tmp_path / "s.db"))


def flush(log: RunLog) -> None:
    log._pool.submit(lambda: None).result()  # every queued write is in the file


def read_workers(path: Path, run_id: int) -> list[dict]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return worker_rows(c, run_id)


def new_log(path: Path) -> RunLog:
    return RunLog(path, argv=["autointerp", "batch", "--ray"], selection="all", config={})


# ---- the store -----------------------------------------------------------------------------------------


def test_worker_upserts_one_row_per_worker_later_fields_win(db):
    log = new_log(db)
    log.worker("cache-0", "cache", node="10.0.0.1", pid=4242, state="busy", unit="chunk 12", rate=1234.0)
    log.worker("cache-0", "cache", rate_unit="tok/s", done=np.int64(3))  # numpy numbers are stored as numbers
    flush(log)
    (first,) = read_workers(db, log.id)
    assert first == {
        "worker": "cache-0",
        "role": "cache",
        "node": "10.0.0.1",
        "pid": 4242,
        "state": "busy",
        "unit": "chunk 12",
        "done": 3,
        "rate": 1234.0,
        "rate_unit": "tok/s",
        "rerun": 0,
        "error": None,
        "updated_at": first["updated_at"],
    }
    # It dies: the fields given win, unit=None clears what it was on, the others keep their values.
    log.worker("cache-0", "cache", state="dead", unit=None, error="node 10.0.0.1 lost", rerun=2, done="many")
    flush(log)
    (dead,) = read_workers(db, log.id)
    assert dead["updated_at"] > first["updated_at"]  # every call refreshes it
    assert {k: dead[k] for k in ("state", "unit", "error", "rerun", "done", "node", "pid", "rate")} == {
        "state": "dead",
        "unit": None,
        "error": "node 10.0.0.1 lost",
        "rerun": 2,
        "done": 3,  # "many" is no count: left out, never an error in the batch
        "node": "10.0.0.1",
        "pid": 4242,
        "rate": 1234.0,
    }
    log.worker("cache-0", "cache", rerun=5, state=None)  # None on a column that must hold a value: kept
    flush(log)
    (again,) = read_workers(db, log.id)
    assert (again["rerun"], again["state"]) == (5, "dead")
    with sqlite3.connect(db) as c:
        heartbeat = c.execute("select updated_at from runs where id = ?", [log.id]).fetchone()[0]
    assert heartbeat >= again["updated_at"]  # a worker report is a heartbeat of the run too
    log.finish("done", "ok")
    log.worker("cache-0", "cache", state="done")  # a late report after the end is dropped, never raised
    assert read_workers(db, log.id)[0]["state"] == "dead"


def test_worker_rows_order_and_defaults(db):
    log = new_log(db)
    for name, role in [("llm-10", "llm"), ("cache-10", "cache"), ("llm-2", "llm"), ("cache-2", "cache")]:
        log.worker(name, role)
    log.worker("cache-0", "cache", state="idle")
    other = new_log(db)
    other.worker("cache-0", "cache", state="busy")  # another run's worker of the same name is another row
    flush(log)
    flush(other)
    got = read_workers(db, log.id)
    assert [(w["role"], w["worker"]) for w in got] == [
        ("cache", "cache-0"),
        ("cache", "cache-2"),
        ("cache", "cache-10"),
        ("llm", "llm-2"),
        ("llm", "llm-10"),
    ]
    # A worker first seen without a state is starting, with nothing done and nothing re-run.
    assert [(w["state"], w["done"], w["rerun"]) for w in got[1:]] == [("starting", 0, 0)] * 4
    assert got[0]["state"] == "idle" and [w["state"] for w in read_workers(db, other.id)] == ["busy"]
    assert read_workers(db, 999) == []
    log.finish("done", "ok")
    other.finish("done", "ok")


def test_schema_9_file_is_migrated_keeping_its_rows(db):
    with sqlite3.connect(db) as c:
        before = {t: c.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "progress", "scores")}
        to_schema_9(c)
        assert c.execute("select 1 from sqlite_master where name = 'workers'").fetchone() is None
    c.close()
    with pytest.raises(Exception, match="autointerp upgrade"):
        ActivationStore.open(db, readonly=True)  # reading only never migrates
    with ActivationStore.open(db) as store:  # opening for writing does
        assert store.db.execute("select value from meta where key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        assert {t: store.db.execute(f"select count(*) from {t}").fetchone()[0] for t in before} == before
        cols = [r[1] for r in store.db.execute("pragma table_info(workers)")]
        assert cols == [
            "run",
            "worker",
            "role",
            "node",
            "pid",
            "state",
            "unit",
            "done",
            "rate",
            "rate_unit",
            "rerun",
            "error",
            "updated_at",
        ]
    log = new_log(db)
    log.worker("llm-0", "llm", state="busy", unit="latent 4312", rate=3.2, rate_unit="latents/min")
    log.finish("done", "ok")
    assert [(w["worker"], w["unit"]) for w in read_workers(db, log.id)] == [("llm-0", "latent 4312")]


# ---- the monitor ---------------------------------------------------------------------------------------


def drive(app: AutointerpApp, steps) -> None:
    async def go():
        async with app.run_test(size=SIZE) as pilot:
            await steps(pilot)

    asyncio.run(go())


def painted(widget) -> list:
    """The lines (Strips of styled segments) the widget paints on screen."""
    return list(widget.render_lines(Region(0, 0, widget.size.width, widget.size.height)))


def cells(widget) -> list[list[str]]:
    """The painted lines as table cells: the text split where two spaces or more part the columns."""
    return [re.split(r"\s{2,}", strip.text.strip()) for strip in painted(widget)]


def test_monitor_shows_the_cluster_of_a_running_batch(db):
    log = new_log(db)
    log.progress("cache", "tokens", {"total": 100_000, "done": 40_000}, started_at="2026-01-01")
    log.worker("cache-0", "cache", node="10.0.0.1", pid=11, state="busy", unit="chunk 12", done=11, rate=1234.0)
    log.worker("cache-0", "cache", rate_unit="tok/s")
    log.worker("cache-1", "cache", node="10.0.0.2", pid=12, state="dead", unit="chunk 7", done=4, rerun=2)
    log.worker("cache-1", "cache", error="node 10.0.0.2 lost: [bold]ray[/] heartbeat\ntimed out")
    log.worker("llm-0", "llm", node="10.0.0.9", state="busy", unit="latent 4312", done=17, rate=3.2)
    log.worker("llm-0", "llm", rate_unit="latents/min")
    log.worker("llm-1", "llm", node="10.0.0.9", state="restarting")
    flush(log)
    app = AutointerpApp(db, poll_s=0.1)

    async def steps(pilot):
        pane = app.query_one(MonitorPane)
        await until(pilot, lambda: pane.snapshot is not None and len(pane.snapshot.workers) == 4)
        await pilot.pause()
        cluster = pane.query_one(".m-cluster")
        assert cluster.display and cluster.border_title == "cluster"
        summary = str(pane.query_one(".m-cluster-summary").render())
        assert summary == "4 workers: 2 busy, 1 restarting, 1 dead; 2 chunks re-run"
        body = pane.query_one(".m-cluster-body")
        table = cells(body)
        assert table[0] == ["worker", "role", "node", "state", "on", "done", "rate", "rerun", "age", "error"]
        rows = {r[0]: r for r in table[1:]}
        assert list(rows) == ["cache-0", "cache-1", "llm-0", "llm-1"]
        assert rows["cache-0"][:7] == ["cache-0", "cache", "10.0.0.1", "busy", "chunk 12", "11", "1,234 tok/s"]
        assert rows["llm-0"][:7] == ["llm-0", "llm", "10.0.0.9", "busy", "latent 4312", "17", "3.2 latents/min"]
        assert rows["llm-1"][:7] == ["llm-1", "llm", "10.0.0.9", "restarting", "-", "0", "-"]
        # The dead worker: dead, in red, with its error on one line, literally (markup in it is not parsed).
        dead = rows["cache-1"]
        assert dead[:6] == ["cache-1", "cache", "10.0.0.2", "dead", "chunk 7", "4"]
        assert dead[-1] == "node 10.0.0.2 lost: [bold]ray[/] heartbeat timed out"
        assert dead[6:8] == ["-", "2"] and re.fullmatch(r"\d+s", dead[8])  # no rate, 2 chunks re-run, its age
        strip = painted(body)[2]
        state = next(seg for seg in strip if seg.text.strip() == "dead")
        colour = state.style.color.get_truecolor()
        assert state.style.bold and colour.red > 150 > max(colour.green, colour.blue)
        restarting = next(seg for seg in painted(body)[4] if seg.text.strip() == "restarting")
        assert restarting.style.color.get_truecolor() != state.style.color.get_truecolor()
        # The next report shows on the next poll: the worker comes back on another chunk.
        log.worker("cache-1", "cache", state="busy", unit="chunk 9", error=None)
        flush(log)
        await until(
            pilot, lambda: any(r[:5] == ["cache-1", "cache", "10.0.0.2", "busy", "chunk 9"] for r in cells(body))
        )
        assert str(pane.query_one(".m-cluster-summary").render()) == "4 workers: 3 busy, 1 restarting; 2 chunks re-run"
        assert cells(body)[0][-1] == "age"  # no error left: no error column
        log.finish("done", "ok")

    drive(app, steps)


def test_a_run_without_workers_shows_no_cluster(db):
    # The synthetic file's finished run has no workers; a later run of a cluster, then a later plain run.
    app = AutointerpApp(db, poll_s=0.1)

    async def steps(pilot):
        await pilot.press("1")
        await until(pilot, lambda: app.query(MonitorPane) and app.query_one(MonitorPane).snapshot is not None)
        pane = app.query_one(MonitorPane)
        assert pane.snapshot.workers == [] and not pane.query_one(".m-cluster").display
        cluster_run = new_log(db)
        cluster_run.worker("cache-0", "cache", state="busy")
        cluster_run.finish("done", "ok")
        await until(pilot, lambda: pane.query_one(".m-cluster").display)
        plain = new_log(db)  # the monitor shows the newest run, which has no workers
        plain.progress("explain", "latents", {"total": 20, "done": 5}, started_at="2026-01-01")
        flush(plain)
        await until(pilot, lambda: pane.snapshot.runs[0]["id"] == plain.id)
        await pilot.pause()
        assert pane.snapshot.workers == [] and not pane.query_one(".m-cluster").display
        plain.finish("done", "ok")

    drive(app, steps)


# ---- the snapshot --------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


class FrozenClock(datetime):
    """The monitor's reads see NOW, so the ages and the heartbeat in the snapshot are the same every time."""

    @classmethod
    def now(cls, tz=None):
        return NOW if tz is not None else NOW.replace(tzinfo=None)


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def test_monitor_with_a_three_worker_cluster(snap_compare, db, monkeypatch):
    log = new_log(db)
    log.set_latents(120)
    log.progress("cache", "tokens", {"total": 16_384, "done": 16_384, "wall_s": 40.0}, started_at=_ago(300), ended=True)
    log.progress(
        "explain",
        "latents",
        {"total": 120, "done": 48, "failed": 1, "prompts": 50, "prompt_tokens": 45_000, "output_tokens": 1_000},
        started_at=_ago(200),
    )
    log.worker("cache-0", "cache", node="10.0.0.1", pid=4101, state="done", done=3, rate=8192.0, rate_unit="tok/s")
    log.worker("cache-1", "cache", node="10.0.0.2", pid=4102, state="dead", unit="chunk 2", done=1, rerun=1)
    log.worker("cache-1", "cache", error="ActorDiedError: node 10.0.0.2 lost (raylet heartbeat timed out)")
    log.worker("http://10.0.0.9:8000/v1", "llm", node="10.0.0.9", state="busy", unit="latent 57", done=48)
    log.worker("http://10.0.0.9:8000/v1", "llm", rate=14.4, rate_unit="latents/min")
    log.event("cache", "warning", "cache-1 died (node 10.0.0.2 lost): chunk 2 re-run on cache-0")
    flush(log)
    # Pin what differs run to run: the process, host and time stamps the RunLog wrote.
    with sqlite3.connect(db) as c:
        c.execute(
            "update runs set started_at = ?, updated_at = ?, host = 'head-node', pid = 4100 where id = ?",
            [_ago(300), _ago(2), log.id],
        )
        c.execute(
            "update progress set updated_at = ?, wall_s = 200.0 where run = ? and ended_at is null", [_ago(2), log.id]
        )
        c.execute(
            "update progress set ended_at = ?, updated_at = ? where run = ? and stage = 'cache'",
            [_ago(250), _ago(250), log.id],
        )
        c.execute("update events set at = ? where run = ?", [_ago(130), log.id])
        for worker, age in (("cache-0", 250), ("cache-1", 130), ("http://10.0.0.9:8000/v1", 3)):
            c.execute("update workers set updated_at = ? where run = ? and worker = ?", [_ago(age), log.id, worker])
    c.close()
    log._pool.shutdown(wait=True)  # left `running`: the monitor shows it live
    log._conn.close()
    monkeypatch.setattr(browse, "datetime", FrozenClock)
    monkeypatch.setattr(runs, "datetime", FrozenClock)

    async def wait(pilot):
        for _ in range(500):
            panes = pilot.app.query("MonitorPane")
            if panes and panes.first().snapshot is not None and panes.first().snapshot.workers:
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(AutointerpApp(db, poll_s=3600), press=["1"], terminal_size=SIZE, run_before=wait)
