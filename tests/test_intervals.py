"""Error bars: each score row's 95% intervals (scores.ci), computed by engine/interpretation/intervals.py when the score
stage writes the row and by `autointerp upgrade` for rows made before schema 13; shown by the report (with the count
of latents whose interval overlaps their control's), compare, the TUI's scores table and the flat exports."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sqlite3
import zlib

import numpy as np
import pytest
from helpers.cli import invoke_cli
from helpers.databases import copy_db
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import explain_and_score, llm_stage_config
from helpers.schema import to_schema_12
from scipy.stats import norm

from autointerp.engine.interpretation.intervals import (
    N_RESAMPLES,
    outcomes_from_stored,
    overlaps,
    row_intervals,
    score_intervals,
)
from autointerp.engine.interpretation.metrics import ExampleOutcome, classification_metrics
from autointerp.engine.interpretation.scorers.simulation import simulation_correlations
from autointerp.store.db import ActivationStore
from autointerp.store.synthetic import make_synthetic_db


def textbook_wilson(k: int, n: int, z: float = norm.ppf(0.975)) -> tuple[float, float]:
    """Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def outcomes(labels, predictions, probabilities=None) -> list[ExampleOutcome]:
    probabilities = [None] * len(labels) if probabilities is None else probabilities
    return [
        ExampleOutcome(int(y), int(y), None if p is None else int(p), None if s is None else float(s))
        for y, p, s in zip(labels, predictions, probabilities)
    ]


# ---- the intervals themselves -----------------------------------------------------------------------------------


def test_proportions_get_wilson_intervals():
    # 10 positives (7 found), 10 negatives (8 rejected): accuracy 15/20, precision 7/9, recall 7/10
    ex = outcomes([1] * 10 + [0] * 10, [1] * 7 + [0] * 3 + [1] * 2 + [0] * 8)
    ci = score_intervals(ex, classification_metrics(ex))
    for metric, (k, n) in {"accuracy": (15, 20), "precision": (7, 9), "recall": (7, 10)}.items():
        assert ci[metric] == pytest.approx(textbook_wilson(k, n), abs=1e-6), metric
    assert ci["recall"] == pytest.approx([0.3968, 0.8922], abs=1e-4)  # the published 7-of-10 Wilson interval
    # all right: the interval still has width (a Wald interval would be [1, 1])
    ex = outcomes([1] * 12, [1] * 12)
    assert score_intervals(ex, classification_metrics(ex))["recall"] == pytest.approx(textbook_wilson(12, 12), abs=1e-6)


def test_undefined_metrics_get_no_interval_and_failures_are_left_out():
    # one class only (intruder, generation): no balanced accuracy, no AUROC, so neither has an interval
    ex = outcomes([1] * 8, [1, 1, 1, 0, 1, 0, 1, 1], [0.9, 0.8, 0.7, 0.2, 0.9, 0.1, 0.6, 0.7])
    m = classification_metrics(ex)
    assert m["balanced_accuracy"] is None and m["auroc"] is None
    assert set(score_intervals(ex, m)) == {k for k in ("accuracy", "precision", "recall", "f1") if m[k] is not None}
    # every answer failed: nothing is defined, nothing has an interval
    failed = [ExampleOutcome(1, 1, failed=True), ExampleOutcome(0, 0, failed=True)]
    assert score_intervals(failed, classification_metrics(failed)) == {}
    # a failed example is no wrong answer: the interval is that of the scored ones alone
    mixed = outcomes([1, 1, 0, 0], [1, 0, 0, 0]) + [ExampleOutcome(1, 1, failed=True)] * 5
    assert score_intervals(mixed, classification_metrics(mixed))["accuracy"] == pytest.approx(
        textbook_wilson(3, 4), abs=1e-6
    )
    # a metric the row leaves undefined gets none even where one could be computed
    ex = outcomes([1, 0] * 5, [1, 0] * 5, np.linspace(0, 1, 10))
    assert "auroc" not in score_intervals(ex, {**classification_metrics(ex), "auroc": None})
    # simulation's correlation needs the true and predicted activations
    assert "correlation" not in score_intervals(ex, {"correlation": 0.5})


def test_intervals_are_reproducible_and_hold_the_estimate():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    s = rng.normal(y * 1.2, 1)
    ex = outcomes(y, s > 0.6, s)
    m = classification_metrics(ex)
    first = score_intervals(ex, m)
    assert first == score_intervals(ex, m)  # fixed seed
    assert set(first) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc"}
    for metric, (low, high) in first.items():
        assert low < m[metric] < high, metric


def test_bootstrap_intervals_cover_the_true_value_about_95_percent_of_the_time():
    """A simulated classifier with known population metrics: positives score N(d, 1), negatives N(0, 1), answer yes
    above c. Over 200 seeded draws of 40 + 40 examples, ~95% of the intervals cover the true value (tolerance: the
    binomial spread of 200 draws, plus the percentile bootstrap's known slight undercoverage at this size)."""
    d, c, n = 1.0, 0.5, 40
    true = {"balanced_accuracy": (norm.sf(c - d) + norm.cdf(c)) / 2, "auroc": norm.cdf(d / math.sqrt(2))}
    hits = dict.fromkeys(true, 0)
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    for i in range(200):
        s = np.random.default_rng([7, i]).normal(y * d, 1)
        ex = outcomes(y, s > c, s)
        ci = score_intervals(ex, classification_metrics(ex))
        for metric, value in true.items():
            hits[metric] += ci[metric][0] <= value <= ci[metric][1]
    for metric, k in hits.items():
        assert 0.89 <= k / 200 <= 0.995, (metric, k)


def test_the_correlation_interval_resamples_excerpts_and_covers_the_truth():
    """Simulation: excerpts of 16 tokens, activating ones fire on a few tokens; the prediction is the truth plus
    noise. The pooled correlation's true value is measured on 20,000 excerpts; intervals from 24 + 24 excerpts
    cover it ~95% of the time."""

    def excerpts(rng, n):
        truth = [np.where(rng.random(16) < 0.3, rng.gamma(2.0, 2.0, 16), 0.0) for _ in range(n)]
        truth += [np.zeros(16) for _ in range(n)]
        predicted = [np.clip(t + rng.normal(0, 2.0, 16), 0, 10) for t in truth]
        return truth, predicted

    big = excerpts(np.random.default_rng(0), 10_000)
    true_r = simulation_correlations(*big)["correlation"]
    labels = [1] * 24 + [0] * 24

    def draw(rng):
        truth, predicted = excerpts(rng, 24)
        ex = [ExampleOutcome(y, y, int(p.max() > 0), float(p.max()) / 10) for y, p in zip(labels, predicted)]
        r = simulation_correlations(truth, predicted)["correlation"]
        ci = score_intervals(ex, {"correlation": r}, truth, predicted)["correlation"]
        assert ci[0] <= r <= ci[1]
        return ci

    hits = 0
    for i in range(200):
        low, high = draw(np.random.default_rng([11, i]))
        hits += low <= true_r <= high
    assert 0.89 <= hits / 200 <= 0.995, hits


def test_a_hundred_examples_take_milliseconds():
    import time

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    s = rng.normal(y, 1)
    ex = outcomes(y, s > 0.5, s)
    m = classification_metrics(ex)
    score_intervals(ex, m)  # scipy's first import
    t0 = time.perf_counter()
    score_intervals(ex, m)
    assert time.perf_counter() - t0 < 0.5  # 1000 resamples of every metric, vectorised (measured ~6 ms here)
    assert N_RESAMPLES == 1000


# ---- rows written by the real score stage, and the upgrade ---------------------------------------------------------


def score_rows(db) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select rowid, * from scores order by latent, scorer, control")]


def test_the_score_stage_writes_each_defined_metrics_interval(reference):
    rows = score_rows(reference[0])
    assert rows and {r["scorer"] for r in rows} == {"detection", "embedding"}
    for r in rows:
        ci = json.loads(r["ci"])
        defined = {
            m for m in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc") if r[m] is not None
        }
        assert set(ci) == defined, (r["scorer"], r["latent"])
        for metric, (low, high) in ci.items():
            assert 0.0 <= low <= high <= 1.0
            if metric in ("accuracy", "precision", "recall"):  # Wilson holds its estimate
                assert low <= r[metric] <= high
        # what the stage stored is what the stored outcomes give (so `upgrade` can compute the same)
        parsed = dict(r, outcomes=json.loads(r["outcomes"]), details=json.loads(r["details"] or "null"))
        assert row_intervals(parsed) == ci
    assert any("auroc" in json.loads(r["ci"]) for r in rows if r["scorer"] == "embedding")


def test_upgrade_fills_the_intervals_of_a_schema_12_file_and_touches_nothing_else(reference, tmp_path):
    db = copy_db(reference[0], tmp_path / "old.db")
    before = score_rows(db)
    with sqlite3.connect(db) as c:
        to_schema_12(c)
    c.close()
    r = invoke_cli("upgrade", db)
    assert r.returncode == 0, r.stderr
    assert f"intervals computed for {len(before)} score rows" in r.stdout
    after = score_rows(db)
    assert [json.loads(a["ci"]) for a in after] == [json.loads(b["ci"]) for b in before]
    assert [{k: v for k, v in a.items() if k != "ci"} for a in after] == [
        {k: v for k, v in b.items() if k != "ci"} for b in before
    ]

    # A file with one row lacking its intervals: upgrade fills that one; every other row stays byte-identical.
    db2 = copy_db(reference[0], tmp_path / "one.db")
    with sqlite3.connect(db2) as c:
        c.execute("update scores set ci = null where rowid = ?", [before[1]["rowid"]])
    c.close()
    r = invoke_cli("upgrade", db2)
    assert r.returncode == 0 and "intervals computed for 1 score rows" in r.stdout
    assert score_rows(db2) == before
    # nothing left to fill: the line says nothing of intervals
    assert "intervals" not in invoke_cli("upgrade", db2).stdout


# ---- simulation through the real score stage (a scripted server answers) ---------------------------------------


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


def scripted(body, headers):
    """Explanations, and simulation answers that vary with the excerpt (so the correlation is defined)."""
    props = body.get("response_format", {}).get("json_schema", {}).get("schema", {}).get("properties", {})
    user = body["messages"][-1]["content"]
    if "explanation" in props:
        answer: dict = {"explanation": f"scripted explanation {crc(user) % 97}"}
    elif "activations" in props:
        n = props["activations"]["minItems"]
        answer = {"activations": [(crc(user) + 7 * i) % 11 if (crc(user) >> i) % 3 == 0 else 0 for i in range(n)]}
    else:
        raise AssertionError(f"unexpected prompt schema {props}")
    return reply(body=completion(json.dumps(answer)))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, real_cache_db):
    db = copy_db(real_cache_db, tmp_path_factory.mktemp("sim") / "s.db")
    with fake_server(scripted) as fake:
        cfg = llm_stage_config(db, [fake.url], scorers=("simulation",), max_concurrency=8)
        cfg.score.simulation_examples = 8
        explain_and_score(cfg, "top:2")
    return db


def test_simulation_rows_carry_the_correlations_interval_and_upgrade_recomputes_it_from_the_cache(simulated, tmp_path):
    rows = score_rows(simulated)
    with_r = [r for r in rows if r["correlation"] is not None]
    assert with_r, "the scripted answers should give a defined correlation"
    for r in with_r:
        low, high = json.loads(r["ci"])["correlation"]
        assert -1.0 <= low <= high <= 1.0 and low < high
    # The upgrade reads each excerpt's true activations back from the cache: the same interval as at scoring time.
    db = copy_db(simulated, tmp_path / "sim12.db")
    with sqlite3.connect(db) as c:
        to_schema_12(c)
    c.close()
    assert invoke_cli("upgrade", db).returncode == 0
    assert [json.loads(r["ci"]) for r in score_rows(db)] == [json.loads(r["ci"]) for r in rows]


# ---- what readers show -----------------------------------------------------------------------------------------


IVS = [  # (real, control) balanced-accuracy intervals of detection on the first four scored latents; None: no intervals
    ([0.60, 0.80], [0.40, 0.55]),  # apart
    ([0.50, 0.70], [0.45, 0.52]),  # overlap
    ([0.55, 0.75], [0.75, 0.90]),  # touch at 0.75: closed intervals overlap
    ([0.70, 0.90], None),  # no control interval: not counted
]


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """A synthetic store (real outcomes, no intervals) with detection's intervals set by hand on four latents
    -> (db, the scored latents in order)."""
    db = make_synthetic_db(tmp_path_factory.mktemp("hand") / "h.db", 16)
    with sqlite3.connect(db) as c:
        c.execute("update scores set ci = null")
        scored = [r[0] for r in c.execute("select distinct latent from scores where scorer = 'detection' order by 1")]
        for latent, sides in zip(scored, IVS):
            for control, iv in enumerate(sides):
                ci = None if iv is None else json.dumps({"balanced_accuracy": iv, "auroc": [0.1, 0.2]})
                c.execute(
                    "update scores set ci = ? where latent = ? and scorer = 'detection' and control = ?",
                    [ci, latent, control],
                )
    c.close()
    return db, scored


def test_report_counts_latents_whose_interval_overlaps_the_controls(hand_made):
    hand_made, scored = hand_made
    rep = json.loads(invoke_cli("report", hand_made, "--json").stdout)["scores"]
    iv = rep["detection"]["intervals"]
    pairs = [s for s in IVS if s[1] is not None]
    assert iv["metric"] == "balanced_accuracy"
    assert iv["latents"] == len(pairs) == 3
    assert iv["overlap_control"] == sum(overlaps(r, c) for r, c in pairs) == 2
    real = [s[0] for s in IVS]
    assert iv["real"]["n"] == 4 and iv["real"]["half_width"] == pytest.approx(np.mean([(h - lo) / 2 for lo, h in real]))
    assert iv["control"]["n"] == 3
    with sqlite3.connect(f"file:{hand_made}?mode=ro", uri=True) as c:
        means = c.execute(
            "select avg(balanced_accuracy) from scores where scorer = 'detection' and control = 0 and latent <= ?",
            [scored[3]],
        ).fetchone()
    assert iv["real"]["mean"] == pytest.approx(means[0])
    assert rep["embedding"]["intervals"] is None  # no row of it has intervals
    text = invoke_cli("report", hand_made).stdout
    assert "95% intervals" in text and "2 of 3" in text


def test_readers_show_nothing_for_rows_without_intervals(tmp_path_factory):
    db = make_synthetic_db(tmp_path_factory.mktemp("none") / "n.db", 12)
    rep = json.loads(invoke_cli("report", db, "--json").stdout)["scores"]
    assert all(s["intervals"] is None for s in rep.values())
    assert "95% intervals" not in invoke_cli("report", db).stdout


def test_exports_compare_and_the_tui_show_the_intervals(hand_made, tmp_path):
    from rich.console import Console

    from autointerp.engine.commands.report.compare import compare, format_comparison
    from autointerp.store.browse import Browser
    from autointerp.tui.detail import scores_table

    hand_made, scored = hand_made
    first, plain = scored[0], scored[5]  # with hand-made intervals; without any
    db = shutil.copy(hand_made, tmp_path / "h.db")
    assert invoke_cli("export", db, "--format", "json", "--out", tmp_path / "h.json").returncode == 0
    flat = {r["latent"]: r for r in json.loads((tmp_path / "h.json").read_text())}
    assert flat[first]["scores"]["detection"]["ci"]["balanced_accuracy"] == IVS[0][0]
    assert flat[scored[3]]["scores"]["detection_control"]["ci"] is None
    assert invoke_cli("export", db, "--format", "csv", "--out", tmp_path / "h.csv").returncode == 0
    table = {int(r["latent"]): r for r in csv.DictReader((tmp_path / "h.csv").open())}
    assert float(table[scored[2]]["detection_control.balanced_accuracy_low"]) == IVS[2][1][0]
    assert float(table[scored[2]]["detection_control.balanced_accuracy_high"]) == IVS[2][1][1]
    assert table[scored[3]]["detection_control.balanced_accuracy_low"] == ""
    assert table[plain]["detection.auroc_high"] == "" and table[plain]["detection.auroc"] != ""

    result = compare(hand_made, db, n_boot=200)
    assert result["scorers"]["detection"]["intervals"]["a"]["overlap_control"] == 2
    assert result["scorers"]["fuzzing"]["intervals"] == {"a": None, "b": None}
    shown = Console(width=120, record=True)
    shown.print(format_comparison(result))
    assert "2 of 3 overlap the control" in shown.export_text()

    with ActivationStore.open(db, readonly=True) as store:
        browser = Browser(store)
        with_ci, without = scores_table(browser.detail(first)).plain, scores_table(browser.detail(plain)).plain
    assert "[0.60, 0.80]  [0.40, 0.55]" in with_ci
    assert "95% ci" not in without


def test_upgrade_fills_a_synthetic_stores_intervals_from_its_outcomes(tmp_path):
    db = make_synthetic_db(tmp_path / "s.db", 10)
    r = invoke_cli("upgrade", db)
    assert r.returncode == 0 and "intervals computed for" in r.stdout
    for row in score_rows(db):
        want = score_intervals(outcomes_from_stored(json.loads(row["outcomes"])), row)
        assert json.loads(row["ci"]) == want and want
