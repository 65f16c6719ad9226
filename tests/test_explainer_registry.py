"""The explainer registry is the one place an explainer is declared: a toy explainer registered with one line is
accepted by the config, planned by the dry run, and explains through the real explain stage (against a scripted
OpenAI-compatible server) with its own request and its own reading of the answer; what the flags of the shipped
explainers drive is asked of the explainer object."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

import numpy as np
import pytest
from helpers.databases import copy_db
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import llm_stage_config, run_llm_stage

from autointerp.engine.config import CHOICES, CacheConfig, Config, ConfigError, load_config, resolve_profile
from autointerp.engine.interpretation.examples import numbered
from autointerp.engine.interpretation.explainers import EXPLAINERS, Explainer
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import LLMRequest
from autointerp.store.db import ActivationStore


@dataclass(frozen=True)
class PeakTokens(Explainer):
    """Shows only the token at each excerpt's peak, and keeps its answers in capitals. Tests-only."""

    def request(self, prompts, examples, *, max_tokens, seed, json_output, temperature=0.0, **_) -> LLMRequest:
        peaks = [ex.tokens[int(np.argmax(ex.acts))] for ex in examples]
        return LLMRequest(
            prompts.get(self.template).render(examples=numbered(peaks)),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            json_schema=self.schema if json_output else None,
        )

    def parse(self, text):
        explanation, why = super().parse(text)
        return (explanation.upper() if explanation else None), why


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(EXPLAINERS, "peak_tokens", PeakTokens("peak_tokens", "explain_default"))  # the one line
    return "peak_tokens"


def answer_with_the_count(body, headers):
    """An explanation counting the excerpts the prompt shows."""
    shown = re.findall(r"^Excerpt \d+:", body["messages"][-1]["content"], re.M)
    return reply(body=completion(json.dumps({"explanation": f"peaks seen: {len(shown)}"})))


def test_a_registered_explainer_explains_through_the_stage_with_its_own_request_and_parse(toy, real_cache_db, tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(f'[explain]\nexplainer = "{toy}"\n')
    assert load_config(path).explain.explainer == toy and toy in tuple(CHOICES["explain.explainer"])

    db = copy_db(real_cache_db, tmp_path / "toy.db")
    with fake_server(answer_with_the_count) as fake:
        cfg = llm_stage_config(db, [fake.url])
        cfg.explain.explainer = toy
        with ActivationStore.open(db) as store:
            interp = Interpreter(cfg, store, None)
            latents = interp.select("top:2")
            interp.close()

        # the dry run plans it from its own prompt file (as conftest's real_cache_db made the cache)
        from autointerp.engine.commands.estimate import plan

        cache = CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8)
        planned = replace(cfg, cache=cache, batch=replace(cfg.batch, stages=["explain"], latents="top:2"))
        dry = plan(planned)["llm_stages"]["explain"]
        assert (dry["latents"], dry["calls"], dry["exact"]) == (2, 2, True)

        tally = run_llm_stage(cfg, "explain", latents)
    assert tally.done == 2 and tally.failed == 0 and len(fake.seen) == 2

    sent = [seen["body"]["messages"][-1]["content"] for seen in fake.seen]
    with ActivationStore.open(db, readonly=True) as store:
        interp = Interpreter(cfg, store, None)
        try:
            for latent in latents:
                row = store.results.explanation(latent, toy)
                examples = interp.role_examples(store.results.sample_set(latent), "explain")
                peaks = [ex.tokens[int(np.argmax(ex.acts))] for ex in examples]
                assert sum(numbered(peaks) in text for text in sent) == 1  # its request, built its own way
                assert row["text"] == f"PEAKS SEEN: {len(peaks)}"  # its answer, read its own way
                assert row["explainer"] == toy and row["n_examples"] == len(peaks) > 0
                assert row["prompt_sha"] == interp.resources.prompts.get("explain_default").sha
                assert store.results.explanation(latent, "default") is None
        finally:
            interp.close()


def test_an_unregistered_explainer_is_refused_by_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[explain]\nexplainer = "peak_tokens"\n')
    with pytest.raises(ConfigError, match="'peak_tokens' is not one of " + ", ".join(EXPLAINERS)):
        load_config(path)


def test_what_the_flags_drive_is_asked_of_the_explainer(tmp_path):
    assert tuple(CHOICES["explain.explainer"]) == tuple(EXPLAINERS)
    assert all(e.name == name for name, e in EXPLAINERS.items())
    cfg = resolve_profile(Config(), cpu_embedded=False)
    assert EXPLAINERS["contrastive"].draws_negatives(cfg) and not EXPLAINERS["default"].draws_negatives(cfg)
    cfg.explain.candidates = 3
    assert EXPLAINERS["default"].draws_negatives(cfg)  # best-of-N picks on explainer-side negatives
    steered = EXPLAINERS["intervention"]
    assert not steered.shows_excerpts and not steered.calls_exact
    assert (
        steered.shown_tokens(cfg)
        != EXPLAINERS["default"].shown_tokens(cfg)
        == cfg.sample.n_explain * (cfg.cache.window_len + 2)
    )
    assert EXPLAINERS["cot"].max_tokens(cfg) == 4 * cfg.explain.max_tokens
    path = tmp_path / "c.toml"
    path.write_text('[explain]\nexplainer = "intervention"\ncandidates = 3\ncandidate_temperature = 0.7\n')
    with pytest.raises(ConfigError, match="best-of-N needs activating excerpts to pick with; the intervention"):
        load_config(path)
