"""OpenAIBackend against a real OpenAI-compatible server: llama.cpp's `llama_cpp.server` running the
embedded SmolLM2-135M-Instruct GGUF on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers.llm_stage import complete_and_close
from helpers.servers import free_port, start_llama_server, stop_process

from autointerp.engine.config import LLMConfig
from autointerp.engine.interpretation.llm.base import LLMRequest
from autointerp.engine.interpretation.llm.openai_http import OpenAIBackend

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")

LABELS_SCHEMA = {
    "type": "object",
    "properties": {
        "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}, "minItems": 3, "maxItems": 3}
    },
    "required": ["labels"],
}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = free_port()
    proc = start_llama_server(port, tmp_path_factory.mktemp("llama_server") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


def complete_many(url: str, requests: list[LLMRequest], **over):
    cfg = LLMConfig(
        backend="openai",
        model="smollm2",
        base_urls=[url],
        structured_output="json_object",
        max_retries=0,
        timeout_s=60.0,
        **over,
    )
    return complete_and_close(OpenAIBackend(cfg), requests)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_returns_text_and_accounting(server_url):
    (r,) = complete_many(server_url, [LLMRequest(user("Say hello to Paris."), max_tokens=12)])
    assert r.ok, r.error
    assert r.text.strip()
    assert r.prompt_tokens > 5 and 0 < r.output_tokens <= 12
    assert r.finish_reason in ("stop", "length")
    assert r.latency_s > 0
    assert r.logprobs is None


def test_json_schema_answer_parses_and_follows_the_schema(server_url):
    req = LLMRequest(
        user("Label these three sentences 0 or 1: 'cat', 'dog', 'car'."), max_tokens=40, json_schema=LABELS_SCHEMA
    )
    (r,) = complete_many(server_url, [req])
    assert r.ok, r.error
    labels = json.loads(r.text)["labels"]  # the grammar forces the object, whatever the model "wants"
    assert len(labels) == 3 and all(x in (0, 1) and isinstance(x, int) for x in labels)


def test_top_logprobs_per_generated_token(server_url):
    (r,) = complete_many(server_url, [LLMRequest(user("Count: one, two,"), max_tokens=6, top_logprobs=5)])
    assert r.ok, r.error
    assert len(r.logprobs) == r.output_tokens > 0
    assert "".join(t.token for t in r.logprobs) == r.text
    for t in r.logprobs:
        assert t.logprob <= 0
        assert 1 <= len(t.top) <= 5 and all(v <= 0 for v in t.top.values())
    # Greedy decoding: the first generated token is the likeliest alternative.
    first = r.logprobs[0]
    assert max(first.top, key=first.top.get) == first.token


def test_logprobs_together_with_a_schema(server_url):
    req = LLMRequest(user("Give three labels."), max_tokens=40, json_schema=LABELS_SCHEMA, top_logprobs=3)
    (r,) = complete_many(server_url, [req])
    assert r.ok, r.error
    assert len(json.loads(r.text)["labels"]) == 3
    assert len(r.logprobs) == r.output_tokens and all(len(t.top) <= 3 for t in r.logprobs)


def test_complete_many_keeps_order(server_url):
    # A long answer is cut at max_tokens, so each response's token count says which request it answers.
    reqs = [LLMRequest(user("Write a long story about a dragon."), max_tokens=n) for n in (1, 2, 3, 4)]
    out = complete_many(server_url, reqs, max_concurrency=4)
    assert [r.error for r in out] == [None] * 4
    assert [r.output_tokens for r in out] == [1, 2, 3, 4]
    assert all(r.finish_reason == "length" for r in out)


def test_score_stage_end_to_end_through_the_real_server(server_url, tmp_path, real_cache_db):
    """The whole score stage over HTTP: real server, real cache, stored rows with honest accounting."""
    from helpers.databases import copy_db
    from helpers.llm_stage import write_stand_in_explanation

    from autointerp.engine.config import Config, SampleConfig, ScoreConfig
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.llm import make_backend
    from autointerp.store.db import ActivationStore

    db = copy_db(real_cache_db, tmp_path / "http.db")
    cfg = Config(
        db=str(db),
        llm=LLMConfig(
            backend="openai",
            model="smollm2",
            base_urls=[server_url],
            structured_output="json_object",
            max_retries=0,
            timeout_s=60,
            max_concurrency=1,
            top_logprobs=5,
        ),
        sample=SampleConfig(n_explain=6, activating_per_decile=1, n_non_activating=5, min_windows=20),
        score=ScoreConfig(scorers=["detection"], examples_per_prompt=5),
    )
    store = ActivationStore.open(db)
    backend = make_backend(cfg.llm)
    interp = Interpreter(cfg, store, backend)
    latents = interp.select("top:2")
    for latent in latents:  # stand-in explanations: this test is about the scoring path over HTTP
        write_stand_in_explanation(store.results, latent, f"text number {latent}")

    async def go():  # one latent scored; the other's explanation is its control
        try:
            return await interp.run_stage("score", latents[:1])
        finally:
            await backend.aclose()

    try:
        tally = asyncio.run(go())
        rows = interp.results.scores()
    finally:
        interp.close()
        store.close()
    assert tally.done == 1 and [(r["latent"], r["control"]) for r in rows] == [(latents[0], 0), (latents[0], 1)]
    assert [r["explanation_latent"] for r in rows] == [latents[0], latents[1]]
    for r in rows:
        assert r["backend"] == "openai" and r["model"] == "smollm2"
        assert r["n"] == 15 and r["n_calls"] == 3  # 5 excerpts per prompt
        assert r["n_failed"] == 0, r["errors"]  # the grammar-constrained answers parse
        assert r["prompt_tokens"] > 0 and r["output_tokens"] > 0
        assert r["cached_tokens"] == -1  # llama.cpp's server does not report cached tokens: "unknown", not 0
        assert r["n_auroc"] == 15 and 0 <= r["auroc"] <= 1  # P("1") from the server's logprobs
