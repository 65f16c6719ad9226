"""The TUI's Plots tab (key 4), driven headless by Textual's pilot, and the Browser reads behind it, on a synthetic
database written by the real store code."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from autointerp.store.browse import CHECK_THREADS_ENV, Browser
from autointerp.store.synthetic import make_synthetic_db
from autointerp.tui.app import AutointerpApp
from autointerp.tui.plots import PlotsPane

SIZE = (150, 45)


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test (store/browse.py)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("plots") / "p.db", 200, explained=0.9, seed=1)


def sql(path: Path, query: str, args=()) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return c.execute(query, args).fetchall()


def test_score_histograms_count_every_scored_latent(db):
    browser = Browser.open(db)
    try:
        hists = browser.score_histograms("default", bins=10)
        assert [h.scorer for h in hists] == [s for (s,) in sql(db, "select distinct scorer from scores order by 1")]
        for h in hists:
            assert len(h.edges) == 11 and len(h.real) == len(h.control) == 10
            for counts, control in ((h.real, 0), (h.control, 1)):
                values = [
                    v
                    for (v,) in sql(
                        db, f"select {h.metric} from scores where scorer = ? and control = ?", [h.scorer, control]
                    )
                ]
                assert counts.sum() == len(values) > 0
                np.testing.assert_array_equal(counts, np.histogram(values, h.edges)[0])
        edges, counts = browser.activation_histogram(5)
        (stored,) = sql(db, "select hist_counts from latents where latent = 5")[0]
        assert counts.tolist() == json.loads(stored) and len(edges) == len(counts) + 1
        assert browser.activation_histogram(10**6) is None  # no such latent
    finally:
        browser.close()


def test_plots_tab_draws_the_latent_and_each_scorer_against_the_control(db):
    app = AutointerpApp(db, poll_s=3600)
    seen: dict = {}

    async def go():
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(500):  # the list's first latent is shown first
                if app.detail_count:
                    break
                await pilot.pause(0.02)
            await pilot.press("down", "down", "4")
            for _ in range(500):
                panes = app.query(PlotsPane)
                if panes and panes.first().drawn:
                    break
                await pilot.pause(0.02)
            pane = app.query_one(PlotsPane)
            assert pane.drawn, "the plots were never drawn"
            await pilot.pause()
            seen["tab"] = app.query_one("TabbedContent").active
            seen["latent"] = pane.latent
            seen["scorers"] = pane.scorers
            seen["text"] = pane.rendered_text()
            seen["head"] = str(pane.query_one("#latent-head").render())

    asyncio.run(go())
    assert seen["tab"] == "plots" and seen["latent"] == 2
    scorers = [s for (s,) in sql(db, "select distinct scorer from scores order by 1")]
    assert seen["scorers"] == scorers
    for scorer in scorers:
        assert f"{scorer}: " in seen["text"]
    assert seen["text"].count("random control") == len(scorers)
    (stored,) = sql(db, "select hist_counts from latents where latent = 2")[0]
    assert f"latent 2: activation histogram ({sum(json.loads(stored)):,} nonzero activations)" in seen["head"]
