"""Intruder, generation and intervention scoring on hand-made inputs: grouping, parsing, metrics, and
failures counted (never silently dropped, never counted as wrong)."""

import numpy as np
import pytest

from autointerp.engine.interpretation.examples import Example
from autointerp.engine.interpretation.explainers import steered
from autointerp.engine.interpretation.llm import LLMResponse, TokenLogprob
from autointerp.engine.interpretation.scorers import generation, intervention, intruder


def ex(window: int, decile: int) -> Example:
    return Example(window, [f"w{window}", " text"], np.array([decile, 0.0], np.float32), decile)


def test_intruder_groups_hold_one_non_activating_excerpt_at_the_recorded_place():
    act = [ex(w, 1 + w % 10) for w in range(20)]
    non = [ex(100 + w, 0) for w in range(7)]
    groups = intruder.intruder_groups(act, non, 4, np.random.default_rng(0))
    assert len(groups) == 5  # 20 activating excerpts in groups of 4, each with its own intruder
    seen = set()
    for items, answer in groups:
        assert len(items) == 5 and [it.label for it in items].count(0) == 1 and items[answer].label == 0
        assert not seen & {it.window for it in items}  # no excerpt in two groups
        seen |= {it.window for it in items}
    # grouped by strength: each group's activating excerpts come from neighbouring deciles
    for items, _ in groups:
        deciles = [it.decile for it in items if it.label]
        assert max(deciles) - min(deciles) <= 2
    again = intruder.intruder_groups(act, non, 4, np.random.default_rng(0))
    assert [[it.window for it in g] for g, _ in again] == [[it.window for it in g] for g, _ in groups]


def test_intruder_answers_parse_with_probabilities_and_failures_say_why():
    lp = [TokenLogprob('{"', 0.0), TokenLogprob("3", np.log(0.6), {"3": np.log(0.6), "2": np.log(0.2), "x": -1.0})]
    idx, probs, err = intruder.parse_intruder(LLMResponse(text='{"intruder": 3}', logprobs=lp), 5)
    assert (idx, err) == (2, None) and probs[2] == pytest.approx(0.75) and probs[1] == pytest.approx(0.25)
    assert intruder.parse_intruder(LLMResponse(text="I think excerpt 2 is odd"), 5)[:1] == (1,)
    assert (
        intruder.parse_intruder(LLMResponse(text='{"intruder": 9}'), 5)[2]
        == "intruder 9 is not an excerpt number (1-5)"
    )
    assert intruder.parse_intruder(LLMResponse(text="no idea"), 5)[2] == "unparseable answer"
    assert intruder.parse_intruder(LLMResponse(error="timeout"), 5)[2] == "timeout"


def test_generation_counts_empty_texts_and_missing_texts_as_failures():
    texts, err = generation.parse_texts(LLMResponse(text='{"texts": ["milk please", "", "more milk"]}'), 4)
    assert err is None and len(texts) == 3
    acts = [np.array([0.0, 2.5], np.float32), None, np.zeros(3, np.float32)]
    run = generation.generation_run(texts, None, 4, acts)
    assert [o.failed for o in run.outcomes] == [False, True, False, True]
    assert [o.prediction for o in run.outcomes if not o.failed] == [1, 0]
    assert run.errors == {"a generated text tokenises to nothing": 1, "wrote 3 of 4 texts": 1}
    bad = generation.generation_run(*generation.parse_texts(LLMResponse(text="Sure! Here are texts"), 3), 3, [])
    assert len(bad.outcomes) == 3 and all(o.failed for o in bad.outcomes) and bad.errors == {"unparseable answer": 3}


def _effects():
    pairs = [intervention.SteeredPair(i, f"prompt {i}", "the cat sat", f"milk milk {i}") for i in range(4)]
    pairs.append(intervention.SteeredPair(9, "prompt 9", "same", "same"))
    reached = intervention.TargetEffects(1.0, 3.5, 1.02, 12, None, 5, pairs)
    unreached = intervention.TargetEffects(50.0, None, None, 40, "KL target 50 unreachable: at most 7.3", 5)
    return [reached, unreached]


def test_intervention_pairs_metrics_per_target_and_unreached_targets_are_counted_failures():
    effects = _effects()
    items, identical = intervention.pair_items(effects, np.random.default_rng(1))
    assert len(items) == 4 and identical == {0: 1, 1: 0}  # the identical pair is not shown, but reported
    answers = []
    for i, it in enumerate(items):
        right = "B" if it.steered_is_b else "A"
        wrong = "A" if right == "B" else "B"
        answers.append(LLMResponse(text=f'{{"intervened": "{right if i < 3 else wrong}"}}'))
    answers[0] = LLMResponse(text="hmm")  # unparseable: a failure, not a wrong answer
    run = intervention.intervention_run(effects, items, identical, answers, 10)
    per = run.details["per_target"]
    assert per[0]["target"] == 1.0 and per[0]["strength"] == 3.5 and per[0]["identical"] == 1
    assert per[0]["n"] == 4 and per[0]["n_failed"] == 1 and per[0]["accuracy"] == pytest.approx(2 / 3)
    assert per[1]["strength"] is None and per[1]["n_failed"] == 5 and "unreachable" in per[1]["error"]
    assert run.errors == {"unparseable answer": 1, "KL target 50 unreachable: at most 7.3": 5}
    assert len(run.outcomes) == len(run.items) == 9 and sum(o.failed for o in run.outcomes) == 6


def test_intervention_choice_parsing_and_probability_of_b():
    lp = [TokenLogprob("A", np.log(0.3), {"A": np.log(0.3), "B": np.log(0.6)})]
    choice, p, err = intervention.parse_choice(LLMResponse(text='{"intervened": "A"}', logprobs=lp))
    assert (choice, err) == (0, None) and p == pytest.approx(2 / 3)
    assert intervention.parse_choice(LLMResponse(text="Continuation B, clearly"))[0] == 1
    assert intervention.parse_choice(LLMResponse(text='{"intervened": "C"}'))[2] == "unparseable answer"


def test_the_explainer_sees_the_median_target_and_every_pair():
    assert steered.explain_target([4.0, 0.25, 1.0]) == 1.0
    text = steered.explain_examples(_effects()[0])
    assert text.count("Feature on:") == 5 and "Text 1: prompt 0\nNormal: the cat sat\nFeature on: milk milk 0" in text


def test_the_dry_run_plans_each_scorers_llm_calls(tmp_path):
    from autointerp.engine.commands.estimate import plan
    from autointerp.engine.config import CHOICES, Config, ScoreConfig

    cfg = Config(db=str(tmp_path / "none.db"), score=ScoreConfig(scorers=list(CHOICES["score.scorers"])))
    stages = plan(cfg)["llm_stages"]
    calls = {name: st["calls"] for name, st in stages.items()}
    # the cpu profile, 8 latents, real + control: 20 + 20 excerpts one per prompt, 4 simulated excerpts,
    # 20 // 4 intruder groups, one generation call, 3 KL targets x 8 prompts, one saebench prompt
    assert calls == {
        "explain": 8,
        "score/detection": 8 * 2 * 40,
        "score/fuzzing": 8 * 2 * 20,
        "score/embedding": 0,
        "score/surprisal": 0,
        "score/simulation": 8 * 2 * 4,
        "score/intruder": 8 * 2 * 5,
        "score/generation": 8 * 2,
        "score/intervention": 8 * 2 * 24,
        "score/saebench": 8 * 2,  # one prompt of 14 sequences per explanation
    }
    assert stages["score/surprisal"]["basis"] == "no LLM" and stages["score/intervention"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    "line, message",
    [
        ("kl_targets = [1.0, -2.0]", "'score.kl_targets': [1.0, -2.0] must be positive numbers"),
        ("kl_targets = []", "'score.kl_targets'"),
        ("intruder_group = 0", "'score.intruder_group': 0 must be at least 1"),
        ('scorers = ["simulation", "telepathy"]', "'telepathy' is not one of"),
    ],
)
def test_bad_scorer_settings_are_one_clear_error(tmp_path, line, message):
    from autointerp.engine.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(f"[score]\n{line}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)
