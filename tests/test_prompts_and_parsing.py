"""Prompt files, example rendering and answer parsing (the parts between the store and the LLM)."""

import math

import numpy as np
import pytest

from autointerp.engine.interpretation.examples import Example, activation_list, marked_positions, plain, with_marks
from autointerp.engine.interpretation.explainers import EXPLAINERS, parse_explanation
from autointerp.engine.interpretation.llm import LLMResponse, TokenLogprob
from autointerp.engine.interpretation.prompts import PromptError, PromptLibrary
from autointerp.engine.interpretation.scorers.base import Item, label_requests, parse_labels
from autointerp.engine.interpretation.scorers.fuzzing import fuzzing_items


def ex(tokens, acts, decile=1, window=0):
    return Example(window, tokens, np.array(acts, np.float32), decile)


def test_marks_wrap_runs_above_the_threshold_and_keep_text_literal():
    e = ex([" the", " [bold]", "cat", "\n", " sat"], [0.0, 1.0, 3.0, 0.5, 0.0])
    mask = marked_positions(e, 0.3)
    assert with_marks(e, mask) == " the<< [bold]cat>>\\n sat"  # one line; markup-like text untouched
    assert plain(e) == " the [bold]cat\\n sat"
    assert activation_list(e, mask, scale=3.0) == "[bold] (3), cat (10)"
    silent = ex([" a", " b"], [0, 0], decile=0)
    assert not marked_positions(silent, 0.3).any()


def test_every_packaged_template_renders_and_a_user_folder_replaces_one(tmp_path):
    lib = PromptLibrary()
    for spec in EXPLAINERS.values():
        msgs = lib.get(spec.template).render(examples="E", promoted="P", negatives="N")
        assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user" and "E" in msgs[-1]["content"]
    for name in ("detection", "fuzzing"):
        last = lib.get(name).render(explanation="XPL", examples="EXS", n="1")[-1]["content"]
        assert last.index("XPL") < last.index("EXS")  # explanation first, excerpts last: a shared prefix
    (tmp_path / "detection.txt").write_text("# mine\n=== system ===\nS $$5\n=== user ===\n$explanation|$examples\n")
    mine = PromptLibrary(tmp_path)
    assert mine.get("detection").render(explanation="a", examples="b") == [
        {"role": "system", "content": "S $5"},
        {"role": "user", "content": "a|b"},
    ]
    assert mine.get("detection").sha != lib.get("detection").sha
    assert mine.get("fuzzing").sha == lib.get("fuzzing").sha  # not replaced: the packaged one


@pytest.mark.parametrize(
    "text, message",
    [
        ("no headers at all", "no '=== system|user|assistant ===' section"),
        ("=== user ===\nhi\n=== assistant ===\nyo", "the last section must be"),
        ("=== user ===\n$nope", "placeholder $nope has no value"),
    ],
)
def test_bad_templates_fail_in_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "detection.txt").write_text(text)
    with pytest.raises(PromptError) as e:
        PromptLibrary(tmp_path).get("detection").render(explanation="x", examples="y")
    assert message in str(e.value) and "detection.txt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PromptError, match="not a folder"):
        PromptLibrary(tmp_path / "missing")


def test_explainer_request_shows_activations_and_asks_for_schema_json():
    req = EXPLAINERS["activations"].request(
        PromptLibrary(),
        [ex([" a", " cat"], [0, 2.0])],
        threshold=0.3,
        scale=4.0,
        max_tokens=50,
        seed=3,
        json_output=True,
    )
    user = req.messages[-1]["content"]
    assert "Excerpt 1:  a<< cat>>" in user and "Activations: cat (5)" in user
    assert req.json_schema["required"] == ["explanation"] and req.seed == 3
    assert (
        EXPLAINERS["cot"]
        .request(PromptLibrary(), [], threshold=0.3, scale=1, max_tokens=50, seed=0, json_output=False)
        .max_tokens
        == 200
    )


def test_explanations_parse_or_fail_with_a_reason():
    assert parse_explanation('{"explanation": "  dairy\\n products "}') == ("dairy products", None)
    assert parse_explanation('Sure. {"explanation": "rivers"} Hope that helps') == ("rivers", None)
    assert parse_explanation("Explanation: rivers") == ("rivers", None)  # free-text backends
    assert parse_explanation('{"explanation": "cut off mid') == (None, "truncated answer")
    assert parse_explanation("") == (None, "empty answer")
    assert parse_explanation('{"other": 1}') == (None, "no explanation in the answer")
    assert parse_explanation('{"explanation": "two\nlines\t"}') == ("two lines", None)  # raw control characters
    assert parse_explanation('x {"explanation": "bad \\u12"} y') == (None, "unparseable answer")
    assert parse_explanation("[1, 2]") == (None, "no explanation in the answer")


def resp(text, logprobs=None, error=None):
    return LLMResponse(text=None if error else text, error=error, logprobs=logprobs)


def test_labels_parse_count_and_failures():
    assert parse_labels(resp('{"labels": [1, 0, 1]}'), 3)[0] == [1, 0, 1]
    assert parse_labels(resp("They are [1, 0] I think"), 2)[0] == [1, 0]
    assert parse_labels(resp('{"labels": [1, 0]}'), 3)[2] == "wrong number of labels (2 for 3 excerpts)"
    assert parse_labels(resp('{"labels": [1, 2]}'), 2)[2] == "labels other than 0 and 1"
    assert parse_labels(resp('{"labels": [true]}'), 1)[2] == "labels other than 0 and 1"
    assert parse_labels(resp("yes"), 1)[2] == "unparseable answer"
    assert parse_labels(resp('{"labels": ['), 1)[2] == "unparseable answer"
    assert parse_labels(resp(None, error="APITimeoutError: x"), 1)[2] == "APITimeoutError: x"


def test_label_probabilities_come_from_the_label_tokens_logprobs():
    lp = [
        TokenLogprob('{"', 0.0),
        TokenLogprob("labels", 0.0),
        TokenLogprob('":', 0.0),
        TokenLogprob(" [", 0.0),
        TokenLogprob("1", math.log(0.6), {"1": math.log(0.6), "0": math.log(0.2), "2": math.log(0.2)}),
        TokenLogprob(",", 0.0),
        TokenLogprob(" 0", math.log(0.5), {" 0": math.log(0.5), "0": math.log(0.3)}),
        TokenLogprob("]}", 0.0),
    ]
    labels, probs, err = parse_labels(resp('{"labels": [1, 0]}', lp), 2)
    assert err is None and labels == [1, 0]
    assert probs[0] == pytest.approx(0.6 / 0.8)  # renormalised over "0" and "1"
    assert probs[1] == pytest.approx(0.0)  # "1" not among the alternatives: P(1) ~ 0
    three_digits = lp[:5] + [TokenLogprob("1", 0.0, {"1": 0.0})] + lp[5:]
    assert parse_labels(resp('{"labels": [1, 0]}', three_digits), 2)[1] is None  # cannot align: no probabilities


def test_label_requests_chunk_items_and_constrain_the_count():
    items = [Item(i, f"text {i}", i % 2, 1) for i in range(7)]
    batches = label_requests(
        PromptLibrary().get("detection"), "expl", items, 3, seed=0, top_logprobs=5, json_output=True
    )
    assert [len(chunk) for _, chunk in batches] == [3, 3, 1]
    req = batches[2][0]
    assert (
        req.json_schema["properties"]["labels"]["minItems"] == 1 == req.json_schema["properties"]["labels"]["maxItems"]
    )
    assert "Excerpt 1: text 6" in req.messages[-1]["content"] and req.top_logprobs == 5


def test_fuzzing_marks_wrong_tokens_on_a_share_spread_over_deciles():
    rng = np.random.default_rng(0)
    acts = [
        ex([" a", " b", " c", " d", " e"], [0, 0, 4.0, 0, 0], decile=d, window=10 * d + k)
        for d in range(1, 8)
        for k in range(1)
    ]
    items = fuzzing_items(acts, 0.3, 2 / 7, rng)
    wrong = [it for it in items if it.label == 0]
    assert len(items) == 7 and len(wrong) == 2  # round(2/7 x 7), even with one example per decile
    for it in wrong:
        assert "<< c>>" not in it.text and it.text.count("<<") == 1
    assert all(it.text == " a b<< c>> d e" for it in items if it.label == 1)
