"""Transient LLM-server failures are retried, never stored as an example's outcome; answers the server did give
are counted (failures included) and retried by the next run; a stage whose calls all failed does not end as a
success; a hanging server stops a stage after `outage_wait_s`, not after every call's timeouts.

The faults come from a scripted local HTTP server (test_llm_faults.fake_server): a real server cannot be made to
hang, drop a replica or answer garbage on cue. The store is a real cache made by the embedded model.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from helpers.databases import copy_db, rows
from helpers.fake_llm import FAST_RETRY, completion, cycling, fake_server, reply
from helpers.llm_stage import FAULT_SAMPLE_SIZES, llm_stage_config, run_llm_stage, write_stand_in_explanation
from helpers.servers import free_port

from autointerp.engine.config import Config, SampleConfig
from autointerp.engine.interpretation.interpret import BackendUnavailable, Interpreter, StageFailed
from autointerp.store.db import ActivationStore

SAMPLE = SampleConfig(**FAULT_SAMPLE_SIZES)
LABEL = reply(body=completion('{"labels": [1]}'))
EXPLANATION = reply(body=completion('{"explanation": "commas"}'))


@pytest.fixture
def explained(real_cache_db, tmp_path):
    """A copy of the real cache with stand-in explanations for its two most frequent latents."""
    db = copy_db(real_cache_db, tmp_path / "x.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:2")
        for latent in latents:
            write_stand_in_explanation(store.results, latent, f"explanation {latent}")
    return db, latents


def scores(db) -> list[dict]:
    with ActivationStore.open(db, readonly=True) as store:
        return store.results.scores()


def test_an_answer_with_a_huge_number_is_a_counted_failure_not_a_crash(explained, real_cache_db, tmp_path):
    db, latents = explained
    huge = "9" * 5000  # json.loads refuses integers of more than 4,300 digits with ValueError
    script = cycling(LABEL, reply(body=completion('{"labels": [' + huge + "]}")), LABEL)
    with fake_server(script) as fake:
        tally = run_llm_stage(llm_stage_config(db, [fake.url]), "score", latents)
    assert tally.done == 2
    rows_ = scores(db)
    assert len(rows_) == 4 and all(r["n_failed"] > 0 and r["n_scored"] > 0 for r in rows_)
    assert all(set(r["errors"]) <= {"unparseable answer", "labels other than 0 and 1"} for r in rows_), rows_[0][
        "errors"
    ]
    # explanations too
    fresh = copy_db(real_cache_db, tmp_path / "e.db")
    with fake_server(cycling(reply(body=completion('{"explanation": ' + huge + "}")), EXPLANATION)) as fake:
        tally = run_llm_stage(llm_stage_config(fresh, [fake.url]), "explain", latents)
    assert tally.done == 2 and tally.failed == 1


def test_a_fleet_with_one_dead_replica_answers_every_example(explained):
    db, latents = explained
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with fake_server(cycling(LABEL)) as live:
        tally = run_llm_stage(llm_stage_config(db, [dead, live.url], max_retries=1), "score", latents)
    assert tally.failed == 0 and tally.done == 2
    rows_ = scores(db)
    assert all(r["n_failed"] == 0 and r["n_scored"] == r["n"] for r in rows_)
    assert len(live.seen) == sum(r["n_calls"] for r in rows_)  # every call answered by the live one


def test_a_burst_of_429_and_5xx_is_retried_and_never_stored(explained):
    db, latents = explained
    refuse = [reply(429, {"error": {"message": "slow down"}}, FAST_RETRY)] * 3 + [
        reply(503, {"error": {"message": "overloaded"}}, FAST_RETRY)
    ] * 3
    script = iter(refuse)
    lock = threading.Lock()

    def respond(body, headers):
        with lock:
            return next(script, LABEL)

    with fake_server(respond) as fake:
        tally = run_llm_stage(llm_stage_config(db, [fake.url]), "score", latents)
    assert tally.failed == 0
    for r in scores(db):
        assert r["n_failed"] == 0 and r["errors"] == {}, r["errors"]


def test_failed_examples_are_scored_again_by_the_next_run_and_an_all_failed_stage_is_not_a_success(explained):
    db, latents = explained
    with fake_server(cycling(reply(body=completion("I cannot answer that")))) as fake:
        with pytest.raises(StageFailed, match="every LLM call of the score stage failed .*unparseable answer"):
            run_llm_stage(llm_stage_config(db, [fake.url]), "score", latents)
    first = scores(db)
    assert len(first) == 4 and all(r["n_scored"] == 0 and r["n_retry"] == r["n"] for r in first)  # stored, marked
    with fake_server(cycling(LABEL)) as fake:
        tally = run_llm_stage(llm_stage_config(db, [fake.url]), "score", latents)
    assert tally.done == 2 and tally.failed == 0
    again = scores(db)
    assert all(r["n_failed"] == 0 and r["n_retry"] == 0 and r["n_scored"] == r["n"] for r in again)
    with fake_server(cycling(LABEL)) as fake:  # nothing left to retry
        tally = run_llm_stage(llm_stage_config(db, [fake.url]), "score", latents)
    assert tally.done == 0 and tally.reasons["already scored"] == 2 and not fake.seen


def test_a_server_refusing_every_request_fails_the_stage(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "x.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:2")
    with fake_server(cycling(reply(400, {"error": {"message": "model not found"}}))) as fake:
        with pytest.raises(StageFailed, match="explain stage failed .*BadRequestError"):
            run_llm_stage(llm_stage_config(db, [fake.url]), "explain", latents)
    assert rows(db, "select count(*) from explanations where text is null") == [(2,)]  # retried by the next run


def test_a_hanging_server_stops_the_stage_after_outage_wait_not_after_every_timeout(explained):
    db, latents = explained
    with fake_server(cycling(reply(sleep=60))) as fake:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="answered nothing for 2s"):
            run_llm_stage(llm_stage_config(db, [fake.url], wait=2.0, timeout_s=60, max_retries=3), "score", latents)
        elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed  # the calls' own timeouts and retries would take 4 x 60 s
    assert scores(db) == []


def test_standalone_score_writes_outage_and_stop_events_and_exits_3_with_one_line(explained, tmp_path):
    db, latents = explained
    answered = []

    def respond(body, headers):  # two answers, then the server is down for good
        answered.append(1)
        return LABEL if len(answered) <= 2 else reply(503, {"error": {"message": "down " + "x" * 400}}, FAST_RETRY)

    with fake_server(respond) as fake:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'db = "{db}"\n[llm]\nbackend = "openai"\nmodel = "fake"\nbase_urls = ["{fake.url}"]\n'
            "max_retries = 0\ntop_logprobs = 0\n[batch]\noutage_wait_s = 3\n"
            "[sample]\nn_explain = 6\nactivating_per_decile = 1\nn_non_activating = 10\n"
        )
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "autointerp.engine.commands.cli",
                "score",
                "--config",
                str(cfg),
                "--latents",
                ",".join(map(str, latents)),
                "--scorers",
                "detection",
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, COLUMNS="80"),
            timeout=120,
        )
    assert r.returncode == 3, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: the LLM backend was unavailable") and last.endswith("to resume"), last
    kinds = [k for (k,) in rows(db, "select kind from events where stage = 'score' order by id")]
    assert kinds[0] == "start" and "outage" in kinds and kinds[-1] == "stopped", kinds
    assert scores(db) == []  # nothing of an unfinished latent was stored
    ((message,),) = rows(db, "select message from events where kind = 'stopped'")
    assert "\n" not in message and len(message) < 600  # the server's error is folded and cut to one short line


def test_batch_with_a_garbage_server_stops_with_status_3_and_no_report(explained, tmp_path):
    db, latents = explained
    with fake_server(cycling(reply(body=completion("\x1b[31mnot json at all")))) as fake:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'db = "{db}"\n[llm]\nbackend = "openai"\nmodel = "fake"\nbase_urls = ["{fake.url}"]\n'
            f"max_retries = 0\ntop_logprobs = 0\n[batch]\nlatents = {json.dumps(latents)}\n"
            'stages = ["score"]\n[score]\nscorers = ["detection"]\n'
            "[sample]\nn_explain = 6\nactivating_per_decile = 1\nn_non_activating = 10\n"
        )
        r = subprocess.run(
            [sys.executable, "-m", "autointerp.engine.commands.cli", "batch", str(cfg)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 3, r.stderr[-2000:]
    assert "every LLM call of the score stage failed" in r.stderr and "random control" not in r.stderr + r.stdout
    assert "\x1b" not in r.stderr  # the server's escape sequence is shown, not sent to the terminal
    ((status, message),) = rows(db, "select status, message from runs")
    assert status == "stopped" and "score stage failed" in message


def test_a_megabyte_answer_is_stored_capped(real_cache_db, tmp_path):
    from autointerp.engine.interpretation.llm.base import MAX_STORED_ANSWER_CHARS

    db = copy_db(real_cache_db, tmp_path / "x.db")
    with ActivationStore.open(db) as store:
        latents = Interpreter(Config(db=str(db), sample=SAMPLE), store, None).select("top:1")
    big = '{"explanation": "' + "a" * 1_000_000 + '"}'
    with fake_server(cycling(reply(body=completion(big)))) as fake:
        run_llm_stage(llm_stage_config(db, [fake.url]), "explain", latents)
    ((raw, text),) = rows(db, "select raw, text from explanations")
    assert len(raw) < MAX_STORED_ANSWER_CHARS + 100 and "more characters not stored" in raw
    assert len(text) == 200  # the explanation itself is cut to 200 characters, as always
    with sqlite3.connect(db) as c:
        c.execute("pragma wal_checkpoint(truncate)")
    assert db.stat().st_size < real_cache_db.stat().st_size + 200_000
