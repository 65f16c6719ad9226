"""Surprisal scoring with real base models: the embedded SmolLM2 through TransformerLens (the subject
model) and the embedded SmolLM2 GGUF through llama.cpp. Each is loaded once for the module."""

from __future__ import annotations

import pytest
import torch

from autointerp.engine.activations.model import SubjectModel
from autointerp.engine.interpretation.llm.llamacpp import resolve_gguf
from autointerp.engine.interpretation.metrics import classification_metrics
from autointerp.engine.interpretation.scorers.base import Item
from autointerp.engine.interpretation.scorers.surprisal import surprisal_run
from autointerp.engine.interpretation.surprisal import (
    EMPTY_TEXT,
    GGUFLM,
    SubjectLM,
    SurprisalError,
    load_base_lm,
)

TEMPLATE = "The following text is an example of: {}\n\n"
TRUE = "cheese, milk and other dairy products"
CONTROL = "names of rivers"

CHEESE = [
    "She grated a block of aged cheddar cheese over the pasta.",
    "The farm sells fresh goat cheese, butter and cream every Saturday.",
    "Brie and camembert are soft cheeses with a white rind.",
    "He poured a glass of cold milk and ate a slice of cheese.",
    "The dairy cows are milked twice a day before the milk goes to the creamery.",
    "Parmesan cheese is aged for at least two years in Italy.",
    "Add a spoonful of yogurt and some cream cheese to the sauce.",
    "The mozzarella melted on top of the pizza.",
    "Swiss cheese such as Emmental has large holes.",
    "The cheesemaker added rennet to the warm milk to form curds and whey.",
]
OTHER = [
    "The train to the airport leaves every fifteen minutes.",
    "He fixed the leaking roof before the winter storms arrived.",
    "The committee voted to approve the new budget on Tuesday.",
    "She learned to play the violin when she was seven years old.",
    "The software update changed the layout of the settings menu.",
    "Heavy traffic delayed the ambulance on the motorway.",
    "The museum opened a new exhibition of modern sculpture.",
    "They painted the bedroom walls a pale shade of blue.",
    "The spacecraft sent back photographs of the distant planet.",
    "Our neighbour repaired his bicycle chain in the driveway.",
]
ITEMS = [Item(i, t, 1, 10) for i, t in enumerate(CHEESE)] + [Item(100 + i, t, 0, 0) for i, t in enumerate(OTHER)]


@pytest.fixture(scope="module")
def subject(subject_model) -> SubjectModel:
    # One torch thread, like llama.cpp below: with the 2 cores shared with other work, two threads
    # ranged from 2x faster to 2x slower here; one is steady. Restored after the module.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield subject_model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def subject_lm(subject) -> SubjectLM:
    return load_base_lm("subject", lambda: subject)


@pytest.fixture(scope="module")
def gguf_lm():
    # One thread: on a 2-core machine shared with other work, llama.cpp's spinning barriers make two
    # threads many times slower (measured 16 s vs 130 s for 40 texts).
    lm = GGUFLM(str(resolve_gguf("embedded")), n_threads=1)
    yield lm
    lm.close()


def planted_aurocs(lm) -> tuple[float, float]:
    real, baseline = surprisal_run(lm, TEMPLATE.format(TRUE), ITEMS)
    control, again = surprisal_run(lm, TEMPLATE.format(CONTROL), ITEMS, baseline)
    assert again is baseline  # a given baseline is reused, not recomputed
    for run in (real, control):
        assert not run.errors and not any(o.failed for o in run.outcomes)
        assert all(o.prediction is None for o in run.outcomes)
        assert run.accounting.n_calls == 0 and run.items == ITEMS
    return classification_metrics(real.outcomes)["auroc"], classification_metrics(control.outcomes)["auroc"]


def test_text_tokens_do_not_depend_on_the_prefix(subject_lm, gguf_lm):
    for lm in (subject_lm, gguf_lm):
        for text in CHEESE[:3] + ["a\\nb  trailing ", " leading space"]:
            head0, t0 = lm.ids("", text)
            head1, t1 = lm.ids(TEMPLATE.format(TRUE), text)
            assert t0 == t1 and t0
            assert head0 == [lm.model.start_id if isinstance(lm, SubjectLM) else lm.start_id]
            assert head1[0] == head0[0] and len(head1) > 1


def test_subject_losses_match_a_direct_computation(subject, subject_lm):
    prefix = TEMPLATE.format(TRUE)
    texts = [CHEESE[0], OTHER[1], "short", CHEESE[4]]  # different lengths: the batch is right-padded
    got = subject_lm.losses(prefix, texts)
    tok = subject.tokenizer
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    for text, loss in zip(texts, got):
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[subject.start_id, *p, *t]])
        with torch.inference_mode():
            logits = subject.bridge(ids)[0]
        start = 1 + len(p)
        want = torch.nn.functional.cross_entropy(logits[start - 1 : -1], ids[0, start:])
        assert loss == pytest.approx(float(want), abs=1e-4)
    # With no prefix, the text follows the start token directly.
    t = tok(OTHER[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[subject.start_id, *t]])
    with torch.inference_mode():
        want = torch.nn.functional.cross_entropy(subject.bridge(ids)[0, :-1], ids[0, 1:])
    assert subject_lm.losses("", [OTHER[0]])[0] == pytest.approx(float(want), abs=1e-4)


def test_gguf_and_subject_agree(subject_lm, gguf_lm):
    # The same SmolLM2 weights (Q4_1 in llama.cpp, dequantised to fp32 in torch): the losses agree
    # closely, so llama.cpp's logit rows line up with the text tokens (an off-by-one would be far off).
    texts = CHEESE[:3] + OTHER[:3]
    for prefix in ("", TEMPLATE.format(TRUE)):
        a, b = subject_lm.losses(prefix, texts), gguf_lm.losses(prefix, texts)
        assert a == pytest.approx(b, abs=0.15)


def test_gguf_losses_are_sane(gguf_lm):
    a, b = gguf_lm.losses("", [CHEESE[0], CHEESE[0] + " " + CHEESE[0]])
    assert 0 < a < 15 and b < a  # a repeated sentence is easier the second time
    # Rewinding to the prefix leaves nothing of the previous text behind: order does not matter.
    x = gguf_lm.losses(TEMPLATE.format(TRUE), [CHEESE[1], OTHER[2]])
    y = gguf_lm.losses(TEMPLATE.format(TRUE), [OTHER[2], CHEESE[1]])
    assert x == pytest.approx(y[::-1], abs=1e-3)


def test_planted_subject(subject_lm):
    real, control = planted_aurocs(subject_lm)
    print(f"subject model: AUROC true {real:.3f}, control {control:.3f}")
    assert real > 0.7 and real > control


def test_planted_gguf(gguf_lm):
    real, control = planted_aurocs(gguf_lm)
    print(f"GGUF (llama.cpp): AUROC true {real:.3f}, control {control:.3f}")
    assert real > 0.7 and real > control


def test_empty_text_is_a_counted_failure(subject_lm, gguf_lm):
    items = [Item(0, "", 1, 1), *ITEMS[:2], Item(1, "", 0, 0), ITEMS[-1]]
    for lm in (subject_lm, gguf_lm):
        run, baseline = surprisal_run(lm, TEMPLATE.format(TRUE), items)
        assert baseline[0] is None and baseline[3] is None
        assert [o.failed for o in run.outcomes] == [True, False, False, True, False]
        assert run.errors == {EMPTY_TEXT: 2}
        m = classification_metrics(run.outcomes)
        assert m["n_failed"] == 2 and m["n_auroc"] == 3


def test_load_base_lm_specs(subject):
    lm = load_base_lm("embedded", lambda: pytest.fail("the GGUF path must not load the subject model"))
    try:
        assert isinstance(lm, GGUFLM) and lm.name == "gguf:" + resolve_gguf("embedded").name
    finally:
        lm.close()
    lm = load_base_lm(str(resolve_gguf("embedded")), lambda: pytest.fail("not the subject model"))
    lm.close()
    lm = load_base_lm("subject", lambda: subject)
    assert isinstance(lm, SubjectLM) and lm.model is subject


def test_bad_specs_raise_one_line(tmp_path):
    def never():
        raise AssertionError("not called")

    for spec, words in [("gpt-99", "unknown base model"), (str(tmp_path / "missing.gguf"), "does not exist")]:
        with pytest.raises(SurprisalError) as e:
            load_base_lm(spec, never)
        assert words in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(SurprisalError) as e:
        load_base_lm(str(junk), never)
    assert "cannot load GGUF" in str(e.value) and "\n" not in str(e.value)

    def broken():
        raise RuntimeError("no weights here\nsecond line")

    with pytest.raises(SurprisalError) as e:
        load_base_lm("subject", broken)
    assert str(e.value) == "base model 'subject': no weights here"
