"""The five newer scorers and the output-side explainer end to end: a real LLM through llama.cpp (the stand-in: what
each scorer stores, not what it concludes), the real subject model and SAE, a real cache. What each stores is checked
against independent recomputation."""

import asyncio
import dataclasses

import pytest
import torch
from helpers.databases import copy_db
from helpers.llm_stage import share_subject
from helpers.metrics import assert_metrics_match_outcomes
from helpers.stand_in_llm import stand_in_gguf

from autointerp.engine.activations.steering import Steerer, steering_site
from autointerp.engine.config import Config, ExplainConfig, LLMConfig, SampleConfig, ScoreConfig
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import make_backend
from autointerp.store.browse import Browser
from autointerp.store.db import ActivationStore

NEW = ["surprisal", "simulation", "intruder", "generation", "intervention"]
SCORE = ScoreConfig(
    scorers=NEW,
    simulation_examples=2,
    generation_texts=3,
    intervention_prompts=4,
    intervention_explain_prompts=2,
    intervention_prompt_tokens=24,
    intervention_new_tokens=6,
    kl_targets=[0.5, 2.0],
)
SAMPLE = SampleConfig(n_explain=8, activating_per_decile=1, n_non_activating=10, min_windows=20)


@pytest.fixture(scope="module")
def backend():
    """The stand-in LLM (helpers/stand_in_llm.py): these tests are about what each scorer stores and counts."""
    b = make_backend(LLMConfig(model=str(stand_in_gguf())))
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def scored(tmp_path_factory, real_cache_db, backend, subject_model):
    """Two latents explained (stand-ins where the 135M model's answer failed), the first scored by all five."""
    db = copy_db(real_cache_db, tmp_path_factory.mktemp("scorers") / "run.db")
    store = ActivationStore.open(db)
    interp = share_subject(Interpreter(Config(db=str(db), sample=SAMPLE, score=SCORE), store, backend), subject_model)
    latents = interp.select("top:2")
    asyncio.run(interp.run_stage("explain", latents))
    for latent in latents:
        row = interp.results.explanation(latent, "default")
        if row["text"] is None:  # a counted failure; scoring is what this test is about
            interp.results.write_explanation(dict(row, text=f"the word number {latent}", error=None, extras={}))
    tally = asyncio.run(interp.run_stage("score", latents[:1]))
    yield interp, store, db, latents, tally
    interp.close()
    store.close()


def rows_by(interp, latent):
    return {(r["scorer"], r["control"]): r for r in interp.results.scores(latent=latent)}


def test_every_new_scorer_stores_real_and_control_with_failures_accounted(scored):
    interp, _, _, (latent, other), tally = scored
    rows = rows_by(interp, latent)
    assert set(rows) == {(s, c) for s in NEW for c in (0, 1)} and interp.results.scores(latent=other) == []
    assert tally.done == 1 and tally.failed == sum(r["n_failed"] for r in rows.values())  # every failure counted
    s = interp.results.sample_set(latent)
    shown = {w for w, _, _ in s.role("explain")}
    held_out = {w for w, _, _ in s.role("activating") + s.role("non_activating")}
    assert len(shown) == 8 and len(held_out) == 20 and not shown & held_out
    for (scorer, control), r in rows.items():
        assert_metrics_match_outcomes(r)  # counts, failures, confusion matrix and AUROC from the outcomes
        assert r["seed"] == s.seed and r["settings"]
        # The only other explained latent is the control's; the real row uses the latent's own explanation.
        assert r["explanation_latent"] == (other if control else latent), (scorer, control)
        assert r["explanation"] == interp.results.explanation(r["explanation_latent"], "default")["text"]
        if scorer in ("surprisal", "simulation", "intruder"):  # scored on held-out corpus examples only
            assert {o["window"] for o in r["outcomes"]} <= held_out, scorer
        for m in ("accuracy", "balanced_accuracy", "auroc"):
            assert r[m] is None or 0.0 <= r[m] <= 1.0
    assert {o["window"] for o in rows["surprisal", 0]["outcomes"]} == held_out  # each held-out example once
    for scorer in NEW:  # the control is scored on the very examples (or prompts) of the real explanation
        real, ctrl = rows[scorer, 0]["outcomes"], rows[scorer, 1]["outcomes"]
        if scorer not in ("generation", "intervention"):  # these make their items from the explanation itself
            assert [(o["window"], o["label"]) for o in ctrl] == [(o["window"], o["label"]) for o in real], scorer
    assert rows["surprisal", 0]["n_calls"] == 0 and rows["surprisal", 0]["n"] == 20
    assert rows["surprisal", 0]["details"]["base_model"]
    assert rows["surprisal", 0]["n_failed"] > 0 or rows["surprisal", 0]["auroc"] is not None
    sim = rows["simulation", 0]
    assert sim["n"] == 2 and sim["n_calls"] == 2 and sim["output_tokens"] > 0
    assert sim["correlation"] is None or -1.0 <= sim["correlation"] <= 1.0
    assert sim["correlation"] == sim["details"]["correlation"]
    intr = rows["intruder", 0]
    assert intr["n"] == intr["n_calls"] == 2 and intr["details"]["chance"] == pytest.approx(0.2)  # 10 // 4 groups
    gen = rows["generation", 0]
    assert gen["n"] == 3 and gen["n_calls"] == 1


def test_generation_counts_exactly_the_written_texts_that_fire_the_latent(scored):
    interp, _, _, (latent, _), _ = scored
    for control in (0, 1):
        r = rows_by(interp, latent)["generation", control]
        texts = [t["text"] for t in r["details"]["texts"]]
        fired = [a is not None and a.max() > 0 for a in interp.resources.probe.activations(texts, latent)]
        assert [o["prediction"] for o in r["outcomes"] if not o["failed"]] == [int(f) for f in fired if f is not None]
        if r["n_scored"]:
            assert r["recall"] == pytest.approx(sum(fired) / r["n_scored"])


def test_intervention_strengths_reach_their_kl_targets_on_prompts_the_explainer_never_sees(scored):
    interp, store, _, (latent, _), _ = scored
    r = rows_by(interp, latent)["intervention", 0]
    pool = interp.resources.intervention_prompts(latent)
    assert not set(pool["explain"][0]) & set(pool["score"][0]) and len(pool["score"][0]) == 4
    assert {o["window"] for o in r["outcomes"] if o["window"] >= 0} <= set(pool["score"][0])
    res = interp.resources
    steerer = Steerer(res.subject, steering_site(res.coder, store.provenance["hook"], latent))
    prompts = torch.from_numpy(pool["score"][1])
    per_target = r["details"]["per_target"]
    assert [t["target"] for t in per_target] == [0.5, 2.0]
    for t in per_target:
        assert t["strength"] is not None, t["error"]
        assert steerer.kl(prompts, t["strength"]) == pytest.approx(t["target"], rel=0.1)
        assert t["n"] == 4 - t["identical"]
    shown = r["n_scored"] + r["n_failed"]
    assert shown == sum(t["n"] for t in per_target) and r["n_calls"] == shown


def test_the_tui_detail_shows_each_scorers_metric_and_details(scored):
    from autointerp.tui.detail import scores_table

    _, _, db, (latent, _), _ = scored
    browser = Browser.open(db)
    try:
        assert set(browser.scorers()) >= set(NEW) and browser.scorers()["simulation"] == "correlation"
        text = scores_table(browser.detail(latent)).plain
    finally:
        browser.close()
    for scorer in NEW:
        assert f" {scorer}" in text
    assert "KL 0.5: strength" in text and "KL 2: strength" in text
    assert "written texts fired the latent" in text and "base model" in text and "chance 0.20" in text


def test_the_output_side_explainer_explains_from_steered_continuations(scored, backend, tmp_path):
    interp, store, db, (latent, _), _ = scored
    cfg = Config(db=str(db), sample=SAMPLE, score=SCORE, explain=ExplainConfig(explainer="intervention"))
    causal = Interpreter(cfg, store, backend)
    try:
        row, why = asyncio.run(causal.explain_latent(latent))
    finally:
        causal.close()
    assert why is None and row["explainer"] == "intervention"
    steering = row["extras"]["steering"]
    assert steering["target"] == 2.0 and steering["strength"] > 0  # the median of [0.5, 2.0]
    assert row["n_examples"] == 2 and (row["text"] is None) == (row["error"] is not None)
    assert row["n_calls"] == 1 and row["prompt_tokens"] > 0


def test_a_missing_surprisal_base_model_is_refused_before_any_latent(real_cache_db, tmp_path):
    from autointerp.engine.interpretation.interpret import InterpretError

    db = copy_db(real_cache_db, tmp_path / "s.db")
    cfg = Config(db=str(db), score=ScoreConfig(scorers=["surprisal"], surprisal_model=str(tmp_path / "no.gguf")))
    with ActivationStore.open(db) as store, pytest.raises(InterpretError, match="score.surprisal_model"):
        Interpreter(cfg, store, None)


def test_scoring_again_from_scratch_reproduces_the_stored_rows(scored, backend, subject_model, tmp_path):
    """Seeded draws and temperature 0: a redo of the intruder scorer (its groups drawn from the seed, answered by
    the LLM) on a copy of the database gives the same groups, answers, failures and metrics."""
    import sqlite3

    interp, _, db, (latent, _), _ = scored
    copy = tmp_path / "again.db"
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # the write-ahead log's pages too
    redo = ["intruder"]
    cfg = Config(db=str(copy), sample=SAMPLE, score=dataclasses.replace(SCORE, scorers=redo))
    with ActivationStore.open(copy) as store:
        again = share_subject(Interpreter(cfg, store, backend), subject_model)
        try:
            tally = asyncio.run(again.run_stage("score", [latent], redo=True))
            after = rows_by(again, latent)
        finally:
            again.close()
    before = rows_by(interp, latent)
    assert tally.done == 1
    counts = ("explanation_latent", "seed", "n", "n_scored", "n_failed", "tp", "fp", "tn", "fn", "n_calls")
    for key in [(s, c) for s in redo for c in (0, 1)]:
        a, b = after[key], before[key]
        assert a["created_at"] != b["created_at"]  # really computed again
        assert [a[k] for k in counts] == [b[k] for k in counts], key
        assert [(o["window"], o["label"], o["prediction"], o["failed"]) for o in a["outcomes"]] == [
            (o["window"], o["label"], o["prediction"], o["failed"]) for o in b["outcomes"]
        ], key
        for x, y in zip(a["outcomes"], b["outcomes"]):  # logprob-derived values may move in the last digits
            assert (x["probability"] is None) == (y["probability"] is None), key
            assert (x["probability"] or 0.0) == pytest.approx(y["probability"] or 0.0, abs=1e-3), key
