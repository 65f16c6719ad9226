"""Several raters: audits keyed by rater, agreement between raters (Cohen's kappa, Krippendorff's alpha) and between
each rater and the scorers, on hand-made ratings whose answers are worked out here, not by the code under test."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import invoke_cli
from rich.console import Console

from autointerp.store.audits import (
    RATINGS,
    agreement,
    audit_queue,
    rated_count,
    rater_agreement,
    write_audit,
)
from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.db import ActivationStore
from autointerp.store.synthetic import make_synthetic_db

N_LATENTS = 220


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("raters") / "s.db", N_LATENTS, explained=1.0, seed=1)


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    return Path(shutil.copy(base_db, tmp_path / "s.db"))


def rate_all(path: Path, ratings: dict[str, dict[int, str]]) -> None:
    """{rater: {latent: rating}} straight into `audits`, in one transaction (write_audit opens a connection per
    call: fine for a person pressing keys, slow for 600 ratings in a test)."""
    with sqlite3.connect(path) as c:
        c.executemany(
            "insert into audits (latent, explainer, rater, rating, flagged, created_at, updated_at)"
            " values (?, 'default', ?, ?, 0, 't', 't')",
            [(latent, rater, rating) for rater, rs in ratings.items() for latent, rating in rs.items()],
        )
    c.close()


def agreement_of(path: Path) -> dict:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        result = rater_agreement(c, "default")
    c.close()
    return result


def from_table(table: list[list[int]], labels: list[str]) -> tuple[list[str], list[str]]:
    """Two raters' ratings laid out from a contingency table: table[i][j] latents rated labels[i] by the first
    rater and labels[j] by the second."""
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [labels[i]] * count
            b += [labels[j]] * count
    return a, b


def hand_kappa(table: list[list[int]]) -> float:
    """Cohen's kappa from the table: (observed - chance agreement) / (1 - chance), chance from the margins."""
    n = sum(map(sum, table))
    observed = sum(table[i][i] for i in range(len(table))) / n
    rows = [sum(r) for r in table]
    cols = [sum(r[j] for r in table) for j in range(len(table))]
    chance = sum(r * c for r, c in zip(rows, cols)) / n**2
    return (observed - chance) / (1 - chance)


# ---- agreement between raters ----------------------------------------------------------------------------------


def test_two_raters_who_agree_on_everything_have_kappa_and_alpha_one(db):
    same = {x: RATINGS[x % 3] for x in range(12)}
    rate_all(db, {"ana": same, "bo": same})
    result = agreement_of(db)
    assert result["raters"] == [{"rater": "ana", "rated": 12}, {"rater": "bo", "rated": 12}]
    [pair] = result["pairs"]
    assert (pair["a"], pair["b"], pair["n"], pair["agree"]) == ("ana", "bo", 12, 1.0)
    assert pair["kappa"] == pytest.approx(1.0)
    assert result["alpha"] == pytest.approx(1.0) and result["alpha_n"] == 12


@pytest.mark.parametrize(
    "table, labels",
    [
        ([[20, 5], [10, 15]], ["correct", "wrong"]),  # 2x2: po 0.7, pe 0.5, kappa 0.4
        ([[8, 2, 0], [3, 6, 1], [1, 2, 7]], ["correct", "partly", "wrong"]),
    ],
)
def test_kappa_matches_the_hand_computed_value_of_a_table(db, table, labels):
    a, b = from_table(table, labels)
    rate_all(db, {"ana": dict(enumerate(a)), "bo": dict(enumerate(b))})
    [pair] = agreement_of(db)["pairs"]
    n = sum(map(sum, table))
    assert pair["n"] == n
    assert pair["agree"] == pytest.approx(sum(table[i][i] for i in range(len(table))) / n)
    assert pair["kappa"] == pytest.approx(hand_kappa(table), abs=1e-12)


def test_kappa_is_over_the_latents_both_rated_only(db):
    # bo rated 0..5 alike with ana and 100..109 that ana never saw: the pair compares only the 6 shared latents.
    ana = {x: RATINGS[x % 3] for x in range(10)}
    bo = {**{x: RATINGS[x % 3] for x in range(6)}, **{x: "wrong" for x in range(100, 110)}}
    rate_all(db, {"ana": ana, "bo": bo})
    result = agreement_of(db)
    [pair] = result["pairs"]
    assert pair["n"] == 6 and pair["kappa"] == pytest.approx(1.0)
    assert result["latents_rated"] == 20 and result["alpha_n"] == 6


def test_too_few_shared_latents_or_no_spread_give_no_figure(db):
    # One shared latent: nothing to compare. Then all "correct" on both sides: chance agreement is 1 (0/0).
    rate_all(db, {"ana": {0: "correct", 1: "wrong"}, "bo": {1: "partly", 2: "wrong"}})
    [pair] = agreement_of(db)["pairs"]
    assert pair["n"] == 1 and pair["kappa"] is None and agreement_of(db)["alpha"] is None
    rate_all(db, {"cy": {x: "correct" for x in range(10, 20)}, "di": {x: "correct" for x in range(10, 20)}})
    result = agreement_of(db)
    cy_di = next(p for p in result["pairs"] if (p["a"], p["b"]) == ("cy", "di"))
    assert cy_di["n"] == 10 and cy_di["agree"] == 1.0 and cy_di["kappa"] is None


def test_one_rater_has_no_pairs_and_no_alpha(db):
    rate_all(db, {"ana": {x: RATINGS[x % 3] for x in range(9)}})
    result = agreement_of(db)
    assert result["raters"] == [{"rater": "ana", "rated": 9}]
    assert result["pairs"] == [] and result["alpha"] is None


def test_three_raters_alpha_is_one_when_all_agree_and_near_zero_at_random(db, tmp_path):
    same = {x: RATINGS[x % 3] for x in range(30)}
    rate_all(db, {"ana": same, "bo": same, "cy": same})
    result = agreement_of(db)
    assert len(result["pairs"]) == 3 and all(p["kappa"] == pytest.approx(1.0) for p in result["pairs"])
    assert result["alpha"] == pytest.approx(1.0) and result["alpha_n"] == 30 and result["alpha_level"] == "ordinal"

    # Answers drawn independently at random over 200 latents: agreement is chance agreement, alpha about 0.
    rng = np.random.default_rng(7)
    other = make_synthetic_db(tmp_path / "r.db", N_LATENTS, explained=1.0, seed=1)
    rate_all(other, {name: {x: RATINGS[rng.integers(3)] for x in range(200)} for name in ("ana", "bo", "cy")})
    random = agreement_of(other)
    assert random["alpha_n"] == 200
    assert random["alpha"] is not None and abs(random["alpha"]) < 0.2
    assert all(abs(p["kappa"]) < 0.2 and p["n"] == 200 for p in random["pairs"])


# ---- the queue and the ratings vs scorers ----------------------------------------------------------------------


def test_audit_queue_puts_latents_this_rater_has_not_rated_first(db):
    rate_all(db, {"ana": {x: "correct" for x in range(5)}})
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        order = list(range(10))
        # ana rated 0..4: they go last for her; bo has rated nothing, so ana's ratings move nothing for him.
        assert audit_queue(c, "filtered", "default", filtered=order, rater="ana") == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
        assert audit_queue(c, "filtered", "default", filtered=order, rater="bo") == order
        random_bo = audit_queue(c, "random", "default", rater="bo")
        assert random_bo == audit_queue(c, "random", "default", rater="nobody")  # the same seeded shuffle
        assert (rated_count(c, "default", "ana"), rated_count(c, "default", "bo"), rated_count(c, "default")) == (
            5,
            0,
            5,
        )
    c.close()


def test_agreement_with_a_scorer_per_rater_and_pooled(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        scored = c.execute(
            "select latent, balanced_accuracy from scores where scorer = 'detection' and control = 0"
            " and balanced_accuracy is not null order by balanced_accuracy"
        ).fetchall()
    c.close()
    # One latent per metric value, so the 20 chosen have ranks 1..20 without ties.
    first_of = {}
    for latent, value in scored:
        first_of.setdefault(value, latent)
    ranked = list(first_of.values())  # ascending by metric
    low, high = ranked[:10], ranked[-10:]
    # ana: the 10 lowest wrong, the 10 highest correct; bo the reverse. Pooled, every latent's mean is 0.5.
    rate_all(
        db,
        {
            "ana": {**{x: "wrong" for x in low}, **{x: "correct" for x in high}},
            "bo": {**{x: "correct" for x in low}, **{x: "wrong" for x in high}},
        },
    )
    scorers = {"detection": "balanced_accuracy"}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        ana = agreement(c, "default", scorers, "ana")[0]
        bo = agreement(c, "default", scorers, "bo")[0]
        pooled = agreement(c, "default", scorers)[0]
    c.close()
    # Two tied groups of 10 (ranks 5.5 / 15.5, sd 5) against ranks 1..20 (sd sqrt(399/12)), covariance +-25.
    rho = 5 / np.sqrt(399 / 12)
    assert ana["n"] == bo["n"] == 20 and ana["spearman"] == pytest.approx(rho) and bo["spearman"] == pytest.approx(-rho)
    assert pooled["n"] == 20 and pooled["spearman"] is None  # no spread in the mean ratings
    assert pooled["n_by_rating"] == {"correct": 20, "partly": 0, "wrong": 20}  # every rating counted


# ---- the report and the export ---------------------------------------------------------------------------------


def test_report_json_has_the_raters_section_with_rater_agreement_numbers(db):
    r = invoke_cli("report", db, "--json")
    assert r.returncode == 0, r.stderr
    assert "raters" not in json.loads(r.stdout)  # nobody rated: no section
    a, b = from_table([[8, 2, 0], [3, 6, 1], [1, 2, 7]], list(RATINGS))
    rate_all(db, {"ana": dict(enumerate(a)), "bo": dict(enumerate(b)), "cy": dict(enumerate(a[:15]))})
    r = invoke_cli("report", db, "--json")
    assert r.returncode == 0, r.stderr
    raters = json.loads(r.stdout)["raters"]
    expected = agreement_of(db)
    assert {k: raters[k] for k in expected} == json.loads(json.dumps(expected))
    ana_bo = next(p for p in raters["pairs"] if (p["a"], p["b"]) == ("ana", "bo"))
    assert ana_bo["kappa"] == pytest.approx(hand_kappa([[8, 2, 0], [3, 6, 1], [1, 2, 7]]))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        for scorer, side in raters["scorers"].items():
            metric = {scorer: side["metric"]}
            assert side["pooled"]["spearman"] == pytest.approx(agreement(c, "default", metric)[0]["spearman"])
            for name in ("ana", "bo", "cy"):
                own = agreement(c, "default", metric, name)[0]
                assert side["by_rater"][name]["n"] == own["n"] and own["n"] > 0
                assert side["by_rater"][name]["spearman"] == pytest.approx(own["spearman"])
    c.close()
    text = invoke_cli("report", db).stdout
    assert "raters: ana 30, bo 30, cy 15" in text and "Cohen's kappa (unweighted)" in text
    assert "Krippendorff's alpha (ordinal" in text


def test_export_keeps_one_row_per_latent_with_several_raters(db, tmp_path):
    from autointerp.engine.commands.export.flat import flat_rows

    write_audit(db, 3, "default", "seen", rater="ana", rating="correct", note="fine")
    write_audit(db, 3, "default", "seen", rater="bo", rating="wrong", note="too broad", flagged=1)
    write_audit(db, 4, "default", "seen", rater="bo", rating="partly", explanation="mine")
    with ActivationStore.open(db, readonly=True) as store:
        rows = list(flat_rows(store, "default"))
    assert [r["latent"] for r in rows] == sorted({r["latent"] for r in rows})  # no latent twice
    by = {r["latent"]: r for r in rows}
    three, four = by[3], by[4]
    assert three["audit_ratings"] == {"ana": "correct", "bo": "wrong"} and three["audit_rating"] is None
    assert three["audit_mean"] == 0.5 and three["audit_flagged"] == 1
    assert three["audit_note"] == "ana: fine\nbo: too broad"
    assert (four["audit_rating"], four["audit_explanation"], four["audit_mean"]) == ("partly", "mine", 0.5)
    assert by[5]["audit_rating"] is None and by[5]["audit_ratings"] is None
    r = invoke_cli("export", db, "--format", "csv", "--out", tmp_path / "all.csv")
    assert r.returncode == 0, r.stderr
    import csv

    table = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert len(table) == len(rows)
    assert json.loads(next(t for t in table if t["latent"] == "3")["audit_ratings"]) == {
        "ana": "correct",
        "bo": "wrong",
    }


# ---- the TUI -----------------------------------------------------------------------------------------------------


def test_tui_rates_as_the_given_rater_and_shows_every_rater(db, monkeypatch):
    from textual.widgets import Static

    from autointerp.tui.app import AutointerpApp
    from autointerp.tui.audit import AuditPane
    from autointerp.tui.detail import LatentDetailView
    from autointerp.tui.latent_list import LatentList

    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a Browser read by two threads fails the test
    monkeypatch.setenv("AUTOINTERP_RATER", "someone-else")  # --rater wins over the environment
    app = AutointerpApp(db, poll_s=3600, rater="bo")
    seen: dict = {}

    def agree_text(pane: AuditPane) -> str:
        console = Console(width=200, file=io.StringIO(), record=True)
        console.print(pane.query_one(".a-agree", Static).content)
        return console.export_text()

    async def steps(pilot):
        for _ in range(500):
            if app.detail_count:
                break
            await pilot.pause(0.02)
        await pilot.press("3")
        pane = app.query_one(AuditPane)
        for _ in range(100):
            if pane.queue:
                break
            await pilot.pause(0.02)
        first = pane.queue[:3]
        seen["first"] = first
        seen["head"] = str(pane.query_one(".a-head", Static).content)
        # ana rates the same three latents from another process while bo has the pane open.
        for latent, rating in zip(first, ("correct", "partly", "wrong")):
            write_audit(db, latent, "default", "seen", rater="ana", rating=rating)
        await pilot.press("c", "c", "w")
        await pilot.pause()
        await pilot.press("left", "left", "left")  # back to the first: its detail shows both raters
        await pilot.pause()
        seen["audit_detail"] = pane.query_one(LatentDetailView).plain_text()
        seen["agree"] = agree_text(pane)
        await pilot.press("2")
        app.query_one(LatentList).go_to(first[1])
        for _ in range(500):
            if app.shown_latent == first[1]:
                break
            await pilot.pause(0.02)
        seen["browse_detail"] = app.query_one("#detail", LatentDetailView).plain_text()

    async def go():
        async with app.run_test(size=(150, 45)) as pilot:
            await steps(pilot)

    asyncio.run(go())
    first = seen["first"]
    assert "rater: bo" in seen["head"] and "rated by you: 0" in seen["head"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        rows = c.execute("select latent, rater, rating from audits order by rater, latent").fetchall()
    c.close()
    assert sorted(r for r in rows if r[1] == "bo") == sorted(zip(first, ["bo"] * 3, ["correct", "correct", "wrong"]))
    assert {r[1] for r in rows} == {"ana", "bo"}  # nothing under the environment's name
    assert "audit: ana: correct · bo: correct" in seen["audit_detail"]
    assert "audit: ana: partly · bo: correct" in seen["browse_detail"]
    assert "ana – bo" in seen["agree"] and "Krippendorff α (ordinal)" in seen["agree"] and "ρ yours" in seen["agree"]
