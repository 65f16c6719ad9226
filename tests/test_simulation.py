"""The simulation scorer: prompt rendering, answer parsing, expected values from logprobs, Pearson scores,
and one real run with the embedded SmolLM2 through llama.cpp."""

import math
import time

import numpy as np
import pytest
from helpers.llm_stage import complete_and_close

from autointerp.engine.config import LLMConfig
from autointerp.engine.interpretation.llm import LLMResponse, TokenLogprob, make_backend
from autointerp.engine.interpretation.prompts import PromptLibrary
from autointerp.engine.interpretation.scorers.simulation import (
    parse_simulation,
    simulation_correlations,
    simulation_request,
    simulation_schema,
)

ERRORS = ("unparseable answer", "activation outside 0-10")  # plus "wrong number of activations (...)"


@pytest.fixture(scope="module")
def template():
    return PromptLibrary().get("simulation")


def tok(text: str, top: dict[str, float] | None = None) -> TokenLogprob:
    """A generated token; `top` gives alternatives as probabilities (stored as log-probabilities)."""
    top = top or {text: 1.0}
    return TokenLogprob(text, math.log(top.get(text, 1e-9)), {k: math.log(v) for k, v in top.items()})


def spelled(*pieces) -> list[TokenLogprob]:
    return [p if isinstance(p, TokenLogprob) else tok(p) for p in pieces]


# --- Pearson ----------------------------------------------------------------------------------------


def test_correlations_pooled_and_per_example_by_hand():
    true = [np.array([0, 1, 2]), np.array([1, 1, 1]), np.array([0, 1, 2]), np.array([5, 0, 0])]
    pred = [np.array([0, 2, 1]), np.array([0, 1, 2]), np.array([0, 1, 2]), None]  # the last: a failed answer
    out = simulation_correlations(true, pred)
    # Example 1: deviations from the means (1, 1): t = (-1, 0, 1), p = (-1, 1, 0):
    #   sum(t*p) = 1, sum(t^2) = 2, sum(p^2) = 2 -> r = 1 / sqrt(2 * 2) = 0.5.
    # Example 2: the true side is constant -> no correlation; left out of the mean, kept in the pool.
    # Example 3: identical -> r = 1.   Mean over examples 1 and 3: (0.5 + 1) / 2 = 0.75.
    assert out["mean_example_correlation"] == pytest.approx(0.75)
    # Pooled over 9 tokens: t = 0 1 2 1 1 1 0 1 2 (mean 1), p = 0 2 1 0 1 2 0 1 2 (mean 1).
    #   deviations t: -1 0 1 0 0 0 -1 0 1; p: -1 1 0 -1 0 1 -1 0 1
    #   sum(t*p) = 1 + 1 + 1 = 3; sum(t^2) = 4; sum(p^2) = 6 -> r = 3 / sqrt(24) = 0.61237...
    assert out["correlation"] == pytest.approx(3 / math.sqrt(24))
    assert out["correlation"] == pytest.approx(0.6123724, abs=1e-6)
    assert (out["n_examples"], out["n_tokens"], out["n_example_correlations"]) == (3, 9, 2)


def test_correlations_constant_sides_give_none():
    out = simulation_correlations([np.array([0.0, 3.0]), np.array([1.0, 2.0])], [np.zeros(2), np.zeros(2)])
    assert out["correlation"] is None and out["mean_example_correlation"] is None
    assert (out["n_examples"], out["n_tokens"], out["n_example_correlations"]) == (2, 4, 0)
    none = simulation_correlations([np.array([1.0, 2.0])], [None])
    assert none == {
        "correlation": None,
        "mean_example_correlation": None,
        "n_examples": 0,
        "n_tokens": 0,
        "n_example_correlations": 0,
    }
    with pytest.raises(ValueError):
        simulation_correlations([np.array([1.0, 2.0])], [np.array([1.0, 2.0, 3.0])])


# --- expected values from logprobs ------------------------------------------------------------------


def test_expected_values_single_tokens_and_two_token_ten():
    text = '{"activations": [3, 10, 0, 9]}'
    r = LLMResponse(
        text=text,
        logprobs=spelled(
            '{"',
            "activ",
            "ations",
            '":',
            " [",
            tok("3", {"3": 0.7, "4": 0.3}),
            ",",
            " ",  # E = 0.7*3 + 0.3*4 = 3.3
            tok("1", {"1": 0.6, "2": 0.4}),
            "0",
            ",",
            " ",  # "10" is two tokens: keep 10
            tok("0", {"0": 0.5, " 2": 0.25, "x": 0.25}),
            ",",
            " ",  # renormalised over digits: 2*0.25/0.75
            tok("9", {"9": 0.5, "10": 0.5}),  # a single-token "10" counts as 10: 9.5
            "]}",
            "<|im_end|>",  # trailing end-of-turn text is allowed
        ),
    )
    a = parse_simulation(r, 4)
    values, expected, error = a
    assert error is None
    assert values.tolist() == [3, 10, 0, 9]
    assert expected == pytest.approx([3.3, 10.0, 2 / 3, 9.5])
    assert a.n_expected == 3
    assert a.prediction is expected


def test_expected_values_fall_back_to_integers_when_misaligned():
    text = '{"activations": [3, 1]}'
    # logprobs that spell another answer (here "[4, 1]"): no position can be trusted
    wrong = LLMResponse(
        text=text,
        logprobs=spelled(
            '{"activations": [', tok("4", {"4": 0.5, "5": 0.5}), ", ", tok("1", {"1": 0.5, "2": 0.5}), "]}"
        ),
    )
    a = parse_simulation(wrong, 2)
    assert a.error is None and a.expected.tolist() == [3.0, 1.0] and a.n_expected == 0
    # logprobs missing their tail (fewer tokens than the answer)
    short = LLMResponse(text=text, logprobs=spelled('{"activations": [', tok("3", {"3": 0.5, "5": 0.5})))
    a = parse_simulation(short, 2)
    assert a.expected.tolist() == [3.0, 1.0] and a.n_expected == 0
    # a token holding a number and more ("3,"): that position keeps its integer, the others align
    merged = LLMResponse(
        text=text,
        logprobs=spelled(
            '{"activations": [', tok("3,", {"3,": 0.5, "5,": 0.5}), " ", tok("1", {"1": 0.5, "2": 0.5}), "]}"
        ),
    )
    a = parse_simulation(merged, 2)
    assert a.expected.tolist() == [3.0, 1.5] and a.n_expected == 1
    # no logprobs at all: integers only, expected values None
    values, expected, error = parse_simulation(LLMResponse(text=text), 2)
    assert values.tolist() == [3.0, 1.0] and expected is None and error is None


# --- parsing failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, n, error",
    [
        (LLMResponse(text="The feature is active on cat tokens, mostly."), 3, "unparseable answer"),
        (LLMResponse(text='{"activations": "high"}'), 3, "unparseable answer"),
        (LLMResponse(text='{"activations": [1, 2.5, 0]}'), 3, "unparseable answer"),
        (LLMResponse(text='{"activations": [1, 2]}'), 3, "wrong number of activations (2 for 3 tokens)"),
        (LLMResponse(text="Sure: [0, 4, 0, 1] are my guesses"), 3, "wrong number of activations (4 for 3 tokens)"),
        (LLMResponse(text='{"activations": [0, 11, 2]}'), 3, "activation outside 0-10"),
        (LLMResponse(text="[0, -1, 2]"), 3, "activation outside 0-10"),
        (LLMResponse(error="TimeoutError: no answer in 120 s"), 3, "TimeoutError: no answer in 120 s"),
    ],
)
def test_parse_failures(response, n, error):
    values, expected, why = parse_simulation(response, n)
    assert values is None and expected is None and why == error


def test_parse_chatty_answer_with_a_list():
    values, _, error = parse_simulation(LLMResponse(text="Here you go: [0, 4, 10] hope it helps"), 3)
    assert error is None and values.tolist() == [0.0, 4.0, 10.0]


# --- prompt and request -----------------------------------------------------------------------------


def test_whitespace_tokens_are_visible_and_explanation_comes_first(template):
    tokens = ["Hello", " ", "\n", "  ", "\t", " world", 'say "hi"']
    req = simulation_request(template, "greetings", tokens, seed=0, top_logprobs=10, json_output=True)
    last = req.messages[-1]["content"]
    assert last.index("greetings") < last.index("Hello")  # instructions + explanation first, tokens last
    lines = last.splitlines()
    block = lines[lines.index("Tokens (7):") + 1 :]
    assert block == ['1: "Hello"', '2: " "', '3: "\\n"', '4: "  "', '5: "\\t"', '6: " world"', '7: "say \\"hi\\""']
    assert req.max_tokens == 16 + 4 * 7 and req.top_logprobs == 10 and req.seed == 0
    items = req.json_schema["properties"]["activations"]
    assert items["minItems"] == items["maxItems"] == 7 and items["items"]["enum"] == list(range(11))
    assert simulation_request(template, "x", tokens, seed=0, top_logprobs=0, json_output=False).json_schema is None
    # the few-shot demonstrations are answers the parser accepts, with one number per shown token
    for demo, user in zip(template.demonstrations(), [m for r, m in template.messages if r == "user"]):
        n = sum(1 for line in user.splitlines() if line[:1].isdigit())
        assert parse_simulation(LLMResponse(text=demo), n).error is None
    assert simulation_schema(2)["required"] == ["activations"]


# --- a real run -------------------------------------------------------------------------------------

EXCERPTS = [
    (
        ["The", " cat", " sat", " on", " the", " mat", ".", "\n", "A", " cat", " purred", " softly"],
        np.array([0, 9, 1, 0, 0, 0, 0, 0, 0, 10, 3, 0], float),
    ),
    (
        ["Stock", " prices", " fell", " on", " Monday", " as", " investors", "  ", "worried", " about", " rates", "."],
        np.zeros(12),
    ),
]


def test_real_llamacpp_run_parses_with_expected_values(template):
    # One thread: on the shared 2-core machine llama.cpp's spinning thread barriers can turn a 2 s call
    # into 30+ s when another process holds a core.
    backend = make_backend(LLMConfig(n_threads=1))
    requests = [
        simulation_request(template, "the word cat", toks, seed=0, top_logprobs=10, json_output=True)
        for toks, _ in EXCERPTS
    ]
    t0 = time.perf_counter()
    responses = complete_and_close(backend, requests)
    seconds = time.perf_counter() - t0
    answers = [parse_simulation(r, len(toks)) for r, (toks, _) in zip(responses, EXCERPTS)]
    parsed = 0
    for r, a, (toks, _) in zip(responses, answers, EXCERPTS):
        if a.error is None:
            parsed += 1
            assert len(a.values) == len(toks) and ((0 <= a.values) & (a.values <= 10)).all()
            assert a.expected is not None and ((0 <= a.expected) & (a.expected <= 10)).all()
            # every single-digit number is one token in SmolLM2, so each gets an expected value; 10 keeps 10
            assert a.n_expected == int((a.values < 10).sum())
        else:
            assert a.error in ERRORS or a.error.startswith("wrong number of activations"), a.error
        print(
            f"simulation real run: prompt {r.prompt_tokens} tok (cached {r.cached_tokens}), "
            f"output {r.output_tokens} tok, {r.latency_s:.2f} s, answer {r.text!r}, error {a.error}"
        )
    print(f"simulation real run: {parsed}/2 parsed in {seconds:.1f} s")
    # The schema constrains the format: both answers parse (SmolLM2's content is still weak).
    assert parsed == 2, [a.error for a in answers]
    assert responses[1].cached_tokens > 0.5 * responses[1].prompt_tokens  # the shared prefix was reused
    scores = simulation_correlations([acts for _, acts in EXCERPTS], [a.prediction for a in answers])
    assert scores["n_examples"] == 2 and scores["n_tokens"] == 24
    assert scores["correlation"] is None or -1 <= scores["correlation"] <= 1
    assert scores["n_example_correlations"] <= 1  # the second excerpt's true activations are all 0
