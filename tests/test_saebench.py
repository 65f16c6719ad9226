"""The `saebench` scorer (SAEBench's autointerp protocol): answer parsing, the example mix (2 strongest, 2
activation-weighted, 10 random, never an explainer window), the metadata it records, and planted latents.

The planted store is test_embedding_planted's (real text in the embedded tokenizer, latent k fires on every token
of a topic-k sentence). The judge is a local OpenAI-compatible HTTP server (stdlib) that answers deterministically
from the prompt it is sent: it names the numbered sequences that contain a word of the explanation. It stands in
for a capable judge (the embedded 135M model is at chance as a judge): what is tested is our side of the protocol,
that the explanation and the right sequences reach the judge and its numbers come back to the right windows.
"""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
from helpers.databases import copy_db
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import llm_stage_config, run_llm_stage, write_stand_in_explanation
from helpers.planted import build_planted_store

from autointerp.engine.interpretation.examples import Example, plain
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import LLMResponse
from autointerp.engine.interpretation.prompts import PromptLibrary
from autointerp.engine.interpretation.scorers import SCORERS
from autointerp.engine.interpretation.scorers.saebench import (
    N_RANDOM,
    N_TOP,
    N_WEIGHTED,
    parse_named,
    saebench_items,
    saebench_request,
)
from autointerp.store.db import ActivationStore
from autointerp.store.scorer_meta import read_scorers

N_SHOWN = N_TOP + N_WEIGHTED + N_RANDOM


def ex(window: int, acts, decile: int) -> Example:
    return Example(window, [f" t{window}"] * len(acts), np.array(acts, np.float32), decile)


# ---- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, named",
    [
        ("1, 3, 14", {1, 3, 14}),
        ("2,5", {2, 5}),
        ("4 and 7.", {4, 7}),
        ('"3, 9"', {3, 9}),
        ("[6, 2, 6]", {2, 6}),
        ("None", set()),
        ("none.", set()),
    ],
)
def test_answers_that_follow_the_format_parse_to_the_numbers_named(text, named):
    assert parse_named(LLMResponse(text=text), 14) == (named, None)


@pytest.mark.parametrize(
    "text, why",
    [
        ("15", "sequence 15 is not a sequence number (1-14)"),
        ("0, 3", "sequence 0 is not a sequence number (1-14)"),
        ("3, 99", "sequence 99 is not a sequence number (1-14)"),
        ("Sequences 1 and 3", "unparseable answer"),
        ("the neuron fires on cats", "unparseable answer"),
        ("1, 2.5", "unparseable answer"),
        ("", "empty answer"),
    ],
)
def test_out_of_range_numbers_and_garbage_fail_with_a_reason(text, why):
    assert parse_named(LLMResponse(text=text), 14) == (None, why)


def test_a_failed_call_fails_with_its_error():
    assert parse_named(LLMResponse(error="timeout"), 14) == (None, "timeout")


# ---- the example mix --------------------------------------------------------------------------------------------


def test_the_mix_is_the_two_strongest_two_weighted_and_ten_random_shuffled_and_seeded():
    act = [ex(i, [0.0, 1.0 + i], 1 + i % 10) for i in range(20)]  # window i peaks at 1 + i
    non = [ex(100 + i, [0.0, 0.0], 0) for i in range(30)]
    rng = np.random.default_rng([0, 5, SCORERS["saebench"].stream])
    shown = saebench_items(act, non, rng)
    kinds = [k for _, k in shown]
    assert len(shown) == N_SHOWN and {k: kinds.count(k) for k in set(kinds)} == {"top": 2, "weighted": 2, "random": 10}
    assert sorted(it.window for it, k in shown if k == "top") == [18, 19]
    assert len({it.window for it, _ in shown}) == N_SHOWN  # no window shown twice
    weighted = [it.window for it, k in shown if k == "weighted"]
    assert len(set(weighted)) == 2 and all(w < 18 for w in weighted)  # drawn from the rest, no repeat
    assert all(it.label == 1 and it.decile >= 1 for it, k in shown if k != "random")
    assert all(it.label == 0 and it.decile == 0 and it.window >= 100 for it, k in shown if k == "random")
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # shuffled together
    again = saebench_items(act, non, np.random.default_rng([0, 5, SCORERS["saebench"].stream]))
    assert [(it.window, k) for it, k in again] == [(it.window, k) for it, k in shown]


def test_weighted_picks_follow_the_squared_activations():
    # 2 top windows, then one heavy window (summed squares 10,000) among 20 near-silent ones (0.01 each): over many
    # draws the heavy one is among the two weighted picks almost always (uniform picking: 2/21 of the time)
    act = [ex(0, [200.0], 10), ex(1, [150.0], 10), ex(2, [100.0], 9)] + [ex(3 + i, [0.1], 1) for i in range(20)]
    non = [ex(100 + i, [0.0], 0) for i in range(12)]
    rng = np.random.default_rng(7)
    heavy = sum(any(it.window == 2 and k == "weighted" for it, k in saebench_items(act, non, rng)) for _ in range(200))
    assert heavy >= 190


def test_small_pools_give_what_they_have():
    shown = saebench_items(
        [ex(1, [1.0], 1), ex(2, [3.0], 2), ex(3, [2.0], 2)], [ex(9, [0.0], 0)], np.random.default_rng(1)
    )
    assert sorted((it.window, k) for it, k in shown) == [(1, "weighted"), (2, "top"), (3, "top"), (9, "random")]
    assert saebench_items([], [], np.random.default_rng(1)) == []


def test_the_prompt_numbers_the_sequences_after_the_explanation():
    texts = ["a cat sat", "the bank rose"]
    req = saebench_request(PromptLibrary().get("saebench"), "cats.", texts, "2", seed=0, temperature=0.0)
    system, user = req.messages[0]["content"], req.messages[-1]["content"]
    assert "2 example sequences" in system and '"2"' in system and '"None"' in system
    assert "fires on cats." in user and user.index("cats") < user.index("1. a cat sat")
    assert user.endswith("1. a cat sat\n2. the bank rose") and req.json_schema is None
    assert req.max_tokens >= 2 * len(texts) + 5  # at least SAEBench's budget


# ---- through the score stage, with a judge that reads the prompt -------------------------------------------------

_NUMBERED = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)
_EXPLANATION = re.compile(r"fires on (.*)\.\n")
_STOP = {"and", "the", "words", "such", "like", "about"}
# What a capable judge would take from a good explanation of each planted topic, written out as its words (the
# judge below matches words, not meanings); the planted store's own topic names stand for nothing better.
EXPLANATIONS = {
    0: "cats and kittens, words like cat, kitten",
    1: "money and finance, words like bank, shares, stocks, bonds, markets, interest, profits, earnings, investors,"
    " trading, prices, funds, budget, credit, gold",
    2: "football, words like match, goal, team, club, league, striker, scored, referee, fans, coach, captain,"
    " defender, winger, midfielder, header, relegated",
}


def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:-2] if w.endswith("es") else w.rstrip("s") for w in words if len(w) >= 3 and w not in _STOP}


def word_judge(seen: list):
    """Names each numbered sequence that contains a word of the explanation (a crude stem: no final s)."""

    def respond(body, headers):
        user = body["messages"][-1]["content"]
        stems = _stems(_EXPLANATION.search(user).group(1))
        shown = {int(i): text.lower() for i, text in _NUMBERED.findall(user)}
        named = [i for i, text in sorted(shown.items()) if any(s in text for s in stems)]
        seen.append({"stems": stems, "shown": shown, "named": named, "system": body["messages"][0]["content"]})
        return reply(body=completion(", ".join(map(str, named)) if named else "None"))

    return respond


def score(db, respond, latents=(0, 1, 2)):
    with fake_server(respond) as fake:
        cfg = llm_stage_config(db, [fake.url], scorers=("saebench",))
        tally = run_llm_stage(cfg, "score", list(latents))
    with ActivationStore.open(db, readonly=True) as store:
        rows = {(r["latent"], r["control"]): r for r in store.results.scores() if r["scorer"] == "saebench"}
        samples = {k: store.results.sample_set(k) for k in latents}
        with sqlite3.connect(db) as conn:
            meta = read_scorers(conn)
    return cfg, tally, rows, samples, meta


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory):
    return build_planted_store(tmp_path_factory.mktemp("planted"))


def test_planted_latents_true_explanations_score_far_above_random_ones(planted_db, tmp_path):
    db = copy_db(planted_db, tmp_path / "p.db")
    with ActivationStore.open(db) as store:
        for k, text in EXPLANATIONS.items():
            write_stand_in_explanation(store.results, k, text)
    seen: list = []
    cfg, tally, rows, samples, meta = score(db, word_judge(seen))
    assert tally.done == 3 and tally.failed == 0 and tally.prompts == 6 and len(seen) == 6  # one call per explanation
    assert meta["saebench"] == SCORERS["saebench"].meta  # the run recorded what the scorer is
    assert meta["saebench"].primary_metric == "accuracy"

    for k in range(3):
        real, control = rows[(k, 0)], rows[(k, 1)]
        assert real["explanation"] == EXPLANATIONS[k]
        assert control["explanation"] == EXPLANATIONS[control["explanation_latent"]] != real["explanation"]
        for r in (real, control):
            assert r["n"] == r["n_scored"] == N_SHOWN and r["n_failed"] == 0 and r["n_calls"] == 1
            assert sum(o["label"] for o in r["outcomes"]) == N_TOP + N_WEIGHTED
            assert r["details"]["kinds"].count("random") == N_RANDOM
            assert r["settings"]["saebench_mix"] == {"top": N_TOP, "weighted": N_WEIGHTED, "random": N_RANDOM}
            assert r["details"]["none_baseline"] == pytest.approx(N_RANDOM / N_SHOWN)
            assert r["accuracy"] == pytest.approx(
                sum(o["label"] == o["prediction"] for o in r["outcomes"]) / N_SHOWN
            )  # SAEBench's score: the share of sequences classified right
            # never an explainer window; each activating one held out as "activating", each random one as
            # "non_activating" (the sampler's roles: disjoint from the explainer's by construction)
            explain = {w for w, _, _ in samples[k].role("explain")}
            assert len(explain) > 0 and not explain & {o["window"] for o in r["outcomes"]}
            roles = {w: role for role in samples[k].windows for w, _, _ in samples[k].role(role)}
            assert all(roles[o["window"]] == ("activating" if o["label"] else "non_activating") for o in r["outcomes"])
        print(f"latent {k}: saebench accuracy {real['accuracy']:.3f}, control {control['accuracy']:.3f}")
        assert real["accuracy"] >= 0.9, real["details"]
        assert control["accuracy"] <= real["accuracy"] - 0.2, (real["accuracy"], control["accuracy"])

    # what the judge read: the explanation and exactly the stored windows, in the stored order; and its numbers
    # came back to those windows
    with ActivationStore.open(db, readonly=True) as store:
        interp = Interpreter(cfg, store, None)
        try:
            for (k, _), r in rows.items():
                wins = [o["window"] for o in r["outcomes"]]
                texts = {e.window: plain(e).lower() for e in interp.examples(k, wins)}
                shown = {i: texts[w] for i, w in enumerate(wins, 1)}
                (call,) = [c for c in seen if c["stems"] == _stems(r["explanation"]) and c["shown"] == shown]
                assert call["named"] == [i for i, o in enumerate(r["outcomes"], 1) if o["prediction"]]
                assert call["named"] == r["details"]["named"] and f"{N_SHOWN} example sequences" in call["system"]
        finally:
            interp.close()


def test_unparseable_and_out_of_range_answers_are_failures_not_wrong_answers(planted_db, tmp_path):
    db = copy_db(planted_db, tmp_path / "f.db")  # explanations: the planted store's topic names

    def respond(body, headers):
        explanation = _EXPLANATION.search(body["messages"][-1]["content"]).group(1)
        answer = (
            "I think the ones about cats" if "cats" in explanation else "3, 15" if "money" in explanation else "None"
        )
        return reply(body=completion(answer))

    _, tally, rows, _, _ = score(db, respond)
    assert len(rows) == 6 and tally.done == 3
    assert all(any(word in r["explanation"] for r in rows.values()) for word in ("cats", "money", "football"))
    for r in rows.values():
        if "football" in r["explanation"]:  # "None": every random sequence right, every activating one wrong
            assert r["n_failed"] == 0 and r["n_scored"] == N_SHOWN and r["details"]["named"] == []
            assert r["accuracy"] == pytest.approx(r["details"]["none_baseline"]) == pytest.approx(N_RANDOM / N_SHOWN)
            continue
        assert r["n_failed"] == r["n"] == N_SHOWN and r["n_scored"] == 0
        assert r["accuracy"] is None and r["tp"] == r["fp"] == r["tn"] == r["fn"] == 0
        assert all(o["failed"] and o["prediction"] is None for o in r["outcomes"])
        assert r["details"]["named"] is None and r["n_retry"] == N_SHOWN  # worth another try on a rerun
        why = (
            "unparseable answer"
            if "cats" in r["explanation"]
            else f"sequence 15 is not a sequence number (1-{N_SHOWN})"
        )
        assert r["errors"] == {why: N_SHOWN}
