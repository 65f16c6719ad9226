"""Explain and score with the real embedded LLM (SmolLM2 through llama.cpp) over a real cache."""

import asyncio
import json
import subprocess

import pytest
from helpers.cli import batch_cmd, run_cli
from helpers.databases import copy_db, rows
from helpers.llm_stage import share_subject
from helpers.metrics import assert_metrics_match_outcomes

from autointerp.engine.config import Config, SampleConfig, ScoreConfig
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import make_backend
from autointerp.store.db import ActivationStore

SMALL_SAMPLE = SampleConfig(n_explain=8, activating_per_decile=1, n_non_activating=10, min_windows=20)


@pytest.fixture(scope="module")
def backend():
    b = make_backend(Config().llm)
    yield b
    asyncio.run(b.aclose())


def interpreter(db, backend, scorers=("detection", "fuzzing", "embedding")):
    cfg = Config(db=str(db), sample=SMALL_SAMPLE, score=ScoreConfig(scorers=list(scorers)))
    store = ActivationStore.open(db)
    return Interpreter(cfg, store, backend), store


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`autointerp batch` with the embedded default (cpu profile, every default scorer) on two latents (each the
    other's control) over 8,192 tokens: the main job on a small slice, run once for the tests below."""
    d = tmp_path_factory.mktemp("default")
    db, cfg = d / "d.db", d / "d.toml"
    cfg.write_text(f'db = "{db}"\n[batch]\nlatents = "top:2"\n[cache]\nn_tokens = 8192\n')
    run = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return db, run


def test_embedded_default_end_to_end_on_a_small_slice(default_run):
    db, run = default_run
    assert rows(db, "select count(*) from explanations") == [(2,)]
    scorers = rows(db, "select scorer, control, n from scores order by 1, 2")
    assert len(scorers) == 12 and sorted({s[:2] for s in scorers}) == [
        (s, c) for s in ("detection", "embedding", "fuzzing") for c in (0, 1)
    ]
    assert {s[0]: s[2] for s in scorers} == {"detection": 40, "embedding": 40, "fuzzing": 20}  # the cpu profile
    assert "browse the results" in run.stderr


def test_explain_then_score_stores_disjoint_examples_accounting_and_controls(default_run):
    db, _ = default_run
    with ActivationStore.open(db, readonly=True) as store:
        results = store.results
        latents = sorted(results.explained_latents("default"))
        assert len(latents) == 2
        progress = {r[0]: r[1:] for r in rows(db, "select stage, done, total from progress")}
        assert progress["explain"] == (2, 2) and progress["score"] == (2, 2)
        for latent in latents:
            row = results.explanation(latent, "default")
            assert row["n_calls"] == 1 and row["prompt_tokens"] > 100 and row["llm_seconds"] > 0
            assert row["n_examples"] == 20 and row["prompt_sha"] and row["backend"] == "llamacpp" and row["raw"]
            assert row["text"] and row["error"] is None  # temperature 0: these two latents explain every time
            settings = json.loads(row["settings"])
            assert settings["llm_seed"] == 0 and settings["temperature"] == 0.0 and settings["n_threads"] >= 1

        rows_ = results.scores()
        assert {(r["latent"], r["scorer"], r["control"]) for r in rows_} == {
            (x, s, c) for x in latents for s in ("detection", "fuzzing", "embedding") for c in (0, 1)
        }
        by_key = {(r["latent"], r["scorer"], r["control"]): r for r in rows_}
        for r in rows_:
            s = results.sample_set(r["latent"])
            activating = {w for w, _, _ in s.role("activating")}
            negatives = {w for w, _, _ in s.role("non_activating")}
            shown = {w for w, _, _ in s.role("explain")}
            assert len(shown) == 20 and len(activating) == 20 and len(negatives) == 20
            assert not shown & (activating | negatives)  # the explainer's examples are never scored
            windows = [o["window"] for o in r["outcomes"]]
            assert len(set(windows)) == len(windows)  # each held-out example scored once
            # Scored on exactly the held-out examples (fuzzing: the activating ones, some marked on wrong tokens).
            if r["scorer"] == "fuzzing":
                assert set(windows) == activating and {o["label"] for o in r["outcomes"]} == {0, 1}
            else:
                assert set(windows) == activating | negatives
                assert {o["window"] for o in r["outcomes"] if o["label"] == 1} == activating
            assert_metrics_match_outcomes(r)  # counts, failures, confusion matrix and AUROC from the outcomes
            assert r["seed"] == s.seed
            if r["control"]:  # the control: another latent's explanation, on this latent's very examples
                assert r["explanation_latent"] != r["latent"] and r["explanation_latent"] in latents
                assert r["explanation"] == results.explanation(r["explanation_latent"], "default")["text"]
                real = by_key[r["latent"], r["scorer"], 0]
                assert [(o["window"], o["label"]) for o in r["outcomes"]] == [
                    (o["window"], o["label"]) for o in real["outcomes"]
                ]
            else:
                assert r["explanation_latent"] == r["latent"]
                assert r["explanation"] == results.explanation(r["latent"], "default")["text"]
            if r["scorer"] == "detection":
                assert r["settings"]["examples_per_prompt"] == 1 and r["settings"]["profile"] == "cpu"
                assert r["n"] == 40 and r["n_calls"] == 40  # the cpu profile: one excerpt per prompt
                # prompts of one explanation share instructions + explanation: the KV cache serves them
                assert r["cached_tokens"] > 0.8 * r["prompt_tokens"]
                assert r["auroc"] is None or 0 <= r["auroc"] <= 1
            if r["scorer"] == "fuzzing":
                assert r["n"] == 20 and r["n_calls"] == 20
            if r["scorer"] == "embedding":
                assert r["n_calls"] == 0 and r["auroc"] is not None


SCORE_COUNTS = ("explanation", "explanation_latent", "seed", "n", "n_scored", "n_failed", "tp", "fp", "tn", "fn")


def comparable(rs):
    return [
        (
            r["latent"],
            r["scorer"],
            r["control"],
            [r[k] for k in SCORE_COUNTS + ("n_calls",)],
            [(o["window"], o["label"], o["prediction"], o["failed"]) for o in r["outcomes"]],
        )
        for r in rs
    ]


def test_a_rerun_skips_what_is_stored_and_redo_recomputes_it_identically(default_run, backend, tmp_path):
    """In this process, on a copy of the default run: the score stage skips stored scores; --redo of one latent's
    fuzzing (the scorer the batch --redo test does not run) gives the same rows (seeded draws, temperature 0)."""
    db = copy_db(default_run[0], tmp_path / "redo.db")
    cfg = Config(db=str(db))
    store = ActivationStore.open(db)
    interp = Interpreter(cfg, store, backend)
    try:
        latents = sorted(interp.results.explained_latents("default"))
        before = interp.results.scores()
        again = asyncio.run(interp.run_stage("score", latents))
        assert again.done == 0 and again.reasons["already scored"] == 2 and again.prompts == 0
        interp.close()
        cfg.score.scorers = ["fuzzing"]
        interp = Interpreter(cfg, store, backend)
        redone = asyncio.run(interp.run_stage("score", latents[:1], redo=True))
        fuzzed = [r for r in before if r["latent"] == latents[0] and r["scorer"] == "fuzzing"]
        assert redone.done == 1 and redone.prompts == sum(r["n_calls"] for r in fuzzed) == 40
        after = interp.results.scores()
        assert comparable(after) == comparable(before)  # the redone rows equal; nothing else changed
        for a, b in zip(after, before):  # logprob-derived values may move in the last digits (prefix cache)
            assert (a["auroc"] is None) == (b["auroc"] is None)
            assert (a["auroc"] or 0) == pytest.approx(b["auroc"] or 0, abs=1e-3)
        redone_at = {(r["latent"], r["scorer"], r["control"]): r["created_at"] for r in after}
        for b in before:
            moved = redone_at[b["latent"], b["scorer"], b["control"]] != b["created_at"]
            assert moved == (b["latent"] == latents[0] and b["scorer"] == "fuzzing"), (b["scorer"], b["control"])
    finally:
        interp.close()
        store.close()


def test_logit_lens_and_contrastive_explainers_show_their_extras(tmp_path, real_cache_db, backend, subject_model):
    db = copy_db(real_cache_db, tmp_path / "ll.db")
    for explainer in ("logit_lens", "contrastive"):
        cfg = Config(db=str(db), sample=SMALL_SAMPLE)
        cfg.explain.explainer = explainer
        store = ActivationStore.open(db)
        interp = share_subject(Interpreter(cfg, store, backend), subject_model)
        latent = interp.select("top:1")[0]
        prepared, _ = interp._prepare_explain(latent, redo=True)
        request = prepared.prompt.request
        user = request.messages[-1]["content"]
        if explainer == "logit_lens":
            promoted = prepared.prompt.extras["promoted"]
            assert len(promoted) == 10 and json.dumps(promoted[0]) in user
        else:
            assert "Not active:" in user
            s = interp.results.sample_set(latent)
            assert len(s.role("explain_non")) == 10
        interp.close()
        store.close()


def test_cli_bad_backend_input_is_one_line_and_writes_nothing(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "cli.db")
    r = run_cli("explain", "--db", str(db), "--llm-model", str(tmp_path / "missing.gguf"), "--latents", "top:1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: llm.model: GGUF file")
    assert "Traceback" not in r.stderr
    r = run_cli("explain", "--db", str(db), "--latents", "5-2")
    assert r.returncode == 2 and "latent selection" in r.stderr and "Traceback" not in r.stderr
    with ActivationStore.open(db, readonly=True) as store:
        assert store.db["explanations"].count == 0 and store.db["samples"].count == 0
