"""`autointerp retest`: repeats drawn, explained and scored beside the originals, their report, bad input, resume.

The real retest runs on a copy of the session's reference batch (the embedded SmolLM2 on llama.cpp, temperature 0):
one latent, two repeat draws. The report's numbers are checked against a hand computation on a synthetic store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.cli import invoke_cli, run_cli
from helpers.databases import copy_db, database_tables, rows, same_values
from helpers.llm_stage import write_stand_in_explanation
from helpers.schema import to_schema_12
from helpers.stores import fill_store

from autointerp.engine.commands.cli import main
from autointerp.engine.commands.retest import format_report, plan_retest, retest_report
from autointerp.store.results import Results, SampleSet
from autointerp.store.retest import start_draw
from autointerp.store.schema import SCHEMA_VERSION
from autointerp.store.scorer_meta import ScorerMeta, record_scorers

# The originals (draw 0): a retest never changes one of their rows, timestamps included.
ORIGINALS = {
    "samples": "select * from samples order by latent, window",
    "sample_sets": "select * from sample_sets order by latent",
    "explanations": "select * from explanations order by latent, explainer",
    "explanation_candidates": "select * from explanation_candidates order by 1, 2, 3",
    "scores": "select * from scores order by latent, explainer, scorer, control",
}
RETEST_TABLES = ("retest_draws", "retest_samples", "retest_explanations", "retest_scores")
SEEDS = "2"


def originals(db) -> dict:
    return {name: rows(db, sql) for name, sql in ORIGINALS.items()}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def retested(reference, tmp_path_factory):
    """A copy of the reference batch's database retested in this process: its most frequent explained latent,
    two repeat draws. -> (db, the originals before, the JSON report)"""
    db = copy_db(reference[0], tmp_path_factory.mktemp("retest") / "r.db")
    before = originals(db)
    r = invoke_cli("retest", db, "--seeds", SEEDS, "--latents", "top:1", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return db, before, json.loads(r.stdout)


def test_repeats_are_stored_beside_the_originals_which_stay_as_they_were(retested):
    db, before, report = retested
    assert originals(db) == before
    (latent,) = report["latents"]
    original_seed = rows(db, f"select seed from sample_sets where latent = {latent}")[0][0]
    draws = rows(db, "select draw, seed, explainer, scorers, done_at from retest_draws order by draw")
    assert [d[0] for d in draws] == [1, 2] and all(d[4] for d in draws)  # both done
    seeds = [d[1] for d in draws]
    assert len({original_seed, *seeds}) == 3  # each draw its own seed, none the original's
    scorers = sorted({r[0] for r in rows(db, "select scorer from scores where control = 0")})
    assert all(json.loads(d[3]) == scorers and d[2] == "default" for d in draws)
    for draw, seed, *_ in draws:
        (expl,) = rows(db, f"select latent, seed, text, error from retest_explanations where draw = {draw}")
        assert expl[:2] == (latent, seed) and (expl[2] is None) != (expl[3] is None)
        stored = rows(db, f"select latent, scorer, control, seed from retest_scores where draw = {draw}")
        # a repeat scores the real explanation only; a failed explanation is counted in the report, not scored
        want = [(latent, s, 0, seed) for s in scorers] if expl[2] is not None else []
        assert sorted(stored) == want
    assert rows(db, "select count(*) from retest_scores where control != 0") == [(0,)]


def test_each_draw_holds_disjoint_roles_and_examples_other_than_the_originals(retested):
    db, _, report = retested
    (latent,) = report["latents"]

    def roles(sql: str) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for window, role in rows(db, sql):
            out.setdefault(role, set()).add(window)
        return out

    original = roles(f"select window, role from samples where latent = {latent}")
    explain_sets = [original["explain"]]
    for draw in (1, 2):
        mine = roles(f"select window, role from retest_samples where draw = {draw} and latent = {latent}")
        assert {r: len(w) for r, w in mine.items()} == {r: len(w) for r, w in original.items()}  # the same design
        names = sorted(mine)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert not mine[a] & mine[b], (draw, a, b)  # the explainer never sees a scored window
        assert mine != original
        explain_sets.append(mine["explain"])
    assert len({frozenset(s) for s in explain_sets}) == 3  # three different draws of the explainer's examples


def test_the_report_reads_every_draw_as_stored_and_counts_what_has_no_value(retested):
    db, _, report = retested
    (latent,) = report["latents"]
    assert [d["draw"] for d in report["draws"]] == [0, 1, 2] and all(d.get("done", True) for d in report["draws"])
    for scorer, s in report["scorers"].items():
        metric = s["metric"]
        assert metric == rows(db, f"select primary_metric from scorers where name = '{scorer}'")[0][0]
        want = rows(db, f"select {metric} from scores where latent = {latent} and scorer = '{scorer}' and control = 0")
        for draw in (1, 2):
            got = rows(
                db,
                f"select {metric} from retest_scores where draw = {draw} and latent = {latent} and scorer = '{scorer}'",
            )
            want.append(got[0] if got else (None,))
        values = [w[0] for w in want]
        (row,) = s["latents"]
        same_values(row["values"], values, scorer)
        have = [v for v in values if v is not None]
        assert row["n"] == len(have) and [f["missing"] for f in s["failures"]] == [v is None for v in values]
        if len(have) >= 2:
            same_values(row["sd"], float(np.std(have, ddof=1)), scorer)
            same_values([row["min"], row["max"]], [min(have), max(have)], scorer)
        assert s["icc1"] is None and all(c["pearson"] is None for c in s["correlations"])  # one latent: undefined


def test_a_finished_retest_run_again_only_reports(retested, tmp_path):
    db = copy_db(retested[0], tmp_path / "again.db")
    before = retest_tables(db)
    r = invoke_cli("retest", db, "--seeds", SEEDS, "--latents", "top:1")
    assert r.returncode == 0, r.stderr
    assert "0 of 1 latents to explain and score" in r.stderr and "ICC(1)" in r.stdout
    assert retest_tables(db) == before


# ---- the numbers, against a hand computation ---------------------------------------------------------------------

# latent -> balanced accuracy in draws 0, 1, 2; None: latent 4's explanation failed in draw 2, latent 5's metric is
# undefined in draw 1 (a score row without it).
VALUES = {
    0: [0.9, 0.8, 0.85],
    1: [0.5, 0.6, 0.55],
    2: [0.7, 0.65, 0.75],
    3: [0.3, 0.4, 0.35],
    4: [0.6, 0.7, None],
    5: [0.55, None, 0.5],
}


@pytest.fixture
def hand_store(tmp_path):
    store, _ = fill_store(tmp_path / "h.db")
    with store.db.conn:
        record_scorers(store.db.conn, [ScorerMeta("detection")])
    for draw in (0, 1, 2):
        if draw:
            start_draw(store.db.conn, draw, 100 + draw, "default", ["detection"], {})
        results = Results(store.db, draw)
        for latent, values in VALUES.items():
            if latent == 4 and draw == 2:
                results.write_explanation(
                    {"latent": latent, "explainer": "default", "text": None, "error": "copied a demonstration"}
                )
                continue
            write_stand_in_explanation(results, latent, f"latent {latent}, draw {draw}")
            n_failed = 2 if (latent, draw) == (3, 1) else 0
            row = {"latent": latent, "explainer": "default", "scorer": "detection", "control": 0}
            results.write_scores([dict(row, balanced_accuracy=values[draw], n_failed=n_failed)])
    yield store
    store.close()


def ranks(x) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)  # no ties in VALUES' columns


def test_correlations_icc_and_spreads_match_a_hand_computation(hand_store):
    report = retest_report(hand_store, "default", sorted(VALUES), [1, 2])
    s = report["scorers"]["detection"]
    assert s["metric"] == "balanced_accuracy"
    for c in s["correlations"]:
        k = c["draw"]
        pairs = np.array([(v[0], v[k]) for v in VALUES.values() if v[k] is not None])
        assert c["n"] == len(pairs) == 5
        same_values(c["pearson"], float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]), "pearson")
        same_values(c["spearman"], float(np.corrcoef(ranks(pairs[:, 0]), ranks(pairs[:, 1]))[0, 1]), "spearman")
    x = np.array([v for v in VALUES.values() if None not in v])  # latents 0-3, every draw
    n, k = x.shape
    means = x.mean(axis=1)
    msb = k * ((means - x.mean()) ** 2).sum() / (n - 1)
    msw = ((x - means[:, None]) ** 2).sum() / (n * (k - 1))
    assert s["n_complete"] == 4
    same_values(s["icc1"], float((msb - msw) / (msb + (k - 1) * msw)), "icc1")
    same_values(s["sd_within"], float(np.mean(x.std(axis=1, ddof=1))), "sd_within")
    same_values(s["sd_between"], float(np.std(means, ddof=1)), "sd_between")
    assert 0 < s["icc1"] < 1 and s["sd_within"] < s["sd_between"]
    for row in s["latents"]:
        have = [v for v in VALUES[row["latent"]] if v is not None]
        same_values(row["values"], VALUES[row["latent"]], "values")
        same_values([row["min"], row["max"], row["sd"]], [min(have), max(have), float(np.std(have, ddof=1))], "row")
    failures = {f["draw"]: f for f in s["failures"]}
    assert [failures[d]["missing"] for d in (0, 1, 2)] == [0, 1, 1]
    assert failures[1]["reasons"] == {"balanced_accuracy undefined": 1} and failures[1]["failed_examples"] == 2
    assert failures[2]["reasons"] == {"no explanation (copied a demonstration)": 1}
    assert [d.get("seed") for d in report["draws"]] == [None, 101, 102]
    text = format_report(report)
    assert "ICC(1)" in text and "draw 2: 1 latents without a value" in text


def test_a_draws_results_are_its_own(hand_store):
    """Results(db, draw) reads and writes draw k's rows only; the originals' are draw 0's."""
    original, repeat = Results(hand_store.db), Results(hand_store.db, 1)
    original.write_sample_set(SampleSet(4, 0, 30, {"seed": 0}, windows={"explain": [(1, 1, "top")]}))
    repeat.write_sample_set(
        SampleSet(4, 101, 30, {}, windows={"explain": [(2, 3, "top")], "activating": [(5, 1, "s")]})
    )
    assert original.sample_set(4).windows == {"explain": [(1, 1, "top")]}
    got = repeat.sample_set(4)
    assert got.seed == 101 and got.windows == {"activating": [(5, 1, "s")], "explain": [(2, 3, "top")]}
    assert Results(hand_store.db, 2).sample_set(4) is None
    assert Results(hand_store.db, 2).explained_latents("default") == [0, 1, 2, 3, 5]
    assert repeat.explanation(4, "default")["text"] == "latent 4, draw 1"
    assert repeat.score_done(3, "default", "detection", 0) is False  # its failed examples are retried
    assert [r["balanced_accuracy"] for r in repeat.scores(latent=0)] == [0.8]


# ---- bad input ----------------------------------------------------------------------------------------------------


def assert_refused(args: list, db, *needles: str) -> None:
    """One stderr line `error: ...`, exit 2, the database byte for byte as it was."""
    before = digest(db) if db.exists() else None
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 2, (args, res.exit_code, res.stderr, res.exception)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
    for needle in needles:
        assert needle in lines[0], (args, lines[0])
    assert (digest(db) if db.exists() else None) == before


def test_bad_input_is_one_error_line_and_leaves_the_database_as_it_was(reference, tmp_path):
    db = copy_db(reference[0], tmp_path / "b.db")
    assert_refused(["retest", db, "--seeds", "0"], db, "--seeds")
    assert_refused(["retest", db, "--latents", "9-3"], db, "reversed")
    assert_refused(["retest", db, "--latents", "abc"], db, "'abc'")
    unexplained = rows(db, "select max(latent) from latents")[0][0]
    assert_refused(["retest", db, "--latents", str(unexplained)], db, "names no latent with an explanation")
    assert_refused(["retest", tmp_path / "missing.db"], tmp_path / "missing.db", "missing.db")
    store, _ = fill_store(tmp_path / "bare.db")  # a cache, nothing explained
    store.close()
    assert_refused(["retest", tmp_path / "bare.db"], tmp_path / "bare.db", "no explanations to retest")
    c = sqlite3.connect(db)
    with c:
        c.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 3)])
    c.close()  # the last connection: the change is folded into the file before its digest is taken
    assert_refused(["retest", db], db, "newer")


def test_the_plan_takes_the_recorded_settings_and_reads_a_file_made_before_retests(reference, tmp_path):
    db = copy_db(reference[0], tmp_path / "old.db")
    c = sqlite3.connect(db)
    with c:
        to_schema_12(c)
    c.close()
    before = digest(db)
    plan = plan_retest(str(db), None, 3)
    assert digest(db) == before  # planning reads only
    recorded = rows(db, "select config from sample_sets order by latent limit 1")[0][0]
    assert plan.explainer == "default" and plan.scorers == ["detection", "embedding"]
    assert plan.latents == [r[0] for r in rows(db, "select latent from explanations where text is not null order by 1")]
    for d in plan.draws:
        assert dataclasses.asdict(d.cfg.sample) == dict(json.loads(recorded), seed=d.seed)
        assert d.cfg.llm.seed == plan.cfg.llm.seed + d.draw and not d.cfg.score.control
    assert [d.seed for d in plan.draws] == [plan.cfg.sample.seed + k for k in (1, 2, 3)]


def test_help_names_the_options():
    r = invoke_cli("retest", "--help")
    assert r.returncode == 0 and all(o in r.stdout for o in ("--latents", "--seeds", "--json"))


# ---- kill -9 ------------------------------------------------------------------------------------------------------


def retest_tables(db) -> dict:
    return {name: t for name, t in database_tables(db).items() if name in RETEST_TABLES}


@pytest.mark.slow
def test_kill_9_inside_a_retest_resumes_to_the_uninterrupted_results_and_report(retested, reference, tmp_path):
    want_db, before, want = retested
    want = dict(want)
    db = copy_db(reference[0], tmp_path / "k.db")
    args = ("retest", db, "--seeds", SEEDS, "--latents", "top:1", "--json")
    # Killed right after draw 1's explanation is committed (its scores not yet written), then, resumed, right after
    # draw 2's (draw 1 scored and marked done on the way), then run to the end.
    for where, explained, done in (("explain:1", 1, []), ("explain:1", 2, [1])):
        r = run_cli(*map(str, args), env=dict(os.environ, AUTOINTERP_KILL_AT=where))
        assert r.returncode == -signal.SIGKILL, (where, r.returncode, r.stderr[-2000:])
        assert rows(db, "select count(*) from retest_explanations")[0][0] == explained
        assert [d[0] for d in rows(db, "select draw from retest_draws where done_at is not null")] == done
        assert rows(db, f"select count(*) from retest_scores where draw = {explained}") == [(0,)]
    done = run_cli(*map(str, args))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got.pop("db") == str(db) and want.pop("db", None) is not None
    same_values(got, want, "report")
    a, b = retest_tables(db), retest_tables(want_db)
    assert a.keys() == b.keys() == set(RETEST_TABLES)
    for name in a:
        same_values(a[name], b[name], name)
    assert originals(db) == before
