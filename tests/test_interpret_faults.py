"""A misbehaving LLM server during explain and score: counted failures, the run goes on, nothing is lost.

The faults come from a scripted local HTTP server (a real server cannot be made to misbehave on cue);
the store is a real cache made by the embedded model.
"""

import sqlite3

import pytest
from helpers.databases import copy_db
from helpers.fake_llm import completion, cycling, fake_server, reply
from helpers.llm_stage import FAULT_SAMPLE_SIZES, llm_stage_config, run_llm_stage

from autointerp.engine.config import Config, SampleConfig
from autointerp.engine.interpretation.interpret import BackendUnavailable, Interpreter
from autointerp.store.db import ActivationStore

SAMPLE = SampleConfig(**FAULT_SAMPLE_SIZES)


def run_stage(db, url, stage, latents, scorers=("detection",), redo=False):
    """One stage with one request in flight at a time and a 1 s outage budget; -> (tally, scores, explanations)."""
    cfg = llm_stage_config(db, [url], wait=1.0, scorers=scorers, max_concurrency=1)
    tally = run_llm_stage(cfg, stage, latents, redo)
    with ActivationStore.open(db, readonly=True) as store:
        return tally, store.results.scores(), [store.results.explanation(x, "default") for x in latents]


def test_bad_explanations_are_recorded_as_failures_and_retried_on_the_next_run(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "f.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:3")
    # A 4xx is the server's answer about this request (a 5xx or no answer would pause the stage instead).
    garbage = cycling(
        reply(body=completion('{"explanation": "words about ')),
        reply(status=400, body={"error": "boom"}),
        reply(body=completion('{"explanation": "the word the"}')),
    )
    with fake_server(garbage) as fake:
        tally, _, rows = run_stage(db, fake.url, "explain", latents)
    assert tally.done == 3 and tally.failed == 2
    errors = sorted(r["error"] or "" for r in rows)
    assert errors[0] == "" and errors[1].startswith("BadRequestError") and errors[2] == "truncated answer"
    assert sum(r["text"] == "the word the" for r in rows) == 1
    # The next run redoes only the two failures; the good explanation is kept as it was.
    with fake_server(cycling(reply(body=completion('{"explanation": "numbers"}')))) as fake:
        tally, _, rows = run_stage(db, fake.url, "explain", latents)
    assert tally.done == 2 and tally.skipped == 1 and tally.reasons["already explained"] == 1
    assert sorted(r["text"] for r in rows) == ["numbers", "numbers", "the word the"]


def test_wrong_unparseable_and_failed_answers_are_counted_not_scored(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "s.db")
    good = reply(body=completion('{"labels": [1]}'))
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:2")
    with fake_server(cycling(reply(body=completion('{"explanation": "commas"}')))) as fake:
        run_stage(db, fake.url, "explain", latents)
    # A 4xx is the server's answer about one request: a counted failure. A 5xx is transient: sent again (here it
    # meets the script's next answer), never stored as an example's outcome.
    script = cycling(
        good,
        reply(body=completion('{"labels": [1, 0]}')),
        reply(body=completion("I think it matches")),
        reply(status=500, body={"error": "down"}),
        reply(body=completion('{"labels": [')),
        good,
        reply(status=400, body={"error": "bad request"}),
    )
    with fake_server(script) as fake:
        tally, rows, expl = run_stage(db, fake.url, "score", latents)
    assert tally.done == 2 and len(rows) == 4  # two latents, real + control
    for r in rows:
        assert r["n"] == 20 and r["n_scored"] + r["n_failed"] == 20 and r["n_failed"] > 0
        assert r["n_calls"] == 20 and r["n_failed_calls"] > 0
        assert r["n_retry"] == r["n_failed"]  # each of these failures is worth another try on the next run
        kinds = set(r["errors"])
        assert any(k.startswith("wrong number of labels (2 for 1") for k in kinds)
        assert "unparseable answer" in kinds and any(k.startswith("BadRequestError") for k in kinds)
        assert not any(k.startswith("InternalServerError") for k in kinds)
        scored = [o for o in r["outcomes"] if not o["failed"]]
        assert all(o["prediction"] == 1 for o in scored)  # only parsed answers count, and they said 1
        assert r["recall"] == 1.0 and r["accuracy"] == sum(o["label"] for o in scored) / len(scored)
    assert all(e["text"] == "commas" for e in expl)


def test_an_unreachable_server_stops_the_stage_and_stores_no_made_up_failures(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "u.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:2")
    with fake_server(cycling(reply(body=completion('{"explanation": "commas"}')))) as fake:
        run_stage(db, fake.url, "explain", latents)
        url = fake.url
    before = sqlite3.connect(db).execute("select latent, text from explanations order by latent").fetchall()
    with pytest.raises(BackendUnavailable, match="unavailable for 1s .*APIConnectionError"):
        run_stage(db, url, "score", latents)  # the server is gone now: pause, retry, give up after 1 s
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from scores").fetchone()[0] == 0  # nothing stored to be mistaken for a score
    assert con.execute("select latent, text from explanations order by latent").fetchall() == before


def test_an_explanation_copied_from_a_few_shot_demonstration_is_a_failure(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "c.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:1")
    copied = reply(body=completion('{"explanation": "Dairy products, most often the word milk"}'))
    with fake_server(cycling(copied)) as fake:
        tally, _, rows = run_stage(db, fake.url, "explain", latents)
    assert tally.failed == 1 and rows[0]["text"] is None and rows[0]["error"] == "copied a few-shot demonstration"
    assert "milk" in rows[0]["raw"]  # the answer itself is kept for inspection
